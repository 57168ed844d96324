# upload_main — the uploader under the MicroPython unix port, fed by a stand-in meter: fault tests
# (tests/host/test_upload_faults.py) and the upload benchmark (tools/bench_upload.py) run it.
#
#     micropython tools/sim/upload_main.py PLAN.json      (MICROPYPATH: the repo root and lib/, no simboard)
#
# PLAN: {"state_dir", "url", "ca_der" (path), "fleet_key" (hex), "serial", "run_ms", "drain_ms",
# "window_ms", "record_ms", "live_ms", "spool_files", "ram_max", "backoff_ms", "timeout_ms",
# "report" (path), "phases": [[at_ms, server_fault, device_fault], ...], "fault_file"}.
# A stand-in meter task produces a readings dict every window_ms (real time) and hands it to the
# two upload outputs, the interval recorder and the HTTPS transport, as the device does; it records
# how late each window came (a stalled event loop shows up there). device_fault "dns" makes the DNS
# seam fail, "clock" makes the clock seam report an unset clock (and NTP fail). server_fault is
# written to the ingest server's fault file.
# After run_ms no more records are made and the device drains its spool (up to drain_ms), shuts
# down in order (RAM spilled to flash) and writes a JSON report. "prefill": N puts N records in the
# spool first (an outage's backlog); the report then says when the backlog was gone ("drained_ms").
# The report also has the heap in use (gc.mem_alloc) before and at most during the run.
# For the fault matrix (tools/bench_faults.py): every record gets "made": "<run>-<n>" ("run" in the
# plan), and "made_log" names a file each record's made id and seq are appended to as it is numbered
# (so a run killed like a power cut still says what it made); "oversized_at": n makes record n too
# long to spool.

import asyncio
import gc
import json
import os
import sys
import time

import https

from firmware import identity
from firmware.recorder import Recorder
from firmware.spool import Spool
from firmware.uploader import Uploader

plan = json.load(open(sys.argv[1]))
os.chdir(plan["state_dir"])
faults = {"device": ""}


def resolve(host, port):
    if faults["device"] == "dns":
        raise OSError(-202)  # what the ESP32's getaddrinfo raises when DNS fails
    if host in ("localhost", "127.0.0.1", "wrong-name.test"):
        return "127.0.0.1"
    raise OSError(-202)


def clock_ready():
    return faults["device"] != "clock"


def sync_clock():
    return faults["device"] != "clock"  # NTP "answers" when the fault is cleared


class Energy:
    def __init__(self):
        self.mwh = 0

    def snapshot(self):
        return {"import_mwh": [self.mwh, 0, 0], "export_mwh": [0, 0, 0], "net_import_mwh": self.mwh,
                "net_export_mwh": 0}


def readings(t_ms, k):
    ph = [{"phase": p, "vrms": 230.0 + p, "irms": 1.0 + k % 7, "real_power_w": 200.0 + k, "apparent_power_va": 250.0,
           "reactive_power_var": 10.0, "power_factor": 0.8, "direction": "import"} for p in (1, 2, 3)]
    return {"t_ms": t_ms, "frequency_hz": 50.0, "wiring": "three-phase", "phases": ph,
            "total": {"real_power_w": 600.0 + 3 * k}, "diagnostics": []}


stats = {"windows": 0, "max_late_ms": 0, "stop": False, "heap_max": 0, "record_bytes": 0, "records_posted": 0}
_request = https.Client.request


async def _measured_request(self, method, path, body=b"", headers=None):
    """Client.request, noting the live heap when the reply is in and the bytes of record uploads."""
    before = self.bytes_sent
    reply = await _request(self, method, path, body, headers)
    gc.collect()  # what is live while the request's body, batch and reply are still held
    stats["heap_max"] = max(stats["heap_max"], gc.mem_alloc())
    if path == "/v1/records" and reply[0] == 200:
        stats["record_bytes"] += self.bytes_sent - before
        stats["records_posted"] += len(json.loads(reply[1])["acked"])
    return reply


https.Client.request = _measured_request


async def meter(outputs, energy, window_ms):
    due = time.ticks_add(time.ticks_ms(), window_ms)
    k = 0
    while not stats["stop"]:
        wait = time.ticks_diff(due, time.ticks_ms())
        if wait > 0:
            await asyncio.sleep_ms(wait)
        late = time.ticks_diff(time.ticks_ms(), due)
        if late > stats["max_late_ms"]:
            stats["max_late_ms"] = late
        due = time.ticks_add(due, window_ms)
        k += 1
        energy.mwh += 7
        r = readings(time.ticks_ms(), k)
        for out in outputs:  # as firmware/app.py's Device: the recorder, then the transport
            out.on_readings(r)
        stats["windows"] += 1


def set_server_fault(mode):
    f = open(plan["fault_file"], "w")
    f.write(mode)
    f.close()


class MadeSpool(Spool):
    """The spool, with each record marked as the fault matrix wants it (see the top)."""

    made = 0

    def add(self, rec):
        n = self.made
        self.made += 1
        rec["made"] = "%s-%d" % (plan.get("run", "run"), n)
        if n == plan.get("oversized_at"):
            rec["pad"] = "x" * 3000
        seq = Spool.add(self, rec)
        if plan.get("made_log"):
            f = open(plan["made_log"], "a")
            f.write("%s %d\n" % (rec["made"], seq))
            f.close()
        return seq


async def main():
    ident = identity.derive(bytes.fromhex(plan["fleet_key"]), plan["serial"])
    ca = open(plan["ca_der"], "rb").read()
    spool = MadeSpool(max_files=plan.get("spool_files", 144), ram_max=plan.get("ram_max", 10))
    first_seq = spool.next_seq
    for k in range(plan.get("prefill", 0)):
        spool.add({"t": None, "interval_ms": 60000, "windows": 60, "frequency_hz": 50.0, "diagnostics": [],
                   "phases": readings(0, k)["phases"], "energy_mwh": Energy().snapshot()})
    gc.collect()
    heap_base = gc.mem_alloc()
    drained_ms = None
    settings = {"url": plan["url"], "ca_cert": ca, "live_interval_ms": plan.get("live_ms", 300),
                "record_interval_ms": plan.get("record_ms", 500)}
    energy = Energy()
    up = Uploader(settings, identity.IdentityStatus(ident), spool, resolve=resolve,
                  clock_ready=clock_ready, sync_clock=sync_clock, backoff_ms=tuple(plan.get("backoff_ms", (100, 800))),
                  timeout_ms=plan.get("timeout_ms", 1500), stale_ms=plan.get("stale_ms", 1000))
    recorder = Recorder(settings, energy, spool, clock_ready=clock_ready, enabled=up.enabled)
    up.on_clock_step = recorder.clock_stepped
    tasks = [asyncio.create_task(meter((recorder, up), energy, plan.get("window_ms", 100))),
             asyncio.create_task(up.run())]
    t0 = time.ticks_ms()
    phases = list(plan.get("phases", []))
    states = []
    while True:
        now = time.ticks_diff(time.ticks_ms(), t0)
        while phases and phases[0][0] <= now:
            _, server_fault, device_fault = phases.pop(0)
            if server_fault is not None:
                set_server_fault(server_fault)
            faults["device"] = device_fault or ""
        settled = spool.pending() == 0 and not spool.gaps and spool.unsure is None
        if drained_ms is None and settled:
            drained_ms = now
        if up.status["state"] not in states:
            states.append(up.status["state"])
        if now >= plan["run_ms"]:
            recorder.record_interval_ms = 1 << 29  # no more records: drain what is waiting
            if settled or now >= plan["run_ms"] + plan.get("drain_ms", 5000):
                break
        await asyncio.sleep_ms(20)
    stats["stop"] = True
    await asyncio.sleep_ms(plan.get("window_ms", 100) + 20)
    for t in tasks:
        t.cancel()
    recorder.shutdown()
    report = {"first_seq": first_seq, "next_seq": spool.next_seq, "pending": spool.pending(), "lost": spool.lost,
              "rejected": spool.rejected, "status": up.status, "states": states, "windows": stats["windows"],
              "max_late_ms": stats["max_late_ms"], "elapsed_ms": time.ticks_diff(time.ticks_ms(), t0),
              "heap_base": heap_base, "heap_max": stats["heap_max"], "drained_ms": drained_ms,
              "record_bytes": stats["record_bytes"], "records_posted": stats["records_posted"]}
    f = open(plan["report"], "w")
    f.write(json.dumps(report))
    f.close()


asyncio.run(main())

"""Upload benchmark: the uploader under the MicroPython unix port against tools.ingest on 127.0.0.1.

    python -m tools.bench_upload [--live-s 30] [--backlog 600] [--heapsize 96wK]

Prints (and returns as JSON with --json):
  live-frame age at the ingest, p50/p95: server arrival time minus the window's close on the
      device (same host clock), with the device's settings: 1 s windows, live_interval_ms 1000
  backfill rate: records per minute to empty a spool holding --backlog records (an outage's worth:
      600 = 10 h at 60 s records), in batches of 20, one keep-alive connection
  bytes per record on the wire: HTTP bytes (headers + body, TLS framing not counted) per record,
      in a backfill batch and when each record goes alone (the steady state)
  heap used during an upload: gc.mem_alloc() after gc.collect() when a reply is in (the request's
      body, batch and reply still held), minus the same after start-up; under --heapsize (96wK ~ an
      ESP32 without PSRAM). Objects on this 64-bit port are about twice their ESP32 size.
"""

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading

from tools import ingest, mp, provision


def _run_device(tmp, port, certs, heapsize, **plan):
    state = os.path.join(tmp, "state-%d" % len(os.listdir(tmp)))
    os.makedirs(state)
    doc = {"state_dir": state, "url": "https://localhost:%d" % port, "ca_der": os.path.join(certs, "ca.der"),
           "fleet_key": open(os.path.join(certs, "fleet.key")).read().strip(), "serial": "BENCH-1",
           "report": os.path.join(tmp, "report.json"), "fault_file": os.path.join(tmp, "fault"),
           "timeout_ms": 10000}
    doc.update(plan)
    path = os.path.join(tmp, "plan.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([mp.ROOT, os.path.join(mp.ROOT, "lib"), ".frozen"]))
    cmd = [mp.micropython_exe()] + (["-X", "heapsize=" + heapsize] if heapsize else [])
    p = subprocess.run(cmd + [os.path.join(mp.ROOT, "tools", "sim", "upload_main.py"), path], env=env,
                       cwd=mp.ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("bench_upload: the device failed:\n" + p.stdout + p.stderr)
    with open(doc["report"]) as f:
        return json.load(f)


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench(live_s=30, backlog=600, heapsize="96wK"):
    tmp = tempfile.mkdtemp(prefix="bench-upload-")
    certs = os.path.join(tmp, "certs")
    ingest.ensure_certs(certs)
    provision.fleet_key_for(certs, os.path.join(certs, "fleet.key"), log=lambda m: None)  # the server's own
    db = os.path.join(tmp, "db.sqlite")
    ready = threading.Event()
    box = {}

    def serve():
        ingest.serve(0, db, certs, ready=lambda srv: (box.setdefault("srv", srv), ready.set()))

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
    port = box["srv"].server_address[1]
    try:
        live = _run_device(tmp, port, certs, heapsize, run_ms=live_s * 1000, window_ms=1000, live_ms=1000,
                           record_ms=5000, stale_ms=2000)
        conn = sqlite3.connect(db)
        ages = [r[0] for r in conn.execute("SELECT received_ms - t_ms FROM live WHERE serial = 'BENCH-1'")]
        conn.close()
        back = _run_device(tmp, port, certs, heapsize, run_ms=0, drain_ms=120000, prefill=backlog,
                           window_ms=1000, live_ms=1000, record_ms=1 << 29)
    finally:
        box["srv"].shutdown()
    drained_s = (back["drained_ms"] or back["elapsed_ms"]) / 1000
    return {
        "live_frames": len(ages), "live_age_p50_ms": _pct(ages, 0.5), "live_age_p95_ms": _pct(ages, 0.95),
        "live_age_max_ms": max(ages),
        "backlog_records": backlog, "backfill_s": round(drained_s, 2),
        "backfill_records_per_min": round(backlog / drained_s * 60),
        "bytes_per_record_batched": round(back["record_bytes"] / max(1, back["records_posted"])),
        "bytes_per_record_single": round(live["record_bytes"] / max(1, live["records_posted"])),
        "heap_used_during_upload_bytes": max(live["heap_max"], back["heap_max"]) - min(live["heap_base"],
                                                                                     back["heap_base"]),
        "heapsize": heapsize, "max_window_late_ms": max(live["max_late_ms"], back["max_late_ms"]),
        "lost": back["lost"] + live["lost"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench_upload", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--live-s", type=int, default=30, help="seconds of live frames to time (default 30)")
    ap.add_argument("--backlog", type=int, default=600, help="records in the spool to backfill (default 600)")
    ap.add_argument("--heapsize", default="96wK", help="MicroPython heap (default 96wK, an ESP32 without PSRAM)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    r = bench(args.live_s, args.backlog, args.heapsize)
    if args.json:
        print(json.dumps(r))
        return 0
    print("live-frame age at the ingest: p50 %d ms, p95 %d ms, max %d ms (%d frames)" % (
        r["live_age_p50_ms"], r["live_age_p95_ms"], r["live_age_max_ms"], r["live_frames"]))
    print("backfill: %d records in %.2f s = %d records/min" % (r["backlog_records"], r["backfill_s"],
                                                                r["backfill_records_per_min"]))
    print("bytes per record on the wire: %d in batches of 20, %d alone" % (r["bytes_per_record_batched"],
                                                                          r["bytes_per_record_single"]))
    print("heap used during an upload: %d bytes (heap %s); longest window delay %d ms; records lost %d" % (
        r["heap_used_during_upload_bytes"], r["heapsize"], r["max_window_late_ms"], r["lost"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

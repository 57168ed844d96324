"""soak — the whole device for a simulated day (or any length), on an accelerated clock.

    python -m tools.sim soak [--hours 24] [--heapsize 96wK] [--report json|text] [--keep DIR]

The device runs under the MicroPython unix port with its code from ROMFS in an ESP32's heap, uploads
over TLS to a local ingest server, and lives through a plan scaled to the run's length: one half-day
cycle, played twice, so that the second half repeats the first under the same conditions:

  * a load change every 1/12 of the run through six household loads (night, morning, EV charging,
    solar export, an unbalanced evening with harmonics...);
  * in the first 40 % of each cycle, four outages: the server answering 500, the Ethernet link
    pulled (and the server resetting connections) long enough for the setup access point to come
    up, a server that hangs, and one that drops kept-alive connections; and two visits to the setup
    page (a short BOOT press, then the page and its live readings);
  * the rest of each cycle: the loads alone.

The clock skips the time the firmware's event loop spends idle (tools/simboard/select.py): a
simulated day took 2.2-2.4 hours of host time on a 2-core desktop (BENCHMARKS.md, "Soak"; about
twice that with --heapsize 96wK), most of it the simulated ADC conversions. The verdict checks
what a day in a panel must not do: the heap grows (hourly floors in the second cycle's
quiet part against the same hours of the first), energy drifts from the integral of the simulated
power by more than 0.5 %, an interval record goes missing at the ingest, a task dies, the meter errs.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time

from tools import mp
from tools.ingest import stored_seqs
from tools.sim import mains, truth

ENERGY_TOLERANCE = 0.005  # of the day's energy
HEAP_GROWTH_BYTES = 4096  # a day's growth of the hourly heap floor, at most (2 KB between the two cycles)
HEAP_PAIRS_MIN = 3  # floors paired across the cycles that the check needs: a run of 14 h or more
QUIET_FROM = 0.4  # of a cycle: the events are over, the loads alone change
# In an ESP32's heap (--heapsize): at its lowest, at least this share of the heap free (room for what
# the board adds and for growth), and a free block of this size (the heap is never compacted; the
# device asks for ~1 KB pieces at most while it runs: records, parts of the page).
HEAP_FREE_MIN_FRACTION = 0.10
LARGEST_BLOCK_MIN_BYTES = 1024
RECORD_INTERVAL_S = 60  # the product's default
SIM_HEAP_BYTES = 512 * 1024  # the simulated mains and loads, beside the firmware's heap

BASE = {"description": "soak", "model": "home", "frequency_hz": 50.0, "noise_lsb": 1.0, "seed": 7}
_H = [[3, 0.2, 20.0], [5, 0.1, 0.0]]  # a rectifier load's harmonics
LOADS = [  # per phase: [irms, phase_deg (current lagging voltage; ~180 exports)]
    ("night", [[2.0, 10.0], [1.5, 15.0], [1.0, 5.0]]),
    ("morning", [[10.0, 25.0], [6.0, 20.0], [8.0, 30.0]]),
    ("EV charging", [[28.0, 5.0], [28.0, 5.0], [28.0, 5.0]]),
    ("solar export", [[12.0, 175.0], [12.0, 178.0], [11.0, 172.0]]),
    ("evening", [[20.0, 30.0], [15.0, 35.0], [25.0, 25.0]]),
    ("unbalanced", [[30.0, 20.0], [0.5, 0.0], [5.0, 40.0]]),
]
# One cycle's events, (fraction of the cycle, kind, argument): outages start and end, portal visits,
# all before QUIET_FROM. Half a day, played twice: the first cycle is the warm-up (every kind of
# outage and the setup page once: pools filled, lazy imports done; the loads' first uses fall in its
# quiet hours, measured at +128 bytes), the second repeats it, and the quiet hours after each are
# compared. The outages keep their lengths in a 12 h cycle: 43, 43, 22 and 29 minutes.
CYCLE_EVENTS = [
    (0.02, "portal", 3),
    (0.05, "fault", "500"), (0.11, "fault", ""),
    (0.14, "link", False), (0.14, "fault", "reset"), (0.20, "link", True), (0.20, "fault", ""),
    (0.23, "fault", "hang"), (0.26, "fault", ""),
    (0.29, "fault", "drop"), (0.33, "fault", ""),
    (0.36, "portal", 3),
]
CYCLES = 2


def load_scenario(k):
    s = dict(BASE)
    s["phases"] = [{"irms": i, "phase_deg": d, **({"i_harmonics": _H} if LOADS[k][0] == "evening" else {})}
                   for i, d in LOADS[k][1]]
    return mains.load_scenario(s)


def make_plan(duration_s, fault_file, events=None):
    """The plan device_main.py plays: loads, and events as [t_s, kind, argument] (default: the day's)."""
    if events is None:
        cycle_s = duration_s / CYCLES  # the loads' own period too: six loads, one every 1/12 of the run
        events = [[duration_s * n / 12.0, "load", n % len(LOADS)] for n in range(1, 12)]
        events += [[cycle_s * (c + f), kind, arg] for c in range(CYCLES) for f, kind, arg in CYCLE_EVENTS]
    else:
        events = [list(e) for e in events]
    events.append([duration_s, "end", None])
    events.sort(key=lambda e: e[0])
    return {"loads": [load_scenario(k) for k in range(len(LOADS))], "events": events, "fault_file": fault_file}


def energy_truth(plan, events_done, start_ms, end_ms):
    """The integral of the simulated power from start_ms to end_ms, summed over the phases:
    (import_wh, export_wh), with the loads switched when they were (load 0 at first)."""
    switches = [(0, 0)] + [(t, arg) for t, kind, arg, _ in events_done if kind == "load"]
    imp = exp = 0.0
    for n, (t_ms, k) in enumerate(switches):
        t_end = min(switches[n + 1][0] if n + 1 < len(switches) else end_ms, end_ms)
        t_ms = max(t_ms, start_ms)
        if t_end <= t_ms:
            continue
        hours = (t_end - t_ms) / 3.6e6
        for ph in truth.expected(plan["loads"][k])["phases"]:
            p = ph["real_power_w"]
            imp += max(p, 0.0) * hours
            exp += max(-p, 0.0) * hours
    return imp, exp


def paired_floors(floors, cycle_ms):
    """The hourly floors [t_ms, bytes] of the first cycle's quiet part, each with the floor of the same
    hour one cycle later: [(hour, first, second)]; none when a cycle is not a whole number of hours."""
    hour_ms = 3600000
    if cycle_ms % hour_ms:
        return []
    cycle_h = cycle_ms // hour_ms
    # the hour that ends at t (the device stops just before the run's last reading: a day has 23)
    by_hour = {round(t / hour_ms): b for t, b in floors}
    return [(h, by_hour[h], by_hour[h + cycle_h]) for h in sorted(by_hour)
            if (h - 1) * hour_ms >= QUIET_FROM * cycle_ms and h <= cycle_h and h + cycle_h in by_hour]


def verdict(report, plan, seqs, duration_s):
    """[(check, passed, detail)] for a soak's report."""
    out = []
    closed = report["records_closed"]
    pending, lost = report["records_pending"], report["records_lost"]
    at_ingest = set(seqs)
    missing = [s for s in range(closed - pending) if s not in at_ingest]
    out.append(("every interval record at the ingest", not missing and lost == 0,
                "%d closed, %d at the ingest, %d still spooled at the stop, %d missing, %d lost"
                % (closed, len(seqs), pending, len(missing), lost)))
    soak = report["soak"]
    end = soak["last_window_ms"]  # the counters cover the meter's windows, which end here
    imp, exp = energy_truth(plan, soak["events"], end - soak["accounted_ms"], end)
    e = report["energy"]
    gross = imp + exp
    d_imp, d_exp = e["import_wh"] - imp, e["export_wh"] - exp
    ok = abs(d_imp) <= ENERGY_TOLERANCE * gross and abs(d_exp) <= ENERGY_TOLERANCE * gross
    out.append(("energy = integral of the simulated power (0.5 %)", ok,
                "import %.1f Wh (integral %.1f, %+.3f %%), export %.1f Wh (integral %.1f, %+.3f %%)"
                % (e["import_wh"], imp, 100 * d_imp / gross, e["export_wh"], exp, 100 * d_exp / gross)))
    # The heap: each hour's floor steps by a KB or two with what is alive at its lowest point (an
    # upload's connection, a diagnostic message), so floors are compared only under the same
    # conditions: the quiet hours of the second cycle against the same hours of the first, the
    # second cycle's events between them. A leak, per hour or per event, raises the pairs after it
    # alike; one pair may be over the limit (one odd hour does not decide), two may not.
    cycle_ms = duration_s * 1000 // CYCLES
    pairs = paired_floors(report["soak"].get("heap_floor", []), cycle_ms)
    limit = HEAP_GROWTH_BYTES * cycle_ms // 86400000  # 2 KB between the cycles of a day
    name = "heap stable (quiet hours, a cycle apart)"
    if len(pairs) >= HEAP_PAIRS_MIN:
        first, last, cycle_h = pairs[0][0], pairs[-1][0], cycle_ms // 3600000
        growth = [b - a for _, a, b in pairs]
        out.append((name, sorted(growth)[-2] <= limit,
                    "floors of hours %d-%d against %d-%d: %s bytes; all but one at most %+d"
                    % (first, last, first + cycle_h, last + cycle_h, ", ".join("%+d" % g for g in growth), limit)))
    else:  # said, not passed: a short soak shows nothing about growth
        out.append((name, None, "not checked: %d hourly floors paired across the cycles, %d needed "
                                "(a run of 14 h or more, an even number of hours)" % (len(pairs), HEAP_PAIRS_MIN)))
    if "heap_bytes" in report:  # --heapsize: the firmware never came close to running out
        fits = (report["heap_free_min_bytes"] > HEAP_FREE_MIN_FRACTION * report["heap_bytes"]
                and report["heap_largest_free_min_bytes"] >= LARGEST_BLOCK_MIN_BYTES)
        out.append(("fits the ESP32 heap", fits,
                    "peak %d of %d bytes, fewest free %d, largest free block at least %d"
                    % (report["heap_peak_bytes"], report["heap_bytes"], report["heap_free_min_bytes"],
                       report["heap_largest_free_min_bytes"])))
    out.append(("no task died, no window failed", not report["task_failures"] and report["meter_errors"] == 0,
                "task failures %s, meter errors %d" % (report["task_failures"] or "none", report["meter_errors"])))
    covered = soak["accounted_ms"] / 1000.0
    out.append(("the meter kept measuring", covered >= duration_s - 5 and report["windows"] >= 0.9 * duration_s,
                "%d windows covering %.0f of %d simulated s" % (report["windows"], covered, duration_s)))
    out.append(("the setup page answered", soak["portal_ok"] > 0 and soak["portal_failed"] == 0,
                "%d requests answered, %d failed" % (soak["portal_ok"], soak["portal_failed"])))
    return out


def run(hours, heapsize=None, keep=None, events=None):
    """Run a soak of `hours` simulated hours: (report, verdict, wall seconds). `events` replaces the
    day's plan ([fraction of the run, kind, argument]...), e.g. to measure one thing at a time."""
    from tools.sim.__main__ import _start_ingest, budget_args
    from tools.sim.runner import free_port, prepare_upload, run_until_stopped

    duration_s = int(hours * 3600)
    if keep is not None and os.path.isdir(keep) and os.listdir(keep):
        raise RuntimeError("--keep %s: the folder must be new or empty (a soak starts from a fresh device)" % keep)
    work = keep or tempfile.mkdtemp(prefix="meter-soak-")
    try:
        state, ingest = os.path.join(work, "flash"), os.path.join(work, "ingest")
        os.makedirs(state, exist_ok=True)
        fault_file = os.path.join(work, "fault")
        open(fault_file, "w").close()
        srv, port, db = _start_ingest(ingest, ["--fault-file", fault_file], quiet=True)
        try:
            prepare_upload(state, "https://localhost:%d" % port, os.path.join(ingest, "certs", "ca.der"), None,
                           RECORD_INTERVAL_S)
            plan = make_plan(duration_s, fault_file,
                             None if events is None else [[duration_s * f, k, a] for f, k, a in events])
            plan_path = os.path.join(work, "plan.json")
            scenario_path = os.path.join(work, "scenario.json")
            with open(plan_path, "w") as f:
                json.dump(plan, f)
            with open(scenario_path, "w") as f:
                json.dump(plan["loads"][0], f)
            report_path = os.path.join(work, "report.json")
            args = [state, scenario_path, "--run-ms", str(duration_s * 1000), "--port", str(free_port()),
                    "--dns-port", str(free_port()), "--report", report_path, "--soak", plan_path]
            heap = None
            if heapsize:
                extra, heap = budget_args(heapsize, SIM_HEAP_BYTES)
                args += extra
            cmd = mp.command(os.path.join(mp.ROOT, "tools", "sim", "device_main.py"), *args, heapsize=heap)
            t0 = time.monotonic()
            with open(os.path.join(work, "console.log"), "w") as console:
                rc = run_until_stopped(cmd, cwd=mp.ROOT, stdout=console, stderr=subprocess.STDOUT)
            wall_s = time.monotonic() - t0
        finally:
            srv.terminate()
            srv.wait(10)
        if rc != 0 or not os.path.exists(report_path):
            with open(os.path.join(work, "console.log")) as f:
                tail = f.read()[-3000:]
            raise RuntimeError("the device failed (exit status %d):\n%s" % (rc, tail))
        with open(report_path) as f:
            report = json.load(f)
        with open(os.path.join(state, "identity.json")) as f:
            serial = json.load(f)["serial"]
        checks = verdict(report, plan, stored_seqs(db, serial), duration_s)
        return report, checks, wall_s
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def format_verdict(checks, hours, wall_s):
    lines = ["soak: %g simulated hours in %.0f s of host time (%.0fx)" % (hours, wall_s, hours * 3600 / wall_s)]
    for name, ok, detail in checks:
        lines.append("  %s %-48s %s" % ("n/a " if ok is None else "ok  " if ok else "FAIL", name, detail))
    return "\n".join(lines)

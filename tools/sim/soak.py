"""soak — the whole device for a simulated day (or any length), on an accelerated clock.

    python -m tools.sim soak [--hours 24] [--heapsize 96wK] [--report json|text] [--keep DIR]

The device runs under the MicroPython unix port with its code from ROMFS in an ESP32's heap, uploads
over TLS to a local ingest server, and lives through a plan scaled to the run's length:

  * eleven load changes through six household loads (night, morning, EV charging, solar export,
    an unbalanced evening with harmonics...);
  * four outages: the server answering 500, the Ethernet link pulled (and the server resetting
    connections) long enough for the setup access point to come up, a server that hangs, and one
    that drops kept-alive connections;
  * three visits to the setup page (a short BOOT press, then the page and its live readings).

The clock skips the time the firmware's event loop spends idle (tools/simboard/select.py): a
simulated day takes about 1.5-2 hours of host time, most of it the simulated ADC conversions. The
verdict checks what a day in a panel must not do: the heap grows (hourly floors), energy
drifts from the integral of the simulated power by more than 0.5 %, an interval record goes
missing at the ingest, a task dies, the meter errs.
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
HEAP_GROWTH_BYTES = 4096  # a day's growth of the hourly heap floor (least-squares trend), at most
HEAP_FLOORS_MIN = 3  # hourly floors after the first hour that a trend needs: a run of 4 h or more
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
# (fraction of the run, kind, argument): outages start and end, portal visits; loads every 1/12.
EVENTS = [
    (0.10, "portal", 3),
    (0.15, "fault", "500"), (0.18, "fault", ""),
    (0.35, "link", False), (0.35, "fault", "reset"), (0.38, "link", True), (0.38, "fault", ""),
    (0.50, "portal", 3),
    (0.55, "fault", "hang"), (0.565, "fault", ""),
    (0.75, "fault", "drop"), (0.77, "fault", ""),
    (0.90, "portal", 3),
]


def load_scenario(k):
    s = dict(BASE)
    s["phases"] = [{"irms": i, "phase_deg": d, **({"i_harmonics": _H} if LOADS[k][0] == "evening" else {})}
                   for i, d in LOADS[k][1]]
    return mains.load_scenario(s)


def make_plan(duration_s, fault_file, events=None):
    """The plan device_main.py plays: loads, and events as [t_s, kind, argument] (default: the day's)."""
    if events is None:
        events = [[duration_s * n / 12.0, "load", n % len(LOADS)] for n in range(1, 12)]
        events += [[duration_s * f, kind, arg] for f, kind, arg in EVENTS]
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


# Student's t, two-sided 95 %, by degrees of freedom (above the last: 1.96)
_T95 = ((1, 12.71), (2, 4.30), (3, 3.18), (4, 2.78), (5, 2.57), (6, 2.45), (7, 2.36), (8, 2.31), (9, 2.26),
        (10, 2.23), (12, 2.18), (15, 2.13), (20, 2.09), (30, 2.04), (60, 2.00))


def trend_per_hour(points):
    """Least-squares slope of [t_ms, bytes] points in bytes per hour, and the half-width of its 95 %
    confidence interval (None with fewer than three points)."""
    xs = [t / 3.6e6 for t, _ in points]
    ys = [b for _, b in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    spread = sum((x - mx) ** 2 for x in xs)
    if not spread:
        return 0.0, None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / spread
    if n < 3:
        return slope, None
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys)) / (n - 2)
    t = next((t for dof, t in _T95 if n - 2 <= dof), 1.96)
    return slope, t * (residual / spread) ** 0.5


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
    floor = report["soak"].get("heap_floor", [])[1:]  # from the second hour: the first fills pools
    if len(floor) >= HEAP_FLOORS_MIN:
        # Each floor wanders by a KB or two with what is alive at that moment, so the trend is
        # judged with its uncertainty: shown to stay under the limit, shown to exceed it, or neither
        # (then "n/a": a longer run is needed, it is not a pass).
        slope, half = trend_per_hour(floor)
        per_day, half_day = slope * 24, half * 24
        ys = [b for _, b in floor]
        ok = True if per_day + half_day <= HEAP_GROWTH_BYTES else False if per_day - half_day > HEAP_GROWTH_BYTES \
            else None
        out.append(("heap stable (hourly floor, trend)", ok,
                    "%d hourly floors %d-%d bytes, trend %+.0f ± %.0f bytes/day (95 %%; at most %d)%s"
                    % (len(ys), min(ys), max(ys), per_day, half_day, HEAP_GROWTH_BYTES,
                       "" if ok is not None else ": inconclusive, a longer run is needed")))
    else:  # said, not passed: a short soak shows nothing about growth
        out.append(("heap stable (hourly floor, trend)", None,
                    "not checked: %d hourly floors after the first hour, %d needed (a run of %d h or more)"
                    % (len(floor), HEAP_FLOORS_MIN, HEAP_FLOORS_MIN + 1)))
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

# The soak on an accelerated clock (python -m tools.sim soak): load changes, server outages, the
# Ethernet link pulled, the setup page used, and the checks a day in a panel must pass. The full
# simulated day is a benchmark (BENCHMARKS.md); here a short run with every kind of event.
import json
import subprocess
import sys

from tools import mp
from tools.sim import soak

EVENTS = [  # (fraction of the run, kind, argument)
    (0.10, "fault", "500"), (0.16, "fault", ""),
    (0.25, "load", 2),  # EV charging
    (0.30, "link", False), (0.30, "fault", "reset"), (0.36, "link", True), (0.36, "fault", ""),
    (0.45, "portal", 2),
    (0.50, "load", 3),  # solar export
    (0.55, "fault", "hang"), (0.58, "fault", ""),
    (0.75, "load", 4),  # evening, with harmonics
    (0.80, "fault", "drop"), (0.83, "fault", ""),
]


def test_a_short_soak_passes_every_check(tmp_path):
    report, checks, wall_s = soak.run(0.1, keep=str(tmp_path / "run"), events=EVENTS)
    failed = [(name, detail) for name, ok, detail in checks if ok is False]
    assert not failed, soak.format_verdict(checks, 0.1, wall_s)
    names = [name for name, _, _ in checks]
    assert "every interval record at the ingest" in names and "the setup page answered" in names
    assert dict((n, ok) for n, ok, _ in checks)["heap stable (hourly floor, trend)"] is None  # 6 min: too short
    kinds = [e[1] for e in report["soak"]["events"]]
    assert kinds.count("load") == 3 and kinds.count("fault") == 8 and kinds.count("portal") == 1
    assert report["skipped_ms"] > 60000  # the clock did skip idle time
    assert report["upload"]["records_sent"] >= 5 and report["soak"]["portal_ok"] == 4


def test_the_verdict_fails_what_it_should():
    plan = soak.make_plan(3600, "/nonexistent", [[0, "end", None]])
    good = {"upload": {}, "records_closed": 3, "records_pending": 0, "records_lost": 0,
            "energy": {"import_wh": 100.0, "export_wh": 0.0},
            "task_failures": {}, "meter_errors": 0, "windows": 3500,
            "soak": {"events": [], "last_window_ms": 3600000, "accounted_ms": 3600000, "heap_live": [],
                     "heap_floor": [[h * 3600000, 100000 + (h % 2) * 3000] for h in range(1, 25)],
                     "portal_ok": 1, "portal_failed": 0}}
    p0 = soak.energy_truth(plan, [], 0, 3600000)[0]
    good["energy"]["import_wh"] = p0

    def verdict(**changes):
        r = json.loads(json.dumps(good))
        for k, v in changes.items():
            r[k] = v
        return {name: ok for name, ok, _ in soak.verdict(r, plan, [0, 1, 2], 3600)}

    assert all(verdict().values())
    assert not verdict(records_closed=4)["every interval record at the ingest"]  # seq 3 never arrived
    drifted = verdict(energy={"import_wh": p0 * 1.006, "export_wh": 0.0})
    assert not drifted["energy = integral of the simulated power (0.5 %)"]
    assert not verdict(task_failures={"uploader": 1})["no task died, no window failed"]
    assert verdict()["heap stable (hourly floor, trend)"]  # 3 KB up and down every hour: no trend
    leak = dict(good["soak"], heap_floor=[[h * 3600000, 100000 + 200 * h] for h in range(1, 25)])
    assert not verdict(soak=leak)["heap stable (hourly floor, trend)"]  # 200 bytes an hour: 4.8 KB a day
    # The floors of a 5 h run in 96wK: +2.2 KB an hour from three noisy points is neither a leak
    # shown nor stability shown.
    noisy = dict(good["soak"], heap_floor=[[3600048, 128928], [7200054, 127936], [10800041, 128608],
                                           [14400041, 132288]])
    assert verdict(soak=noisy)["heap stable (hourly floor, trend)"] is None
    short = dict(good["soak"], heap_floor=good["soak"]["heap_floor"][:3])  # 3 h: 2 floors after the first
    assert verdict(soak=short)["heap stable (hourly floor, trend)"] is None  # not checked, not passed
    budget = {"heap_bytes": 196608, "heap_peak_bytes": 160000, "heap_free_min_bytes": 30000,
              "heap_largest_free_min_bytes": 4000}
    assert verdict(**budget)["fits the ESP32 heap"]
    assert not verdict(**dict(budget, heap_free_min_bytes=19000))["fits the ESP32 heap"]
    assert not verdict(**dict(budget, heap_largest_free_min_bytes=900))["fits the ESP32 heap"]  # fragmented


def test_soak_command_refuses_bad_hours():
    r = subprocess.run([sys.executable, "-m", "tools.sim", "soak", "--hours", "0"], cwd=mp.ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--hours: must be more than 0" in r.stderr

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


HEAP = "heap stable (quiet hours, a cycle apart)"


def test_a_short_soak_passes_every_check(tmp_path):
    report, checks, wall_s = soak.run(0.1, keep=str(tmp_path / "run"), events=EVENTS)
    failed = [(name, detail) for name, ok, detail in checks if ok is False]
    assert not failed, soak.format_verdict(checks, 0.1, wall_s)
    names = [name for name, _, _ in checks]
    assert "every interval record at the ingest" in names and "the setup page answered" in names
    assert dict((n, ok) for n, ok, _ in checks)[HEAP] is None  # 6 min: too short
    kinds = [e[1] for e in report["soak"]["events"]]
    assert kinds.count("load") == 3 and kinds.count("fault") == 8 and kinds.count("portal") == 1
    assert report["skipped_ms"] > 60000  # the clock did skip idle time
    assert report["upload"]["records_sent"] >= 5 and report["soak"]["portal_ok"] == 4


def _an_hours_report():
    """A soak's report of one hour in which everything went right (energy to be filled in)."""
    return {"upload": {}, "records_closed": 3, "records_pending": 0, "records_lost": 0,
            "energy": {"import_wh": 0.0, "export_wh": 0.0},
            "task_failures": {}, "meter_errors": 0, "windows": 3500,
            "soak": {"events": [], "last_window_ms": 3600000, "accounted_ms": 3600000, "heap_live": [],
                     "heap_floor": [], "portal_ok": 1, "portal_failed": 0}}


def test_the_verdict_fails_what_it_should():
    plan = soak.make_plan(3600, "/nonexistent", [[0, "end", None]])
    good = _an_hours_report()
    p0 = soak.energy_truth(plan, [], 0, 3600000)[0]
    good["energy"]["import_wh"] = p0

    def verdict(**changes):
        r = json.loads(json.dumps(good))
        for k, v in changes.items():
            r[k] = v
        return {name: ok for name, ok, _ in soak.verdict(r, plan, [0, 1, 2], 3600)}

    assert all(ok is not False for ok in verdict().values()) and verdict()[HEAP] is None  # 1 h: not checked
    assert not verdict(records_closed=4)["every interval record at the ingest"]  # seq 3 never arrived
    drifted = verdict(energy={"import_wh": p0 * 1.006, "export_wh": 0.0})
    assert not drifted["energy = integral of the simulated power (0.5 %)"]
    assert not verdict(task_failures={"uploader": 1})["no task died, no window failed"]
    budget = {"heap_bytes": 196608, "heap_peak_bytes": 160000, "heap_free_min_bytes": 30000,
              "heap_largest_free_min_bytes": 4000}
    assert verdict(**budget)["fits the ESP32 heap"]
    assert not verdict(**dict(budget, heap_free_min_bytes=19000))["fits the ESP32 heap"]
    assert not verdict(**dict(budget, heap_largest_free_min_bytes=900))["fits the ESP32 heap"]  # fragmented


def test_the_heap_check_compares_the_same_hours_a_cycle_apart():
    plan = soak.make_plan(86400, "/nonexistent")

    def heap(floor_at, hours=24):
        report = _an_hours_report()  # (only the heap check is read here)
        report["soak"]["heap_floor"] = [[h * 3600000 + 37, floor_at(h)] for h in range(1, hours)]
        checks = {name: (ok, detail) for name, ok, detail in soak.verdict(report, plan, [], hours * 3600)}
        return checks[HEAP]

    ok, detail = heap(lambda h: 100000 + (h % 2) * 3000)  # 3 KB up and down every hour, alike a cycle later
    assert ok and "hours 6-11 against 18-23" in detail, detail
    assert heap(lambda h: 100000 + 150 * h)[0]  # 1.8 KB a cycle: 3.6 KB a day, under the limit
    assert heap(lambda h: 100000 + 200 * h)[0] is False  # 2.4 KB a cycle: 4.8 KB a day
    assert heap(lambda h: 100000 + (3000 if h > 12 else 0))[0] is False  # 3 KB at the second cycle's events
    assert heap(lambda h: 100000 + (8000 if h > 2 else 0))[0]  # once, in the warm-up: the first upload's imports
    assert heap(lambda h: 100000 + (5000 if h == 20 else 0))[0]  # one odd hour does not decide
    assert heap(lambda h: 100000 + (5000 if h in (20, 22) else 0))[0] is False  # two do
    assert heap(lambda h: 100000 + max(0, h - 21) * 2500)[0] is False  # a leak from hour 21 on: two pairs
    ok, detail = heap(lambda h: 100000 + 200 * h, hours=14)  # 7 h cycles: hours 4-6 against 11-13
    assert ok is False and "hours 4-6 against 11-13" in detail and "at most +1194" in detail, detail
    assert heap(lambda h: 100000 + 150 * h, hours=14)[0]  # 1,050 bytes a cycle: 3.6 KB a day
    assert heap(lambda h: 100000, hours=12)[0] is None  # 12 h: too few quiet hours in a cycle
    assert heap(lambda h: 100000 + 10 * h, hours=5)[0] is None  # half cycles of 2.5 h: no hour pairs


def test_the_plan_repeats_its_cycle():
    plan = soak.make_plan(86400, "/nonexistent")
    first = [(round(t, 3), kind, arg) for t, kind, arg in plan["events"] if t < 43200]
    second = [(round(t - 43200, 3), kind, arg) for t, kind, arg in plan["events"] if 43200 <= t < 86400]
    assert second[0] == (0, "load", 0) and first == second[1:]  # night again, then the same again
    kinds = {kind for _, kind, _ in first}
    assert kinds == {"load", "fault", "link", "portal"} and {a for _, k, a in first if k == "fault"} \
        == {"500", "reset", "hang", "drop", ""}
    assert all(t < soak.QUIET_FROM * 43200 for t, kind, _ in first if kind != "load")  # then the loads alone


def test_soak_command_refuses_bad_hours():
    r = subprocess.run([sys.executable, "-m", "tools.sim", "soak", "--hours", "0"], cwd=mp.ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--hours: must be more than 0" in r.stderr

"""Loads that switch: the meter's energy error on burst-fire patterns and stepping loads (CPython host).

    python -m tools.bench_switching [--duration 60] [--quick] [--freq 50 ...] [--meter JSON] [--json]

Every case is a scenario with a `cycle_pattern` or `steps` (docs/SIMULATOR.md) run through the whole
measurement chain under the real MicroPython (`tools.sim run`, virtual time), compared with the
truth's cycle-by-cycle integral (tools/sim/truth.py). Each phase carries its own pattern, so one run
measures three patterns. 230 V and 20 A resistive on every phase, as in issue #21.

- fixed patterns: every period in PERIODS at every duty in DUTIES (on for round(duty·period) cycles,
  at least 1 and at most period-1, then off), at each frequency;
- random patterns: each cycle on with probability p (RANDOM_P), three seeds;
- steps: a load stepping every S s (STEP_EVERY_S) between 6 and 32 A.

The error is (meter's import Wh - truth's) / truth's, per phase. `--meter` merges settings into the
meter's (e.g. '{"burst_cycles": 4, "burst_period_ms": 200}') to measure other sampling options.
"""

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tools.sim import runner, truth

PERIODS = (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 20, 25, 30, 40, 47, 50)
DUTIES = (0.05, 0.25, 0.5, 0.75, 0.95)
FREQUENCIES_HZ = (50.0, 60.0, 49.9, 60.1)
RANDOM_P = (0.05, 0.3, 0.5, 0.7, 0.95)
RANDOM_SEEDS = (1, 2, 3)
STEP_EVERY_S = (1, 2, 5, 10, 30)
AMPS = 20.0
# --quick: the patterns today's sampling aliases worst, and some it does not, at 50 Hz and 49.9 Hz
QUICK_PATTERNS = ((3, 1), (5, 1), (15, 7), (10, 1), (20, 1), (2, 1), (6, 2), (25, 12), (47, 2))


def fixed_pattern(period, on):
    return [1] * on + [0] * (period - on)


def fixed_cases(quick=False):
    """[(period, on cycles)] of the sweep, each once (small periods give the same pattern for several duties)."""
    if quick:
        return list(QUICK_PATTERNS)
    seen = []
    for d in PERIODS:
        for duty in DUTIES:
            on = min(d - 1, max(1, round(duty * d)))
            if (d, on) not in seen:
                seen.append((d, on))
    return seen


def _three(items):
    return [items[k:k + 3] for k in range(0, len(items), 3)]


def _phase(**keys):
    return dict({"vrms": 230.0, "irms": AMPS, "phase_deg": 0.0}, **keys)


def step_loads(every_s, duration_s, seed):
    """[[t_s, {"irms"}]] every every_s seconds, 6-32 A from a fixed sequence."""
    x = seed * 7919 + 13
    out = []
    t = every_s
    while t < duration_s:
        x = (x * 1103515245 + 12345) % 2147483648
        out.append([float(t), {"irms": 6.0 + (x >> 8) % 27}])
        t += every_s
    return out


def scenarios(duration_s, freqs, meter, quick=False):
    """[(label of each phase, kind, scenario)]: three cases per run."""
    out = []
    for f in freqs:
        for group in _three(fixed_cases(quick)):
            phases = [_phase(cycle_pattern=fixed_pattern(d, on)) for d, on in group]
            labels = [("fixed", f, "%d/%d" % (on, d), on / d) for d, on in group]
            out.append((labels, {"frequency_hz": f, "meter": dict(meter), "phases": phases}))
    if quick:
        return out
    for f in freqs[:2]:
        cases = [(p, s) for p in RANDOM_P for s in RANDOM_SEEDS]
        for group in _three(cases):
            phases = [_phase(cycle_pattern={"random": p, "seed": s}) for p, s in group]
            labels = [("random", f, "p=%g seed %d" % (p, s), p) for p, s in group]
            out.append((labels, {"frequency_hz": f, "meter": dict(meter), "phases": phases}))
        for group in _three(list(STEP_EVERY_S) + [STEP_EVERY_S[0]]):
            phases = [_phase(irms=16.0, phase_deg=10.0, steps=step_loads(e, duration_s, k))
                      for k, e in enumerate(group)]
            labels = [("steps", f, "every %g s" % e, None) for e in group]
            out.append((labels, {"frequency_hz": f, "meter": dict(meter), "phases": phases}))
    return out


def run_case(labels, scenario, duration_s):
    report, _ = runner.simulate(scenario, duration_s)
    want = truth.expected(scenario, duration_s)
    rows = []
    for k, (kind, f, name, duty) in enumerate(labels):
        got, exp = report["phases"][k]["import_wh"], want["phases"][k]["import_wh"]
        rows.append({"kind": kind, "frequency_hz": f, "pattern": name, "duty": duty, "meter_wh": got, "true_wh": exp,
                     "error": (got - exp) / exp})
    return rows


def run(duration_s=60.0, freqs=FREQUENCIES_HZ, meter=None, quick=False, workers=None, progress=None):
    cases = scenarios(duration_s, freqs, meter or {}, quick)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        futures = [pool.submit(run_case, labels, sc, duration_s) for labels, sc in cases]
        rows = []
        for n, fut in enumerate(futures):
            rows += fut.result()
            if progress:
                progress("%d/%d runs" % (n + 1, len(futures)))
    return rows


def summary(rows):
    """{kind: {"cases", "worst", "rms", "mean"}} of the errors (fractions)."""
    out = {}
    for kind in ("fixed", "random", "steps"):
        errs = [r["error"] for r in rows if r["kind"] == kind]
        if errs:
            out[kind] = {"cases": len(errs), "worst": max(errs, key=abs), "mean": statistics.fmean(errs),
                         "rms": statistics.fmean(e * e for e in errs) ** 0.5}
    return out


def human(rows, duration_s, meter):
    lines = ["energy error over %g s, meter settings %s (meter - truth, per phase):" % (duration_s, meter or "default"),
             "%-7s %6s %-14s %6s %10s %10s %9s" % ("kind", "Hz", "pattern", "duty", "meter Wh", "true Wh", "error")]
    for r in rows:
        lines.append("%-7s %6g %-14s %6s %10.3f %10.3f %+8.2f%%" % (
            r["kind"], r["frequency_hz"], r["pattern"], "" if r["duty"] is None else "%.0f%%" % (100 * r["duty"]),
            r["meter_wh"], r["true_wh"], 100 * r["error"]))
    for kind, s in summary(rows).items():
        lines.append("%s: %d cases, worst %+.2f %%, rms %.2f %%, mean %+.2f %%"
                     % (kind, s["cases"], 100 * s["worst"], 100 * s["rms"], 100 * s["mean"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench_switching", description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="simulated seconds per run (default 60)")
    ap.add_argument("--freq", type=float, action="append", help="mains frequency (repeat; default 50, 60, 49.9, 60.1)")
    ap.add_argument("--meter", default="{}", help="meter settings merged into the defaults, as JSON")
    ap.add_argument("--quick", action="store_true", help="a few fixed patterns only")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    meter = json.loads(args.meter)
    t0 = time.monotonic()
    rows = run(args.duration, tuple(args.freq or FREQUENCIES_HZ), meter, args.quick,
               progress=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({"duration_s": args.duration, "meter": meter, "rows": rows, "summary": summary(rows),
                          "wall_s": round(time.monotonic() - t0, 1)}))
    else:
        print(human(rows, args.duration, meter))
        print("(%.0f s)" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())

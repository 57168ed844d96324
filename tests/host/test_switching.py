# Loads that switch (issue #21): burst-fire patterns through the firmware on the real MicroPython.
#
# A sweep of the fixed patterns that a burst schedule locked to the mains cycles aliases worst (and
# some it does not), at 50, 60 and 49.9 Hz, 60 s each (tools/bench_switching.py --quick; the full
# table is the benchmark). Sampling without aliasing is unbiased: each phase's energy error is then
# a sampling error whose size follows from the coverage. A phase is measured in 2-cycle bursts,
# ~9.4 bursts a second shared by 3 phases (tools/bench_busy.py: 566 in 60 s): n = 180 bursts of each
# phase in 60 s, rounded down. Seen as n draws of a
# burst that is on (a fraction q of the pattern's cycles) or off, the relative standard error of the
# energy is at most sqrt((1 - q) / (q·n)) (bursts of two cycles that always agree: the worst case);
# the test allows 4 of those. Today's sampling (before 21) failed it: -100 % on 1/5 at 50 Hz, -55 %
# on 7/15 at 49.9 Hz, +140 % on 2/6 at 60 Hz.
#
# The target, 1 % over 60 s for every pattern, is not reachable with this coverage (at
# q = 5 % the standard error is 22-31 %): BENCHMARKS.md, "Loads that switch", has the numbers. It is
# kept below as an expected failure, strict, so that it is noticed the day it passes.

import math

import pytest

from tools import bench_switching

FREQUENCIES_HZ = (50.0, 60.0, 49.9)
SECONDS = 60.0
BURSTS_PER_PHASE = 180

_rows = []


def _sweep():
    if not _rows:
        _rows.extend(bench_switching.run(SECONDS, FREQUENCIES_HZ, quick=True))
    return _rows


def _bound(duty):
    return 4 * math.sqrt((1 - duty) / (duty * BURSTS_PER_PHASE))


def test_the_sweep_covers_the_aliasing_patterns():
    rows = _sweep()
    assert len(rows) == len(bench_switching.QUICK_PATTERNS) * len(FREQUENCIES_HZ)
    assert {r["pattern"] for r in rows} >= {"1/5", "1/3", "7/15", "2/6", "1/10"}


@pytest.mark.parametrize("hz", FREQUENCIES_HZ)
def test_burst_fire_energy_has_no_aliasing(hz):
    bad = [(r["pattern"], "%+.1f %%" % (100 * r["error"]), "bound %.0f %%" % (100 * _bound(r["duty"])))
           for r in _sweep() if r["frequency_hz"] == hz and abs(r["error"]) > _bound(r["duty"])]
    assert not bad, bad


@pytest.mark.xfail(strict=True, reason="not reachable with 2 of every 15 cycles sampled per phase: "
                                       "BENCHMARKS.md, 'Loads that switch'")
def test_burst_fire_energy_within_1_percent_over_60_s():
    worst = max(_sweep(), key=lambda r: abs(r["error"]))
    assert abs(worst["error"]) <= 0.01, worst

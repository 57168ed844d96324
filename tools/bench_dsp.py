# bench_dsp — the MicroPython side of `python -m tools.bench`: runs under the unix port, not CPython.
#
#   micropython tools/bench_dsp.py speed PAIRS REPEATS
#       times the viper kernels against their plain-Python twins on the same burst, in this one
#       process, alternating them; prints one JSON line with every sample and a check that the
#       results agree.
#   micropython tools/bench_dsp.py count KERNEL PAIRS MAX_PAIRS
#       runs one kernel (pair_sums or cross_sum) once over PAIRS pairs of a burst of MAX_PAIRS
#       pairs, for instruction counting under callgrind. Everything else the process does is the
#       same whatever PAIRS is, so two runs with different PAIRS differ only by kernel work.

import json
import math
import sys
import time
from array import array

from firmware import dsp

BIAS_V = 2048
BIAS_I = 2048
CYCLE_PAIRS = 571  # one 50 Hz cycle at 28.5 kS/s


def burst(pairs):
    """A mains-like burst: a voltage sine and a lagging current with harmonics, as 12-bit codes."""
    one = array("H", bytes(4 * CYCLE_PAIRS))
    for k in range(CYCLE_PAIRS):
        ph = 2 * math.pi * k / CYCLE_PAIRS
        one[2 * k] = int(BIAS_V + 1700 * math.sin(ph) + 0.5)
        one[2 * k + 1] = int(BIAS_I + 900 * math.sin(ph - 0.6) + 250 * math.sin(3 * ph) + 0.5) & 4095
    buf = array("H", bytes(4 * pairs))
    k = 0
    while k + CYCLE_PAIRS <= pairs:
        buf[2 * k : 2 * (k + CYCLE_PAIRS)] = one
        k += CYCLE_PAIRS
    buf[2 * k : 2 * pairs] = one[: 2 * (pairs - k)]
    return buf


def _us_per_call(fn, args, calls):
    buf, a1, a2, a3, a4, a5 = args
    t0 = time.ticks_us()
    for _ in range(calls):
        fn(buf, a1, a2, a3, a4, a5)
    return time.ticks_diff(time.ticks_us(), t0) / calls


def _us_per_call_cross(fn, args, calls):
    buf, a1, a2, a3, a4, a5, a6, a7 = args
    t0 = time.ticks_us()
    for _ in range(calls):
        fn(buf, a1, a2, a3, a4, a5, a6, a7)
    return time.ticks_diff(time.ticks_us(), t0) / calls


def speed(pairs, repeats):
    block = dsp.block_pairs(BIAS_V, BIAS_I)
    buf = burst(pairs + 200)
    blocks = dsp.blocks_for(pairs, block)
    out_v = array("i", bytes(4 * dsp.SUMS * blocks))
    out_t = array("i", bytes(4 * dsp.SUMS * blocks))
    x_v = array("i", bytes(4 * blocks))
    x_t = array("i", bytes(4 * blocks))
    shift = CYCLE_PAIRS // 4  # a quarter cycle: the quadrature product
    args_v = (buf, pairs, BIAS_V, BIAS_I, block, out_v)
    args_t = (buf, pairs, BIAS_V, BIAS_I, block, out_t)
    xargs_v = (buf, shift, 0, pairs - shift, BIAS_V, BIAS_I, block, x_v)
    xargs_t = (buf, shift, 0, pairs - shift, BIAS_V, BIAS_I, block, x_t)
    # Enough viper calls per sample that one sample lasts about as long as one twin call would
    # on its own scale: a few milliseconds, far above the microsecond clock.
    calls = 1
    while _us_per_call(dsp.pair_sums, args_v, calls) * calls < 2000 and calls < 1 << 16:
        calls *= 2
    res = {"pairs": pairs, "repeats": repeats, "viper_calls_per_sample": calls, "block": block,
           "viper_us": [], "twin_us": [], "cross_viper_us": [], "cross_twin_us": []}
    for _ in range(repeats):  # alternate, so a busy machine slows both sides of each round alike
        res["viper_us"].append(_us_per_call(dsp.pair_sums, args_v, calls))
        res["twin_us"].append(_us_per_call(dsp.pair_sums_py, args_t, 1))
        res["cross_viper_us"].append(_us_per_call_cross(dsp.cross_sum, xargs_v, calls))
        res["cross_twin_us"].append(_us_per_call_cross(dsp.cross_sum_py, xargs_t, 1))
    res["results_agree"] = list(out_v) == list(out_t) and list(x_v) == list(x_t)
    res["micropython"] = sys.version
    res["kernel_is_viper"] = dsp.pair_sums is not dsp.pair_sums_py
    print(json.dumps(res))


def count(kernel, pairs, max_pairs):
    block = dsp.block_pairs(BIAS_V, BIAS_I)
    buf = burst(max_pairs + 200)
    out = array("i", bytes(4 * dsp.SUMS * (dsp.blocks_for(max_pairs, block) + 1)))
    if kernel == "pair_sums":
        dsp.pair_sums(buf, pairs, BIAS_V, BIAS_I, block, out)
    else:
        dsp.cross_sum(buf, 100, 0, pairs, BIAS_V, BIAS_I, block, out)


def main(argv):
    if len(argv) == 3 and argv[0] == "speed":
        speed(int(argv[1]), int(argv[2]))
    elif len(argv) == 4 and argv[0] == "count":
        count(argv[1], int(argv[2]), int(argv[3]))
    else:
        print("usage: bench_dsp.py speed PAIRS REPEATS | count pair_sums|cross_sum PAIRS MAX_PAIRS")
        sys.exit(2)


main(sys.argv[1:])

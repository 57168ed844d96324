# The DSP kernels: viper on MicroPython, the plain-Python twin everywhere, identical sums, no overflow.
import random
from array import array

import micropython

from firmware import dsp
from support import MICROPYTHON, skip


def _buf(pairs, gen):
    return array("H", [gen() for _ in range(2 * pairs)])


def _definition(buf, n, bv, bi):
    """Σdv, Σdi, Σdv², Σdi², Σdv·di straight from the definition, no blocks."""
    s = [0, 0, 0, 0, 0]
    for k in range(n):
        v = buf[2 * k] - bv
        i = buf[2 * k + 1] - bi
        s[0] += v
        s[1] += i
        s[2] += v * v
        s[3] += i * i
        s[4] += v * i
    return s


def _totals(out, blocks):
    return [sum(out[5 * b + j] for b in range(blocks)) for j in range(5)]


def _run(kernel, buf, n, bv, bi, block):
    out = array("i", [0] * (5 * dsp.blocks_for(n, block) + 5))
    blocks = kernel(buf, n, bv, bi, block, out)
    return blocks, out


def test_block_bound_holds_for_every_bias():
    # The proof in dsp.py, checked: a block of block_pairs() worst-case products fits int32,
    # and one more pair would not (so the bound is tight, not just safe).
    assert dsp.block_pairs(2048, 2048) == 511
    for bias in range(0, 4096, 7):
        d = max(bias, 4095 - bias)
        n = dsp.block_pairs(bias, bias)
        assert n * d * d <= 0x7FFFFFFF
        assert (n + 1) * d * d > 0x7FFFFFFF


def test_full_scale_input_is_exact():
    # Worst case for each sum: every code at the rail furthest from the bias.
    for bias, code_v, code_i in ((2048, 0, 0), (2048, 0, 4095), (1900, 4095, 4095), (2300, 0, 4095)):
        block = dsp.block_pairs(bias, bias)
        n = 3 * block + 17
        buf = array("H", [code_v, code_i] * n)
        blocks, out = _run(dsp.pair_sums, buf, n, bias, bias, block)
        assert blocks == 4
        for b in range(blocks):
            for j in range(5):
                assert -0x80000000 <= out[5 * b + j] <= 0x7FFFFFFF
        assert _totals(out, blocks) == _definition(buf, n, bias, bias)


def test_kernel_matches_twin_on_random_bursts():
    random.seed(7)
    for n in (0, 1, 2, 510, 511, 512, 1023, 1500):
        bv = random.randint(1800, 2300)
        bi = random.randint(1800, 2300)
        block = dsp.block_pairs(bv, bi)
        buf = _buf(n, lambda: random.getrandbits(12))
        b1, o1 = _run(dsp.pair_sums, buf, n, bv, bi, block)
        b2, o2 = _run(dsp.pair_sums_py, buf, n, bv, bi, block)
        assert b1 == b2 == dsp.blocks_for(n, block)
        assert list(o1) == list(o2)
        assert _totals(o2, b2) == _definition(buf, n, bv, bi)


def test_cross_sum_matches_twin_and_definition():
    random.seed(11)
    n = 900
    buf = _buf(n + 300, lambda: random.getrandbits(12))
    block = dsp.block_pairs(2000, 2100)
    for v0, i0 in ((0, 0), (0, 75), (300, 0), (17, 299)):
        o1 = array("i", [0] * 4)
        o2 = array("i", [0] * 4)
        b1 = dsp.cross_sum(buf, v0, i0, n, 2000, 2100, block, o1)
        b2 = dsp.cross_sum_py(buf, v0, i0, n, 2000, 2100, block, o2)
        assert b1 == b2 == 2
        assert list(o1) == list(o2)
        want = sum((buf[2 * (v0 + k)] - 2000) * (buf[2 * (i0 + k) + 1] - 2100) for k in range(n))
        assert o2[0] + o2[1] == want


def test_kernels_allocate_nothing():
    if not MICROPYTHON:
        skip("heap_lock only means something on MicroPython")
    n = 1200
    buf = array("H", [2048 + (k % 97) for k in range(2 * n + 200)])
    out = array("i", [0] * 20)
    block = dsp.block_pairs(2048, 2048)
    micropython.heap_lock()
    try:
        dsp.pair_sums(buf, n, 2048, 2048, block, out)
        dsp.cross_sum(buf, 0, 100, n, 2048, 2048, block, out)
    finally:
        micropython.heap_unlock()

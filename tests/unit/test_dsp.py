# The DSP kernels: viper on MicroPython, the plain-Python twin everywhere, identical sums, no overflow.
# Under CPython dsp.pair_sums IS the twin; the viper kernels are compared under tests/mprun.py.
import random
from array import array

import micropython

from firmware import dsp
from support import MICROPYTHON, raises, skip


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


def test_kernel_matches_twin_on_every_block_shape():
    # Blocks that are, and are not, whole multiples of the kernel's 16-pair step, bursts that end
    # inside a step, and biases from rail to rail.
    random.seed(5)
    buf = _buf(260, lambda: random.getrandbits(12))
    for block in (1, 2, 15, 16, 17, 31, 32, 33, 48, 100):
        for n in (0, 1, 15, 16, 17, 64, 95, 250):
            bv = random.randint(0, 4095)
            bi = random.randint(0, 4095)
            b1, o1 = _run(dsp.pair_sums, buf, n, bv, bi, block)
            b2, o2 = _run(dsp.pair_sums_py, buf, n, bv, bi, block)
            assert b1 == b2 == dsp.blocks_for(n, block), (n, block)
            assert list(o1) == list(o2), (n, block, bv, bi)


def test_packed_pair_words_cannot_carry():
    # The kernel adds CHUNK_PAIRS whole 32-bit pair words (v + 65536*i) at once and splits the sum
    # with a shift: that is exact only while neither half can overflow into the next.
    assert dsp.CHUNK_PAIRS * dsp.CODE_MAX < 1 << 16
    assert dsp.CHUNK_PAIRS * (dsp.CODE_MAX + (dsp.CODE_MAX << 16)) < 1 << 32
    # ...and the worst case, every code at 4095, through the kernel over several whole steps.
    n = 5 * dsp.CHUNK_PAIRS
    buf = array("H", [4095] * (2 * n))
    blocks, out = _run(dsp.pair_sums, buf, n, 0, 0, n)
    assert list(out[:5]) == [4095 * n, 4095 * n, 4095 * 4095 * n, 4095 * 4095 * n, 4095 * 4095 * n]


def _wrap32(x):
    """What a 32-bit ESP32 viper int holds for the true value x."""
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def test_bias_removal_survives_32_bit_wrapping():
    # The viper kernel sums raw codes and removes the bias per block. On the ESP32 the raw Σv² of
    # a full-scale block leaves int32 and wraps; the host never wraps, so this replays the
    # kernel's bias removal in 32-bit arithmetic on wrapped raw sums and checks it still lands on
    # the exact block sums.
    for bias_v, bias_i, code_v, code_i in ((2048, 2048, 4095, 0), (1900, 2300, 4095, 4095), (1000, 3000, 4095, 0)):
        m = dsp.block_pairs(bias_v, bias_i)
        sv, si = _wrap32(code_v * m), _wrap32(code_i * m)
        svv, sii, svi = _wrap32(code_v * code_v * m), _wrap32(code_i * code_i * m), _wrap32(code_v * code_i * m)
        assert code_v * code_v * m > 0x7FFFFFFF  # the raw sum really wraps
        got = [
            _wrap32(sv - m * bias_v),
            _wrap32(si - m * bias_i),
            _wrap32(svv - _wrap32(_wrap32(bias_v * sv) << 1) + _wrap32(_wrap32(m * bias_v) * bias_v)),
            _wrap32(sii - _wrap32(_wrap32(bias_i * si) << 1) + _wrap32(_wrap32(m * bias_i) * bias_i)),
            _wrap32(svi - _wrap32(bias_i * sv) - _wrap32(bias_v * si) + _wrap32(_wrap32(m * bias_v) * bias_i)),
        ]
        buf = array("H", [code_v, code_i] * m)
        assert got == _definition(buf, m, bias_v, bias_i)
        blocks, out = _run(dsp.pair_sums, buf, m, bias_v, bias_i, m)
        assert blocks == 1 and list(out[:5]) == got


def test_misaligned_buffer_is_refused():
    # A 32-bit load from an address that is not a multiple of 4 crashes the ESP32; the kernel
    # refuses such a buffer with a message instead (the twin has no addresses to check).
    if not MICROPYTHON:
        skip("only the viper kernel reads whole pairs by address")
    buf = array("H", [2048] * 40)
    out = array("i", [0] * 10)
    with raises(ValueError, match="4-byte aligned"):
        dsp.pair_sums(memoryview(buf)[1:], 10, 2048, 2048, 511, out)


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


def test_cross_sum_matches_twin_on_every_block_shape():
    random.seed(13)
    buf = _buf(300, lambda: random.getrandbits(12))
    for block in (1, 7, 8, 9, 24, 100):
        for n, v0, i0 in ((0, 0, 0), (1, 3, 0), (8, 0, 9), (23, 40, 1), (200, 17, 90)):
            bv = random.randint(0, 4095)
            bi = random.randint(0, 4095)
            o1 = array("i", [0] * (dsp.blocks_for(n, block) + 1))
            o2 = array("i", [0] * (dsp.blocks_for(n, block) + 1))
            b1 = dsp.cross_sum(buf, v0, i0, n, bv, bi, block, o1)
            b2 = dsp.cross_sum_py(buf, v0, i0, n, bv, bi, block, o2)
            assert b1 == b2 == dsp.blocks_for(n, block), (n, block)
            assert list(o1) == list(o2), (n, v0, i0, block)


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

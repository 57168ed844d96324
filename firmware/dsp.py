# dsp — one-pass sums over interleaved V/I sample pairs: the numbers behind Vrms, Irms and power.
#
# A burst buffer is an array('H') of 12-bit ADC codes, interleaved [v0, i0, v1, i1, ...]. For each
# block of at most block_pairs(...) pairs, pair_sums() stores five int32 sums into `out`
# (array('i')), at out[5*b : 5*b + 5]:
#     Σdv, Σdi, Σdv², Σdi², Σdv·di      with dv = v - bias_v, di = i - bias_i
# and returns the number of blocks. The caller (metering) adds blocks up in Python ints and removes
# the remaining DC offset exactly: Σ(dv - mean)² = Σdv² - (Σdv)²/n.
#
# cross_sum() gives Σ dv[v0 + k] · di[i0 + k] for k < n, per block: the product of a voltage and a
# current that are shifted against each other, used for quadrature (reactive power) and for the
# voltage of a phase derived from L1 in single-phase wiring.
#
# Overflow: viper ints are 32-bit on the ESP32 and wrap silently. With codes in 0..4095 and the
# bias in 0..4095, |dv|, |di| <= D = max(bias, 4095 - bias), so each product is at most D*D in
# magnitude and a block of N pairs stays within int32 while N * D*D <= 2**31 - 1. block_pairs()
# computes that N (511 for a mid-scale bias of 2048); Σdv and Σdi are far smaller. The sampler
# stores codes shifted down to 12 bits, which is what makes the bound hold.
#
# How the viper kernels stay exact although they wrap: they sum the raw codes (Σv, Σi, Σv², Σi²,
# Σv·i) and remove the bias once per block, e.g. Σdv² = Σv² - 2·bias_v·Σv + N·bias_v². Raw Σv²
# does exceed 2**32 within a block, but the kernels only add, subtract and multiply those values,
# and these are exact modulo 2**32; the result they store is the true block sum modulo 2**32,
# and that true sum lies inside int32 (the bound above), so the stored int32 is the true sum.
# (On the 64-bit unix port nothing wraps and the low 32 bits are stored: the same numbers.) The
# only other operation on sample data is a logical shift of a packed chunk sum, which never
# wraps: see CHUNK_PAIRS. tests/unit/test_dsp.py checks both bounds and the wrapping algebra.
#
# On MicroPython the viper kernels run; elsewhere the plain-Python twins, which give identical
# results and serve as the oracle in tests.

import sys

import micropython
from micropython import const

SUMS = const(5)  # sums per block in pair_sums()
INT32_MAX = const(0x7FFFFFFF)
CODE_MAX = const(4095)  # 12-bit ADC
# Pairs per unrolled step of the pair_sums kernel. One 32-bit load fetches a whole pair,
# v + 65536*i (little-endian), and the step adds 16 of them at once: each half then holds at most
# 16 * 4095 = 65520 < 2**16, so the V and I sums cannot run into each other and the word
# itself stays below 2**32.
CHUNK_PAIRS = const(16)


def block_pairs(bias_v, bias_i):
    """The largest block (in pairs) whose sums cannot overflow int32 for any 12-bit input."""
    d = max(bias_v, CODE_MAX - bias_v, bias_i, CODE_MAX - bias_i)
    return INT32_MAX // (d * d)


def blocks_for(n_pairs, block):
    """How many result blocks pair_sums()/cross_sum() write for n_pairs."""
    return (n_pairs + block - 1) // block


# --- plain-Python twins: the reference definition -------------------------------------------


def pair_sums_py(buf, n, bias_v, bias_i, block, out):
    b = 0
    k = 0
    while k < n:
        stop = min(k + block, n)
        sv = si = svv = sii = svi = 0
        while k < stop:
            v = buf[2 * k] - bias_v
            i = buf[2 * k + 1] - bias_i
            sv += v
            si += i
            svv += v * v
            sii += i * i
            svi += v * i
            k += 1
        out[b] = sv
        out[b + 1] = si
        out[b + 2] = svv
        out[b + 3] = sii
        out[b + 4] = svi
        b += SUMS
    return b // SUMS


def cross_sum_py(buf, v0, i0, n, bias_v, bias_i, block, out):
    b = 0
    k = 0
    while k < n:
        stop = min(k + block, n)
        s = 0
        while k < stop:
            s += (buf[2 * (v0 + k)] - bias_v) * (buf[2 * (i0 + k) + 1] - bias_i)
            k += 1
        out[b] = s
        b += 1
    return b


# --- viper kernels for the board ------------------------------------------------------------
#
# The native emitter keeps only the first locals of a function in CPU registers (two in a .mpy
# built for the ESP32, three on the x86-64 unix port); every other local is a stack slot that each
# use loads and each assignment stores. Arguments are the first locals, so each kernel takes its
# hottest variables as leading arguments that the caller passes as 0, and a wrapper with the
# public signature calls it. Layout of the pair_sums kernel, per block:
#   - CHUNK_PAIRS (16) pairs per step, every load at a constant offset from one address `a`;
#   - the step runs in four sections, each folding its 16 terms into the register `t` before a
#     single add to its block sum: the packed pair words (Σv and Σi at once), Σv², Σi², Σv·i;
#   - the last < 16 pairs of a block take a plain one-pair loop.
# BENCHMARKS.md lists the layouts measured (x86-64 instructions per pair) and why this one won.


@micropython.viper
def _pair_sums_kernel(t: int, v: int, a: int, buf, n: int, bias_v: int, bias_i: int, block: int, out) -> int:
    a = int(ptr16(buf))
    if a & 3:
        raise ValueError("buf must start at a V/I pair of an array('H') (4-byte aligned)")
    o = ptr32(out)
    last = a + (n << 2)
    b = 0
    while a < last:
        stop = a + (block << 2)
        if stop > last:
            stop = last
        m = (stop - a) >> 2  # pairs in this block
        sx = 0  # whole steps: Σ pair words = Σv + 65536·Σi (mod 2**32)
        sh = 0  # whole steps: Σi
        sv = 0  # Σv, Σi of the pairs after the last whole step
        si = 0
        svv = 0
        sii = 0
        svi = 0
        steps_end = a + ((m >> 4) << 6)
        while a < steps_end:
            # Σ of the 16 pair words: Σv in the low half, Σi in the high half, apart (CHUNK_PAIRS)
            t = (
                ptr32(a)[0] + ptr32(a)[1] + ptr32(a)[2] + ptr32(a)[3] +
                ptr32(a)[4] + ptr32(a)[5] + ptr32(a)[6] + ptr32(a)[7] +
                ptr32(a)[8] + ptr32(a)[9] + ptr32(a)[10] + ptr32(a)[11] +
                ptr32(a)[12] + ptr32(a)[13] + ptr32(a)[14] + ptr32(a)[15]
            )
            sx += t
            sh += int(uint(t) >> 16)  # uint: on the ESP32 the sum may have bit 31 set
            # Σv²
            v = ptr16(a)[0]
            t = v * v
            v = ptr16(a)[2]
            t = v * v + t
            v = ptr16(a)[4]
            t = v * v + t
            v = ptr16(a)[6]
            t = v * v + t
            v = ptr16(a)[8]
            t = v * v + t
            v = ptr16(a)[10]
            t = v * v + t
            v = ptr16(a)[12]
            t = v * v + t
            v = ptr16(a)[14]
            t = v * v + t
            v = ptr16(a)[16]
            t = v * v + t
            v = ptr16(a)[18]
            t = v * v + t
            v = ptr16(a)[20]
            t = v * v + t
            v = ptr16(a)[22]
            t = v * v + t
            v = ptr16(a)[24]
            t = v * v + t
            v = ptr16(a)[26]
            t = v * v + t
            v = ptr16(a)[28]
            t = v * v + t
            v = ptr16(a)[30]
            t = v * v + t
            svv += t
            # Σi²
            v = ptr16(a)[1]
            t = v * v
            v = ptr16(a)[3]
            t = v * v + t
            v = ptr16(a)[5]
            t = v * v + t
            v = ptr16(a)[7]
            t = v * v + t
            v = ptr16(a)[9]
            t = v * v + t
            v = ptr16(a)[11]
            t = v * v + t
            v = ptr16(a)[13]
            t = v * v + t
            v = ptr16(a)[15]
            t = v * v + t
            v = ptr16(a)[17]
            t = v * v + t
            v = ptr16(a)[19]
            t = v * v + t
            v = ptr16(a)[21]
            t = v * v + t
            v = ptr16(a)[23]
            t = v * v + t
            v = ptr16(a)[25]
            t = v * v + t
            v = ptr16(a)[27]
            t = v * v + t
            v = ptr16(a)[29]
            t = v * v + t
            v = ptr16(a)[31]
            t = v * v + t
            sii += t
            # Σv·i
            v = ptr16(a)[0]
            t = ptr16(a)[1] * v
            v = ptr16(a)[2]
            t = ptr16(a)[3] * v + t
            v = ptr16(a)[4]
            t = ptr16(a)[5] * v + t
            v = ptr16(a)[6]
            t = ptr16(a)[7] * v + t
            v = ptr16(a)[8]
            t = ptr16(a)[9] * v + t
            v = ptr16(a)[10]
            t = ptr16(a)[11] * v + t
            v = ptr16(a)[12]
            t = ptr16(a)[13] * v + t
            v = ptr16(a)[14]
            t = ptr16(a)[15] * v + t
            v = ptr16(a)[16]
            t = ptr16(a)[17] * v + t
            v = ptr16(a)[18]
            t = ptr16(a)[19] * v + t
            v = ptr16(a)[20]
            t = ptr16(a)[21] * v + t
            v = ptr16(a)[22]
            t = ptr16(a)[23] * v + t
            v = ptr16(a)[24]
            t = ptr16(a)[25] * v + t
            v = ptr16(a)[26]
            t = ptr16(a)[27] * v + t
            v = ptr16(a)[28]
            t = ptr16(a)[29] * v + t
            v = ptr16(a)[30]
            t = ptr16(a)[31] * v + t
            svi += t
            a += 64
        while a < stop:
            v = ptr16(a)[0]
            t = ptr16(a)[1]
            sv += v
            si += t
            svv += v * v
            sii += t * t
            svi += v * t
            a += 4
        sv += sx - (sh << 16)
        si += sh
        # remove the bias (exact modulo 2**32, see the header)
        o[b] = sv - m * bias_v
        o[b + 1] = si - m * bias_i
        o[b + 2] = svv - ((bias_v * sv) << 1) + m * bias_v * bias_v
        o[b + 3] = sii - ((bias_i * si) << 1) + m * bias_i * bias_i
        o[b + 4] = svi - bias_i * sv - bias_v * si + m * bias_v * bias_i
        b += 5
    return b // 5


@micropython.viper
def _pair_sums_viper(buf, n: int, bias_v: int, bias_i: int, block: int, out) -> int:
    return int(_pair_sums_kernel(0, 0, 0, buf, n, bias_v, bias_i, block, out))


@micropython.viper
def _cross_sum_kernel(
    t: int, av: int, ai: int, buf, v0: int, i0: int, n: int, bias_v: int, bias_i: int, block: int, out
) -> int:
    # Same scheme as _pair_sums_kernel: raw Σv, Σi, Σv·i, 8 pairs per step, bias removed per block.
    av = int(ptr16(buf)) + (v0 << 2)  # address of the first voltage sample
    ai = int(ptr16(buf)) + (i0 << 2) + 2  # address of the first current sample
    o = ptr32(out)
    last = av + (n << 2)
    b = 0
    while av < last:
        stop = av + (block << 2)
        if stop > last:
            stop = last
        m = (stop - av) >> 2
        sv = 0
        si = 0
        svi = 0
        steps_end = av + ((m >> 3) << 5)
        while av < steps_end:
            sv += (
                ptr16(av)[0] + ptr16(av)[2] + ptr16(av)[4] + ptr16(av)[6] +
                ptr16(av)[8] + ptr16(av)[10] + ptr16(av)[12] + ptr16(av)[14]
            )
            si += (
                ptr16(ai)[0] + ptr16(ai)[2] + ptr16(ai)[4] + ptr16(ai)[6] +
                ptr16(ai)[8] + ptr16(ai)[10] + ptr16(ai)[12] + ptr16(ai)[14]
            )
            t = ptr16(ai)[0] * ptr16(av)[0]
            t = ptr16(ai)[2] * ptr16(av)[2] + t
            t = ptr16(ai)[4] * ptr16(av)[4] + t
            t = ptr16(ai)[6] * ptr16(av)[6] + t
            t = ptr16(ai)[8] * ptr16(av)[8] + t
            t = ptr16(ai)[10] * ptr16(av)[10] + t
            t = ptr16(ai)[12] * ptr16(av)[12] + t
            t = ptr16(ai)[14] * ptr16(av)[14] + t
            svi += t
            av += 32
            ai += 32
        while av < stop:
            t = ptr16(av)[0]
            sv += t
            si += ptr16(ai)[0]
            svi += ptr16(ai)[0] * t
            av += 4
            ai += 4
        o[b] = svi - bias_i * sv - bias_v * si + m * bias_v * bias_i
        b += 1
    return b


@micropython.viper
def _cross_sum_viper(buf, v0: int, i0: int, n: int, bias_v: int, bias_i: int, block: int, out) -> int:
    return int(_cross_sum_kernel(0, 0, 0, buf, v0, i0, n, bias_v, bias_i, block, out))


if sys.implementation.name == "micropython":
    pair_sums = _pair_sums_viper
    cross_sum = _cross_sum_viper
else:
    pair_sums = pair_sums_py
    cross_sum = cross_sum_py

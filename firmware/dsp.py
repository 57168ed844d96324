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
# On MicroPython the viper kernels run; elsewhere the plain-Python twins, which give identical
# results and serve as the oracle in tests.

import sys

import micropython
from micropython import const

SUMS = const(5)  # sums per block in pair_sums()
INT32_MAX = const(0x7FFFFFFF)
CODE_MAX = const(4095)  # 12-bit ADC


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


@micropython.viper
def _pair_sums_viper(buf, n: int, bias_v: int, bias_i: int, block: int, out) -> int:
    p = ptr16(buf)
    o = ptr32(out)
    end = n << 1
    k = 0
    b = 0
    while k < end:
        stop = k + (block << 1)
        if stop > end:
            stop = end
        sv = 0
        si = 0
        svv = 0
        sii = 0
        svi = 0
        while k < stop:
            v = p[k] - bias_v
            i = p[k + 1] - bias_i
            sv += v
            si += i
            svv += v * v
            sii += i * i
            svi += v * i
            k += 2
        o[b] = sv
        o[b + 1] = si
        o[b + 2] = svv
        o[b + 3] = sii
        o[b + 4] = svi
        b += 5
    return b // 5


@micropython.viper
def _cross_sum_viper(buf, v0: int, i0: int, n: int, bias_v: int, bias_i: int, block: int, out) -> int:
    p = ptr16(buf)
    o = ptr32(out)
    dv = v0 << 1  # index of the first voltage sample
    di = (i0 << 1) + 1  # index of the first current sample
    k = 0
    b = 0
    while k < n:
        stop = k + block
        if stop > n:
            stop = n
        s = 0
        while k < stop:
            s += (p[dv] - bias_v) * (p[di] - bias_i)
            dv += 2
            di += 2
            k += 1
        o[b] = s
        b += 1
    return b


if sys.implementation.name == "micropython":
    pair_sums = _pair_sums_viper
    cross_sum = _cross_sum_viper
else:
    pair_sums = pair_sums_py
    cross_sum = cross_sum_py

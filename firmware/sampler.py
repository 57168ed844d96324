# sampler — one burst of V/I sample pairs covering whole mains cycles, from a voltage zero crossing.
#
# ESP32 timer callbacks are soft (scheduled, ~10 ms jitter under WiFi), so a timer only says "now";
# the samples themselves come from a tight viper loop that reads the voltage ADC and then the current
# ADC, pair after pair. A burst waits for a rising zero crossing of the voltage, samples until the
# `cycles`-th rising crossing after it (so the window spans whole cycles), then takes `extra` more
# pairs so metering can shift current against voltage (quadrature, derived phases) without wrapping.
#
# Everything here is allocation-free once built: buffers are made in __init__, the ADC read methods
# are bound once, and the loop only touches viper ints and arrays (a test holds micropython.heap_lock()
# around a burst on the unix port). One caveat the test cannot see: MicroPython puts the frame of a
# Python function with many locals (acquire(), Meter._reduce()) on the heap and frees it on return,
# falling back to the C stack when the heap is locked. That block is taken when the call starts,
# before the viper loop, so a garbage collection it might trigger never lands inside a burst.

import time
from array import array

import micropython
from micropython import const

# Indices into the parameter/result array shared with the viper loop.
P_CAPACITY = const(0)  # pairs the buffer holds
P_CYCLES = const(1)  # whole cycles wanted
P_BIAS = const(2)  # voltage code at zero (the channel's bias)
P_HYST = const(3)  # hysteresis below the bias that arms the crossing detector
P_EXTRA = const(4)  # pairs to take after the last crossing
P_WAIT_READS = const(5)  # give up waiting for the first crossing after this many reads
R_STATUS = const(6)  # 0 ok, 1 no crossing (no voltage), 2 buffer full before the last crossing
R_CYCLE_PAIRS = const(7)  # pairs from the first crossing to the last (the whole-cycle window)
R_PAIRS = const(8)  # pairs stored in all
R_WAIT_READS = const(9)  # reads spent waiting for the first crossing
R_V_BEFORE = const(10)  # the voltage code just before the first crossing
R_T0 = const(11)  # ticks_us right after the first crossing's voltage read
R_T1 = const(12)  # ticks_us right after the last crossing's voltage read
N_PARAMS = const(13)

OK = const(0)
NO_CROSSING = const(1)
BUFFER_FULL = const(2)


@micropython.viper
def _burst(read_v, read_i, buf, prm, ticks_us) -> int:
    p = ptr32(prm)
    b = ptr16(buf)
    bias = p[P_BIAS]
    low = bias - p[P_HYST]
    # A rising crossing is a read at or above the bias after the voltage was clearly below it (two
    # reads below the hysteresis arm the detector), confirmed by the next read staying above the
    # hysteresis: a single read far off (a spike, see _despike) neither arms it nor is a crossing.
    armed = 0
    waited = 0
    limit = p[P_WAIT_READS]
    prev = 0
    before = 0
    v = 0
    t0 = 0
    while True:
        v = int(read_v()) >> 4
        waited += 1
        if v < low and prev < low:
            armed = 1
        elif armed and v >= bias:
            # The window is timed from one crossing's read to the other's: time between two reads
            # of the same kind, so the cost of a read and of the loop cancels out.
            t0 = int(ticks_us())
            b[0] = v  # the crossing is pair 0; its current follows at once
            b[1] = int(read_i()) >> 4
            before = prev
            prev = v
            v = int(read_v()) >> 4
            waited += 1
            if v >= low:
                break
        if waited >= limit:
            p[R_STATUS] = NO_CROSSING
            p[R_WAIT_READS] = waited
            p[R_PAIRS] = 0
            return NO_CROSSING
        prev = v
    p[R_T0] = t0
    p[R_V_BEFORE] = before
    p[R_WAIT_READS] = waited
    cap2 = p[P_CAPACITY] << 1
    b[2] = v
    b[3] = int(read_i()) >> 4
    k = 4
    crossings = 0
    want = p[P_CYCLES]
    armed = 0
    cand = 0  # where a crossing waits for its confirming read (0: none)
    last = 0
    t1 = 0
    while k < cap2:
        v = int(read_v()) >> 4
        b[k] = v
        if cand:
            if v >= low:
                crossings += 1
                last = cand
            else:
                armed = 1  # a spike up: the voltage is still below
            cand = 0
            if crossings == want:
                b[k + 1] = int(read_i()) >> 4
                k += 2
                break
        elif v < low and b[k - 2] < low:
            armed = 1
        elif armed and v >= bias:
            armed = 0
            cand = k
            t1 = int(ticks_us())  # as for t0: right after the crossing's voltage read
        b[k + 1] = int(read_i()) >> 4
        k += 2
    if crossings < want:
        p[R_STATUS] = BUFFER_FULL
        p[R_PAIRS] = k >> 1
        return BUFFER_FULL
    p[R_T1] = t1
    p[R_CYCLE_PAIRS] = last >> 1
    end = last + 2 + (p[P_EXTRA] << 1)
    if end > cap2:
        end = cap2
    while k < end:
        b[k] = int(read_v()) >> 4
        b[k + 1] = int(read_i()) >> 4
        k += 2
    p[R_PAIRS] = k >> 1
    p[R_STATUS] = OK
    return OK


@micropython.viper
def _despike(buf, n: int, limit: int, noise) -> int:
    """Replace each single-read spike of either channel by its neighbours' mean; returns how many.
    noise[0], noise[1]: Σ d² of the voltage's and the current's second differences d, afterwards,
    at reads 1 to n - 3 (n - 3 of each).

    A spike (a WiFi transmit burst on the ESP32's ADC) is one read that stands more than `limit`
    codes above both its neighbours, or below both. The anti-aliasing filter keeps the signal itself
    from doing that between two reads of a channel, and a step in a real waveform is near one of
    its neighbours, so nothing but spikes is changed and RMS and power are not biased.
    The second difference of white noise of σ codes has a variance of 6σ²; a mains waveform's is
    far below one code at ~300 pairs a cycle. Each d² is capped at 4096 (|d| = 64: no noise)."""
    b = ptr16(buf)
    o = ptr32(noise)
    found = 0
    sv = 0
    si = 0
    k = 2
    end = (n - 1) << 1
    while k < end:
        for j in range(2):
            x = b[k + j]
            a = b[k + j - 2]
            c = b[k + j + 2]
            if (x - a > limit and x - c > limit) or (a - x > limit and c - x > limit):
                x = (a + c) >> 1
                b[k + j] = x
                found += 1
            if k < 4:
                continue
            d = b[k + j - 4] + x - a - a  # at the read before: both its neighbours are final now
            d = d * d
            if d > 4096:
                d = 4096
            if j:
                si += d
            else:
                sv += d
        k += 2
    o[0] = sv
    o[1] = si
    return found


@micropython.viper
def _free_run(read_v, read_i, buf, n: int) -> int:
    """n pairs with no zero-crossing alignment (a phase whose voltage is missing)."""
    b = ptr16(buf)
    k = 0
    end = n << 1
    while k < end:
        b[k] = int(read_v()) >> 4
        b[k + 1] = int(read_i()) >> 4
        k += 2
    return n


class Burst:
    """Where the last burst's samples are and how long they took."""

    def __init__(self):
        self.cycle_pairs = 0  # pairs in the whole-cycle window, starting at buf[0]
        self.pairs = 0  # pairs stored (window + extra)
        self.pair_q10_us = 0  # measured time per V/I pair, in 1/1024 us (an int: no float on this path)
        self.v_before = 0  # voltage code just before the first crossing (for interpolation)
        self.t0_us = 0  # ticks_us right after the first crossing's read (pair 0)
        self.noise = array("i", bytes(8))  # Σ d² of the second differences: voltage, current (_despike)


class Sampler:
    """Takes bursts from (voltage ADC, current ADC) pairs into one preallocated buffer.

    The ADC abstraction is just read_u16(): machine.ADC on the ESP32 (ADC1 pins at ATTN_11DB, see
    board.py), the simulated machine.ADC on the desktop, or a replay of recorded codes in the bench.
    The methods are bound once here, so the loop calls them without allocating.
    """

    def __init__(self, v_adcs, i_adcs, capacity_pairs, hysteresis_codes=24, spike_codes=80):
        self._read_v = tuple(a.read_u16 for a in v_adcs)
        self._read_i = tuple(a.read_u16 for a in i_adcs)
        self.capacity = capacity_pairs
        self.buf = array("H", bytes(4 * capacity_pairs))
        self._prm = array("i", bytes(4 * N_PARAMS))
        self._prm[P_CAPACITY] = capacity_pairs
        self._prm[P_HYST] = hysteresis_codes
        self.spike_codes = spike_codes
        self.spikes = 0  # single-read spikes removed since start
        self._ticks_us = time.ticks_us
        self.burst = Burst()

    def acquire(self, v_ch, i_ch, bias, cycles, extra_pairs, wait_reads):
        """One burst: voltage from ADC v_ch, current from ADC i_ch. Allocation-free. Returns status."""
        prm = self._prm
        prm[P_CYCLES] = cycles
        prm[P_BIAS] = bias
        prm[P_EXTRA] = extra_pairs
        prm[P_WAIT_READS] = wait_reads
        status = _burst(self._read_v[v_ch], self._read_i[i_ch], self.buf, prm, self._ticks_us)
        b = self.burst
        if status == OK:
            b.cycle_pairs = prm[R_CYCLE_PAIRS]
            b.pairs = prm[R_PAIRS]
            b.v_before = prm[R_V_BEFORE]
            b.t0_us = prm[R_T0]
            # Pair time from the window alone: from the first crossing's read to the last one's.
            b.pair_q10_us = time.ticks_diff(prm[R_T1], prm[R_T0]) * 1024 // b.cycle_pairs
            self.spikes += _despike(self.buf, b.pairs, self.spike_codes, b.noise)
        else:
            b.cycle_pairs = 0
            b.pairs = 0
        return status

    def acquire_free(self, v_ch, i_ch, pairs):
        """pairs pairs with no alignment; for a phase with no voltage to align on."""
        pairs = min(pairs, self.capacity)
        t0 = time.ticks_us()
        _free_run(self._read_v[v_ch], self._read_i[i_ch], self.buf, pairs)
        elapsed = time.ticks_diff(time.ticks_us(), t0)
        b = self.burst
        self.spikes += _despike(self.buf, pairs, self.spike_codes, b.noise)
        b.cycle_pairs = pairs
        b.pairs = pairs
        b.pair_q10_us = elapsed * 1024 // pairs
        return pairs


def chip_line(adcs, pairs=256, spread_codes=100, outlier_mv=24, sxx_min=4e7, pairs_max=16384):
    """(mV per code, mV at code 0) of the calibration line the port's read_uv() applies to the ADC
    inputs `adcs` (one ADC unit at one attenuation share it: on the ESP32, ESP-IDF's line from the
    chip's eFuse Vref), or None if it cannot be told here.

    read_uv() converts a reading of its own, so each one is placed between two raw reads and
    compared with their mean; a least-squares line through the pairs of all the inputs is the
    chip's line. Only raw codes from 1 to 2800 count (0 is below the range; from 2880 up ESP-IDF
    uses a table, not the line), and they must spread over spread_codes (mains on a voltage
    input): quiet inputs cannot show a slope. A first round of `pairs` reads gives a rough line; the
    second leaves out any point more than outlier_mv off it (a spike in one of its reads) and reads
    on until the codes' spread (Σ(x - mean)², codes²) pins the slope to ~0.05 % at 4 codes of
    noise, or pairs_max: ~1,000 points at 230 V, 16 times more at 20 V (~1.5 s of reads at 35 µs).
    A raw code's own noise flattens a least-squares slope by noise² / spread² (at 20 V and 4 codes
    of noise, 0.2 %; 1 % at 8 codes): the fit's residuals tell that noise (each is one read_uv()
    and half of two raw reads: 1.5 reads' noise), and the slope is corrected for it.
    Run it at start-up, never while measuring."""
    if not adcs or getattr(adcs[0], "read_uv", None) is None:
        return None
    line = None
    for rnd in range(2):
        n = sx = sy = sxx = sxy = syy = 0.0
        lo, hi = 4095, 0
        x0 = y0 = 0.0  # sums about the first point: the board's floats are single precision
        done = 0
        while True:
            for _ in range(64):
                for adc in adcs:  # in turn: each input's reads spread over whole mains cycles
                    r0 = adc.read_u16() >> 4
                    mv = adc.read_uv() / 1000
                    r1 = adc.read_u16() >> 4
                    if not (0 < r0 <= 2800 and 0 < r1 <= 2800):
                        continue
                    if line and abs(line[0] * (r0 + r1) / 2 + line[1] - mv) > outlier_mv:
                        continue
                    if not n:
                        x0, y0 = (r0 + r1) / 2, mv
                    x = (r0 + r1) / 2 - x0
                    y = mv - y0
                    n += 1
                    sx += x
                    sy += y
                    sxx += x * x
                    sxy += x * y
                    syy += y * y
                    lo = min(lo, r0)
                    hi = max(hi, r0)
            done += 64 * len(adcs)
            if done >= pairs and (rnd == 0 or hi - lo < spread_codes or sxx - sx * sx / n >= sxx_min
                                  or done >= pairs_max):
                break
        if hi - lo < spread_codes:
            return None
        cxx = sxx - sx * sx / n  # sums of squares about the means
        cxy = sxy - sx * sy / n
        slope = cxy / cxx
        if rnd and n > 2:
            # Residual variance (mV²) = slope² · 1.5 σ²; the mean of two raw reads carries σ²/2.
            cyy = syy - sy * sy / n
            noise_x = (cyy - slope * cxy) / (n - 2) / (3 * slope * slope)
            if 0 < n * noise_x < cxx / 2:
                slope *= cxx / (cxx - n * noise_x)
        line = slope, y0 + (sy - slope * sx) / n - slope * x0
    return line

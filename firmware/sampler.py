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
    # Wait for the voltage to rise through its bias after having been clearly below it.
    armed = 0
    waited = 0
    limit = p[P_WAIT_READS]
    prev = 0
    v = 0
    while True:
        v = int(read_v()) >> 4
        waited += 1
        if v < low:
            armed = 1
        elif armed and v >= bias:
            break
        if waited >= limit:
            p[R_STATUS] = NO_CROSSING
            p[R_WAIT_READS] = waited
            p[R_PAIRS] = 0
            return NO_CROSSING
        prev = v
    # The window is timed from one crossing's read to the other's: time between the two reads of
    # the same kind, so the cost of a read and of the loop cancels and nothing else is counted.
    p[R_T0] = int(ticks_us())
    p[R_V_BEFORE] = prev
    p[R_WAIT_READS] = waited
    # The crossing sample is pair 0; its current follows at once.
    cap2 = p[P_CAPACITY] << 1
    b[0] = v
    b[1] = int(read_i()) >> 4
    k = 2
    crossings = 0
    want = p[P_CYCLES]
    armed = 0
    while k < cap2:
        v = int(read_v()) >> 4
        b[k] = v
        if v < low:
            armed = 1
        elif armed and v >= bias:
            armed = 0
            crossings += 1
            if crossings == want:
                p[R_T1] = int(ticks_us())  # as for R_T0: right after the crossing's voltage read
                b[k + 1] = int(read_i()) >> 4
                break
        b[k + 1] = int(read_i()) >> 4
        k += 2
    if crossings < want:
        p[R_STATUS] = BUFFER_FULL
        p[R_PAIRS] = k >> 1
        return BUFFER_FULL
    p[R_CYCLE_PAIRS] = k >> 1
    end = k + 2 + (p[P_EXTRA] << 1)
    if end > cap2:
        end = cap2
    k += 2
    while k < end:
        b[k] = int(read_v()) >> 4
        b[k + 1] = int(read_i()) >> 4
        k += 2
    p[R_PAIRS] = k >> 1
    p[R_STATUS] = OK
    return OK


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


class Sampler:
    """Takes bursts from (voltage ADC, current ADC) pairs into one preallocated buffer.

    The ADC abstraction is just read_u16(): machine.ADC on the ESP32 (ADC1 pins at ATTN_11DB, see
    board.py), the simulated machine.ADC on the desktop, or a replay of recorded codes in the bench.
    The methods are bound once here, so the loop calls them without allocating.
    """

    def __init__(self, v_adcs, i_adcs, capacity_pairs, hysteresis_codes=24):
        self._read_v = tuple(a.read_u16 for a in v_adcs)
        self._read_i = tuple(a.read_u16 for a in i_adcs)
        self.capacity = capacity_pairs
        self.buf = array("H", bytes(4 * capacity_pairs))
        self._prm = array("i", bytes(4 * N_PARAMS))
        self._prm[P_CAPACITY] = capacity_pairs
        self._prm[P_HYST] = hysteresis_codes
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
            # Pair time from the window alone: from the first crossing's read to the last one's.
            b.pair_q10_us = time.ticks_diff(prm[R_T1], prm[R_T0]) * 1024 // b.cycle_pairs
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
        b.cycle_pairs = pairs
        b.pairs = pairs
        b.pair_q10_us = elapsed * 1024 // pairs
        return pairs

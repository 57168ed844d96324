# meter — the measurement chain: timer -> burst -> kernels -> metering -> windows, energy, diagnostics.
#
# A one-shot machine.Timer wakes the meter for each burst, re-armed every time for a pseudo-random
# 20-180 % of burst_period_ms (mean: burst_period_ms); each burst measures the next CT: whole cycles
# of (voltage of the phase it is mapped to, its current). Every window_ms the bursts of the window
# are averaged per phase into readings, energy is integrated and the wiring is judged.
#
# Why random intervals: a burst starts on a zero crossing, so at a fixed period it samples the same
# few cycles of a repeating pattern forever, and a burst-fire (cycle-skipping) load can be seen always
# on or always off (energy errors of -100 %, or several times the truth). Intervals drawn to the
# millisecond put the start of each burst anywhere in the mains cycle, so the cycle a burst starts
# on is a random walk over any pattern's period: in the long run every cycle of the pattern is
# sampled equally often, at any mains frequency (docs/MEASUREMENT.md, "Loads that switch").
# Whole ticks of a faster periodic timer would not do: 20 ms ticks are 1.2 cycles at 60 Hz, and a
# burst could never start on one cycle in six. The spread is wide because a CT's own bursts are three
# intervals apart, 15 cycles on average at 50 Hz: with 60-140 % their start moved by only ±2 cycles
# a round, and patterns of 15 or 30 cycles were covered slowly (twice the error over 10 minutes).
# An interval shorter than a burst just means the next burst follows at once.
#
# A phase whose own voltage is missing (single-phase wiring, or a fault) is measured against the
# reference phase's voltage shifted by 120° or 240°: the kernel multiplies the reference voltage by
# the current a third of a cycle earlier or later (samples beyond the whole-cycle window are there
# for exactly this, so nothing wraps).
#
# _reduce() (acquisition + integer kernels) allocates nothing; the float metering after it does.

import math
import time
from array import array

from firmware import config, diagnostics, dsp, metering, profiles
from firmware.energy import Energy
from firmware.sampler import NO_CROSSING, OK, Sampler, chip_line

MIN_READ_US = 18  # fastest ADC conversion we size buffers for (measured 20-35 us on the ESP32)
MIN_HZ = 45
MAX_PAIRS_PER_CYCLE = 1_000_000 // (2 * MIN_READ_US * MIN_HZ) + 1  # 618
WAIT_READS = 3 * 1_000_000 // (MIN_HZ * MIN_READ_US) // 2  # ~1.5 cycles at the fastest reads
PROBE_EVERY = 8  # bursts between re-checks of a phase whose own voltage is missing
MIN_CYCLE_US = 1_000_000 // 70  # a burst whose cycles are not 40-70 Hz did not see mains
MAX_CYCLE_US = 1_000_000 // 40
MIN_MAINS_VRMS = 10.0  # nor is one below this: 10 LSB of noise on an unwired input is ~4 V RMS
SHORT = 3  # _reduce status: the burst has too few pairs after its window for the shifts
GAP_MIN_PCT = 20  # from one burst to the next: 20-180 % of burst_period_ms, uniform to the ms
Q10 = 1024


class Meter:
    def __init__(self, board, settings=None, energy=None):
        # The "meter" section of the settings, complete (firmware/app.py hands it the validated one);
        # None: the defaults, whose one owner is the schema (firmware/configcheck.py).
        s = dict(settings) if settings is not None else config.section("meter")
        self.settings = s
        # A board with L1's voltage input alone (firmware/boards.py) measures single-phase: L2 and L3
        # are derived from L1, whatever the settings say.
        if getattr(board, "voltage_inputs", 3) < 3:  # (not kept: an attribute more grows every Meter's table)
            s["wiring"] = "single-phase"
        self.ct_range_a = profiles.ct_range_a(s["model"])
        self.cycles = s["burst_cycles"]
        capacity = self.cycles * MAX_PAIRS_PER_CYCLE + MAX_PAIRS_PER_CYCLE // 2 + 8
        self.sampler = Sampler([a[0] for a in board.adc_pairs], [a[1] for a in board.adc_pairs], capacity)
        self._v_adcs = [a[0] for a in board.adc_pairs[:getattr(board, "voltage_inputs", 3)]]
        self._line_wait = 0
        self._use_line(chip_line(self._v_adcs))
        # Result arrays sized for the smallest block any bias can give (one at a rail): the biases
        # follow the chip's line, which may only be known later (see close_window).
        nblocks = dsp.blocks_for(capacity, dsp.block_pairs(0, 0))
        self._sums = array("i", bytes(4 * dsp.SUMS * nblocks))
        self._crossbuf = array("i", bytes(4 * 4 * nblocks))  # 4 shifted products, nblocks each
        mv = memoryview(self._crossbuf)
        self._cross_views = [mv[k * nblocks:(k + 1) * nblocks] for k in range(4)]  # made once
        self._nblocks = nblocks
        self._res = array("i", bytes(4 * 7))  # integer results of _reduce, see there
        self.energy = energy or Energy()
        self._board = board
        self._timer = None
        self._flag = None
        self._pending = False
        self._rng = 0xACE1  # xorshift16 state: never 0
        self._tick_cb = self._tick  # bound once: the timer callback must not allocate
        self._next_ct = 0
        self._v_own = [self._own_allowed(p) for p in range(3)]  # does phase p's own input have voltage?
        self._probe = [0, 0, 0]
        self._pairs_per_cycle_q10 = MAX_PAIRS_PER_CYCLE * Q10
        self._last = [self._blank(p) for p in range(3)]
        self._acc = [self._zero() for _ in range(3)]
        self._freq_sum = 0.0
        self._freq_n = 0
        self._long_sum = 0.0  # frequencies from one burst's crossing to the next's (see _frequency)
        self._long_n = 0
        self._cross_us = [-1, -1, -1]  # per voltage input: ticks_us of the last burst's crossing (-1: none)
        self._cross_at_us = [0.0, 0.0, 0.0]  # and where the crossing was, from that read (us)
        self._frequency_hz = 0.0
        self._win_start = time.ticks_ms()
        self._run = {"ms": 0, "phases": [{"v2": 0.0, "i2": 0.0, "p": 0.0, "q": 0.0} for _ in range(3)], "f": 0.0}
        self.readings = None
        self.errors = 0  # windows that raised (see run())
        self.last_ok_ms = time.ticks_ms()  # when a window last closed without error
        self._ever = [False, False, False]  # has phase p been measured at all yet?
        self._measured = 0
        # After a settings change: the window under way straddles it, and a phase is judged again
        # only once a window has measured it wholly with the new settings.
        self._straddle = False
        self._settled = [True, True, True]

    def _use_line(self, line):
        """Calibrate the channels with the chip's conversion (ESP-IDF's line from its eFuse, read off
        the voltage inputs: sampler.chip_line), or the nominal one while it is None."""
        self.adc_line = line
        s = self.settings
        self.v_cal, self.i_cal = profiles.channels(s["model"], s["calibration"], line)
        self._block = [[dsp.block_pairs(v.bias, i.bias) for i in self.i_cal] for v in self.v_cal]
        # Each voltage input's bias as measured (its mean over the last whole-cycle burst): the level
        # zero crossings are detected at, whatever the chip's offset (the channel's is a start).
        self._vbias = [v.bias for v in self.v_cal]

    def on_settings(self, changed):
        """Settings changed (firmware/config.py apply(), the one live path): the "meter" keys taken
        from the next burst on, all but burst_cycles, which sized the sample buffers at start-up
        (they are taken from the heap while it is still in one piece, and would not fit later).
        The keys taken, as "meter.key"."""
        live = dict(changed.get("meter") or {})
        same = live.pop("burst_cycles", self.cycles) == self.cycles  # (back to the one in force: nothing to do)
        if live:
            self.change_settings(live)
        return ["meter." + k for k in live] + (["meter.burst_cycles"] if same else [])

    def change_settings(self, changes):
        """Measure with changed settings (a software fix from the setup page) from the next burst on.

        The window under way has bursts taken with the old settings, so its wiring is not judged,
        nor any window until each phase has been measured in a window of its own since; and the
        diagnostics of the last window, which judged the old settings, are withdrawn at once."""
        self.settings.update(changes)
        if getattr(self._board, "voltage_inputs", 3) < 3:
            self.settings["wiring"] = "single-phase"
        if "model" in changes:  # the CTs' range, and their channels (below)
            self.ct_range_a = profiles.ct_range_a(self.settings["model"])
        if "calibration" in changes or "model" in changes:  # the channels anew, same chip line
            vbias = self._vbias
            self._use_line(self.adc_line)
            self._vbias = vbias
        self._straddle = True
        for p in range(3):
            self._settled[p] = False
        if self.readings is not None:
            self.readings["diagnostics"] = []
            self.readings["judged"] = False

    # --- timing ---------------------------------------------------------------------------
    def start(self, flag=None):
        """Start the timer. flag: an asyncio.ThreadSafeFlag to wake the measurement task (or None)."""
        self._flag = flag
        self._win_start = time.ticks_ms()
        self._timer = self._board.timer(self._next_gap_ms(), self._tick_cb)

    def stop(self):
        if self._timer is not None:
            self._timer.deinit()
            self._timer = None

    def _tick(self, _timer):
        self._pending = True
        if self._flag is not None:
            self._flag.set()

    def _next_gap_ms(self):
        """Milliseconds to the next burst: GAP_MIN_PCT..200-GAP_MIN_PCT % of burst_period_ms, uniform
        (xorshift16: small ints only)."""
        x = self._rng
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        self._rng = x
        period = self.settings["burst_period_ms"]
        low = period * GAP_MIN_PCT // 100
        return low + x % (2 * (period - low) + 1)

    def poll(self):
        """Measure if the timer asked for it; return readings when a window closes, else None."""
        if self._pending:
            self._pending = False
            if self._timer is not None:  # the next burst's time, counted from this one's
                self._board.timer(self._next_gap_ms(), self._tick_cb, self._timer)
            self.measure_next()
        if time.ticks_diff(time.ticks_ms(), self._win_start) >= self.settings["window_ms"]:
            if self._measured < 3:
                return None  # the first window waits until every phase has been measured once
            return self.close_window()
        return None

    def step(self, on_readings):
        """poll(), handing readings on; one bad window must not stop the meter: say so, go on."""
        try:
            r = self.poll()
            if r is not None:
                on_readings(r)
        except Exception as e:
            self.errors += 1
            print("meter: error in measurement window:", repr(e))

    async def run(self, on_readings):
        import asyncio

        flag = asyncio.ThreadSafeFlag()
        self.start(flag)
        try:
            while True:
                await flag.wait()
                self.step(on_readings)
        finally:
            self.stop()

    # --- one burst ------------------------------------------------------------------------
    def measure_next(self):
        c = self._next_ct
        self._next_ct = (c + 1) % 3
        p = self.settings["ct_phase"][c] - 1
        if self._own_allowed(p):
            if not self._v_own[p]:
                self._probe[p] = (self._probe[p] + 1) % PROBE_EVERY  # re-check now and then
            if self._v_own[p] or self._probe[p] == 0:
                status = self._reduce(p, c, 0)
                if status == OK and self._process(p, c, 0):
                    self._v_own[p] = True
                    return
                if status != OK and status != NO_CROSSING:
                    return  # a cycle longer than expected: the next burst is sized for it
                self._v_own[p] = False
        ref = self._reference_phase(p)
        if ref is not None:
            delay = (p - ref) % 3  # thirds of a cycle phase p lags the reference
            status = self._reduce(ref, c, delay)
            if status == OK:
                self._process(p, c, delay)
                return
            if status != NO_CROSSING:
                return
        self._free_run(p, c)

    def _own_allowed(self, p):
        return not (p > 0 and self.settings["wiring"] == "single-phase")

    def _reference_phase(self, p):
        for r in range(3):
            if r != p and self._v_own[r] and self._own_allowed(r):
                return r
        return None

    def _shift_q10(self, delay, quadrature):
        """Shift (in 1/1024 pairs) of the current against the voltage for a derived phase."""
        n = self._pairs_per_cycle_q10
        s = (n // 3) if delay == 1 else (-(n // 3) if delay == 2 else 0)
        if quadrature:
            s += n // 4
            if s > n // 2:
                s -= n
        return s

    def _reduce(self, vp, c, delay):
        """Acquire a burst (voltage of phase vp, CT c) and reduce it to integer sums. No allocation.

        _res: [0] whole pairs in the window, [1] the window's exact length in 1/1024 pairs,
        [2] blocks, [3..6] blocks per shifted product (P at delay: lo, hi; Q: lo, hi).
        """
        vcal = self.v_cal[vp]
        ical = self.i_cal[c]
        n_ppc = self._pairs_per_cycle_q10 >> 10
        extra = (n_ppc >> 1) + 4 if delay else (n_ppc >> 2) + 4
        sm = self.sampler
        vbias = self._vbias[vp]
        status = sm.acquire(vp, c, vbias, self.cycles, extra, WAIT_READS)
        if status != OK:
            return status
        b = sm.burst
        buf = sm.buf
        n = b.cycle_pairs
        res = self._res
        res[0] = n
        # The window from crossing to crossing, in 1/1024 pairs: the first crossing lies between the
        # last wait-loop read and pair 0 (half a pair apart), the last one between pairs n-1 and n.
        res[1] = ((n << 10) - 512 + _fraction_q10(buf[2 * n - 2], buf[2 * n], vbias)
                  - (_fraction_q10(b.v_before, buf[0], vbias) >> 1))
        # Noise on an unwired voltage input also "crosses zero", in cycles far too short (or a stray
        # one far too long): a burst whose cycles are not mains cycles is no voltage at all.
        cycle_us = (n * b.pair_q10_us >> 10) // self.cycles
        if cycle_us < MIN_CYCLE_US or cycle_us > MAX_CYCLE_US:
            return NO_CROSSING
        # This burst's own cycle length sets the shifts (the estimate only sized the extra pairs).
        ppc = res[1] // self.cycles
        self._pairs_per_cycle_q10 = ppc
        # The largest shift reads |shift| + 1 pairs past the window: a quarter cycle for Q, 5/12 of
        # a cycle for a derived phase's Q (1/3 + 1/4 - 1).
        reach = ((5 * ppc // 12) >> 10) + 2 if delay else (ppc >> 12) + 2
        if b.pairs < n + reach:
            return SHORT  # too few pairs after the window for the shifts: the estimate was low
        block = self._block[vp][c]
        res[2] = dsp.pair_sums(buf, n, vcal.bias, ical.bias, block, self._sums)
        views = self._cross_views
        if delay:
            s = self._shift_q10(delay, False)
            res[3] = self._cross(buf, s >> 10, n, vcal.bias, ical.bias, block, views[0])
            res[4] = self._cross(buf, (s >> 10) + 1, n, vcal.bias, ical.bias, block, views[1])
        s = self._shift_q10(delay, True)
        res[5] = self._cross(buf, s >> 10, n, vcal.bias, ical.bias, block, views[2])
        res[6] = self._cross(buf, (s >> 10) + 1, n, vcal.bias, ical.bias, block, views[3])
        return OK

    @staticmethod
    def _cross(buf, shift, n, bias_v, bias_i, block, out):
        """Σ dv[k]·di[k + shift] over the window; shift < 0 moves the voltage instead."""
        if shift < 0:
            return dsp.cross_sum(buf, -shift, 0, n, bias_v, bias_i, block, out)
        return dsp.cross_sum(buf, 0, shift, n, bias_v, bias_i, block, out)

    def _free_run(self, p, c):
        """No voltage anywhere to align on: still measure the current."""
        ical = self.i_cal[c]
        pairs = self.cycles * (self._pairs_per_cycle_q10 >> 10)
        sm = self.sampler
        sm.acquire_free(p, c, pairs)
        vbias = self.v_cal[p].bias
        block = self._block[p][c]
        blocks = dsp.pair_sums(sm.buf, pairs, vbias, ical.bias, block, self._sums)
        sv, si, svv, sii, svi = _totals(self._sums, blocks)
        self._vbias[p] = int(vbias + sv / pairs + 0.5)  # near whole cycles: a fair mean
        vrms, irms, _, _ = metering.phase_values(pairs, sv, si, svv, sii, 0, 0, self.v_cal[p].units_per_code,
                                                 self.i_cal[c].units_per_code, 1, 0.0)
        vrms, irms = self._denoise(vrms, irms, self.v_cal[p], ical)
        self._add(p, c, vrms, irms, 0.0, 0.0, 0.0, ical.bias + si / pairs, False)

    # --- metering ---------------------------------------------------------------------------
    def _process(self, p, c, delay):
        """Metering of the burst _reduce() left; False (nothing added) for an own voltage too small
        to be mains."""
        res = self._res
        n = res[0]
        sv, si, svv, sii, svi = _totals(self._sums, res[2])
        cr = self._crossbuf
        nb = self._nblocks

        def product(k, shift_q10):
            c0 = _sum_blocks(cr, k * nb, res[3 + k])
            c1 = _sum_blocks(cr, (k + 1) * nb, res[4 + k])
            frac = (shift_q10 & 1023) / Q10
            return metering.interpolate(c0, c1, frac) / n - (sv / n) * (si / n)

        p_codes = metering.mean_removed(svi, sv, si, n) if not delay else product(0, self._shift_q10(delay, False))
        q_codes = product(2, self._shift_q10(delay, True))
        vp = (p + 3 - delay) % 3  # the phase whose voltage input was read
        vcal = self.v_cal[vp]
        b = self.sampler.burst
        pair_s = b.pair_q10_us / Q10 / 1e6
        f = self._frequency(vp, pair_s)  # at the bias the burst was taken at
        self._vbias[vp] = int(vcal.bias + sv / n + 0.5)  # whole cycles: the input's bias
        ical = self.i_cal[c]
        skew_deg = 360.0 * f * pair_s / 2  # I is read one conversion (half a pair) after V
        # A CT leads through its magnetising inductance: the lead falls as 1/f (specified at 50 Hz).
        per_hz = 50.0 / f if f > 0 else 1.0
        correction = (ical.phase_lead_deg - vcal.phase_lead_deg) * per_hz + skew_deg
        sign = -1 if self.settings["ct_reversed"][c] else 1
        vrms, irms, pw, qvar = metering.phase_values(n, sv, si, svv, sii, p_codes, q_codes, vcal.units_per_code,
                                                     ical.units_per_code, sign, correction)
        vrms, irms = self._denoise(vrms, irms, self.v_cal[vp], ical)
        if not delay and vrms < MIN_MAINS_VRMS:
            return False  # noise whose "cycles" happened to be mains-length: no voltage after all
        self._add(p, c, vrms, irms, pw, qvar, f, ical.bias + si / n, delay == 0)
        return True

    def _frequency(self, vp, pair_s):
        """The mains frequency over this burst's whole cycles (for its phase corrections), and
        counted towards the window's: over the time since the last burst on the same voltage input
        when the whole cycles between them are certain.

        Each crossing is where a line through the voltage reads of the 15° after it meets the bias:
        one or two noisy reads around it would place it a read or more off at 20 V (4 codes of
        noise on a slope of ~2 codes per pair). From one burst's first crossing to the next
        burst's, ~300 ms apart rather than the burst's own 40 ms, what is left of that noise and
        the detector's own lag (the same in every burst) weigh a seventh as much."""
        b = self.sampler.burst
        buf = self.sampler.buf
        bias = self._vbias[vp]
        n = b.cycle_pairs
        k = max(4, self._pairs_per_cycle_q10 // (24 * Q10))
        c0 = _crossing(buf, 0, k, bias)
        c1 = _crossing(buf, n, k, bias) if b.pairs > n + k + 1 else None
        if c0 is None or c1 is None:
            c0 = 0.0
            window_pairs = self._res[1] / Q10
        else:
            window_pairs = n + c1 - c0
        f = metering.frequency_hz(self.cycles, window_pairs, pair_s)
        t0_us = b.t0_us
        at_us = c0 * pair_s * 1e6  # the crossing, from the read that found it
        if self._cross_us[vp] >= 0 and f > 0:  # ticks are never negative
            dt_us = time.ticks_diff(t0_us, self._cross_us[vp]) + at_us - self._cross_at_us[vp]
            cycles = dt_us * f / 1e6
            whole = int(cycles + 0.5)
            # Up to a second apart, the burst's own frequency (~0.1 Hz at 20 V) counts the cycles
            # between them; the last window's must count the same, so that one burst whose crossings
            # a spike or the noise put far off cannot miscount them (3 Hz off, at 300 ms), and a real
            # change of frequency (which the last window cannot know) skips them for a window.
            ref = self._frequency_hz
            if (0 < whole and abs(cycles - whole) < 0.25 and dt_us < 1_000_000
                    and (ref <= 0 or int(dt_us * ref / 1e6 + 0.5) == whole)):
                self._long_sum += whole * 1e6 / dt_us
                self._long_n += 1
        self._cross_us[vp] = t0_us
        self._cross_at_us[vp] = at_us
        return f

    def _denoise(self, vrms, irms, vcal, ical):
        """RMS less the converter's own noise: noise adds to a waveform's mean square (σ² codes²),
        and matters at the bottom of the range (σ = 4 codes is +0.5 % at 5 % of a CT's range).
        σ² is measured per burst from the samples' second differences (sampler._despike)."""
        b = self.sampler.burst
        m = 6 * (b.pairs - 3)
        if m <= 0:
            return vrms, irms
        nv = b.noise[0] / m * vcal.units_per_code * vcal.units_per_code
        ni = b.noise[1] / m * ical.units_per_code * ical.units_per_code
        return math.sqrt(max(0.0, vrms * vrms - nv)), math.sqrt(max(0.0, irms * irms - ni))

    def _add(self, p, c, vrms, irms, pw, qvar, f, ct_mean_code, own):
        if not self._acc[p]["n"] and not self._ever[p]:
            self._ever[p] = True
            self._measured += 1
        a = self._acc[p]
        # Real power is weighted by time: each burst stands for the part of the window nearer to it
        # than to the phase's other bursts (ms from the window's start; the burst's middle), so a
        # load that steps within a window is counted from about when it stepped, not by how many
        # of the randomly timed bursts fell on either side of the step.
        b = self.sampler.burst
        t = time.ticks_diff(time.ticks_ms(), self._win_start) - (b.cycle_pairs * b.pair_q10_us >> 10) // 2000
        if a["n"]:
            mid = (a["t_last"] + t) / 2
            a["pt"] += a["p_last"] * (mid - a["cell"])
            a["cell"] = mid
        a["p_last"] = pw
        a["t_last"] = t
        a["v2"] += vrms * vrms
        a["i2"] += irms * irms
        a["p"] += pw
        a["q"] += qvar
        a["n"] += 1
        a["ct"] = c
        a["ct_code"] = ct_mean_code
        a["own"] = own
        if f > 0:
            self._freq_sum += f
            self._freq_n += 1

    # --- windows ----------------------------------------------------------------------------
    @staticmethod
    def _zero():
        return {"v2": 0.0, "i2": 0.0, "p": 0.0, "q": 0.0, "n": 0, "ct": 0, "ct_code": profiles.BIAS_CODE, "own": True,
                "pt": 0.0, "p_last": 0.0, "t_last": 0, "cell": 0}

    def _blank(self, p):
        return {"vrms": 0.0, "irms": 0.0, "real_power_w": 0.0, "reactive_power_var": 0.0,
                "voltage_own": True, "ct": self.settings["ct_phase"].index(p + 1), "ct_mean_code": profiles.BIAS_CODE}

    def close_window(self):
        now = time.ticks_ms()
        dt_ms = time.ticks_diff(now, self._win_start)
        self._win_start = now
        for p in range(3):
            a = self._acc[p]
            if a["n"]:
                last = self._last[p]
                last["vrms"] = math.sqrt(a["v2"] / a["n"])
                last["irms"] = math.sqrt(a["i2"] / a["n"])
                # the last burst's part runs to the window's end
                last["real_power_w"] = ((a["pt"] + a["p_last"] * (dt_ms - a["cell"])) / dt_ms if dt_ms > 0
                                        else a["p"] / a["n"])
                last["reactive_power_var"] = a["q"] / a["n"]
                last["voltage_own"] = a["own"] or self._v_own[p]
                last["ct"] = a["ct"]
                last["ct_mean_code"] = a["ct_code"]
                if not self._straddle:
                    self._settled[p] = True
            self._acc[p] = self._zero()
        if self._long_n:
            self._frequency_hz = self._long_sum / self._long_n
        elif self._freq_n:
            self._frequency_hz = self._freq_sum / self._freq_n
        freq = self._frequency_hz
        self._freq_sum = self._long_sum = 0.0
        self._freq_n = self._long_n = 0
        self.energy.add([self._last[p]["real_power_w"] for p in range(3)], dt_ms)
        self._line_wait -= 1
        if self.adc_line is None and any(self._v_own) and self._line_wait <= 0:
            # No voltage input swung at start-up; one does now. Between bursts, ~1,500 reads: once a
            # minute at most, for an input that never swings enough.
            self._line_wait = 60
            vbias = self._vbias
            self._use_line(chip_line(self._v_adcs))
            if self.adc_line is None:
                self._vbias = vbias
        single = self._single_phase()
        judged = not self._straddle and self._settled[0] and self._settled[1] and self._settled[2]
        self._straddle = False
        diags = diagnostics.evaluate(self._last, freq, self.settings, self.ct_range_a, single) if judged else []
        self.readings = self._readings(now, freq, single, diags, judged)
        self._account(dt_ms, freq)
        self.last_ok_ms = time.ticks_ms()
        return self.readings

    def healthy(self, now_ms):
        """Windows keep closing (within three window lengths, plus slack for the first one)."""
        return time.ticks_diff(now_ms, self.last_ok_ms) < 3 * self.settings["window_ms"] + 5000

    def _single_phase(self):
        if self.settings["wiring"] == "single-phase":
            return True
        if self.settings["wiring"] == "three-phase":
            return False
        return self._last[0]["voltage_own"] and not self._last[1]["voltage_own"] and not self._last[2]["voltage_own"]

    def _readings(self, now, freq, single, diags, judged=True):
        e = self.energy.wh()
        phases = []
        total_w = 0.0
        for p in range(3):
            ph = self._last[p]
            s, pf = metering.apparent_and_pf(ph["vrms"], ph["irms"], ph["real_power_w"])
            w = ph["real_power_w"]
            total_w += w
            phases.append({
                "phase": p + 1, "vrms": ph["vrms"], "irms": ph["irms"], "real_power_w": w,
                "apparent_power_va": s, "reactive_power_var": ph["reactive_power_var"], "power_factor": pf,
                "direction": _direction(w, ph["irms"]), "voltage_derived": not ph["voltage_own"],
                "ct_unplugged": ph["ct_mean_code"] < diagnostics.CT_UNPLUGGED_CODE,  # judged or not
                "import_wh": e["import_wh"][p], "export_wh": e["export_wh"][p],
            })
        return {
            "t_ms": now, "frequency_hz": freq, "wiring": "single-phase" if single else "three-phase",
            "phases": phases,
            "total": _total(total_w, e),
            "diagnostics": diags,
            "judged": judged,  # False: the window straddled a settings change, its wiring was not judged
            "energy_mwh": self.energy.snapshot(),  # exact integer counters (floats are 32-bit on the board)
        }

    def _account(self, dt_ms, freq):
        run = self._run
        run["ms"] += dt_ms
        run["f"] += freq * dt_ms
        for p in range(3):
            ph = self._last[p]
            a = run["phases"][p]
            a["v2"] += ph["vrms"] ** 2 * dt_ms
            a["i2"] += ph["irms"] ** 2 * dt_ms
            a["p"] += ph["real_power_w"] * dt_ms
            a["q"] += ph["reactive_power_var"] * dt_ms

    def report_ms(self):
        """How long report() averages over: the windows closed so far, end to end."""
        return self._run["ms"]

    def report(self):
        """Averages over the whole run (time-weighted) and the energy counters now."""
        r = self.readings
        run = self._run
        ms = run["ms"] or 1
        e = self.energy.wh()
        phases = []
        total_w = 0.0
        for p in range(3):
            a = run["phases"][p]
            vrms = math.sqrt(a["v2"] / ms)
            irms = math.sqrt(a["i2"] / ms)
            w = a["p"] / ms
            total_w += w
            s, pf = metering.apparent_and_pf(vrms, irms, w)
            phases.append({"vrms": vrms, "irms": irms, "real_power_w": w, "apparent_power_va": s,
                           "reactive_power_var": a["q"] / ms, "power_factor": pf,
                           "import_wh": e["import_wh"][p], "export_wh": e["export_wh"][p],
                           "voltage_derived": r["phases"][p]["voltage_derived"] if r else False})
        return {
            "frequency_hz": run["f"] / ms,
            "wiring": r["wiring"] if r else "three-phase",
            "phases": phases,
            "total": _total(total_w, e),
            "diagnostics": [{"code": d["code"], "phase": d["phase"], "message": d["message"]}
                            for d in (r["diagnostics"] if r else [])],
        }



def _total(real_power_w, energy_wh):
    """The "total" of readings and reports: summed power, and the energy counters (energy.wh())."""
    return {"real_power_w": real_power_w, "import_wh": energy_wh["import_wh_total"],
            "export_wh": energy_wh["export_wh_total"], "net_import_wh": energy_wh["net_import_wh"],
            "net_export_wh": energy_wh["net_export_wh"]}


def _direction(real_power_w, irms):
    if irms < 0.05 or abs(real_power_w) < 1.0:
        return "idle"
    return "import" if real_power_w > 0 else "export"


def _fraction_q10(before, after, bias):
    """Where between two samples the voltage rose through the bias, in 1/1024 of a pair."""
    if after <= before:
        return 0
    f = (bias - before) * 1024 // (after - before)
    return 0 if f < 0 else 1023 if f > 1023 else f


def _crossing(buf, start, k, bias):
    """Where, in pairs from pair `start`, the least-squares line through the voltage reads of pairs
    start+1..start+k meets the bias (None for a line that does not rise). Each read is the median
    of it and its neighbours: a spike too small for sampler._despike (and pair `start`, the read
    that found the crossing, which it never checks) would move the line by several reads."""
    sv = sjv = 0
    i = 2 * start
    x = buf[i]
    y = buf[i + 2]
    for j in range(1, k + 1):
        i += 2
        z = buf[i + 2]
        v = max(min(x, y), min(max(x, y), z))
        sv += v
        sjv += j * v
        x = y
        y = z
    sj = k * (k + 1) // 2
    sjj = k * (k + 1) * (2 * k + 1) // 6
    num = k * sjv - sj * sv  # the slope times k·sjj - sj²
    if num <= 0:
        return None
    slope = num / (k * sjj - sj * sj)
    return (bias - (sv - slope * sj) / k) / slope


def _totals(sums, blocks):
    t = [0, 0, 0, 0, 0]
    for b in range(blocks):
        for j in range(5):
            t[j] += sums[5 * b + j]
    return t


def _sum_blocks(arr, start, blocks):
    s = 0
    for b in range(blocks):
        s += arr[start + b]
    return s

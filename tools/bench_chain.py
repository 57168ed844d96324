# bench_chain — host CPU of the meter's measurement path per simulated second (runs under MicroPython).
#
# The path is everything the firmware does per second of metering: 10 timer ticks, each a burst
# (the viper acquisition loop and its hand-off), the integer kernels and the float metering, then
# one window (averaging, energy, diagnostics, readings). The waveform synthesis is not part of it:
# the ADC read methods are replaced by the __next__ of an iterator over precomputed codes, a C call
# that costs about what a register read does, so what is timed is the firmware's own work.
#
#   micropython tools/bench_chain.py SECONDS      prints one JSON object

import json
import math
import sys
import time
from array import array

from firmware import config, profiles
from firmware.meter import Meter

HZ = 50.0
READ_US = 35  # one conversion on the ESP32: sets how many samples a cycle holds


def _codes(amplitude, phase_deg, n):
    out = array("H", bytes(2 * n))
    step = 2 * math.pi * HZ * READ_US * 2e-6  # one pair per two conversions
    for k in range(n):
        wave = amplitude * math.sin(k * step - math.radians(phase_deg))
        out[k] = int(profiles.BIAS_CODE + wave + (k * 7919 % 5) - 2)
    return out


class ReplayADC:
    """Stands in for machine.ADC: read_u16() returns the next precomputed sample (scaled to 16 bits)."""

    def __init__(self, codes):
        self.codes = array("H", (c << 4 for c in codes))
        self.rewind()

    def rewind(self):
        self.read_u16 = iter(self.codes).__next__


class BenchBoard:
    def __init__(self, n):
        self.adc_pairs = []
        for p in range(3):
            v = ReplayADC(_codes(1060, 120 * p, n))
            i = ReplayADC(_codes(700, 120 * p + 25, n))
            self.adc_pairs.append((v, i))

    def timer(self, period_ms, callback):
        return None


def main(seconds):
    n = 4000  # a burst needs < 800 samples per channel; rewound before each
    board = BenchBoard(n)
    # Windows are closed here once per simulated second (the default window_ms), not by the clock.
    meter = Meter(board, config.section("meter", {"window_ms": 3_600_000}))
    bursts_per_s = 1000 // meter.settings["burst_period_ms"]
    spent_us = 0
    bursts = 0
    for _ in range(seconds):
        for _ in range(bursts_per_s):
            for v, i in board.adc_pairs:
                v.rewind()
                i.rewind()
            meter.sampler._read_v = tuple(a[0].read_u16 for a in board.adc_pairs)
            meter.sampler._read_i = tuple(a[1].read_u16 for a in board.adc_pairs)
            t0 = time.ticks_us()
            meter._tick(None)
            meter.poll()
            spent_us += time.ticks_diff(time.ticks_us(), t0)
            bursts += 1
        t0 = time.ticks_us()
        r = meter.close_window()
        spent_us += time.ticks_diff(time.ticks_us(), t0)
    ph = r["phases"][0]
    print(json.dumps({
        "simulated_s": seconds, "bursts": bursts, "cpu_us": spent_us,
        "cpu_fraction_per_sim_second": spent_us / 1e6 / seconds,
        # The replayed codes have no real time base, so only amplitudes are meaningful here.
        "sanity": {"vrms_l1": ph["vrms"], "irms_l1": ph["irms"]},
    }))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)

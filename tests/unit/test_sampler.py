# The burst sampler: starts at a rising voltage zero crossing, spans whole cycles, allocates nothing.
import math
from array import array

import micropython

import simworld
from firmware.board import Board
from firmware.meter import Meter
from firmware.sampler import BUFFER_FULL, NO_CROSSING, OK, Sampler
from simworld import world
from support import MICROPYTHON, skip
from tools.sim import mains


def _sine(amplitude_codes, hz, phase_deg=0.0):
    n = int(1e6 / hz)
    t = array("H", bytes(2 * n))
    for k in range(n):
        code = int(round(2048 + amplitude_codes * math.sin(2 * math.pi * k / n - math.radians(phase_deg))))
        t[k] = code * mains.SUB + mains.SUB // 2  # MainsSource tables are in 1/SUB codes
    return mains.MainsSource(t, int(round(1e9 / hz)))


def _connect(hz=50.0, v_codes=1000, i_codes=500, lag_deg=0.0):
    for v, i in Board().pins["adc_pairs"]:
        world.sources[v] = _sine(v_codes, hz)
        world.sources[i] = _sine(i_codes, hz, lag_deg)


def test_burst_starts_at_a_rising_crossing_and_spans_whole_cycles():
    _connect(50.0)
    board = Board()
    s = Sampler([a[0] for a in board.adc_pairs], [a[1] for a in board.adc_pairs], 2000)
    for cycles in (1, 2, 3):
        assert s.acquire(0, 0, 2048, cycles, 40, 2000) == OK
        b = s.burst
        # 35 us per conversion, 70 us per pair: 285.7 pairs per 50 Hz cycle
        assert abs(b.cycle_pairs - cycles * 1e6 / 50 / 70) <= 1.5
        assert b.pairs == b.cycle_pairs + 1 + 40
        assert s.buf[0] >= 2048 and b.v_before < 2048  # pair 0 is the first sample past the crossing
        assert s.buf[2 * b.cycle_pairs] >= 2048 > s.buf[2 * b.cycle_pairs - 2]  # and so is pair n
        assert abs(b.pair_q10_us / 1024 - 70) < 0.5  # pair time measured from the clock


def test_no_voltage_means_no_crossing_and_too_small_a_buffer_is_reported():
    board = Board()
    for v, _i in board.pins["adc_pairs"]:
        world.sources[v] = simworld.ConstantSource(2048)
    s = Sampler([a[0] for a in board.adc_pairs], [a[1] for a in board.adc_pairs], 2000)
    assert s.acquire(1, 1, 2048, 2, 40, 1500) == NO_CROSSING
    _connect(50.0)
    small = Sampler([a[0] for a in board.adc_pairs], [a[1] for a in board.adc_pairs], 300)
    assert small.acquire(0, 0, 2048, 2, 40, 2000) == BUFFER_FULL


def test_acquisition_and_kernels_allocate_nothing():
    if not MICROPYTHON:
        skip("heap_lock only means something on MicroPython")
    _connect(50.0, lag_deg=30.0)
    m = Meter(Board())
    m._reduce(0, 0, 0)  # first call warms up: nothing is created lazily after this
    statuses = array("i", [9, 9, 9])
    micropython.heap_lock()
    try:
        statuses[0] = m._reduce(0, 0, 0)  # own voltage
        statuses[1] = m._reduce(0, 1, 1)  # L2 derived from L1 (120 degrees)
        statuses[2] = m._reduce(0, 2, 2)  # L3 derived from L1 (240 degrees)
        m._tick(None)  # the timer callback too
    finally:
        micropython.heap_unlock()
    assert list(statuses) == [OK, OK, OK]

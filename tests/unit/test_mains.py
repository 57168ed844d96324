# The simulated mains: the codes on the six ADC pins carry the scenario's voltages and currents
# through the reference front end, and bad scenarios are refused with a message naming the key.
import math

import micropython

from firmware import profiles
from simworld import world
from support import MICROPYTHON, SMALL_INT_MAX, raises, skip, small_int
from tools.sim import mains

V_GPIO = (36, 39, 34)  # firmware/board.py PINS["adc_pairs"]
I_GPIO = (35, 32, 33)

BIAS = profiles.BIAS_CODE


def _scenario(**top):
    phases = top.pop("phases", None) or [{"irms": 10.0, "phase_deg": 30.0} for _ in range(3)]
    s = {"noise_lsb": 0.0, "phases": phases}
    s.update(top)
    return mains.load_scenario(s)


def _code(entry):
    """A table entry (1/SUB codes, + SUB/2 for rounding) as the exact code it stands for."""
    return (entry - mains.SUB // 2) / mains.SUB


def _component(tab, bias, units_per_code, order=1):
    """(RMS, phase deg) of one harmonic order in a one-period table: x = A·sin(h·2πk/n + phase)."""
    n = len(tab)
    w = 2.0 * math.pi * order / n
    s = c = 0.0
    for k in range(n):
        x = (_code(tab[k]) - bias) * units_per_code
        s += x * math.sin(w * k)
        c += x * math.cos(w * k)
    return math.sqrt(s * s + c * c) * 2.0 / n / math.sqrt(2.0), math.degrees(math.atan2(c, s))


def _rms(tab, bias, units_per_code):
    return math.sqrt(sum(((_code(x) - bias) * units_per_code) ** 2 for x in tab) / len(tab))


def _span(tab):
    """Peak-to-peak codes of a table."""
    return _code(max(tab)) - _code(min(tab))


def _angle(a, b):
    """a - b in degrees, folded into -180..180."""
    return (a - b + 180.0) % 360.0 - 180.0


def _channels(model="home"):
    return profiles.channels(model)


def test_voltage_and_current_codes_have_the_scenario_rms():
    s = _scenario(phases=[{"vrms": 230.0, "irms": 10.0}, {"vrms": 240.0, "irms": 50.0}, {"vrms": 110.0, "irms": 0.5}])
    srcs = mains.connect(world, s)
    vch, ich = _channels()
    for k, (vrms, irms) in enumerate(((230.0, 10.0), (240.0, 50.0), (110.0, 0.5))):
        v = _rms(srcs[V_GPIO[k]].table, vch[k].bias, vch[k].units_per_code)
        i = _rms(srcs[I_GPIO[k]].table, ich[k].bias, ich[k].units_per_code)
        assert abs(v - vrms) < 0.001 * vrms, (k, v)
        assert abs(i - irms) < 0.002 * irms + 0.03, (k, i)  # a code is 0.089 A on the Home CT


def test_public_model_scales_current_for_its_400_a_cts():
    s = _scenario(model="public", phases=[{"irms": 300.0}])
    srcs = mains.connect(world, s)
    _, ich = _channels("public")
    assert abs(_rms(srcs[35].table, ich[0].bias, ich[0].units_per_code) - 300.0) < 0.3
    assert _code(max(srcs[35].table)) < 4000 and srcs[35].clipped == 0  # 300 A fits the Public front end


def test_current_lags_voltage_by_phase_deg_less_the_ct_lead():
    for f in (50.0, 60.0):
        world.reset()
        s = _scenario(frequency_hz=f, phases=[{"irms": 20.0, "phase_deg": 30.0}, {"irms": 20.0, "phase_deg": -45.0},
                                              {"irms": 20.0, "phase_deg": 180.0}])
        srcs = mains.connect(world, s)
        vch, ich = _channels()
        v1 = _component(srcs[36].table, vch[0].bias, vch[0].units_per_code)[1]
        for k, lag in enumerate((30.0, -45.0, 180.0)):
            v = _component(srcs[V_GPIO[k]].table, vch[k].bias, vch[k].units_per_code)[1]
            i = _component(srcs[I_GPIO[k]].table, ich[k].bias, ich[k].units_per_code)[1]
            # The CT leads its primary current by phase_lead_deg at 50 Hz (1.5° on the Home model),
            # less at 60 Hz: the lead falls as 1/f.
            lead = ich[k].phase_lead_deg * 50.0 / f
            assert abs(_angle(v - i, lag - lead)) < 0.02, (f, k, v - i)
            # Phase rotation L1 -> L2 -> L3: each voltage 120° behind the previous one.
            assert abs(_angle(v1 - v, 120.0 * k)) < 0.02, (k, v)


def test_harmonics_have_their_amplitude_and_phase():
    s = _scenario(phases=[{"vrms": 230.0, "irms": 10.0, "phase_deg": 0.0, "v_harmonics": [[3, 0.05, 20.0]],
                           "i_harmonics": [[3, 0.2, 0.0], [5, 0.1, 30.0]]}])
    srcs = mains.connect(world, s)
    vch, ich = _channels()
    v1, vp1 = _component(srcs[36].table, vch[0].bias, vch[0].units_per_code, 1)
    v3, vp3 = _component(srcs[36].table, vch[0].bias, vch[0].units_per_code, 3)
    i1, ip1 = _component(srcs[35].table, ich[0].bias, ich[0].units_per_code, 1)
    i5, ip5 = _component(srcs[35].table, ich[0].bias, ich[0].units_per_code, 5)
    assert abs(v1 - 230.0) < 0.1 and abs(v3 - 11.5) < 0.1
    assert abs(i1 - 10.0) < 0.02 and abs(i5 - 1.0) < 0.02
    assert abs(_angle(vp3 - 3 * vp1, 20.0)) < 0.5
    # The CT's lead falls as 1/frequency: the 5th harmonic leads by a fifth of the fundamental's.
    lead = ich[0].phase_lead_deg
    assert abs(_angle(ip1 - vp1, lead)) < 0.02
    assert abs(_angle(ip5 - 5 * (ip1 - lead), 30.0 + lead / 5)) < 0.3


def test_reads_follow_the_mains_frequency():
    for f in (50.0, 60.0, 47.5):
        world.reset()
        s = _scenario(frequency_hz=f, phases=[{"vrms": 230.0}])
        src = mains.connect(world, s)[36]
        assert abs(1e9 / src.period_ns - f) < 1e-4
        t0 = world.now_us()
        rising = 0
        last = src.raw_at(t0)
        for k in range(1, 10000):  # one second, every 100 µs
            x = src.raw_at(t0 + 100 * k)
            if last < BIAS <= x:
                rising += 1
            last = x
        assert rising in (int(f), int(f) - 1, int(f) + 1), (f, rising)
        if f == 50.0:
            assert [src.raw_at(t0 + k) for k in range(0, 20000, 7)] == [src.raw_at(t0 + 20000 + k) for k in
                                                                       range(0, 20000, 7)]


def test_single_phase_wiring_leaves_l2_l3_voltage_flat():
    s = _scenario(wiring="single-phase", noise_lsb=1.5)
    srcs = mains.connect(world, s)
    vch, _ = _channels()
    assert _rms(srcs[36].table, vch[0].bias, vch[0].units_per_code) > 200.0
    t0 = world.now_us()
    for gpio in (39, 34):
        reads = [srcs[gpio].raw_at(t0 + 37 * k) for k in range(4000)]
        mean = sum(reads) / len(reads)
        sd = math.sqrt(sum((x - mean) ** 2 for x in reads) / len(reads))
        assert abs(mean - BIAS) < 0.2 and 1.2 < sd < 1.8, (gpio, mean, sd)  # bias + noise, no AC
    for gpio in I_GPIO:  # the CTs still measure their conductors
        assert _span(srcs[gpio].table) > 200  # 10 A peak-to-peak: ~232 codes


def test_missing_voltage_and_unplugged_ct():
    s = _scenario(noise_lsb=1.0, phases=[{"irms": 10.0}, {"irms": 10.0, "voltage_connected": False},
                                          {"irms": 10.0, "ct_connected": False}])
    srcs = mains.connect(world, s)
    t0 = world.now_us()
    v2 = [srcs[39].raw_at(t0 + 41 * k) for k in range(3000)]
    assert BIAS - 8 < min(v2) and max(v2) < BIAS + 8  # bias + noise only
    i3 = [srcs[33].raw_at(t0 + 41 * k) for k in range(3000)]
    assert min(i3) == 0 and max(i3) < 8 and sum(i3) / len(i3) < 1.0  # grounded input, noise clipped at 0
    assert _span(srcs[35].table) > 200


def test_reversed_ct_negates_the_current():
    s = _scenario(phases=[{"irms": 25.0, "phase_deg": 20.0},
                          {"irms": 25.0, "phase_deg": 20.0, "ct_reversed": True},
                          {"irms": 25.0, "phase_deg": 20.0, "ct_phase": 2}])
    srcs = mains.connect(world, s)
    straight, reversed_ = srcs[33].table, srcs[32].table  # CT3 clamps L2 the right way round
    assert _span(straight) > 300
    assert max(abs(_code(straight[k]) - BIAS + _code(reversed_[k]) - BIAS) for k in range(len(straight))) <= 0.07


def test_ct_phase_routes_the_clamped_conductor():
    s = _scenario(phases=[{"irms": 10.0, "ct_phase": 3}, {"irms": 40.0, "ct_phase": 1}, {"irms": 70.0}])
    srcs = mains.connect(world, s)
    _, ich = _channels()
    c = ich[0]
    assert list(srcs[35].table) == list(srcs[33].table)  # CT1 and CT3 both clamp L3
    i2, p2 = _component(srcs[32].table, c.bias, c.units_per_code)
    assert abs(i2 - 10.0) < 0.05  # CT2 clamps L1 and reads L1's 10 A
    i3, p3 = _component(srcs[33].table, c.bias, c.units_per_code)
    assert abs(i3 - 70.0) < 0.1 and abs(_angle(p2 - p3, 240.0)) < 0.05  # L1's current leads L3's by 240°


def test_clipping_beyond_the_front_end_range_is_counted():
    s = _scenario(phases=[{"irms": 250.0}, {"irms": 90.0}])  # Home CTs clip from ~148 A (bias 1.3 V)
    srcs = mains.connect(world, s)
    t0 = world.now_us()
    reads = [srcs[35].raw_at(t0 + k) for k in range(0, 20000, 3)]
    assert srcs[35].clipped > 0 and min(reads) == 0 and max(reads) == 4095
    assert srcs[32].clipped == 0


def test_noise_has_its_sigma_and_follows_the_seed():
    a = mains.connect(world, _scenario(noise_lsb=2.0, seed=7, phases=[{"vrms": 0.0}]))[36].noise
    b = mains.connect(world, _scenario(noise_lsb=2.0, seed=7, phases=[{"vrms": 0.0}]))[36].noise
    c = mains.connect(world, _scenario(noise_lsb=2.0, seed=8, phases=[{"vrms": 0.0}]))[36].noise
    assert len(a) == mains.NOISE_LEN and list(a) == list(b) and list(a) != list(c)
    mean = sum(a) / len(a) / mains.SUB
    sd = math.sqrt(sum((x / mains.SUB - mean) ** 2 for x in a) / len(a))
    assert abs(mean) < 0.1 and 1.9 < sd < 2.1, (mean, sd)
    assert mains.connect(world, _scenario(noise_lsb=0.0))[36].noise is None


def test_noise_dithers_a_signal_smaller_than_a_code():
    # An input 0.375 codes above its bias: rounding alone always reads the bias; with noise, the
    # average of the ADC's reads finds the offset, as a real converter's does.
    srcs = mains.connect(world, _scenario(noise_lsb=1.0, phases=[{"voltage_connected": False}]))
    src = srcs[36]
    assert len(src.table) == 1  # an input with no AC on it
    t0 = world.now_us()
    reads = [src.raw_at(t0 + k) for k in range(20000)]
    at_bias = sum(reads) / len(reads)
    assert abs(at_bias - BIAS) < 0.06  # rounding a noisy input leaves < 1/32 code of DC (the meter removes DC)
    src.table[0] += 6  # 6/16 of a code
    src._k = 0  # the same noise again
    reads = [src.raw_at(t0 + k) for k in range(20000)]
    assert abs(sum(reads) / len(reads) - at_bias - 0.375) < 0.02
    src.noise = None
    assert src.raw_at(t0) == BIAS


def test_connect_sets_the_adc_conversion_time():
    mains.connect(world, _scenario(adc_read_us=20))
    assert world.adc_read_us == 20


# Times as a 32-bit port's clock gives them: small ints, up to 2**30 - 1, and jumps between bursts.
_TIMES_32 = [0, 1, 35, 70, 20_000, 20_035, 1_000_000, 1_000_499, 1_000_999, 123_456_789, 123_456_824,
             SMALL_INT_MAX - 100_000, SMALL_INT_MAX - 35, SMALL_INT_MAX, 5, 40, 75]


def _position(src, t_us):
    """Where t_us falls in the period (table step, remainder in period_ns/n units), with plain ints."""
    return divmod((t_us * 1000 % src.period_ns) * src.n, src.period_ns)


def test_reads_land_exactly_where_the_time_says_in_the_period():
    # raw_at moves on from its last read instead of working from t_us: the position must still be
    # exactly t_us's, read after read and after any jump, at 50 and 60 Hz (16,666,667 ns: not whole µs).
    for f in (50.0, 60.0, 40.0, 70.0):
        src = mains.connect(world, _scenario(frequency_hz=f))[36]
        t = 0
        for k in range(3000):
            t += 35 if k % 500 else 97_531  # bursts of reads 35 µs apart, and jumps between them
            src.raw_at(t)
            assert (src._step, src._rem) == _position(src, t), (f, t)
        for t in _TIMES_32:
            src.raw_at(t)
            assert (src._step, src._rem) == _position(src, t), (f, t)


def test_reads_stay_within_a_32_bit_ports_small_ints():
    # On a 32-bit port an int above 2**30 is allocated: the simulated ADC read must never build one,
    # or every read leaves garbage and the collections it brings fall inside the firmware's bursts.
    if MICROPYTHON:
        skip("the 64-bit port's ints reach 2**62: checked under CPython, every result of the arithmetic")
    for f in (40.0, 50.0, 60.0, 70.0):  # the scenario's whole range: the longest period is the worst
        src = mains.connect(world, _scenario(frequency_hz=f, noise_lsb=2.0,
                                             phases=[{"vrms": 400.0, "v_harmonics": [[3, 0.5, 0.0]]}]))[36]
        for name in ("period_ns", "n", "_per_us", "step_us_max", "_frac_div", "_top_bit", "_step", "_rem", "_t_us",
                     "_k"):
            setattr(src, name, small_int(getattr(src, name)))
        src.table = [small_int(x) for x in src.table]
        t = 0
        for k in range(2000):
            t += src.step_us_max if k % 3 == 0 else 35 if k % 3 == 1 else 1000 + k
            src.raw_at(small_int(t))
        for t in _TIMES_32:
            src.raw_at(small_int(t))


def test_reads_allocate_nothing():
    if not MICROPYTHON:
        skip("heap_lock only catches allocations on MicroPython")
    srcs = mains.connect(world, _scenario(noise_lsb=1.0))
    src = srcs[36]
    t = world.now_us()
    total = 0
    micropython.heap_lock()
    try:
        for _ in range(5000):
            total += src.raw_at(t)
            t += 35
        # Jumps too, to times up to a 32-bit port's largest small int: run on one, this is where a
        # big int would be allocated.
        for t in _TIMES_32:
            total += src.raw_at(t)
    finally:
        micropython.heap_unlock()
    assert total > 0


def _cycle_peak(src, t0_us, period_us, cycle):
    """The largest |code - bias| a current input shows over one mains cycle (read every 50 µs)."""
    return max(abs(src.raw_at(t0_us + cycle * period_us + t) - BIAS) for t in range(0, period_us, 50))


def test_a_cycle_pattern_gates_whole_mains_cycles_from_the_start_of_the_run():
    world.advance_us(7_777)  # connect() at an arbitrary instant: cycle 0 starts at the next L1 crossing
    s = _scenario(phases=[{"irms": 20.0, "cycle_pattern": [1, 0, 0]}, {"irms": 20.0}, {"irms": 20.0}])
    srcs = mains.connect(world, s)
    t0 = mains.run_origin_us(world, s)
    assert t0 >= world.now_us() and t0 * 1000 % mains.period_ns(s) < 1000  # an L1 zero crossing
    v = srcs[V_GPIO[0]]
    assert v.raw_at(t0 - 100) < BIAS <= v.raw_at(t0 + 100)  # rising
    peaks = [_cycle_peak(srcs[I_GPIO[0]], t0, 20_000, k) for k in range(9)]
    assert [p > 150 for p in peaks] == [True, False, False] * 3, peaks  # 20 A: ~232 codes peak
    assert max(peaks[1], peaks[2]) <= 1  # off: the bias (noise off here)
    assert _cycle_peak(srcs[I_GPIO[1]], t0, 20_000, 1) > 150  # other phases untouched


def test_a_random_pattern_plays_the_cycles_truth_counts():
    pattern = {"random": 0.4, "seed": 11}
    s = _scenario(phases=[{"irms": 20.0, "cycle_pattern": pattern}])
    srcs = mains.connect(world, s)
    t0 = mains.run_origin_us(world, s)
    got = [_cycle_peak(srcs[I_GPIO[0]], t0, 20_000, k) > 150 for k in range(60)]
    assert got == [mains.cycle_on(pattern, k) for k in range(60)]
    assert 10 < sum(got) < 40


def test_steps_change_the_load_at_the_first_cycle_after_their_time():
    s = _scenario(frequency_hz=60.0, phases=[{"irms": 10.0, "steps": [[0.05, {"irms": 40.0}],
                                                                      [0.1, {"phase_deg": 90.0}]]}])
    srcs = mains.connect(world, s)
    t0 = mains.run_origin_us(world, s)
    src = srcs[I_GPIO[0]]
    period_us = 16_667
    peaks = [_cycle_peak(src, t0, period_us, k) for k in range(8)]
    # 0.05 s is 3 cycles at 60 Hz: the step starts with cycle 3; 0.1 s = cycle 6 turns 40 A by 90°.
    assert [p > 400 for p in peaks] == [False] * 3 + [True] * 5, peaks  # 40 A: ~463 codes peak
    assert all(100 < p < 130 for p in peaks[:3])  # 10 A: ~116
    mid = t0 + 6 * period_us + period_us // 4  # a quarter into cycle 6: the 90°-lagging current crosses zero
    assert abs(src.raw_at(mid) - BIAS) < 60 and abs(src.raw_at(t0 + 5 * period_us + period_us // 4) - BIAS) > 400
    assert _cycle_peak(src, t0, period_us, 0) < 130  # going back in time finds the first load again


def test_switching_loads_read_without_allocating():
    if not MICROPYTHON:
        skip("heap_lock only catches allocations on MicroPython")
    s = _scenario(noise_lsb=1.0, phases=[{"irms": 10.0, "cycle_pattern": [1, 0], "steps": [[0.01, {"irms": 20.0}]]},
                                          {"irms": 10.0, "cycle_pattern": {"random": 0.5, "seed": 2}}])
    srcs = mains.connect(world, s)
    a, b = srcs[I_GPIO[0]], srcs[I_GPIO[1]]
    t = mains.run_origin_us(world, s)
    total = 0
    micropython.heap_lock()
    try:
        for _ in range(5000):
            total += a.raw_at(t) + b.raw_at(t)
            t += 35
    finally:
        micropython.heap_unlock()
    assert total > 0


def test_defaults_are_filled_in():
    s = mains.load_scenario({})
    assert s["model"] == "home" and s["frequency_hz"] == 50.0 and s["wiring"] == "three-phase"
    assert len(s["phases"]) == 3 and s["phases"][1]["vrms"] == 230.0 and s["phases"][1]["ct_phase"] == 2
    assert s["phases"][2]["ct_connected"] and s["phases"][2]["voltage_connected"] and s["meter"] == {}
    one = mains.load_scenario({"phases": [{"irms": 5.0}]})
    assert one["phases"][0]["irms"] == 5.0 and one["phases"][1]["irms"] == 0.0
    assert mains.load_scenario(s) == s  # a loaded scenario loads to itself


def test_bad_scenarios_are_refused_with_the_key_and_rule():
    cases = (
        ({"modle": "home"}, "unknown key 'modle'"),
        ({"model": "factory"}, "scenario.model: must be one of"),
        ({"frequency_hz": 500}, "scenario.frequency_hz: must be a number from 40 to 70"),
        ({"frequency_hz": "50"}, "scenario.frequency_hz"),
        ({"wiring": "delta"}, "scenario.wiring"),
        ({"noise_lsb": -1}, "scenario.noise_lsb"),
        ({"seed": 1.5}, "scenario.seed: must be a whole number"),
        ({"phases": []}, "scenario.phases: must be a list of 1 to 3"),
        ({"phases": [{}, {}, {}, {}]}, "scenario.phases"),
        ({"phases": [{"irms": -2}]}, "scenario.phases[0].irms: must be a number from 0"),
        ({"phases": [{}, {"vrms": True}]}, "scenario.phases[1].vrms"),
        ({"phases": [{}, {}, {"ct_phase": 4}]}, "scenario.phases[2].ct_phase"),
        ({"phases": [{"ct_reversed": "yes"}]}, "scenario.phases[0].ct_reversed: must be true or false"),
        ({"phases": [{"i_harmonics": [[1, 0.1, 0]]}]}, "scenario.phases[0].i_harmonics[0] order"),
        ({"phases": [{"i_harmonics": [[3, 0.1]]}]}, "scenario.phases[0].i_harmonics[0]: must be [order"),
        ({"phases": [{"v_harmonics": [[3, 1.5, 0]]}]}, "scenario.phases[0].v_harmonics[0] amplitude"),
        ({"phases": [{"v_harmonics": [[3, 0.1, 0], [3, 0.1, 0]]}]}, "harmonic 3 is given twice"),
        ({"phases": [{"irms": 1, "ctphase": 2}]}, "scenario.phases[0]: unknown key 'ctphase'"),
        ({"meter": "fast"}, "scenario.meter: must be an object"),
        ({"phases": [{"cycle_pattern": [1, 2]}]}, "scenario.phases[0].cycle_pattern[1]: must be 1 (on) or 0"),
        ({"phases": [{"cycle_pattern": []}]}, "scenario.phases[0].cycle_pattern: must be a list of 1 to"),
        ({"phases": [{"cycle_pattern": {"random": 1.5}}]}, "scenario.phases[0].cycle_pattern.random"),
        ({"phases": [{"cycle_pattern": {"seed": 2}}]}, "a random pattern needs"),
        ({"phases": [{"cycle_pattern": {"random": 0.5, "sed": 2}}]}, "unknown key 'sed'"),
        ({"phases": [{"steps": [[1, {"irms": 3}], [1, {"irms": 4}]]}]}, "scenario.phases[0].steps[1] t_s: steps"),
        ({"phases": [{"steps": [[1, {"vrms": 3}]]}]}, "scenario.phases[0].steps[0]: unknown key 'vrms'"),
        ({"phases": [{"steps": [[1, {"irms": -3}]]}]}, "scenario.phases[0].steps[0].irms"),
        ({"phases": [{"steps": [5]}]}, "scenario.phases[0].steps[0]: must be [t_s"),
        ({"adc_read_us": 0}, "scenario.adc_read_us"),
        ({"front_end": {"current": [{"burden": 10}]}}, "scenario.front_end"),
        ([], "scenario: must be an object"),
    )
    for given, words in cases:
        with raises(mains.ScenarioError, match=words):
            mains.load_scenario(given)

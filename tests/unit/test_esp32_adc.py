# A real ESP32 ADC in the simulator (tools/sim/mains.py: ESP-IDF's 11 dB curve, noise, spikes, the
# shared bias of the first front end) and what the firmware does about it (firmware/sampler.py:
# the chip's line from read_uv(), spike removal, the noise in each burst).
import math
from array import array

from firmware.board import Board
from firmware.sampler import OK, Sampler, _despike, chip_line
from simworld import world
from tools.sim import mains

PHASES = [{"vrms": 230.0, "irms": 20.0, "phase_deg": 20.0} for _ in range(3)]


def _connect(adc=None, phases=None, **top):
    s = {"adc": {} if adc is None else adc, "phases": phases or PHASES}
    s.update(top)
    return mains.connect(world, mains.load_scenario(s))


def test_the_chip_curve_is_esp_idfs_and_the_port_reads_it_in_whole_mv():
    # ESP-IDF's line at Vref 1100 mV: 0.806 mV a code from 142 mV; its table from raw 2880 up.
    assert abs(mains.idf_mv(1000, 1100) - (1000 * 1100 * 196602 / 4096 / 65536 + 142)) < 1e-9
    for vref in (1000, 1100, 1200):
        for raw in (1, 500, 1437, 2879, 2880, 2900, 2944, 2945, 3500, 4095):
            uv = mains.efuse_uv(raw, vref)
            assert uv % 1000 == 0  # the port returns whole mV * 1000
            assert abs(uv / 1000 - mains.idf_mv(raw, vref)) <= 1.0, (vref, raw)
    # The curve rises everywhere, and the table joins the line without a step.
    for vref in (1000, 1100, 1200):
        mv = [mains.idf_mv(r, vref) for r in range(0, 4096, 8)]
        assert all(b > a for a, b in zip(mv, mv[1:]))
    # The eFuse holds Vref in 7 mV steps from 1100 mV.
    assert mains.efuse_vref_mv(1100) == 1100 and mains.efuse_vref_mv(1003) == 1002
    assert mains.efuse_vref_mv(1200) == 1198


def test_a_chip_reads_the_bias_where_its_vref_puts_it():
    # 1.30 V reads near 1440 at Vref 1100 mV, roughly 1320-1580 across chips (not the 1717 of 3.1 V full scale).
    for vref, want in ((1000, 1581), (1100, 1437), (1200, 1318)):
        conv = mains.Converter(dict(mains.ADC_DEFAULTS, vref_mv=vref))
        assert abs(conv.raw(1300.0) - want) < 1.5, (vref, conv.raw(1300.0))
        for raw in (0.5, 700.0, 2879.0, 2920.0, 3300.0, 4000.0):  # raw() undoes mv(), the table included
            assert abs(conv.raw(conv.mv(raw)) - raw) < 0.01
    # Below the line's offset the converter reads 0.
    assert mains.Converter(mains.ADC_DEFAULTS).raw(100.0) < 0
    srcs = _connect({"noise_lsb": 0.0, "spikes_per_s": 0.0}, [{"vrms": 0.0} for _ in range(3)])
    assert abs(srcs[36].raw_at(world.now_us()) - 1437) <= 1
    assert srcs[35].raw_at(world.now_us()) == 1437 or abs(srcs[35].raw_at(world.now_us()) - 1437) <= 1


def test_the_ideal_converter_is_still_there():
    srcs = _connect("ideal", [{"vrms": 0.0} for _ in range(3)], noise_lsb=0.0)
    assert srcs[36].raw_at(world.now_us()) == 1717
    assert world.adc_uv is None


def test_read_uv_is_the_efuse_line_of_the_scenarios_chip():
    _connect({"vref_mv": 1050, "noise_lsb": 0.0, "spikes_per_s": 0.0})
    adc = Board().adc_pairs[0][0]
    for _ in range(50):
        uv = adc.read_uv()
        raw = adc.read_u16() >> 4  # (the next conversion: the waveform moved on by 35 us)
        assert abs(uv / 1000 - mains.idf_mv(raw, mains.efuse_vref_mv(1050))) < 15


def test_noise_and_spikes_have_the_rates_asked_for():
    nz = mains.noise(4.0, mains._XorShift(3), mains.NOISE_LEN, 0.01)
    big = [x for x in nz if abs(x) >= mains.SPIKE_CODES[0] * mains.SUB]
    assert 70 <= len(big) <= 130  # 1 % of 10,007 entries
    small = [x / mains.SUB for x in nz if abs(x) < mains.SPIKE_CODES[0] * mains.SUB]
    sigma = math.sqrt(sum(x * x for x in small) / len(small))
    assert 3.8 < sigma < 4.2
    assert not [x for x in mains.noise(4.0, mains._XorShift(3)) if abs(x) >= 40 * mains.SUB]
    s = mains.load_scenario({"adc": {"spikes_per_s": 20.0, "read_us": 35}})
    assert abs(mains.noise_of(s)[1] - 20 * 70e-6) < 1e-12  # per read: one read of an input per 70 us pair


def test_the_shared_bias_puts_the_dividers_currents_on_every_input():
    one = [{"vrms": 230.0}, {"vrms": 0.0, "voltage_connected": False}, {"vrms": 0.0, "voltage_connected": False}]
    ripple = mains.bias_ripple(mains.load_scenario({"adc": {}, "front_end": {"bias": "shared"}, "phases": one}))
    # 230 V / 501 kΩ into 6 kΩ ∥ 10.1 µF: ~146 mV RMS, ~190 codes RMS of the ideal converter
    (order, peak, _), = ripple
    assert order == 1 and abs(peak / math.sqrt(2) * mains.IDEAL_MV_PER_CODE - 145) < 5
    balanced = mains.bias_ripple(mains.load_scenario({"adc": {}, "front_end": {"bias": "shared"}}))
    assert all(p < 0.01 for _, p, _ in balanced)  # balanced phases cancel
    comps = mains.pin_components(mains.load_scenario({"front_end": {"bias": "shared"}, "phases": one}))
    assert ripple[0] in comps[35][1]  # an idle CT input carries the ripple
    assert comps[33][1] is not None and comps[32][1] is not None
    plain = mains.pin_components(mains.load_scenario({"phases": one}))
    assert plain[35][1] == [] or plain[35][1] is None or all(a == 0 for _, a, _ in plain[35][1])
    try:
        mains.load_scenario({"front_end": {"bias": "split"}})
        raise AssertionError("an unknown bias circuit was taken")
    except mains.ScenarioError as e:
        assert "front_end.bias" in str(e)


def test_noise_given_twice_is_refused():
    try:
        mains.load_scenario({"adc": {}, "noise_lsb": 2.0})
        raise AssertionError("noise_lsb outside adc was taken")
    except mains.ScenarioError as e:
        assert "scenario.adc" in str(e)


def test_the_firmware_reads_the_chips_line_off_its_voltage_inputs():
    for vref in (1000, 1100, 1200):
        _connect({"vref_mv": vref})
        board = Board()
        slope, offset = chip_line([a[0] for a in board.adc_pairs])
        efuse = mains.efuse_vref_mv(vref)
        want = efuse * 196602 // 4096 / 65536  # ESP-IDF's coeff_a, as an mV-per-code slope
        assert abs(slope / want - 1) < 0.002, (vref, slope, want)
        assert abs(offset - 142) < 3
    # At 20 V the inputs swing ~140 codes: enough, with more reads. The codes' own noise would
    # flatten a plain least-squares slope by noise²/spread² (-0.9 % at 8 codes of noise): corrected.
    for sigma in (4, 8):
        _connect({"noise_lsb": sigma, "spikes_per_s": 0}, [{"vrms": 20.0} for _ in range(3)])
        slope, _ = chip_line([a[0] for a in Board().adc_pairs])
        assert abs(slope / (1100 * 196602 // 4096 / 65536) - 1) < 0.002, (sigma, slope)
    # Quiet inputs (no mains) show no slope, and an ADC without read_uv (a replay) has no line.
    _connect({}, [{"vrms": 0.0} for _ in range(3)])
    assert chip_line([a[0] for a in Board().adc_pairs]) is None

    class Replay:
        def read_u16(self):
            return 1717 << 4

    assert chip_line([Replay()]) is None


def _pairs(v, i):
    buf = array("H", bytes(4 * len(v)))
    for k in range(len(v)):
        buf[2 * k] = v[k]
        buf[2 * k + 1] = i[k]
    return buf


def test_despike_removes_single_read_spikes_and_leaves_steps_alone():
    # The steepest mains a burst sees: 390 V (±1,453 codes) at 60 Hz, read every 70 µs (238 pairs a
    # cycle), with 20 % of it in a 5th harmonic: up to ~46 codes from one read to the next.
    n = 400
    v = [1500 + int(1453 * (math.sin(2 * math.pi * k / 238) + 0.2 * math.sin(10 * math.pi * k / 238)) / 1.2)
         for k in range(n)]
    i = [1400] * 100 + [1900] * 300  # a step of 500 codes: not a spike
    v[50] += 300
    v[120] -= 250
    i[30] += 200
    buf = _pairs(v, i)
    noise = array("i", [0, 0])
    assert _despike(buf, n, 80, noise) == 3
    assert abs(buf[100] - (v[49] + v[51]) // 2) <= 1 and abs(buf[240] - (v[119] + v[121]) // 2) <= 1
    assert buf[61] == 1400
    assert buf[199] == 1400 and buf[201] == 1900  # the step's two sides are as they were
    assert noise[1] == 2 * 4096  # the step's two second differences, capped; nothing else
    assert noise[0] < 400 * 30  # the waveform's own curvature: a few codes² a read


def test_despike_measures_the_noise_in_a_burst():
    rng = mains._XorShift(9)
    n = 2000
    v, i = [], []
    for k in range(n):
        g = [math.sqrt(-2 * math.log(rng.uniform())) * math.cos(2 * math.pi * rng.uniform()) for _ in range(2)]
        v.append(int(round(1437 + 700 * math.sin(2 * math.pi * k / 285) + 4 * g[0])))
        i.append(int(round(1437 + 3 * g[1])))
    noise = array("i", [0, 0])
    _despike(_pairs(v, i), n, 80, noise)
    m = 6 * (n - 3)
    assert 14.0 < noise[0] / m < 18.5  # σ = 4 codes (rounding adds 1/12)
    assert 7.5 < noise[1] / m < 10.5  # σ = 3


def test_a_spike_is_never_taken_for_a_zero_crossing():
    # Every fifth read of a 20 V input is a spike up (far more than a chip has): each burst still
    # starts at a rising crossing and spans whole cycles.
    _connect({"noise_lsb": 1.0, "spikes_per_s": 0.0}, [{"vrms": 20.0, "irms": 5.0} for _ in range(3)])
    src = world.sources[36]
    spiky = array("h", bytes(2 * 1009))
    for k in range(0, 1009, 5):
        spiky[k] = 300 * mains.SUB
    src.noise = spiky
    src._k = 0
    board = Board()
    s = Sampler([a[0] for a in board.adc_pairs], [a[1] for a in board.adc_pairs], 2000)
    for _ in range(5):
        assert s.acquire(0, 0, 1437, 2, 40, 2000) == OK
        assert abs(s.burst.cycle_pairs - 2 * 1e6 / 50 / 70) <= 3

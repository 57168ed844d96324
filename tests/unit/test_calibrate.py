# An installer's calibration (firmware/calibrate.py) on a simulated board whose front end is off:
# the references in, the gains and the phase lead out, and the meter reads true afterwards.
from firmware import calibrate
from firmware.board import Board
from firmware.meter import Meter
from simworld import world
from support import raises
from tools.sim import mains

# A board whose L1 divider reads 3 % high, CT 2 reads 4 % low and CT 1 leads by 1° more than its profile
# says, on a real chip (Vref 1150 mV, its eFuse one step off).
FRONT_END = {"voltage": [{"adc_gain": 1.03}, {}, {}],
             "current": [{"phase_lead_deg": 2.5}, {"adc_gain": 0.96}, {}]}
PHASES = [{"vrms": 231.0, "irms": 12.0, "phase_deg": 0.0}, {"vrms": 229.0, "irms": 20.0, "phase_deg": 25.0},
          {"vrms": 230.0, "irms": 3.0, "phase_deg": 10.0}]


def _connect():
    mains.connect(world, mains.load_scenario({"adc": {"vref_mv": 1150, "efuse_vref_mv": 1157},
                                              "front_end": FRONT_END, "phases": PHASES}))


def _average(meter, seconds):
    avg = calibrate.Average()
    end = world.now_us() + int(seconds * 1_000_000)
    while world.now_us() < end:
        world.advance_us(1000)
        r = meter.poll()
        if r is not None:
            avg.add(r)
    return avg


def test_calibration_makes_the_meter_read_what_the_instruments_read():
    _connect()
    m = Meter(Board())
    m.start()
    _average(m, 2.0)  # settle
    before = _average(m, 4.0)
    assert abs(before.phase(0)[0] / 231.0 - 1) > 0.02  # 3 % high (less the eFuse's 0.6 %)
    assert abs(before.phase(1)[1] / 20.0 - 1) > 0.02
    cal, changes = calibrate.plan(m.settings, before, vrms=(231.0, 229.0, 230.0), ct=1, amps=12.0, resistive=True)
    assert [c[0] for c in changes] == ["voltage L1 adc_gain", "voltage L2 adc_gain", "voltage L3 adc_gain",
                                       "CT 1 adc_gain", "CT 1 phase_lead_deg"]
    assert abs(cal["current"][0]["phase_lead_deg"] - 2.5) < 0.15
    m.change_settings({"calibration": cal})
    cal2, _ = calibrate.plan(m.settings, before, ct=2, amps=20.0)
    assert cal2["voltage"][0] == cal["voltage"][0]  # the first step's gains are kept
    m.change_settings({"calibration": cal2})
    _average(m, 1.0)
    after = _average(m, 4.0)
    m.stop()
    for p, ph in enumerate(PHASES):
        vrms, irms, w, var = after.phase(p)
        assert abs(vrms / ph["vrms"] - 1) < 0.003, (p, vrms)
    assert abs(after.phase(0)[1] / 12.0 - 1) < 0.003
    assert abs(after.phase(1)[1] / 20.0 - 1) < 0.003
    assert abs(after.phase(0)[3]) < 0.004 * 231.0 * 12.0  # CT 1's resistive load: no reactive power left


def test_references_that_cannot_be_right_change_nothing():
    _connect()
    m = Meter(Board())
    m.start()
    avg = _average(m, 3.0)
    m.stop()
    with raises(ValueError, "more than 25 % apart"):
        calibrate.plan(m.settings, avg, vrms=(120.0, None, None))
    with raises(ValueError, "at least 5.0 A"):
        calibrate.plan(m.settings, avg, ct=3, amps=3.0)  # 3 % of a 100 A CT's range
    with raises(ValueError, "away from a resistive one"):
        calibrate.plan(m.settings, avg, ct=2, amps=20.0, resistive=True)  # PF 0.9: not a kettle
    with raises(ValueError, "at least one reading"):
        calibrate.plan(m.settings, avg)
    with raises(ValueError, "No readings yet"):
        calibrate.plan(m.settings, calibrate.Average(), vrms=(230.0, None, None))
    assert m.settings["calibration"] == {}

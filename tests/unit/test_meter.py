# The meter as a whole on simulated mains: readings per window, frequency changes, single-phase, fixes.
from firmware import config
from firmware.board import Board
from firmware.meter import Meter
from simworld import world
from tools.sim import mains


def _connect(hz=50.0, **top):
    s = {"frequency_hz": hz, "noise_lsb": 1.0,
         "phases": [{"vrms": 230.0, "irms": 10.0, "phase_deg": 20.0} for _ in range(3)]}
    s.update(top)
    mains.connect(world, mains.load_scenario(s))


def _run(meter, seconds):
    readings = []
    end = world.now_us() + int(seconds * 1_000_000)
    while world.now_us() < end:
        world.advance_us(1000)
        r = meter.poll()
        if r is not None:
            readings.append(r)
    return readings


def test_windows_of_readings_follow_the_mains():
    _connect(50.0)
    m = Meter(Board())
    m.start()
    rs = _run(m, 3.05)
    m.stop()
    assert len(rs) == 3  # one per window_ms
    # Not even the first window reports a phase that was not measured yet as 0 V.
    assert all(ph["vrms"] > 200 for r in rs for ph in r["phases"])
    last = rs[-1]
    assert abs(last["frequency_hz"] - 50.0) < 0.02
    for ph in last["phases"]:
        assert abs(ph["vrms"] - 230.0) < 1.0 and abs(ph["irms"] - 10.0) < 0.05
        assert ph["direction"] == "import" and not ph["voltage_derived"]
    assert last["wiring"] == "three-phase" and last["diagnostics"] == []


def test_a_longer_cycle_than_expected_is_not_taken_for_missing_voltage():
    _connect(61.0)
    m = Meter(Board())
    m.start()
    _run(m, 2.0)  # the meter has learnt ~229 pairs per cycle
    _connect(45.5)  # the frequency drops: cycles now hold ~314 pairs, more than the extra pairs allow
    rs = _run(m, 3.0)
    m.stop()
    last = rs[-1]
    assert abs(last["frequency_hz"] - 45.5) < 0.02
    assert [d["code"] for d in last["diagnostics"]] == ["frequency_out_of_range"]
    assert all(not ph["voltage_derived"] for ph in last["phases"])


def test_single_phase_wiring_is_detected_and_said():
    _connect(50.0, wiring="single-phase")
    m = Meter(Board())  # wiring "auto"
    m.start()
    rs = _run(m, 4.0)
    m.stop()
    last = rs[-1]
    assert last["wiring"] == "single-phase"
    assert [ph["voltage_derived"] for ph in last["phases"]] == [False, True, True]
    for ph in last["phases"]:
        assert abs(ph["real_power_w"] - 230.0 * 10.0 * 0.9397) < 15.0  # cos 20 degrees
    assert last["diagnostics"] == []


def test_applying_a_diagnostic_fix_corrects_the_readings():
    s = {"noise_lsb": 1.0, "phases": [{"vrms": 230.0, "irms": 10.0, "phase_deg": 10.0} for _ in range(3)]}
    s["phases"][1]["ct_reversed"] = True
    mains.connect(world, mains.load_scenario(s))
    m = Meter(Board())
    m.start()
    last = _run(m, 2.0)[-1]
    diag = [d for d in last["diagnostics"] if d["code"] == "ct_reversed"]
    assert len(diag) == 1 and diag[0]["phase"] == 2
    assert last["phases"][1]["real_power_w"] < 0
    world.advance_us(400_000)  # mid-window
    m.change_settings(diag[0]["fix"])  # what the setup page's one-tap fix does to the running meter
    assert m.readings["diagnostics"] == [] and m.readings["judged"] is False  # the old judgement is withdrawn
    rs = _run(m, 2.0)
    m.stop()
    # The window that straddles the change mixes bursts of both settings: it is not judged.
    assert rs[0]["judged"] is False and rs[0]["diagnostics"] == []
    last = rs[-1]
    assert last["judged"] is True
    assert last["phases"][1]["real_power_w"] > 2000
    assert last["diagnostics"] == []


def test_after_a_settings_change_each_phase_is_judged_only_once_measured_wholly_with_the_new_settings():
    s = {"noise_lsb": 1.0, "phases": [{"vrms": 230.0, "irms": 10.0, "phase_deg": 10.0} for _ in range(3)]}
    s["phases"][0]["ct_reversed"] = True
    mains.connect(world, mains.load_scenario(s))
    # 1-2 bursts a window: 1-2 of 3 phases
    m = Meter(Board(), config.section("meter", {"window_ms": 250, "burst_period_ms": 200}))
    m.start()
    assert any(d["code"] == "ct_reversed" for d in _run(m, 2.0)[-1]["diagnostics"])
    m.change_settings({"ct_reversed": [True, False, False]})
    rs = _run(m, 2.0)
    m.stop()
    first_judged = [r["judged"] for r in rs].index(True)
    assert first_judged >= 2  # the straddling window, then until every phase had a window of its own
    assert all(r["diagnostics"] == [] for r in rs)  # never a diagnostic of the old settings, nor a mixed one
    assert all(r["judged"] for r in rs[first_judged:])


def test_a_burst_without_enough_pairs_for_its_shifts_is_skipped_not_misread():
    from firmware.meter import SHORT
    from firmware.sampler import OK

    _connect(50.0)
    m = Meter(Board())
    m._pairs_per_cycle_q10 = 100 << 10  # as if the last burst had seen a far shorter cycle
    assert m._reduce(0, 0, 0) == SHORT  # a quarter cycle of 286 pairs is past the 29 extra pairs taken
    assert m._reduce(0, 0, 0) == OK  # the burst itself taught the meter the real cycle length
    m._pairs_per_cycle_q10 = 100 << 10
    m.measure_next()
    assert m._v_own == [True, True, True]  # a short burst says nothing about the voltage


def test_noise_on_unwired_voltage_inputs_is_not_mains():
    # An L1-only site whose L2/L3 voltage inputs pick up 10 LSB of noise (common on an ESP32 board):
    # noise "crosses zero" all the time, but never in mains-length cycles.
    _connect(50.0, wiring="single-phase", noise_lsb=10.0)
    m = Meter(Board())  # wiring "auto"
    m.start()
    last = _run(m, 5.0)[-1]
    m.stop()
    assert last["wiring"] == "single-phase"
    assert abs(last["frequency_hz"] - 50.0) < 0.05
    for ph in last["phases"]:
        assert abs(ph["real_power_w"] - 230.0 * 10.0 * 0.9397) < 40.0
    assert last["diagnostics"] == []


def test_any_calibrated_bias_fits_the_result_arrays():
    # adc_offset far from mid-scale makes blocks small (128 pairs at 0): the arrays must still fit.
    _connect(50.0)
    cal = {"current": [{"adc_offset": 0}, {"adc_offset": 4095}, {}]}
    m = Meter(Board(), config.section("meter", {"calibration": cal, "burst_cycles": 3, "burst_period_ms": 200}))
    for _ in range(6):
        m.measure_next()  # raised IndexError (after writing past the arrays) before the fix
    assert m.close_window()["phases"][2]["irms"] > 9.0


def test_a_failing_window_does_not_stop_the_meter():
    _connect(50.0)
    m = Meter(Board())
    seen = []

    def on_readings(r):
        seen.append(r)
        if len(seen) == 1:
            raise ValueError("a consumer of the readings broke")

    m.start()
    end = world.now_us() + 2_500_000
    while world.now_us() < end:
        world.advance_us(1000)
        m.step(on_readings)  # what run() does each time the timer wakes it
    m.stop()
    assert m.errors == 1 and len(seen) == 2


def test_readings_carry_the_exact_integer_energy_counters():
    _connect(50.0)
    m = Meter(Board())
    m.start()
    last = _run(m, 2.0)[-1]
    m.stop()
    e = last["energy_mwh"]
    assert all(isinstance(x, int) for x in e["import_mwh"]) and e["import_mwh"][0] > 0
    assert e["import_mwh"][0] == round(last["phases"][0]["import_wh"] * 1000)


def test_the_first_window_waits_for_every_phase():
    # Three phases at one burst per 400 ms take longer than the 1 s window to measure once each.
    _connect(50.0)
    m = Meter(Board(), config.section("meter", {"burst_period_ms": 400}))
    m.start()
    rs = _run(m, 2.5)
    m.stop()
    assert rs and all(ph["vrms"] > 200 for ph in rs[0]["phases"])


def test_the_live_current_follows_a_step_within_two_windows():
    # What the load balancer sees when an EV charger steps from 10 A to 30 A: the window the step
    # falls in is mixed; the next one at the latest reads the new current.
    s = mains.load_scenario({"noise_lsb": 1.0, "phases": [{"irms": 10.0, "steps": [[2.5, {"irms": 30.0}]]}
                                                          for _ in range(3)]})
    mains.connect(world, s)
    world.advance_us(mains.run_origin_us(world, s) - world.now_us())  # the run's time 0: steps count from it
    t0 = world.now_us()
    m = Meter(Board())
    m.start()
    rs = []  # (simulated seconds when the window closed, readings)
    while world.now_us() - t0 < 5_000_000:
        world.advance_us(1000)
        r = m.poll()
        if r is not None:
            rs.append(((world.now_us() - t0) / 1e6, r))
    m.stop()
    k = [n for n, (t, _) in enumerate(rs) if t > 2.5][0]  # the window the step falls in
    amps = [[round(ph["irms"], 2) for ph in r["phases"]] for _, r in rs]
    assert all(abs(a - 10.0) < 0.2 for a in amps[k - 1]), amps
    assert all(abs(a - 30.0) < 0.6 for a in amps[k + 1]), amps  # the second window: all of it new
    assert all(all(abs(a - 30.0) < 0.6 for a in w) for w in amps[k + 1:]), amps

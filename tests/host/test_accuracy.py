# Accuracy of the whole measurement chain on the real MicroPython, against the analytic ground truth.
#
# Each case is a scenario run by `tools.sim run` (firmware under the unix port, simulated front end
# with quantisation and 1 LSB of noise); tools/sim/truth.py computes what an ideal meter reads from
# the scenario itself. Targets (issue 3): Vrms and Irms within 0.5 % from 5 % to 100 % of range;
# real power within 0.5 % at |PF| >= 0.5; PF within +-0.01; frequency within +-0.02 Hz; energy within
# 0.5 % over 60 s; every injected wiring fault named on the right phase, none on a correct meter.
# All cases run up front, two at a time (one per core).

import pytest

from tools.sim import runner, truth
from tools.sim.accuracy import CASES, FAULTS, run_all

_results = {}


def _run_all():
    if not _results:
        _results.update(run_all())


def _get(name):
    _run_all()
    scenario, seconds = CASES[name]
    return _results[name], truth.expected(scenario, seconds)


def _rel(got, want):
    return abs(got - want) / abs(want)


def _check_phases(name, v_pct=0.5, i_pct=0.5, p_pct=0.5, as_wired=False):
    rep, want = _get(name)
    ref = want["as_wired"]["phases"] if as_wired else want["phases"]
    for k in range(3):
        got, exp = rep["phases"][k], ref[k]
        assert _rel(got["vrms"], exp["vrms"]) * 100 <= v_pct, (name, k, got["vrms"], exp["vrms"])
        assert _rel(got["irms"], exp["irms"]) * 100 <= i_pct, (name, k, got["irms"], exp["irms"])
        if abs(exp["power_factor"]) >= 0.5:
            assert _rel(got["real_power_w"], exp["real_power_w"]) * 100 <= p_pct, (
                name, k, got["real_power_w"], exp["real_power_w"])
        assert abs(got["power_factor"] - exp["power_factor"]) <= 0.01, (name, k, got["power_factor"],
                                                                        exp["power_factor"])
    return rep, want


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("pf-")])
def test_power_and_power_factor_lagging_leading_and_export(name):
    rep, want = _check_phases(name)
    assert abs(rep["frequency_hz"] - want["frequency_hz"]) <= 0.02
    generation = CASES[name][0]["meter"]["generation"]
    if generation and abs(want["phases"][0]["power_factor"]) < 0.6:
        # Balanced export at PF 0.5 looks exactly like rotated CTs exporting at PF 1: a site with
        # generation cannot tell them apart (docs/MEASUREMENT.md, "Wiring diagnostics"). Nothing to assert here.
        return
    assert [d["code"] for d in rep["diagnostics"]] == []  # correctly wired (export declared as generation)


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("range-")])
def test_current_across_the_ct_range(name):
    pct = int(name.rsplit("-", 1)[1])
    if pct < 5:
        # Below the 5 % target range: still sensible, within 2 %.
        _check_phases(name, i_pct=2.0, p_pct=2.0)
    else:
        _check_phases(name)


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith(("volts-", "distorted", "unbalanced"))])
def test_voltage_range_distortion_and_unbalance(name):
    rep, want = _check_phases(name)
    assert abs(rep["frequency_hz"] - want["frequency_hz"]) <= 0.02, (rep["frequency_hz"], want["frequency_hz"])


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("freq-")])
def test_frequency_off_nominal(name):
    rep, want = _check_phases(name)
    assert abs(rep["frequency_hz"] - want["frequency_hz"]) <= 0.02, (rep["frequency_hz"], want["frequency_hz"])


@pytest.mark.parametrize("name", ["single-phase", "single-phase-60hz-export"])
def test_single_phase_wiring_derives_l2_l3_from_l1(name):
    rep, want = _check_phases(name, as_wired=True)
    assert rep["wiring"] == "single-phase"
    assert rep["diagnostics"] == []


@pytest.mark.parametrize("name", ["energy-import", "energy-mixed"])
def test_energy_over_60_s(name):
    rep, want = _get(name)
    for k in range(3):
        for key in ("import_wh", "export_wh"):
            exp = want["phases"][k][key]
            got = rep["phases"][k][key]
            if exp == 0:
                assert got == 0, (name, k, key, got)
            else:
                assert _rel(got, exp) <= 0.005, (name, k, key, got, exp)
    for key in ("import_wh", "export_wh", "net_import_wh", "net_export_wh"):
        exp = want["total"][key]
        got = rep["total"][key]
        assert (got == 0) if exp == 0 else _rel(got, exp) <= 0.005, (name, key, got, exp)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_wiring_fault_is_named_on_its_phase(name):
    rep, want = _get("fault-" + name)
    got = sorted((d["code"], d["phase"]) for d in rep["diagnostics"])
    expected = [(f["fault"], f["phase"]) for f in want["wiring_faults"]]
    if abs(want["frequency_hz"] - 50) > 2.5 and abs(want["frequency_hz"] - 60) > 3:
        expected.append(("frequency_out_of_range", None))
    assert got == sorted(expected, key=lambda x: (x[0], x[1] or 0)), name
    for d in rep["diagnostics"]:
        assert d["message"] and "L%d" % d["phase"] in d["message"] if d["phase"] else d["message"]


# A real ESP32 ADC (issue 17): ESP-IDF's 11 dB curve for chips from Vref 1000 to 1200 mV, 4 codes of
# noise and WiFi spikes, measured with the chip's eFuse line alone (before an installer calibrates):
# within 2 %. The zero crossings are found at each input's measured bias, so 20 V is measured on
# any chip, frequency too (from one burst's crossing to the next's, docs/MEASUREMENT.md).
@pytest.mark.parametrize("name", sorted(n for n in CASES if n.startswith("chip-")))
def test_a_real_chip_before_calibration(name):
    rep, want = _check_phases(name, v_pct=2.0, i_pct=2.0, p_pct=2.0)
    assert abs(rep["frequency_hz"] - want["frequency_hz"]) <= 0.02, (rep["frequency_hz"], want["frequency_hz"])
    assert rep["diagnostics"] == []


def test_frequency_over_a_minute_at_20_v_counts_every_cycle():
    # ~1,800 frequencies from burst to burst, each of whose whole cycles must be counted right: one
    # miscount is 3 Hz off for its pair, and a few made this minute read 0.037 Hz high. (A board whose
    # front end is 2-4 % off: the frequency does not care, the other readings are not checked here.)
    front_end = {"voltage": [{"adc_gain": 1.03}, {"adc_gain": 0.98}, {}],
                 "current": [{"adc_gain": 0.96}, {"adc_gain": 1.04}, {}]}
    scenario = {"adc": {"vref_mv": 1000}, "front_end": front_end,
                "phases": [{"vrms": 20.0, "irms": 5.0} for _ in range(3)]}
    rep, _ = runner.simulate(scenario, 60.0)
    assert abs(rep["frequency_hz"] - 50.0) <= 0.005, rep["frequency_hz"]


def test_an_empty_ct_reads_no_current_beside_any_voltages():
    # The buffered bias of docs/HARDWARE.md: at most 0.1 % of the CT's range with no current in it,
    # whatever the voltages; the shared bias of the first design read tens of amps there.
    for label in ("one-phase", "unbalanced"):
        rep, _ = _get("crosstalk-buffered-" + label)
        assert max(p["irms"] for p in rep["phases"]) <= 0.1, (label, rep["phases"])
    shared, _ = _get("crosstalk-shared-one-phase")
    assert min(p["irms"] for p in shared["phases"]) > 20.0  # ~146 mV RMS of ripple: ~23 A on 100 A CTs
    shared, _ = _get("crosstalk-shared-unbalanced")
    assert min(p["irms"] for p in shared["phases"]) > 1.0

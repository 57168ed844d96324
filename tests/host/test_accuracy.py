# Accuracy of the whole measurement chain on the real MicroPython, against the analytic ground truth.
#
# Each case is a scenario run by `tools.sim run` (firmware under the unix port, simulated front end
# with quantisation and 1 LSB of noise); tools/sim/truth.py computes what an ideal meter reads from
# the scenario itself. Targets (issue 3): Vrms and Irms within 0.5 % from 5 % to 100 % of range;
# real power within 0.5 % at |PF| >= 0.5; PF within +-0.01; frequency within +-0.02 Hz; energy within
# 0.5 % over 60 s; every injected wiring fault named on the right phase, none on a correct meter.
# All cases run up front, two at a time (one per core).

import concurrent.futures

import pytest

from tools.sim import runner, truth

SECONDS = 6.0  # six windows: each phase gets ~20 bursts


def _three(vrms=230.0, irms=10.0, phase_deg=0.0, **extra):
    return [dict({"vrms": vrms, "irms": irms, "phase_deg": phase_deg}, **extra) for _ in range(3)]


CASES = {}


def case(name, scenario, seconds=SECONDS):
    scenario.setdefault("noise_lsb", 1.0)
    CASES[name] = (scenario, seconds)


# Power factor and direction: lagging, leading, export (a site with solar), 50 and 60 Hz.
for hz in (50.0, 60.0):
    for deg in (0.0, 25.8, -25.8, 60.0, -60.0, 180.0, 150.0, -120.0):
        case("pf-%g-%ghz" % (deg, hz), {"frequency_hz": hz, "meter": {"generation": abs(deg) > 90},
                                        "phases": _three(230.0, 40.0, deg)})
# Current range 1-120 % of each model's CTs, sinusoidal, PF 0.9.
for model, full in (("home", 100.0), ("public", 400.0)):
    for pct in (1, 5, 10, 50, 100, 120):
        case("range-%s-%d" % (model, pct), {"model": model, "phases": _three(230.0, full * pct / 100, 25.8)})
# Voltage across the input's range (5 % of 390 V up to 390 V).
for volts in (20.0, 110.0, 230.0, 390.0):
    case("volts-%g" % volts, {"phases": _three(volts, 20.0, 10.0)})
# Distorted waveforms: a flat-topped voltage and rectifier-like currents.
case("distorted", {"phases": _three(230.0, 30.0, 20.0, v_harmonics=[[3, 0.03, 0.0], [5, 0.02, 180.0]],
                                    i_harmonics=[[3, 0.30, 10.0], [5, 0.15, 40.0], [7, 0.08, 0.0]])})
case("distorted-60hz-public", {"model": "public", "frequency_hz": 60.0,
                               "phases": _three(120.0, 200.0, -15.0, v_harmonics=[[5, 0.04, 0.0]],
                                                i_harmonics=[[3, 0.2, 0.0], [5, 0.1, 90.0]])})
# Unbalanced three-phase with mixed directions, and frequencies off nominal.
case("unbalanced", {"meter": {"generation": True}, "phases": [
    {"vrms": 228.0, "irms": 63.0, "phase_deg": 5.0}, {"vrms": 233.0, "irms": 12.0, "phase_deg": 180.0},
    {"vrms": 231.0, "irms": 2.0, "phase_deg": -70.0}]})
for hz in (47.6, 49.5, 50.5, 52.4, 59.2, 61.3):
    case("freq-%g" % hz, {"frequency_hz": hz, "phases": _three(230.0, 16.0, 20.0)})
# Single-phase wiring: only L1's voltage reaches the meter; L2/L3 power against L1 shifted.
case("single-phase", {"wiring": "single-phase", "phases": [
    {"vrms": 230.0, "irms": 30.0, "phase_deg": 10.0}, {"vrms": 230.0, "irms": 12.0, "phase_deg": 45.0},
    {"vrms": 230.0, "irms": 50.0, "phase_deg": -20.0}]})
case("single-phase-60hz-export", {"wiring": "single-phase", "frequency_hz": 60.0, "meter": {"generation": True},
                                  "phases": _three(120.0, 25.0, 170.0)})
# Energy over 60 s, import and a bidirectional site.
case("energy-import", {"phases": _three(230.0, 45.0, 25.8)}, 60.0)
case("energy-mixed", {"meter": {"generation": True}, "phases": [
    {"vrms": 230.0, "irms": 20.0, "phase_deg": 0.0}, {"vrms": 230.0, "irms": 30.0, "phase_deg": 180.0},
    {"vrms": 230.0, "irms": 5.0, "phase_deg": 30.0}]}, 60.0)

# Wiring faults, each on each phase, and in combination.
FAULTS = {}
for p in range(3):
    for fault, keys in (("ct_reversed", {"ct_reversed": True}), ("ct_unplugged", {"ct_connected": False}),
                        ("voltage_missing", {"voltage_connected": False})):
        phases = _three(230.0, 20.0, 20.0)
        phases[p].update(keys)
        FAULTS["%s-L%d" % (fault, p + 1)] = {"phases": phases}
for perm in ((2, 1, 3), (1, 3, 2), (3, 2, 1), (2, 3, 1), (3, 1, 2)):
    phases = _three(230.0, 20.0, 20.0)
    for c in range(3):
        phases[c]["ct_phase"] = perm[c]
    FAULTS["ct_wrong_phase-%d%d%d" % perm] = {"phases": phases}
FAULTS["reversed-and-swapped"] = {"phases": [
    {"vrms": 230.0, "irms": 20.0, "phase_deg": 15.0, "ct_phase": 2},
    {"vrms": 230.0, "irms": 25.0, "phase_deg": 10.0, "ct_phase": 1},
    {"vrms": 230.0, "irms": 15.0, "phase_deg": 5.0, "ct_reversed": True}]}
FAULTS["frequency-45hz"] = {"frequency_hz": 45.0, "phases": _three(230.0, 20.0, 20.0)}
FAULTS["frequency-64hz"] = {"frequency_hz": 64.0, "phases": _three(230.0, 20.0, 20.0)}
FAULTS["correct-low-pf-mix"] = {"phases": [
    {"vrms": 230.0, "irms": 20.0, "phase_deg": 60.0}, {"vrms": 230.0, "irms": 20.0, "phase_deg": -60.0},
    {"vrms": 230.0, "irms": 20.0, "phase_deg": 84.0}]}
FAULTS["correct-solar-export"] = {"meter": {"generation": True}, "phases": _three(230.0, 20.0, 178.0)}
FAULTS["correct-single-phase"] = {"wiring": "single-phase", "phases": _three(230.0, 20.0, 20.0)}
for name, sc in FAULTS.items():
    case("fault-" + name, sc)

_results = {}


def _run_all():
    if _results:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(runner.simulate, sc, secs) for name, (sc, secs) in CASES.items()}
        for name, fut in futures.items():
            _results[name] = fut.result()[0]


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
        # generation cannot tell them apart (README, wiring diagnostics). Nothing to assert here.
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
    _check_phases(name)


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

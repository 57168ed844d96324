# Wiring diagnostics judge CT direction and placement for the whole panel at once.
from firmware import config, diagnostics

IDENTITY = [1, 2, 3]


def _seen(load_deg, ct_conductor, reversed_=(False, False, False), mapping=IDENTITY):
    """The angle each CT's current lags the voltage it is paired with, for a given true wiring."""
    out = []
    for c in range(3):
        shift = 120 * (ct_conductor[c] - mapping[c]) + (180 if reversed_[c] else 0)
        out.append(load_deg[c] + shift)
    return out


def test_correct_wiring_is_never_fixed_even_at_low_power_factor():
    for loads in ((0, 0, 0), (30, 30, 30), (60, 60, 60), (-40, 10, 65), (70, 0, -30), (60, -60, 84)):
        assert diagnostics.best_placement(_seen(loads, [1, 2, 3]), IDENTITY, False) == (IDENTITY, [False] * 3)


def test_a_reversed_ct_is_found():
    for loads in ((0, 10, 20), (30, 30, 30), (-20, 5, 40)):
        angles = _seen(loads, [1, 2, 3], (False, True, False))
        assert diagnostics.best_placement(angles, IDENTITY, False) == (IDENTITY, [False, True, False])


def test_swapped_and_rotated_cts_are_found():
    for true in ([2, 1, 3], [1, 3, 2], [2, 3, 1], [3, 1, 2]):
        angles = _seen((20, 10, 25), true)
        assert diagnostics.best_placement(angles, IDENTITY, False) == (true, [False] * 3), true


def test_on_a_generation_site_export_is_not_a_reversed_ct():
    angles = _seen((180, 175, 0), [1, 2, 3])  # L1 and L2 export (solar), L3 imports
    assert diagnostics.best_placement(angles, IDENTITY, True) == (IDENTITY, [False] * 3)
    # ...but a CT on the wrong conductor is still found while exporting.
    angles = _seen((180, 180, 10), [2, 1, 3])
    assert diagnostics.best_placement(angles, IDENTITY, True)[0] == [2, 1, 3]


def test_cts_with_too_little_current_stay_as_configured():
    angles = _seen((0, 0, 0), [1, 2, 3], (False, True, False))
    angles[1] = None  # no load on L2: its direction cannot be judged
    assert diagnostics.best_placement(angles, IDENTITY, False) == (IDENTITY, [False] * 3)


def _phase(vrms=230.0, irms=10.0, p=2300.0, q=0.0, own=True, ct=0, code=2048):
    return {"vrms": vrms, "irms": irms, "real_power_w": p, "reactive_power_var": q, "voltage_own": own,
            "ct": ct, "ct_mean_code": code}


def test_evaluate_names_each_fault_on_its_phase_with_a_fix():
    s = config.section("meter")
    phases = [_phase(ct=0), _phase(p=-2300.0, ct=1), _phase(vrms=0.0, own=False, ct=2)]
    out = diagnostics.evaluate(phases, 50.0, s, 100.0, False)
    codes = sorted((d["code"], d["phase"]) for d in out)
    assert codes == [("ct_reversed", 2), ("voltage_missing", 3)]
    fix = [d for d in out if d["code"] == "ct_reversed"][0]["fix"]
    assert fix == {"ct_reversed": [False, True, False]}
    assert all(d["message"] for d in out)


def test_evaluate_frequency_unplugged_ct_and_quiet_single_phase():
    s = config.section("meter")
    phases = [_phase(ct=0), _phase(vrms=0.0, own=False, ct=1, code=3), _phase(vrms=0.0, own=False, ct=2)]
    out = diagnostics.evaluate(phases, 45.0, s, 100.0, True)  # single-phase: no voltage on L2/L3 is fine
    assert sorted((d["code"], d["phase"]) for d in out) == [("ct_unplugged", 2), ("frequency_out_of_range", None)]
    assert diagnostics.evaluate([_phase(ct=0), _phase(ct=1), _phase(ct=2)], 59.9, s, 100.0, False) == []

# The ground truth: hand-checked values for simple scenarios, and agreement with the sampled tables.
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "simboard"))

from tools import mpshim  # noqa: E402

mpshim.install()

import simworld  # noqa: E402
from firmware import profiles  # noqa: E402
from tools.sim import mains, truth  # noqa: E402


def _three(**phase):
    return [dict(phase) for _ in range(3)]


def test_resistive_load_with_harmonics_by_hand():
    # P = V1·I1 + V3·I3·cos(0) = 230·10 + 23·2; Vrms = 230·√(1 + 0.1²); Irms = 10·√(1 + 0.2²)
    t = truth.expected({"phases": _three(vrms=230.0, irms=10.0, v_harmonics=[[3, 0.1, 0.0]],
                                         i_harmonics=[[3, 0.2, 0.0], [5, 0.1, 0.0]])}, 3600.0)
    for ph in t["phases"]:
        assert ph["real_power_w"] == pytest.approx(2346.0)
        assert ph["vrms"] == pytest.approx(230.0 * math.sqrt(1.01))
        assert ph["irms"] == pytest.approx(10.0 * math.sqrt(1.05))
        assert ph["reactive_power_var"] == pytest.approx(0.0, abs=1e-9)
        assert ph["power_factor"] == pytest.approx(2346.0 / (230.0 * math.sqrt(1.01) * 10.0 * math.sqrt(1.05)))
        assert ph["import_wh"] == pytest.approx(2346.0) and ph["export_wh"] == 0.0
    assert t["total"]["real_power_w"] == pytest.approx(3 * 2346.0)
    assert t["total"]["net_import_wh"] == pytest.approx(3 * 2346.0)
    assert t["frequency_hz"] == 50.0 and t["wiring_faults"] == []


def test_lagging_load_and_export():
    t = truth.expected({"phases": [{"irms": 10.0, "phase_deg": 60.0}, {"irms": 10.0, "phase_deg": -60.0},
                                   {"irms": 20.0, "phase_deg": 180.0}]}, 1800.0)
    p1, p2, p3 = t["phases"]
    q = 2300.0 * math.sin(math.radians(60.0))  # V·I·sin φ: + lagging (inductive), − leading
    assert p1["real_power_w"] == pytest.approx(1150.0) and p1["reactive_power_var"] == pytest.approx(q)
    assert p2["real_power_w"] == pytest.approx(1150.0) and p2["reactive_power_var"] == pytest.approx(-q)
    assert p3["real_power_w"] == pytest.approx(-4600.0) and p3["power_factor"] == pytest.approx(-1.0)
    assert p3["export_wh"] == pytest.approx(2300.0) and p3["import_wh"] == 0.0
    total = t["total"]
    assert total["import_wh"] == pytest.approx(1150.0) and total["export_wh"] == pytest.approx(2300.0)
    assert total["net_export_wh"] == pytest.approx(1150.0) and total["net_import_wh"] == 0.0


def test_wiring_mistakes_change_what_the_meter_sees_not_the_physics():
    s = {"phases": [{"irms": 10.0, "ct_reversed": True}, {"irms": 10.0, "ct_phase": 3}, {"irms": 10.0}]}
    t = truth.expected(s)
    assert [ph["real_power_w"] for ph in t["phases"]] == pytest.approx([2300.0] * 3)
    wired = t["as_wired"]["phases"]
    assert wired[0]["real_power_w"] == pytest.approx(-2300.0)
    # CT2 clamps L3, whose current is 120° behind V2: P = V·I·cos(120°)
    assert wired[1]["real_power_w"] == pytest.approx(-1150.0)
    assert wired[2]["real_power_w"] == pytest.approx(2300.0)
    faults = {(f["phase"], f["fault"]) for f in t["wiring_faults"]}
    assert faults == {(1, "ct_reversed"), (2, "ct_wrong_phase")}


def test_single_phase_wiring_and_missing_inputs():
    s = {"wiring": "single-phase",
         "phases": [{"vrms": 230.0, "irms": 5.0}, {"vrms": 240.0, "irms": 5.0}, {"vrms": 230.0, "ct_connected": False}]}
    t = truth.expected(s)
    assert t["phases"][1]["vrms"] == pytest.approx(240.0)  # the conductor's own voltage
    wired = t["as_wired"]["phases"]
    assert wired[1]["vrms"] == pytest.approx(230.0)  # the meter can only derive it from L1
    assert wired[1]["real_power_w"] == pytest.approx(1150.0)
    assert wired[2]["irms"] == 0.0 and wired[2]["power_factor"] == 0.0
    faults = {(f["phase"], f["fault"]) for f in t["wiring_faults"]}
    assert faults == {(3, "ct_unplugged")}  # single-phase wiring is a way to wire, not a fault
    # A missing voltage wire: the meter derives L1 from L2 (delayed 2/3 period = L2 advanced 120°)
    t = truth.expected({"phases": [{"vrms": 230.0, "irms": 3.0, "phase_deg": 10.0, "voltage_connected": False},
                                   {"vrms": 235.0}, {"vrms": 225.0}]})
    w = t["as_wired"]["phases"][0]
    assert w["vrms"] == pytest.approx(235.0)
    assert w["real_power_w"] == pytest.approx(235.0 * 3.0 * math.cos(math.radians(10.0)))
    assert {"phase": 1, "fault": "voltage_missing"} in t["wiring_faults"]
    t = truth.expected({"wiring": "single-phase", "phases": [{"irms": 1.0, "voltage_connected": False}, {"irms": 2.0}]})
    assert [ph["vrms"] for ph in t["as_wired"]["phases"]] == [0.0, 0.0, 0.0]  # nothing to derive from


def test_truth_agrees_with_the_sampled_tables():
    # Two independent computations: the analytic phasors, and the mean of v·i over the synthesised
    # codes (CT lead set to 0 here so the tables line up without a correction).
    s = mains.load_scenario({
        "noise_lsb": 0.0, "model": "public",
        "front_end": {"current": [{"phase_lead_deg": 0.0}] * 3},
        "phases": [
            {"vrms": 231.0, "irms": 80.0, "phase_deg": 25.0, "v_harmonics": [[3, 0.03, 10.0], [5, 0.02, 0.0]],
             "i_harmonics": [[3, 0.3, 40.0], [5, 0.15, 0.0], [7, 0.1, 0.0]]},
            {"vrms": 228.0, "irms": 150.0, "phase_deg": 170.0, "i_harmonics": [[5, 0.1, 0.0]]},
            {"vrms": 235.0, "irms": 30.0, "phase_deg": -40.0, "ct_phase": 1, "ct_reversed": True},
        ]})
    world = simworld.World()
    srcs = mains.connect(world, s)
    vch, ich = profiles.channels("public")
    t = truth.expected(s)
    for k, (vg, ig) in enumerate(mains.ADC_GPIOS):
        vt, it = srcs[vg].codes(), srcs[ig].codes()
        n = len(vt)
        v = [(x - vch[k].bias) * vch[k].units_per_code for x in vt]
        i = [(x - ich[k].bias) * ich[k].units_per_code for x in it]
        p = sum(a * b for a, b in zip(v, i, strict=True)) / n
        vrms = math.sqrt(sum(a * a for a in v) / n)
        irms = math.sqrt(sum(b * b for b in i) / n)
        want = t["as_wired"]["phases"][k]
        assert vrms == pytest.approx(want["vrms"], rel=2e-4)
        assert irms == pytest.approx(want["irms"], rel=2e-4)
        assert p == pytest.approx(want["real_power_w"], rel=2e-4, abs=0.5)


def test_truth_integrates_switching_loads_as_the_simulated_codes_carry_them():
    # Energy from the codes the ADC pins carry (v·i summed every 10 µs over a run of 1.29 s, so the
    # last cycle is partial) against truth's cycle-by-cycle integral: a fixed pattern, a random one
    # with steps, and a step that returns to an earlier load (L3's CT clamps L2, reversed).
    s = mains.load_scenario({
        "noise_lsb": 0.0, "front_end": {"current": [{"phase_lead_deg": 0.0}] * 3},
        "phases": [
            {"irms": 20.0, "phase_deg": 20.0, "cycle_pattern": [1, 0, 0, 1, 1, 0, 0]},
            {"irms": 10.0, "cycle_pattern": {"random": 0.3, "seed": 9},
             "steps": [[0.3, {"irms": 30.0}], [0.71, {"phase_deg": 40.0}], [1.0, {"irms": 10.0, "phase_deg": 0.0}]]},
            {"irms": 5.0, "ct_phase": 2, "ct_reversed": True}]})
    world = simworld.World()
    srcs = mains.connect(world, s)
    t0 = mains.run_origin_us(world, s)
    duration_s = 1.29
    vch, ich = profiles.channels("home")
    t = truth.expected(s, duration_s)
    for k, (vg, ig) in enumerate(mains.ADC_GPIOS):
        energy_j = 0.0
        for n in range(int(duration_s * 1e5)):
            at = t0 + 10 * n
            v = (srcs[vg].raw_at(at) - vch[k].bias) * vch[k].units_per_code
            i = (srcs[ig].raw_at(at) - ich[k].bias) * ich[k].units_per_code
            energy_j += v * i * 1e-5
        want = t["as_wired"]["phases"][k]
        got_wh = energy_j / 3600.0
        assert got_wh == pytest.approx(want["import_wh"] - want["export_wh"], rel=2e-3, abs=2e-4), k
    # L1: on 3 cycles of every 7, over 64 full cycles and half of cycle 64 (64 % 7 = 1: off)
    on = sum(1 for c in range(64) if [1, 0, 0, 1, 1, 0, 0][c % 7]) + 0.5 * [1, 0, 0, 1, 1, 0, 0][64 % 7]
    p1 = 230.0 * 20.0 * math.cos(math.radians(20.0))
    assert t["phases"][0]["import_wh"] == pytest.approx(p1 * on * 0.02 / 3600.0)
    assert t["phases"][0]["real_power_w"] == pytest.approx(p1 * on * 0.02 / duration_s)
    assert t["phases"][0]["irms"] == pytest.approx(20.0 * math.sqrt(on * 0.02 / duration_s))
    # CT3 clamps L2 against V3: its power changes sign as L2's steps turn its current.
    assert t["as_wired"]["phases"][2]["export_wh"] > 0.01 and t["as_wired"]["phases"][2]["import_wh"] > 0.01


def test_a_random_pattern_is_on_for_its_share_of_cycles_and_follows_its_seed():
    on = [mains.cycle_on({"random": 0.05, "seed": 3}, k) for k in range(200_000)]
    assert abs(sum(on) / len(on) - 0.05) < 0.002
    assert on != [mains.cycle_on({"random": 0.05, "seed": 4}, k) for k in range(200_000)]
    assert all(mains.cycle_on({"random": 1.0, "seed": 3}, k) for k in range(1000))
    assert not any(mains.cycle_on({"random": 0.0, "seed": 3}, k) for k in range(1000))

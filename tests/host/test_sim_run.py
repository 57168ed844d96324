# `python -m tools.sim run`: the firmware's measurement chain on simulated mains, as a user runs it.
import json
import os
import subprocess
import sys
import time

import pytest

from tools import mp

ROOT = mp.ROOT
SCENARIOS = os.path.join(ROOT, "tools", "sim", "scenarios")
BALANCED = os.path.join(SCENARIOS, "three-phase-balanced.json")

REPORT_KEYS = {"frequency_hz", "wiring", "phases", "total", "diagnostics"}
PHASE_KEYS = {"vrms", "irms", "real_power_w", "apparent_power_va", "reactive_power_var", "power_factor",
              "import_wh", "export_wh"}
TOTAL_KEYS = {"real_power_w", "import_wh", "export_wh", "net_import_wh", "net_export_wh"}


def _sim(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tools.sim", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _check_shape(report):
    assert set(report) >= REPORT_KEYS
    assert report["wiring"] in ("three-phase", "single-phase")
    assert len(report["phases"]) == 3
    for ph in report["phases"]:
        assert set(ph) >= PHASE_KEYS
    assert set(report["total"]) >= TOTAL_KEYS
    for d in report["diagnostics"]:
        assert set(d) >= {"code", "phase", "message"}


def _truth(path, duration_s):
    from tools.sim import truth

    with open(path) as f:
        return truth.expected(json.load(f), duration_s)


def test_run_prints_one_json_report_and_60_simulated_s_take_far_less_wall_time():
    t0 = time.monotonic()
    r = _sim("run", "--scenario", BALANCED, "--duration", "60", "--report", "json")
    wall_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)  # the whole of stdout is one JSON object: chatter went to stderr
    assert r.stdout.strip().count("\n") == 0
    _check_shape(report)
    assert wall_s < 30.0, wall_s
    want = _truth(BALANCED, 60.0)
    assert report["frequency_hz"] == pytest.approx(want["frequency_hz"], abs=0.05)
    for got, exp in zip(report["phases"], want["phases"], strict=True):
        assert got["vrms"] == pytest.approx(exp["vrms"], rel=0.01)
        assert got["irms"] == pytest.approx(exp["irms"], rel=0.02)
        assert got["real_power_w"] == pytest.approx(exp["real_power_w"], rel=0.02)
        assert got["import_wh"] == pytest.approx(exp["import_wh"], rel=0.05)
        assert got["export_wh"] == pytest.approx(0.0, abs=0.05)


def test_cpython_runtime_runs_the_same_chain():
    r = _sim("run", "--scenario", os.path.join(SCENARIOS, "solar-export.json"), "--duration", "10",
             "--runtime", "cpython")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    _check_shape(report)
    want = _truth(os.path.join(SCENARIOS, "solar-export.json"), 10.0)
    assert report["total"]["real_power_w"] == pytest.approx(want["total"]["real_power_w"], rel=0.02)
    assert report["total"]["real_power_w"] < 0  # export


@pytest.mark.parametrize("name", ["reversed-ct", "swapped-cts", "wiring-faults", "single-phase"])
def test_wiring_mistakes_show_as_diagnostics_and_readings_match_the_truth_as_wired(name):
    path = os.path.join(SCENARIOS, name + ".json")
    r = _sim("run", "--scenario", path, "--duration", "10")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    want = _truth(path, 10.0)
    got_faults = {(d["code"], d["phase"]) for d in report["diagnostics"]}
    assert got_faults == {(f["fault"], f["phase"]) for f in want["wiring_faults"]}
    assert report["wiring"] == want["wiring"]
    for got, exp in zip(report["phases"], want["as_wired"]["phases"], strict=True):
        assert got["vrms"] == pytest.approx(exp["vrms"], rel=0.01, abs=1.0)
        assert got["irms"] == pytest.approx(exp["irms"], rel=0.02, abs=0.1)
        assert got["real_power_w"] == pytest.approx(exp["real_power_w"], rel=0.02, abs=5.0)


def test_state_dir_is_created_and_holds_the_firmware_files(tmp_path):
    state = tmp_path / "flash"
    r = _sim("run", "--scenario", BALANCED, "--duration", "5", "--state-dir", str(state), "--report", "text")
    assert r.returncode == 0, r.stderr
    assert state.is_dir()
    assert "L1" in r.stdout and "total" in r.stdout  # the text report is a table
    before = set(os.listdir(ROOT))
    r = _sim("run", "--scenario", BALANCED, "--duration", "5", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    assert set(os.listdir(ROOT)) == before  # the firmware wrote nothing into the repository


def test_energy_counters_persist_in_the_state_dir_across_runs_and_runtimes(tmp_path):
    state = str(tmp_path / "flash")
    totals = []
    for runtime in ("micropython", "micropython", "cpython"):
        r = _sim("run", "--scenario", BALANCED, "--duration", "5", "--state-dir", state, "--runtime", runtime)
        assert r.returncode == 0, r.stderr
        totals.append(json.loads(r.stdout)["total"]["import_wh"])
    # Each run adds its 5 s on top of what the flash already held, as a rebooted board does.
    assert totals[0] > 0
    assert totals[1] == pytest.approx(2 * totals[0], rel=0.002)
    assert totals[2] == pytest.approx(3 * totals[0], rel=0.002)


def test_a_state_dir_with_saved_settings_measures_with_them(tmp_path):
    # The meter settings in the state dir's config.json (as `tools.sim calibrate` saves an installer's
    # calibration there) are the device's own: `run` measures with them, the scenario's on top.
    from firmware import config

    state = tmp_path / "flash"
    state.mkdir()
    doc = config.defaults()
    doc["meter"]["calibration"] = {"voltage": [{"adc_gain": 1.1}, {}, {}]}
    (state / "config.json").write_text(json.dumps(config.validate(doc)))
    r = _sim("run", "--scenario", BALANCED, "--duration", "3", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    got = [p["vrms"] for p in json.loads(r.stdout)["phases"]]
    want = [p["vrms"] for p in _truth(BALANCED, 3)["phases"]]
    assert got[0] == pytest.approx(1.1 * want[0], rel=0.005)
    assert got[1:] == pytest.approx(want[1:], rel=0.005)
    (state / "config.json").write_text('{"meter": ')  # damaged: the device's defaults, and it says so
    r = _sim("run", "--scenario", BALANCED, "--duration", "3", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    assert "not valid JSON" in r.stderr
    assert json.loads(r.stdout)["phases"][0]["vrms"] == pytest.approx(want[0], rel=0.005)


def test_bad_scenario_files_fail_with_a_clear_message(tmp_path):
    bad_key = tmp_path / "typo.json"
    bad_key.write_text(json.dumps({"phases": [{"irms": 10.0, "ct_revresed": True}]}))
    bad_value = tmp_path / "range.json"
    bad_value.write_text(json.dumps({"frequency_hz": 400}))
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"model": "home",')
    cases = ((bad_key, "scenario.phases[0]: unknown key 'ct_revresed'"),
             (bad_value, "scenario.frequency_hz: must be a number from 40 to 70"),
             (not_json, "not valid JSON"),
             (tmp_path / "missing.json", "cannot read it"))
    for path, words in cases:
        r = _sim("run", "--scenario", str(path), "--duration", "1")
        assert r.returncode == 2
        assert r.stdout == ""
        assert str(path) in r.stderr and words in r.stderr, r.stderr
    r = _sim("run", "--scenario", BALANCED, "--duration", "0")
    assert r.returncode == 2 and "--duration" in r.stderr


def test_truth_command_prints_the_expected_readings():
    r = _sim("truth", "--scenario", os.path.join(SCENARIOS, "reversed-ct.json"), "--duration", "3600")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["phases"][1]["real_power_w"] > 0 > t["as_wired"]["phases"][1]["real_power_w"]
    assert {"phase": 2, "fault": "ct_reversed"} in t["wiring_faults"]


def test_example_scenarios_are_valid():
    from tools.sim import mains

    names = sorted(os.listdir(SCENARIOS))
    assert {"three-phase-balanced.json", "single-phase.json", "solar-export.json", "reversed-ct.json"} <= set(names)
    for name in names:
        with open(os.path.join(SCENARIOS, name)) as f:
            s = mains.load_scenario(json.load(f))
        assert s["description"], name

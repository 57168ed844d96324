# `python -m tools.sim run|device --board NAME`: each board profile measured on simulated mains, as a
# user runs it; a board with L1's voltage alone reports L2/L3 as derived, and its own Ethernet starts.
import json
import os
import subprocess
import sys

import pytest

from firmware import boards
from tools import mp

BALANCED = os.path.join(mp.ROOT, "tools", "sim", "scenarios", "three-phase-balanced.json")


def _sim(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tools.sim", *args], cwd=mp.ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name", boards.NAMES)
def test_run_measures_each_board_and_derives_what_it_cannot_measure(name):
    from tools.sim import truth

    r = _sim("run", "--scenario", BALANCED, "--duration", "10", "--board", name)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    one = len(boards.get(name)["voltage"]) == 1
    assert report["wiring"] == ("single-phase" if one else "three-phase")
    assert [ph["voltage_derived"] for ph in report["phases"]] == [False, one, one]
    with open(BALANCED) as f:
        want = truth.expected(json.load(f), 10.0)
    for got, exp in zip(report["phases"], want["phases"], strict=True):  # balanced: derived is exact
        assert got["vrms"] == pytest.approx(exp["vrms"], rel=0.01)
        assert got["real_power_w"] == pytest.approx(exp["real_power_w"], rel=0.02)


def test_an_unknown_board_is_refused_listing_the_profiles():
    r = _sim("run", "--scenario", BALANCED, "--duration", "1", "--board", "esp32-s3")
    assert r.returncode == 2
    for name in boards.NAMES:
        assert name in r.stderr, r.stderr


@pytest.mark.parametrize("name", ("wt32-eth01", "olimex-esp32-poe"))
def test_device_on_an_ethernet_board_starts_its_own_ethernet_and_measures(name, tmp_path):
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"version": 1, "lan": {"enabled": True}}, f)  # the board's Ethernet: its pins by default
    r = _sim("device", "--board", name, "--state-dir", str(tmp_path), "--duration", "5", "--port", "0",
             "--dns-port", "0", timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "meter: board %s" % name in out, out
    assert "Ethernet did not start" not in out and "Traceback" not in out, out
    assert "Hz single-phase" in out, out  # the console's readings: L2/L3 derived from L1


def test_device_whose_lan_settings_do_not_match_its_board_says_ethernet_did_not_start(tmp_path):
    with open(tmp_path / "config.json", "w") as f:  # the Olimex's PHY address on a WT32-ETH01 (its PHY is at 1)
        json.dump({"version": 1, "board": {"profile": "wt32-eth01"}, "lan": {"enabled": True, "phy_addr": 0}}, f)
    r = _sim("device", "--state-dir", str(tmp_path), "--duration", "5", "--port", "0", "--dns-port", "0",
             timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "meter: board wt32-eth01" in out, out  # no --board: the board config.json names
    assert "Ethernet did not start (esp_eth_driver_install failed)" in out, out

# The installer's calibration through the setup portal (issue 17): the page's Calibrate form and the
# same flow as JSON for tools (POST /api/calibration), on a simulated board whose front end is off,
# against the real MicroPython device on 127.0.0.1.
import json
import os
import urllib.parse

import pytest

from tests.host.portal_sim import PortalSim, raw, status
from tools.sim import truth

SCENARIO = {"adc": {"vref_mv": 1150},
            "front_end": {"voltage": [{"adc_gain": 1.03}, {}, {}], "current": [{"adc_gain": 0.96}, {}, {}]},
            "phases": [{"vrms": 231.0, "irms": 12.0, "phase_deg": 0.0},
                       {"vrms": 229.0, "irms": 20.0, "phase_deg": 25.0},
                       {"vrms": 230.0, "irms": 30.0, "phase_deg": 10.0}]}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    path = os.path.join(str(folder), "scenario.json")
    with open(path, "w") as f:
        json.dump(SCENARIO, f)
    s = PortalSim(str(folder / "flash"), extra=("--scenario", path))
    yield s
    s.stop()


def _request(sim, method, path, body=b"", ctype=None):
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (method, path, sim.port)
    if ctype:
        head += "Content-Type: %s\r\n" % ctype
    if method == "POST":
        head += "Content-Length: %d\r\n" % len(body)
    r = raw(sim.port, head.encode() + b"\r\n" + body, timeout=40)
    return status(r), r.split(b"\r\n\r\n", 1)[1]


def _api(sim, doc=None, ctype="application/json"):
    if doc is None:
        code, body = _request(sim, "GET", "/api/calibration")
    else:
        code, body = _request(sim, "POST", "/api/calibration", json.dumps(doc).encode(), ctype)
    return code, json.loads(body)


def _live(sim):
    code, body = _request(sim, "GET", "/api/status")
    return json.loads(body)["readings"]["phases"]


def _saved(sim):
    with open(os.path.join(sim.state_dir, "config.json")) as f:
        return json.load(f)["meter"]["calibration"]


def test_bad_references_get_a_sentence_and_change_nothing(sim):
    code, doc = _api(sim)
    assert code == 200 and doc["calibration"] == {} and not doc["can_undo"]
    for body, words in (({"vrms": [231.0]}, "three voltages"),
                        ({"vrms": ["abc", None, None]}, "L1 voltage"),
                        ({"vrms": [float("inf"), None, None]}, None),
                        ({"ct": 4, "amps": 12.0}, "CT: choose 1, 2 or 3"),
                        ({"ct": 1, "amps": -3}, "Amps"),
                        ({"ct": 1}, "both, or neither"),
                        ({}, "at least one reading"),
                        ({"vrms": [300.0, None, None]}, "more than 25 % apart"),  # the probe on the wrong thing
                        ({"ct": 3, "amps": 30.0, "resistive": True}, "away from a resistive one")):
        raw_body = json.dumps(body).replace("Infinity", "1e999").encode()
        code, out = _request(sim, "POST", "/api/calibration", raw_body, "application/json")
        out = json.loads(out)
        assert code == 400 and not out["ok"], (body, out)
        if words:
            assert words in out["message"], (body, out["message"])
        assert out["calibration"] == {}
    code, out = _request(sim, "POST", "/api/calibration", b"vrms=231", "application/x-www-form-urlencoded")
    assert code == 400 and "JSON" in json.loads(out)["message"]
    assert not os.path.exists(os.path.join(sim.state_dir, "config.json")) or _saved(sim) == {}


def test_calibration_as_json_reads_true_afterwards_is_saved_and_undone(sim):
    want = truth.expected(SCENARIO)["phases"]
    before = _live(sim)
    assert abs(before[0]["vrms"] / want[0]["vrms"] - 1) > 0.02  # L1's divider is ~3 % off
    code, doc = _api(sim, {"vrms": [want[0]["vrms"], None, None], "ct": 1, "amps": want[0]["irms"],
                           "resistive": True})
    assert code == 200 and doc["ok"], doc
    assert [c[0] for c in doc["last_changes"]] == ["voltage L1 adc_gain", "CT 1 adc_gain", "CT 1 phase_lead_deg"]
    assert doc["can_undo"] and doc["message"].startswith("Calibrated: L1 read ")
    assert ", now %.1f V; CT 1 read " % want[0]["vrms"] in doc["message"]
    assert _saved(sim) == doc["calibration"]  # on flash: a restart keeps it
    for _ in range(30):  # the live readings use it within a few windows
        live = _live(sim)
        if abs(live[0]["vrms"] / want[0]["vrms"] - 1) < 0.005:
            break
        import time

        time.sleep(0.5)
    assert abs(live[0]["vrms"] / want[0]["vrms"] - 1) < 0.005, live[0]
    assert abs(live[0]["irms"] / want[0]["irms"] - 1) < 0.005, live[0]
    code, doc = _api(sim, {"undo": True})
    assert code == 200 and doc["ok"] and doc["calibration"] == {} and not doc["can_undo"]
    assert _saved(sim) == {}
    code, doc = _api(sim, {"undo": True})
    assert code == 400 and "no calibration to undo" in doc["message"]


def test_the_page_has_a_calibrate_step_with_its_outcome_and_an_undo(sim):
    code, page = _request(sim, "GET", "/")
    assert code == 200 and b"<details id=cal>" in page and b"Undo the last calibration" not in page
    form = urllib.parse.urlencode({"v1": "", "v2": "229,0", "v3": "", "ct": "", "amps": ""}).encode()
    r = raw(sim.port, b"POST /calibrate HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % (sim.port, len(form)) + form,
            timeout=40)
    assert status(r) == 303
    url = [ln for ln in r.split(b"\r\n") if ln.lower().startswith(b"location:")][0].split(b":", 1)[1].strip()
    code, page = _request(sim, "GET", url.decode())
    assert b"Calibrated: L2 read " in page and b"Undo the last calibration" in page
    form = b"v1=abc&ct=&amps="
    r = raw(sim.port, b"POST /calibrate HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % (sim.port, len(form)) + form)
    url = [ln for ln in r.split(b"\r\n") if ln.lower().startswith(b"location:")][0].split(b":", 1)[1].strip()
    code, page = _request(sim, "GET", url.decode())
    assert b"L1 voltage: type the multimeter" in page
    _api(sim, {"undo": True})


def test_sim_calibrate_then_run_measures_with_the_calibration(tmp_path):
    # `python -m tools.sim calibrate` through the portal, then `run` on other loads of the same board.
    import subprocess
    import sys

    from tools import mp

    def sim_cmd(*args):
        return subprocess.run([sys.executable, "-m", "tools.sim", *args], cwd=mp.ROOT, capture_output=True,
                              text=True, timeout=300)

    at = tmp_path / "at.json"
    at.write_text(json.dumps(dict(SCENARIO, phases=[{"vrms": 230.0, "irms": 40.0, "phase_deg": 0.0}] * 3)))
    other = dict(SCENARIO, phases=[{"vrms": 120.0, "irms": 20.0, "phase_deg": 30.0}] * 3)
    (tmp_path / "other.json").write_text(json.dumps(other))
    state = str(tmp_path / "flash")
    r = sim_cmd("calibrate", "--scenario", str(at), "--state-dir", state, "--phase", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["voltage"][0]["adc_gain"] != 1.0
    assert "Calibrated: L1 read " in r.stderr
    want = truth.expected(other, 5)["phases"]
    before = json.loads(sim_cmd("run", "--scenario", str(tmp_path / "other.json"), "--duration", "5").stdout)
    after = json.loads(sim_cmd("run", "--scenario", str(tmp_path / "other.json"), "--duration", "5",
                               "--state-dir", state).stdout)
    assert abs(before["phases"][0]["vrms"] / want[0]["vrms"] - 1) > 0.02
    assert abs(after["phases"][0]["vrms"] / want[0]["vrms"] - 1) < 0.005
    assert abs(after["phases"][0]["irms"] / want[0]["irms"] - 1) < 0.005
    # A CT with too little current through it: the portal's sentence, exit status 1, nothing saved.
    low = tmp_path / "low.json"
    low.write_text(json.dumps(dict(SCENARIO, phases=[{"vrms": 230.0, "irms": 2.0, "phase_deg": 0.0}] * 3)))
    r = sim_cmd("calibrate", "--scenario", str(low), "--state-dir", str(tmp_path / "flash2"), "--phase", "2")
    assert r.returncode == 1 and "at least 5.0 A" in r.stderr, r.stderr

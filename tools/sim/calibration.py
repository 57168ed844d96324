"""calibration — `python -m tools.sim calibrate`: the installer's calibration, done on the simulated device.

    python -m tools.sim calibrate --scenario F --state-dir S [--phase N]

Starts the device with its setup portal on 127.0.0.1 (`tools.sim portal`, its flash in S), and does
what an installer does with a multimeter and a clamp meter: sends the instruments' readings to the
portal's POST /api/calibration, the very endpoint behind the setup page's "Calibrate" form. The
instruments read the scenario's true values (tools/sim/truth.py). The device saves the calibration
in S/config.json, so a later `tools.sim run --scenario G --state-dir S` (the same `adc` and
`front_end`, other loads) measures with it.

Without --phase: the three voltages and CT 1 in one step, then CT 2 and CT 3 (a clamp meter reads
one conductor at a time); with --phase N: L N's voltage and CT N. CT n clamps L n's conductor. A CT
whose phase carries a resistive load (its current in phase with the voltage, no harmonics) also sets
its phase lead.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tools import mp
from tools.sim import truth
from tools.sim.runner import UsageError, free_port

START_S = 60  # the device's start on a busy machine, before its page answers
RESISTIVE_DEG = 0.5


def steps(scenario, phase=None):
    """The bodies to POST, one per clamp-meter reading: [{"vrms": [...], "ct", "amps", "resistive"}]."""
    want = truth.expected(scenario)["phases"]
    raw = [dict(ph) for ph in scenario.get("phases", [])]
    out = []
    for n in ([phase] if phase else [1, 2, 3]):
        p = n - 1
        if raw and raw[p].get("ct_phase", n) != n:
            raise UsageError("--phase %d: CT %d is not on L%d in this scenario (ct_phase)" % (n, n, n))
        ph = raw[p] if raw else {}
        resistive = abs(ph.get("phase_deg", 0.0)) < RESISTIVE_DEG and not ph.get("i_harmonics")
        if phase:
            vrms = [round(want[p]["vrms"], 2) if q == p else None for q in range(3)]
        else:
            vrms = [round(w["vrms"], 2) for w in want] if n == 1 else [None, None, None]
        amps = round(want[p]["irms"], 3)
        out.append({"vrms": vrms, "ct": n, "amps": amps if amps > 0 else None, "resistive": resistive})
    return out


def _call(base, method, path, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def calibrate(scenario_file, state_dir, phase=None, log=sys.stderr.write, out=sys.stdout.write):
    """Calibrate the simulated device in state_dir on scenario_file; 0 when every step was taken."""
    with open(scenario_file) as f:
        scenario = json.load(f)
    bodies = steps(scenario, phase)
    os.makedirs(state_dir, exist_ok=True)
    port, dns_port = free_port(), free_port(socket.SOCK_DGRAM)
    base = "http://127.0.0.1:%d" % port
    console = open(os.path.join(state_dir, "calibrate.log"), "w")
    child = subprocess.Popen([sys.executable, "-m", "tools.sim", "portal", "--scenario", scenario_file,
                              "--state-dir", state_dir, "--port", str(port), "--dns-port", str(dns_port)],
                             cwd=mp.ROOT, stdout=console, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                _call(base, "GET", "/api/calibration", timeout=5)
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise UsageError("the simulated device did not start (its console: %s)" % console.name) from None
                time.sleep(0.3)
        for body in bodies:
            if body["amps"] is None:  # no current on that CT: nothing for a clamp meter to read
                body = dict(body, ct=None, resistive=False)
                if body["vrms"] == [None, None, None]:
                    log("sim: CT %s carries no current in this scenario: skipped\n" % body.get("ct"))
                    continue
            log("sim: POST /api/calibration %s\n" % json.dumps(body))
            code, doc = _call(base, "POST", "/api/calibration", body)
            log("sim: %s\n" % doc.get("message"))
            if code != 200:
                return 1
        code, doc = _call(base, "GET", "/api/calibration")
        out(json.dumps(doc["calibration"]) + "\n")
        log("sim: saved in %s\n" % os.path.join(state_dir, "config.json"))
        return 0
    finally:
        child.terminate()  # the portal command stops the device in order (tools/sim/stop.py)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        console.close()

# Fault tests: the uploader under the real MicroPython unix port against the real ingest server (HTTPS
# on 127.0.0.1). Each asserts: no interval record lost, none duplicated in the server's table, live
# frames resume after the fault, and the measurement kept running (no window late by more than
# LATE_MS). DNS failure and an unset clock are made at the device's DNS and clock seams.

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tools import ingest, mp, provision
from tools.sim.runner import free_port

ROOT = mp.ROOT
LATE_MS = 300
WINDOW_MS = 100


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    ingest.ensure_certs(str(d))
    provision.fleet_key_for(str(d), str(d / "fleet.key"), log=lambda m: None)
    other = tmp_path_factory.mktemp("other-ca")
    ingest.ensure_certs(str(other))
    return str(d), str(other)


_ports = set()
_ports_lock = threading.Lock()


def _free_port():
    """A port no other scenario of this run has been given (the scenarios run at once)."""
    with _ports_lock:
        while True:
            port = free_port()
            if port not in _ports:
                _ports.add(port)
                return port


class Setup:
    def __init__(self, tmp, certs, port=None, start=True):
        os.makedirs(str(tmp), exist_ok=True)
        self.tmp, self.certs = str(tmp), certs
        self.db = os.path.join(self.tmp, "db.sqlite")
        self.fault_file = os.path.join(self.tmp, "fault")
        self.state = os.path.join(self.tmp, "state")
        os.makedirs(self.state, exist_ok=True)
        self.port = port or _free_port()
        self.srv = None
        self.fleet_key = open(os.path.join(certs, "fleet.key")).read().strip() if os.path.exists(
            os.path.join(certs, "fleet.key")) else None
        if start:
            self.start()

    def start(self):
        ready = threading.Event()

        def run():
            ingest.serve(self.port, self.db, self.certs, fault_file=self.fault_file,
                         ready=lambda srv: (setattr(self, "srv", srv), ready.set()))

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)
        self.fleet_key = open(os.path.join(self.certs, "fleet.key")).read().strip()

    def stop(self):
        if self.srv is not None:
            self.srv.shutdown()
            self.srv.server_close()

    def device(self, run_ms, phases=(), url=None, ca=None, heapsize=None, **kw):
        plan = {"state_dir": self.state, "url": url or "https://localhost:%d" % self.port,
                "ca_der": ca or os.path.join(self.certs, "ca.der"), "fleet_key": self.fleet_key,
                "serial": "FAULT-1", "run_ms": run_ms, "drain_ms": 6000, "window_ms": WINDOW_MS,
                "report": os.path.join(self.tmp, "report.json"), "fault_file": self.fault_file,
                "phases": [list(p) for p in phases]}
        plan.update(kw)
        path = os.path.join(self.tmp, "plan.json")
        with open(path, "w") as f:
            json.dump(plan, f)
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "lib"), ".frozen"]))
        t0 = time.time()
        heap = ["-X", "heapsize=" + heapsize] if heapsize else []
        p = subprocess.run([mp.micropython_exe(), *heap, os.path.join(ROOT, "tools", "sim", "upload_main.py"), path],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        with open(plan["report"]) as f:
            rep = json.load(f)
        rep["t0_ms"] = t0 * 1000
        rep["log"] = p.stdout
        return rep

    def seqs(self):
        db = sqlite3.connect(self.db)
        rows = [r[0] for r in db.execute("SELECT seq FROM records WHERE serial = 'FAULT-1'")]
        db.close()
        return rows

    def live_after(self, epoch_ms):
        db = sqlite3.connect(self.db)
        n = db.execute("SELECT count(*) FROM live WHERE received_ms > ?", (epoch_ms,)).fetchone()[0]
        db.close()
        return n


def expected(*reports):
    out = set()
    for r in reports:
        out |= set(range(r["first_seq"], r["next_seq"]))
    return out


def check(setup, reports, clear_at_ms, lost=0):
    """No record lost (beyond `lost` counted ones), none duplicated, live resumed, meter kept running."""
    got = setup.seqs()
    assert len(got) == len(set(got)), "duplicated records in the server's table"
    want = expected(*reports)
    missing = sorted(want - set(got))
    assert len(missing) == lost, "records missing: %s" % missing[:20]
    assert reports[-1]["lost"] == lost
    assert reports[-1]["pending"] == 0
    assert not set(got) - want
    last = reports[-1]
    assert setup.live_after(last["t0_ms"] + clear_at_ms) > 0, "live frames did not resume"
    for r in reports:
        assert r["max_late_ms"] < LATE_MS, "the measurement stalled for %d ms" % r["max_late_ms"]
        assert r["windows"] >= 0.8 * r["elapsed_ms"] / WINDOW_MS - 2
    return got


# Every scenario runs its device(s) and its own server at once, in threads: the whole set takes about
# as long as the longest scenario. Each returns (setup, reports) for its test to judge.
def _server_fault(base, certs, mode):
    s = Setup(os.path.join(base, "srv-" + mode), certs[0])
    try:
        # The 500 case runs in an ESP32-sized heap (96wK: 96 K words, as without PSRAM).
        return s, [s.device(3000, phases=[(300, mode, None), (1800, "", None)],
                            heapsize="96wK" if mode == "500" else None)]
    finally:
        s.stop()


def _server_down(base, certs):
    s = Setup(os.path.join(base, "down"), certs[0], start=False)
    threading.Timer(1.5, s.start).start()
    try:
        return s, [s.device(3000)]
    finally:
        time.sleep(0.2)
        s.stop()


def _seam_fault(base, certs, fault):
    s = Setup(os.path.join(base, "seam-" + fault), certs[0])
    try:
        return s, [s.device(2500, phases=[(0, None, fault), (1500, None, None)])]
    finally:
        s.stop()


def _untrusted(base, certs, case):
    s = Setup(os.path.join(base, case), certs[0])
    try:
        if case == "wrong_ca":
            bad = s.device(2000, drain_ms=0, ca=os.path.join(certs[1], "ca.der"))
        else:
            bad = s.device(1500, drain_ms=0, url="https://wrong-name.test:%d" % s.port)
        s.before = (s.seqs(), s.live_after(0))
        return s, [bad, s.device(1000)]
    finally:
        s.stop()


def _credentials(base, certs):
    s = Setup(os.path.join(base, "cred"), certs[0])
    try:
        bad = s.device(1500, drain_ms=0, phases=[(0, "401", None)])
        with open(s.fault_file, "w") as f:
            f.write("")
        return s, [bad, s.device(1000)]
    finally:
        s.stop()


def _full_spool(base, certs):
    s = Setup(os.path.join(base, "full"), certs[0], start=False)
    # Server down: 3 files of 2 records hold 6; ~12 records are made, so the oldest are dropped.
    down = s.device(2500, drain_ms=0, record_ms=200, spool_files=3, ram_max=2)
    s.start()
    try:
        return s, [down, s.device(1000, record_ms=200, spool_files=3, ram_max=2)]
    finally:
        s.stop()


def _drop(base, certs):
    s = Setup(os.path.join(base, "drop"), certs[0])
    with open(s.fault_file, "w") as f:
        f.write("drop")
    try:
        return s, [s.device(2000)]
    finally:
        s.stop()


def _dns_later(base, certs):
    s = Setup(os.path.join(base, "dns-later"), certs[0])
    try:  # DNS fails after the first connection, and the server closes every connection meanwhile
        return s, [s.device(2500, phases=[(800, "drop", "dns"), (1800, "", None)])]
    finally:
        s.stop()


def _reject(base, certs):
    s = Setup(os.path.join(base, "reject"), certs[0])
    try:
        return s, [s.device(2500, phases=[(600, "reject", None), (1600, "", None)])]
    finally:
        s.stop()


SCENARIOS = {"500": (_server_fault, "500"), "429": (_server_fault, "429"), "hang": (_server_fault, "hang"),
             "reset": (_server_fault, "reset"), "down": (_server_down,), "dns": (_seam_fault, "dns"),
             "clock": (_seam_fault, "clock"), "wrong_ca": (_untrusted, "wrong_ca"),
             "wrong_hostname": (_untrusted, "wrong_hostname"), "credentials": (_credentials,),
             "full_spool": (_full_spool,), "reject": (_reject,), "drop": (_drop,),
             "dns_later": (_dns_later,)}


@pytest.fixture(scope="module")
def results(tmp_path_factory, certs):
    base = str(tmp_path_factory.mktemp("scenarios"))
    out = {}

    def run(name):
        fn, *args = SCENARIOS[name]
        try:
            out[name] = fn(base, certs, *args)
        except BaseException as e:  # reported by the scenario's own test
            out[name] = e

    threads = [threading.Thread(target=run, args=(n,)) for n in SCENARIOS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return out


def _get(results, name):
    r = results.get(name)
    if isinstance(r, BaseException):
        raise r
    assert r is not None, "scenario %s did not finish" % name
    return r


@pytest.mark.parametrize("mode", ["500", "429", "hang", "reset"])
def test_server_fault_then_recovery(results, mode):
    s, reps = _get(results, mode)
    check(s, reps, 1800)
    assert "retrying" in reps[0]["states"]  # the fault was seen, and retried
    assert reps[0]["next_seq"] - reps[0]["first_seq"] >= 5


def test_server_down_then_up(results):
    s, reps = _get(results, "down")
    check(s, reps, 1500)
    assert "connect" in reps[0]["log"]


@pytest.mark.parametrize("fault", ["dns", "clock"])
def test_device_seam_fault(results, fault):
    s, reps = _get(results, fault)
    check(s, reps, 1500)
    assert ("waiting_clock" if fault == "clock" else "retrying") in reps[0]["states"]
    assert ("clock is not set" if fault == "clock" else "dns: cannot resolve") in reps[0]["log"]


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_hostname"])
def test_untrusted_server_gets_nothing_then_reboot_with_the_right_settings(results, case):
    s, reps = _get(results, case)
    assert s.before == ([], 0)  # nothing went to an untrusted server, no record nor frame
    assert "tls" in str(reps[0]["status"]["last_error"])
    check(s, reps, 0)


def test_credentials_refused_stops_and_says_so_then_reboot(results):
    s, reps = _get(results, "credentials")
    assert reps[0]["status"]["state"] == "credentials"
    assert "pairing or credentials" in reps[0]["status"]["message"]
    check(s, reps, 0)


def test_reboot_with_full_spool_loses_only_the_counted_oldest(results):
    s, (down, up) = _get(results, "full_spool")
    assert down["lost"] >= 4
    assert "spool full" in down["log"]
    got = check(s, [down, up], 0, lost=down["lost"])
    made = sorted(expected(down, up))
    assert sorted(set(made) - set(got)) == made[:down["lost"]]  # the oldest went, and only they


def test_bad_record_is_dropped_and_counted(results):
    s, (rep,) = _get(results, "reject")
    missing = expected(rep) - set(s.seqs())
    assert len(missing) == rep["rejected"] >= 1
    assert "refused record seq" in rep["log"]


def test_dump_prints_each_stored_record_with_serial_and_seq(results):
    s, _ = _get(results, "500")
    p = subprocess.run([sys.executable, "-m", "tools.ingest", "--db", s.db, "--dump"], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert sorted(d["seq"] for d in lines) == sorted(s.seqs()) and lines
    assert {d["serial"] for d in lines} == {"FAULT-1"} and all("phases" in d for d in lines)


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_an_error(results):
    s, (rep,) = _get(results, "drop")
    check(s, [rep], 0)
    assert rep["status"]["connections"] > 3  # a new connection for (nearly) every request
    assert "retrying" not in rep["states"] and rep["status"]["last_error"] is None


def test_a_dns_outage_after_the_first_connection_uses_the_last_address(results):
    s, (rep,) = _get(results, "dns_later")
    check(s, [rep], 1800)
    assert rep["status"]["connections"] > 3 and "retrying" not in rep["states"]

# `python -m tools.sim run --upload`: the simulated device uploads to a real `python -m tools.ingest` on 127.0.0.1.
import json
import os
import sqlite3
import subprocess
import sys

from tools import mp
from tools.sim.runner import free_port

ROOT = mp.ROOT
BALANCED = os.path.join(ROOT, "tools", "sim", "scenarios", "three-phase-balanced.json")


def _run_against_ingest(tmp_path, duration_s, fault=""):
    port, certs, db = free_port(), str(tmp_path / "certs"), str(tmp_path / "db.sqlite")
    fault_file = tmp_path / "fault"
    fault_file.write_text(fault)
    srv = subprocess.Popen([sys.executable, "-m", "tools.ingest", "--port", str(port), "--db", db, "--certs", certs,
                            "--fault-file", str(fault_file)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert "ingest: https://127.0.0.1:%d/" % port in srv.stderr.readline()  # listening, CA made
        assert os.path.exists(os.path.join(certs, "ca.der")) and os.path.exists(os.path.join(certs, "ca.pem"))
        p = subprocess.run([sys.executable, "-m", "tools.sim", "run", "--scenario", BALANCED, "--duration",
                            str(duration_s), "--upload", "https://localhost:%d" % port, "--ca",
                            os.path.join(certs, "ca.der"), "--state-dir", str(tmp_path / "state")], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout), db
    finally:
        srv.terminate()
        srv.wait(10)


def test_the_simulator_uploads_to_the_ingest_server(tmp_path):
    report, db = _run_against_ingest(tmp_path, 3)
    up = report["upload"]
    assert up["state"] == "ok" and up["live_sent"] >= 1 and up["last_error"] is None
    rows = sqlite3.connect(db).execute("SELECT serial, frame FROM live").fetchall()
    assert len(rows) == up["live_sent"]
    assert {r[0] for r in rows} == {"SIM-1"}
    watts = json.loads(rows[-1][1])["total_w"]
    assert abs(watts - report["total"]["real_power_w"]) < 0.05 * abs(report["total"]["real_power_w"])


def test_the_whole_device_keeps_measuring_while_the_server_hangs(tmp_path):
    report, db = _run_against_ingest(tmp_path, 4, fault="hang")
    assert report["upload"]["live_sent"] == 0  # the request hung for the whole run (timeout 10 s)
    assert report["windows"]["count"] >= 3  # 1 s windows, the first after a second
    assert report["windows"]["max_gap_ms"] < 1300  # no window was held up by the hanging request


def test_upload_without_a_ca_is_refused_with_a_message(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tools.sim", "run", "--scenario", BALANCED, "--duration", "1",
                        "--upload", "https://localhost:1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--ca" in p.stderr

# `python -m tools.sim run --upload`: the simulated device uploads to a real `python -m tools.ingest` on 127.0.0.1.
import json
import os
import socket
import sqlite3
import subprocess
import sys

import pytest

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


def test_an_identity_from_another_fleet_key_is_refused_and_left_as_it_is(tmp_path):
    from tools import ingest, provision
    from tools.sim.runner import UsageError, prepare_upload

    old_certs, certs, flash = tmp_path / "old", tmp_path / "certs", tmp_path / "flash"
    for d in (old_certs, certs):
        ingest.ensure_certs(str(d))  # as `python -m tools.ingest --certs d` leaves it
        provision.fleet_key_for(str(d), str(d / "fleet.key"), log=lambda m: None)
    prepare_upload(str(flash), "https://localhost:1", str(old_certs / "ca.der"))
    made = (flash / "identity.json").read_bytes()
    prepare_upload(str(flash), "https://localhost:1", str(old_certs / "ca.der"))  # its own server: fine
    assert (flash / "identity.json").read_bytes() == made

    with pytest.raises(UsageError, match="made from another fleet key than .*fleet.key, so the server would refuse"):
        prepare_upload(str(flash), "https://localhost:1", str(certs / "ca.der"))  # another server
    assert (flash / "identity.json").read_bytes() == made

    (flash / "identity.json").write_bytes(made[:40])  # damaged: left for the device to report
    prepare_upload(str(flash), "https://localhost:1", str(certs / "ca.der"))
    assert (flash / "identity.json").read_bytes() == made[:40]


def test_a_fresh_flash_for_a_server_that_has_its_records_is_warned_about(tmp_path, capsys):
    from tools import ingest
    from tools.sim.__main__ import _warn_numbering_again

    db = str(tmp_path / "records.sqlite")
    ingest.Ingest(db, b"k" * 32).db.execute("INSERT INTO records VALUES ('SIM-1', 0, '{}', 0)").connection.commit()
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "identity.json").write_text('{"serial": "SIM-1"}')
    _warn_numbering_again(str(flash), db)
    assert "already has 1 records of SIM-1" in capsys.readouterr().err
    (flash / "spool").mkdir()
    (flash / "spool" / "state.json").write_text('{"reserved": 64}')  # this flash has numbered records
    _warn_numbering_again(str(flash), db)
    assert capsys.readouterr().err == ""


def _device_run(ingest_dir):
    p = subprocess.run([sys.executable, "-m", "tools.sim", "device", "--duration", "20", "--report", "json",
                        "--ingest", str(ingest_dir), "--port", str(free_port()), "--dns-port",
                        str(free_port(kind=socket.SOCK_DGRAM))], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def test_make_sim_twice_is_one_device_whose_records_all_reach_the_ingest(tmp_path):
    # `make sim` keeps build/sim-ingest; the device's flash is kept inside it, so a second run goes on
    # numbering records where the first stopped instead of sending seq 0 again (taken for a duplicate).
    from firmware.spool import SEQ_BLOCK
    from tools.ingest import stored_seqs as seqs

    def stored_seqs():
        return set(seqs(str(tmp_path / "ingest" / "records.sqlite"), "SIM-1"))

    first = _device_run(tmp_path / "ingest")
    before = stored_seqs()
    second = _device_run(tmp_path / "ingest")
    new = stored_seqs() - before
    assert before and new, (before, new)
    # a restart numbers from the next reserved block (spool.py), as after a power cut; a fresh flash
    # would number from 0 again. (A record the first run left unsent arrives now, below the block.)
    assert max(before) < SEQ_BLOCK and any(seq >= SEQ_BLOCK for seq in new), (before, new)
    assert second["records_lost"] == 0 and second["upload"]["records_sent"] >= 1
    assert second["energy"]["import_wh"] > first["energy"]["import_wh"] > 0  # the counters went on too
    assert (tmp_path / "ingest" / "flash" / "identity.json").exists()

# The fault matrix of issue 18 (tools/bench_faults.py): the real MicroPython uploader against the real
# ingest server over HTTPS on 127.0.0.1. Records are never reused or lost unseen and every seq is
# explained, when the spool state is lost or the flash erased and provisioned again (the device
# numbered from 0 again and the server took its records for duplicates), through restarts, power
# cuts, outages and a server that acknowledges records never sent; and `--gaps` says so.
import json
import subprocess
import sys

import pytest

from tools import bench_faults, mp

NAMES = ("state lost", "state damaged", "re-provisioned after erase", "erased, then an outage", "restart",
         "power cut", "outage, spool full", "bogus acks", "line too long")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    keep = str(tmp_path_factory.mktemp("faults") / "run")
    return dict(bench_faults.run(NAMES, keep=keep)), keep


@pytest.mark.parametrize("name", NAMES)
def test_no_record_reused_duplicated_or_lost_unseen_and_no_seq_unexplained(matrix, name):
    r = matrix[0][name]
    assert "error" not in r, r
    assert r["dup"] == 0 and r["unseen"] == 0 and r["unexplained"] == 0, r
    assert r["cut"] <= bench_faults.RAM_RECORDS, r
    assert r["stored"] + r["cut"] + min(r["lost"], r["made"]) >= r["made"] > 5, r
    if name == "line too long":
        assert r["lost"] == 1 and r["stored"] == r["made"] - 1, r
    if name in ("restart", "power cut"):
        assert r["skipped"] > 0, r  # the rest of a block, declared


def test_gaps_prints_one_line_per_serial(matrix):
    db = matrix[1] + "/restart/db.sqlite"
    p = subprocess.run([sys.executable, "-m", "tools.ingest", "--db", db, "--gaps"], cwd=mp.ROOT,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    (line,) = [json.loads(x) for x in p.stdout.splitlines()]
    assert sorted(line) == ["lost", "records", "serial", "skipped", "unexplained"]
    assert line["serial"] == bench_faults.SERIAL and line["unexplained"] == 0 and line["records"] > 5
    assert line["skipped"] == matrix[0]["restart"]["skipped"] > 0

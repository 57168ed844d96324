# The first hour: every documented command works from a fresh clone (no build/, the venv only).
#
# Each test copies the files git tracks from this working tree (so uncommitted edits are tested
# too) into a temporary folder, links .venv to the venv running the tests (no pip install of the
# host tools), and runs the commands there as a new user would. build/ starts absent. All of the
# device's code is in the repository, so nothing is downloaded: pip is given no index
# (PIP_NO_INDEX), and any command that tried to fetch a package would fail here.
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tools import mp
from tools.sim.runner import free_port

ROOT = mp.ROOT


def fresh_clone(folder):
    """A copy of the tracked files of the working tree in folder, with .venv linked: the repository
    as `git clone` + `make venv` leave it."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (or no git): the files a clone would hold are unknown")
    for rel in files.decode().split("\0"):
        src = os.path.join(ROOT, rel)
        if rel and os.path.isfile(src):  # (a tracked file deleted in the working tree: gone here too)
            dst = os.path.join(folder, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    os.symlink(os.path.realpath(sys.prefix), os.path.join(folder, ".venv"))
    assert not os.path.exists(os.path.join(folder, "build"))
    return str(folder)


def clone_env():
    """The environment of a user's shell, but with no package index for pip to download from."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MICROPY"))}
    env.update(PIP_NO_INDEX="1")
    return env


@pytest.fixture
def clone(tmp_path):
    return fresh_clone(tmp_path / "meter")


def make_commands(clone, target, *variables):
    """The commands `make TARGET` runs, as `make -n` prints them (the venv's steps left out)."""
    r = subprocess.run(["make", "-n", target, *variables], cwd=clone, capture_output=True, text=True, check=True)
    return [shlex.split(x) for x in r.stdout.splitlines() if " -m tools." in x and "pip install" not in x]


class Console:
    """A simulator started in its own session (as from a terminal), its console read line by line."""

    def __init__(self, cmd, cwd, env):
        self.lines = []
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)

    def wait_for(self, marker, timeout_s=60):
        """Read the console up to a line holding marker; True if it came before the output ended."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if marker in line:
                return True
        return False

    def ctrl_c(self, timeout_s=30):
        """What Ctrl-C in the terminal does; the exit status once the rest of the console is read."""
        os.killpg(self.proc.pid, signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=timeout_s)
        self.lines.append(rest)
        return self.proc.returncode

    def text(self):
        if self.proc.poll() is not None and not self.proc.stdout.closed:  # ended: the rest of its console too
            self.lines.append(self.proc.stdout.read())
        return "".join(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()


def get(port, path="/"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.status, r.read().decode("utf-8", "replace")


def page_answers(port, console, timeout_s=30):
    """The setup page's status and body once it answers (the device needs a moment to start it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return get(port)
        except OSError:
            if console.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the setup page never answered:\n" + console.text())
            time.sleep(0.3)


READING = "Hz three-phase"  # in every console line of readings (firmware/app.py format_readings)


def test_make_sim_on_a_fresh_clone_comes_up_is_alone_and_says_what_a_restart_restored(clone):
    (cmd,) = make_commands(clone, "sim")
    assert "--ingest" in cmd, cmd
    port, dns_port = free_port(), free_port(socket.SOCK_DGRAM)
    run = cmd + ["--port", str(port), "--dns-port", str(dns_port), "--duration", "300"]
    env = clone_env()
    first = Console(run, clone, env)
    try:
        assert first.wait_for(READING), first.text()  # readings on the console
        assert "sim: setup page on http://127.0.0.1:%d/" % port in first.text()
        status, page = page_answers(port, first)  # and the setup page on its port
        assert status == 200 and "<form" in page, page[:500]
        # Its WiFi part lists the simulated radio's networks, as the README promises the same page.
        assert '<span class=ssid>HomeNet</span>' in page and '<span class=ssid>Cafe Libre</span>' in page, page
        # A second `make sim` meanwhile is refused, naming the folder; the first runs on.
        second = subprocess.run(run, cwd=clone, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another simulator (process %d, setup page on 127.0.0.1:%d) is running on build/sim-ingest" % (
            first.proc.pid, port) in second.stderr, second.stderr
        assert "Traceback" not in second.stderr and "meter:" not in second.stdout
        assert get(port)[0] == 200
        assert first.wait_for("records seq 0-"), first.text()  # (the ingest: a record was numbered and stored)
        assert first.ctrl_c() == 0, first.text()
    finally:
        first.kill()
    out = first.text()
    assert "ImportError" not in out and "Traceback" not in out, out
    assert "meter: stopped" in out and "sim: the ingest server stored" in out, out
    assert "upload:" not in out.split("sim: stopping")[1], out  # the server outlives the device's last upload
    assert "energy: restored" not in out and "record numbers go on" not in out  # a first start

    # Started again: it says where its energy came from and why its record numbers jump.
    again = Console(run, clone, env)
    try:
        assert again.wait_for(READING), again.text()
        assert again.ctrl_c() == 0, again.text()
    finally:
        again.kill()
    out = again.text()
    m = re.search(r"energy: restored from energy\.[ab] \(save \d+\): net import (\d+\.\d{3}) kWh, net export "
                  r"0\.000 kWh\n", out)
    assert m and float(m.group(1)) > 0, out  # what the first run counted, however long it ran
    assert "upload: record numbers go on from 64: they are reserved 64 at a time" in out, out
    assert "Traceback" not in out and "warning" not in out, out


def test_sim_portal_comes_up_on_a_fresh_clone_and_stops_on_ctrl_c(clone):
    port, dns_port = free_port(), free_port(socket.SOCK_DGRAM)
    sim = Console([".venv/bin/python", "-m", "tools.sim", "portal", "--port", str(port), "--dns-port",
                   str(dns_port), "--duration", "300"], clone, clone_env())
    try:
        status, page = page_answers(port, sim)
        assert status == 200 and "HomeNet" in page  # the scripted radio's networks, as scanned
        assert sim.wait_for(READING), sim.text()
        assert sim.ctrl_c() == 0, sim.text()
    finally:
        sim.kill()
    out = sim.text()
    assert "Traceback" not in out and "sim: portal stopped" in out, out


DOCUMENTED = [  # every command the README and the --help texts show
    ["tools.sim"], ["tools.sim", "device"], ["tools.sim", "portal"], ["tools.sim", "run"], ["tools.sim", "soak"],
    ["tools.sim", "accuracy"], ["tools.sim", "truth"], ["tools.sim", "heapmap"], ["tools.ingest"],
    ["tools.provision"], ["tools.build"],
    ["tools.deploy"], ["tools.bench"], ["tools.bench_upload"], ["tools.flashwear"], ["tools.romfs"], ["tools.check"],
    ["tools.standin"],
]


def test_every_documented_command_answers_help_on_a_fresh_clone(clone):
    env = clone_env()
    for command in DOCUMENTED:
        r = subprocess.run([".venv/bin/python", "-m", *command, "--help"], cwd=clone, env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("usage:"), (command, r.stdout, r.stderr)
        assert r.stderr == "", (command, r.stderr)
    assert not os.path.exists(os.path.join(clone, "build"))  # --help builds nothing


def test_make_deploy_on_a_fresh_clone_gets_as_far_as_the_missing_board(clone):
    # The serial port is checked first: nothing is built for a board that is not there.
    env = clone_env()
    (deploy_cmd,) = make_commands(clone, "deploy", "PORT=/dev/no-such-meter-port", "IDENTITY=provisioned/x.json")
    assert deploy_cmd[3:7] == ["--build", "--port", "/dev/no-such-meter-port", "--identity"], deploy_cmd
    r = subprocess.run(deploy_cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "--port /dev/no-such-meter-port: there is no such serial port: is the board plugged in" in r.stderr
    assert "mpremote sees" in r.stderr  # and which ports there are
    assert not os.path.exists(os.path.join(clone, "build", "device"))
    r = subprocess.run(["make", "deploy"], cwd=clone, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "\nusage: make deploy PORT=/dev/ttyUSB0 [IDENTITY=" in "\n" + r.stdout, r.stdout


def test_deploy_plan_from_a_board_info_file_on_a_fresh_clone(clone):
    # `python -m tools.deploy --plan --board-info FILE` (its --help shows it): no board, no build needed
    with open(os.path.join(clone, "board.json"), "w") as f:
        json.dump({"micropython": "1.28.0", "mpy_version": "6.3", "romfs": False, "psram": True,
                   "heap_free_bytes": 4000000, "flash_bytes": 4194304}, f)
    r = subprocess.run([".venv/bin/python", "-m", "tools.deploy", "--plan", "--board-info", "board.json"], cwd=clone,
                       env=clone_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("files: "), r
    assert not os.path.exists(os.path.join(clone, "build", "device"))


def test_provisioning_as_the_readme_shows_leaves_no_secret_for_git_add(clone, tmp_path):
    # The README's example: --out provisioned, in the checkout. The fleet key goes to the user's
    # configuration folder; a `git add .` picks up neither it nor the identity file.
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    env = dict(clone_env(), HOME=str(tmp_path / "home"))
    env.pop("XDG_CONFIG_HOME", None)
    r = subprocess.run([".venv/bin/python", "-m", "tools.provision", "--out", "provisioned", "--serial", "MD7K3Q9XPA"],
                       cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    key = tmp_path / "home" / ".config" / "meter" / "fleet.key"
    assert "New fleet key written to %s" % key in r.stdout and key.is_file()
    assert os.listdir(os.path.join(clone, "provisioned")) == ["identity-MD7K3Q9XPA.json"]
    # Given explicitly, a key may live in the checkout: one named fleet.key is ignored by git; any
    # other name that git would commit gets a warning.
    for path, warned in (("fleet.key", False), ("keys/site-a.hex", True)):
        base = [".venv/bin/python", "-m", "tools.provision", "--out", "provisioned", "--serial", "MDB", "--fleet-key",
                path]
        # A path that does not exist is not quietly taken for a new key (a typo would make one)...
        r = subprocess.run(base, cwd=clone, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "no such file" in r.stderr and "--new-fleet-key" in r.stderr, r.stderr
        r = subprocess.run(base + ["--new-fleet-key"], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=60)  # ...unless asked for
        assert r.returncode == 0, r.stderr
        assert ("git does not ignore it" in r.stdout) == warned, r.stdout
        os.remove(os.path.join(clone, "provisioned", "identity-MDB.json"))
    os.remove(os.path.join(clone, "keys", "site-a.hex"))
    subprocess.run(["git", "add", "."], cwd=clone, check=True)
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.split()
    assert staged and not [f for f in staged if "fleet" in f or "identity-" in f or f.startswith("provisioned")], staged


def test_make_quick_the_edit_test_loop_runs_on_a_fresh_clone(clone):
    (cmd,) = make_commands(clone, "quick")
    r = subprocess.run(cmd, cwd=clone, env=clone_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"^all: \d+ passed, 0 failed$", r.stdout, re.M), r.stdout[-2000:]
    assert "test_first_hour" not in r.stdout  # the fast lane leaves the whole-process tests out


def test_the_measurement_chain_and_its_truth_run_on_a_fresh_clone(clone):
    # The README's other simulator commands, on a bundled scenario given by name (virtual time: seconds).
    env = clone_env()
    r = subprocess.run([".venv/bin/python", "-m", "tools.sim", "run", "--scenario", "reversed-ct", "--duration", "5"],
                       cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert [d["code"] for d in report["diagnostics"]] == ["ct_reversed"] and report["phases"][1]["real_power_w"] < 0
    r = subprocess.run([".venv/bin/python", "-m", "tools.sim", "truth", "--scenario", "reversed-ct"], cwd=clone,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    truth = json.loads(r.stdout)  # the physical power flows in; the reversed CT is a wiring fault
    assert truth["phases"][1]["real_power_w"] > 0 and truth["wiring_faults"] == [{"phase": 2, "fault": "ct_reversed"}]


def test_make_build_with_its_heap_run_and_the_ingest_server_work_on_a_fresh_clone(clone):
    env = clone_env()
    (cmd,) = make_commands(clone, "build")
    r = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "build/device.romfs:" in r.stdout and "heap (ESP32-WROOM-32 without PSRAM" in r.stdout, r.stdout
    port = free_port()
    srv = subprocess.Popen([".venv/bin/python", "-m", "tools.ingest", "--port", str(port), "--db", "build/r.sqlite",
                            "--certs", "build/certs"], cwd=clone, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(150):
            assert srv.poll() is None, srv.stderr.read()
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the ingest server did not listen")
        assert os.path.exists(os.path.join(clone, "build", "certs", "ca.der"))  # the CA a device trusts
    finally:
        srv.terminate()
        srv.wait(20)

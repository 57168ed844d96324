# The first hour: every documented command works from a fresh clone (no build/, the venv only).
#
# Each test copies the files git tracks from this working tree (so uncommitted edits are tested
# too) into a temporary folder, links .venv to the venv running the tests (no pip install of the
# host tools), and runs the commands there as a new user would. build/ starts absent: whatever
# needs the pinned device libraries (microdot, for the setup page) must fetch them itself. pip
# fetches them from this checkout's build/cache instead of PyPI (PIP_NO_INDEX), so the same code
# path runs without the network.
import os
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

from tools import build, mp
from tools.sim.runner import free_port

ROOT = mp.ROOT


def fresh_clone(folder):
    """A copy of the tracked files of the working tree in folder, with .venv linked: the repository
    as `git clone` + `make venv` leave it."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
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
    """The environment of a user's shell, but pip takes the pinned wheels from this checkout's cache."""
    build.fetch_device_packages(os.path.join(build.BUILD, "cache"))  # (no-op when cached)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MICROPY"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=os.path.join(build.BUILD, "cache"))
    return env


@pytest.fixture
def clone(tmp_path):
    return fresh_clone(tmp_path / "meter")


def make_command(clone, target):
    """The command `make TARGET` runs, as `make -n` prints it (the venv's steps left out)."""
    r = subprocess.run(["make", "-n", target], cwd=clone, capture_output=True, text=True, check=True)
    lines = [x for x in r.stdout.splitlines() if " -m tools." in x and "pip install" not in x]
    assert len(lines) == 1, r.stdout
    return shlex.split(lines[0])


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


def test_make_sim_comes_up_on_a_fresh_clone_and_stops_on_ctrl_c(clone):
    cmd = make_command(clone, "sim")
    assert cmd[-4:] == ["-m", "tools.sim", "device", "--ingest"] or "--ingest" in cmd, cmd
    port, dns_port = free_port(), free_port(socket.SOCK_DGRAM)
    run = cmd + ["--port", str(port), "--dns-port", str(dns_port), "--duration", "300"]
    env = clone_env()
    sim = Console(run, clone, env)
    try:
        assert sim.wait_for(READING), sim.text()
        status, page = page_answers(port, sim)
        assert status == 200 and "<form" in page, page[:500]
        assert sim.ctrl_c() == 0, sim.text()
    finally:
        sim.kill()
    out = sim.text()
    assert "ImportError" not in out and "Traceback" not in out, out
    assert "meter: stopped" in out and "sim: the ingest server stored" in out, out


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

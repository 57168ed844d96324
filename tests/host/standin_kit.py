# What the tests that drive the board stand-in (tools/standin) share: mpremote against it, a deploy run
# against it with a build for this machine, and the page its firmware serves.
import http.client
import os
import subprocess
import sys

from tools import standin
from tools.mp import ROOT

MPREMOTE = os.path.join(os.path.dirname(sys.executable), "mpremote")
AP_ADDRESS = "192.168.251.1"  # the setup page's address on the board (firmware/portal.py): what a phone sends


def mpremote(port, *args, timeout=60):
    """`mpremote connect PORT ARGS...`: the finished process (text)."""
    return subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=timeout)


def deploy(port, build, *args, timeout=180):
    """`python -m tools.deploy --port PORT --build-dir BUILD ARGS...`, the command `make deploy` runs (less its
    --build: `build` is a folder tools.standin.host_build() filled, code compiled for this machine), with
    mpremote from the venv."""
    env = dict(os.environ, MPREMOTE=MPREMOTE)
    return subprocess.run([sys.executable, "-m", "tools.deploy", "--port", port, "--build-dir", build, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def host_build(folder):
    """tools.standin.host_build() into folder, once per folder."""
    if not os.path.exists(os.path.join(folder, "device.romfs")):
        standin.host_build(folder)
    return folder


def get(board, path):
    """GET path from the board's setup page as a phone on its access point asks: (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", board.http_port, timeout=20)
    try:
        c.request("GET", path, headers={"Host": AP_ADDRESS})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def files_under(top):
    """{path relative to top: bytes} of every file below top."""
    out = {}
    for folder, _, names in os.walk(top):
        for n in names:
            p = os.path.join(folder, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, top)] = f.read()
    return out


def changes(board):
    """The flash log without the boot markers."""
    return [line for line in board.flash_log() if not line.startswith("-- ")]

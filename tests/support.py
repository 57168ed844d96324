# support — the few helpers firmware tests need, working the same under pytest and under tests/mprun.py.
#
# Firmware tests are plain `def test_*():` functions using assert, so one module runs on both
# runtimes. They take no fixtures: use tmpdir() and raises() from here.

import os
import sys

MICROPYTHON = sys.implementation.name == "micropython"
RUNTIME = "micropython" if MICROPYTHON else "cpython"


class SkipTest(Exception):
    pass


def skip(reason):
    if MICROPYTHON:
        raise SkipTest(reason)
    import pytest

    pytest.skip(reason)


class raises:
    """with raises(ValueError) as e: ...   then e.value is the exception."""

    def __init__(self, exc, match=None):
        self.exc = exc
        self.match = match
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if typ is None:
            raise AssertionError("did not raise %s" % self.exc.__name__)
        if not issubclass(typ, self.exc):
            return False
        if self.match is not None and self.match not in str(value):
            raise AssertionError("%r does not mention %r" % (str(value), self.match))
        self.value = value
        return True


_seq = [0]
# One folder per test run: the pid where there is one, else random (MicroPython's os has no getpid),
# so that two runs at once (two worktrees, say) never share a test's files.
_RUN = os.getpid() if hasattr(os, "getpid") else int.from_bytes(os.urandom(4), "big")


def tmpdir():
    """A new empty directory under /tmp for this test."""
    _seq[0] += 1
    base = "/tmp/meter-tests-%s-%d" % (RUNTIME, _RUN)
    try:
        os.mkdir(base)
    except OSError:
        pass
    path = "%s/%d" % (base, _seq[0])
    _rmtree(path)
    os.mkdir(path)
    return path


class on_flash:
    """with on_flash(): the current folder is a new empty one, the board's flash (the firmware's relative
    file names land there), and back afterwards. (MICROPYPATH must then hold absolute paths, as
    make test gives it: the firmware imports some modules only when it needs them.)"""

    def __enter__(self):
        self.here = os.getcwd()
        os.chdir(tmpdir())
        return self

    def __exit__(self, *exc):
        os.chdir(self.here)
        return False


def remove_tmpdirs():
    """At the end of a run: its test folders go (a run that stopped half way leaves them for a look)."""
    _rmtree("/tmp/meter-tests-%s-%d" % (RUNTIME, _RUN))


def _rmtree(path):
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        p = path + "/" + name
        try:
            os.remove(p)
        except OSError:
            _rmtree(p)
    os.rmdir(path)


def approx(a, b, rel=1e-9, abs_=0.0):
    return abs(a - b) <= max(rel * abs(b), abs_)


SMALL_INT_MAX = (1 << 30) - 1  # a 32-bit port's (and the ESP32's) largest small int


def small_int(x):
    """x as an int whose every arithmetic result is checked to stay within a 32-bit port's small
    ints (|v| <= 2**30): beyond, MicroPython allocates a big int there. CPython only: the 64-bit
    unix port cannot show it, its small ints reach 2**62."""
    return _SmallInt(x)


if not MICROPYTHON:

    class _SmallInt(int):
        def __new__(cls, v):
            if not -SMALL_INT_MAX - 1 <= v <= SMALL_INT_MAX:
                raise AssertionError("%d is a big int on a 32-bit port" % v)
            return int.__new__(cls, v)

    def _checked(name):
        op = getattr(int, name)
        return lambda a, b: _SmallInt(op(a, b))

    for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__floordiv__",
                  "__rfloordiv__", "__mod__", "__rmod__", "__lshift__", "__rlshift__", "__rshift__",
                  "__rrshift__", "__and__", "__rand__", "__or__", "__ror__"):
        setattr(_SmallInt, _name, _checked(_name))
    _SmallInt.__neg__ = lambda a: _SmallInt(-int(a))

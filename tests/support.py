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

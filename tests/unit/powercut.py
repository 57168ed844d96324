# powercut — simulated power loss for everything written through lib/atomicfile (not a test module).
#
#   with Flash(budget=k):
#       store.save(...)          # raises PowerCut after k steps
#
# A step is: opening a file for writing (it is created/truncated), one byte written, one rename, one
# removal. After `budget` steps the power is gone: the file being written keeps exactly the bytes
# written before the cut, a rename or removal happened completely or not at all (as on littlefs), and
# nothing later reaches the disk. Flash(None) never cuts and counts the steps of a write sequence.

import os

import atomicfile

_real_open = open


class PowerCut(Exception):
    """The power failed. Deliberately not an OSError: no clean-up code runs on a real power cut."""


class Flash:
    def __init__(self, budget=None):
        self.budget = budget
        self.steps = 0

    def _allow(self, n):
        """How many of n steps happen before the cut (all of them when there is no cut)."""
        if self.budget is None:
            self.steps += n
            return n
        k = min(n, self.budget - self.steps)
        self.steps += k
        return k

    def _step(self):
        if self._allow(1) < 1:
            raise PowerCut()

    # what atomicfile uses of the builtins and of os
    def open(self, path, mode="r"):
        if "w" not in mode and "a" not in mode:
            return _real_open(path, mode)
        self._step()
        return _CutFile(self, _real_open(path, mode))

    def rename(self, old, new):
        self._step()
        os.rename(old, new)

    def remove(self, path):
        self._step()
        os.remove(path)

    def stat(self, path):
        return os.stat(path)

    def __enter__(self):
        atomicfile.open = self.open
        atomicfile.os = self
        return self

    def __exit__(self, *exc):
        atomicfile.open = _real_open
        atomicfile.os = os
        return False


class _CutFile:
    def __init__(self, flash, f):
        self.flash = flash
        self.f = f

    def write(self, data):
        k = self.flash._allow(len(data))
        if k:
            self.f.write(data[:k])
        if k < len(data):
            self.f.close()  # what reached the flash before the cut stays there
            raise PowerCut()
        return k

    def flush(self):
        self.f.flush()

    def close(self):
        self.f.close()


def steps_of(fn):
    """The number of steps fn() takes when the power stays on."""
    with Flash() as flash:
        fn()
    return flash.steps


def files(folder):
    """{name: bytes} of every file in folder: a picture of the disk to compare or restore."""
    out = {}
    for name in os.listdir(folder):
        with _real_open(folder + "/" + name, "rb") as f:
            out[name] = f.read()
    return out


def restore(folder, picture):
    """Make folder hold exactly the files of picture."""
    for name in os.listdir(folder):
        os.remove(folder + "/" + name)
    for name, data in picture.items():
        with _real_open(folder + "/" + name, "wb") as f:
            f.write(data)

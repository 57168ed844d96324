# mpshim — lets firmware modules import and run under CPython (host tests, `--runtime cpython`).
#
# install() provides the MicroPython-only names the firmware uses: the `micropython` module
# (const, viper/native as plain-Python decorators, heap_lock/unlock, schedule), the viper casts
# ptr8/ptr16/ptr32/ptr/uint as builtins, gc.mem_free/mem_alloc/threshold, and time.ticks_* with
# the ESP32's 2**30 wrap. Never used on the device, and never imported by the firmware itself.

import builtins
import gc
import sys
import time
import types

TICKS_PERIOD = 1 << 30
_MASK = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD // 2


def _identity(x):
    return x


def _uint(x):
    return x & 0xFFFFFFFF


def _micropython_module():
    m = types.ModuleType("micropython")
    m.const = _identity
    m.viper = _identity
    m.native = _identity
    m.heap_locked = 0

    def heap_lock():
        m.heap_locked += 1

    def heap_unlock():
        m.heap_locked -= 1
        return m.heap_locked

    m.heap_lock = heap_lock
    m.heap_unlock = heap_unlock
    m.schedule = lambda fn, arg: fn(arg)
    m.mem_info = lambda *a: None
    m.opt_level = lambda *a: 0
    return m


def install():
    """Idempotent: safe to call from every entry point."""
    if "micropython" not in sys.modules:
        sys.modules["micropython"] = _micropython_module()
    for name in ("ptr", "ptr8", "ptr16", "ptr32"):
        setattr(builtins, name, _identity)
    builtins.uint = _uint
    if not hasattr(gc, "mem_free"):  # MicroPython's heap figures: unknown under CPython, as documented
        gc.mem_free = lambda: -1
        gc.mem_alloc = lambda: 0
        gc.threshold = lambda *amount: -1
    if not hasattr(time, "ticks_ms"):
        time.ticks_us = lambda: (time.monotonic_ns() // 1000) & _MASK
        time.ticks_ms = lambda: (time.monotonic_ns() // 1_000_000) & _MASK
        time.ticks_cpu = time.ticks_us
        time.ticks_add = lambda t, d: (t + d) & _MASK
        time.ticks_diff = lambda a, b: ((a - b + _HALF) & _MASK) - _HALF
        time.sleep_ms = lambda ms: time.sleep(ms / 1000)
        time.sleep_us = lambda us: time.sleep(us / 1e6)

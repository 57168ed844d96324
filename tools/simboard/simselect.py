# simselect — the accelerated clock's poller for select.py (MicroPython only; see select.py).

import sys

from simworld import _host_us as host_us
from simworld import world

_p, sys.path = sys.path, []  # the real built-in module, not select.py
try:
    import select as _select
finally:
    sys.path = _p

POLLIN = _select.POLLIN
POLLOUT = _select.POLLOUT
POLLERR = _select.POLLERR
POLLHUP = _select.POLLHUP
POLLPRI = getattr(_select, "POLLPRI", 2)
select = getattr(_select, "select", None)

NETWORK_SPEEDUP = 50
LONGEST_SKIP_US = 1_000_000  # nothing at all to wait for: look again after this much simulated time


def poll():
    return _SkippingPoll(_select.poll()) if world.accelerated else _select.poll()


MP_STREAM_POLL = 3  # the ioctl request a pollable Python object answers


class _SkippingPoll:
    """asyncio's poller on the accelerated clock. ThreadSafeFlags are checked here directly: the
    unix port's own poll() sleeps 1 ms whenever it has a non-file object to poll."""

    def __init__(self, poller):
        self._p = poller  # real files and sockets only
        self._objs = {}  # id -> registered socket
        self._flags = {}  # id -> [ThreadSafeFlag, mask]

    @staticmethod
    def _is_flag(obj):
        from asyncio import ThreadSafeFlag

        return isinstance(obj, ThreadSafeFlag)

    def register(self, obj, mask=POLLIN | POLLOUT):
        if self._is_flag(obj):
            self._flags[id(obj)] = [obj, mask]
        else:
            self._objs[id(obj)] = obj
            self._p.register(obj, mask)

    def modify(self, obj, mask):
        if id(obj) in self._flags:
            self._flags[id(obj)][1] = mask
        else:
            self._p.modify(obj, mask)

    def unregister(self, obj):
        if self._flags.pop(id(obj), None) is None:
            self._objs.pop(id(obj), None)
            self._p.unregister(obj)

    def poll(self, timeout=-1):
        return self.ipoll(timeout)

    def _ready(self, timeout_ms=0):
        out = []
        for obj, mask in self._flags.values():
            ev = obj.ioctl(MP_STREAM_POLL, mask)
            if ev:
                out.append((obj, ev))
        if self._objs:
            out += self._p.poll(0 if out else timeout_ms)  # poll(): ipoll reuses one tuple for every event
        return out

    def ipoll(self, timeout=-1, flags=0):
        world.poll()  # due timers fire, the watchdog is checked
        for hook in world.idle_hooks:
            hook()
        ready = self._ready()
        if ready or timeout == 0:
            return ready
        now = world.now_us()
        wait_us = LONGEST_SKIP_US if timeout < 0 else min(timeout * 1000, LONGEST_SKIP_US)
        due = world.next_timer_due_us()
        if due is not None:
            wait_us = max(0, min(wait_us, due - now))
        if self._objs:
            t0 = host_us()
            ready = self._ready(1)  # the host's network, in real time
            world.network_waits += 1
            if ready:
                return ready
            wait_us = min(wait_us, NETWORK_SPEEDUP * (host_us() - t0))
        if wait_us > 0:
            world.skip_us(wait_us)
        world.poll()
        return self._ready()

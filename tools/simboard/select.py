# select — shadows MicroPython's built-in select on the desktop, so that the simulated board's
# clock can skip the time its event loop spends waiting for nothing but its own timers.
#
# In accelerated mode (simworld.world.set_accelerated(), before asyncio is imported) poll() gives
# asyncio a poller whose ipoll(timeout) does the waiting in simulated time:
#   - whatever is ready now is returned at once (sockets, a ThreadSafeFlag a timer has set);
#   - if the loop waits only on ThreadSafeFlags and timers, the clock jumps to the next timer or
#     to the end of the timeout, firing the timer: the simulated day passes as fast as the
#     firmware can compute it;
#   - if a real socket is waited on (an upload's reply, the setup page listening), the host's
#     network runs in real time, so the poller waits for real, 1 ms at a time, and the clock runs
#     at most NETWORK_SPEEDUP times the host's: a reply that takes the host 5 ms takes the
#     simulated board at most a quarter of a second, well inside every timeout.
# It also stands in for the real-time mode's pump: it fires due timers and checks the watchdog,
# and runs world.idle_hooks (the simulator's heap probe) each time the loop would wait.
# Otherwise poll() is the built-in one. Only MicroPython loads this file.

import sys

if sys.implementation.name != "micropython":
    # CPython keeps its select in a shared library, which this file would shadow for host tests
    # that put this folder on sys.path: load the real one in our place and step aside.
    import os

    _here = os.path.dirname(os.path.abspath(__file__))
    _saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    del sys.modules["select"]
    try:
        import select as _select
    finally:
        sys.path[:] = _saved
    sys.modules["select"] = _select

from simworld import _host_us as host_us  # noqa: E402
from simworld import world  # noqa: E402

_p, sys.path = sys.path, []  # the real built-in module
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

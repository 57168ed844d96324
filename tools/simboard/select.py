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
# Otherwise poll() is the built-in one. The implementation is simselect.py; CPython, which has its
# own select, never uses either.

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
else:
    from simselect import *  # noqa: F403

# time — shadows MicroPython's built-in time module on the desktop with the simulated board's clock.
#
# ticks_* wrap at 2**30 like the ESP32's (the unix port's wrap at 2**62 and would hide bugs), and
# time()/localtime() follow the simulated RTC, which starts unset (2000-01-01) until NTP or
# machine.RTC sets it. Only MicroPython loads this file (CPython's time is built in).

import sys

from simworld import TICKS_PERIOD, world

_p, sys.path = sys.path, []  # the real built-in module, for calendar arithmetic
try:
    import time as _t
finally:
    sys.path = _p

_MASK = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD // 2

mktime = _t.mktime


def gmtime(secs=None):
    return _t.gmtime(time() if secs is None else secs)


localtime = gmtime  # the board's RTC runs in UTC


def ticks_us():
    return world.now_us() & _MASK


def ticks_ms():
    return (world.now_us() // 1000) & _MASK


def ticks_cpu():
    return ticks_us()


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def ticks_diff(ticks1, ticks2):
    return ((ticks1 - ticks2 + _HALF) & _MASK) - _HALF


def sleep_us(us):
    world.advance_us(us)


def sleep_ms(ms):
    world.advance_us(ms * 1000)


def sleep(s):
    world.advance_us(int(s * 1_000_000))


def time():
    return world.wall_time_us() // 1_000_000


def time_ns():
    return world.wall_time_us() * 1000


def set_epoch(epoch_s):
    world.set_wall_time(epoch_s)

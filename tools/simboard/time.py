# time — shadows MicroPython's built-in time module on the desktop with the simulated board's clock.
#
# ticks_* wrap at 2**30 like the ESP32's (the unix port's wrap at 2**62 and would hide bugs; see
# simworld.set_realtime for the runs that must use the port's period), and
# time()/localtime() follow the simulated RTC, which starts unset (2000-01-01) until NTP or
# machine.RTC sets it. Only MicroPython loads this file (CPython's time is built in).

import sys

from simworld import world

_p, sys.path = sys.path, []  # the real built-in module, for calendar arithmetic
try:
    import time as _t
finally:
    sys.path = _p


mktime = _t.mktime


def gmtime(secs=None):
    return _t.gmtime(time() if secs is None else secs)


localtime = gmtime  # the board's RTC runs in UTC


# The period is world.ticks_mask + 1: 2**30 as on the ESP32, or the unix port's own when the clock
# follows a host that has been up for days (simworld.set_realtime). The arithmetic is the world's:
# no sum beyond the period, which on a 32-bit port would be a big int.
ticks_us = world.ticks_us
ticks_ms = world.ticks_ms
ticks_cpu = world.ticks_us
ticks_add = world.ticks_add
ticks_diff = world.ticks_diff


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

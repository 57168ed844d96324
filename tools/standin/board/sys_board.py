# sys_board — the stand-in board's `sys` module: MicroPython's own, with sys.implementation._build naming
# the ESP32 image the stand-in plays (runs under MicroPython; board_main.py installs it as
# sys.modules["sys"], so `import sys` on the board finds it).
#
# On the ESP32, _build is the board (and variant) the image was built for (py/modsys.c, from
# MICROPY_BOARD_BUILD_NAME): "ESP32_GENERIC" on micropython.org's images, "METER_ESP32" and
# "METER_ESP32-ROMFS" on the meter's own (docs/IMAGE.md); a deploy tells them apart by it. The unix
# port says "standard". Everything else is the port's own sys: the same objects (path, modules, stdout).
_sys = __import__("sys")


class _Implementation:
    def __init__(self, build):
        i = _sys.implementation
        self.name, self.version, self._machine, self._mpy = i.name, i.version, i._machine, i._mpy
        self._build = build

    def __repr__(self):
        return "(name=%r, version=%r, _machine=%r, _mpy=%d, _build=%r)" % (
            self.name, self.version, self._machine, self._mpy, self._build)


implementation = None


def play(build):
    global implementation
    implementation = _Implementation(build)


def __getattr__(name):
    return getattr(_sys, name)

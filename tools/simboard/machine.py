# machine — a simulated ESP32 `machine` module for the desktop (MicroPython unix port or CPython).
#
# Same constructors, methods and constants as MicroPython's ESP32 port for the parts the meter
# uses: Pin, ADC, Timer, WDT, RTC, reset(). The hardware behind them is simworld.world.

from simworld import SimReset, civil_from_epoch, epoch_from_civil, schedule, world  # noqa: F401

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_GPIOS = tuple(g for g in range(40) if g not in (20, 24, 28, 29, 30, 31))
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_ADC1 = (32, 33, 34, 35, 36, 37, 38, 39)
_ADC2 = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27)


def _gpio(id):
    n = id.id() if isinstance(id, Pin) else id
    if n not in _GPIOS:
        raise ValueError("invalid pin")
    return n


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self._id = _gpio(id)
        self._mode = None
        self._handler = None
        self._trigger = 0
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if mode != -1:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self._id in _INPUT_ONLY:
                raise ValueError("pin can only be input")
            self._mode = mode
        if pull not in (-1, None) and self._id in _INPUT_ONLY:
            pull = None  # GPIO34-39 have no pull resistors; the ESP32 ignores the request
        if value is not None:
            world.pin_levels[self._id] = 1 if value else 0

    def id(self):
        return self._id

    def value(self, x=None):
        if x is None:
            return world.pin_levels.get(self._id, 1)
        world.pin_levels[self._id] = 1 if x else 0

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, *, wake=None, hard=False):
        self._handler = handler
        self._trigger = trigger
        if handler is None:
            world.pin_irqs.pop(self._id, None)
        else:
            world.pin_irqs[self._id] = self

    def _edge(self, level):
        want = Pin.IRQ_RISING if level else Pin.IRQ_FALLING
        if self._handler is not None and self._trigger & want:
            schedule(self._handler, self)

    def __repr__(self):
        return "Pin(%d)" % self._id


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    # Full-scale input per attenuation (mV), from the ESP32 datasheet's recommended ranges.
    _FULL_SCALE_MV = (950, 1250, 1750, 3100)

    def __init__(self, pin, *, atten=None):
        self._gpio = _gpio(pin)
        if self._gpio not in _ADC1 and self._gpio not in _ADC2:
            raise ValueError("invalid pin")
        self._atten = ADC.ATTN_0DB
        self._width = 12
        self.init(atten=atten)

    def init(self, *, atten=None):
        if atten is not None:
            if atten not in (0, 1, 2, 3):
                raise ValueError("invalid attenuation")
            self._atten = atten

    def atten(self, atten):
        self.init(atten=atten)

    def width(self, bits):
        if bits not in (9, 10, 11, 12):
            raise ValueError("invalid width")
        self._width = bits

    def block(self):
        return None

    def _raw12(self):
        if self._gpio in _ADC2 and any(w.active() for w in world.wlans.values()):
            raise OSError(16)  # EBUSY: ADC2 is owned by the WiFi driver while the radio runs
        return world.read_adc(self._gpio)

    def read(self):
        return self._raw12() >> (12 - self._width)

    def read_u16(self):
        raw = self._raw12()
        return (raw << 4) | (raw >> 8)  # scale 12 bits to 16, as the ESP32 port does

    def read_uv(self):
        # ports/esp32/adc.c, madcblock_read_uv_helper: ESP-IDF's calibration (line fitting from the
        # eFuse Vref on the ESP32) turns the raw reading into whole mV, returned * 1000. The
        # simulated chip's own (tools/sim/mains.py, efuse_uv) when a scenario models one.
        raw = self._raw12()
        if world.adc_uv is not None and self._atten == ADC.ATTN_11DB:
            return world.adc_uv(raw)
        return raw * ADC._FULL_SCALE_MV[self._atten] // 4095 * 1000


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id, **kwargs):
        if not 0 <= id <= 3:
            raise ValueError("invalid Timer number")
        self._id = id
        self._callback = None
        self._period_us = 0
        self._due_us = 0
        self._mode = Timer.PERIODIC
        if kwargs:
            self.init(**kwargs)

    def init(self, *, mode=PERIODIC, period=-1, tick_hz=1000, freq=None, callback=None, hard=False):
        if hard:
            raise ValueError("hard Timer callbacks are not supported on the ESP32")
        self.deinit()
        if freq is not None:
            self._period_us = int(1_000_000 / freq)
        else:
            self._period_us = int(period * 1_000_000 // tick_hz)
        if self._period_us <= 0:
            raise ValueError("period must be > 0")
        self._mode = mode
        self._callback = callback
        self._due_us = world.now_us() + self._period_us
        world.timers.append(self)
        world.ensure_pump()

    def deinit(self):
        if self in world.timers:
            world.timers.remove(self)

    def value(self):
        left = self._due_us - world.now_us()
        return max(0, (self._period_us - left) // 1000)

    def _fire(self):
        if self._mode == Timer.PERIODIC:
            self._due_us += self._period_us
        else:
            self.deinit()
        if self._callback is not None:
            schedule(self._callback, self)


class WDT:
    # As ports/esp32/machine_wdt.c: one task watchdog; a second WDT() reconfigures its timeout
    # (esp_task_wdt_reconfigure) and there is no deinit: once started it cannot be stopped, only fed.
    # Ctrl-C changes nothing: a board left at the REPL is reset when the timeout runs out.
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError()
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self._timeout_ms = timeout
        # esp_task_wdt_reconfigure() rewrites the timeout; it does not feed: a running watchdog keeps
        # counting from its last feed.
        self._fed_us = world.wdt._fed_us if world.wdt is not None else world.now_us()
        world.wdt = self

    def feed(self):
        self._fed_us = world.now_us()


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            us = world.wall_time_us()
            y, mo, d, wd, h, mi, s = civil_from_epoch(us // 1_000_000)
            return (y, mo, d, wd, h, mi, s, us % 1_000_000)
        world.set_wall_time(epoch_from_civil(dt[0], dt[1], dt[2], dt[4], dt[5], dt[6]))

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        """RTC user memory: up to 2048 bytes, kept across resets, lost when the world powers off."""
        if data is None:
            return world.rtc_memory
        if len(data) > 2048:
            raise ValueError("buffer too long")
        world.rtc_memory = bytes(data)


def reset():
    world.reset_cause = HARD_RESET
    raise SimReset("machine.reset()")


def soft_reset():
    world.reset_cause = SOFT_RESET
    raise SimReset("machine.soft_reset()")


def reset_cause():
    return world.reset_cause


def unique_id():
    return b"\x24\x0a\xc4\x12\x34\x56"


def freq(hz=None):
    return 240_000_000 if hz is None else None


def idle():
    world.advance_us(1000)


def lightsleep(ms=None):
    world.advance_us((ms or 0) * 1000)


def deepsleep(ms=None):
    world.reset_cause = DEEPSLEEP_RESET
    raise SimReset("deepsleep")


def disable_irq():
    return 0


def enable_irq(state=0):
    pass

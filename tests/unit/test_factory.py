# Factory reset: the button held 10 s at power-up (on a board whose button is not GPIO0: BUT1, GPIO34, on
# the Olimex ESP32-POE) or the setup page's action.
import time

import machine
from powercut import files

from firmware import config, factory
from firmware.board import Board
from firmware.config import ConfigStore
from simworld import world
from support import tmpdir

IDENTITY = b'{"format": "open-meter-identity", "serial": "TEST1"}'


def _device():
    d = tmpdir()
    store = ConfigStore(d + "/config.json", log=lambda line: None)
    store.load()
    store.update({"wifi": {"ssid": "Panel", "password": "hunter2hunter2"}, "meter": {"model": "public"}})
    for name, data in (("identity.json", IDENTITY), ("energy.a", b"A" * 80), ("energy.b", b"B" * 80)):
        with open(d + "/" + name, "wb") as f:
            f.write(data)
    return d, store


BUT1 = 34  # the Olimex ESP32-POE's button (firmware/boards.py)


def _release_after(ms):
    t = machine.Timer(1)
    t.init(mode=machine.Timer.ONE_SHOT, period=ms, callback=lambda tim: world.release(BUT1))
    return t


def test_holding_the_button_10_s_at_power_up_clears_settings_but_keeps_identity_and_energy():
    d, store = _device()
    before = files(d)
    board = Board("olimex-esp32-poe")
    world.press(BUT1)  # held from power-up
    t0 = time.ticks_ms()
    lines = []
    assert factory.check_button(board.button, store, board.led, log=lines.append)
    held_ms = time.ticks_diff(time.ticks_ms(), t0)
    assert 10000 <= held_ms <= 10000 + factory.POLL_MS  # (the simulated clock wraps 5 s in: still 10 s)
    after = files(d)
    assert after["identity.json"] == before["identity.json"]
    assert after["energy.a"] == before["energy.a"] and after["energy.b"] == before["energy.b"]
    again = ConfigStore(d + "/config.json", log=lambda line: None)
    assert again.load().document() == config.defaults()
    assert again.needs_setup  # no WiFi any more: the setup access point comes up
    assert board.led.value() == 1  # steady light: released or not, the reset is done
    assert any("keep the button pressed" in x for x in lines)
    assert any("identity and energy counters kept" in x for x in lines)


def test_releasing_the_button_early_cancels():
    d, store = _device()
    before = files(d)
    board = Board("olimex-esp32-poe")
    world.press(BUT1)
    _release_after(6000)
    t0 = time.ticks_ms()
    lines = []
    assert not factory.check_button(board.button, store, board.led, log=lines.append)
    assert 6000 <= time.ticks_diff(time.ticks_ms(), t0) <= 6000 + factory.POLL_MS
    assert files(d) == before
    assert any("cancelled" in x for x in lines)
    assert board.led.value() == 0


def test_a_button_not_pressed_costs_no_time():
    d, store = _device()
    board = Board()
    t0 = time.ticks_us()
    assert not factory.check_button(board.button, store, board.led, log=lambda line: None)
    assert time.ticks_diff(time.ticks_us(), t0) == 0
    assert ConfigStore(d + "/config.json", log=lambda line: None).load()["wifi"]["ssid"] == "Panel"


def test_hold_time_and_clock_are_parameters():
    class Clock:  # any time source with the ticks API
        def __init__(self):
            self.now = 0

        def ticks_ms(self):
            return self.now

        def ticks_diff(self, a, b):
            return a - b

        def sleep_ms(self, ms):
            self.now += ms

    world.press(0)
    clock = Clock()
    assert factory.button_held(Board().button, hold_ms=3000, clock=clock)
    assert clock.now == 3000


def test_setup_page_action_resets_the_same_way():
    d, store = _device()
    before = files(d)
    cfg = factory.factory_reset(store, log=lambda line: None)
    assert cfg.document() == config.defaults()
    after = files(d)
    assert after["identity.json"] == before["identity.json"] and after["energy.b"] == before["energy.b"]

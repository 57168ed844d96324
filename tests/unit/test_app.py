# main.py's entry: a firmware that stops for any reason but Ctrl-C restarts the board.
import time

import machine

import simworld
from firmware import app
from firmware.board import Board
from firmware.bootguard import BootGuard
from firmware.meter import Meter
from simworld import world
from support import MICROPYTHON, on_flash, raises, skip
from tools.sim import mains


class _Stopped:
    def __init__(self, by_user):
        self.stopped_by_user = by_user


def _with_main(fn):
    real = app.main
    app.main = fn
    try:
        app.run_on_board()
    finally:
        app.main = real


def test_a_crash_restarts_the_board():
    def crash(**kw):
        raise RuntimeError("a task died")

    with raises(simworld.SimReset):
        _with_main(crash)
    assert machine.reset_cause() == machine.HARD_RESET


def test_an_unexpected_stop_restarts_the_board():
    with raises(simworld.SimReset):
        _with_main(lambda **kw: _Stopped(False))


def _start_after_ms(fn):
    """run_on_board() with main() = fn: how long it waited before calling main (simulated ms)."""
    t0 = time.ticks_ms()
    called = []

    def timed(**kw):
        called.append(time.ticks_diff(time.ticks_ms(), t0))
        return fn(**kw)

    try:
        _with_main(timed)
    except simworld.SimReset:
        pass
    return called[0]


def test_failed_starts_in_a_row_wait_longer_and_a_power_cycle_forgets_them():
    def crash(**kw):
        raise RuntimeError("a task died")

    waits = [_start_after_ms(crash) for _ in range(9)]
    assert waits == [0, 5000, 10000, 20000, 40000, 80000, 160000, 300000, 300000], waits  # capped at 5 min
    world.reset()  # power off and on: RTC memory is gone, the installer gets a prompt start
    assert _start_after_ms(lambda **kw: _Stopped(True)) == 0


def test_a_watchdog_reset_counts_as_a_failed_start_and_stable_running_clears_the_count():
    world.reset_cause = machine.WDT_RESET  # the meter had stalled
    assert _start_after_ms(lambda **kw: _Stopped(True)) == 5000
    guard = BootGuard(Board())
    assert guard.failures == 1
    guard.stable()  # STABLE_MS measuring without a fault
    world.reset_cause = machine.SOFT_RESET
    assert BootGuard(Board()).failures == 0 and _start_after_ms(lambda **kw: _Stopped(True)) == 0
    world.rtc_memory = b"garbage from another firmware"
    assert BootGuard(Board()).failures == 0


def test_ctrl_c_leaves_the_developer_at_the_repl():
    _with_main(lambda **kw: _Stopped(True))  # returns: no reset
    assert machine.reset_cause() == machine.PWRON_RESET


def test_the_watchdog_is_fed_only_while_windows_keep_closing():
    mains.connect(world, mains.load_scenario({"phases": [{"irms": 10.0}] * 3}))
    board = Board()
    meter = Meter(board)
    meter.start()
    wdt = board.watchdog(app.WDT_TIMEOUT_MS)
    fed = 0
    for _ in range(30):  # 30 s of healthy metering: the board keeps running
        for _ in range(app.WDT_FEED_MS // 10):
            world.advance_us(10_000)
            meter.poll()
        fed += app.feed_if_healthy(wdt, meter)
    assert fed == 30
    meter.stop()  # the meter stalls: no more windows, no more feeding, and the board restarts
    with raises(simworld.SimReset):
        for _ in range(30):
            world.advance_us(app.WDT_FEED_MS * 1000)
            app.feed_if_healthy(wdt, meter)
    assert machine.reset_cause() == machine.WDT_RESET


def test_the_status_led_says_setup_connecting_online_and_fault():
    class Links:
        ap_up = False
        online_via = None
        reset_at = None
        holding = False

        def held_past_short_press(self):
            return self.holding

    class Uploader:
        status = {"state": "ok"}

    class Dev:
        pass

    mains.connect(world, mains.load_scenario({"phases": [{"irms": 10.0}] * 3}))
    d = Dev()
    d.meter, d.links, d.uploader = Meter(Board()), Links(), Uploader()
    assert app.led_state(d) == "connecting"
    d.links.ap_up = True
    assert app.led_state(d) == "setup"
    d.links.ap_up, d.links.online_via = False, "wifi"
    assert app.led_state(d) == "online"
    d.uploader.status = {"state": "retrying"}
    assert app.led_state(d) == "uploading_failed"
    world.advance_us(10_000_000)  # no window has closed for 10 s: measurement is not healthy
    assert app.led_state(d) == "fault"
    d.links.holding = True  # the button held past a short press: its own feedback comes first
    assert app.led_state(d) == "button_hold"
    d.links.reset_at = time.ticks_ms()
    assert app.led_state(d) == "reset_done"
    world.advance_us(app.RESET_SHOWN_MS * 1000)
    d.links.holding = False
    assert app.led_state(d) == "fault" and d.links.reset_at is None  # shown, then forgotten for good
    assert set(app.LED_PATTERNS) == {"fault", "setup", "connecting", "online", "uploading_failed", "button_hold",
                                     "reset_done"}


def test_a_failing_task_is_started_again_after_a_pause_that_doubles():
    if not MICROPYTHON:
        skip("the composition root's tasks use MicroPython's asyncio (sleep_ms)")
    import asyncio

    world.set_realtime()  # asyncio waits in real time here
    starts = []

    async def flaky():
        starts.append(time.ticks_ms())
        if len(starts) <= 3:
            raise OSError("the radio said no")
        return None  # the fourth start has nothing to do and ends on purpose

    class Dev:
        task_failures = {}

    real = app.TASK_RESTART_MS
    app.TASK_RESTART_MS = (20, 50)
    try:
        asyncio.run(app._supervise(Dev, "portal", flaky))
    finally:
        app.TASK_RESTART_MS = real
        asyncio.new_event_loop()
    pauses = [time.ticks_diff(b, a) for a, b in zip(starts, starts[1:])]
    assert Dev.task_failures == {"portal": 3} and len(starts) == 4
    assert 20 <= pauses[0] < 35 and 40 <= pauses[1] < 55 and 50 <= pauses[2] < 65, pauses  # doubling, capped


def test_ten_healthy_minutes_clear_the_failed_starts():
    if not MICROPYTHON:
        skip("the composition root's tasks use MicroPython's asyncio (sleep_ms)")
    import asyncio

    world.set_realtime()
    board = Board()
    guard = BootGuard(board)
    guard.failed()
    guard.failed()

    class Meter:
        healthy_now = False

        def healthy(self, now_ms):
            return self.healthy_now

    class Dev:
        pass

    Dev.board, Dev.meter, Dev.boot_guard = board, Meter(), guard
    real = app.STABLE_MS, app.WDT_FEED_MS
    app.STABLE_MS, app.WDT_FEED_MS = 100, 10

    async def run(ms):
        try:
            await asyncio.wait_for(app._watchdog(Dev), ms / 1000)
        except asyncio.TimeoutError:
            pass

    try:
        asyncio.run(run(200))  # past STABLE_MS, but the meter is not healthy: nothing is forgotten
        assert BootGuard(board).failures == 2
        Dev.meter.healthy_now = True
        asyncio.run(run(200))
        assert BootGuard(board).failures == 0  # the count in RTC memory is cleared
    finally:
        app.STABLE_MS, app.WDT_FEED_MS = real
        world.wdt = None  # the simulated watchdog cannot be stopped either: power the world off
        asyncio.new_event_loop()


def test_a_restart_says_what_energy_it_restored_and_why_record_numbers_jump():
    from firmware.energy_store import EnergyStore
    from firmware.spool import SEQ_BLOCK, Spool

    with on_flash():
        said = []
        app.Device(log=said.append)
        assert not [x for x in said if "restored from" in x or "record numbers" in x]  # a first start
        # What a run leaves on the flash: saved counters, and records numbered.
        EnergyStore().save({"import_mwh": [2000000, 0, 0], "export_mwh": [0, 0, 0], "net_import_mwh": 2000000,
                            "net_export_mwh": 0})
        spool = Spool(log=lambda m: None)
        spool.add({"n": 0})
        spool.shutdown()
        said = []
        app.Device(log=said.append)
        assert "energy: restored from energy.a (save 1): net import 2.000 kWh, net export 0.000 kWh" in said, said
        assert [x for x in said if x.startswith("upload: record numbers go on from %d" % SEQ_BLOCK)], said


def test_energy_never_goes_back_on_the_wire_when_both_saved_slots_are_lost():
    from firmware.spool import Spool

    with on_flash():
        counters = {"import_mwh": [3000000, 0, 0], "export_mwh": [0, 0, 0], "net_import_mwh": 3000000,
                    "net_export_mwh": 0}
        spool = Spool(log=lambda m: None)
        spool.add({"energy_mwh": counters})  # uploaded or not, the wire saw 3 kWh
        spool.shutdown()
        for name in ("energy.a", "energy.b"):
            with open(name, "wb") as f:
                f.write(b"damaged")
        said = []
        d = app.Device(log=said.append)
        assert d.energy.snapshot() == counters  # not zero
        assert [x for x in said if "newest spooled record (seq 0)" in x and "net import 3.000 kWh" in x], said
        assert [x for x in said if "damaged" in x]  # and why the slots were not used
        # A damaged line that parses is no counters to go on from (nor a reason not to start).
        for bad in ([10 ** 30, 0, 0], [1e999, 0, 0], ["99999999", 0, 0], []):
            spool = Spool(log=lambda m: None)
            spool.add({"energy_mwh": dict(counters, import_mwh=bad)})
            spool.shutdown()
            d = app.Device(log=said.append)
            assert d.energy.snapshot() == counters, bad  # from the good record before it


def test_a_button_held_at_power_up_resets_the_settings_only_where_it_is_not_gpio0():
    from firmware.config import ConfigStore

    with on_flash():
        for profile, button, reset in (("esp32-devkitc", 0, False), ("olimex-esp32-poe", 34, True)):
            store = ConfigStore(log=lambda m: None)
            store.load()
            store.update({"wifi": {"ssid": "Panel", "password": "hunter2hunter2"}, "board": {"profile": profile}})
            world.reset()
            world.press(button)  # held from before power-up, and for the whole hold time
            said = []
            log = said.append
            mode = world.boot(lambda: app.Device(log=log), log=log)  # noqa: B023  (run here, at once)
            # BOOT (GPIO0) held at reset: the ROM's bootloader, the firmware never starts.
            assert mode == ("flash" if reset else "download"), said
            assert (ConfigStore(log=lambda m: None).load()["wifi"]["ssid"] == "") == reset
            assert any("keep the button pressed" in x for x in said) == reset
    world.reset()


def test_at_the_repl_the_watchdog_that_cannot_be_stopped_does_not_reset_the_board():
    # Ctrl-C (also mpremote's raw REPL during `make deploy`): the ESP32's watchdog keeps running.
    class Dev:
        board = Board()
        wdt = None

    Dev.wdt = Dev.board.watchdog(app.WDT_TIMEOUT_MS)
    world.advance_us(5_000_000)
    app.calm_watchdog(Dev)
    world.advance_us(30 * 60 * 1_000_000)  # half an hour at the REPL, deploying: no reset
    assert machine.reset_cause() == machine.PWRON_RESET
    # Without it the board resets within the running timeout (what a deploy used to run into).
    Dev.wdt = Dev.board.watchdog(app.WDT_TIMEOUT_MS)
    with raises(simworld.SimReset):
        world.advance_us(app.WDT_TIMEOUT_MS * 1000 + 1_000_000)

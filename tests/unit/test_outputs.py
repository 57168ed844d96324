# The seam for readings and the one live path for settings (firmware/app.py Device): every output gets
# each window, a failing one is said once and stops nothing; a changed setting reaches the running
# parts, whether it comes from a fix, a calibration undo, a factory reset or the button.
from firmware import app, config
from firmware.board import Board
from firmware.config import ConfigError
from firmware.energy_store import EnergyPersister, EnergyStore
from firmware.meter import Meter
from simworld import world
from support import MICROPYTHON, on_flash, raises, skip
from tools.sim import mains


class Counting:
    name = "counting"

    def __init__(self):
        self.seen = []

    def on_readings(self, readings):
        self.seen.append(readings["phases"][0]["vrms"])


class Broken:
    name = "broken"

    def on_readings(self, readings):
        raise ValueError("no room for %d phases" % len(readings["phases"]))


def _device(said, outputs_extra=()):
    world.reset()
    mains.connect(world, mains.load_scenario({"phases": [{"irms": 5.0}] * 3}))
    return app.Device(log=said.append, outputs_extra=outputs_extra)


def _window(d):
    """One measurement window of the device's meter (as its task would take it)."""
    d.meter.start()
    try:
        for _ in range(3000):
            world.advance_us(1000)
            r = d.meter.poll()
            if r is not None:
                return r
    finally:
        d.meter.stop()
    raise AssertionError("no window closed")


def test_every_output_gets_each_window_and_a_failing_one_is_said_once_and_stops_nothing():
    with on_flash():
        said = []
        counting = Counting()
        d = _device(said, [Broken(), counting])
        # The device's own first (the interval recorder, the HTTPS transport), then the extra ones.
        assert [o.name for o in d.outputs] == ["recorder", "uploader", "broken", "counting"]
        r = _window(d)
        for _ in range(3):
            d.on_readings(r)
        assert d.windows == 3 and len(counting.seen) == 3 and abs(counting.seen[0] - 230.0) < 2
        assert d.output_failures == {"broken": 3}
        lines = [x for x in said if "broken" in x]
        assert len(lines) == 1, said  # said once, not once a window
        assert "ValueError: no room for 3 phases" in lines[0] and "the meter and the other outputs go on" in lines[0]
        assert d.meter.errors == 0  # not a failed window: the meter's own count stays clean


def test_the_device_own_defaults_are_the_schema_ones():
    # One owner of defaults: the parts built without settings take the schema's (firmware/configcheck.py).
    with on_flash():
        world.reset()
        defaults = config.defaults()
        assert Meter(Board()).settings == defaults["meter"]
        p = EnergyPersister(EnergyStore())
        e = defaults["energy"]
        assert (p.max_interval_ms, p.max_unsaved_mwh, p.min_interval_ms) == (
            e["save_max_interval_s"] * 1000, e["save_max_unsaved_wh"] * 1000, e["save_min_interval_s"] * 1000)
        assert config.section("upload", {"record_interval_s": 30}) == dict(defaults["upload"], record_interval_s=30)


def test_a_changed_setting_reaches_every_running_part_and_what_needs_a_restart_is_said():
    with on_flash():
        said = []
        d = _device(said)
        recorder, uploader = d.outputs[0], d.uploader
        later = d.apply({"meter": {"ct_reversed": [True, False, False], "window_ms": 2000},
                         "energy": {"save_min_interval_s": 60, "save_max_unsaved_wh": 20},
                         "upload": {"record_interval_s": 30, "live_interval_ms": 2000}})
        assert later == []  # all taken live
        assert d.meter.settings["ct_reversed"] == [True, False, False] and d.meter.settings["window_ms"] == 2000
        assert d.persister.min_interval_ms == 60000 and d.persister.max_unsaved_mwh == 20000
        assert recorder.record_interval_ms == 30000
        assert uploader.live_interval_ms == 2000 and uploader.stale_ms == 4000
        assert config.ConfigStore(log=lambda m: None).load()["upload"]["record_interval_s"] == 30  # and saved
        # Saved, but in force only after a restart: the sample buffers are sized for burst_cycles, and
        # whether uploads are on at all was decided at start-up. Said on the console too.
        later = d.apply({"meter": {"burst_cycles": 3, "burst_period_ms": 200}, "upload": {"url": "https://cloud.example/"}})
        assert later == ["meter.burst_cycles", "upload.url"]
        assert d.meter.cycles == 2 and d.meter.settings["burst_cycles"] == 2  # what it measures with
        assert "config: in force after a restart: meter.burst_cycles, upload.url" in said
        assert d.store.config["meter"]["burst_cycles"] == 3
        # A bad change: refused, naming the setting; nothing saved, nothing running changed.
        with raises(ConfigError) as e:
            d.apply({"meter": {"window_ms": 5, "ct_phase": [2, 1, 3]}})
        assert "meter.window_ms" in str(e.value)
        assert d.meter.settings["window_ms"] == 2000 and d.meter.settings["ct_phase"] == [1, 2, 3]
        assert d.store.config["meter"]["ct_phase"] == [1, 2, 3]


def test_a_factory_reset_takes_every_running_part_back_to_the_defaults_at_once():
    for by_button in (False, True):
        with on_flash():
            said = []
            d = _device(said)
            v_default = d.meter.v_cal[0].units_per_code
            d.apply({"meter": {"ct_phase": [2, 1, 3], "burst_cycles": 3, "burst_period_ms": 200},
                     "energy": {"save_min_interval_s": 60}, "upload": {"record_interval_s": 30}})
            assert d.portal.apply_fix({"ct": "2", "reversed": "1"})[0]  # the setup page's fix, same path
            assert d.meter.settings["ct_reversed"] == [False, True, False]
            cal = {"voltage": [{"divider_ratio": 700.0}, {}, {}], "current": [{}, {}, {}]}
            d.apply({"meter": {"calibration": cal}})
            v_before = d.meter.v_cal[0].units_per_code
            # the setup page's undo of a calibration: the channels anew, at once
            d.portal.cal_undo = {}
            assert d.portal.undo_calibration()[0] and d.meter.settings["calibration"] == {}
            assert d.meter.v_cal[0].units_per_code != v_before
            d.apply({"meter": {"calibration": cal}})
            said.clear()
            if by_button:
                assert d._factory_reset_by_button()
            else:
                assert d.portal.factory_reset()[0]
            defaults = config.defaults()
            m = d.meter.settings
            assert m["ct_reversed"] == [False] * 3 and m["ct_phase"] == [1, 2, 3] and m["calibration"] == {}
            assert d.meter.v_cal[0].units_per_code == v_default  # the calibration is gone from the channels too
            assert d.persister.min_interval_ms == defaults["energy"]["save_min_interval_s"] * 1000
            assert d.outputs[0].record_interval_ms == defaults["upload"]["record_interval_s"] * 1000
            # burst_cycles was only saved (3), never in force: back to 2 is nothing to restart for
            assert not [x for x in said if "after a restart" in x], said


def test_an_output_task_is_supervised_and_every_output_is_stopped_in_order():
    if not MICROPYTHON:
        skip("the composition root's tasks use MicroPython's asyncio (sleep_ms)")
    import asyncio

    class Flaky(Counting):
        name = "flaky"

        def __init__(self):
            Counting.__init__(self)
            self.starts = 0
            self.stopped = False

        async def run(self):
            self.starts += 1
            if self.starts <= 2:
                raise OSError("the broker hung up")
            while True:
                await asyncio.sleep_ms(50)

        def shutdown(self):
            self.stopped = True

    class BadStop(Counting):
        name = "badstop"

        def shutdown(self):
            raise OSError("flash full")

    with on_flash():
        said = []
        flaky, bad = Flaky(), BadStop()
        d = _device(said, [bad, flaky])
        world.set_realtime()  # asyncio waits in real time here
        d.portal_options = {"host": "127.0.0.1", "http_port": 0, "dns_port": 0}
        real = app.TASK_RESTART_MS
        app.TASK_RESTART_MS = (20, 50)
        try:
            asyncio.run(app._run(d, 1500))
        finally:
            app.TASK_RESTART_MS = real
            asyncio.new_event_loop()
        assert flaky.starts == 3 and d.task_failures.get("flaky") == 2, (flaky.starts, d.task_failures)
        assert len(flaky.seen) >= 1 and len(bad.seen) == len(flaky.seen)  # both fed every window
        writes = d.persister.writes
        d.shutdown()
        assert flaky.stopped  # after the one whose stop failed
        assert [x for x in said if "badstop output did not stop cleanly (OSError" in x], said
        assert d.persister.writes == writes + 1  # and the energy counters were saved all the same

# run_main — the child side of `python -m tools.sim run`: the meter's measurement chain on simulated mains.
#
#     micropython tools/sim/run_main.py SCENARIO.json DURATION_S REPORT.json    (MICROPYPATH from tools/mp.py)
#     python tools/sim/run_main.py SCENARIO.json DURATION_S REPORT.json         (CPython: sets up its own path)
#     micropython tools/sim/run_main.py SCENARIO.json DURATION_S REPORT.json --upload
#                                                   (the whole device in real time, uploading: see run_uploading)
#     ... [--board NAME]                            (the board profile simulated: firmware/boards.py)
#
# Runs in the state directory (the parent sets the working directory), so the firmware's relative
# files (config, energy counters) persist there between runs as they would on flash. Time is
# virtual: the loop advances the simulated clock STEP_US at a time, lets the meter's timer fire and
# polls the meter, until the duration has passed. The report goes to REPORT.json; stdout is free for
# the firmware's own chatter (the parent passes it on to its stderr).

import sys

if sys.implementation.name != "micropython":
    import os

    _ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path[:0] = [_ROOT, os.path.join(_ROOT, "lib")]
    from tools import mpshim

    mpshim.install()
    sys.path.insert(0, os.path.join(_ROOT, "tools", "simboard"))  # after mpshim: simworld patches time

import json  # noqa: E402
import time  # noqa: E402

import simworld  # noqa: E402
from tools.sim import mains  # noqa: E402

STEP_US = 1000  # how often the driver polls the meter: an asyncio loop on the board polls about as often


def settings_for(scenario):
    """The meter's settings: the scenario's model, wiring detected, then the scenario's "meter" object."""
    settings = {"model": scenario["model"], "wiring": "auto"}
    settings.update(scenario["meter"])
    return settings


def saved_settings():
    """The meter section of config.json in the state directory (e.g. the installer's calibration that
    `tools.sim calibrate` saved there), as the device would load it; {} when there is none."""
    import os

    try:
        os.stat("config.json")
    except OSError:
        return {}
    from firmware.config import ConfigStore

    store = ConfigStore(log=lambda m: sys.stderr.write("sim: %s\n" % m))
    return dict(store.load()["meter"])


def run(scenario, duration_s, board=None):
    world = simworld.world
    mains.connect(world, scenario, board)
    try:
        from firmware import boards, config
        from firmware.board import Board
        from firmware.energy import Energy
        from firmware.energy_store import EnergyPersister, EnergyStore
        from firmware.meter import Meter
    except ImportError as e:
        sys.stderr.write("sim: cannot import the meter (firmware/meter.py): %s\n" % e)
        raise SystemExit(3)
    # Energy counters live in the state directory, as on flash: a later run continues from them.
    energy = Energy()
    store = EnergyStore()
    energy.restore(store.load())
    if store.restored_line() is not None:  # a later run on the same state dir, as a rebooted board says it
        print("energy: " + store.restored_line())
    persister = EnergyPersister(store)
    # The device's own settings first (as app.py takes them), the scenario's on top, over the defaults.
    settings = saved_settings()
    settings.update(settings_for(scenario))
    meter = Meter(Board(board or boards.DEFAULT), config.section("meter", settings), energy)
    # The run starts at a rising zero crossing of L1: mains cycle 0 of cycle patterns, time 0 of steps.
    world.advance_us(max(0, mains.run_origin_us(world, scenario) - world.now_us()))
    meter.start()
    end_us = world.now_us() + int(duration_s * 1_000_000)
    # A burst cannot be cut short, so none starts in the last stretch: then the run ends exactly at
    # the duration, and the energy counters cover exactly that long.
    guard_us = (meter.settings.get("burst_cycles", 2) + 3) * 1_000_000 // 45
    windows = 0
    while True:
        left = end_us - world.now_us()
        if left <= 0:
            break
        world.advance_us(STEP_US if left > STEP_US else left)
        if end_us - world.now_us() > guard_us and meter.poll() is not None:
            windows += 1
            persister.maybe_save(energy.snapshot(), time.ticks_ms())
    # Close the window the run ended in, so the energy counters cover the whole duration (a board
    # keeps counting; here the run stops, and a partial window would otherwise be lost).
    meter.close_window()
    meter.stop()
    persister.save(energy.snapshot(), time.ticks_ms())  # an orderly stop
    sys.stderr.write("sim: %d measurement windows closed, then the last partial one\n" % windows)
    return meter.report()


def run_uploading(scenario, duration_s, board=None):
    """The whole device (firmware/app.py) in real time, uploading as config.json in the state dir says.

    Network I/O cannot run in virtual time (the server, TLS and the timeouts keep real time), so
    with uploads the simulated clock follows the host's, as in `tools.sim device`.
    """
    world = simworld.world
    world.set_realtime()
    world.lan_link = True  # the Ethernet cable is in (config.json enables the LAN)
    mains.connect(world, scenario, board)
    from firmware import app
    from tools.sim.simnet import SimBoard

    windows = WindowCount()  # an output of the device's own, beside the recorder and the uploader
    device = app.main(board=SimBoard(board) if board else SimBoard(), run_ms=int(duration_s * 1000),
                      meter_overrides=settings_for(scenario), board_profile=board, outputs_extra=[windows])
    report = device.meter.report()
    report["upload"] = device.uploader.status
    report["windows"] = {"count": windows.count, "max_gap_ms": windows.max_gap_ms}
    return report


class WindowCount:
    """The report's output (firmware/app.py, Device's outputs): counts the measurement windows and
    the longest gap between two, since the network must never stall them."""

    name = "sim report"

    def __init__(self):
        self.count = 0
        self.max_gap_ms = 0
        self._last_ms = None

    def on_readings(self, readings):
        now = time.ticks_ms()
        if self._last_ms is not None:
            self.max_gap_ms = max(self.max_gap_ms, time.ticks_diff(now, self._last_ms))
        self._last_ms = now
        self.count += 1


def main(argv):
    scenario_path, duration_s, report_path = argv[0], float(argv[1]), argv[2]
    board = argv[argv.index("--board") + 1] if "--board" in argv else None
    with open(scenario_path) as f:
        scenario = mains.load_scenario(json.load(f))
    run_it = run_uploading if "--upload" in argv else run
    report = run_it(scenario, duration_s, board)
    with open(report_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1:])

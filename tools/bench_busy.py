# bench_busy — how much of the VM's time the bursts take at the ESP32's ADC read time (runs under MicroPython).
#
# The simulated clock advances inside a burst only by the ADC conversions (35 µs each, as on the
# ESP32): waiting for the zero crossing, the whole cycles, the extra pairs. So the simulated time
# spent inside Meter.poll() is the time the bursts keep the VM busy on the board, less the kernels'
# and the metering's own (tools/bench_chain.py measures those on this host; BENCHMARKS.md projects
# them). What is left is for WiFi's Python side, TLS, the uploads and the setup page.
#
#   MICROPYPATH=tools/simboard:.:lib micropython tools/bench_busy.py [SECONDS] [METER_SETTINGS_JSON]
#                                                                   prints one JSON object

import json
import sys

import simworld
from firmware import config
from firmware.board import Board
from firmware.meter import Meter
from tools.sim import mains


def main(seconds, settings):
    world = simworld.world
    world.reset()
    s = mains.load_scenario({"noise_lsb": 1.0, "phases": [{"irms": 10.0, "phase_deg": 15.0} for _ in range(3)]})
    mains.connect(world, s)
    meter = Meter(Board(), config.section("meter", settings))
    meter.start()
    end = world.now_us() + seconds * 1_000_000
    busy_us = 0
    bursts = 0
    while world.now_us() < end:
        world.advance_us(1000)
        before = world.now_us()
        meter.poll()
        spent = world.now_us() - before
        if spent:
            busy_us += spent
            bursts += 1
    meter.stop()
    print(json.dumps({"simulated_s": seconds, "settings": settings, "bursts": bursts,
                      "busy_fraction": busy_us / (seconds * 1_000_000), "busy_ms_per_burst": busy_us / 1000 / bursts}))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 60, json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})

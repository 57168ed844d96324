# bench_blocking — what a call that blocks the VM does to the measurement (runs under MicroPython).
#
# On the ESP32, WLAN.scan() (~2 s), ntptime.settime() (up to its 1 s socket timeout, plus the name
# lookup) and socket.getaddrinfo() (lwIP's DNS: seconds when the server does not answer) block the
# whole VM: no burst is taken meanwhile, and the timer's scheduled callbacks (each only sets the
# meter's flag) lead to one burst after it. This
# runs the meter in virtual time on the simulated board (as tools/sim/run_main.py does), blocks it
# for D seconds three times in 120 s, and compares with the same run without blocks, in one process:
# the longest window, and the energy counted (steady load: ratio to the unblocked run; a load that
# doubles the moment the block starts: the energy the block hides).
#
#   MICROPYPATH=tools/simboard:.:lib micropython tools/bench_blocking.py [quick]   prints one JSON object

import json
import sys

import simworld
from firmware.board import Board
from firmware.energy import Energy
from firmware.meter import Meter
from tools.sim import mains

QUICK = "quick" in sys.argv[1:]
DURATION_S = 40 if QUICK else 120
BLOCKS_AT_S = (10, 20, 30) if QUICK else (30, 60, 90)
BLOCKS_S = (2.0,) if QUICK else (0.1, 1.0, 2.0, 5.0)  # a cached lookup; an NTP timeout; a scan; a DNS timeout
STEP_US = 1000


def _scenario(amps):
    return mains.load_scenario({"noise_lsb": 1.0, "phases": [{"vrms": 230.0, "irms": amps, "phase_deg": 15.0}
                                                             for _ in range(3)]})


def run(block_s, step_load=False):
    """(net import mWh, longest window ms) of DURATION_S with the VM blocked block_s at BLOCKS_AT_S
    (none: 0), the load doubling at the first of those times if step_load."""
    world = simworld.world
    world.reset()
    mains.connect(world, _scenario(10.0))
    energy = Energy()
    meter = Meter(Board(), None, energy)
    meter.start()
    t0 = world.now_us()
    end = t0 + DURATION_S * 1_000_000
    events = [t0 + s * 1_000_000 for s in BLOCKS_AT_S]
    longest_ms = 0
    last = world.now_us()
    while world.now_us() < end:
        if events and world.now_us() >= events[0]:
            first = len(events) == len(BLOCKS_AT_S)
            events.pop(0)
            if step_load and first:
                mains.connect(world, _scenario(20.0))  # the load doubles as the VM blocks...
            if block_s:
                world.advance_us(int(block_s * 1_000_000))  # ...and nothing is measured meanwhile
        world.advance_us(STEP_US)
        if meter.poll() is not None:
            now = world.now_us()
            longest_ms = max(longest_ms, (now - last) // 1000)
            last = now
    meter.close_window()  # the partial window the run ended in: both runs count exactly DURATION_S
    meter.stop()
    return energy.snapshot()["net_import_mwh"], longest_ms


def main():
    out = {"duration_s": DURATION_S, "blocks_at_s": list(BLOCKS_AT_S), "cases": []}
    base_mwh, base_ms = run(0)
    step_base, _ = run(0, step_load=True)  # the same step, measured throughout
    for d in BLOCKS_S:
        mwh, longest = run(d)
        step_mwh, _ = run(d, step_load=True)
        out["cases"].append({"block_s": d, "longest_window_ms": longest, "steady_energy_ratio": mwh / base_mwh,
                             "step_energy_error_wh": (step_mwh - step_base) / 1000,
                             "step_energy_error": (step_mwh - step_base) / step_base})
    out["unblocked_longest_window_ms"] = base_ms
    print(json.dumps(out))


main()

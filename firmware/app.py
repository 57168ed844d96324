# app — the composition root: builds the board and the meter's parts and runs their tasks.
#
# main.py calls main(); the desktop simulator calls it too, with the simulated board underneath.

import asyncio
import time

from firmware import VERSION
from firmware.board import Board
from firmware.meter import Meter


def format_readings(r):
    """One console line per window: what an installer watching the serial port wants to see."""
    parts = []
    for ph in r["phases"]:
        parts.append("L%d %5.1fV %6.2fA %7.0fW %-6s" % (ph["phase"], ph["vrms"], ph["irms"], ph["real_power_w"],
                                                        ph["direction"]))
    t = r["total"]
    line = "%s | %.2fHz %s | total %.0fW in %.3fkWh out %.3fkWh" % (
        " | ".join(parts), r["frequency_hz"], r["wiring"], t["real_power_w"], t["net_import_wh"] / 1000,
        t["net_export_wh"] / 1000)
    for d in r["diagnostics"]:
        line += "\n  ! %s" % d["message"]
    return line


class Console:
    """Prints readings every print_every windows, and diagnostics whenever they change."""

    def __init__(self, print_every=1):
        self.print_every = print_every
        self._n = 0
        self._last_codes = None

    def __call__(self, readings):
        codes = [(d["code"], d["phase"]) for d in readings["diagnostics"]]
        self._n += 1
        if self._n >= self.print_every or codes != self._last_codes:
            self._n = 0
            print(format_readings(readings))
        self._last_codes = codes


async def _heartbeat(board, period_ms):
    """Blink the status LED so a glance at the board says the event loop is alive."""
    while True:
        board.led.value(not board.led.value())
        await asyncio.sleep_ms(period_ms)


async def _run(board, meter, on_readings, run_ms):
    tasks = [asyncio.create_task(meter.run(on_readings)), asyncio.create_task(_heartbeat(board, 500))]
    if run_ms is None:
        await tasks[0]
    else:
        await asyncio.sleep_ms(run_ms)
    for t in tasks:
        t.cancel()


def main(board=None, settings=None, run_ms=None, print_every=1):
    """Run the meter until Ctrl-C (or for run_ms, in tests and the simulator)."""
    print("meter: firmware %s starting" % VERSION)
    board = board or Board()
    meter = Meter(board, settings)
    t0 = time.ticks_ms()
    try:
        asyncio.run(_run(board, meter, Console(print_every), run_ms))
    except KeyboardInterrupt:
        pass
    finally:
        meter.stop()
        asyncio.new_event_loop()
        board.led.value(0)
    print("meter: stopped after %d s" % (time.ticks_diff(time.ticks_ms(), t0) // 1000))
    return meter

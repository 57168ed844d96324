# app — the composition root: builds the board and the meter's parts and runs their tasks.
#
# main.py calls main(); the desktop simulator calls it too, with the simulated board underneath.

import asyncio
import time

from firmware import VERSION
from firmware.board import Board


async def _heartbeat(board, period_ms):
    """Blink the status LED and report that the loop is alive."""
    start = time.ticks_ms()
    while True:
        board.led.value(not board.led.value())
        up_s = time.ticks_diff(time.ticks_ms(), start) // 1000
        print("meter: alive, up %d s, button %s" % (up_s, "pressed" if board.button.value() == 0 else "up"))
        await asyncio.sleep_ms(period_ms)


async def _run(board, run_ms):
    hb = asyncio.create_task(_heartbeat(board, 5000))
    if run_ms is None:
        await hb
    else:
        await asyncio.sleep_ms(run_ms)
        hb.cancel()


def main(board=None, run_ms=None):
    """Run the meter until Ctrl-C (or for run_ms, in tests)."""
    print("meter: firmware %s starting" % VERSION)
    board = board or Board()
    try:
        asyncio.run(_run(board, run_ms))
    except KeyboardInterrupt:
        pass
    finally:
        asyncio.new_event_loop()
        board.led.value(0)
    print("meter: stopped")

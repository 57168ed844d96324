# device_main — the whole meter on the simulated board, in real time (runs under MicroPython).
#
# Started by `python -m tools.sim device`; stops cleanly on Ctrl-C.
import sys

import simworld

simworld.world.set_realtime()
for v, i in ((36, 35), (39, 32), (34, 33)):
    # Inputs idle at the front end's mid-scale bias until the simulated mains is connected.
    simworld.world.sources[v] = simworld.ConstantSource(2048)
    simworld.world.sources[i] = simworld.ConstantSource(2048)

from firmware import app  # noqa: E402

run_ms = int(sys.argv[1]) if len(sys.argv) > 1 else None
app.main(run_ms=run_ms)

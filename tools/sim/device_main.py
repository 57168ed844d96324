# device_main — the whole meter on the simulated board, in real time (runs under MicroPython).
#
# Started by `python -m tools.sim device` as `device_main.py STATE_DIR [RUN_MS]`; stops cleanly on
# Ctrl-C. STATE_DIR stands in for the board's flash: the firmware uses relative file names (on the
# board the working directory is /), so running it from inside STATE_DIR keeps config.json,
# identity.json and the energy counters there, from one run to the next.
import os
import sys

import simworld

os.chdir(sys.argv[1])  # before the firmware starts: its relative paths land in the state folder
print("sim: device filesystem in %s" % os.getcwd())
simworld.world.set_realtime()
for v, i in ((36, 35), (39, 32), (34, 33)):
    # Inputs idle at the front end's mid-scale bias until the simulated mains is connected.
    simworld.world.sources[v] = simworld.ConstantSource(2048)
    simworld.world.sources[i] = simworld.ConstantSource(2048)

from firmware import app  # noqa: E402

run_ms = int(sys.argv[2]) if len(sys.argv) > 2 else None
app.main(run_ms=run_ms)

# device_main — the whole meter on the simulated board, in real time (runs under MicroPython).
#
# Started by `python -m tools.sim device` as `device_main.py STATE_DIR SCENARIO.json [RUN_MS]`; stops cleanly on
# Ctrl-C. STATE_DIR stands in for the board's flash: the firmware uses relative file names (on the
# board the working directory is /), so running it from inside STATE_DIR keeps config.json,
# identity.json and the energy counters there, from one run to the next.
import os
import sys

import simworld

os.chdir(sys.argv[1])  # before the firmware starts: its relative paths land in the state folder
print("sim: device filesystem in %s" % os.getcwd())
import json  # noqa: E402

from tools.sim import mains  # noqa: E402

simworld.world.set_realtime()
with open(sys.argv[2]) as f:
    scenario = mains.load_scenario(json.load(f))
mains.connect(simworld.world, scenario)  # the simulated mains on the six ADC inputs
print("sim: mains from %s: %s" % (sys.argv[2], scenario.get("description") or "no description"))

from firmware import app  # noqa: E402
from tools.sim.simnet import SimBoard  # noqa: E402  (DNS and NTP answered by the simulation)

# The simulated hardware is the scenario's model; its "meter" object overrides the stored settings.
overrides = {"model": scenario["model"]}
overrides.update(scenario["meter"])
run_ms = int(sys.argv[3]) if len(sys.argv) > 3 else None
# The setup page on the desktop: http://127.0.0.1:8080 (DNS catch-all on 127.0.0.1:8053), never 0.0.0.0.
app.main(board=SimBoard(), run_ms=run_ms, meter_overrides=overrides,
         portal_options={"host": "127.0.0.1", "http_port": 8080, "dns_port": 8053, "always": True})

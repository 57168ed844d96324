# portal_main — the meter with its setup portal on 127.0.0.1, on the simulated board (runs under MicroPython).
#
# Started by `python -m tools.sim portal` as
#   portal_main.py STATE_DIR SCENARIO.json NETWORKS.json HTTP_PORT DNS_PORT [RUN_MS]
# NETWORKS.json scripts the simulated radio: {"networks": [{"ssid", "password" (null: open), "rssi",
# "channel", "dhcp" (false: joins but gets no address), "hidden", "ip"}], "connect_delay_ms",
# "lan_link"}, checked by tools/sim/radio.py (the host has refused a bad file before starting this).
# The portal serves the same pages as on the board's access point; the address it redirects phones
# to stays the AP's (192.168.251.1). GET /_sim/heap (simulator only) reports the heap after a collection.
import gc
import json
import os
import sys

import simworld

state_dir, scenario_path, networks_path, http_port, dns_port = sys.argv[1:6]
run_ms = int(sys.argv[6]) if len(sys.argv) > 6 else None
os.chdir(state_dir)
print("sim: device filesystem in %s" % os.getcwd())

import asyncio  # noqa: E402

from tools.sim import mains, radio  # noqa: E402

world = simworld.world
world.set_realtime()
with open(scenario_path) as f:
    scenario = mains.load_scenario(json.load(f))
mains.connect(world, scenario)
with open(networks_path) as f:
    script = radio.load_networks(json.load(f))
world.set_radio(script)
print("sim: radio from %s: %d networks" % (networks_path, len(world.networks)))

from httpd import Response  # noqa: E402

from firmware import app  # noqa: E402

overrides = {"model": scenario["model"]}
overrides.update(scenario["meter"])
device = app.Device(None, overrides)
device.portal_options = {"host": "127.0.0.1", "http_port": int(http_port), "dns_port": int(dns_port),
                         "always": True, "send_buffer": simworld.TCP_SND_BUF}


portal = device.portal
serve = portal.handle


async def handle(req):  # in front of the portal's own: GET /_sim/heap, from any Host
    if req.path != "/_sim/heap":
        return await serve(req)
    gc.collect()
    s = portal.server
    return Response(json.dumps({"alloc": gc.mem_alloc(), "free": gc.mem_free(), "active": s.active,
                                "served": s.served, "refused": s.refused}).encode(), 200,
                    {"Content-Type": "application/json"})


portal.handle = handle

try:
    from tools.sim import stop

    stopper = stop.watcher()  # Ctrl-C, as the host asks for it
    asyncio.run(app._run(device, run_ms, [stopper] if stopper else []))
except KeyboardInterrupt:
    pass
finally:
    device.shutdown()
print("sim: portal stopped")

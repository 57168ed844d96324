# mqtt_child — firmware/mqtt_ha.MqttOutput publishing to a broker on 127.0.0.1 under the MicroPython
# unix port, for tests/host/test_mqtt_broker.py (not a test module).
#
#   micropython mqtt_child.py SETTINGS_JSON READINGS_JSON STATS_JSON
#
# A stand-in for the meter calls on_readings() every 50 ms with the readings in READINGS_JSON (re-read
# when the file changes) and counts its calls: if the output ever blocked the event loop, the count
# would stop. The output's state, counters and the live heap go to STATS_JSON whenever they change.
import asyncio
import gc
import json
import os
import sys

from firmware.mqtt_ha import MqttOutput, connector

with open(sys.argv[1]) as f:
    settings = json.load(f)
readings_path, stats_path = sys.argv[2], sys.argv[3]
# The board's DNS seam, as the simulator answers it: a name only it knows, so a name that gets through
# went through resolve().
def resolve(host, port):
    return {"mqtt-broker.test": "127.0.0.1"}.get(host, host)


out = MqttOutput(settings, "TEST-0042", connector(settings, resolve), model="Home", sw_version="test")
feeds = [0]


async def meter():
    seen = readings = None
    while True:
        st = os.stat(readings_path)
        if (st[6], st[8], st[1]) != seen:
            seen = (st[6], st[8], st[1])
            with open(readings_path) as f:
                readings = json.load(f)
        out.on_readings(readings)  # as the meter hands on each window
        feeds[0] += 1
        await asyncio.sleep_ms(50)


async def report():
    last = None
    while True:
        gc.collect()
        stats = {"feeds": feeds[0], "state": out.state, "message": out.message, "published": out.published,
                 "connects": out.connects, "heap_alloc": gc.mem_alloc()}
        if stats != last:
            last = stats
            with open(stats_path + ".tmp", "w") as f:
                json.dump(stats, f)
            os.rename(stats_path + ".tmp", stats_path)
        await asyncio.sleep_ms(20)


async def main():
    asyncio.create_task(meter())
    asyncio.create_task(report())
    await out.run()


asyncio.run(main())

# heapmap_main — where the firmware's heap goes (runs under MicroPython): what each module's import
# keeps, what each part of firmware/app.py's Device keeps, and the buffers it asks for in one piece.
#
# Started by `python -m tools.sim heapmap` as
#     heapmap_main.py STATE_DIR SCENARIO.json ROM_IMAGE [PORT]   (the setup page on PORT, DNS on PORT + 1)
# The code runs from the ROMFS image, as on the board (and in `tools.sim device --heapsize`). Each
# figure is gc.mem_alloc() after a collection, after the step less before it: what the step keeps.
# What the board has built in (asyncio, json, socket, ssl...) and the simulated board's modules are
# loaded first and not counted. Then each task runs for 2 s, started one after another beside the
# ones before (the meter, the links, the portal, the uploader), and what the heap holds more is its
# row. The firmware's names get a pool of their own, as in the budget run (tools/sim/namepool.py).
# Prints one JSON object: {"imports": [[module or the names' pool, bytes]...], "device": [[part,
# bytes]...], "tasks": [[task, bytes]...], "buffers": [[what, bytes]...], "word_bytes": 4 or 8}.
import gc
import sys

import vfs

STATE_DIR, SCENARIO, ROM = sys.argv[1:4]
with open(ROM, "rb") as f:
    _image = f.read()
vfs.mount(vfs.VfsRom(_image), "/rom")
sys.path[:0] = ["/rom", "/rom/lib"]

import asyncio  # noqa: E402, F401  (built in on the board: not the firmware's)
import binascii  # noqa: E402, F401
import hashlib  # noqa: E402, F401
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402, F401
import socket  # noqa: E402, F401
import ssl  # noqa: E402, F401
import struct  # noqa: E402

import machine  # noqa: E402, F401  (the simulated board's: the port's own on the board)
import network  # noqa: E402, F401

import simworld  # noqa: E402
from tools.sim import namepool  # noqa: E402

# Leaf first, in the order firmware/app.py needs them: each row is the module and whatever of its
# imports no earlier row loaded.
MODULES = ("firmware", "firmware.boards", "firmware.profiles", "atomicfile",
           "firmware.config", "firmware.factory", "hmacsha256", "firmware.identity", "firmware.board",
           "firmware.bootguard", "firmware.energy", "firmware.energy_store", "firmware.metering",
           "firmware.diagnostics", "firmware.dsp", "firmware.sampler", "firmware.meter", "firmware.app",
           "firmware.links", "httpd", "dnscatch", "firmware.status", "firmware.portal_page",
           "firmware.portal", "firmware.spool", "https", "firmware.recorder", "firmware.uploader")

imports = [None] * len(MODULES)  # (and the names' pool)
device_parts = []  # (label, bytes): filled in after each measurement, outside it
_marks = [0]


def _before():
    gc.collect()
    _marks[0] = gc.mem_alloc()


def _after():
    gc.collect()
    return gc.mem_alloc() - _marks[0]


PRELOADED = 3  # the firmware's modules the simulated mains needs (tools/sim/device_main.py loads them first too)
for k in range(len(MODULES)):
    if k == PRELOADED:  # the simulated mains, then the pool the firmware's names go into, made now that
        # the simulator's names are in, as the budget run makes it (tools/sim/namepool.py): no module's
        # row is charged with a pool its names happen to overflow
        from tools.sim import mains  # noqa: E402  (the simulated mains: not the firmware's)

        imports.insert(k, ("names: the pool the firmware's names (qstrs) go into", namepool.fill_and_grow()))
    _before()
    __import__(MODULES[k])
    imports[k + (k >= PRELOADED)] = (MODULES[k], _after())

os.chdir(STATE_DIR)
world = simworld.world
with open(SCENARIO) as f:
    scenario = mains.load_scenario(json.load(f))
mains.connect(world, scenario)

from firmware import app, config, identity, links, portal, recorder, spool, uploader  # noqa: E402


def _wrap(owner, name, label):
    """owner.name, measured each time Device calls it: what it keeps."""
    orig = getattr(owner, name)

    def measured(*args, **kw):
        gc.collect()
        before = gc.mem_alloc()
        r = orig(*args, **kw)
        gc.collect()
        n = gc.mem_alloc() - before
        device_parts.append((label, n))
        return r

    setattr(owner, name, measured)


_wrap(config.ConfigStore, "load", "config: ConfigStore.load() (the settings)")
_wrap(identity, "load", "identity.load()")
_wrap(app, "EnergyStore", "EnergyStore (energy counters on flash)")
_wrap(app, "Meter", "Meter (sampler and kernel buffers, windows)")
_wrap(links, "Links", "Links (AP, WiFi, LAN)")
_wrap(spool, "Spool", "Spool (records waiting)")
_wrap(uploader, "Uploader", "Uploader")
_wrap(recorder, "Recorder", "Recorder")
_wrap(portal, "Portal", "Portal (setup page, DNS)")

_before()
device = app.Device()
device_parts.append(("Device, in all", _after()))

# Each task's first 2 s, started one after the other beside the ones before: what it keeps running.
world.set_realtime()
tasks = []


async def _tasks():
    starts = [("meter", lambda: device.meter.run(device.on_readings)), ("links", device.links.run),
              ("portal", lambda: device.portal.run(host="127.0.0.1", http_port=PORT, dns_port=PORT + 1,
                                                    always=True))]
    starts += [(out.name, out.run) for out in device.outputs if hasattr(out, "run")]
    running = []
    for name, start in starts:
        gc.collect()
        before = gc.mem_alloc()
        running.append(asyncio.create_task(start()))
        await asyncio.sleep_ms(2000)
        gc.collect()
        n = gc.mem_alloc() - before
        tasks.append((name, n))
    for t in running:
        t.cancel()


PORT = int(sys.argv[4]) if len(sys.argv) > 4 else 18080
asyncio.run(_tasks())


def _bytes(buf):
    return len(bytearray(buf))


meter = device.meter
buffers = [("sampler: samples (array 'H', 2 per pair)", _bytes(meter.sampler.buf)),
           ("meter: kernel block sums", _bytes(meter._sums)),
           ("meter: shifted products", _bytes(meter._crossbuf)),
           # atomicfile.read asks for the file's size + 1 (at most MAX_BYTES + 1): here a saved default one
           ("config.json read: the file's size + 1 (the defaults saved)", len(json.dumps(config.defaults())) + 1)]
# An interval record as Recorder._close_interval makes it (typical values: 7-digit floats).
record = {"t": 1765000000, "interval_ms": 10000, "windows": 10, "frequency_hz": 49.987,
          "phases": [dict([("phase", p)] + [(k, 1234.567) for k in recorder.AVG_KEYS]) for p in (1, 2, 3)],
          "energy_mwh": device.energy.snapshot(), "diagnostics": []}
buffers.append(("JSON of an interval record", len(json.dumps(record))))
print(json.dumps({"word_bytes": struct.calcsize("P"), "imports": imports, "device": device_parts, "tasks": tasks,
                  "buffers": buffers}))

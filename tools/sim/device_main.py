# device_main — the whole meter on the simulated board, in real time (runs under MicroPython).
#
# Started by `python -m tools.sim device` as
#     device_main.py STATE_DIR SCENARIO.json [--run-ms N] [--port P] [--dns-port P] [--report FILE]
#                    [--rom IMAGE --heap-bytes N]
# and stops cleanly on Ctrl-C. STATE_DIR stands in for the board's flash: the firmware uses relative
# file names (on the board the working directory is /), so running it from inside STATE_DIR keeps
# config.json, identity.json and the energy counters there, from one run to the next.
#
# With --rom the device runs as on an ESP32 without PSRAM: its code from the ROMFS image IMAGE
# (tools/romfs.py: bytecode runs in place, as from the board's flash) and exactly N bytes of heap
# for the firmware. The image, the simulated mains and the simulated board's own modules stand for
# hardware and live beside that heap: N bytes are reserved in one piece first (a board's heap is one
# fresh region at power-up), the simulator sets itself up in the rest, a ballast fills whatever the
# simulator left free, and only then is the reserve handed to the firmware, which is imported last.
# --report writes the heap figures and the device's state as JSON.
import gc
import sys

_args = sys.argv[1:]


def _option(name, default=None):
    if name in _args:
        k = _args.index(name)
        value = _args[k + 1]
        del _args[k:k + 2]
        return value
    return default


RUN_MS = _option("--run-ms")
HTTP_PORT = int(_option("--port", "8080"))
DNS_PORT = int(_option("--dns-port", "8053"))
REPORT = _option("--report")
ROM = _option("--rom")
HEAP_BYTES = _option("--heap-bytes")
STATE_DIR, SCENARIO = _args[0], _args[1]

if ROM is not None:
    import vfs

    with open(ROM, "rb") as f:
        _image = f.read()  # one block, first in the heap: the board's flash partition
    vfs.mount(vfs.VfsRom(_image), "/rom")
    sys.path[:0] = ["/rom", "/rom/lib"]  # where MicroPython looks on a board with a ROMFS
    gc.collect()
    _before = gc.mem_alloc()
    from firmware import profiles  # noqa: E402, F401  (the one firmware module the mains model uses)

    gc.collect()
    PRELOADED = gc.mem_alloc() - _before  # the firmware's own, though loaded before the reserve
    _reserve = bytearray(int(HEAP_BYTES) - PRELOADED) if HEAP_BYTES is not None else None
else:
    PRELOADED = 0

import json  # noqa: E402
import os  # noqa: E402

import simworld  # noqa: E402
from tools.sim import mains  # noqa: E402

os.chdir(STATE_DIR)  # before the firmware starts: its relative paths land in the state folder
print("sim: device filesystem in %s" % os.getcwd())
simworld.world.set_realtime()
with open(SCENARIO) as f:
    scenario = mains.load_scenario(json.load(f))
mains.connect(simworld.world, scenario)  # the simulated mains on the six ADC inputs
print("sim: mains from %s: %s" % (SCENARIO, scenario.get("description") or "no description"))
import asyncio  # noqa: E402  (frozen in the board's firmware, its objects in RAM: before the ballast)

import machine  # noqa: E402, F401
import network  # noqa: E402, F401


def _ballast():
    """Take every free byte of the heap, largest pieces first (first fit fills the holes last)."""
    held = []
    gc.collect()
    chunk = gc.mem_free()
    while chunk >= 32:
        try:
            held.append(bytearray(max(chunk - 64, 1)))  # the header takes a block of its own
        except MemoryError:
            chunk //= 2
    while True:  # the last one-block holes
        try:
            held.append((chunk,))
        except MemoryError:
            return held


class HeapProbe:
    """Samples the firmware's share of the heap every few ms while the device runs."""

    def __init__(self, budget_bytes):
        gc.collect()
        self.budget = budget_bytes
        self.base = gc.mem_alloc() - PRELOADED  # everything that is not the firmware's
        self.peak_bytes = 0
        self.free_min_bytes = gc.mem_free()
        self.samples = 0

    def sample(self):
        used = gc.mem_alloc() - self.base
        free = gc.mem_free()
        if used > self.peak_bytes:
            self.peak_bytes = used
        if free < self.free_min_bytes:
            self.free_min_bytes = free
        self.samples += 1

    async def run(self, device):
        while True:
            self.sample()
            await asyncio.sleep_ms(5)


probe = None
if HEAP_BYTES is not None:
    _held = _ballast()
    _reserve = None  # the firmware's heap: one free region
    gc.collect()
    _excess = gc.mem_free() + PRELOADED - int(HEAP_BYTES)  # garbage the simulator left, freed just now
    if _excess > 64:
        _held.append(bytearray(_excess - 32))
    probe = HeapProbe(int(HEAP_BYTES))
    print("sim: the firmware has %d bytes of heap (its code runs from the ROMFS image %s)"
          % (gc.mem_free() + PRELOADED, ROM))

from firmware import app  # noqa: E402
from tools.sim.simnet import SimBoard  # noqa: E402  (DNS and NTP answered by the simulation)

# The simulated hardware is the scenario's model; its "meter" object overrides the stored settings.
overrides = {"model": scenario["model"]}
overrides.update(scenario["meter"])
# The setup page on the desktop: http://127.0.0.1:8080 (DNS catch-all on 127.0.0.1:8053), never 0.0.0.0.
device = app.main(board=SimBoard(), run_ms=None if RUN_MS is None else int(RUN_MS), meter_overrides=overrides,
                  portal_options={"host": "127.0.0.1", "http_port": HTTP_PORT, "dns_port": DNS_PORT, "always": True},
                  extra_tasks=[probe.run] if probe else [])

if REPORT is not None:
    r = device.meter.report()
    up = device.uploader.status
    out = {
        "uptime_ms": device.uptime_ms,
        "windows": device.windows,
        "meter_errors": device.meter.errors,
        "task_failures": device.task_failures,
        "energy": r["total"],
        "upload": {k: up.get(k) for k in ("state", "message", "records_sent", "live_sent", "pending", "lost")},
        "gc_collections": device.heap.collections,
    }
    if probe is not None:
        probe.sample()
        out.update({
            "heap_bytes": probe.budget,
            "heap_peak_bytes": probe.peak_bytes,
            "heap_live_peak_bytes": device.heap.live_peak_bytes - probe.base,
            "heap_free_min_bytes": probe.free_min_bytes,
            "heap_samples": probe.samples,
            "rom_bytes": len(_image),
        })
    with open(REPORT, "w") as f:
        json.dump(out, f)

# device_main — the whole meter on the simulated board, in real time (runs under MicroPython).
#
# Started by `python -m tools.sim device` as
#     device_main.py STATE_DIR SCENARIO.json [--run-ms N] [--port P] [--dns-port P] [--report FILE]
#                    [--rom IMAGE --heap-bytes N [--heap-areas N1,N2...]] [--soak PLAN.json] [--networks FILE]
#                    [--lan-fault]
#                    [--board NAME]
# and stops cleanly on Ctrl-C (tools/sim/stop.py: the host asks, the firmware sees a KeyboardInterrupt
# in its event loop, as on the board). STATE_DIR stands in for the board's flash: the firmware uses relative
# file names (on the board the working directory is /), so running it from inside STATE_DIR keeps
# config.json, identity.json and the energy counters there, from one run to the next.
#
# With --rom the device runs as on an ESP32 without PSRAM: its code from the ROMFS image IMAGE
# (tools/romfs.py: bytecode runs in place, as from the board's flash) and exactly N bytes of heap
# for the firmware. The image, the simulated mains and the simulated board's own modules stand for
# hardware and live beside that heap: N bytes are reserved in one piece first (a board's heap is one
# fresh region at power-up), the simulator sets itself up in the rest, a ballast fills whatever the
# simulator left free, and only then is the reserve handed to the firmware, which is imported last.
# --heap-areas gives those N bytes in areas of N1, N2... bytes, as the ESP32 port grows its heap
# (ports/esp32: a first area of MICROPY_GC_INITIAL_HEAP_SIZE, 56 KB on the ESP32, then areas added by
# gc_try_add_heap in py/gc.c when a collection does not free enough): the reserve is taken as one
# piece per area, each followed by a small wall that stays allocated, so that no block the firmware
# asks for can span two areas. Unlike the port's, all the areas are there from the start.
# --report writes the heap figures and the device's state as JSON.
#
# --soak runs a soak plan (tools/sim/soak.py) on an accelerated clock (simworld.set_accelerated):
# the plan's loads are switched onto the current inputs, the ingest server's fault file is written
# and the Ethernet link pulled and plugged back at the plan's times, and the setup page is used
# (a short BOOT press brings the access point up, then the page and its live readings are fetched
# over real sockets); the report says when each event happened.
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
WALL_BYTES = 256  # room for one wall between two heap areas (--heap-areas)
NAMES_ROOM_BYTES = 32 * 1024  # room for a name pool of 2,560 entries on x64 (tools/sim/namepool.py)
HTTP_PORT = int(_option("--port", "8080"))
DNS_PORT = int(_option("--dns-port", "8053"))
REPORT = _option("--report")
ROM = _option("--rom")
HEAP_BYTES = _option("--heap-bytes")
HEAP_AREAS = _option("--heap-areas")  # "N1,N2,...": the heap's areas, in bytes (adding up to HEAP_BYTES)
SOAK = _option("--soak")
BOARD = _option("--board")  # the board profile simulated (firmware/boards.py); None: as config.json says
LAN_FAULT = "--lan-fault" in _args  # no Ethernet PHY answers (tools/simboard/network.py LAN)
if LAN_FAULT:
    _args.remove("--lan-fault")
NETWORKS = _option("--networks", sys.argv[0].rsplit("/", 1)[0] + "/networks.json")  # (argv[0]: absolute)
STATE_DIR, SCENARIO = _args[0], _args[1]
if HEAP_BYTES is not None and ROM is None:
    raise SystemExit("sim: --heap-bytes needs --rom (the firmware's code must not take its heap)")
if HEAP_AREAS is not None and HEAP_BYTES is None:
    raise SystemExit("sim: --heap-areas needs --heap-bytes")

if ROM is not None:
    if ROM == "frozen":  # the code frozen into this MicroPython, as in the meter's own image (docs/IMAGE.md)
        _path = sys.path[:]
        sys.path[:] = [".frozen"]  # nothing else to find it in: is it frozen in?
        try:
            import firmware.boards  # noqa: F401
        except ImportError:
            raise SystemExit("sim: --frozen: this MicroPython has no firmware frozen in; build one as "
                             "docs/IMAGE.md shows and point MICROPYTHON at it")
        sys.path[:] = [".frozen"] + _path
    else:
        import vfs

        with open(ROM, "rb") as f:
            _image = f.read()  # one block, first in the heap: the board's flash partition
        vfs.mount(vfs.VfsRom(_image), "/rom")
        sys.path[:0] = ["/rom", "/rom/lib"]  # where MicroPython looks on a board with a ROMFS
    gc.collect()
    _before = gc.mem_alloc()
    from firmware import boards, profiles  # noqa: E402, F401  (the firmware modules the mains model uses)

    gc.collect()
    PRELOADED = gc.mem_alloc() - _before  # the firmware's own, though loaded before the reserve
    _areas = [int(n) for n in HEAP_AREAS.split(",")] if HEAP_AREAS is not None else []
    # (with areas, room for their walls too: WALL_BYTES each, split off once the ballast has filled the rest)
    _reserve = bytearray(int(HEAP_BYTES) - PRELOADED + WALL_BYTES * len(_areas)) if HEAP_BYTES is not None else None
    # room kept in one piece for the pool the firmware's names will go into (made before the ballast, below),
    # which the simulator's setup would otherwise leave in pieces too small for it
    _names_room = bytearray(NAMES_ROOM_BYTES) if HEAP_BYTES is not None and ROM != "frozen" else None
else:
    PRELOADED = 0

import json  # noqa: E402
import os  # noqa: E402

import simworld  # noqa: E402
from tools.sim import mains  # noqa: E402

os.chdir(STATE_DIR)  # before the firmware starts: its relative paths land in the state folder
print("sim: device filesystem in %s" % os.getcwd())
world = simworld.world
plan = None
if SOAK is not None:
    with open(SOAK) as f:
        plan = json.load(f)
    if RUN_MS is None:
        raise SystemExit("sim: --soak needs --run-ms")
    world.set_accelerated(int(RUN_MS))  # before asyncio is imported: its poller comes from select.py
else:
    world.set_realtime()
world.lan_link = True  # the Ethernet cable is in (used if config.json enables the LAN)
world.lan_fault = LAN_FAULT
if plan is None:  # the setup page's WiFi part works too: the networks `tools.sim portal` scripts by default
    with open(NETWORKS) as f:
        world.set_radio(dict(json.load(f), lan_link=True))
with open(SCENARIO) as f:
    scenario = mains.load_scenario(json.load(f))
if BOARD is None:  # the board config.json names (the firmware reads it again: this is the simulated hardware)
    try:
        with open("config.json") as f:
            BOARD = json.load(f).get("board", {}).get("profile")
    except (OSError, ValueError, AttributeError):
        BOARD = None
    if BOARD not in mains.boards.NAMES:  # a bad name: the firmware says so and runs the default board
        BOARD = None
mains.connect(world, scenario, BOARD)  # the simulated mains on the board's ADC inputs
_prof = mains.boards.get(BOARD or mains.boards.DEFAULT)
world.lan_wiring = mains.boards.lan_settings(_prof) if _prof["lan"] else None  # its own Ethernet PHY, if any
_prof = None
print("sim: mains from %s: %s" % (SCENARIO, scenario.get("description") or "no description"))
LOADS = []  # the soak plan's loads: {gpio: MainsSource} for the three current inputs each
if plan is not None:
    for load in plan["loads"]:
        srcs = mains.sources(mains.load_scenario(load))
        LOADS.append(dict((i, srcs[i]) for _, i in mains.ADC_GPIOS))
        for _, i in mains.ADC_GPIOS:  # one noise table for all the loads: the first one's
            srcs[i].noise = world.sources[i].noise
            srcs[i]._k = world.sources[i]._k
        srcs = None
        gc.collect()
    # Load 0 (the scenario's currents) from the plan's own sources: the scenario's three current
    # tables (12 KB) go now, not at the first load change, which kept the heap floors 12 KB higher
    # until then.
    world.sources.update(LOADS[0])
    gc.collect()
import asyncio  # noqa: E402  (frozen in the board's firmware, its objects in RAM: before the ballast)
import time  # noqa: E402

from tools.sim import stop  # noqa: E402  (imports asyncio: only once set_accelerated() has run)

stopper = stop.watcher()  # Ctrl-C, when the host asks for it

import machine  # noqa: E402, F401
import network  # noqa: E402, F401


def _ballast():
    """Take every free byte of the heap, largest pieces first (first fit fills the holes last). The
    pieces hang on a chain of tuples: a list grows by moving to a larger block, which a nearly full heap
    refuses, and the ballast stopped there with 36 KB of holes left for the firmware."""
    held = None
    gc.collect()
    chunk = gc.mem_free()
    while chunk >= 32:
        try:
            held = (held, bytearray(max(chunk - 64, 1)))  # the array's header and the tuple: a block each
        except MemoryError:
            chunk //= 2
    while True:  # the last one-block holes (32 bytes on this port: a 1-tuple fits)
        try:
            held = (held,)
        except MemoryError:
            return held


def _split_into_areas(sizes):
    """Cut the freed reserve (by then the heap's only large free region: the ballast holds the rest)
    into areas of these sizes: a piece the size of each area but the last, held, then a small wall,
    allocated in turn, so first fit lays them side by side. Returns (walls, pieces): the walls stay
    allocated for good; freeing the pieces gives the firmware areas that no block can span. Each piece
    (the bytearray, its data, the tuple holding it) takes its area's size to within a block or two."""
    walls = pieces = None
    for n in sizes[:-1]:
        pieces = (pieces, bytearray(n - 64))
        walls = (walls, bytearray(16))
    return walls, pieces


SOAK_SAMPLE_US = 50000
BLOCK_SAMPLE_US = 1000000  # the largest free block: tried once a second (it takes ~20 allocations)


class HeapProbe:
    """Samples the firmware's share of the heap while the device runs: every few ms in real time,
    and each time the event loop would wait on the accelerated clock."""

    def __init__(self, budget_bytes):
        self.budget = budget_bytes
        # every attribute bound first, so that the probe's own table has its final size when measured
        self.base = self.peak_bytes = self.free_min_bytes = self.samples = self.largest_free_min_bytes = 0
        self.given_bytes = self.given_largest_bytes = self._last_us = self._block_us = 0
        gc.collect()
        self.base = gc.mem_alloc() - PRELOADED  # everything that is not the firmware's
        self.free_min_bytes = gc.mem_free()
        self.largest_free_min_bytes = self.largest_free()
        # what the firmware was given: the budget, in one piece but for the bytes preloaded
        self.given_bytes = self.free_min_bytes + PRELOADED
        self.given_largest_bytes = self.largest_free_min_bytes

    @staticmethod
    def largest_free():
        """The largest block the heap can still give, in bytes (found by trying): how fragmented
        the firmware has left it, where mem_free() says only how much is free in all."""
        gc.collect()
        lo, hi = 0, gc.mem_free()
        while hi - lo > 16:
            mid = (lo + hi) // 2
            try:
                bytearray(mid)
                lo = mid
            except MemoryError:
                hi = mid
            gc.collect()  # the trial's blocks: left as garbage, the next trial's header would split the hole
        return lo

    def sample_now_and_then(self):
        """On the accelerated clock: at most every SOAK_SAMPLE_US (mem_alloc() walks the whole heap)."""
        now = world.now_us()
        if now - self._last_us >= SOAK_SAMPLE_US:
            self._last_us = now
            self.sample()

    def sample(self):
        now = world.now_us()
        if now - self._block_us >= BLOCK_SAMPLE_US:
            self._block_us = now
            self.largest_free_min_bytes = min(self.largest_free_min_bytes, self.largest_free())
        used = gc.mem_alloc() - self.base
        free = gc.mem_free()
        if used > self.peak_bytes:
            self.peak_bytes = used
        if free < self.free_min_bytes:
            self.free_min_bytes = free
        self.samples += 1

    async def run(self, device):
        if world.accelerated:
            world.idle_hooks.append(self.sample_now_and_then)
            return
        while True:
            self.sample()
            await asyncio.sleep_ms(5)


async def _get(port, path):
    """One request to the setup page, as a phone makes it: the reply's status code, or None."""
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        w.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % (path.encode(), port))
        await w.drain()
        line = await r.readline()
        while await r.read(512):
            pass
        return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    finally:
        w.close()
        await w.wait_closed()


def _fill(slot, *values):
    """Write values into a preallocated list, allocating nothing."""
    for i in range(len(values)):
        slot[i] = values[i]


class Soak:
    """Plays a soak plan's events at their simulated times and notes what happened."""

    def __init__(self, plan):
        self.events = plan["events"]
        self.fault_file = plan["fault_file"]
        # What the soak notes is allocated here, before the run, and filled in place: growing lists
        # would add ~150 bytes an hour and ~90 an event to the heap whose floors are judged, about
        # the +196 bytes an hour the first day with hourly floors showed.
        hours = int(RUN_MS) // 3600000 + 1
        self.done = [[0, None, None, None] for _ in self.events]  # [t_ms since the start, kind, arg, outcome]
        self.heap_live = [[0, 0] for _ in range(hours)]  # [t_ms, bytes in use after a collection], hourly
        self.heap_floor = [[0, 0] for _ in range(hours)]  # [t_ms, the least in use in that hour]
        self.n_done = self.n_live = self.n_floor = 0
        self.portal_ok = 0
        self.portal_failed = 0
        self._floor = None
        self._floor_last_us = 0
        self.t0 = time.ticks_ms()

    def _sample_floor(self):
        """The heap in use, at most every SOAK_SAMPLE_US: its low points follow the firmware's
        collection after each window, whatever was in flight when the hour struck."""
        now = world.now_us()
        if now - self._floor_last_us >= SOAK_SAMPLE_US:
            self._floor_last_us = now
            used = gc.mem_alloc()
            if self._floor is None or used < self._floor:
                self._floor = used

    async def run(self, device):
        t0 = self.t0 = time.ticks_ms()
        world.idle_hooks.append(self._sample_floor)
        hour_ms = 3600000
        next_hour = hour_ms
        for t_s, kind, arg in self.events:
            due = round(t_s * 1000)  # (a cycle's times are sums of floats: 58751.99999 s is 58752)
            while True:
                now = time.ticks_diff(time.ticks_ms(), t0)
                if now >= next_hour:  # the hourly heap reading, between two events
                    gc.collect()
                    base = probe.base if probe else 0
                    _fill(self.heap_live[self.n_live], now, gc.mem_alloc() - base)
                    self.n_live += 1
                    if self._floor is not None:
                        _fill(self.heap_floor[self.n_floor], now, self._floor - base)
                        self.n_floor += 1
                        self._floor = None
                    next_hour += hour_ms
                    continue
                if now >= due:
                    break
                await asyncio.sleep_ms(min(due, next_hour) - now)
            outcome = await self.apply(device, kind, arg)
            _fill(self.done[self.n_done], time.ticks_diff(time.ticks_ms(), t0), kind, arg, outcome)
            self.n_done += 1

    async def apply(self, device, kind, arg):
        if kind == "load":
            for gpio, src in LOADS[arg].items():
                world.sources[gpio] = src
            return None
        if kind == "fault":
            with open(self.fault_file, "w") as f:
                f.write(arg)
            return None
        if kind == "link":
            world.lan_link = arg
            return None
        if kind == "end":
            return None
        if kind == "portal":  # a short BOOT press, then the page and its readings, arg times
            world.press(0)
            await asyncio.sleep_ms(500)
            world.release(0)
            for _ in range(40):  # the access point and the page come up within a few ticks
                server = device.portal.server
                if device.links.ap_up and server is not None and server.sock is not None:
                    break
                await asyncio.sleep_ms(250)
            codes = []
            for _ in range(arg):
                for path in ("/", "/api/status"):
                    codes.append(await _get(HTTP_PORT, path))
                await asyncio.sleep_ms(1000)
            ok = codes.count(200)
            self.portal_ok += ok
            self.portal_failed += len(codes) - ok
            return ok  # (a count, not the list: kept all run long, it would be heap the floors count)
        raise ValueError("soak plan: unknown event %r" % kind)


# Every global the budget run sets after the ballast is bound before it: a new global can grow the
# module's dict, and growing it then takes its new table out of the firmware's reserve (two more
# options made _excess's insert do exactly that: 384 bytes short).
probe = None
_held = None
_excess = 0
_walls = _pieces = _names_pool = None
NAMES_POOL_BYTES = 0
app = SimBoard = overrides = soak = extra = device = None
if HEAP_BYTES is not None:
    if ROM != "frozen":  # (frozen, the firmware's names are in the binary, as in the meter's image)
        # The pool the firmware's names go into, made now outside its heap and charged to it below
        # (tools/sim/namepool.py says why): the simulator's own names no longer hide the firmware's.
        from tools.sim import namepool

        _names_room = None
        NAMES_POOL_BYTES = namepool.fill_and_grow()
    _held = _ballast()
    _reserve = None  # the firmware's heap: one free region
    gc.collect()
    if NAMES_POOL_BYTES:  # ...less a block the size of that pool, first in it, as the board's would be
        _excess = gc.mem_alloc()
        _names_pool = bytearray(NAMES_POOL_BYTES - (32 if sys.maxsize > 1 << 32 else 16))  # (less its header's block)
        PRELOADED += gc.mem_alloc() - _excess
    if _areas:  # ...or one per area, walls between them
        _areas[0] -= PRELOADED  # the first area holds what was preloaded, as the board's would
        _walls, _pieces = _split_into_areas(_areas)
        _areas = sum(_areas[:-1])  # (now the bytes the pieces hold: reused, no new global)
        gc.collect()
    # Free now beyond the budget: the freed reserve's own header (32 bytes), and whatever garbage the
    # ballast's last collection missed, taken back here so that the firmware gets the budget alone
    # (with areas: out of the last one, the others being held by their pieces meanwhile).
    _excess = gc.mem_free() + PRELOADED + (_areas or 0) - int(HEAP_BYTES)
    if _excess > 64:
        _held = (_held, bytearray(_excess - 32))
    _pieces = None
    gc.collect()
    probe = HeapProbe(int(HEAP_BYTES))
    print("sim: the firmware has %d bytes of heap, %d in one piece (its code runs %s)"
          % (probe.given_bytes, probe.given_largest_bytes,
             "frozen into this MicroPython" if ROM == "frozen" else "from the ROMFS image " + ROM))

from firmware import app  # noqa: E402, F811  (bound to None before the ballast)
from tools.sim.simnet import SimBoard  # noqa: E402, F811  (DNS and NTP answered by the simulation)

# The simulated hardware is the scenario's model; its "meter" object overrides the stored settings.
overrides = {"model": scenario["model"]}
overrides.update(scenario["meter"])
soak = Soak(plan) if plan is not None else None
extra = ([probe.run] if probe else []) + ([soak.run] if soak else []) + ([stopper] if stopper else [])
# The setup page on the desktop: http://127.0.0.1:8080 (DNS catch-all on 127.0.0.1:8053), never 0.0.0.0.
# In a soak it is served only while the access point is up, as on the board.
device = app.main(board=SimBoard(BOARD) if BOARD else SimBoard(), board_profile=BOARD,
                  run_ms=None if RUN_MS is None else int(RUN_MS), meter_overrides=overrides,
                  portal_options={"host": "127.0.0.1", "http_port": HTTP_PORT, "dns_port": DNS_PORT,
                                  "always": soak is None, "send_buffer": simworld.TCP_SND_BUF},
                  extra_tasks=extra)

if REPORT is not None:
    r = device.meter.report()
    up = device.uploader.status
    out = {
        "uptime_ms": device.uptime_ms,
        "windows": device.windows,
        "meter_errors": device.meter.errors,
        "task_failures": device.task_failures,
        "energy": r["total"],
        "upload": {k: up.get(k) for k in ("state", "message", "records_sent", "live_sent")},
        "gc_collections": device.heap.collections,
        # the spool's own counts: the uploader's status is a snapshot from its last round
        "records_pending": device.uploader.spool.pending(),
        "records_lost": device.uploader.spool.lost,
        "records_closed": device.uploader.spool.next_seq,
        "skipped_ms": world.skipped_us // 1000,
        "network_waits": world.network_waits,
    }
    if soak is not None:
        out["soak"] = {"events": soak.done[:soak.n_done], "portal_ok": soak.portal_ok,
                       "portal_failed": soak.portal_failed, "heap_live": soak.heap_live[:soak.n_live],
                       "heap_floor": soak.heap_floor[:soak.n_floor],
                       # the energy counters cover the meter's windows: accounted_ms up to the last one
                       "last_window_ms": time.ticks_diff(device.meter.last_ok_ms, soak.t0),
                       "accounted_ms": device.meter.report_ms()}
    if probe is not None:
        probe.sample()
        out.update({
            "heap_bytes": probe.budget,
            "heap_given_bytes": probe.given_bytes,
            "heap_given_largest_bytes": probe.given_largest_bytes,
            "heap_areas_bytes": [int(n) for n in HEAP_AREAS.split(",")] if HEAP_AREAS else [probe.budget],
            "heap_preloaded_bytes": PRELOADED,
            "heap_names_pool_bytes": NAMES_POOL_BYTES,
            "heap_peak_bytes": probe.peak_bytes,
            "heap_live_peak_bytes": device.heap.live_peak_bytes - probe.base,
            "heap_free_min_bytes": probe.free_min_bytes,
            "heap_samples": probe.samples,
            "heap_largest_free_min_bytes": probe.largest_free_min_bytes,
            "rom_bytes": 0 if ROM == "frozen" else len(_image),  # (frozen: none, the code is in the binary)
        })
    with open(REPORT, "w") as f:
        json.dump(out, f)

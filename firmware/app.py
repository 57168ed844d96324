# app — the composition root: builds the board and the meter's parts and runs their tasks.
#
# main.py calls main(); the desktop simulator calls it too, with the simulated board underneath.

import asyncio
import gc
import time

from firmware import VERSION, config, factory, identity
from firmware.board import WDT_RESET, Board
from firmware.bootguard import STABLE_MS, BootGuard
from firmware.energy import Energy, kwh_text
from firmware.energy_store import EnergyPersister, EnergyStore, checked
from firmware.meter import Meter

# The network side (links, portal, the outputs) is imported by Device, once the meter's buffers exist.


def format_readings(r):
    """One console line per window: what an installer watching the serial port wants to see."""
    parts = []
    for ph in r["phases"]:
        parts.append("L%d %5.1fV %6.2fA %7.0fW %-6s" % (ph["phase"], ph["vrms"], ph["irms"], ph["real_power_w"],
                                                        ph["direction"]))
    e = r["energy_mwh"]  # the exact counters (floats are single precision on the ESP32)
    line = "%s | %.2fHz %s | total %.0fW in %skWh out %skWh" % (
        " | ".join(parts), r["frequency_hz"], r["wiring"], r["total"]["real_power_w"], kwh_text(e["net_import_mwh"]),
        kwh_text(e["net_export_mwh"]))
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


WDT_TIMEOUT_MS = 20000  # longer than anything that may block the loop (a scan, a TLS handshake)
WDT_FEED_MS = 2000
# After Ctrl-C (also mpremote's raw REPL, so every `make deploy`): the ESP32's watchdog cannot be
# stopped (ports/esp32/machine_wdt.c has no deinit), only reconfigured, so it gets its longest
# timeout: ~12 days in the developer's hands instead of a reset within 20 s. The limit is real, not
# only the small-int bound: ESP-IDF's task WDT counts timeout_ms * 4 in a uint32, so 1 << 30 would
# wrap to 0.
WDT_AT_REPL_MS = (1 << 30) - 1


def feed_if_healthy(wdt, meter):
    """Feed the watchdog only while the meter's windows keep closing; True if fed."""
    if meter.healthy(time.ticks_ms()):
        wdt.feed()
        return True
    return False


def calm_watchdog(device):
    """At the REPL (Ctrl-C): the running watchdog reconfigured to WDT_AT_REPL_MS and fed."""
    if device.wdt is not None:
        device.wdt = device.board.watchdog(WDT_AT_REPL_MS)
        device.wdt.feed()


async def _watchdog(device):
    """machine.WDT, fed from the event loop only while measurement is healthy: a stalled loop or a
    meter that stopped producing readings restarts the board. After STABLE_MS of it, the start
    was a good one: the boot guard forgets earlier failed starts."""
    wdt = device.wdt = device.board.watchdog(WDT_TIMEOUT_MS)
    started = time.ticks_ms()
    while True:
        if feed_if_healthy(wdt, device.meter) and device.boot_guard is not None:
            if time.ticks_diff(time.ticks_ms(), started) >= STABLE_MS:
                device.boot_guard.stable()
        await asyncio.sleep_ms(WDT_FEED_MS)


# Status LED patterns: (on_ms, off_ms) per state, so a glance at the board tells an installer how it is.
LED_PATTERNS = {
    "fault": (100, 100),  # fast blink: measurement is not healthy
    "setup": (100, 900),  # short flash each second: the setup access point is up
    "connecting": (500, 500),  # slow blink: no network yet
    "online": (1000, 0),  # steady: online, uploads (if configured) going through
    "uploading_failed": (900, 100),  # steady with a short gap: online, but uploads are failing
    "button_hold": (50, 150),  # flicker: the button is held past a short press; at 10 s, a factory reset
    "reset_done": (3000, 0),  # steady 3 s: the factory reset is done, the button can be released
}
RESET_SHOWN_MS = 3000


def led_state(device):
    """The status LED's state, from the most urgent down (the button's own feedback first)."""
    links = device.links
    now = time.ticks_ms()
    if links.reset_at is not None:
        if time.ticks_diff(now, links.reset_at) < RESET_SHOWN_MS:
            return "reset_done"
        links.reset_at = None  # shown: forgotten (ticks_diff would turn negative after ~6 days)
    if links.held_past_short_press():
        return "button_hold"
    if not device.meter.healthy(now):
        return "fault"
    if device.links.ap_up:
        return "setup"
    if device.links.online_via is None:
        return "connecting"
    if device.uploader.status.get("state") not in ("ok", "off", "starting"):
        return "uploading_failed"
    return "online"


async def _status_led(device):
    led = device.board.led
    while True:
        on_ms, off_ms = LED_PATTERNS[led_state(device)]
        led.value(1)
        await asyncio.sleep_ms(on_ms)
        if off_ms:
            led.value(0)
            await asyncio.sleep_ms(off_ms)


# The gc strategy. An ESP32 without PSRAM has ~96 KB of heap (the code itself runs from ROMFS in
# flash, tools/romfs.py). The meter allocates nothing while it samples, so garbage comes from the
# once-a-window work (readings, JSON, HTTP): collect after each window, between bursts, so garbage
# never piles up into a collection in the middle of a TLS handshake and the heap's low-water mark
# is measured at the same point every time. The threshold makes the VM collect early on its own
# too, after an eighth of the heap that was free at start-up has been allocated, which keeps holes
# small (the heap is never compacted). (The ESP32 port can also grow its heap into ESP-IDF's when
# a collection does not free enough: the budget here is what it must manage without that.)
GC_THRESHOLD_DIVISOR = 8


class HeapWatch:
    """The heap after each collection: the fewest bytes left free and the most still in use."""

    def __init__(self):
        self.free_min_bytes = None
        self.live_peak_bytes = 0
        self.collections = 0

    def collect(self):
        gc.collect()
        self.collections += 1
        free, live = gc.mem_free(), gc.mem_alloc()
        if self.free_min_bytes is None or free < self.free_min_bytes:
            self.free_min_bytes = free
        if live > self.live_peak_bytes:
            self.live_peak_bytes = live


class Device:
    """Everything the firmware builds at power-up, in the order it needs it.

    Each window's readings go to the console, the energy persister, then every output in
    self.outputs (docs/DESIGN.md, "Outputs"): an object with a name and on_readings(readings) and,
    if it needs them, an async run() (a supervised task), on_settings(changed) (settings taken live,
    see apply) and shutdown() (an orderly stop). outputs_extra: more of them, after the device's own (the
    simulator's report)."""

    def __init__(self, board=None, meter_overrides=None, log=print, board_profile=None, outputs_extra=()):
        self.log = log
        self.store = config.ConfigStore(log=log)
        self.config = self.store.load()
        # The pins are the board profile's that the settings name (board.profile), or board_profile
        # (the simulator's --board: the hardware it simulates, whatever config.json says).
        name = board_profile or self.config["board"]["profile"]
        if board is None:
            board = Board(name)
        elif board.name != name:
            board.use(name)
        self.board = board
        # Held at power-up: a reset; not on GPIO0, which held at reset starts the ROM bootloader.
        if board.pins["button"] != 0 and factory.check_button(board.button, self.store, board.led, log=log):
            self.config = self.store.load()  # the defaults it saved
        self.identity = identity.load(log=log)  # without one it says why, measures, and won't upload
        self.energy = Energy()
        self.energy_store = EnergyStore()
        self.energy.restore(self.energy_store.load())
        if self.energy_store.diagnostic is not None:  # e.g. both copies damaged: counting from zero
            log("energy: %s" % self.energy_store.diagnostic.message)
        restored = self.energy_store.restored_line()
        if restored is not None:  # a restart: the counters go on from the saved ones, and from where
            log("energy: " + restored)
        self.persister = EnergyPersister(self.energy_store, self.config["energy"])
        settings = dict(self.config["meter"])
        settings.update(meter_overrides or {})
        self.meter = Meter(self.board, settings, self.energy)
        # Only now the network side: the meter's sample buffers (a few KB each) are taken while the
        # heap is still in one piece. Importing creates hundreds of small objects, and the holes
        # they leave behind would not hold a buffer that size later.
        from firmware import links, portal
        from firmware.recorder import Recorder
        from firmware.spool import Spool
        from firmware.uploader import Uploader

        self.console = Console()
        # Setup access point, WiFi/LAN links and the setup page (firmware/links.py, firmware/portal.py).
        self.links = links.Links(self.board, self.store, self.identity, log=log)
        self.portal_options = {}  # host, http_port, dns_port, always: the simulator serves on 127.0.0.1
        self.stopped_by_user = False  # Ctrl-C on the console, not a failure
        self.use_watchdog = False  # run_on_board() turns it on: once started it cannot be stopped
        self.wdt = None  # the running watchdog, once _watchdog() started it
        self.boot_guard = None  # run_on_board()'s: counts failed starts across resets
        self.heap = HeapWatch()
        self.windows = 0  # measurement windows handled
        self.uptime_ms = 0  # set when main() returns
        self.task_failures = {}  # task name -> how often it failed and was started again
        self.output_failures = {}  # output name -> windows whose readings it could not take
        # Uploads: the interval recorder (firmware/recorder.py) makes records into the spool, the
        # HTTPS transport (firmware/uploader.py) sends them and the live frames. Both off, with the
        # reason in uploader.status, without an identity, an https:// upload URL or a CA.
        spool = Spool(log=log)
        self._catch_up_energy(spool, log)
        upload = self.config["upload"]
        self.uploader = Uploader(upload, self.identity, spool, resolve=self.board.resolve,
                                 clock_ready=self.board.clock_ready, sync_clock=self.board.sync_clock, log=log)
        recorder = Recorder(upload, self.energy, spool, self.board.clock_ready, self.uploader.enabled, log)
        self.uploader.on_clock_step = recorder.clock_stepped  # the next record says NTP moved the clock
        # The outputs, in the order they get each window's readings. Adding one: its module, its
        # section in the settings (firmware/configcheck.py) and a line here (docs/DESIGN.md).
        self.outputs = [recorder, self.uploader] + self._local_outputs(self.config, log)
        self.outputs.extend(outputs_extra)
        self.portal = portal.Portal(self.board.sta, self.store, self.identity, self.meter, self.links,
                                    self.uploader, log=log, apply=self.apply)
        self.links.on_long_press = self._factory_reset_by_button
        # Every part that takes changed settings live (apply), in the order they hear of them.
        self.parts = [self.meter, self.persister, self.links] + self.outputs

    def _local_outputs(self, cfg, log):
        """The local outputs that are on (docs/API.md): Modbus TCP as an SDM630, MQTT with Home
        Assistant discovery. Their modules are imported only then, so an output that is off takes no
        heap; an image without one (the ROMFS variant leaves them out) says so and measures on."""
        ident = self.identity.identity
        serial = ident.serial if ident is not None else "unprovisioned"
        out = []
        try:
            if cfg["modbus"]["enabled"]:
                from firmware.sdm630 import Sdm630Output

                out.append(Sdm630Output(cfg["modbus"], serial, log=log))
            if cfg["mqtt"]["enabled"]:
                from firmware.mqtt_ha import MqttOutput, connector

                tls = cfg["mqtt"]["tls"]
                board, links = self.board, self.links
                model = "Public" if cfg["meter"]["model"] == "public" else "Home"
                out.append(MqttOutput(cfg["mqtt"], serial, connector(cfg["mqtt"], resolve=board.resolve),
                                      online=lambda: links.online_via is not None and (not tls or board.clock_ready()),
                                      model=model, sw_version=VERSION, log=log))
        except ImportError as e:
            log("outputs: this image does not carry the local outputs (%s): Modbus and MQTT are off" % e)
        return out

    def listen_on(self, host):
        """Where the local outputs' servers listen (the simulator: 127.0.0.1; the board: every interface)."""
        for out in self.outputs:
            if getattr(out, "listen_host", None) is not None:
                out.listen_host = host

    def _catch_up_energy(self, spool, log):
        """The counters never go back on the wire: if the newest spooled record carries more than was
        restored (both slots damaged, or removed), go on from there and say so."""
        found = spool.newest_energy(checked)  # (a damaged line that parses is no counters: skipped)
        if found is None:
            return
        before = self.energy.snapshot()
        self.energy.restore(found[1])
        if self.energy.snapshot() != before:
            log("energy: counters go on from the newest spooled record (seq %d), ahead of the saved ones: net "
                "import %s kWh, net export %s kWh" % (found[0], kwh_text(self.energy.net_import_mwh),
                                                      kwh_text(self.energy.net_export_mwh)))

    def apply(self, changes, reset=False):
        """The one way a changed setting reaches the running device: the setup page's WiFi, fixes,
        calibration and factory reset (reset=True: every setting back to its default but the board
        profile) all come here. changes {section: {key: value}} are validated and saved, then each
        part in self.parts takes what really changed, as far as it can live (firmware/config.py
        apply()). Raises ConfigError or OSError having saved and changed nothing. Returns the
        settings ("section.key") saved but in force only after a restart, also said on the console
        (docs/CONFIG.md says which, and why)."""
        later = config.apply(self.store, self.parts, changes, reset)
        self.config = self.store.config
        if later:
            self.log("config: in force after a restart: %s" % ", ".join(later))
        return later

    def _factory_reset_by_button(self):
        ok, message = self.portal.factory_reset()  # what the setup page's confirmed reset does
        self.log("button: " + message)
        return ok

    def on_readings(self, readings):
        self.windows += 1
        self.console(readings)
        self.persister.maybe_save(self.energy.snapshot(), time.ticks_ms())
        news = self.persister.news()  # a save failing, or going to the other slot: said once, not every window
        if news:
            self.log("meter: " + news)
        for out in self.outputs:
            try:
                out.on_readings(readings)
            except Exception as e:  # whatever goes wrong in an output, the meter and the others go on
                n = self.output_failures.get(out.name, 0)
                self.output_failures[out.name] = n + 1
                if not n:  # said the first time, not once a window
                    self.log("meter: the %s output cannot take the readings (%s: %s): the meter and the other "
                             "outputs go on (said once)" % (out.name, type(e).__name__, e))
        self.heap.collect()

    def shutdown(self):
        self.meter.stop()
        for out in self.outputs:  # the recorder's records waiting in RAM go to the flash spool
            stop = getattr(out, "shutdown", None)
            if stop is not None:
                try:
                    stop()
                except Exception as e:  # one output's fault must not keep the energy counters from being saved
                    self.log("meter: the %s output did not stop cleanly (%s: %s)" % (out.name, type(e).__name__, e))
        self.persister.save(self.energy.snapshot(), time.ticks_ms())  # an orderly stop loses nothing


TASK_RESTART_MS = (1000, 60000)  # first and longest pause before a failed task starts again


async def _supervise(device, name, start):
    """Run the task start() makes until it returns; when it fails, say so and start it again after
    a pause that doubles each time: one bug in the portal or the uploader must not end the other
    tasks, and a task that keeps failing must not spin. The meter's task is restarted the same way;
    if it keeps failing its windows stop closing and, on the board, the watchdog resets it."""
    pause_ms = TASK_RESTART_MS[0]
    while True:
        try:
            await start()
            return  # a task with nothing to do (uploads off) ends on purpose
        except Exception as e:  # not asyncio.CancelledError, a BaseException: stopping is not failing
            device.task_failures[name] = device.task_failures.get(name, 0) + 1
            print("meter: the %s task failed (%s: %s): starting it again in %d s"
                  % (name, type(e).__name__, e, pause_ms // 1000))
        await asyncio.sleep_ms(pause_ms)
        pause_ms = min(2 * pause_ms, TASK_RESTART_MS[1])


async def _run(device, run_ms, extra_tasks=()):
    starts = [("meter", lambda: device.meter.run(device.on_readings)), ("status LED", lambda: _status_led(device)),
              ("links", device.links.run), ("portal", lambda: device.portal.run(**device.portal_options))]
    for out in device.outputs:  # the outputs' own tasks (the uploader's), supervised like the rest
        if hasattr(out, "run"):
            starts.append((out.name, out.run))
    if device.use_watchdog:
        starts.append(("watchdog", lambda: _watchdog(device)))
    for fn in extra_tasks:  # the simulator's own (e.g. watching the heap), beside the device's
        starts.append((getattr(fn, "__name__", "extra"), lambda fn=fn: fn(device)))
    tasks = [asyncio.create_task(_supervise(device, name, start)) for name, start in starts]
    try:
        if run_ms is None:
            await tasks[0]
        else:
            await asyncio.sleep_ms(run_ms)
    finally:
        for t in tasks:
            t.cancel()


def main(board=None, run_ms=None, meter_overrides=None, portal_options=None, watchdog=False, extra_tasks=(),
         boot_guard=None, board_profile=None, outputs_extra=()):
    """Run the meter until Ctrl-C (or for run_ms, in tests and the simulator). outputs_extra: more
    outputs beside the device's own (Device), e.g. the simulator's report."""
    print("meter: firmware %s starting" % VERSION)
    device = Device(board, meter_overrides, board_profile=board_profile, outputs_extra=outputs_extra)
    print("meter: board %s" % device.board.name)
    device.use_watchdog = watchdog
    device.boot_guard = boot_guard
    device.portal_options = portal_options or {}
    if device.portal_options.get("host"):
        device.listen_on(device.portal_options["host"])
    device.heap.collect()
    gc.threshold(gc.mem_free() // GC_THRESHOLD_DIVISOR)
    print("meter: %d bytes of heap free" % gc.mem_free())
    t0 = time.ticks_ms()
    try:
        asyncio.run(_run(device, run_ms, extra_tasks))
    except KeyboardInterrupt:
        device.stopped_by_user = True
        calm_watchdog(device)  # a developer at the REPL, or mpremote deploying: no reset meanwhile
    finally:
        device.shutdown()
        asyncio.new_event_loop()
        device.board.led.value(0)
        device.uptime_ms = time.ticks_diff(time.ticks_ms(), t0)
    print("meter: stopped after %d s" % (device.uptime_ms // 1000))
    return device


def _blink_while_waiting(led, wait_ms):
    """The fault pattern while a start is held back: the board is not measuring."""
    on_ms, off_ms = LED_PATTERNS["fault"]
    for _ in range(wait_ms // (on_ms + off_ms)):
        led.value(1)
        time.sleep_ms(on_ms)
        led.value(0)
        time.sleep_ms(off_ms)


def run_on_board():
    """main.py's entry: run the meter; if it ever stops other than by Ctrl-C, restart the board.

    Failed starts in a row (a crash, a watchdog reset) make the next start wait longer
    (firmware/bootguard.py), so a fault that recurs at once cannot become a tight reboot loop.
    """
    import sys

    # The settings name the board's pins: read them once here (quietly: Device reads them again and
    # says how that went), so that no pin of another board is driven even for a moment.
    board = Board(config.ConfigStore(log=lambda m: None).load()["board"]["profile"])
    guard = BootGuard(board)
    if board.reset_cause() == WDT_RESET:
        guard.failed()  # the watchdog restarted a stalled meter
    wait_ms = guard.delay_ms()
    if wait_ms:
        print("meter: %d failed starts in a row: starting in %d s (Ctrl-C for the REPL)"
              % (guard.failures, wait_ms // 1000))
        _blink_while_waiting(board.led, wait_ms)
    try:
        if main(board=board, watchdog=True, boot_guard=guard).stopped_by_user:
            return  # Ctrl-C on the serial console: leave the developer at the REPL
    except Exception as e:
        show = getattr(sys, "print_exception", None)  # MicroPython's traceback printer
        if show is not None:
            show(e)
        else:
            print("meter: %r" % e)
    guard.failed()
    print("meter: stopped unexpectedly: restarting (Ctrl-C for the REPL)")
    time.sleep_ms(1000)
    Board.reset()

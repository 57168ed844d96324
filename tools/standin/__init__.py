"""A stand-in for an ESP32 board running MicroPython, on a pseudo-terminal, for rehearsing a deploy.

    from tools.standin import Standin
    with Standin(flash_dir, romfs_bytes=0x20000) as board:    # a purpose-built image with ROMFS
        subprocess.run(["mpremote", "connect", board.port, "fs", "ls"])
        board.flash_log()                                       # ["write /boot.py", ...]

It speaks to mpremote (or any serial terminal) as the board does, over a pseudo-terminal: the friendly
REPL, the raw REPL with raw-paste mode, Ctrl-C, Ctrl-D soft resets and hard resets (machine.reset(),
the watchdog). Behind it runs the real MicroPython unix port (tools/standin/board_main.py: one process
per boot, the host restarts it at each reset) with the simulated board's modules (tools/simboard:
machine, network, esp32, esp, time) and the simulated mains on its ADC inputs, its filesystem is a host
folder (the flash), and the image's options are the stand-in's:

  - romfs_bytes: the image has a ROMFS partition of that size (vfs.rom_ioctl, `mpremote romfs`), kept in
    STATE_DIR/romfs.img; None: a stock image, without ROMFS;
  - psram_bytes: the module has PSRAM (esp32.idf_heap_info shows it) and the heap is as large;
  - heap: the MicroPython heap the board's code finds free at the REPL, in MicroPython's -X heapsize
    syntax ("96wK": 96 KiB on the ESP32, twice the bytes on this 64-bit host, where objects are twice
    the size); default: an ESP32-WROOM-32's 96wK, or as much as the PSRAM with PSRAM;
  - image: the image's name, sys.implementation._build on the board: default "ESP32_GENERIC" (a stock
    image) or, with romfs_bytes, "METER_ESP32-ROMFS" (the meter's image without its code: docs/IMAGE.md);
  - micropython: the unix port to run (default: tools.mp.micropython_exe()), e.g. one built with the
    meter's code frozen in, to play the meter's own image (image="METER_ESP32").

The setup page the firmware serves on the board's port 80 answers on 127.0.0.1:http_port (its DNS on
dns_port); only localhost resolves, nothing leaves this machine. What it cannot model is in
docs/DEVELOPING.md ("Rehearsing a deploy without a board").
"""

import json
import os
import re
import selectors
import signal
import subprocess
import threading
import time
import tty

from tools import mp

HERE = os.path.dirname(os.path.abspath(__file__))
BOARD_MAIN = os.path.join(HERE, "board_main.py")
SCENARIOS = os.path.join(mp.ROOT, "tools", "sim", "scenarios")
DEFAULT_SCENARIO = os.path.join(SCENARIOS, "three-phase-balanced.json")
DEFAULT_NETWORKS = os.path.join(mp.ROOT, "tools", "sim", "networks.json")
WROOM32_HEAP = "96wK"  # an ESP32-WROOM-32 without PSRAM (tools/build.py's budget)
FLASH_BYTES = 4 * 1024 * 1024
FS_BYTES = 2 * 1024 * 1024  # the "vfs" partition on a 4 MiB flash (tools/simboard/esp32.py partition_table)
OWN_BYTES = 1024 * 1024  # room in the heap for the stand-in's own parts (the mains model, the REPL)
SOFT_RESET_EXIT = 10  # board_main.py's exit statuses
HOST_GONE_EXIT = 12
INTERRUPT_GRACE_S = 2.0  # code that never touches the board gets a real SIGINT after this long
OUTPUT_KEPT = 1 << 20  # bytes of console output kept for output()
UNREAD_KEPT = 4096  # bytes held for a serial port nobody reads (beyond, the oldest are lost, as from a UART)


class StandinError(Exception):
    pass


def heap_bytes(spec, pointer_bytes=None):
    """Bytes of a heap size in MicroPython's -X heapsize syntax: N, NK, NM; a w before the suffix
    scales it from a 32-bit port's to this build's word size (ports/unix/main.c): 96wK is 96 KiB on
    the ESP32 and 192 KiB on this 64-bit host, where objects take about twice the bytes."""
    m = re.fullmatch(r"(\d+)(w?)([KkMm]?)", str(spec).strip())
    if not m:
        raise StandinError("heap %r: give a size as MicroPython's -X heapsize takes it, e.g. 96wK or 512K" % spec)
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(3).lower()]
    if m.group(2):
        n = n * (pointer_bytes or mp.describe()[0]) // 4
    return n


class Standin:
    def __init__(self, flash, romfs_bytes=None, psram_bytes=0, heap=None, flash_bytes=FLASH_BYTES,
                 scenario=DEFAULT_SCENARIO, board=None, networks=DEFAULT_NETWORKS, http_port=0, dns_port=0,
                 lan_link=True, state_dir=None, image=None, micropython=None):
        self.flash = os.path.abspath(flash)
        if romfs_bytes is not None and (romfs_bytes <= 0 or romfs_bytes % 4096 or romfs_bytes > 0x100000):
            raise StandinError("romfs_bytes %r: the ROMFS partition is whole 4 KiB flash pages, at most 1 MiB"
                               % romfs_bytes)
        self.romfs_bytes = romfs_bytes
        self.psram_bytes = psram_bytes
        self.image = image or ("METER_ESP32-ROMFS" if romfs_bytes else "ESP32_GENERIC")
        self.micropython = micropython or mp.micropython_exe()
        pointer = mp.describe(self.micropython)[0]
        if heap is None:
            heap = "%dw" % psram_bytes if psram_bytes else WROOM32_HEAP
        self.heap_bytes = heap_bytes(heap, pointer)
        self.flash_bytes = flash_bytes
        self.scenario = os.path.abspath(scenario)
        self.board_profile = board
        self.networks = os.path.abspath(networks)
        self.http_port = http_port
        self.dns_port = dns_port
        self.lan_link = lan_link
        self.state_dir = os.path.abspath(state_dir or self.flash + ".standin")
        self.resets = []  # ("power" | "soft" | "hard" | "wdt" | "deepsleep" | "crash", time.monotonic())
        self._master = self._slave = None
        self._child = None
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._output = bytearray()
        self._unread = bytearray()
        self._to_child = bytearray()
        self._running = False
        self._interrupt_at = None
        self._hard = False
        self._failure = None
        self.port = None

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self):
        """Power the board on: the pseudo-terminal exists (self.port) and the board boots."""
        from tools.sim.runner import free_port

        if not os.path.isdir(self.flash):
            raise StandinError("%s: the flash folder is not there" % self.flash)
        os.makedirs(self.state_dir, exist_ok=True)
        self.http_port = self.http_port or free_port()
        self.dns_port = self.dns_port or free_port()
        self._log_path = os.path.join(self.state_dir, "flash.log")
        open(self._log_path, "w").close()
        self._romfs_path = os.path.join(self.state_dir, "romfs.img")
        if self.romfs_bytes and (not os.path.exists(self._romfs_path)
                                 or os.path.getsize(self._romfs_path) != self.romfs_bytes):
            with open(self._romfs_path, "wb") as f:
                f.write(b"\xff" * self.romfs_bytes)  # erased flash
        self._state_path = os.path.join(self.state_dir, "board-state.json")
        if os.path.exists(self._state_path):
            os.remove(self._state_path)
        self._config_path = os.path.join(self.state_dir, "config.json")
        with open(self._config_path, "w") as f:
            json.dump(self._config(), f, indent=1)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: bytes go through as over a UART
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._boot("power", "friendly")
        self._thread = threading.Thread(target=self._pump, name="standin", daemon=True)
        self._thread.start()
        return self

    def _config(self):
        return {"flash": self.flash, "log": self._log_path, "state": self._state_path,
                "romfs_file": self._romfs_path if self.romfs_bytes else None, "romfs_bytes": self.romfs_bytes or 0,
                "flash_bytes": self.flash_bytes, "psram_bytes": self.psram_bytes, "fs_bytes": FS_BYTES,
                "heap_bytes": self.heap_bytes, "scenario": self.scenario, "board": self.board_profile,
                "networks": self.networks, "lan_link": self.lan_link, "image": self.image,
                "forward": {"80": self.http_port, "53": self.dns_port},
                "simboard": mp.SIMBOARD, "tools_sim": os.path.join(mp.ROOT, "tools", "sim")}

    def stop(self):
        """Power off: the board's process ends, the pseudo-terminal goes; the flash folder stays."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._kill_child()
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # --- what a test looks at ----------------------------------------------------------------------------
    def flash_log(self):
        """Every change to the flash so far, in order: "write /path" (opened for writing), "remove
        /path", "rename /old /new", "mkdir /path", "rmdir /path", "romfs erase OFFSET N", "romfs write
        OFFSET N"; and before each boot "-- boot HOW" (power, soft, hard, wdt, deepsleep, crash)."""
        with open(self._log_path) as f:
            return f.read().splitlines()

    def output(self):
        """What the board has sent on its serial port so far (the last MiB)."""
        with self._lock:
            return bytes(self._output)

    def wait_for(self, pattern, timeout=30, since=0):
        """Wait until output() from position `since` on holds pattern (bytes, or a compiled bytes
        regex); its match (positions in output()). StandinError showing what came instead after
        timeout seconds."""
        rx = pattern if hasattr(pattern, "search") else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                m = rx.search(self._output, since)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self._failure is not None:
                    raise StandinError("the board did not print %r within %s s; it printed: %r"
                                       % (rx.pattern, timeout, bytes(self._output[since:][-2000:])))
                self._lock.wait(min(left, 0.5))

    # --- the board's processes ---------------------------------------------------------------------------
    def _boot(self, how, mode):
        self.resets.append((how, time.monotonic()))
        with open(self._log_path, "a") as f:
            f.write("-- boot %s\n" % how)
        how = "hard" if how == "crash" else how  # (a panic restarts the chip)
        self._int_r, self._int_w = os.pipe()
        self._ctl_r, self._ctl_w = os.pipe()
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([mp.SIMBOARD, mp.ROOT, ".frozen"]))
        # (the port's own heap: the board's, the ROMFS partition's contents, the stand-in's own parts)
        heapsize = self.heap_bytes + (self.romfs_bytes or 0) + OWN_BYTES
        cmd = [self.micropython, "-X", "heapsize=%d" % heapsize, BOARD_MAIN, self._config_path, mode, how,
               str(self._int_r), str(self._ctl_w)]
        self._child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       pass_fds=(self._int_r, self._ctl_w), cwd=self.flash, env=env,
                                       start_new_session=True)
        os.close(self._int_r)
        os.close(self._ctl_w)
        for fd in (self._child.stdin.fileno(), self._child.stdout.fileno(), self._ctl_r):
            os.set_blocking(fd, False)
        self._running = False
        self._interrupt_at = None
        self._hard = False

    def _kill_child(self):
        child = self._child
        if child is None:
            return
        if child.poll() is None:
            child.kill()
        child.wait()
        for f in (child.stdin, child.stdout):
            try:
                f.close()
            except OSError:
                pass
        for fd in (self._int_w, self._ctl_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._child = None

    def _restart(self, status):
        """The board's process ended (status: its exit status, or None when it asked for a hard reset):
        boot again the way that reset does."""
        state = {}
        try:
            with open(self._state_path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            pass
        if status is None:
            how = {3: "wdt", 4: "deepsleep"}.get(state.get("reset_cause"), "hard")
            mode = "friendly"
            self._to_child.clear()  # a chip reset loses what the UART had not handed over
        elif status == SOFT_RESET_EXIT:
            how, mode = "soft", state.get("mode", "friendly")
        else:
            how, mode = "crash", "friendly"
            self._emit(b"\r\nstand-in: the board's MicroPython ended (exit status %d): it starts again\r\n" % status)
            self._to_child.clear()
        crashes = [t for k, t in self.resets if k == "crash" and t > time.monotonic() - 10]
        self._kill_child()
        if how == "crash" and len(crashes) >= 3:
            self._emit(b"stand-in: three crashes in 10 s: the board stays off\r\n")
            return
        self._boot(how, mode)

    # --- moving bytes ------------------------------------------------------------------------------------
    def _emit(self, data):
        """Bytes from the board to the serial port (and to output())."""
        with self._lock:
            self._output += data
            if len(self._output) > OUTPUT_KEPT:
                del self._output[:len(self._output) - OUTPUT_KEPT]
            self._lock.notify_all()
        self._unread += data
        self._flush_to_port()

    def _flush_to_port(self):
        while self._unread:
            try:
                n = os.write(self._master, self._unread[:4096])
            except BlockingIOError:
                break
            del self._unread[:n]
        if len(self._unread) > UNREAD_KEPT:  # nobody reads the port: the oldest bytes are lost
            del self._unread[:len(self._unread) - UNREAD_KEPT]

    def _from_port(self, data):
        for c in data:
            if c == 3 and self._running:  # Ctrl-C while code runs: an interrupt, not input
                try:
                    os.write(self._int_w, b"\x03")
                except OSError:  # (the board's process has just ended)
                    continue
                if self._interrupt_at is None:
                    self._interrupt_at = time.monotonic()
            else:
                self._to_child.append(c)

    def _flush_to_child(self):
        child = self._child
        while self._to_child and child is not None:
            n = min(len(self._to_child), 255)
            try:
                written = os.write(child.stdin.fileno(), bytes((n,)) + self._to_child[:n])
            except BlockingIOError:
                return
            except BrokenPipeError:
                return
            if written != n + 1:  # (frames are far below PIPE_BUF: written whole or not at all)
                raise StandinError("a frame to the board was cut")
            del self._to_child[:n]

    def _control(self, data):
        for c in data:
            if c == ord("E"):
                self._running = True
            elif c == ord("e"):
                self._running = False
                self._interrupt_at = None
            elif c == ord("K"):
                self._interrupt_at = None
            elif c == ord("H"):
                self._hard = True

    def _pump(self):
        try:
            self._move_bytes()
        except Exception as e:  # the stand-in itself failed: said on its console, and by wait_for()
            self._failure = e
            self._emit(("\r\nstand-in: stopped working (%s: %s)\r\n" % (type(e).__name__, e)).encode())
            raise

    def _move_bytes(self):
        sel = selectors.DefaultSelector()
        sel.register(self._master, selectors.EVENT_READ, "port")
        child = None
        while not self._stop.is_set():
            if self._child is not child:
                for key in list(sel.get_map().values()):
                    if key.data != "port":
                        sel.unregister(key.fileobj)
                child = self._child
                if child is not None:
                    sel.register(child.stdout.fileno(), selectors.EVENT_READ, "out")
                    sel.register(self._ctl_r, selectors.EVENT_READ, "ctl")
            ready = sorted(sel.select(0.05), key=lambda kv: kv[0].data != "ctl")  # (whether code runs, first)
            for key, _ in ready:
                try:
                    data = os.read(key.fileobj, 65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # (the port: EIO while no program has it open)
                    data = b""
                if key.data == "port":
                    self._from_port(data)
                elif key.data == "out":
                    if data:
                        self._emit(data)
                    else:
                        sel.unregister(key.fileobj)
                elif key.data == "ctl":
                    if data:
                        self._control(data)
                    else:
                        sel.unregister(key.fileobj)
            self._flush_to_child()
            self._flush_to_port()
            if child is None:
                continue
            if self._hard:
                self._drain(child)
                self._restart(None)
            elif child.poll() is not None:
                self._drain(child)
                if child.returncode == HOST_GONE_EXIT:
                    break
                self._restart(child.returncode)
            elif self._interrupt_at is not None and time.monotonic() - self._interrupt_at > INTERRUPT_GRACE_S:
                self._interrupt_at = time.monotonic()  # code that does not touch the board: a real SIGINT
                try:
                    os.kill(child.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass

    def _drain(self, child):
        """The last output of a board process that has ended (or is about to be)."""
        while True:
            try:
                data = os.read(child.stdout.fileno(), 65536)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            self._emit(data)



def host_build(dest):
    """The device tree and ROMFS image `make build` makes (build/device, build/device.romfs), compiled for
    this machine's MicroPython instead of the ESP32's Xtensa: the firmware's viper kernels are native
    code, which only runs on the architecture it was compiled for. Returns (device folder, image path)."""
    import shutil

    from tools import build, romfs

    march = mp.describe()[1]
    device = os.path.join(dest, "device")
    for rel in build.device_sources():
        src = os.path.join(mp.ROOT, rel)
        if rel in ("boot.py", "main.py"):
            os.makedirs(device, exist_ok=True)
            shutil.copyfile(src, os.path.join(device, rel))
        else:
            build.compile_file(src, rel, os.path.join(device, rel[:-3] + ".mpy"), march)
    image = os.path.join(dest, "device.romfs")
    shutil.copyfile(romfs.image_path(march), image)
    return device, image

# board_main — the stand-in board's MicroPython: it boots from its flash and serves the REPL on its
# serial port (runs under the MicroPython unix port; tools/standin/__init__.py starts one per boot).
#
#     board_main.py CONFIG.json MODE BOOT INT_FD CTL_FD
#
# What ports/esp32/main.c and shared/runtime/pyexec.c (v1.28.0) do, in their order: mount the ROMFS at
# /rom when the image has one and the partition holds a valid image (py/runtime.c mp_init), the flash
# at / (modules/_boot.py), sys.path '', '.frozen' [, '/rom', '/rom/lib'], '/lib'; run boot.py, then
# main.py if the REPL is in friendly mode and boot.py did not fail; then the REPL in MODE ("friendly" or
# "raw"), until a soft reset. The serial port is stdin and stdout: the host writes what arrives on the
# pseudo-terminal into stdin in frames (a length byte, then that many bytes) and copies stdout back.
#
# The process ends at a reset, leaving the state a reset keeps (RTC, RTC memory, the REPL's mode, a
# running watchdog across a soft reset) in the board-state file for the next one: exit status 10 is a
# soft reset (Ctrl-D, sys.exit()); at a hard one (machine.reset(), the watchdog, deep sleep) it writes
# "H" to CTL_FD and waits for the host to end it, so that no more code runs. BOOT says which reset
# started this one: power, soft, hard, wdt or deepsleep.
#
# Ctrl-C: while code runs (CTL_FD says when: "E" running, "e" done) the host writes each Ctrl-C into
# INT_FD instead of stdin, and the code sees a KeyboardInterrupt the next time it touches the board
# (the simulated clock, a sleep, a timer: see _watch_interrupts), as between two bytecodes on the board.
import builtins
import gc
import io
import json
import sys

CONFIG, MODE, BOOT, INT_FD, CTL_FD = sys.argv[1:6]
HERE = sys.argv[0].rsplit("/", 1)[0]
with open(CONFIG) as _f:
    cfg = json.load(_f)
_f = None
_reserve = bytearray(cfg["heap_bytes"]) if cfg["heap_bytes"] else None  # the board's heap: see "the heap"

_p, sys.path = sys.path, []  # the port's own modules, not the simulated board's
try:
    import select as _select
    import time as _host_time
finally:
    sys.path = _p

_stdin = open(0, "rb")
_stdout = sys.stdout.buffer
_interrupts = open(int(INT_FD), "rb")
_control = open(int(CTL_FD), "wb")
_log = open(cfg["log"], "a")
FORCED_EXIT = 0x100  # shared/runtime/pyexec.h: PYEXEC_FORCED_EXIT (PYEXEC_NORMAL_EXIT 1, an exception 0)
SOFT_RESET_EXIT = 10
HOST_GONE_EXIT = 12


def flash_log(line):
    _log.write(line + "\n")


def out(data):
    """Bytes to the serial port as they are (the REPL's own: mp_hal_stdout_tx_str)."""
    _stdout.write(data)


def out_text(text):
    """Text to the serial port as the board's print() sends it (mp_hal_stdout_tx_strn_cooked: every
    "\\n" becomes "\\r\\n")."""
    _stdout.write(text.replace("\n", "\r\n").encode())


# --- the simulated board ---------------------------------------------------------------------------
import select  # noqa: E402, F401
import time  # noqa: E402, F401  (the board's clock: simboard's time module shadows the port's)

import esp  # noqa: E402, F401
import esp32  # noqa: E402
import machine  # noqa: E402
import network  # noqa: E402, F401

import simworld  # noqa: E402

world = simworld.world
world.flash_bytes = cfg["flash_bytes"]
world.psram_bytes = cfg["psram_bytes"]
world.partitions = esp32.partition_table(world.flash_bytes, cfg["romfs_bytes"])
if cfg["romfs_bytes"]:
    world.romfs_file = open(cfg["romfs_file"], "r+b")
esp32.log = flash_log
world.set_realtime()
world.lan_link = cfg["lan_link"]

from tools.sim import mains  # noqa: E402  (the simulated mains on the ADC pins: hardware, not firmware)

with open(cfg["networks"]) as _f:
    world.set_radio(json.load(_f))
with open(cfg["scenario"]) as _f:
    _scenario = mains.load_scenario(json.load(_f))
_profile = cfg["board"]
if _profile is None:  # the board config.json names, as tools/sim/device_main.py does
    try:
        with open(cfg["flash"] + "/config.json") as _f:
            _profile = json.load(_f).get("board", {}).get("profile")
    except (OSError, ValueError, AttributeError):
        _profile = None
    if _profile not in mains.boards.NAMES:
        _profile = None
mains.connect(world, _scenario, _profile)
_f = _scenario = None
for _name in list(sys.modules):  # the firmware the mains model imported stays its own: the board's
    if _name == "firmware" or _name.startswith("firmware."):  # code comes from the flash
        del sys.modules[_name]

# What a reset keeps: the RTC and its memory (not after power-up), a running watchdog (a soft reset only).
world.reset_cause = {"power": machine.PWRON_RESET, "hard": machine.HARD_RESET, "wdt": machine.WDT_RESET,
                     "deepsleep": machine.DEEPSLEEP_RESET, "soft": machine.SOFT_RESET}[BOOT]
try:
    with open(cfg["state"]) as _f:
        _state = json.load(_f)
except (OSError, ValueError):
    _state = {}
if BOOT != "power" and _state:
    _away_s = (_host_time.time_ns() // 1000 - _state["host_us"]) / 1e6
    world.set_wall_time(int(_state["rtc_s"] + _away_s))
    world.rtc_memory = bytes.fromhex(_state["rtc_memory"])
    if BOOT == "soft" and _state.get("wdt"):
        _w = machine.WDT(timeout=_state["wdt"][0])
        _w._fed_us = world.now_us() - int(_state["wdt"][1] * 1000 + _away_s * 1e6)
        _w = None
_state = None


def save_state(mode):
    wdt = world.wdt
    state = {"mode": mode, "reset_cause": world.reset_cause, "rtc_s": world.wall_time_us() / 1e6,
             "host_us": _host_time.time_ns() // 1000, "rtc_memory": world.rtc_memory.hex(),
             "wdt": [wdt._timeout_ms, (world.now_us() - wdt._fed_us) / 1000] if wdt is not None else None}
    with _posix.open(cfg["state"], "w") as f:  # (a host path: past the flash, which is / by now)
        json.dump(state, f)


# --- interrupts --------------------------------------------------------------------------------------
_int_poll = _select.poll()
_int_poll.register(_interrupts, _select.POLLIN)
_int_byte = bytearray(1)
_running = [False]  # user code runs: a Ctrl-C is an interrupt (mp_hal_set_interrupt_char(CHAR_CTRL_C))


def _interrupt_pending():
    """True (and the request taken) if the host has passed on a Ctrl-C. Allocates nothing."""
    for _ in _int_poll.ipoll(0):
        _interrupts.readinto(_int_byte)
        _control.write(b"K")
        return True
    return False


def _watch_interrupts():
    """Check for Ctrl-C wherever running code touches the board: the simulated clock's pump (every
    millisecond while a machine.Timer is in use), the idle REPL, and sleeps (in 10 ms steps)."""
    poll, advance_us = world.poll, world.advance_us

    def polled():
        if _running[0] and _interrupt_pending():
            raise KeyboardInterrupt
        poll()

    def advanced(us):
        while us > 10000 and _running[0]:
            advance_us(10000)
            us -= 10000
            if _interrupt_pending():
                raise KeyboardInterrupt
        advance_us(us)

    world.poll = polled
    world.advance_us = advanced


_watch_interrupts()


def hard_reset():
    """A reset of the chip: nothing more runs (no finally block, no shutdown code), as on the board.
    The state a reset keeps goes to the board-state file, and the host ends this process."""
    save_state("friendly")  # (pyexec_mode_kind starts friendly at power-up)
    _control.write(b"H")
    while True:
        try:
            _host_time.sleep(1)
        except KeyboardInterrupt:
            pass


def _without_unwinding(fn):
    # simboard's resets raise SimReset, which tests catch; on the stand-in they end the process.
    def call(*args):
        try:
            return fn(*args)
        except simworld.SimReset:
            hard_reset()

    return call


machine.reset = _without_unwinding(machine.reset)
machine.deepsleep = _without_unwinding(machine.deepsleep)
world._check_wdt = _without_unwinding(world._check_wdt)  # the watchdog's timeout


def _soft_reset():
    raise SystemExit  # ports/esp32 machine.soft_reset(): SystemExit, then a soft reboot


machine.soft_reset = _soft_reset

# --- the image's modules that the unix port lacks or has otherwise --------------------------------
sys.path[:0] = [HERE + "/board"]
import flashfs  # noqa: E402
import gc_board  # noqa: E402
import netfwd  # noqa: E402
import ntptime  # noqa: E402
import sys_board  # noqa: E402
import vfs_rom  # noqa: E402

del sys.path[0]
sys.modules["vfs"] = vfs_rom  # with rom_ioctl when the image has a ROMFS partition
sys.modules["socket"] = netfwd  # this machine only, the board's ports forwarded
sys.modules["ntptime"] = ntptime  # frozen in the ESP32 image
sys.modules["gc"] = gc_board  # mem_alloc() without the stand-in's own parts
sys_board.play(cfg["image"])
sys.modules["sys"] = sys_board  # sys.implementation._build: the image's name
netfwd.FORWARD.update((int(k), v) for k, v in cfg["forward"].items())
vfs = vfs_rom

# --- the filesystems ---------------------------------------------------------------------------------
_posix = vfs.VfsPosix()  # (kept before the host's root goes: FlashFs reaches the flash folder through it)
vfs.umount("/")
rom_mounted = False
if hasattr(vfs, "rom_ioctl"):  # py/runtime.c mp_init(): mp_vfs_mount_romfs_protected()
    try:
        _part = vfs.rom_ioctl(2, 0)
        if isinstance(_part, int):
            raise OSError(-_part)
        vfs.mount(vfs.VfsRom(_part), "/rom")
        rom_mounted = True
    except OSError:
        pass  # no valid image: no /rom, and not on sys.path either
    _part = None
vfs.mount(flashfs.FlashFs(_posix, cfg["flash"], cfg["fs_bytes"], flash_log), "/")
import os  # noqa: E402

os.chdir("/")
sys.path[:] = ["", ".frozen"] + (["/rom", "/rom/lib"] if rom_mounted else []) + ["/lib"]

# --- the heap ------------------------------------------------------------------------------------------
# The stand-in's own parts (the simulated mains, this REPL, the ROMFS partition's contents, which the
# board maps from flash) live in the same heap. The host gave room for them on top of heap_bytes: the
# board's heap was taken first, in one piece (_reserve, above), and is let go now that everything else
# is held, so that the board's code finds heap_bytes free in one region, as a board does after a reset.
gc.collect()
if _reserve is not None:
    _held = None
    _chunk = gc.mem_free()
    while _chunk >= 64:
        try:
            _held = (_held, bytearray(_chunk - 64))  # (a chain: a growing list would need a larger block)
        except MemoryError:
            _chunk //= 2
    _reserve = _chunk = None
    gc.collect()
    world.heap_base_bytes = gc.mem_alloc()  # what the stand-in holds (gc_board.py leaves it out)

# --- output as the board prints it ---------------------------------------------------------------------
_print = builtins.print
OWN_FILES = (HERE, cfg["simboard"], cfg["tools_sim"])


def _board_print(*args, sep=" ", end="\n", file=None):
    if file is not None and file is not sys.stdout and file is not sys.stderr:
        return _print(*args, sep=sep, end=end, file=file)
    out_text((" " if sep is None else sep).join([str(a) for a in args]) + ("\n" if end is None else end))


def _repl_print(obj):  # py/modbuiltins.c __repl_print__: the friendly REPL echoes an expression's value
    if obj is not None:
        out_text(repr(obj) + "\n")


builtins.print = _board_print
builtins.__repl_print__ = _repl_print


def print_exception(e):
    """The traceback as the board prints it: without the frames of the stand-in's own modules (on the
    board those are C, and leave none)."""
    buf = io.StringIO()
    sys.print_exception(e, buf)
    lines = [ln for ln in buf.getvalue().split("\n")
             if not (ln.startswith('  File "') and ln[8:].startswith(OWN_FILES))]
    out_text("\n".join(lines))


# --- running code --------------------------------------------------------------------------------------
main_globals = {"__name__": "__main__"}


class _SoftReset(Exception):
    pass


def execute(source, name, kind, print_eof):
    """shared/runtime/pyexec.c parse_compile_execute(): compile and run source in the REPL's globals;
    PYEXEC_NORMAL_EXIT (1), 0 after an exception, FORCED_EXIT after SystemExit (a soft reset follows).
    print_eof: the raw REPL's "\\x04" after the output and again after the exception's."""
    ret = 1
    if kind == "exec":  # (parse_compile_execute sets __file__ for file input, the raw REPL's included)
        main_globals["__file__"] = name
    try:
        _control.write(b"E")
        _running[0] = True
        try:
            exec(compile(source, name, kind), main_globals)
        finally:
            _running[0] = False
        if _interrupt_pending():  # mp_handle_pending() after the code: a Ctrl-C that came at the end
            raise KeyboardInterrupt
        _control.write(b"e")
        if print_eof:
            out(b"\x04")
    except SystemExit:
        _control.write(b"e")
        if print_eof:
            out(b"\x04")
        ret = FORCED_EXIT
    except BaseException as e:  # noqa: B036 (KeyboardInterrupt included, as on the board)
        if isinstance(e, KeyboardInterrupt):
            _interrupt_pending()  # (the Ctrl-C a signal delivered: taken, not read again at the REPL)
        _control.write(b"e")
        if print_eof:
            out(b"\x04")
        print_exception(e)
        ret = 0
    if print_eof:
        out(b"\x04")
    return ret


def run_file(name):
    """pyexec_file_if_exists(): 1 if there is no such file, else what running it returned."""
    try:
        with open(name, "rb") as f:
            source = f.read()
    except OSError:
        return 1
    return execute(source, name, "exec", False)


# --- the serial port's input ---------------------------------------------------------------------------
_in_poll = _select.poll()
_in_poll.register(_stdin, _select.POLLIN)
_in_poll.register(_interrupts, _select.POLLIN)
_frame = bytearray(256)
_pending = bytearray()
IDLE_MS = 20


def getc():
    """The next byte from the serial port. While it waits the board goes on: timers fire, a running
    watchdog counts (simworld's poll), as at the board's REPL. A Ctrl-C the host passed on as an
    interrupt just as the code ended is read here, as the Ctrl-C it was."""
    global _pending
    while not _pending:
        try:
            if _interrupt_pending():
                return 3
            ready = _in_poll.poll(IDLE_MS)
            if not ready:
                world.poll()
                continue
            for obj, _ in ready:
                if obj is _stdin:
                    if _stdin.readinto(memoryview(_frame)[:1]) != 1:
                        raise SystemExit(HOST_GONE_EXIT)  # the host is gone
                    n = _frame[0]
                    _stdin.readinto(memoryview(_frame)[:n])
                    _pending += _frame[:n]
        except KeyboardInterrupt:  # (a signal from the host, when code did not answer in time)
            return 3
    c = _pending[0]
    _pending = _pending[1:]
    return c


# --- the REPL (shared/runtime/pyexec.c, shared/readline/readline.c) -----------------------------------
CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5


def banner():
    version = sys.version.split("; ", 1)[-1]  # "MicroPython <version> on <date>"
    out_text("%s; ESP32 stand-in (MicroPython unix port) with ESP32\n" % version)
    out_text('Type "help()" for more information.\n')


def raw_repl():
    """pyexec_raw_repl(): 0 on Ctrl-B (to the friendly REPL), FORCED_EXIT for a soft reset."""
    global mode
    out(b"raw REPL; CTRL-B to exit\r\n")
    line = bytearray()
    out(b">")
    while True:
        c = getc()
        if c == CTRL_A:
            if len(line) == 2 and line[0] == CTRL_E:
                ret = raw_paste(line[1])
                if ret & FORCED_EXIT:
                    return ret
                line = bytearray()
                out(b">")
                continue
            out(b"raw REPL; CTRL-B to exit\r\n")
            line = bytearray()
            out(b">")
        elif c == CTRL_B:
            out(b"\r\n")
            mode = "friendly"
            return 0
        elif c == CTRL_C:
            line = bytearray()
        elif c == CTRL_D:
            out(b"OK")
            if not line:
                out(b"\r\n")
                return FORCED_EXIT
            ret = execute(bytes(line), "<stdin>", "exec", True)
            if ret & FORCED_EXIT:
                return ret
            line = bytearray()
            out(b">")
        else:
            line.append(c)


STDIN_BUFFER_MAX = 256  # MICROPY_REPL_STDIN_BUFFER_MAX: the ESP32 port keeps the default


def raw_paste(command):
    """do_reader_stdin(): raw-paste mode ("\\x05A\\x01"), with its flow control: the window is half
    the buffer, a "\\x01" each time the board has taken a window's worth. The source is taken whole,
    then compiled (the board compiles as it reads: a syntax error ends the transfer there)."""
    if command != ord("A"):
        out(b"R\x00")
        return 0
    out(b"R\x01")
    window = STDIN_BUFFER_MAX // 2
    out(bytes((window & 0xFF, window >> 8, 1)))
    source = bytearray()
    remain = window
    while True:
        c = getc()
        if c in (CTRL_C, CTRL_D):
            out(b"\x04")  # the end, seen
            if c == CTRL_C:
                out(b"\x04")
                print_exception(KeyboardInterrupt())
                out(b"\x04")
                return 0
            break
        source.append(c)
        remain -= 1
        if remain == 0:
            out(b"\x01")
            remain = window
    return execute(bytes(source), "<stdin>", "exec", True)


COMPOUND = ("if", "while", "for", "def", "class", "try", "with", "async", "@", "match")


def continues(text):
    """py/repl.c mp_repl_continue_with_input(): more lines are needed for this input."""
    depth, quote, i = 0, None, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = None
        elif ch == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            i += len(quote) - 1
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        i += 1
    if (quote and len(quote) == 3) or depth > 0 or text.endswith("\\"):
        return True
    first = text.lstrip().split(" ", 1)[0].split(":", 1)[0].split("(", 1)[0]
    if first in COMPOUND or text.lstrip().startswith("@"):
        return not text.endswith("\n")
    return text.rstrip().endswith(":")


def readline(prompt):
    """readline(): (line, 0) on Enter (carriage return), or ("", Ctrl-X) for Ctrl-A/B/D/E on an empty
    line and Ctrl-C at any time."""
    out_text(prompt)
    line = bytearray()
    while True:
        c = getc()
        if c == CTRL_C:
            return "", CTRL_C
        if c in (CTRL_A, CTRL_B, CTRL_D, CTRL_E) and not line:
            return "", c
        if c == 13:
            out(b"\r\n")
            return line.decode(), 0
        if c in (8, 127):
            if line:
                line = line[:-1]
                out(b"\x08 \x08")
        elif c == 27:  # an escape sequence (arrow keys): not edited here
            c = getc()
            if c == ord("["):
                while not 0x40 <= getc() <= 0x7E:
                    pass
        elif c >= 32:
            line.append(c)
            out(bytes((c,)))


def friendly_repl():
    """pyexec_friendly_repl(): 0 on Ctrl-A (to the raw REPL), FORCED_EXIT for a soft reset."""
    global mode
    banner()
    while True:
        line, code = readline(">>> ")
        if code == CTRL_A:
            out(b"\r\n")
            mode = "raw"
            return 0
        if code == CTRL_B:
            out(b"\r\n")
            banner()
            continue
        if code == CTRL_C:
            out(b"\r\n")
            continue
        if code == CTRL_D:
            out(b"\r\n")
            return FORCED_EXIT
        kind = "single"
        if code == CTRL_E:
            out(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
            text = bytearray()
            while True:
                c = getc()
                if c == CTRL_C:
                    text = None
                    break
                if c == CTRL_D:
                    break
                text.append(c)
                out(b"\r\n=== " if c == 13 else bytes((c,)))
            out(b"\r\n")
            if text is None:
                continue
            line, kind = text.decode().replace("\r", "\n"), "exec"
        elif not line:
            continue
        else:
            cancelled = False
            while continues(line):
                more, code = readline("... ")
                if code == CTRL_C:
                    out(b"\r\n")
                    cancelled = True
                    break
                if code == CTRL_D:
                    break
                line += "\n" + more
            if cancelled:
                continue
        ret = execute(line, "<stdin>", kind, False)
        if ret & FORCED_EXIT:
            return ret


# --- boot ---------------------------------------------------------------------------------------------
mode = MODE


def boot():
    if BOOT != "soft":  # the ROM's first lines (the bootloader's log is left out)
        cause = {"power": "0x1 (POWERON_RESET)", "deepsleep": "0x5 (DEEPSLEEP_RESET)"}.get(BOOT, "0xc (SW_CPU_RESET)")
        out_text("ets Jul 29 2019 12:21:46\n\nrst:%s,boot:0x13 (SPI_FAST_FLASH_BOOT)\n" % cause)
    ret = run_file("boot.py")
    if ret & FORCED_EXIT:
        return ret
    if mode == "friendly" and ret != 0:
        ret = run_file("main.py")
        if ret & FORCED_EXIT:
            return ret
    while True:
        ret = raw_repl() if mode == "raw" else friendly_repl()
        if ret != 0:
            return ret


boot()
out(b"MPY: soft reboot\r\n")
world.reset_cause = machine.SOFT_RESET
save_state(mode)
sys.exit(SOFT_RESET_EXIT)

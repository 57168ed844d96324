# The board stand-in (tools/standin) as mpremote and a serial terminal see it: the REPL, the flash, the
# ROMFS partition, the heap and PSRAM a deploy probes, Ctrl-C and resets, and the commands its docs show.
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import serial

from tests.host.standin_kit import MPREMOTE, changes, mpremote
from tools.mp import ROOT
from tools.standin import Standin, StandinError, heap_bytes

pytestmark = pytest.mark.slow  # each test boots boards (about a second or two each)


def test_mpremote_runs_code_and_its_files_land_in_the_flash_folder(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (tmp_path / "outside.txt").write_text("the host's")
    local = tmp_path / "notes.txt"
    local.write_text("line one\nline two\n")
    with Standin(flash) as board:
        # one mpremote call, two raw-REPL executions: the globals stay between them, as on the board
        r = mpremote(board.port, "exec", "a = 6", "+", "exec", "print(a * 7)", "+", "eval", "1 + 2")
        assert r.returncode == 0 and r.stdout.split() == ["42", "3"], r
        r = mpremote(board.port, "exec", "import sys, vfs; print(sys.path, hasattr(vfs, 'rom_ioctl'))")
        assert r.stdout.strip() == "['', '.frozen', '/lib'] False", r  # a stock image: no ROMFS
        r = mpremote(board.port, "fs", "cp", str(local), ":notes.txt", "+", "fs", "ls", "+", "fs", "cat", ":notes.txt")
        assert r.returncode == 0, r
        assert (flash / "notes.txt").read_text() == "line one\nline two\n"
        assert re.search(r"^\s*18 notes.txt$", r.stdout, re.M) and "line one\nline two" in r.stdout, r.stdout
        # / is the flash folder, and nothing reaches past it
        r = mpremote(board.port, "exec", "import os\n"
                     "print(sorted(os.listdir('/')))\n"
                     "with open('/../../outside.txt', 'w') as f: f.write('the board')\n"
                     "os.mkdir('/lib'); os.rename('/notes.txt', '/lib/notes.txt')\n"
                     "print(os.stat('/lib')[0], os.stat('/lib/notes.txt')[:1] + os.stat('/lib/notes.txt')[6:7])\n")
        assert r.returncode == 0, r
        assert r.stdout.splitlines() == ["['notes.txt']", "16384 (32768, 18)"], r.stdout  # littlefs: type bits only
        assert (tmp_path / "outside.txt").read_text() == "the host's"
        assert (flash / "outside.txt").read_text() == "the board"
        r = mpremote(board.port, "fs", "rm", ":lib/notes.txt", "+", "exec", "import os; print(os.statvfs('/')[:4])")
        assert r.returncode == 0 and not (flash / "lib" / "notes.txt").exists(), r
        assert eval(r.stdout.splitlines()[-1])[:3] == (4096, 4096, 512), r.stdout  # the 2 MiB "vfs" partition
        assert changes(board) == ["write /notes.txt", "write /outside.txt", "mkdir /lib",
                                  "rename /notes.txt /lib/notes.txt", "remove /lib/notes.txt"]


def read_until(port, marker, timeout=10):
    """Bytes from the serial port up to and including marker."""
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(marker):
        if time.monotonic() > deadline:
            raise AssertionError("no %r from the board; it sent %r" % (marker, got))
        got += port.read(1)
    return got


def test_the_repl_answers_as_micropythons_pyexec_does(tmp_path):
    with Standin(tmp_path) as board:
        board.wait_for(b">>> ")
        with serial.Serial(board.port, 115200, timeout=0.2) as s:
            s.write(b"'sync'\r")  # (past what the board printed before the port was opened)
            read_until(s, b"'sync'\r\n>>> ")
            s.write(b"x = 6\r")  # the friendly REPL echoes, and shows an expression's value
            assert read_until(s, b">>> ") == b"x = 6\r\n>>> "
            s.write(b"x * 7\r")
            assert read_until(s, b">>> ") == b"x * 7\r\n42\r\n>>> "
            s.write(b"for i in range(2):\r")
            assert read_until(s, b"... ").endswith(b"for i in range(2):\r\n... ")
            s.write(b"  print(i)\r\r")
            assert read_until(s, b">>> ").endswith(b"\r\n0\r\n1\r\n>>> ")
            s.write(b"\x01")  # raw REPL
            assert read_until(s, b">") == b"\r\nraw REPL; CTRL-B to exit\r\n>"
            s.write(b"print(x)\x04")  # the same globals
            assert read_until(s, b">") == b"OK6\r\n\x04\x04>"
            s.write(b"print('out')\nraise ValueError('bad')\x04")
            assert read_until(s, b"\x04>") == (b"OKout\r\n\x04Traceback (most recent call last):\r\n"
                                           b"  File \"<stdin>\", line 2, in <module>\r\nValueError: bad\r\n\x04>")
            s.write(b"\x05A\x01")  # raw-paste mode: a window of 128 bytes, and one more each time it is used
            assert read_until(s, b"\x80\x00\x01") == b"R\x01\x80\x00\x01"
            code = b"y = 0\n" + b"y += 1\n" * 100 + b"print(y)\n"
            windows, sent = 2, 0
            while sent < len(code):
                if sent == 128 * windows:
                    assert s.read(1) == b"\x01"
                    windows += 1
                n = min(128 * windows - sent, len(code) - sent)
                s.write(code[sent:sent + n])
                sent += n
            s.write(b"\x04")
            assert read_until(s, b">").endswith(b"\x04100\r\n\x04\x04>")
            s.write(b"\x05B\x01")  # a raw-paste command it does not know
            assert read_until(s, b">") == b"R\x00>"
            s.write(b"\x04")  # Ctrl-D on an empty line: a soft reset, back in the raw REPL, globals gone
            assert read_until(s, b">") == b"OK\r\nMPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>"
            s.write(b"print(x)\x04")
            assert b"NameError: name 'x' isn't defined" in read_until(s, b"\x04>")
            s.write(b"\x02")  # back to the friendly REPL
            assert read_until(s, b">>> ").startswith(b"\r\nMicroPython ")
    assert [how for how, _ in board.resets] == ["power", "soft"]


def test_an_image_with_romfs_takes_mpremotes_image_and_mounts_it_after_a_reset(tmp_path):
    from mpremote.romfs import VfsRomWriter

    writer = VfsRomWriter()
    writer.opendir("lib")
    writer.mkfile("greeting.py", b"TEXT = 'from ROMFS'\n")
    writer.closedir()
    image = tmp_path / "code.romfs"
    image.write_bytes(writer.finalise())
    flash = tmp_path / "flash"
    flash.mkdir()
    with Standin(flash, romfs_bytes=0x20000) as board:
        r = mpremote(board.port, "romfs", "query")
        assert r.returncode == 0, r
        assert "ROMFS0 partition has size 131072 bytes (32 blocks of 4096 bytes each)" in r.stdout
        assert "Not a valid ROMFS" in r.stdout  # erased flash
        r = mpremote(board.port, "romfs", "deploy", str(image))
        assert r.returncode == 0 and "ROMFS image deployed" in r.stdout, r
        r = mpremote(board.port, "romfs", "query", "+", "exec",
                     "import sys, greeting; print(sys.path, greeting.TEXT, greeting.__file__)")
        assert "Raw contents: %s ..." % image.read_bytes()[:12].hex(":") in r.stdout, r.stdout
        assert "['', '.frozen', '/rom', '/rom/lib', '/lib'] from ROMFS /rom/lib/greeting.py" in r.stdout, r.stdout
        assert [c.split()[:2] for c in changes(board)] == [["romfs", "erase"], ["romfs", "write"]]
        # the partition as ports/esp32/esp32_partition.c has it
        r = mpremote(board.port, "exec", "import vfs\n"
                     "dev = vfs.rom_ioctl(2, 0)\n"
                     "print(vfs.rom_ioctl(1), vfs.rom_ioctl(7), dev.ioctl(4, 0), dev.ioctl(5, 0))\n"
                     "dev.ioctl(6, 31)\n"
                     "dev.writeblocks(31, b'\\x0f\\xff', 0)\n"
                     "dev.writeblocks(31, b'\\xf0\\x3c', 0)\n"  # flash only clears bits: the AND stays
                     "print(bytes(memoryview(dev)[31 * 4096:31 * 4096 + 3]))\n"
                     "for call in (lambda: dev.writeblocks(31, bytearray(8), 4092), lambda: dev.ioctl(6, 33), len):\n"
                     "    try:\n"
                     "        call(dev) if call is len else call()\n"
                     "    except (OSError, TypeError) as e:\n"
                     "        print(repr(e))\n")
        assert r.stdout.splitlines() == ["1 -22 32 4096", "b'\\x00<\\xff'", "OSError(-260, 'ESP_ERR_INVALID_SIZE')",
                                         "OSError(-258, 'ESP_ERR_INVALID_ARG')",
                                         "TypeError(\"object of type 'Partition' has no len()\",)"], r
    with Standin(flash, romfs_bytes=0x20000) as board:  # the partition keeps the image over a power cycle
        r = mpremote(board.port, "exec", "import greeting; print(greeting.TEXT)")
        assert r.stdout.strip() == "from ROMFS", r


def test_a_stock_image_has_no_romfs_and_mpremote_says_so(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with Standin(tmp_path) as board:
        r = mpremote(board.port, "romfs", "query")
        assert r.returncode == 0 and r.stdout.strip().endswith("ROMFS is not enabled on this device"), r
        image = os.path.join(ROOT, "build", "romfs-x64.img")
        r = mpremote(board.port, "romfs", "deploy", image if os.path.exists(image) else str(tmp_path / "config.json"))
        assert r.returncode != 0 and "ROMFS is not enabled on this device" in r.stdout + r.stderr, r
        assert changes(board) == []
    assert os.listdir(tmp_path) == ["config.json"]


PROBE = ("import esp, esp32, gc\n"
         "print((esp.flash_size(), gc.mem_free(), gc.mem_alloc(), esp32.idf_heap_info(esp32.HEAP_DATA)))\n")


def test_what_a_deploy_probes_heap_psram_flash_is_what_the_board_is(tmp_path):
    with Standin(tmp_path) as board:  # an ESP32-WROOM-32: 4 MiB flash, no PSRAM, ~96 KiB of heap
        r = mpremote(board.port, "exec", PROBE)
    flash_bytes, free, used, regions = eval(r.stdout)
    assert flash_bytes == 4 * 1024 * 1024
    assert board.heap_bytes == heap_bytes("96wK") == 96 * 1024 * 2  # (this host's words are 8 bytes)
    assert 0.9 * board.heap_bytes < free + used <= board.heap_bytes + 1024
    assert max(r[0] for r in regions) < 200 * 1024  # internal RAM only
    with Standin(tmp_path, psram_bytes=4 * 1024 * 1024) as board:  # a WROVER: 4 MiB of PSRAM
        r = mpremote(board.port, "exec", PROBE)
    flash_bytes, free, used, regions = eval(r.stdout)
    psram = [r for r in regions if r[0] == 4 * 1024 * 1024]
    assert len(psram) == 1 and free > 4 * 1024 * 1024
    # the port grows its heap into the PSRAM: what the heap uses is not free there (in 32-bit bytes)
    assert abs(psram[0][1] - (4 * 1024 * 1024 - used // 2)) < 16 * 1024, (psram, used)


def test_ctrl_c_stops_main_py_and_resets_keep_what_a_board_keeps(tmp_path):
    (tmp_path / "main.py").write_text("import time\nprint('main: running')\nwhile True:\n    time.sleep_ms(20)\n")
    with Standin(tmp_path) as board:
        board.wait_for(b"main: running")
        # mpremote's Ctrl-C stops main.py; the RTC is set in UTC as the deploy does
        r = mpremote(board.port, "exec", "import machine; machine.RTC().datetime((2031, 5, 6, 1, 7, 8, 9, 0))")
        assert r.returncode == 0, r
        assert b"KeyboardInterrupt" in board.output()
        # a hard reset runs boot.py and main.py again and keeps the RTC
        mark = len(board.output())
        assert mpremote(board.port, "reset").returncode == 0
        board.wait_for(b"main: running", since=mark)
        r = mpremote(board.port, "exec", "import machine; print(machine.RTC().datetime()[:3])")
        assert r.stdout.strip() == "(2031, 5, 6)", r
        # code that never touches the board is stopped too (a signal, 2 s later)
        with serial.Serial(board.port, 115200, timeout=0.2) as s:
            s.write(b"\x02")
            read_until(s, b">>> ")
            s.write(b"while True: pass\r\r")
            read_until(s, b"... \r\n")
            s.write(b"\x03")
            assert read_until(s, b">>> ", timeout=10).endswith(b"KeyboardInterrupt: \r\n>>> ")
            # a watchdog left running at the REPL resets the board when nobody feeds it
            s.write(b"import machine\rw = machine.WDT(timeout=1000)\r")
            read_until(s, b"main: running", timeout=10)
        r = mpremote(board.port, "exec", "import machine; print(machine.reset_cause())")
        assert r.stdout.strip() == "5", r  # mpremote's own soft reset came after it
    assert [how for how, _ in board.resets if how != "soft"] == ["power", "hard", "wdt"]


def test_bad_options_are_refused_with_the_reason(tmp_path):
    with pytest.raises(StandinError, match="whole 4 KiB flash pages"):
        Standin(tmp_path, romfs_bytes=1000)
    with pytest.raises(StandinError, match="e.g. 96wK"):
        Standin(tmp_path, heap="lots")
    with pytest.raises(StandinError, match="the flash folder is not there"):
        Standin(tmp_path / "missing").start()
    r = subprocess.run([sys.executable, "-m", "tools.standin", "--flash", str(tmp_path), "--scenario", "no-such"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no bundled scenario of that name" in r.stderr, r


def documented_commands():
    """The shell lines docs/DEVELOPING.md shows for running the stand-in by hand."""
    with open(os.path.join(ROOT, "docs", "DEVELOPING.md")) as f:
        text = f.read()
    section = text.split("## Rehearsing a deploy without a board", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_documented_commands_work(tmp_path):
    lines = documented_commands()
    assert len(lines) == 3 and "-m tools.standin" in lines[0] and all("mpremote connect" in x for x in lines[1:])
    flash = str(tmp_path / "board")
    start = lines[0].replace("/tmp/board", flash).split()
    proc = subprocess.Popen([os.path.join(ROOT, start[0])] + start[1:], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first = proc.stdout.readline()
        m = re.match(r"standin: serial port (/dev/pts/\d+) .*setup page on http://127\.0\.0\.1:(\d+)/", first)
        assert m, first + proc.stderr.read() if proc.poll() is not None else first
        outputs = []
        for line in lines[1:]:
            cmd = line.replace("/dev/pts/N", m.group(1)).replace(".venv/bin/mpremote", MPREMOTE)
            r = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, (cmd, r)
            outputs.append(r.stdout)
        assert outputs[0].strip() == "[]"  # a new, empty flash
        assert "ROMFS0 partition has size 131072 bytes" in outputs[1]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
        assert "standin: stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert os.path.isdir(flash) and os.path.exists(flash + ".standin/romfs.img")
    with open(flash + ".standin/config.json") as f:
        assert json.load(f)["romfs_bytes"] == 0x20000

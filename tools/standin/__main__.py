"""A stand-in for an ESP32 board with MicroPython, on a pseudo-terminal that mpremote can connect to.

    python -m tools.standin --flash DIR [--romfs-bytes N] [--psram [BYTES]] [--heap 96wK]
                            [--scenario SCENARIO] [--board NAME] [--http-port P]

prints the serial port (a /dev/pts/N path) and runs until Ctrl-C; meanwhile, for example:

    mpremote connect /dev/pts/N exec "import os; print(os.listdir())"
    mpremote connect /dev/pts/N romfs query

(`make deploy` rehearses against it in tests/host/test_deploy_rehearsal.py, with a build compiled for
this machine: tools.standin.host_build().)

The board's filesystem is the folder DIR (kept: it is the board's flash); its ROMFS partition, when it
has one, is kept in DIR.standin/romfs.img, and every change to its flash is logged, in order, in
DIR.standin/flash.log. Without --romfs-bytes it is a stock MicroPython image (no ROMFS, as every
ESP32 image MicroPython publishes); with it, a purpose-built image with a ROMFS partition of N bytes
(0x20000 in ports/esp32/partitions-4MiB-romfs.csv). --psram gives the module PSRAM (4 MiB unless
BYTES) and the heap that comes with it; --heap sets the heap the board's code finds free, in
MicroPython's -X heapsize syntax (default: 96wK, an ESP32-WROOM-32's, or the PSRAM's size). The
simulated mains are on its ADC inputs (SCENARIO: a bundled scenario's name or a file, as for
`python -m tools.sim`), and the firmware's setup page on the board's port 80 answers on
http://127.0.0.1:P/ (a free port unless --http-port). What the stand-in models and what it cannot is in
docs/DEVELOPING.md.
"""

import argparse
import os
import signal
import sys
import threading

from tools import standin
from tools.sim.runner import UsageError, scenario_path


def _size(text):
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of bytes (e.g. 131072 or 0x20000)" % text)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.standin", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flash", required=True, help="the folder that is the board's filesystem (made if missing)")
    ap.add_argument("--romfs-bytes", type=_size, help="a purpose-built image with a ROMFS partition of this size")
    ap.add_argument("--psram", nargs="?", type=_size, const=4 * 1024 * 1024, default=0, metavar="BYTES",
                    help="the module has PSRAM (default 4 MiB)")
    ap.add_argument("--heap", help="the heap the board's code finds free (e.g. 96wK, 4M)")
    ap.add_argument("--scenario", default="three-phase-balanced", help="the simulated mains (tools/sim/scenarios)")
    ap.add_argument("--board", help="the board profile (firmware/boards.py); default: as config.json says")
    ap.add_argument("--http-port", type=int, default=0, help="host port for the board's port 80")
    args = ap.parse_args(argv)
    try:
        scenario = scenario_path(args.scenario)
    except UsageError as e:
        raise SystemExit(str(e))
    os.makedirs(args.flash, exist_ok=True)
    try:
        board = standin.Standin(args.flash, romfs_bytes=args.romfs_bytes, psram_bytes=args.psram, heap=args.heap,
                                scenario=scenario, board=args.board, http_port=args.http_port)
    except standin.StandinError as e:
        raise SystemExit(str(e))
    done = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *a: done.set())
    with board:
        print("standin: serial port %s (flash %s%s; setup page on http://127.0.0.1:%d/); Ctrl-C stops it"
              % (board.port, board.flash, ", ROMFS %d bytes" % board.romfs_bytes if board.romfs_bytes else
                 ", no ROMFS", board.http_port), flush=True)
        while not done.wait(0.5):
            pass
    print("standin: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

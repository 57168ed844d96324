"""Copy build/device onto a board over USB with mpremote and set the board's clock.

    python -m tools.deploy --port /dev/ttyUSB0      (or: make deploy PORT=/dev/ttyUSB0)

Replaces /firmware and /lib on the board, copies boot.py and main.py, sets the RTC from this
computer (`mpremote rtc --set`), then resets the board. Data the device wrote (config, energy
counters, identity) lives outside those folders and is left alone.
"""

import argparse
import os
import subprocess
import sys

from tools.build import DEVICE


def plan(port):
    """The mpremote command line: one connection, several chained actions."""
    mpremote = os.path.join(os.path.dirname(sys.executable), "mpremote")
    cmd = [mpremote, "connect", port]
    for folder in ("firmware", "lib"):
        # `rm -r` fails harmlessly-but-loudly on a fresh board; exec a guarded rmtree instead.
        cmd += ["exec", _rmtree_snippet(folder), "+"]
    cmd += ["fs", "cp", "-r", os.path.join(DEVICE, "firmware"), os.path.join(DEVICE, "lib"), ":", "+"]
    cmd += ["fs", "cp", os.path.join(DEVICE, "boot.py"), os.path.join(DEVICE, "main.py"), ":", "+"]
    cmd += ["rtc", "--set", "+", "reset"]
    return cmd


def _rmtree_snippet(folder):
    return (
        "import os\n"
        "def rm(p):\n"
        "    try:\n"
        "        st = os.stat(p)\n"
        "    except OSError:\n"
        "        return\n"
        "    if st[0] & 0x4000:\n"
        "        for n in os.listdir(p):\n"
        "            rm(p + '/' + n)\n"
        "        os.rmdir(p)\n"
        "    else:\n"
        "        os.remove(p)\n"
        "rm('/%s')\n" % folder
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    ap.add_argument("--dry-run", action="store_true", help="print the mpremote command instead of running it")
    args = ap.parse_args(argv)
    if not os.path.isdir(DEVICE):
        raise SystemExit("build/device is missing: run `make build` first")
    cmd = plan(args.port)
    if args.dry_run:
        print(" ".join(repr(c) if "\n" in c else c for c in cmd))
        return 0
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())

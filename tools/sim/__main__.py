"""The desktop simulator: the meter firmware on a simulated ESP32, under the MicroPython unix port.

    python -m tools.sim device [--duration SECONDS]    the whole device, in real time, until Ctrl-C
"""

import argparse
import signal
import subprocess
import sys

from tools import mp


def cmd_device(args):
    cmd = mp.command("tools/sim/device_main.py", *([str(int(args.duration * 1000))] if args.duration else []),
                     heapsize=args.heapsize)
    child = subprocess.Popen(cmd, env=mp.env(), cwd=mp.ROOT)
    # Ctrl-C reaches the child too (same process group): let it shut down, then report its status.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return child.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("device", help="run the whole device in real time until Ctrl-C")
    d.add_argument("--duration", type=float, help="stop after this many seconds")
    d.add_argument("--heapsize", help="MicroPython heap, e.g. 96wK (an ESP32 without PSRAM)")
    d.set_defaults(fn=cmd_device)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

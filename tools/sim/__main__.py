"""The desktop simulator: the meter firmware on a simulated ESP32, under the MicroPython unix port.

    python -m tools.sim device [--duration SECONDS] [--state-dir DIR]
                                the whole device, in real time, until Ctrl-C. The device's flash
                                filesystem (config.json, identity.json, energy counters) is the
                                folder DIR, kept between runs; without --state-dir a fresh temporary
                                folder, removed afterwards.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile

from tools import mp


def cmd_device(args):
    with tempfile.TemporaryDirectory(prefix="meter-flash-") as scratch:
        state_dir = os.path.abspath(args.state_dir) if args.state_dir else scratch
        os.makedirs(state_dir, exist_ok=True)
        cmd = mp.command(os.path.join(mp.ROOT, "tools", "sim", "device_main.py"), state_dir,
                         *([str(int(args.duration * 1000))] if args.duration else []), heapsize=args.heapsize)
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
    d.add_argument("--state-dir", help="folder holding the device's flash filesystem, kept between runs "
                                       "(default: a fresh temporary folder)")
    d.set_defaults(fn=cmd_device)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

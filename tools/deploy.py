"""Copy build/device onto a board over USB with mpremote and set the board's clock.

    python -m tools.deploy --port /dev/ttyUSB0      (or: make deploy PORT=/dev/ttyUSB0)
    python -m tools.deploy --port /dev/ttyUSB0 --identity out/identity-MD7K3Q9XPA.json
                                                    (or: make deploy PORT=... IDENTITY=...)

Writes the firmware's code (build/device.romfs) to the board's ROMFS partition, where it runs in
place without taking heap (`mpremote romfs deploy`; the board needs a MicroPython with a ROMFS
partition, see docs/HARDWARE.md), removes any /firmware and /lib folders an older deploy left on
its filesystem (they would shadow /rom), copies boot.py and main.py, sets the RTC from this
computer in UTC (not `mpremote rtc --set`, which writes local time), then resets the board. With
--files (ROMFS=0) the .mpy tree goes into /firmware and /lib on the filesystem instead: only for
boards with PSRAM, as the code then takes heap. Data the device wrote (config, energy counters, identity) is left alone.

With --identity (a file from `python -m tools.provision`) the device's identity goes to
/identity.json, copied to a temporary name and renamed, so a cut cable cannot leave half a file.
The board is asked first which identity it has: the same one is not copied again; a board without
one (or with a damaged one) gets it; a board that already has a *different* identity is refused,
because its label would no longer match, unless --force-identity (FORCE_IDENTITY=1) is given.
"""

import argparse
import os
import subprocess
import sys

from tools.build import DEVICE, ROMFS_IMAGE
from tools.mp import ROOT

sys.path.insert(0, os.path.join(ROOT, "lib"))  # firmware.identity uses lib/hmacsha256, as on the board

from firmware import identity  # noqa: E402

BOARD_IDENTITY = "identity.json"  # relative: the board's working directory is /

# Run on the board: prints one line "IDENTITY none", "IDENTITY damaged" or "IDENTITY <serial> <check>".
# Only the serial and the checksum leave the board, never a secret.
PROBE = (
    "import json\n"
    "try:\n"
    "    f = open('%s')\n"
    "except OSError:\n"
    "    print('IDENTITY none')\n"
    "else:\n"
    "    try:\n"
    "        d = json.loads(f.read())\n"
    "        print('IDENTITY %%s %%s' %% (d['serial'], d['check']))\n"
    "    except Exception:\n"
    "        print('IDENTITY damaged')\n"
    "    f.close()\n" % BOARD_IDENTITY
)


def mpremote():
    return os.environ.get("MPREMOTE") or os.path.join(os.path.dirname(sys.executable), "mpremote")


def board_identity(port):
    """What the board holds: None (no identity), "damaged", or (serial, check)."""
    r = subprocess.run([mpremote(), "connect", port, "exec", PROBE], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["IDENTITY"]:
            if parts[1:] == ["none"]:
                return None
            if len(parts) == 3:
                return (parts[1], parts[2])
            return "damaged"
    raise SystemExit("could not ask the board at %s for its identity (mpremote said: %s)"
                     % (port, (r.stderr or r.stdout).strip() or "nothing"))


def decide(local, on_board, force=False):
    """("copy" | "skip" | "refuse", message) for identity `local` and the board's state."""
    check = identity.checksum(local.serial, local.ap_password, local.pin,
                              "".join("%02x" % b for b in local.upload_key))
    if on_board is None:
        return "copy", "the board has no identity yet: installing %s" % local.serial
    if on_board == "damaged":
        return "copy", "the board's identity file is damaged: replacing it with %s" % local.serial
    serial, board_check = on_board
    if board_check == check:
        return "skip", "the board already has identity %s: not copied again" % local.serial
    if force:
        return "copy", "replacing the board's identity %s with %s (forced)" % (serial, local.serial)
    return "refuse", (
        "the board already has identity %s, and %s is a different one (%s): not replaced, since the "
        "label on the device would no longer match and the cloud pairing would break. If this board "
        "really is to become %s, deploy again with FORCE_IDENTITY=1 (--force-identity)."
        % (serial, "this file", local.serial, local.serial))


def check_port(port):
    """SystemExit naming the problem when port is a device path that is not there (no board plugged
    in, or another name): mpremote would only say it "may be in use by another program". Other
    forms mpremote understands (a0, u0, id:SERIAL...) are left to it."""
    if not port.startswith("/dev/") or os.path.exists(port):
        return
    try:
        from serial.tools import list_ports  # pyserial, which mpremote brings

        found = sorted(p.device for p in list_ports.comports())
    except Exception:  # (only for the message)
        found = []
    raise SystemExit("--port %s: there is no such serial port: is the board plugged in (a USB cable that carries "
                     "data) and is this its name? %s" % (
                         port, "Serial ports here: %s." % ", ".join(found) if found else "No serial port is here."))


def plan(port, identity_file=None, files=False):
    """The mpremote command line: one connection, several chained actions."""
    cmd = [mpremote(), "connect", port]
    if not files:
        # First: on an image without a ROMFS partition mpremote stops here, and the code already
        # on the board stays as it was (removing it first would leave a board that cannot start).
        cmd += ["romfs", "deploy", ROMFS_IMAGE, "+"]
    for folder in ("firmware", "lib"):
        # `rm -r` fails harmlessly-but-loudly on a fresh board; exec a guarded rmtree instead.
        cmd += ["exec", _rmtree_snippet(folder), "+"]
    if files:
        cmd += ["fs", "cp", "-r", os.path.join(DEVICE, "firmware"), os.path.join(DEVICE, "lib"), ":", "+"]
    cmd += ["fs", "cp", os.path.join(DEVICE, "boot.py"), os.path.join(DEVICE, "main.py"), ":", "+"]
    if identity_file is not None:
        tmp = BOARD_IDENTITY + ".tmp"
        cmd += ["fs", "cp", identity_file, ":" + tmp, "+"]
        cmd += ["exec", "import os\nos.rename('%s', '%s')\n" % (tmp, BOARD_IDENTITY), "+"]
    return cmd[:-1]  # (no "+" after the last step)


def clock_plan(port, now=None):
    """A second mpremote call, made right before it runs: the board's RTC set to UTC, then a reset.

    Not `mpremote rtc --set`: that writes the computer's *local* time, and the firmware keeps the RTC
    in UTC (records' timestamps, TLS certificate dates). Made after the copy, which can take a minute,
    so the time it carries is seconds old, not minutes."""
    return [mpremote(), "connect", port, "exec", utc_clock_snippet(now), "+", "reset"]


def utc_clock_snippet(now=None):
    """MicroPython that sets machine.RTC to `now` (default: this moment) in UTC."""
    import datetime

    t = now or datetime.datetime.now(datetime.timezone.utc)
    t = t.astimezone(datetime.timezone.utc)
    # RTC.datetime((year, month, day, weekday (Monday 0), hours, minutes, seconds, subseconds))
    return "import machine\nmachine.RTC().datetime((%d, %d, %d, %d, %d, %d, %d, 0))\n" % (
        t.year, t.month, t.day, t.weekday(), t.hour, t.minute, t.second)


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
    ap.add_argument("--identity", help="identity file from `python -m tools.provision` to put on the board")
    ap.add_argument("--force-identity", action="store_true",
                    help="replace a different identity already on the board")
    ap.add_argument("--files", action="store_true", help="copy the .mpy tree to the filesystem instead of "
                                                         "ROMFS (boards with PSRAM only: the code then takes heap)")
    ap.add_argument("--dry-run", action="store_true", help="print the mpremote command instead of running it")
    args = ap.parse_args(argv)
    if not os.path.isdir(DEVICE) or not (args.files or os.path.exists(ROMFS_IMAGE)):
        raise SystemExit("build/device is missing: run `make build` first")
    if not args.dry_run:
        check_port(args.port)
    copy_identity = None
    if args.identity:
        try:
            with open(args.identity) as f:
                local = identity.parse(f.read())
        except OSError as e:
            raise SystemExit("%s: cannot be read (%s)" % (args.identity, e.strerror))
        except ValueError as e:
            raise SystemExit("%s is not a valid identity file: %s" % (args.identity, e))
        if args.dry_run:
            print("(would first ask the board for its identity, then copy %s if allowed)" % args.identity)
            copy_identity = args.identity
        else:
            action, message = decide(local, board_identity(args.port), args.force_identity)
            print("identity: " + message)
            if action == "refuse":
                return 3
            if action == "copy":
                copy_identity = args.identity
    cmd = plan(args.port, copy_identity, args.files)
    if args.dry_run:
        for c in (cmd, clock_plan(args.port)):
            print(" ".join(repr(x) if "\n" in x else x for x in c))
        return 0
    rc = subprocess.call(cmd)
    return rc or subprocess.call(clock_plan(args.port))


if __name__ == "__main__":
    sys.exit(main())

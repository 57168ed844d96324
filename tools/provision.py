"""Give a device its identity: serial, setup-WiFi password, cloud PIN and upload key.

    python -m tools.provision --out DIR [--serial SERIAL] [--fleet-key FILE]

Writes DIR/identity-SERIAL.json (put it on the board with `make deploy PORT=... IDENTITY=that-file`)
and prints the device's label: the setup WiFi network "Measurement Device_SERIAL", its password and
the cloud pairing PIN. Without --serial a new serial is made up (MD + 8 characters).

Everything is derived from the serial and the fleet key (see firmware/identity.py), so the cloud can
check PINs and uploads with the fleet key alone, and provisioning the same serial again re-creates the
same identity (e.g. for a board whose flash was erased: its label stays valid). The fleet key is read
from --fleet-key (32 bytes, raw or as 64 hex digits); without it DIR/fleet.key is used and created with
a new random key on first use. Keep that file secret and safe: it is what the cloud verifies with.
"""

import argparse
import os
import secrets
import sys

from tools.mp import ROOT

sys.path.insert(0, os.path.join(ROOT, "lib"))  # firmware.identity uses lib/hmacsha256, as on the board

from firmware import identity  # noqa: E402

SERIAL_PREFIX = "MD"
SERIAL_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: installers type it into the cloud


def new_serial():
    return SERIAL_PREFIX + "".join(secrets.choice(SERIAL_ALPHABET) for _ in range(8))


def read_fleet_key(path):
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except ValueError:
            pass
    if len(raw) == 32:
        return raw
    raise SystemExit("%s: a fleet key must be 32 bytes, raw or as 64 hex digits" % path)


def fleet_key_for(out_dir, path):
    if path:
        return read_fleet_key(path), None
    path = os.path.join(out_dir, "fleet.key")
    if os.path.exists(path):
        return read_fleet_key(path), None
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key, path


def label(ident):
    return "\n".join([
        "Label for device %s" % ident.serial,
        "  Setup WiFi network:  %s" % ident.ap_ssid(),
        "  Setup WiFi password: %s" % ident.ap_password,
        "  Cloud pairing PIN:   %s" % ident.pin,
    ])


def provision(out_dir, serial=None, fleet_key_path=None, log=print):
    """Write the identity file; returns (Identity, path). SystemExit with a message on a conflict."""
    os.makedirs(out_dir, exist_ok=True)
    key, created = fleet_key_for(out_dir, fleet_key_path)
    if created:
        log("New fleet key written to %s: keep it secret, the cloud verifies uploads with it." % created)
    if serial is None:
        serial = new_serial()
        while os.path.exists(os.path.join(out_dir, "identity-%s.json" % serial)):
            serial = new_serial()
    try:
        ident = identity.derive(key, serial)
    except ValueError as e:
        raise SystemExit(str(e))
    path = os.path.join(out_dir, "identity-%s.json" % serial)
    text = ident.to_json() + "\n"
    if os.path.exists(path):
        with open(path) as f:
            if f.read() != text:
                raise SystemExit("%s exists and holds a different identity (another fleet key?): not "
                                 "overwritten. Its device's label would no longer match." % path)
        log("%s already holds this identity: unchanged." % path)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return ident, path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.provision", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the identity file (and fleet.key by default)")
    ap.add_argument("--serial", help="the device's serial number (default: a new one)")
    ap.add_argument("--fleet-key", help="file holding the 32-byte fleet key (default: OUT/fleet.key)")
    args = ap.parse_args(argv)
    ident, path = provision(args.out, args.serial, args.fleet_key)
    print(label(ident))
    print("Identity file: %s" % path)
    print("Put it on the board: make deploy PORT=/dev/ttyUSB0 IDENTITY=%s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Give a device its identity: serial, setup-WiFi password, cloud PIN and upload key.

    python -m tools.provision --out DIR [--serial SERIAL] [--fleet-key FILE [--new-fleet-key]]

Writes DIR/identity-SERIAL.json (put it on the board with `make deploy PORT=... IDENTITY=that-file`) and
prints the device's label: the setup WiFi network "Measurement Device_SERIAL", its password and the cloud
pairing PIN. Without --serial a new serial is made up (MD + 8 characters). The identity file holds the
device's secrets: keep DIR out of version control (the repository's .gitignore covers `provisioned/`, the
README's example).

Everything is derived from the serial and the fleet key (see firmware/identity.py), so the cloud can check
PINs and uploads with the fleet key alone, and provisioning the same serial again re-creates the same identity
(e.g. for a board whose flash was erased: its label stays valid). The fleet key is read from --fleet-key FILE
(32 bytes, raw or as 64 hex digits), which must exist (a mistyped path is not taken for a new key) unless
--new-fleet-key asks for one to be made there. Without --fleet-key it is $XDG_CONFIG_HOME/meter/fleet.key (by
default ~/.config/meter/fleet.key): outside the repository, so that no `git add .` can commit it. It is
created on first use (mode 0600, and the message says where); a default that would land inside the repository
(HOME or XDG_CONFIG_HOME pointing into it) is refused. Keep that file secret and safe, and back it up: it is
what the cloud verifies with, and without it no identity can be made again.
"""

import argparse
import os
import secrets
import subprocess
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


def default_fleet_key_path():
    """Where the fleet key lives unless --fleet-key says otherwise: the user's configuration folder
    (XDG), outside any repository."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "meter", "fleet.key")


def inside_repository(path):
    """True if path is in this repository's tree (where a `git add .` would pick it up)."""
    root = os.path.realpath(ROOT)
    return os.path.realpath(path).startswith(root + os.sep)


def _committable(path):
    """True if path is inside the repository and git would not ignore it (unknown without git: False)."""
    if not inside_repository(path):
        return False
    try:
        r = subprocess.run(["git", "check-ignore", "-q", os.path.realpath(path)], cwd=ROOT, capture_output=True)
    except OSError:
        return False
    return r.returncode == 1  # 0: ignored; 128: not a git checkout


def create_fleet_key(path):
    """A new random fleet key in path (hex, mode 0600; its folder made 0700); never overwrites one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def fleet_key_for(out_dir, path=None, log=print):
    """(fleet key, its file): the one in path (--fleet-key), created there if missing; without path
    the default outside the repository, created on first use. SystemExit with a message when the
    default would be created inside the repository, or when out_dir still holds a fleet key from
    before the default moved (provisioning with another key would change every identity)."""
    if path is None:
        path = default_fleet_key_path()
        old = os.path.join(out_dir, "fleet.key")  # the default of earlier versions
        if os.path.exists(old) and not (os.path.exists(path) and read_fleet_key(path) == read_fleet_key(old)):
            raise SystemExit(
                "%s is a fleet key from an earlier version, which kept it beside the identity files; the default "
                "is now %s, outside the repository. Name it with --fleet-key %s, or move it there (mode 0600): "
                "a new key would give every serial a different identity." % (old, path, old))
        if not os.path.exists(path) and inside_repository(path):
            raise SystemExit(
                "the default fleet key %s would be inside the repository (HOME or XDG_CONFIG_HOME points into "
                "it), where a `git add .` could commit it: not created. Give its place with --fleet-key FILE, "
                "preferably outside the repository." % path)
    if os.path.exists(path):
        return read_fleet_key(path), path
    key = create_fleet_key(path)
    log("New fleet key written to %s (mode 0600): keep it secret and back it up; the cloud verifies uploads "
        "with it, and the same serial gives the same identity only with the same key." % path)
    if _committable(path):
        log("Warning: %s is inside the repository and git does not ignore it: a `git add .` would commit "
            "the fleet key. Move it out, or add it to .gitignore." % path)
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
    if serial is not None:
        try:
            identity.check_serial(serial)  # a typo is refused before any file is made
        except ValueError as e:
            raise SystemExit(str(e))
    key, _ = fleet_key_for(out_dir, fleet_key_path, log)  # (first: a refusal leaves nothing behind)
    os.makedirs(out_dir, exist_ok=True)
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
        if _committable(path):
            log("Warning: %s holds the device's secrets and is inside the repository where git does not "
                "ignore it: keep it out of commits (provisioned/ is ignored)." % path)
    return ident, path


def _shown(path):
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.provision", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the identity file, e.g. provisioned (ignored by git)")
    ap.add_argument("--serial", help="the device's serial number (default: a new one)")
    ap.add_argument("--fleet-key", metavar="FILE", help="file holding the 32-byte fleet key (default: %s, created "
                                                        "on first use)" % _shown(default_fleet_key_path()))
    ap.add_argument("--new-fleet-key", action="store_true",
                    help="with --fleet-key: create that file with a new random key if it does not exist")
    args = ap.parse_args(argv)
    if args.fleet_key and not os.path.exists(args.fleet_key) and not args.new_fleet_key:
        # A mistyped path must not quietly become a new key: every identity made with it would then
        # be refused by the cloud.
        raise SystemExit("--fleet-key %s: no such file. To make a new fleet key there, add --new-fleet-key; to "
                         "use the default (%s), leave out --fleet-key." % (args.fleet_key,
                                                                          _shown(default_fleet_key_path())))
    ident, path = provision(args.out, args.serial, args.fleet_key)
    print(label(ident))
    print("Identity file: %s" % path)
    print("Put it on the board: make deploy PORT=/dev/ttyUSB0 IDENTITY=%s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Put the meter onto a board over USB, in one go: code, identity, settings, clock (docs/DEPLOY.md).

    make deploy PORT=/dev/ttyUSB0 IDENTITY=provisioned/identity-MD7K3Q9XPA.json [SETTINGS=fleet.json]
                [UPLOAD_URL=https://... CA_CERT=server-ca.pem]
        = python -m tools.deploy --build --port /dev/ttyUSB0 --identity provisioned/identity-MD7K3Q9XPA.json ...
    python -m tools.deploy --plan --board-info board.json
        the decision alone, for a board described in a file (no board needed); its first line names the
        method: frozen, romfs, files or refuse
    python -m tools.deploy --plan --port /dev/ttyUSB0
        the same for the board on that port: it is asked, nothing is written

First the serial port must exist (else: the ports mpremote sees), and every file given must be right
(the identity; the fleet settings, checked by the device's own rules in firmware/config.py; the CA
certificate). Then the board is asked what it is (one `mpremote exec`: MicroPython and .mpy version,
its image, ROMFS, PSRAM, heap, flash, what the meter keeps on it), and the way onto it is chosen:

  frozen  the meter's own image with this code frozen in: only boot.py, main.py, identity, settings
  romfs   an image with a ROMFS partition: the code is written there (mpremote romfs deploy)
  files   a stock image on a module with PSRAM: the .mpy files go to /firmware and /lib
  refuse  anything else (a stock image without PSRAM, another .mpy version, another build of the
          meter's image), with the reason and the way to an image that works. Nothing is written.

Then, in one mpremote call: the code; any /firmware or /lib copy the method does not use removed;
boot.py and main.py; the identity (copied under a temporary name and renamed, so a cut cable leaves
no half file); the settings (config.json and its copy, the same way). The board is read back and the
installer's label printed (serial, setup WiFi network and password, PIN, setup address); last, the
board's clock is set in UTC and the board reset.

What the board already holds stays: its identity (a different one is refused unless --force-identity),
its settings (--settings, --upload-url and --ca-cert change only the keys they name; --reset-settings
starts from the defaults), its energy counters (unless --clear-energy) and its spooled records (unless
--clear-spool). The output says what was kept.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile

from tools import deploy_method, deploy_probe
from tools.build import BUILD
from tools.mp import ROOT

sys.path.insert(0, os.path.join(ROOT, "lib"))  # firmware.identity uses lib/hmacsha256, as on the board

from firmware import config, identity  # noqa: E402

BOARD_IDENTITY = "identity.json"  # relative: the board's working directory is /
BOARD_CONFIG = config.PATH
SETUP_ADDRESS = "192.168.251.1"  # firmware/links.py AP_ADDR: where the setup page is, on the meter's own WiFi
REFUSED = 3
mpremote = deploy_probe.mpremote


class Inputs:
    """What this computer gives the board, each file read and checked before the board is asked."""

    def __init__(self, identity=None, identity_path=None, settings=None, settings_path=None, upload_url=None,
                 ca_cert=None):
        self.identity = identity
        self.identity_path = identity_path
        self.settings = settings  # {section: {key: value}} from the fleet settings file
        self.settings_path = settings_path
        self.upload_url = upload_url
        self.ca_cert = ca_cert  # base64 DER or PEM text


def serial_ports():
    """The serial ports `mpremote devs` lists."""
    try:
        r = subprocess.run([mpremote(), "devs"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def check_port(port):
    """SystemExit naming the problem when port is a device path that is not there (no board plugged
    in, or another name), with the ports mpremote sees: mpremote itself would only say it "may be in
    use by another program". Other forms mpremote understands (a0, u0, id:SERIAL...) are left to it."""
    if not port.startswith("/dev/") or os.path.exists(port):
        return
    found = serial_ports()
    raise SystemExit("--port %s: there is no such serial port: is the board plugged in (a USB cable that carries "
                     "data) and is this its name? %s" % (
                         port, "The serial ports mpremote sees: %s." % ", ".join(found) if found
                         else "mpremote sees no serial port here."))


def read_identity(path):
    try:
        with open(path) as f:
            return identity.parse(f.read())
    except OSError as e:
        raise SystemExit("%s: cannot be read (%s)" % (path, e.strerror))
    except ValueError as e:
        raise SystemExit("%s is not a valid identity file: %s" % (path, e))


def read_settings(path):
    """The fleet settings file: {section: {key: value}}, checked by the device's own rules against the
    defaults (a setting that needs the board's own, e.g. its profile's pins, is checked again with them)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise SystemExit("%s: cannot be read (%s)" % (path, e.strerror))
    except ValueError as e:
        raise SystemExit("%s is not valid JSON: %s" % (path, e))
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for k, v in doc.items() if k != "version"):
        raise SystemExit("%s: fleet settings are a JSON object of sections, e.g. {\"upload\": {\"record_interval_s\": "
                         "120}} (docs/CONFIG.md lists them)" % path)
    try:
        config.merge(config.defaults(), doc)
    except config.ConfigError as e:
        raise SystemExit("%s: %s (the rule the meter itself applies: docs/CONFIG.md). Nothing was written to the "
                         "board." % (path, e))
    return {k: v for k, v in doc.items() if k != "version"}


def read_ca_cert(path):
    """The CA certificate as the settings hold it: PEM text as it is, a DER file as base64."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SystemExit("%s: cannot be read (%s)" % (path, e.strerror))
    if data.lstrip().startswith(b"-----BEGIN"):
        text = data.decode("ascii", "replace")
        if text.count("-----BEGIN CERTIFICATE-----") > 1:
            raise SystemExit("%s holds several certificates: give the one CA certificate that signed the upload "
                             "server's (the meter trusts exactly one)" % path)
    else:
        text = base64.b64encode(data).decode()
    try:
        config.validate({"upload": {"ca_cert": text}})
    except config.ConfigError as e:
        raise SystemExit("%s: %s" % (path, e))
    return text


def read_inputs(args):
    ins = Inputs()
    if args.identity:
        ins.identity, ins.identity_path = read_identity(args.identity), args.identity
    if args.settings:
        ins.settings, ins.settings_path = read_settings(args.settings), args.settings
    if args.upload_url is not None:
        try:
            config.validate({"upload": {"url": args.upload_url}})
        except config.ConfigError as e:
            raise SystemExit("--upload-url %s: %s" % (args.upload_url, e))
        ins.upload_url = args.upload_url
    if args.ca_cert:
        ins.ca_cert = read_ca_cert(args.ca_cert)
    return ins


# --- identity ------------------------------------------------------------------------------------------

def identity_action(local, on_board, force=False):
    """("copy" | "skip" | "refuse", message) for identity `local` and the board's: None (none),
    "damaged", or [serial, check] as the probe found it."""
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
        "really is to become %s, deploy again with FORCE_IDENTITY=1 (--force-identity). Nothing was written."
        % (serial, "this file", local.serial, local.serial))


decide = identity_action  # (the name earlier versions had)


# --- settings ------------------------------------------------------------------------------------------

def board_settings(port, names, folder):
    """The board's config.json and config.json.bak (those it has) copied into folder; the settings the
    firmware would load from them (the same ConfigStore, the same fallbacks), and what it said."""
    for name in names:
        r = subprocess.run([mpremote(), "connect", port, "fs", "cp", ":" + name, os.path.join(folder, name)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise SystemExit("could not read %s from the board (mpremote said: %s). Nothing was written."
                             % (name, (r.stderr or r.stdout).strip()))
    said = []
    store = config.ConfigStore(os.path.join(folder, BOARD_CONFIG), log=said.append)
    return store.load().document(), said


def new_settings(base, ins, reset):
    """(settings document to write, what changed) from the board's document `base` (None: the board
    has none), the fleet settings and upload settings given; ConfigError when the result breaks a rule."""
    if reset or base is None:
        doc = config.defaults()
        if base is not None:  # as the firmware's factory reset: the board profile says which hardware this is
            doc["board"] = {"profile": base["board"]["profile"]}
            doc = config.validate(doc)
    else:
        doc = base
    changes = {}
    for section, keys in (ins.settings or {}).items():
        changes.setdefault(section, {}).update(keys)
    if ins.upload_url is not None:
        changes.setdefault("upload", {})["url"] = ins.upload_url
    if ins.ca_cert is not None:
        changes.setdefault("upload", {})["ca_cert"] = ins.ca_cert
    out = config.merge(doc, changes)
    changed = ["%s.%s" % (s, k) for s in config.SECTIONS for k in out[s] if out[s][k] != doc[s][k]]
    return out, changed


# --- the board's files ---------------------------------------------------------------------------------

def _rmtree_snippet(*paths):
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
        + "".join("rm(%r)\n" % p for p in paths)
    )


def _rename_snippet(*pairs):
    return "import os\n" + "".join("os.rename(%r, %r)\n" % pair for pair in pairs)


def plan(port, method, device, romfs_image, identity_file=None, settings_file=None, clear=()):
    """The mpremote command line that writes everything: one connection, several chained actions.
    clear: board paths to remove (energy counters, the spool)."""
    cmd = [mpremote(), "connect", port]
    if method == "romfs":
        # First: if the partition cannot take the image mpremote stops here, and the code already on the
        # board stays as it was (removing it first would leave a board that cannot start).
        cmd += ["romfs", "deploy", romfs_image, "+"]
    # /firmware would shadow /rom and .frozen on sys.path; /lib is the old tree's other half.
    cmd += ["exec", _rmtree_snippet("/firmware", "/lib"), "+"]
    if method == "files":
        cmd += ["fs", "cp", "-r", os.path.join(device, "firmware"), os.path.join(device, "lib"), ":", "+"]
    cmd += ["fs", "cp", os.path.join(device, "boot.py"), os.path.join(device, "main.py"), ":", "+"]
    if identity_file is not None:
        cmd += ["fs", "cp", identity_file, ":" + BOARD_IDENTITY + ".tmp", "+"]
        cmd += ["exec", _rename_snippet((BOARD_IDENTITY + ".tmp", BOARD_IDENTITY)), "+"]
    if settings_file is not None:
        # as ConfigStore.save(): config.json, then the same bytes as config.json.bak, each replaced whole
        cmd += ["fs", "cp", settings_file, ":" + BOARD_CONFIG + ".tmp", "+"]
        cmd += ["exec", _rename_snippet((BOARD_CONFIG + ".tmp", BOARD_CONFIG)), "+"]
        cmd += ["fs", "cp", settings_file, ":" + BOARD_CONFIG + ".bak.tmp", "+"]
        cmd += ["exec", _rename_snippet((BOARD_CONFIG + ".bak.tmp", BOARD_CONFIG + ".bak")), "+"]
    if clear:
        cmd += ["exec", _rmtree_snippet(*clear), "+"]
    return cmd[:-1]  # (no "+" after the last step)


def clock_plan(port, now=None):
    """A last mpremote call, made right before it runs: the board's RTC set to UTC, then a reset.

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


# --- what is here --------------------------------------------------------------------------------------

def build_here(build_dir):
    """deploy_method.Build of the build in build_dir (device/ and device.romfs). SystemExit if missing."""
    from tools import bench_codecost, image

    device, romfs_image = os.path.join(build_dir, "device"), os.path.join(build_dir, "device.romfs")
    if not os.path.isdir(device) or not os.path.exists(romfs_image):
        raise SystemExit("%s is missing: run `make build` first (`make deploy` does)" % device)
    measured = {4: bench_codecost.MEASURED_BYTES["i686"]["lib"], 8: bench_codecost.MEASURED_BYTES["x64"]["lib"]}
    try:
        return deploy_method.build_facts(device, romfs_image, image.source_digest(), measured,
                                         image.MICROPYTHON_TAG[1:])
    except ValueError as e:
        raise SystemExit(str(e))


def expected_build():
    """The Build `make build` makes, for --plan without one: the .mpy format of the release the meter's
    image targets, native code for the ESP32."""
    from tools import bench_codecost, build, image

    measured = {4: bench_codecost.MEASURED_BYTES["i686"]["lib"], 8: bench_codecost.MEASURED_BYTES["x64"]["lib"]}
    romfs_bytes = os.path.getsize(build.ROMFS_IMAGE) if os.path.exists(build.ROMFS_IMAGE) else None
    return deploy_method.Build(image.MPY_VERSIONS[image.MICROPYTHON_TAG], build.MARCH, image.source_digest(),
                               romfs_bytes, None, measured, image.MICROPYTHON_TAG[1:])


def kept_and_cleared(on_board, ins, args, settings_changed):
    """Sentences saying what stays on the board and what goes."""
    kept, gone = [], []
    ident = on_board.get("identity")
    if ident and ident != "damaged" and not (ins.identity and args.force_identity and ident[0] != ins.identity.serial):
        kept.append("identity %s" % ident[0])
    if on_board.get("settings"):
        if args.reset_settings:
            gone.append("settings (back to the defaults%s)" % (", then the ones given" if settings_changed else ""))
        elif settings_changed:
            kept.append("settings, with %s changed" % ", ".join(settings_changed))
        else:
            kept.append("settings (%s)" % " and ".join(on_board["settings"]))
    if on_board.get("energy"):
        (gone if args.clear_energy else kept).append("energy counters (%s)" % " and ".join(on_board["energy"]))
    if on_board.get("spool"):
        (gone if args.clear_spool else kept).append("%d spooled file(s) of records not yet uploaded"
                                                    % on_board["spool"])
    return kept, gone


def print_label(back, method):
    ident = back.get("identity")
    code = back.get("code") or ["?", None]
    print("read back from the board: the firmware %s is imported from %s" % (code[1] or "", code[0]))
    # (the files method's /firmware is found through sys.path's '': the board's working directory, /)
    expected = {"frozen": (".frozen/",), "romfs": ("/rom/",), "files": ("firmware/", "/firmware/")}[method]
    if not str(code[0]).startswith(expected):
        print("warning: the firmware should come from %s, where the %s method puts it: see docs/DEPLOY.md"
              % (expected[-1], method))
    s = back.get("settings")
    if s:
        print("settings: upload to %s, CA certificate %s; WiFi %s; setup WiFi %s; board %s" % (
            s["upload_url"] or "(none: uploads off)", "set" if s["ca_cert"] else "not set",
            repr(s["wifi_ssid"]) if s["wifi_ssid"] else "not set up yet", s["ap_mode"], s["profile"]))
    if ident is None:
        print("The board has no identity: it measures, but opens no setup WiFi and does not upload. Provision it "
              "(python -m tools.provision) and deploy again with IDENTITY=.")
        return
    serial, password, pin = ident
    print("\n".join([
        "",
        "Label for device %s" % serial,
        "  Setup WiFi network:  %s%s" % (identity.SSID_PREFIX, serial),
        "  Setup WiFi password: %s" % password,
        "  Cloud pairing PIN:   %s" % pin,
        "  Setup page:          http://%s (on the setup WiFi network)" % SETUP_ADDRESS,
        "",
    ]))


def plan_only(args):
    if args.board_info:
        try:
            with open(args.board_info) as f:
                info = json.load(f)
        except OSError as e:
            raise SystemExit("%s: cannot be read (%s)" % (args.board_info, e.strerror))
        except ValueError as e:
            raise SystemExit("%s is not valid JSON: %s" % (args.board_info, e))
    else:
        check_port(args.port)
        info = deploy_probe.probe(args.port)
    try:
        board = deploy_method.board_from_info(info)
    except deploy_method.BoardInfoError as e:
        raise SystemExit("%s: %s" % (args.board_info or "the board's answer", e))
    build_dir = args.build_dir or BUILD
    # A whole build (`make build`: device/ and device.romfs) if there is one; else what it would be.
    # (`tools.build --check`, the test command's compile step, leaves device/ alone, without the image.)
    whole = os.path.isdir(os.path.join(build_dir, "device")) and os.path.exists(os.path.join(build_dir, "device.romfs"))
    here = build_here(build_dir) if whole else expected_build()
    decision = deploy_method.decide(board, here)
    print(decision.text())
    print("the board: " + "\n           ".join(board.lines()))
    return REFUSED if decision.method == "refuse" else 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.deploy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB0")
    ap.add_argument("--plan", action="store_true", help="only print the decision (from --board-info, or the "
                                                        "board on --port); write nothing")
    ap.add_argument("--board-info", metavar="FILE", help="with --plan: what the board is, as JSON (keys: %s; "
                    "optional: build, image_digest, mpy_arch, romfs_bytes, fs_free_bytes)"
                    % ", ".join(deploy_method.KEYS))
    ap.add_argument("--identity", metavar="FILE", help="identity file from `python -m tools.provision`")
    ap.add_argument("--force-identity", action="store_true", help="replace a different identity on the board")
    ap.add_argument("--settings", metavar="FILE", help="fleet settings, JSON {section: {key: value}} "
                                                       "(docs/CONFIG.md), applied over the board's")
    ap.add_argument("--upload-url", metavar="URL", help="the upload server's URL (upload.url)")
    ap.add_argument("--ca-cert", metavar="FILE", help="the CA certificate (PEM or DER) the upload server's "
                                                      "certificate is checked against (upload.ca_cert)")
    ap.add_argument("--reset-settings", action="store_true",
                    help="start from the default settings instead of the board's (its board profile stays)")
    ap.add_argument("--clear-energy", action="store_true", help="remove the board's energy counters")
    ap.add_argument("--clear-spool", action="store_true", help="remove the records not yet uploaded")
    ap.add_argument("--build", action="store_true", help="run `make build`'s compile step once the board "
                                                         "has been asked (what `make deploy` does)")
    ap.add_argument("--build-dir", metavar="DIR", help="the build to deploy: DIR/device and DIR/device.romfs "
                                                       "(default: build)")
    ap.add_argument("--dry-run", action="store_true", help="ask the board and decide, then print the mpremote "
                                                           "commands instead of running them")
    args = ap.parse_args(argv)
    if args.plan:
        if not (args.board_info or args.port):
            ap.error("--plan needs --board-info FILE or --port PORT")
        return plan_only(args)
    if not args.port:
        ap.error("--port is needed (the board's serial port, e.g. /dev/ttyUSB0)")
    if args.board_info:
        ap.error("--board-info goes with --plan")
    check_port(args.port)  # (before anything is built or read)
    ins = read_inputs(args)
    info = deploy_probe.probe(args.port)
    try:
        board = deploy_method.board_from_info(info)
    except deploy_method.BoardInfoError as e:
        raise SystemExit("the board at %s answered what is not understood here: %s" % (args.port, e))
    on_board = info.get("on_board") or {}
    print("the board at %s: %s" % (args.port, "\n    ".join(board.lines())))
    if args.build:
        r = subprocess.run([sys.executable, "-m", "tools.build", "--no-heap"], cwd=ROOT)
        if r.returncode != 0:
            raise SystemExit("deploy: the build failed (messages above). Nothing was written to the board.")
    build_dir = args.build_dir or BUILD
    here = build_here(build_dir)
    decision = deploy_method.decide(board, here)
    print(decision.text())
    if decision.method == "refuse":
        print("Nothing was written to the board.")
        return REFUSED
    copy_identity = None
    if ins.identity:
        action, message = identity_action(ins.identity, on_board.get("identity"), args.force_identity)
        print("identity: " + message)
        if action == "refuse":
            return REFUSED
        if action == "copy":
            copy_identity = ins.identity_path
    with tempfile.TemporaryDirectory(prefix="deploy-") as tmp:
        settings_file, changed = None, []
        if ins.settings is not None or ins.upload_url is not None or ins.ca_cert is not None or args.reset_settings:
            names = on_board.get("settings") or []
            base, said = board_settings(args.port, names, tmp) if names else (None, [])
            for line in said:
                if not line.startswith("config: loaded"):
                    print("the board's settings: " + line)
            try:
                doc, changed = new_settings(base, ins, args.reset_settings)
            except config.ConfigError as e:
                print("refuse: the settings would break a rule the meter applies: %s (docs/CONFIG.md). Nothing was "
                      "written to the board." % e)
                return REFUSED
            settings_file = os.path.join(tmp, "settings.json")
            with open(settings_file, "w") as f:
                f.write(json.dumps(doc))
        clear = (["/energy.a", "/energy.b"] if args.clear_energy else []) + (["/spool"] if args.clear_spool else [])
        kept, gone = kept_and_cleared(on_board, ins, args, changed)
        device = os.path.join(build_dir, "device")
        cmd = plan(args.port, decision.method, device, os.path.join(build_dir, "device.romfs"), copy_identity,
                   settings_file, clear)
        if args.dry_run:
            for c in (cmd, clock_plan(args.port)):
                print(" ".join(repr(x) if "\n" in x else x for x in c))
            return 0
        if kept:
            print("kept on the board: " + "; ".join(kept))
        if gone:
            print("removed from the board: " + "; ".join(gone))
        if settings_file:
            print("settings: %s" % ("%s set" % ", ".join(changed) if changed else "unchanged"))
        rc = subprocess.call(cmd)
        if rc:
            print("deploy: mpremote stopped (status %d, messages above): the board may be half-written. Deploy "
                  "again; docs/DEPLOY.md, \"Back to a working board\", says what to do if it does not start." % rc)
            return rc
    try:
        back = deploy_probe.readback(args.port)
    except SystemExit as e:  # (everything is written: the clock and the reset still follow)
        print("warning: the board was not read back: %s" % e)
    else:
        print_label(back, decision.method)
    return subprocess.call(clock_plan(args.port))


if __name__ == "__main__":
    sys.exit(main())

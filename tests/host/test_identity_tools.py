# Provisioning, the board's clock as a deploy sets it, and the simulator's flash folder, as the people using them
# see it. (Deploying an identity: tests/host/test_deploy.py and test_deploy_rehearsal.py.)
import hashlib
import hmac
import json
import os
import re
import stat
import subprocess
import sys

from firmware import config, identity
from tools import deploy, mp, provision

ROOT = mp.ROOT


def run_provision(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tools.provision", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env)


def home_env(home, xdg=None):
    """A user's environment with HOME (and XDG_CONFIG_HOME, if given) of the test's own."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    if xdg is not None:
        env["XDG_CONFIG_HOME"] = str(xdg)
    return env


def test_provision_prints_the_label_and_writes_a_valid_identity(tmp_path):
    out, home = tmp_path / "out", tmp_path / "home"
    r = run_provision("--out", str(out), "--serial", "MD7K3Q9XPA", env=home_env(home))
    assert r.returncode == 0, r.stderr
    path = out / "identity-MD7K3Q9XPA.json"
    ident = identity.parse(path.read_text())
    assert "Setup WiFi network:  Measurement Device_MD7K3Q9XPA" in r.stdout
    assert "Setup WiFi password: %s" % ident.ap_password in r.stdout
    assert "Cloud pairing PIN:   %s" % ident.pin in r.stdout
    assert "IDENTITY=%s" % path in r.stdout
    assert ident.upload_key.hex() not in r.stdout  # the upload key is not on the label
    # A new fleet key, in the user's configuration folder (not beside the identity), and the user
    # is told where it is and to keep it secret.
    key_path = home / ".config" / "meter" / "fleet.key"
    assert "New fleet key written to %s" % key_path in r.stdout and "secret" in r.stdout
    assert not (out / "fleet.key").exists()
    fleet = bytes.fromhex(key_path.read_text().strip())
    assert fleet.hex() not in r.stdout + r.stderr
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key_path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # The documented derivation, recomputed with CPython's own hmac: what the cloud will do.
    mac = lambda ctx: hmac.new(fleet, ctx, hashlib.sha256).digest()  # noqa: E731
    assert ident.pin == "%08d" % (int.from_bytes(mac(b"open-meter/pin/v1\x00MD7K3Q9XPA")[:8], "big") % 10**8)
    assert ident.upload_key == mac(b"open-meter/upload/v1\x00MD7K3Q9XPA\x00" + ident.pin.encode())
    bits = int.from_bytes(mac(b"open-meter/ap/v1\x00MD7K3Q9XPA")[:10], "big")
    assert ident.ap_password == "".join(identity.AP_ALPHABET[(bits >> (5 * (15 - i))) & 31] for i in range(16))


def test_provision_makes_up_serials_and_is_repeatable(tmp_path):
    serials = set()
    for _ in range(3):
        ident, path = provision.provision(str(tmp_path), log=lambda line: None)
        assert re.fullmatch("MD[2-9A-HJKMNP-Z]{8}", ident.serial), ident.serial
        serials.add(ident.serial)
    assert len(serials) == 3
    # Same serial, same fleet key: the very same identity (a wiped board's label stays valid).
    again, path2 = provision.provision(str(tmp_path), ident.serial, log=lambda line: None)
    assert path2 == path and again.ap_password == ident.ap_password and again.upload_key == ident.upload_key


def test_the_default_fleet_key_follows_xdg_config_home_and_is_made_once(tmp_path):
    xdg = tmp_path / "xdg"
    env = home_env(tmp_path / "home", xdg)
    for serial in ("MDAAAA1", "MDBBBB2"):
        r = run_provision("--out", str(tmp_path / "out"), "--serial", serial, env=env)
        assert r.returncode == 0, r.stderr
        assert ("New fleet key" in r.stdout) == (serial == "MDAAAA1")  # the second run uses it
    assert (xdg / "meter" / "fleet.key").is_file() and not (tmp_path / "home").exists()
    assert "default: " in run_provision("--help", env=env).stdout  # (--help names the default place)


def test_provision_never_creates_a_default_fleet_key_inside_the_repository(tmp_path):
    # HOME or XDG_CONFIG_HOME pointing into the checkout: refused, and nothing is made anywhere.
    inside = os.path.join(ROOT, "build", "test-config-%d" % os.getpid())
    try:
        r = run_provision("--out", str(tmp_path / "out"), "--serial", "MDAAAA1", env=home_env(tmp_path, inside))
        assert r.returncode != 0
        assert "inside the repository" in r.stderr and "--fleet-key" in r.stderr and "Traceback" not in r.stderr
        assert not os.path.exists(inside) and not (tmp_path / "out").exists()
    finally:
        import shutil

        shutil.rmtree(inside, ignore_errors=True)


def test_a_fleet_key_from_an_earlier_version_beside_the_identities_is_not_silently_replaced(tmp_path):
    # Earlier versions kept OUT/fleet.key; a new default key would give every serial another identity.
    out = tmp_path / "out"
    out.mkdir()
    (out / "fleet.key").write_text(os.urandom(32).hex() + "\n")
    env = home_env(tmp_path / "home")
    r = run_provision("--out", str(out), "--serial", "MDAAAA1", env=env)
    assert r.returncode != 0 and "earlier version" in r.stderr and "--fleet-key %s" % (out / "fleet.key") in r.stderr
    assert os.listdir(out) == ["fleet.key"] and not (tmp_path / "home").exists()
    r = run_provision("--out", str(out), "--serial", "MDAAAA1", "--fleet-key", str(out / "fleet.key"), env=env)
    assert r.returncode == 0, r.stderr


def test_provision_refuses_to_overwrite_a_different_identity(tmp_path):
    assert run_provision("--out", str(tmp_path), "--serial", "ABC-1").returncode == 0
    before = (tmp_path / "identity-ABC-1.json").read_text()
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    r = run_provision("--out", str(tmp_path), "--serial", "ABC-1", "--fleet-key", str(other))
    assert r.returncode != 0 and "different identity" in r.stderr and "not overwritten" in r.stderr
    assert (tmp_path / "identity-ABC-1.json").read_text() == before
    r = run_provision("--out", str(tmp_path), "--serial", "way-too-long-serial")
    assert r.returncode != 0 and "serial: must be 1-13 characters" in r.stderr


def test_sim_runs_the_firmware_inside_the_state_dir(tmp_path):
    state = tmp_path / "flash"
    r = subprocess.run([sys.executable, "-m", "tools.sim", "device", "--duration", "0.2", "--state-dir", str(state)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "sim: device filesystem in %s\n" % state in r.stdout
    r = subprocess.run([sys.executable, "-m", "tools.sim", "device", "--duration", "0.2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    temp = re.search(r"sim: device filesystem in (\S+)", r.stdout).group(1)
    assert temp != str(state) and not os.path.exists(temp)  # a fresh temporary folder, cleaned up


def test_stores_persist_in_a_folder_between_micropython_runs(tmp_path):
    # Two separate MicroPython processes working in the same folder, as two runs of the simulator:
    # relative file names, as the firmware uses them on the board.
    first = ("from firmware.config import ConfigStore\nfrom firmware.energy_store import EnergyStore\n"
             "s = ConfigStore(); s.load(); s.update({'wifi': {'ssid': 'Shed'}})\n"
             "EnergyStore().save({'import_mwh': [5, 6, 7], 'export_mwh': [0, 0, 1], 'net_import_mwh': 18,"
             " 'net_export_mwh': 0})\n")
    second = ("from firmware.config import ConfigStore\nfrom firmware.energy_store import EnergyStore\n"
              "print(ConfigStore(log=lambda l: None).load()['wifi']['ssid'], EnergyStore().load()['import_mwh'])\n")
    for code in (first, second):
        r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "micropython"), "-c", code],
                           cwd=tmp_path, env=mp.env(), capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "Shed [5, 6, 7]"
    assert sorted(os.listdir(tmp_path)) == ["config.json", "config.json.bak", "energy.a"]


def test_config_doc_documents_every_config_key_with_its_default():
    with open(os.path.join(ROOT, "docs", "CONFIG.md")) as f:
        doc = f.read()
    section = doc.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and "." in cells[0]:
            rows[cells[0].strip("`")] = cells[1]
    defaults = config.defaults()
    for name in config.SECTIONS:
        for key in config.SCHEMA[name]:
            field = "%s.%s" % (name, key)
            assert field in rows, "docs/CONFIG.md lacks " + field
            assert json.dumps(defaults[name][key]) in rows[field].replace("`", ""), (field, rows[field])
    assert len(rows) == sum(len(config.SCHEMA[n]) for n in config.SECTIONS)


def test_deploy_sets_the_boards_clock_in_utc_whatever_the_computers_time_zone():
    import datetime

    berlin = datetime.timezone(datetime.timedelta(hours=1))
    snippet = deploy.utc_clock_snippet(datetime.datetime(2026, 12, 7, 2, 30, 5, tzinfo=berlin))
    # Run it as the board would, on the simulated board's RTC, and read the clock back.
    r = subprocess.run([mp.micropython_exe(), "-c", snippet + "import time\nprint(time.gmtime()[:6])\n"],
                       env=mp.env(), cwd=mp.ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2026, 12, 7, 1, 30, 5)"  # 02:30 in UTC+1 is 01:30 UTC

# `make deploy` rehearsed against the board stand-in (tools/standin): the real `python -m tools.deploy`, the
# command `make deploy` runs, with mpremote from the venv, on the boards people have: a stock image with PSRAM
# (files), the meter's image with ROMFS (romfs), a stock image without PSRAM (refused, nothing written), a board
# in use deployed again (its identity, settings, energy and spool kept), and fleet settings that break a rule
# (refused, nothing written). What lands on the flash and in which order, and the board it leaves behind (it
# boots, measures the simulated mains, serves its setup page) are checked. The build deployed is the one
# `make build` makes, compiled for this machine (tools.standin.host_build(): the viper kernels are native code).
import json
import os
import re
import shutil

import pytest

from tests.host.standin_kit import changes, deploy, files_under, get, host_build, mpremote
from tools import bench_codecost, image, provision
from tools.standin import Standin

pytestmark = pytest.mark.slow

READING = re.compile(rb"L1 +\d+\.\dV +\d+\.\d\dA .*\| total +\d+W in (\d+\.\d+)kWh")
FROZEN_ENV = "METER_FROZEN_MICROPYTHON"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return host_build(str(tmp_path_factory.mktemp("host-build")))


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """(path, Identity) of a provisioned identity, made from a fleet key of the test's own."""
    out = tmp_path_factory.mktemp("provisioned")
    key = out / "fleet.key"
    key.write_bytes(os.urandom(32))
    ident, path = provision.provision(str(out), "MDREHEARSE", str(key), log=lambda m: None)
    return path, ident


SPOOLED = b'{"seq": 100, "t": 1700000000, "import_wh": [1, 2, 3]}\n'


def seed_data(flash, identity_path=None, settings=None):
    """What a board in use holds: settings saved by the firmware, its energy counters (0.123 kWh), a
    spooled record file, and its identity."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lib"))
    from firmware import config, energy_store

    config.ConfigStore(os.path.join(flash, "config.json"), log=lambda m: None).save(
        dict({"ap": {"channel": 11}, "upload": {"record_interval_s": 120}}, **(settings or {})))
    energy_store.EnergyStore(os.path.join(flash, "energy")).save(
        {"import_mwh": [41000, 41000, 41000], "export_mwh": [0, 0, 0], "net_import_mwh": 123000,
         "net_export_mwh": 0})
    os.makedirs(os.path.join(flash, "spool"))
    with open(os.path.join(flash, "spool", "0000000100_001.rec"), "wb") as f:
        f.write(SPOOLED)
    if identity_path:
        shutil.copyfile(identity_path, os.path.join(flash, "identity.json"))


def written(board):
    """The changes the deploy made: the flash log up to the reset that ends it, without boot markers."""
    log = board.flash_log()
    return [x for x in log[:len(log) - log[::-1].index("-- boot hard")] if not x.startswith("-- ")]


def assert_it_measures_and_serves_its_page(board, since, serial):
    m = board.wait_for(READING, 60, since=since)
    status, page = get(board, "/")
    assert status == 200 and "<html" in page, (status, page[:300])
    status, doc = get(board, "/api/status")
    assert status == 200 and json.loads(doc)["links"]["ap_up"] is True, doc
    text = board.output()[since:]
    assert b"access point: up as Measurement Device_%s" % serial.encode() in text, text
    assert b"Traceback" not in text, text
    return float(m.group(1))


def assert_label(out, ident):
    """The label the deploy printed, read back from the board."""
    assert "Label for device %s\n" % ident.serial in out, out
    assert "  Setup WiFi network:  Measurement Device_%s\n" % ident.serial in out
    assert "  Setup WiFi password: %s\n" % ident.ap_password in out
    assert "  Cloud pairing PIN:   %s\n" % ident.pin in out
    assert "  Setup page:          http://192.168.251.1 " in out
    assert ident.upload_key.hex() not in out  # never printed


def test_a_stock_image_with_psram_gets_the_files_identity_settings_and_upload_server_in_one_go(
        tmp_path, build, provisioned):
    from tools import ingest

    ident_path, ident = provisioned
    ingest.ensure_certs(str(tmp_path / "certs"))
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps({"meter": {"model": "public"}, "upload": {"record_interval_s": 300}}))
    flash = tmp_path / "flash"
    flash.mkdir()
    with Standin(flash, psram_bytes=4 * 1024 * 1024) as board:
        r = deploy(board.port, build, "--identity", ident_path, "--settings", str(fleet), "--upload-url",
                   "https://meters.example/in", "--ca-cert", str(tmp_path / "certs" / "ca.pem"))
        assert r.returncode == 0, r
        out = r.stdout
        assert "image ESP32_GENERIC" in out and "PSRAM: 4096 KiB" in out and "ROMFS: none" in out, out
        assert "\nfiles: the code as .mpy files in /firmware and /lib\n" in out
        assert "identity: the board has no identity yet: installing MDREHEARSE" in out
        assert "settings: meter.model, upload.url, upload.ca_cert, upload.record_interval_s set" in out, out
        assert "the firmware 0.1.0 is imported from firmware/__init__.mpy" in out and "warning" not in out
        assert "settings: upload to https://meters.example/in, CA certificate set" in out
        assert_label(out, ident)
        since = board.wait_for(b"rst:0xc (SW_CPU_RESET)").end()
        assert_it_measures_and_serves_its_page(board, since, ident.serial)
        assert b"config: loaded config.json" in board.output()[since:]
        # every file of the build, byte for byte, and the identity, under its own name
        on_flash = files_under(str(flash))
        for rel, data in files_under(os.path.join(build, "device")).items():
            assert on_flash.get(rel) == data, rel
        with open(ident_path, "rb") as f:
            assert on_flash["identity.json"] == f.read()
        settings = json.loads(on_flash["config.json"])
        assert on_flash["config.json.bak"] == on_flash["config.json"]
        assert settings["meter"]["model"] == "public" and settings["upload"]["url"] == "https://meters.example/in"
        assert settings["upload"]["ca_cert"].startswith("MII") and settings["upload"]["record_interval_s"] == 300
        deployed = written(board)
        # the code first, then boot.py and main.py; the identity and the settings each whole or not at all
        code = [x for x in deployed if x.startswith(("write /firmware/", "write /lib/"))]
        assert len(code) == len([p for p in on_flash if p.startswith(("firmware/", "lib/"))])
        assert max(deployed.index(x) for x in code) < deployed.index("write /boot.py") < deployed.index(
            "write /main.py") < deployed.index("write /identity.json.tmp")
        tail = deployed[deployed.index("write /identity.json.tmp"):]
        assert tail == ["write /identity.json.tmp", "rename /identity.json.tmp /identity.json",
                        "write /config.json.tmp", "rename /config.json.tmp /config.json",
                        "write /config.json.bak.tmp", "rename /config.json.bak.tmp /config.json.bak"], tail
        # the clock, in UTC (a board keeps its RTC across the reset)
        r = mpremote(board.port, "exec", "import time; print(time.gmtime()[0])")
        import datetime

        assert int(r.stdout.strip()) == datetime.datetime.now(datetime.timezone.utc).year


def test_a_board_in_use_with_the_romfs_image_keeps_its_identity_settings_energy_and_spool(tmp_path, build,
                                                                                          provisioned):
    ident_path, ident = provisioned
    flash = tmp_path / "flash"
    flash.mkdir()
    seed_data(str(flash), ident_path)
    # An older deploy's code in /firmware and /lib, which would shadow /rom on sys.path
    for name, text in (("firmware/__init__.py", "VERSION = 'old'\n"),
                       ("firmware/app.py", "def run_on_board():\n    print('old firmware')\n"),
                       ("lib/atomicfile.py", "# old\n")):
        os.makedirs(flash / os.path.dirname(name), exist_ok=True)
        (flash / name).write_text(text)
    with open(os.path.join(build, "device", "main.py"), "rb") as f:
        (flash / "main.py").write_bytes(b"# main.py of an older version\n" + f.read())
    data = ("identity.json", "config.json", "config.json.bak", "energy.a", "spool/0000000100_001.rec")
    before = {n: (flash / n).read_bytes() for n in data}
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps({"upload": {"live_interval_ms": 2000}}))
    with Standin(flash, romfs_bytes=0x20000) as board:
        board.wait_for(b"old firmware")
        r = deploy(board.port, build, "--identity", ident_path, "--settings", str(fleet), "--dry-run")
        assert r.returncode == 0 and "connect %s romfs deploy " % board.port in r.stdout, r  # the commands only
        assert changes(board) == []
        r = deploy(board.port, build, "--identity", ident_path, "--settings", str(fleet))
        assert r.returncode == 0, r
        out = r.stdout
        assert "image METER_ESP32-ROMFS" in out and "ROMFS: a partition of 128 KiB" in out, out
        assert "\nromfs: the code as a ROMFS image, run in place from flash\n" in out
        assert "identity: the board already has identity MDREHEARSE: not copied again" in out
        assert ("kept on the board: identity MDREHEARSE; settings, with upload.live_interval_ms changed; energy "
                "counters (energy.a); 1 spooled file(s) of records not yet uploaded") in out, out
        assert "the firmware 0.1.0 is imported from /rom/firmware/__init__.mpy" in out and "warning" not in out
        assert_label(out, ident)
        since = board.wait_for(b"rst:0xc (SW_CPU_RESET)").end()
        deployed = written(board)
        # the code goes in first, into the ROMFS partition (a board whose partition cannot take it keeps the
        # code it has); the old code that would shadow it goes, boot.py and main.py are written
        romfs = [i for i, x in enumerate(deployed) if x.startswith("romfs ")]
        files = [x for x in deployed if not x.startswith("romfs ")]
        assert romfs == list(range(len(romfs))) and files, deployed
        assert sorted(x for x in files if not x.startswith(("write ", "rename "))) == [
            "remove /firmware/__init__.py", "remove /firmware/app.py", "remove /lib/atomicfile.py", "rmdir /firmware",
            "rmdir /lib"]
        assert [x for x in files if x.startswith(("write ", "rename "))] == [
            "write /boot.py", "write /main.py", "write /config.json.tmp", "rename /config.json.tmp /config.json",
            "write /config.json.bak.tmp", "rename /config.json.bak.tmp /config.json.bak"]
        for name in ("boot.py", "main.py"):
            with open(os.path.join(build, "device", name), "rb") as f:
                assert (flash / name).read_bytes() == f.read()
        with open(os.path.join(build, "device.romfs"), "rb") as f:
            romfs_image = f.read()
        with open(str(flash) + ".standin/romfs.img", "rb") as f:
            assert f.read(len(romfs_image)) == romfs_image
        # the board it left: boots from ROMFS, measures, serves its page, with its settings and counters
        kwh = assert_it_measures_and_serves_its_page(board, since, ident.serial)
        text = board.output()[since:]
        assert b"meter: firmware 0.1.0 starting" in text and b"old firmware" not in text
        assert b"config: loaded config.json" in text
        assert b"energy: restored from energy.a (save 1): net import 0.123 kWh" in text, text
        assert kwh >= 0.123
        r = mpremote(board.port, "exec", "import sys, os; print(sys.path, sorted(os.listdir('/rom')))")
        assert r.stdout.strip() == "['', '.frozen', '/rom', '/rom/lib', '/lib'] ['firmware', 'lib']", r
    settings = json.loads((flash / "config.json").read_text())
    assert settings["ap"]["channel"] == 11 and settings["upload"]["record_interval_s"] == 120  # the board's own
    assert settings["upload"]["live_interval_ms"] == 2000  # the fleet's
    for name in ("identity.json", "spool/0000000100_001.rec"):
        assert (flash / name).read_bytes() == before[name], name


def test_a_stock_image_without_psram_is_refused_and_left_as_it_was(tmp_path, build, provisioned):
    ident_path, _ = provisioned
    flash = tmp_path / "flash"
    flash.mkdir()
    seed_data(str(flash))
    before = files_under(str(flash))
    with Standin(flash) as board:
        board.wait_for(b">>> ")
        r = deploy(board.port, build, "--identity", ident_path)
        assert r.returncode == 3, r
        code = bench_codecost.MEASURED_BYTES["x64"]["lib"]  # (the stand-in is a 64-bit MicroPython)
        assert "image ESP32_GENERIC" in r.stdout and "PSRAM: none" in r.stdout, r.stdout
        assert "\nrefuse: a stock image on a board without PSRAM\n" in r.stdout
        assert "the code alone, loaded from .mpy files, takes %d KiB of heap" % round(code / 1024) in r.stdout
        assert "make image" in r.stdout and "docs/IMAGE.md" in r.stdout
        assert r.stdout.rstrip().endswith("Nothing was written to the board.")
        r = deploy(board.port, build, "--plan")  # the decision alone, for this board
        assert r.returncode == 3 and r.stdout.startswith("refuse: a stock image on a board without PSRAM\n"), r
        assert changes(board) == []
    assert files_under(str(flash)) == before


def test_fleet_settings_that_break_a_rule_are_refused_and_nothing_is_written(tmp_path, build, provisioned):
    ident_path, _ = provisioned
    flash = tmp_path / "flash"
    flash.mkdir()
    seed_data(str(flash), settings={"energy": {"save_min_interval_s": 120}})
    before = files_under(str(flash))
    bad = tmp_path / "fleet-bad.json"
    bad.write_text(json.dumps({"upload": {"live_interval_ms": 50}}))
    # right alone, wrong with the board's own settings: its minimum between saves (120 s) above this maximum
    clash = tmp_path / "fleet-clash.json"
    clash.write_text(json.dumps({"energy": {"save_max_interval_s": 60}}))
    with Standin(flash, psram_bytes=4 * 1024 * 1024) as board:
        board.wait_for(b">>> ")
        r = deploy(board.port, build, "--identity", ident_path, "--settings", str(bad))
        assert r.returncode == 1 and "upload.live_interval_ms: must be" in r.stderr, r
        assert "Nothing was written to the board" in r.stderr
        r = deploy(board.port, build, "--identity", ident_path, "--settings", str(clash))
        assert r.returncode == 3, r
        assert ("refuse: the settings would break a rule the meter applies: energy.save_min_interval_s: must not "
                "exceed energy.save_max_interval_s") in r.stdout, r.stdout
        assert "Nothing was written to the board." in r.stdout
        assert changes(board) == []
    assert files_under(str(flash)) == before


def test_code_from_lib_does_not_fit_the_heap_of_a_board_without_psram(tmp_path, build):
    # Why the refusal above: the tree the files method copies, by hand, onto an ESP32-WROOM-32's heap. The
    # firmware cannot start (code in RAM), where from ROMFS it runs.
    device = os.path.join(build, "device")
    with Standin(tmp_path) as board:
        r = mpremote(board.port, "fs", "cp", "-r", os.path.join(device, "firmware"), os.path.join(device, "lib"),
                     os.path.join(device, "boot.py"), os.path.join(device, "main.py"), ":", "+", "reset")
        assert r.returncode == 0, r
        since = board.wait_for(b"rst:0xc (SW_CPU_RESET)").end()
        board.wait_for(b"MemoryError", 60, since=since)
        board.wait_for(b"meter: stopped unexpectedly: restarting", 30, since=since)


def test_the_meters_own_image_with_the_code_frozen_in(tmp_path, build, provisioned):
    exe = os.environ.get(FROZEN_ENV)
    if not exe:
        pytest.skip("%s is not set: a frozen deploy needs a MicroPython unix port built with the meter's code and "
                    "its stamp frozen in (docs/DEPLOY.md, \"Rehearsing the frozen image\"); `make test` cannot build "
                    "one" % FROZEN_ENV)
    if not bench_codecost.has_frozen_firmware(exe):
        pytest.fail("%s=%s has no meter code frozen in" % (FROZEN_ENV, exe))
    ident_path, ident = provisioned
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "firmware").mkdir()  # a copy an earlier deploy left, which '' on sys.path would import first
    (flash / "firmware" / "__init__.py").write_text("VERSION = 'stale'\n")
    with Standin(flash, image="METER_ESP32", micropython=exe) as board:
        r = mpremote(board.port, "exec", "import meter_image; print(meter_image.SOURCES_SHA256)")
        if r.stdout.strip() != image.source_digest():
            pytest.fail("%s carries stamp %r, not this code's %s: build it again (docs/DEPLOY.md)"
                        % (exe, r.stdout.strip()[:64], image.source_digest()))
        r = deploy(board.port, build, "--identity", ident_path)
        assert r.returncode == 0, r
        assert "\nfrozen: the meter's own image, with this code frozen in\n" in r.stdout, r.stdout
        assert "imported from .frozen/firmware/" in r.stdout and "warning" not in r.stdout, r.stdout
        assert_label(r.stdout, ident)
        since = board.wait_for(b"rst:0xc (SW_CPU_RESET)").end()
        deployed = written(board)
        assert not any(x.startswith(("write /firmware", "write /lib", "romfs ")) for x in deployed), deployed
        assert "rmdir /firmware" in deployed
        assert_it_measures_and_serves_its_page(board, since, ident.serial)

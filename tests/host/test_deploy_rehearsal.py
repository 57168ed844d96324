# `make deploy` rehearsed against the board stand-in (tools/standin), with mpremote from the venv: what
# lands on the flash and in which order, what stays there, and the board it leaves behind (it boots,
# measures the simulated mains, serves its setup page). The build deployed is the one `make build`
# makes, compiled for this machine (tools.standin.host_build(): the viper kernels are native code).
import json
import os
import re

import pytest

from tests.host.standin_kit import changes, deploy, files_under, get, host_build, mpremote
from tools import provision
from tools.standin import Standin

pytestmark = pytest.mark.slow

READING = re.compile(rb"L1 +\d+\.\dV +\d+\.\d\dA .*\| total +\d+W in (\d+\.\d+)kWh")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return host_build(str(tmp_path_factory.mktemp("host-build")))


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    """(path, serial) of a provisioned identity, made from a fleet key of the test's own."""
    out = tmp_path_factory.mktemp("provisioned")
    key = out / "fleet.key"
    key.write_bytes(os.urandom(32))
    _, path = provision.provision(str(out), "MDREHEARSE", str(key), log=lambda m: None)
    return path, "MDREHEARSE"


def seed_data(flash):
    """What a board in use holds: settings saved by the firmware, its energy counters (0.123 kWh)."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lib"))
    from firmware import config, energy_store

    config.ConfigStore(os.path.join(flash, "config.json"), log=lambda m: None).save(
        {"ap": {"channel": 11}, "upload": {"record_interval_s": 120}})
    energy_store.EnergyStore(os.path.join(flash, "energy")).save(
        {"import_mwh": [41000, 41000, 41000], "export_mwh": [0, 0, 0], "net_import_mwh": 123000,
         "net_export_mwh": 0})


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


def test_deploy_onto_an_image_with_romfs_keeps_the_boards_data_and_leaves_a_working_meter(tmp_path, build, identity):
    ident_path, serial = identity
    flash = tmp_path / "flash"
    flash.mkdir()
    seed_data(str(flash))
    with open(ident_path, "rb") as f:
        (flash / "identity.json").write_bytes(f.read())  # provisioned by an earlier deploy
    # An older deploy's code in /firmware and /lib (ROMFS=0), which would shadow /rom on sys.path
    for name, text in (("firmware/__init__.py", "VERSION = 'old'\n"),
                       ("firmware/app.py", "def run_on_board():\n    print('old firmware')\n"),
                       ("lib/atomicfile.py", "# old\n")):
        os.makedirs(flash / os.path.dirname(name), exist_ok=True)
        (flash / name).write_text(text)
    with open(os.path.join(build, "device", "main.py"), "rb") as f:
        (flash / "main.py").write_bytes(b"# main.py of an older version\n" + f.read())
    data_before = {n: (flash / n).read_bytes() for n in ("config.json", "config.json.bak", "identity.json", "energy.a")}
    with Standin(flash, romfs_bytes=0x20000) as board:
        board.wait_for(b"old firmware")
        r = deploy(board.port, build)
        assert r.returncode == 0, r
        since = board.wait_for(b"rst:0xc (SW_CPU_RESET)").end()  # the deploy's last step resets the board
        log = board.flash_log()
        done = len(log) - log[::-1].index("-- boot hard")
        deployed = [x for x in log[:done] if not x.startswith("-- ")]
        # the code goes in first, into the ROMFS partition (a board whose partition cannot take it keeps
        # the code it has); the old code that would shadow it goes, boot.py and main.py are written
        romfs = [i for i, x in enumerate(deployed) if x.startswith("romfs ")]
        files = [x for x in deployed if not x.startswith("romfs ")]
        assert romfs == list(range(len(romfs))) and files, deployed
        assert sorted(x for x in files if not x.startswith("write ")) == [
            "remove /firmware/__init__.py", "remove /firmware/app.py", "remove /lib/atomicfile.py", "rmdir /firmware",
            "rmdir /lib"]
        assert sorted(x for x in files if x.startswith("write ")) == ["write /boot.py", "write /main.py"]
        for name in ("boot.py", "main.py"):
            with open(os.path.join(build, "device", name), "rb") as f:
                assert (flash / name).read_bytes() == f.read()
        with open(os.path.join(build, "device.romfs"), "rb") as f:
            image = f.read()
        with open(str(flash) + ".standin/romfs.img", "rb") as f:
            assert f.read(len(image)) == image
        # the board it left: boots from ROMFS, measures, serves its page, with its settings and counters
        kwh = assert_it_measures_and_serves_its_page(board, since, serial)
        text = board.output()[since:]
        assert b"meter: firmware 0.1.0 starting" in text and b"old firmware" not in text
        assert b"config: loaded config.json" in text
        assert b"energy: restored from energy.a (save 1): net import 0.123 kWh" in text, text
        assert kwh >= 0.123
        r = mpremote(board.port, "exec", "import sys, os; print(sys.path, sorted(os.listdir('/rom')))")
        assert r.stdout.strip() == "['', '.frozen', '/rom', '/rom/lib', '/lib'] ['firmware', 'lib']", r
    for name, data in data_before.items():
        if name != "energy.a":  # (the meter goes on counting: it saves its counters in turn)
            assert (flash / name).read_bytes() == data, name
    assert not any(x.startswith(("write /config", "write /identity", "remove /config", "remove /identity"))
                   for x in changes(board)), changes(board)


def test_deploy_files_onto_a_stock_image_with_psram(tmp_path, build, identity):
    ident_path, serial = identity
    flash = tmp_path / "flash"
    flash.mkdir()
    with Standin(flash, psram_bytes=4 * 1024 * 1024) as board:
        r = deploy(board.port, build, "--files", "--identity", ident_path)
        assert r.returncode == 0, r
        since = board.wait_for(b"rst:0xc (SW_CPU_RESET)").end()
        assert_it_measures_and_serves_its_page(board, since, serial)
        # every file of the build, byte for byte, and the identity, under its own name
        on_flash = files_under(str(flash))
        for rel, data in files_under(os.path.join(build, "device")).items():
            assert on_flash.get(rel) == data, rel
        with open(ident_path, "rb") as f:
            assert on_flash["identity.json"] == f.read()
        log = board.flash_log()
        deployed = [x for x in log[:len(log) - log[::-1].index("-- boot hard")] if not x.startswith("-- ")]
        # the identity arrives whole or not at all: written under another name, then renamed
        assert deployed[-2:] == ["write /identity.json.tmp", "rename /identity.json.tmp /identity.json"]
        assert deployed.index("write /main.py") < deployed.index("write /identity.json.tmp")
        code = [x for x in deployed if x.startswith("write /firmware/") or x.startswith("write /lib/")]
        assert len(code) == len([p for p in on_flash if p.startswith(("firmware/", "lib/"))])
        assert max(deployed.index(x) for x in code) < deployed.index("write /boot.py")  # boot.py and main.py last


def test_deploy_onto_a_stock_image_without_psram_leaves_the_board_as_it_was(tmp_path, build):
    flash = tmp_path / "flash"
    flash.mkdir()
    seed_data(str(flash))
    before = files_under(str(flash))
    with Standin(flash) as board:
        board.wait_for(b">>> ")
        r = deploy(board.port, build)
        assert r.returncode != 0, r  # no ROMFS here, and no PSRAM for the code in RAM
        assert changes(board) == []
    assert files_under(str(flash)) == before


def test_code_from_lib_does_not_fit_the_heap_of_a_board_without_psram(tmp_path, build):
    # The same tree `make deploy ROMFS=0` copies, by hand: on an ESP32-WROOM-32's heap the firmware
    # cannot start (code in RAM), where from ROMFS it runs (the first test).
    device = os.path.join(build, "device")
    with Standin(tmp_path) as board:
        r = mpremote(board.port, "fs", "cp", "-r", os.path.join(device, "firmware"), os.path.join(device, "lib"),
                     os.path.join(device, "boot.py"), os.path.join(device, "main.py"), ":", "+", "reset")
        assert r.returncode == 0, r
        since = board.wait_for(b"rst:0xc (SW_CPU_RESET)").end()
        board.wait_for(b"MemoryError", 60, since=since)
        board.wait_for(b"meter: stopped unexpectedly: restarting", 30, since=since)

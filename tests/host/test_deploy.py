# How `make deploy` decides and what it refuses, without a board: the decision table (tools/deploy_method.py)
# row by row, `python -m tools.deploy --plan --board-info FILE`, a missing serial port, and the files a person
# gives it (identity, fleet settings, CA certificate), each checked before the board is touched. The same
# deploy against a board stand-in is in test_deploy_rehearsal.py.
import json
import os
import subprocess
import sys
import textwrap

import pytest

from firmware import config
from tools import bench_codecost, deploy, deploy_method, image, provision
from tools.mp import ROOT

MIB = 1024 * 1024
DIGEST = "ab" * 32
CODE_HEAP = {4: bench_codecost.MEASURED_BYTES["i686"]["lib"], 8: bench_codecost.MEASURED_BYTES["x64"]["lib"]}


def build(mpy=(6, 3), arch="xtensawin", romfs_image=117_600, tree=133_567):
    return deploy_method.Build(mpy, arch, DIGEST, romfs_image, tree, CODE_HEAP, "1.28.0")


def board(**kw):
    info = {"micropython": "1.28.0", "mpy_version": "6.3", "mpy_arch": "xtensawin", "romfs": False, "psram": False,
            "heap_free_bytes": 113_000, "flash_bytes": 4 * MIB, "build": "ESP32_GENERIC"}
    info.update(kw)
    return deploy_method.board_from_info(info)


def decide(**kw):
    here = kw.pop("here", None) or build()
    return deploy_method.decide(board(**kw), here)


# --- the decision table ------------------------------------------------------------------------------------

def test_the_meters_own_image_with_this_code_frozen_in_gets_only_its_files():
    d = decide(build="METER_ESP32", image_digest=DIGEST, romfs=True, romfs_bytes=0x20000)
    assert d.method == "frozen", d.text()
    assert "/firmware would be imported instead of the frozen code" in d.text()
    # the .mpy format does not matter to it: no .mpy file goes on
    assert decide(build="METER_ESP32", image_digest=DIGEST, mpy_version="6.2", micropython="1.22.0").method == "frozen"


@pytest.mark.parametrize("stamp", [None, "cd" * 32])
def test_the_meters_own_image_of_other_code_is_refused_with_the_way_to_rebuild_it(stamp):
    d = decide(build="METER_ESP32", image_digest=stamp, romfs=True, romfs_bytes=0x20000, psram=True)
    text = d.text()
    assert d.method == "refuse" and text.startswith("refuse: the meter's own image, but of other code"), text
    assert ("stamped " + stamp[:12] if stamp else "not stamped") in text and DIGEST[:12] in text
    assert "make image" in text and "write-flash 0x10000 build/image/METER_ESP32/micropython.bin" in text
    assert "docs/IMAGE.md" in text


def test_an_image_with_a_romfs_partition_gets_the_romfs_image():
    d = decide(build="METER_ESP32-ROMFS", romfs=True, romfs_bytes=0x20000)
    assert d.method == "romfs" and "128 KiB" in d.text() and "115 KiB" in d.text(), d.text()
    # any image with a ROMFS partition, whatever its name, with or without PSRAM
    assert decide(build="ESP32_GENERIC", romfs=True, psram=True).method == "romfs"


def test_a_romfs_partition_too_small_for_the_image_is_not_written():
    d = decide(romfs=True, romfs_bytes=0x10000)
    assert d.method == "refuse" and "ROMFS partition (64 KiB) is too small for the code's image (115 KiB)" in d.text()
    assert d.text().startswith("refuse") and "too big for this board's ROMFS partition, and it has no PSRAM" in d.text()
    d = decide(romfs=True, romfs_bytes=0x10000, psram=8 * MIB)  # with PSRAM: the files instead, saying why
    assert d.method == "files" and "too small" in d.text(), d.text()


def test_a_stock_image_with_psram_gets_the_mpy_files():
    d = decide(psram=True, heap_free_bytes=4_000_000)
    assert d.method == "files" and d.text().startswith("files: the code as .mpy files in /firmware and /lib")
    assert "4096 KiB of PSRAM" in d.text(), d.text()


def test_a_stock_image_with_psram_but_a_full_filesystem_is_refused():
    d = decide(psram=True, fs_free_bytes=100_000)
    assert d.method == "refuse" and "the filesystem has 98 KiB free" in d.text(), d.text()


def test_a_stock_image_without_psram_is_refused_with_the_measured_reason_and_the_way_to_the_image():
    d = decide(heap_free_bytes=110_000)
    text = d.text()
    assert d.method == "refuse" and text.startswith("refuse: a stock image on a board without PSRAM"), text
    # the ESP32's figure: what the 32-bit build measured (BENCHMARKS.md), against the board's own heap
    assert "takes %d KiB of heap" % round(CODE_HEAP[4] / 1024) in text and "this board has 107 KiB" in text
    assert "docs/IMAGE.md" in text and "make image" in text
    assert "esptool --chip esp32 --port PORT --baud 460800 write-flash 0x1000 build/image/METER_ESP32/firmware.bin" \
        in text and "erase-flash" in text


def test_a_psram_too_small_to_be_psram_counts_as_none():
    assert decide(psram=200_000).method == "refuse"


@pytest.mark.parametrize("micropython, mpy, words", [
    ("1.22.2", "6.2", "older"),  # MicroPython 1.22: .mpy 6.2
    ("1.19.1", "6.0", "older"),
    ("2.0.0", "7.0", "newer"),
    ("1.30.0", "6.4", "newer"),
])
def test_a_micropython_with_another_mpy_version_is_refused_naming_both(micropython, mpy, words):
    for romfs, psram in ((False, True), (True, False)):  # neither ROMFS nor PSRAM helps
        d = decide(micropython=micropython, mpy_version=mpy, romfs=romfs, psram=psram)
        text = d.text()
        assert d.method == "refuse", text
        assert "MicroPython %s, which loads .mpy version %s" % (micropython, mpy) in text, text
        assert "this build's .mpy files are version 6.3 (MicroPython 1.23 to 1.28" in text, text
        assert "is %s" % words in text and "incompatible .mpy file" in text


def test_native_code_for_another_architecture_is_refused():
    d = decide(psram=True, mpy_arch="x64")
    assert d.method == "refuse" and "native code for x64" in d.text() and "for xtensawin" in d.text()


def test_bytecode_without_native_code_needs_only_the_same_major_version():
    # py/persistentcode.c mp_raw_code_load(): the sub-version is checked only for files with native code
    assert decide(psram=True, mpy_version="6.2", here=build(arch=None)).method == "files"
    assert decide(psram=True, mpy_version="5.0", here=build(arch=None)).method == "refuse"


def test_the_probe_s_raw_mpy_value_is_decoded():
    esp32 = 6 | 3 << 8 | 10 << 10  # sys.implementation._mpy on the ESP32: xtensawin
    b = board(mpy_version=esp32, mpy_arch=None)
    assert (b.mpy, b.arch, b.word_bytes) == ((6, 3), "xtensawin", 4)
    b = board(mpy_version=2822, mpy_arch=None)  # the unix port on x86-64 (the stand-in)
    assert (b.mpy, b.arch, b.word_bytes) == ((6, 3), "x64", 8)


@pytest.mark.parametrize("change, words", [
    ({"mpy_version": "six"}, "mpy_version: 'six' is not a .mpy version"),
    ({"mpy_version": 6}, "lacks the sub-version"),
    ({"romfs": "yes"}, "romfs: must be true or false"),
    ({"psram": -1}, "psram: must be true, false or the PSRAM's size"),
    ({"heap_free_bytes": "lots"}, "heap_free_bytes: must be a number of bytes"),
    ({"mpy_arch": "z80"}, "mpy_arch: 'z80' is not one of"),
])
def test_board_information_that_makes_no_sense_is_named(change, words):
    with pytest.raises(deploy_method.BoardInfoError, match=words.replace("(", r"\(")):
        board(**change)
    with pytest.raises(deploy_method.BoardInfoError, match="missing: psram, flash_bytes"):
        deploy_method.board_from_info({"micropython": "1.28.0", "mpy_version": "6.3", "romfs": False,
                                       "heap_free_bytes": 1})


def test_the_build_s_mpy_format_is_read_from_its_files(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.mpy").write_bytes(b"M\x06\x00\x1f")  # bytecode only
    (tmp_path / "lib" / "b.mpy").write_bytes(b"M\x06" + bytes([10 << 2 | 3]) + b"\x1f")  # viper for xtensawin
    (tmp_path / "main.py").write_text("")
    b = deploy_method.build_facts(str(tmp_path), None, DIGEST, CODE_HEAP, "1.28.0")
    assert (b.mpy, b.arch) == ((6, 3), "xtensawin")
    (tmp_path / "lib" / "c.mpy").write_bytes(b"M\x05\x00\x1f")
    with pytest.raises(ValueError, match="mixes .mpy formats"):
        deploy_method.build_facts(str(tmp_path), None, DIGEST, CODE_HEAP, "1.28.0")


def test_make_build_s_files_are_the_format_the_decision_expects():
    if not (os.path.isdir(os.path.join(ROOT, "build", "device"))
            and os.path.exists(os.path.join(ROOT, "build", "device.romfs"))):
        subprocess.run([sys.executable, "-m", "tools.build", "--no-heap"], cwd=ROOT, check=True, capture_output=True)
    here = deploy.build_here(os.path.join(ROOT, "build"))
    expected = deploy.expected_build()
    assert (here.mpy, here.arch) == (expected.mpy, expected.arch) == ((6, 3), "xtensawin")
    assert here.digest == image.source_digest()


# --- python -m tools.deploy --plan --------------------------------------------------------------------------

def plan(tmp_path, **info):
    path = tmp_path / "board.json"
    path.write_text(json.dumps(info))
    return subprocess.run([sys.executable, "-m", "tools.deploy", "--plan", "--board-info", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


STOCK = {"micropython": "1.28.0", "mpy_version": "6.3", "romfs": False, "psram": False, "heap_free_bytes": 110_000,
         "flash_bytes": 4 * MIB}


@pytest.mark.parametrize("info, method, status", [
    (dict(STOCK), "refuse", 3),
    (dict(STOCK, psram=True, heap_free_bytes=4_000_000), "files", 0),
    (dict(STOCK, romfs=True, build="METER_ESP32-ROMFS"), "romfs", 0),
    (dict(STOCK, build="METER_ESP32"), "refuse", 3),  # no stamp: not this code
    (dict(STOCK, micropython="1.22.0", mpy_version="6.2", psram=True), "refuse", 3),
])
def test_plan_prints_the_decision_from_a_board_info_file_and_its_first_line_names_the_method(tmp_path, info, method,
                                                                                              status):
    r = plan(tmp_path, **info)
    assert r.returncode == status and r.stderr == "", r
    assert r.stdout.splitlines()[0].split(":")[0] == method, r.stdout
    assert "the board: MicroPython %s" % info["micropython"] in r.stdout


def test_plan_picks_frozen_for_the_image_of_this_code(tmp_path):
    r = plan(tmp_path, **dict(STOCK, build="METER_ESP32", image_digest=image.source_digest()))
    assert r.returncode == 0 and r.stdout.startswith("frozen: "), r


def test_plan_says_what_is_wrong_with_a_board_info_file(tmp_path):
    r = plan(tmp_path, micropython="1.28.0")
    assert r.returncode == 1 and "missing: mpy_version, romfs, psram, heap_free_bytes, flash_bytes" in r.stderr, r
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "tools.deploy", "--plan"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "--plan needs --board-info FILE or --port PORT" in r.stderr


# --- before the board is touched: the serial port, the files given ------------------------------------------

@pytest.fixture
def fake_mpremote(tmp_path, monkeypatch):
    """An mpremote that logs how it is called and sees two serial ports; the log's path."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "mpremote"
    fake.write_text(textwrap.dedent("""\
        #!%s
        import sys
        with open(%r, "a") as f:
            f.write(" ".join(sys.argv[1:3]) + "\\n")
        if sys.argv[1:] == ["devs"]:
            print("/dev/ttyUSB7 0001 10c4:ea60 Silicon Labs CP2102 USB to UART")
            print("/dev/ttyACM2 None 303a:1001 Espressif USB JTAG/serial debug unit")
        else:
            sys.exit("mpremote: failed to access the board")
        """ % (sys.executable, str(log))))
    fake.chmod(0o755)
    monkeypatch.setenv("MPREMOTE", str(fake))
    return log


def test_a_missing_serial_port_is_named_with_the_ports_mpremote_sees_before_anything_is_built(tmp_path, fake_mpremote):
    env = dict(os.environ, MPREMOTE=os.environ["MPREMOTE"])
    build_dir = tmp_path / "build"  # (--build-dir: a build here would show in it)
    r = subprocess.run([sys.executable, "-m", "tools.deploy", "--build", "--port", "/dev/no-such-meter-port",
                        "--build-dir", str(build_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r
    assert "--port /dev/no-such-meter-port: there is no such serial port: is the board plugged in" in r.stderr
    assert "The serial ports mpremote sees: /dev/ttyUSB7, /dev/ttyACM2." in r.stderr
    assert fake_mpremote.read_text() == "devs\n"  # asked for the list only: no board was spoken to
    assert r.stdout == "" and not build_dir.exists()


def test_no_serial_port_at_all_is_said_too(monkeypatch, tmp_path):
    monkeypatch.setattr(deploy, "serial_ports", lambda: [])
    with pytest.raises(SystemExit, match="mpremote sees no serial port here"):
        deploy.check_port("/dev/ttyUSB9")
    deploy.check_port("a0")  # mpremote's own short names are left to it


def run_deploy(*args):
    return subprocess.run([sys.executable, "-m", "tools.deploy", "--port", "fake-port", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("settings, words", [
    ({"upload": {"record_interval_s": 5}}, "upload.record_interval_s: must be"),
    ({"meter": {"model": "industrial"}}, "meter.model: must be one of"),
    ({"energy": {"save_min_interval_s": 600, "save_max_interval_s": 300}},
     "energy.save_min_interval_s: must not exceed energy.save_max_interval_s"),
    ({"uplaod": {"url": "https://x.example"}}, "uplaod: unknown section"),
    (["upload"], "fleet settings are a JSON object of sections"),
])
def test_invalid_fleet_settings_are_refused_by_the_device_s_own_rules_before_the_board_is_asked(
        tmp_path, fake_mpremote, settings, words):
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(settings))
    r = run_deploy("--settings", str(path))
    assert r.returncode == 1 and words in r.stderr and "Traceback" not in r.stderr, r
    assert not fake_mpremote.exists()  # mpremote was never called


def test_bad_identity_ca_certificate_and_url_are_refused_before_the_board_is_asked(tmp_path, fake_mpremote):
    bad = tmp_path / "identity-bad.json"
    bad.write_text('{"format": "open-meter-identity", "version": 1, "serial": "X"}')
    r = run_deploy("--identity", str(bad))
    assert r.returncode == 1 and "is not a valid identity file: ap_password" in r.stderr, r
    junk = tmp_path / "ca.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    r = run_deploy("--ca-cert", str(junk))
    assert r.returncode == 1 and "upload.ca_cert: must be empty, one PEM certificate" in r.stderr, r
    r = run_deploy("--upload-url", "ftp://meters.example/in")
    assert r.returncode == 1 and "upload.url: must be empty or an http:// or https:// URL" in r.stderr, r
    assert not fake_mpremote.exists()


def test_a_ca_certificate_is_taken_as_pem_or_der(tmp_path):
    from tools import ingest

    ingest.ensure_certs(str(tmp_path))
    pem = deploy.read_ca_cert(str(tmp_path / "ca.pem"))
    der = deploy.read_ca_cert(str(tmp_path / "ca.der"))
    assert config.validate({"upload": {"ca_cert": pem}})["upload"]["ca_cert"] == \
        config.validate({"upload": {"ca_cert": der}})["upload"]["ca_cert"] != ""
    two = tmp_path / "two.pem"
    two.write_bytes((tmp_path / "ca.pem").read_bytes() * 2)
    with pytest.raises(SystemExit, match="holds several certificates"):
        deploy.read_ca_cert(str(two))


# --- what a re-deploy keeps ---------------------------------------------------------------------------------

def test_identity_is_installed_once_and_another_is_refused_unless_forced(tmp_path):
    a, _ = provision.provision(str(tmp_path), "MDAAAA1", log=lambda line: None)
    b, _ = provision.provision(str(tmp_path), "MDBBBB2", log=lambda line: None)
    check_a = json.loads(a.to_json())["check"]
    assert deploy.identity_action(a, None)[0] == "copy"
    assert deploy.identity_action(a, "damaged")[0] == "copy"
    assert deploy.identity_action(a, ["MDAAAA1", check_a]) == ("skip", "the board already has identity MDAAAA1: not "
                                                                        "copied again")
    action, message = deploy.identity_action(b, ["MDAAAA1", check_a])
    assert action == "refuse" and "FORCE_IDENTITY=1" in message and "label" in message
    for secret in (a.pin, a.ap_password, b.pin, b.ap_password):
        assert secret not in message
    assert deploy.identity_action(b, ["MDAAAA1", check_a], force=True)[0] == "copy"


def ins(**kw):
    return deploy.Inputs(**kw)


def test_settings_given_change_only_their_keys_and_the_board_s_stay():
    board = config.validate({"wifi": {"ssid": "Shed", "password": "hunter2hunter2"}, "ap": {"channel": 11},
                             "board": {"profile": "wt32-eth01"}})
    doc, changed = deploy.new_settings(board, ins(settings={"upload": {"record_interval_s": 120}},
                                                  upload_url="https://meters.example/in"), reset=False)
    assert doc["wifi"] == board["wifi"] and doc["ap"]["channel"] == 11 and doc["board"]["profile"] == "wt32-eth01"
    assert doc["upload"]["record_interval_s"] == 120 and doc["upload"]["url"] == "https://meters.example/in"
    assert changed == ["upload.url", "upload.record_interval_s"]
    # --reset-settings: the defaults, then what is given; the board profile stays (it names the hardware)
    doc, changed = deploy.new_settings(board, ins(settings={"ap": {"mode": "always"}}), reset=True)
    assert doc["wifi"]["ssid"] == "" and doc["ap"] == dict(config.defaults()["ap"], mode="always")
    assert doc["board"]["profile"] == "wt32-eth01"
    # a board without settings: the defaults and the fleet's
    doc, changed = deploy.new_settings(None, ins(settings={"meter": {"model": "public"}}), reset=False)
    assert doc == config.merge(config.defaults(), {"meter": {"model": "public"}}) and changed == ["meter.model"]


def test_settings_that_break_a_rule_together_with_the_board_s_are_refused():
    board = config.validate({"energy": {"save_max_interval_s": 120, "save_min_interval_s": 60}})
    with pytest.raises(config.ConfigError, match="energy.save_min_interval_s: must not exceed"):
        deploy.new_settings(board, ins(settings={"energy": {"save_min_interval_s": 300}}), reset=False)


def test_what_is_kept_and_what_goes_is_said():
    class Args:
        force_identity = reset_settings = clear_energy = clear_spool = False

    on_board = {"identity": ["MDAAAA1", "x"], "settings": ["config.json", "config.json.bak"],
                "energy": ["energy.a"], "spool": 3}
    kept, gone = deploy.kept_and_cleared(on_board, ins(), Args(), [])
    assert kept == ["identity MDAAAA1", "settings (config.json and config.json.bak)", "energy counters (energy.a)",
                    "3 spooled file(s) of records not yet uploaded"] and gone == []
    Args.clear_energy = Args.clear_spool = Args.reset_settings = True
    kept, gone = deploy.kept_and_cleared(on_board, ins(), Args(), ["ap.mode"])
    assert kept == ["identity MDAAAA1"] and gone == [
        "settings (back to the defaults, then the ones given)", "energy counters (energy.a)",
        "3 spooled file(s) of records not yet uploaded"]


# --- the order of the writes --------------------------------------------------------------------------------

def steps(cmd):
    out, step = [], []
    for arg in cmd[3:]:  # after "mpremote connect PORT"
        if arg == "+":
            out.append(step)
            step = []
        else:
            step.append(arg)
    return out + [step]


def test_the_writes_come_in_an_order_that_a_cut_cable_cannot_make_worse():
    cmd = deploy.plan("/dev/x", "romfs", "D", "D.romfs", identity_file="id.json", settings_file="s.json",
                      clear=["/energy.a"])
    s = steps(cmd)
    # the image first: a board whose partition refuses it keeps the code it has
    assert s[0] == ["romfs", "deploy", "D.romfs"]
    # then what would shadow it goes, then boot.py and main.py
    assert s[1][0] == "exec" and s[1][1].endswith("rm('/firmware')\nrm('/lib')\n")
    assert s[2] == ["fs", "cp", "D/boot.py", "D/main.py", ":"]
    # identity and settings: each whole or not at all (a temporary name, then a rename), config.json before
    # its copy, as the firmware's ConfigStore.save() writes them
    assert s[3] == ["fs", "cp", "id.json", ":identity.json.tmp"] and "os.rename('identity.json.tmp', " \
        "'identity.json')" in s[4][1]
    assert s[5] == ["fs", "cp", "s.json", ":config.json.tmp"] and "'config.json.tmp', 'config.json'" in s[6][1]
    assert s[7] == ["fs", "cp", "s.json", ":config.json.bak.tmp"] and "'config.json.bak'" in s[8][1]
    assert s[9][1].endswith("rm('/energy.a')\n") and len(s) == 10
    assert "rtc" not in cmd  # the clock: UTC, by the last call, right before the reset
    clock = deploy.clock_plan("/dev/x")
    assert clock[3] == "exec" and "machine.RTC().datetime(" in clock[4] and clock[-2:] == ["+", "reset"]
    files = steps(deploy.plan("/dev/x", "files", "D", "D.romfs"))
    assert files[0][0] == "exec" and files[1] == ["fs", "cp", "-r", "D/firmware", "D/lib", ":"]
    assert files[2] == ["fs", "cp", "D/boot.py", "D/main.py", ":"] and len(files) == 3
    frozen = steps(deploy.plan("/dev/x", "frozen", "D", "D.romfs"))
    assert [x[0] for x in frozen] == ["exec", "fs"] and "romfs" not in str(frozen)

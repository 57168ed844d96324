# Power cuts and damaged files: the device always boots with a whole configuration, measuring.
import json

import atomicfile
from powercut import Flash, PowerCut, files, restore, steps_of

from firmware import config, profiles
from firmware.config import ConfigStore
from support import raises, tmpdir

OLD = {"wifi": {"ssid": "Old WiFi", "password": "old-password"}, "meter": {"model": "home"}}
NEW = {"wifi": {"ssid": "New WiFi ☕", "password": "new-password-2"},
       "meter": {"model": "public", "ct_phase": [2, 1, 3], "ct_reversed": [True, False, False]},
       "upload": {"url": "https://ingest.example/v1"}}
IDENTITY = b'{"format": "open-meter-identity", "serial": "TEST1"}'
ENERGY = b"E" * 80


def quiet(line):
    pass


def _device(d):
    """A device filesystem with the OLD settings, an identity and energy slots beside them."""
    ConfigStore(d + "/config.json", log=quiet).save(OLD)
    for name, data in (("identity.json", IDENTITY), ("energy.a", ENERGY)):
        with open(d + "/" + name, "wb") as f:
            f.write(data)
    return files(d)


def _boot(d):
    """What the firmware does at power-up: load() must not raise, and the meter must get a usable section."""
    store = ConfigStore(d + "/config.json", log=quiet)
    cfg = store.load()
    meter = cfg["meter"]
    profiles.channels(meter["model"], meter["calibration"])  # the meter can build its channels from it
    return store, cfg


def test_save_cut_at_every_byte_boots_with_the_old_or_the_new_settings():
    d = tmpdir()
    picture = _device(d)
    old_doc, new_doc = config.validate(OLD), config.validate(NEW)
    store = ConfigStore(d + "/config.json", log=quiet)
    total = steps_of(lambda: store.save(NEW))
    assert total > 2 * len(json.dumps(new_doc))  # every byte of both copies is a cut point
    seen_old = seen_new = 0
    for k in range(total + 1):
        restore(d, picture)
        store = ConfigStore(d + "/config.json", log=quiet)
        store.load()
        try:
            with Flash(k):
                store.save(NEW)
        except PowerCut:
            pass
        booted, cfg = _boot(d)
        doc = cfg.document()
        assert doc == old_doc or doc == new_doc, k
        assert booted.diagnostic is None, (k, booted.diagnostic)  # a cut is not damage: no fallback needed
        seen_old += doc == old_doc
        seen_new += doc == new_doc
        after = files(d)
        assert after["identity.json"] == IDENTITY and after["energy.a"] == ENERGY
    assert seen_old > 0 and seen_new > 0
    assert doc == new_doc  # the uncut save (k == total) lands
    # A cut leaves a stale temp file behind; the next save works regardless.
    restore(d, picture)
    try:
        with Flash(total // 4):
            ConfigStore(d + "/config.json", log=quiet).save(NEW)
    except PowerCut:
        pass
    assert atomicfile.exists(d + "/config.json" + atomicfile.TMP_SUFFIX)
    ConfigStore(d + "/config.json", log=quiet).save(NEW)
    assert _boot(d)[1].document() == new_doc


def test_truncated_config_falls_back_to_the_last_good_copy():
    d = tmpdir()
    picture = _device(d)
    good = picture["config.json"]
    for k in range(len(good)):
        restore(d, picture)
        with open(d + "/config.json", "wb") as f:
            f.write(good[:k])
        lines = []
        store = ConfigStore(d + "/config.json", log=lines.append)
        cfg = store.load()
        assert cfg.document() == config.validate(OLD), k
        assert store.diagnostic.code == config.RESTORED
        assert "last good copy" in store.diagnostic.message
        assert store.needs_setup  # the setup access point comes up so someone sees what happened
        assert any(config.RESTORED in x for x in lines)  # and the console says so
        after = files(d)
        assert after["identity.json"] == IDENTITY and after["energy.a"] == ENERGY
        assert after["config.json"] == good[:k]  # loading never writes


def test_damaged_config_and_copy_give_defaults_with_a_diagnostic():
    d = tmpdir()
    picture = _device(d)
    cases = [
        (b"", b"", "not valid JSON"),
        (b"\xff\xfe\x00garbage", b"{\"version\": 1, \"wifi\": {\"ssid\": ", "not valid JSON"),
        (b"[1, 2, 3]", b"null", "must be an object"),
        (json.dumps({"version": 1, "meter": {"window_ms": 5}}).encode(), b"", "meter.window_ms: must be"),
        (json.dumps({"version": 7}).encode(), b"x", "newer firmware"),
        (b"{" * 20000, b"", "larger than 16384 bytes"),
    ]
    for main, backup, why in cases:
        restore(d, picture)
        for name, data in (("config.json", main), ("config.json.bak", backup)):
            with open(d + "/" + name, "wb") as f:
                f.write(data)
        store = ConfigStore(d + "/config.json", log=quiet)
        cfg = store.load()
        assert cfg.document() == config.defaults()
        assert store.diagnostic.code == config.RESET and store.needs_setup
        assert why in store.diagnostic.message, (why, store.diagnostic.message)
        assert "using defaults" in store.diagnostic.message
        assert files(d)["identity.json"] == IDENTITY and files(d)["energy.a"] == ENERGY


def test_invalid_main_file_is_named_and_the_copy_used():
    d = tmpdir()
    _device(d)
    with open(d + "/config.json", "w") as f:
        f.write(json.dumps({"version": 1, "wifi": {"ssid": "x", "colour": "red"}}))
    store = ConfigStore(d + "/config.json", log=quiet)
    cfg = store.load()
    assert cfg["wifi"]["ssid"] == "Old WiFi"
    assert store.diagnostic.code == config.RESTORED and "wifi.colour: unknown setting" in store.diagnostic.message


def test_a_save_after_damage_clears_the_diagnostic():
    d = tmpdir()
    _device(d)
    with open(d + "/config.json", "wb") as f:
        f.write(b"{\"vers")
    store = ConfigStore(d + "/config.json", log=quiet)
    store.load()
    assert store.needs_setup
    store.update({"wifi": {"ssid": "Fixed"}})
    again = ConfigStore(d + "/config.json", log=quiet)
    assert again.load()["wifi"]["ssid"] == "Fixed" and again.diagnostic is None and not again.needs_setup


def test_failed_write_keeps_the_old_file_and_leaves_no_debris():
    d = tmpdir()
    _device(d)
    before = files(d)

    class FullFlash(Flash):
        def rename(self, old, new):
            raise OSError(28)  # ENOSPC

    store = ConfigStore(d + "/config.json", log=quiet)
    store.load()
    with raises(OSError):
        with FullFlash():
            store.save(NEW)
    assert files(d) == before


def test_lines_come_back_as_written_whatever_the_chunk_size():
    path = tmpdir() + "/lines"
    assert atomicfile.read_lines(path) is None  # no such file
    records = [b'{"seq":%d,"x":"%s"}' % (i, b"y" * (i * 37 % 300)) for i in range(12)]
    atomicfile.replace(path, [p for r in records for p in (r, b"\n")])  # pieces, as the spool writes
    for chunk in (1, 7, 64, 512, 100000):
        assert atomicfile.read_lines(path, chunk) == records
    atomicfile.replace(path, b"a\n\nb")  # an empty line, and a last one cut short by a power loss
    assert atomicfile.read_lines(path, 2) == [b"a", b"", b"b"]
    atomicfile.replace(path, b"")
    assert atomicfile.read_lines(path) == []


def test_read_lines_leaves_out_a_line_too_long_without_ever_holding_it_whole():
    path = tmpdir() + "/lines"
    with open(path, "wb") as f:
        f.write(b"first\n" + b"x" * 400000 + b"\nlast")
    assert atomicfile.read_lines(path, 512, max_line_bytes=100) == [b"first", b"last"]
    assert atomicfile.read_lines(path, 7, max_line_bytes=100) == [b"first", b"last"]

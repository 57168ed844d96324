# Settings: the rules an installer meets, defaults, versioned files and migration.
import json

from firmware import config, profiles, schema
from firmware.config import ConfigError, ConfigStore
from support import raises, tmpdir

PEM = """-----BEGIN CERTIFICATE-----
MIIBfjCCASOgAwIBAgIUFnw9xFigvrHh5eKE80N0agoDLukwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MB4XDTI2MTEyODE5NDIyMVoXDTM2MTEyNTE5
NDIyMVowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEgo/BlSzaNSh1wqnl50yFtB93JsTxv0Hyw4vHVWHKnWiPIUpzeRwjdm+J
8RZ/wT4nsp3zDlvAVhpHn8LL+2gXbKNTMFEwHQYDVR0OBBYEFDosJEgtoVqhpq4f
dLw78nBAwdm3MB8GA1UdIwQYMBaAFDosJEgtoVqhpq4fdLw78nBAwdm3MA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAKe5zqD6luNdIajiGdoWG0Qf
AK0kFDNZUoAH7OETJvjOAiEA7l4TqyUrMfg0P/F2318sNISW+Kk+qABKbtEy3WoN
4wY=
-----END CERTIFICATE-----"""  # a self-signed test certificate (CN=localhost), 386 bytes of DER


def quiet(line):
    pass


def rejected(changes, field, rule_part):
    """Assert that changes (applied to the defaults) are rejected naming field and the rule."""
    with raises(ConfigError) as e:
        config.merge(config.defaults(), changes)
    assert e.value.field == field, (e.value.field, field)
    assert rule_part in str(e.value), str(e.value)
    assert str(e.value).startswith(field + ": ")


def accepted(changes):
    return config.merge(config.defaults(), changes)


def test_meter_section_defaults_are_exactly_what_the_meter_consumes():
    assert config.defaults()["meter"] == {
        "model": "home", "wiring": "auto", "nominal_hz": 0, "generation": False,
        "ct_reversed": [False, False, False], "ct_phase": [1, 2, 3], "calibration": {},
        "window_ms": 1000, "burst_period_ms": 100, "burst_cycles": 2,
    }
    assert config.defaults()["version"] == config.VERSION


def test_wifi_ssid_takes_any_utf8_up_to_32_bytes():
    assert accepted({"wifi": {"ssid": "x"}})["wifi"]["ssid"] == "x"
    assert accepted({"wifi": {"ssid": "Café Wi-Fi 5G ☕ (guest) #1"}})["wifi"]["ssid"]
    assert accepted({"wifi": {"ssid": "é" * 16}})  # 32 bytes, 16 characters
    assert accepted({"wifi": {"ssid": "a" * 32}})
    rejected({"wifi": {"ssid": "é" * 17}}, "wifi.ssid", "1-32 bytes of UTF-8")  # 17 chars, 34 bytes
    rejected({"wifi": {"ssid": "a" * 33}}, "wifi.ssid", "1-32 bytes")
    rejected({"wifi": {"ssid": "a\x00b"}}, "wifi.ssid", "NUL")
    rejected({"wifi": {"ssid": 42}}, "wifi.ssid", "UTF-8")
    assert accepted({"wifi": {"ssid": ""}})["wifi"]["ssid"] == ""  # no WiFi (LAN only, or not set up)


def test_wifi_passphrase_rules_of_wpa2():
    for ok in ("12345678", "p" * 63, "with spaces and ~!@#$%^&*()", "0123456789abcdefABCDEF" + "0" * 42, ""):
        assert accepted({"wifi": {"ssid": "Home", "password": ok}})["wifi"]["password"] == ok
    rule = "8-63 printable ASCII"
    rejected({"wifi": {"password": "1234567"}}, "wifi.password", rule)
    rejected({"wifi": {"password": "p" * 65}}, "wifi.password", rule)
    rejected({"wifi": {"password": "g" * 64}}, "wifi.password", "64 hex digits")  # 64 but not hex
    rejected({"wifi": {"password": "pässwort123"}}, "wifi.password", rule)  # not ASCII
    rejected({"wifi": {"password": "tab\there12"}}, "wifi.password", rule)  # control character


def test_unknown_fields_and_sections_are_named():
    rejected({"wifi": {"sid": "x"}}, "wifi.sid", "unknown setting")
    rejected({"meter": {"window": 5}}, "meter.window", "unknown setting (known: burst_cycles")
    rejected({"mqqt": {}}, "mqqt", "unknown section")
    with raises(ConfigError, "unknown section"):
        config.validate({"version": 1, "extra": 1})


def test_the_local_outputs_sections():
    # Off by default; their rules are outputs_schema's (tested in test_mqtt_ha.py), checked with the rest.
    d = config.defaults()
    assert d["modbus"] == {"enabled": False, "port": 502, "unit_id": 1}
    assert d["mqtt"]["enabled"] is False and d["mqtt"]["port"] == 1883 and d["mqtt"]["base_topic"] == "meter"
    rejected({"modbus": {"unit_id": 0}}, "modbus.unit_id", "from 1 to 247")
    rejected({"mqtt": {"enabled": True}}, "mqtt.host", "must name the broker")
    rejected({"mqtt": {"host": "b.lan", "tls": True}}, "mqtt.ca_cert", "CA certificate")
    assert config.validate({"mqtt": {"enabled": True, "host": "10.0.0.5"}})["mqtt"]["host"] == "10.0.0.5"


def test_meter_rules():
    rejected({"meter": {"model": "industrial"}}, "meter.model", 'one of "home", "public"')
    rejected({"meter": {"wiring": "two-phase"}}, "meter.wiring", "one of")
    rejected({"meter": {"nominal_hz": 55}}, "meter.nominal_hz", "one of 0, 50, 60")
    rejected({"meter": {"generation": 1}}, "meter.generation", "true or false")
    rejected({"meter": {"ct_reversed": [True, False]}}, "meter.ct_reversed", "3 true/false")
    rejected({"meter": {"ct_reversed": [1, 0, 0]}}, "meter.ct_reversed", "3 true/false")
    rejected({"meter": {"ct_phase": [1, 1, 2]}}, "meter.ct_phase", "each of 1, 2, 3 exactly once")
    rejected({"meter": {"ct_phase": [1, 2, 3, 4]}}, "meter.ct_phase", "exactly once")
    rejected({"meter": {"window_ms": 249}}, "meter.window_ms", "integer from 250 to 60000")
    rejected({"meter": {"window_ms": 60001}}, "meter.window_ms", "250 to 60000")
    rejected({"meter": {"window_ms": 1000.5}}, "meter.window_ms", "integer")
    rejected({"meter": {"window_ms": True}}, "meter.window_ms", "integer")  # bool is not a number here
    rejected({"meter": {"burst_period_ms": 19}}, "meter.burst_period_ms", "20 to 1000")
    rejected({"meter": {"burst_cycles": 11}}, "meter.burst_cycles", "1 to 10")
    # A burst must fit its period, or bursts run back to back and starve everything else.
    rejected({"meter": {"burst_cycles": 4}}, "meter.burst_period_ms", "at least 143 ms for 4-cycle bursts")
    rejected({"meter": {"burst_period_ms": 50}}, "meter.burst_period_ms", "at least 98 ms")
    m = accepted({"meter": {"model": "public", "wiring": "single-phase", "nominal_hz": 60, "generation": True,
                            "ct_reversed": [False, True, False], "ct_phase": [2, 3, 1], "window_ms": 250,
                            "burst_period_ms": 1000, "burst_cycles": 10}})["meter"]
    assert m["ct_phase"] == [2, 3, 1] and m["ct_reversed"] == [False, True, False] and m["model"] == "public"


def test_calibration_is_shaped_like_the_profiles_and_builds_channels():
    cal = {"voltage": [{"adc_gain": 1.01}, {}, {"divider_ratio": 402.5, "adc_offset": 2040}],
           "current": [{}, {"burden_ohm": 17.0, "phase_lead_deg": 2.1}, {"ct_ratio": 2500}]}
    m = accepted({"meter": {"calibration": cal}})["meter"]
    assert m["calibration"] == cal
    volts, amps = profiles.channels(m["model"], m["calibration"])
    assert amps[1].cal["burden_ohm"] == 17.0 and volts[2].bias == 2040
    rejected({"meter": {"calibration": {"voltage": [{}, {}]}}}, "meter.calibration.voltage", "list of 3")
    rejected({"meter": {"calibration": {"power": [{}, {}, {}]}}}, "meter.calibration.power", "unknown channel")
    rejected({"meter": {"calibration": {"current": [{}, {"divider_ratio": 400}, {}]}}},
             "meter.calibration.current[1].divider_ratio", "unknown current channel key")
    rejected({"meter": {"calibration": {"current": [{}, {}, {"burden_ohm": 0}]}}},
             "meter.calibration.current[2].burden_ohm", "number from 0.1 to 10000")
    rejected({"meter": {"calibration": {"voltage": [{"adc_offset": 2048.5}, {}, {}]}}},
             "meter.calibration.voltage[0].adc_offset", "integer from 0 to 4095")
    rejected({"meter": {"calibration": []}}, "meter.calibration", "must be {}")


def test_every_channel_key_of_the_profiles_has_a_rule():
    for kind in profiles.CHANNEL_KEYS:
        for key in profiles.CHANNEL_KEYS[kind]:
            assert key in schema.CAL_RULES, key
            for model in profiles.MODELS:  # the documented defaults pass their own rules
                default = profiles.defaults(model)[kind][0][key]
                schema.CAL_RULES[key]("x", default)


def test_lan_upload_ap_and_energy_rules():
    assert accepted({"lan": {"enabled": True, "mdc": 23, "mdio": 18, "power": None, "phy_addr": 0}})["lan"]["enabled"]
    rejected({"lan": {"mdc": 36}}, "lan.mdc", "free output GPIOs 4, 5, 13-18, 23")
    rejected({"lan": {"mdio": 23}}, "lan.mdio", "must differ from lan.mdc")
    rejected({"lan": {"power": 18}}, "lan.power", "must differ")
    rejected({"lan": {"phy": "W5500"}}, "lan.phy", "one of")
    for url in ("https://meter.example.com/ingest", "http://127.0.0.1:8080/v1/readings", "https://h", ""):
        assert accepted({"upload": {"url": url}})["upload"]["url"] == url
    for bad in ("ftp://h/x", "https://", "https://user:pw@h/x", "https://h x/", "h/x", "https://h:99999/",
                "https://" + "h" * 250):
        rejected({"upload": {"url": bad}}, "upload.url", "http:// or https://")
    rejected({"upload": {"live_interval_ms": 100}}, "upload.live_interval_ms", "500 to 60000")
    rejected({"ap": {"mode": "sometimes"}}, "ap.mode", '"auto", "always", "off"')
    rejected({"ap": {"channel": 14}}, "ap.channel", "1 to 13")
    rejected({"energy": {"save_min_interval_s": 5}}, "energy.save_min_interval_s", "10 to 3600")
    rejected({"energy": {"save_min_interval_s": 600, "save_max_interval_s": 300}},
             "energy.save_min_interval_s", "must not exceed")


def test_ca_certificate_pem_is_stored_as_base64_der():
    stored = accepted({"upload": {"ca_cert": PEM}})["upload"]["ca_cert"]
    body = "".join(PEM.splitlines()[1:-1])
    assert stored == body
    assert accepted({"upload": {"ca_cert": body}})["upload"]["ca_cert"] == body  # base64 DER as is
    s = config.summary(accepted({"upload": {"ca_cert": body}}))
    assert s["upload"]["ca_cert_bytes"] == 386 and s["upload"]["ca_cert"] == ""
    rule = "one PEM certificate, or one DER certificate in base64"
    rejected({"upload": {"ca_cert": "not a certificate"}}, "upload.ca_cert", rule)
    rejected({"upload": {"ca_cert": body[:-8]}}, "upload.ca_cert", rule)  # DER length does not match
    rejected({"upload": {"ca_cert": "AAAA" + body}}, "upload.ca_cert", rule)


def test_saved_settings_survive_a_reboot_and_bad_input_changes_nothing():
    d = tmpdir()
    store = ConfigStore(d + "/config.json", log=quiet)
    assert store.load()["meter"] == config.defaults()["meter"]
    assert store.diagnostic.code == config.NEW and store.needs_setup
    store.update({"wifi": {"ssid": "Panel WiFi", "password": "correct horse"}, "meter": {"ct_phase": [3, 1, 2]}})
    before = open(d + "/config.json").read()
    with raises(ConfigError, "meter.window_ms"):
        store.update({"wifi": {"ssid": "Other"}, "meter": {"window_ms": 5}})
    assert open(d + "/config.json").read() == before  # rejected as a whole: nothing written
    assert store.config["wifi"]["ssid"] == "Panel WiFi"
    again = ConfigStore(d + "/config.json", log=quiet)
    cfg = again.load()
    assert again.diagnostic is None and not again.needs_setup
    assert cfg["wifi"]["ssid"] == "Panel WiFi" and cfg["meter"]["ct_phase"] == [3, 1, 2]
    assert cfg.document() == store.config.document()


def test_a_file_without_some_keys_takes_their_defaults():
    d = tmpdir()
    with open(d + "/config.json", "w") as f:
        f.write(json.dumps({"version": 1, "wifi": {"ssid": "Shed"}, "meter": {"model": "public"}}))
    store = ConfigStore(d + "/config.json", log=quiet)
    cfg = store.load()
    assert store.diagnostic is None
    assert cfg["meter"]["model"] == "public" and cfg["meter"]["window_ms"] == 1000
    assert cfg["wifi"]["password"] == "" and cfg["ap"] == config.defaults()["ap"]


def test_version_0_file_is_migrated_in_memory_and_left_on_disk_for_older_firmware():
    d = tmpdir()
    v0 = {"wifi_ssid": "Barn", "wifi_password": "hayloft-99", "model": "public", "upload_url": "https://x.example/in",
          "ct_reversed": [False, False, True]}
    text = json.dumps(v0)
    with open(d + "/config.json", "w") as f:
        f.write(text)
    lines = []
    store = ConfigStore(d + "/config.json", log=lines.append)
    cfg = store.load()
    assert store.diagnostic.code == config.MIGRATED
    assert "version 0" in store.diagnostic.message and "version 1" in store.diagnostic.message
    assert cfg["wifi"] == {"ssid": "Barn", "password": "hayloft-99"}
    assert cfg["meter"]["model"] == "public" and cfg["meter"]["ct_reversed"] == [False, False, True]
    assert cfg["upload"]["url"] == "https://x.example/in" and cfg["version"] == 1
    assert not store.needs_setup
    assert open(d + "/config.json").read() == text  # unchanged until the next save
    assert any(config.MIGRATED in x for x in lines)
    store.update({})
    assert json.loads(open(d + "/config.json").read())["version"] == 1


def test_version_0_file_that_says_so_is_migrated_too():
    doc, was = config.migrate({"version": 0, "wifi_ssid": "Barn", "model": "home"})
    assert was == 0 and doc["version"] == 1 and doc["wifi"] == {"ssid": "Barn"}
    assert config.validate(doc)["meter"]["model"] == "home"


def test_migration_hook_runs_every_step_and_names_leftovers():
    doc, was = config.migrate({"wifi_ssid": "A"})
    assert was == 0 and doc["version"] == config.VERSION and doc["wifi"]["ssid"] == "A"
    doc, was = config.migrate({"version": 1, "wifi": {}})
    assert was == 1
    with raises(ConfigError, "unknown section"):
        config.validate(config.migrate({"wifi_ssid": "A", "colour": "red"})[0])
    with raises(ConfigError, "from newer firmware"):
        config.migrate({"version": config.VERSION + 1})


def test_summary_and_repr_hide_the_wifi_key():
    doc = accepted({"wifi": {"ssid": "Panel", "password": "hunter2hunter2"}})
    s = config.summary(doc)
    assert s["wifi"]["ssid"] == "Panel" and s["wifi"]["password"] == "" and s["wifi"]["password_set"] is True
    assert doc["wifi"]["password"] == "hunter2hunter2"  # the summary is a copy
    cfg = config.Config(doc)
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg) and "Panel" in repr(cfg)


def test_factory_reset_of_the_store_returns_to_defaults():
    d = tmpdir()
    store = ConfigStore(d + "/config.json", log=quiet)
    store.load()
    store.update({"wifi": {"ssid": "Panel", "password": "hunter2hunter2"}, "ap": {"mode": "off"}})
    store.factory_reset()
    again = ConfigStore(d + "/config.json", log=quiet)
    assert again.load().document() == config.defaults()
    assert again.needs_setup


class _HeapFull:
    """Stands in for the json module when the heap is too full to parse anything."""

    @staticmethod
    def loads(text):
        raise MemoryError("memory allocation failed")


def test_a_full_heap_is_not_taken_for_damaged_settings():
    d = tmpdir()
    store = ConfigStore(d + "/config.json", log=quiet)
    store.load()
    store.update({"meter": {"model": "public"}})
    before = open(d + "/config.json").read()
    real, config.json = config.json, _HeapFull
    try:
        with raises(MemoryError):
            ConfigStore(d + "/config.json", log=quiet).load()  # not "damaged: using defaults"
    finally:
        config.json = real
    assert open(d + "/config.json").read() == before
    assert ConfigStore(d + "/config.json", log=quiet).load()["meter"]["model"] == "public"


def test_a_factory_reset_keeps_the_board_profile():
    # The devkit's pins on a WT32-ETH01 would read its Ethernet clock (GPIO0) as the button.
    d = tmpdir()
    store = ConfigStore(d + "/config.json", log=quiet)
    store.load()
    store.update({"board": {"profile": "wt32-eth01"}, "wifi": {"ssid": "Panel", "password": "hunter2hunter2"}})
    store.factory_reset()
    again = ConfigStore(d + "/config.json", log=quiet).load().document()
    assert again["board"]["profile"] == "wt32-eth01" and again["wifi"]["ssid"] == ""


def test_the_pin_rules_are_let_go_after_a_check():
    import sys

    d = tmpdir()
    store = ConfigStore(d + "/config.json", log=quiet)
    store.load()
    store.update({"lan": {"enabled": True, "mdc": 23, "mdio": 18, "power": 16}})  # pins as numbers: checked
    assert "firmware.pincheck" not in sys.modules

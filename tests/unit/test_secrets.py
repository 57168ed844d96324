# Secrets (WiFi key, PIN, upload key, AP password) never reach the console, an error message or a
# summary: every output path of the configuration, identity, energy and factory-reset code is checked.
import json

from firmware import config, energy_store, factory, identity
from firmware.config import ConfigError, ConfigStore
from firmware.identity import Identity
from support import tmpdir

WIFI_KEY = "Wh1sper-Secret-Key"
PIN = "93518274"
AP_PASSWORD = "qz7m4kd9xw2p5ntr"
UPLOAD_KEY = identity.derive_upload_key(b"fleet-key-for-tests-only-32bytes", "SECR3T", PIN)
UPLOAD_HEX = "".join("%02x" % b for b in UPLOAD_KEY)


def assert_clean(text):
    text = str(text)
    for secret in (WIFI_KEY, PIN, AP_PASSWORD, UPLOAD_HEX, repr(UPLOAD_KEY)):
        assert secret not in text, "secret found in: " + text
    return text


def _identity():
    return Identity("SECR3T", AP_PASSWORD, PIN, UPLOAD_KEY)


def test_console_lines_of_every_load_save_and_reset_path():
    d = tmpdir()
    lines = []
    path = d + "/config.json"
    store = ConfigStore(path, log=lines.append)
    store.load()  # first boot
    store.update({"wifi": {"ssid": "Panel", "password": WIFI_KEY}})
    ConfigStore(path, log=lines.append).load()  # normal boot
    with open(path, "w") as f:
        f.write('{"version": 1, "wifi": {"ssid": "Panel", "password": "%s"' % WIFI_KEY)  # truncated
    ConfigStore(path, log=lines.append).load()  # restored from the copy
    with open(path + ".bak", "w") as f:
        f.write(json.dumps({"version": 1, "wifi": {"ssid": "x" * 40, "password": WIFI_KEY}}))
    ConfigStore(path, log=lines.append).load()  # both bad: defaults
    with open(path, "w") as f:
        f.write(json.dumps({"wifi_ssid": "Panel", "wifi_password": WIFI_KEY}))
    ConfigStore(path, log=lines.append).load()  # migrated
    with open(path, "w") as f:
        f.write(json.dumps({"version": 1, "wifi": {"ssid": "Panel", "password": WIFI_KEY + "\t"}}))
    ConfigStore(path, log=lines.append).load()  # invalid key stored: named, not shown
    factory.factory_reset(store, log=lines.append)
    # identity: good, missing, damaged with the secrets still readable in the file
    ipath = d + "/identity.json"
    with open(ipath, "w") as f:
        f.write(_identity().to_json())
    identity.load(ipath, log=lines.append)
    identity.load(d + "/nothing.json", log=lines.append)
    for text in (_identity().to_json()[:-20], _identity().to_json().replace(PIN, "12345678")):
        with open(ipath, "w") as f:
            f.write(text)
        status = identity.load(ipath, log=lines.append)
        lines.append(status.upload_refusal())
        lines.append(repr(status.diagnostic))
    for line in lines:
        assert_clean(line)
    assert len(lines) >= 14


def test_validation_messages_never_echo_the_value():
    base = config.defaults()
    bad_values = [WIFI_KEY + "\x01", WIFI_KEY * 5, "x" * 40 + WIFI_KEY, [WIFI_KEY], {"k": WIFI_KEY},
                  "https://user:%s@host/" % WIFI_KEY, "-----BEGIN CERTIFICATE-----%s-----END CERTIFICATE-----" % PIN]
    checked = 0
    for section in config.SECTIONS:
        for key in config.SCHEMA[section]:
            for value in bad_values:
                try:
                    config.merge(base, {section: {key: value}})
                except ConfigError as e:
                    assert_clean(e)
                    assert_clean(repr(e))
                    checked += 1
    assert checked > 100
    for changes in ({"wifi": {WIFI_KEY: 1}}, {WIFI_KEY: {}},
                    {"meter": {"calibration": {"current": [{}, {"burden_ohm": WIFI_KEY}, {}]}}}):
        try:
            config.merge(base, changes)
            raise AssertionError("accepted")
        except ConfigError as e:
            # an unknown *name* is echoed (a form field name is not a secret), a value never
            if "burden_ohm" in str(e):
                assert_clean(e)


def test_summary_repr_and_str_of_config_and_identity():
    doc = config.merge(config.defaults(), {"wifi": {"ssid": "Panel", "password": WIFI_KEY}})
    cfg = config.Config(doc)
    for text in (repr(cfg), str(cfg), json.dumps(cfg.summary()), json.dumps(config.summary(doc))):
        assert "Panel" in assert_clean(text)
    ident = _identity()
    for text in (repr(ident), str(ident), ident.ap_ssid()):
        assert "SECR3T" in assert_clean(text)
    d = tmpdir()
    with open(d + "/identity.json", "w") as f:
        f.write(ident.to_json())
    status = identity.load(d + "/identity.json", log=lambda line: None)
    assert_clean(repr(status.identity))


def test_energy_and_factory_messages():
    d = tmpdir()
    s = energy_store.EnergyStore(d + "/energy")
    s.load()
    assert_clean(s.diagnostic)
    with open(d + "/energy.a", "w") as f:
        f.write(PIN)
    s.load()
    assert_clean(s.diagnostic)

# MQTT: the packets lib/mqtt.py sends (MQTT 3.1.1), the meter's state payloads and Home Assistant
# discovery configs (firmware/mqtt_ha.py), and the rules of the outputs' settings. The broker side
# (a real mosquitto) is tests/host/test_mqtt_broker.py.
import json

import mqtt
from sample_readings import readings

from firmware import mqtt_ha, outputs_schema
from firmware.config import ConfigError
from support import raises


def _settings(**kw):
    s = outputs_schema.check({"mqtt": dict({"enabled": True, "host": "127.0.0.1"}, **kw)})["mqtt"]
    return s


def test_remaining_length_uses_mqtts_variable_length_encoding():
    # The spec's own boundaries (3.1.1, table 2.4).
    assert mqtt.remaining_length(0) == b"\x00"
    assert mqtt.remaining_length(127) == b"\x7f"
    assert mqtt.remaining_length(128) == b"\x80\x01"
    assert mqtt.remaining_length(16383) == b"\xff\x7f"
    assert mqtt.remaining_length(16384) == b"\x80\x80\x01"
    assert mqtt.remaining_length(2097152) == b"\x80\x80\x80\x01"


def test_connect_carries_the_will_and_credentials_in_the_specs_order():
    p = mqtt.connect_packet("meter-A1", "ha", "pw", 60, ("meter/A1/status", "offline", True))
    assert p[0] == 0x10
    body = p[2:]
    assert p[1] == len(body)
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0x80 | 0x40 | 0x20 | 0x04 | 0x02  # user, password, will retain, will, clean session
    assert body[8:10] == b"\x00\x3c"
    assert body[10:] == (b"\x00\x08meter-A1" + b"\x00\x0fmeter/A1/status" + b"\x00\x07offline"
                         + b"\x00\x02ha" + b"\x00\x02pw")
    # Without credentials or will, only a clean session.
    assert mqtt.connect_packet("x")[9] == 0x02


def test_publish_header_with_and_without_retain():
    h = mqtt.publish_header("a/b", 5, retain=True)
    assert h == b"\x31\x0a\x00\x03a/b"
    assert mqtt.publish_header("a/b", 5)[0] == 0x30
    long = mqtt.publish_header("t", 200)
    assert long[:3] == b"\x30\xcb\x01"  # 2 + 1 + 200 = 203 = 75 + 1 x 128: two length bytes


def test_phase_and_total_payloads_are_json_with_exact_energy():
    r = readings()
    ph = json.loads(mqtt_ha.phase_json(r["phases"][0], 1234567890, 0))
    assert ph["import_wh"] == 1234567.890 and ph["export_wh"] == 0
    assert abs(ph["vrms"] - 229.5) < 0.01 and abs(ph["irms"] - 10.5) < 0.001
    assert abs(ph["real_power_w"] - 2300.0) < 0.1 and abs(ph["power_factor"] - r["phases"][0]["power_factor"]) < 0.001
    assert set(ph) == {"vrms", "irms", "real_power_w", "reactive_power_var", "apparent_power_va", "power_factor",
                       "import_wh", "export_wh"}
    t = json.loads(mqtt_ha.total_json(r))
    assert abs(t["real_power_w"] - sum(p["real_power_w"] for p in r["phases"])) < 0.1
    assert t["net_import_wh"] == 987654.321 and t["net_export_wh"] == 12345.678
    assert t["import_wh"] == (1234567890 + 22222222) / 1000
    assert abs(t["frequency_hz"] - 49.987) < 0.001
    # The energy text is the integer counter itself, not a float's rounding of it.
    assert mqtt_ha.total_json(r).count('"net_import_wh":987654.321,') == 1


def test_a_value_json_cannot_carry_is_null_not_nan():
    r = readings()
    r["phases"][1]["power_factor"] = float("nan")
    r["frequency_hz"] = float("inf")
    assert json.loads(mqtt_ha.phase_json(r["phases"][1], 0, 0))["power_factor"] is None
    assert json.loads(mqtt_ha.total_json(r))["frequency_hz"] is None


def test_discovery_announces_one_device_with_the_right_classes_and_units():
    out = mqtt_ha.MqttOutput(_settings(), "ABC-123", None, model="Public", sw_version="1.2")
    configs = list(out.discovery())
    assert len(configs) == 3 * len(mqtt_ha.PHASE_SENSORS) + len(mqtt_ha.TOTAL_SENSORS)
    seen = set()
    for topic, payload in configs:
        cfg = json.loads(payload)
        assert topic.startswith("homeassistant/sensor/meter_ABC-123/") and topic.endswith("/config")
        assert cfg["unique_id"] not in seen
        seen.add(cfg["unique_id"])
        assert cfg["device"] == {"identifiers": ["meter_ABC-123"], "name": "Meter ABC-123",
                                 "manufacturer": "open meter", "model": "Public", "serial_number": "ABC-123",
                                 "sw_version": "1.2"}
        assert cfg["availability_topic"] == "meter/ABC-123/status"
        assert cfg["state_topic"] in ("meter/ABC-123/l1", "meter/ABC-123/l2", "meter/ABC-123/l3", "meter/ABC-123/total")
        if cfg["device_class"] == "energy":
            assert cfg["state_class"] == "total_increasing" and cfg["unit_of_measurement"] == "Wh"
        else:
            assert cfg["state_class"] == "measurement"
    by_id = {json.loads(p)["unique_id"]: json.loads(p) for _, p in configs}
    assert by_id["meter_ABC-123_l2_voltage"]["unit_of_measurement"] == "V"
    assert by_id["meter_ABC-123_l2_voltage"]["value_template"] == "{{ value_json.vrms }}"
    assert by_id["meter_ABC-123_l3_reactive_power"]["unit_of_measurement"] == "var"
    assert "unit_of_measurement" not in by_id["meter_ABC-123_l1_power_factor"]
    assert by_id["meter_ABC-123_total_frequency"]["unit_of_measurement"] == "Hz"
    assert by_id["meter_ABC-123_total_energy_import"]["value_template"] == "{{ value_json.net_import_wh }}"


def test_on_readings_only_keeps_the_newest_window():
    out = mqtt_ha.MqttOutput(_settings(), "A1", None)
    r1, r2 = readings(), readings(scale=2.0)
    out.on_readings(r1)
    out.on_readings(r2)
    assert out.readings is r2 and out._fresh


def test_the_outputs_settings_have_defaults_and_clear_rules():
    d = outputs_schema.check({})
    assert d["mqtt"]["enabled"] is False and d["mqtt"]["port"] == 1883 and d["mqtt"]["base_topic"] == "meter"
    assert d["modbus"] == {"enabled": False, "port": 502, "unit_id": 1}
    for section, key, bad, words in (
        ("mqtt", "host", "broker:1883", "the port is its own setting"),
        ("mqtt", "host", "bad host", "host name"),
        ("mqtt", "port", 0, "1 to 65535"),
        ("mqtt", "base_topic", "meter/#", "without + #"),
        ("mqtt", "base_topic", "/meter", "not starting with $ or /"),
        ("mqtt", "base_topic", "a//b", "empty levels"),
        ("mqtt", "interval_s", 0, "1 to 3600"),
        ("mqtt", "password", "x" * 65, "at most 64"),
        ("mqtt", "tls", "yes", "true or false"),
        ("modbus", "unit_id", 248, "1 to 247"),
        ("modbus", "port", "502", "1 to 65535"),
    ):
        with raises(ConfigError) as e:
            outputs_schema.check({section: {key: bad}})
        assert e.value.field == "%s.%s" % (section, key) and words in e.value.rule, (key, str(e.value))
        assert str(bad) not in e.value.rule or len(str(bad)) < 3  # the rejected value is never repeated


def test_tls_needs_a_ca_and_mqtt_on_needs_a_host():
    with raises(ConfigError, match="mqtt.ca_cert"):
        outputs_schema.check({"mqtt": {"enabled": True, "host": "broker.lan", "tls": True}})
    with raises(ConfigError, match="mqtt.host"):
        outputs_schema.check({"mqtt": {"enabled": True}})
    ok = outputs_schema.check({"mqtt": {"enabled": True, "host": "fd00::10", "port": 8883}})
    assert ok["mqtt"]["host"] == "fd00::10"

# outputs_schema — the rules of the local outputs' settings sections, "mqtt" and "modbus", in the
# {key: (default, rule)} form of firmware/configcheck.py's SCHEMA, with the rules of firmware/schema.py.
#
# firmware/configcheck.py merges SCHEMA into its own and calls check_across(); "mqtt" and "modbus"
# are sections of config.json (firmware/config.py SECTIONS). Like schema.py, it is imported only while
# settings are checked. A password is a secret like the WiFi password: rules
# never repeat a rejected value (schema.Rule), and the setup page never shows it again.

from firmware.schema import CaCert, ConfigError, Rule, boolean, check_section, integer

_HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:"


def _host_ok(v):
    """Empty (off), a DNS name (labels of letters, digits and '-'), an IPv4 or an IPv6 address."""
    if not isinstance(v, str):
        return False
    if v == "":
        return True
    if len(v) > 253 or not all(c in _HOST_CHARS for c in v):
        return False
    if ":" in v:
        return v.count(":") >= 2  # an IPv6 address; a "host:port" belongs in two settings
    return all(0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-" for label in v.split("."))


def _topic_ok(v):
    """A base topic: 1-64 characters, no wildcards, no empty levels, no leading '$' (broker topics)."""
    return (isinstance(v, str) and 1 <= len(v) <= 64 and not any(c in v for c in "+#\x00\"\\")
            and v[0] not in "$/" and v[-1] != "/" and "//" not in v and all(" " <= c for c in v))


def _text_ok(limit):
    return lambda v: isinstance(v, str) and len(v) <= limit and "\x00" not in v


BROKER_HOST = Rule("must be empty (MQTT off), a host name, or an IPv4 or IPv6 address (the port is its own "
                   "setting)", _host_ok)
BASE_TOPIC = Rule("must be 1-64 characters without + # \" \\, not starting with $ or /, not ending with /, "
                  "and without empty levels (//)", _topic_ok)
DISCOVERY_PREFIX = Rule("must be empty (no Home Assistant discovery) or a topic like the base topic",
                        lambda v: v == "" or _topic_ok(v))
MQTT_USER = Rule("must be at most 64 characters", _text_ok(64))
MQTT_PASSWORD = Rule("must be at most 64 characters", _text_ok(64))

SCHEMA = {
    "mqtt": {
        "enabled": (False, boolean()),
        "host": ("", BROKER_HOST),
        "port": (1883, integer(1, 65535)),
        "tls": (False, boolean()),
        "ca_cert": ("", CaCert()),
        "user": ("", MQTT_USER),
        "password": ("", MQTT_PASSWORD),
        "base_topic": ("meter", BASE_TOPIC),
        "discovery_prefix": ("homeassistant", DISCOVERY_PREFIX),
        "interval_s": (10, integer(1, 3600)),
    },
    "modbus": {
        "enabled": (False, boolean()),
        "port": (502, integer(1, 65535)),
        "unit_id": (1, integer(1, 247)),
    },
}


def check(doc):
    """Both sections of doc (a dict holding "mqtt" and/or "modbus"), defaults filled in, checked
    across keys: TLS needs a CA (the device trusts exactly that one, as for uploads)."""
    out = {name: check_section(name, spec, doc.get(name, {})) for name, spec in SCHEMA.items()}
    check_across(out)
    return out


def check_across(doc):
    """The rules across keys of the checked sections in doc."""
    m = doc["mqtt"]
    if m["enabled"] and not m["host"]:
        raise ConfigError("mqtt.host", "must name the broker when mqtt.enabled is true")
    if m["tls"] and not m["ca_cert"]:
        raise ConfigError("mqtt.ca_cert", "must hold the broker's CA certificate when mqtt.tls is true")

# configcheck — the rules of config.json: SCHEMA (every key with its default and rule), the checks
# across settings, and the migrations of older files.
#
# Only firmware/config.py imports it, while it checks a document (at start-up, and when the setup
# page saves), and lets it go afterwards: its tables and rules would take heap for good
# (docs/MEMORY.md). What the firmware calls at run time stays in config.py.

from firmware import boards, outputs_schema, profiles
from firmware.config import SECTIONS, VERSION, ConfigError
from firmware.schema import (
    BOARD,
    GPIO,
    GPIO_OR_NONE,
    URL,
    WIFI_PASSPHRASE,
    WIFI_SSID,
    CaCert,
    Calibration,
    bool_list,
    boolean,
    check_section,
    choice,
    copy,
    gpio,
    integer,
    permutation,
)

# The lan pins a setting may name are the board's (its profile's "lan_pins", checked in
# _check_across). "board" (every lan key's default) is the board profile's own value.


SCHEMA = {
    "board": {
        "profile": (boards.DEFAULT, choice(*boards.NAMES)),
    },
    "wifi": {
        "ssid": ("", WIFI_SSID),
        "password": ("", WIFI_PASSPHRASE),
    },
    "lan": {
        "enabled": (False, boolean()),
        "phy": (BOARD, choice("LAN8720", "LAN8710", "IP101", "RTL8201", "DP83848", "KSZ8041", "KSZ8081")),
        "phy_addr": (BOARD, integer(0, 31)),
        "mdc": (BOARD, GPIO),
        "mdio": (BOARD, GPIO),
        "power": (BOARD, GPIO_OR_NONE),
        "ref_clk": (BOARD, GPIO_OR_NONE),
        "ref_clk_mode": (BOARD, choice("in", "out", None)),
    },
    "meter": {
        "model": ("home", choice("home", "public")),
        "wiring": ("auto", choice("auto", "three-phase", "single-phase")),
        "nominal_hz": (0, choice(0, 50, 60)),
        "generation": (False, boolean()),
        "ct_reversed": ([False, False, False], bool_list(3)),
        "ct_phase": ([1, 2, 3], permutation(3)),
        "calibration": ({}, Calibration()),
        "window_ms": (1000, integer(250, 60000)),
        "burst_period_ms": (100, integer(20, 1000)),
        "burst_cycles": (2, integer(1, 10)),
    },
    "upload": {
        "url": ("", URL),
        "ca_cert": ("", CaCert()),
        "live_interval_ms": (1000, integer(500, 60000)),
        "record_interval_s": (60, integer(10, 3600)),
    },
    "ap": {
        "mode": ("auto", choice("auto", "always", "off")),
        "fallback_s": (120, integer(30, 3600)),
        "channel": (6, integer(1, 13)),
    },
    "energy": {
        "save_max_interval_s": (300, integer(60, 3600)),
        "save_max_unsaved_wh": (10, integer(1, 1000)),
        "save_min_interval_s": (10, integer(10, 3600)),
    },
}
SCHEMA.update(outputs_schema.SCHEMA)  # the local outputs: "mqtt" and "modbus" (docs/API.md)


def defaults():
    """The complete default settings document."""
    return validate({})


def section(name, given=None):
    """Section `name` with `given` (some of its keys, or none) over the defaults: SCHEMA is the one
    owner of defaults. The parts themselves take complete sections (the device hands them its
    validated settings), so this is for tools and tests."""
    out = defaults()[name]
    out.update(given or {})
    return out


def changed(before, after):
    """{section: {key: value}} of the settings `after` holds differently from `before` (Configs or
    documents): what a save changed, that the running parts hear of (config.apply)."""
    out = {}
    for name in SECTIONS:
        old, new = before[name], after[name]
        for key in new:
            if key not in old or old[key] != new[key]:
                out.setdefault(name, {})[key] = new[key]
    return out


def validate(doc):
    """The complete, normalised settings document for doc, or ConfigError naming the first bad field.

    doc may leave out sections and keys (they take their defaults); "version" may be absent or current.
    """
    if not isinstance(doc, dict):
        raise ConfigError("config", "must be an object of settings sections")
    for name in sorted(doc):
        if name != "version" and name not in SCHEMA:
            raise ConfigError(name, "unknown section (known: %s)" % ", ".join(SECTIONS))
    if "version" in doc and doc["version"] != VERSION:
        raise ConfigError("version", "must be %d" % VERSION)
    out = {}
    out["version"] = VERSION
    for name in SECTIONS:
        out[name] = check_section(name, SCHEMA[name], doc.get(name, {}))
    _check_across(out)
    return out


def _check_across(doc):
    name = doc["board"]["profile"]
    prof = boards.get(name)
    lan = boards.lan_settings(prof, doc["lan"])
    for key in ("mdc", "mdio", "power"):
        if doc["lan"][key] != BOARD and lan[key] is not None and lan[key] not in prof["lan_pins"]:
            raise ConfigError("lan." + key, "%s (board %s)" % (gpio(list(prof["lan_pins"]), key == "power").rule, name))
    if lan["mdio"] == lan["mdc"]:
        raise ConfigError("lan.mdio", "must differ from lan.mdc")
    if lan["power"] is not None and lan["power"] in (lan["mdc"], lan["mdio"]):
        raise ConfigError("lan.power", "must differ from lan.mdc and lan.mdio")
    problem = _pin_problem(name, prof, lan, doc["lan"])
    if problem is not None:
        raise ConfigError("lan" if "lan." in problem else "board.profile", problem)
    en = doc["energy"]
    if en["save_min_interval_s"] > en["save_max_interval_s"]:
        raise ConfigError("energy.save_min_interval_s", "must not exceed energy.save_max_interval_s")
    meter = doc["meter"]
    if len(prof["voltage"]) < 3 and meter["wiring"] == "three-phase":
        raise ConfigError("meter.wiring", 'must be "auto" or "single-phase" on board %s: it measures L1\'s '
                                          "voltage only (L2 and L3 are derived from it)" % name)
    # A burst blocks: its cycles at 45 Hz plus the wait for a zero crossing must fit in the period,
    # or bursts run back to back, starve the event loop and overflow the timer's schedule queue.
    longest_ms = (meter["burst_cycles"] + 2) * 1000 // 45 + 10
    if meter["burst_period_ms"] < longest_ms:
        raise ConfigError("meter.burst_period_ms", "must be at least %d ms for %d-cycle bursts"
                          % (longest_ms, meter["burst_cycles"]))
    outputs_schema.check_across(doc)
    try:
        profiles.channels(meter["model"], meter["calibration"])
    except (ValueError, TypeError, ZeroDivisionError):
        raise ConfigError("meter.calibration", "does not build a calibrated channel for this model")


def _pin_problem(name, prof, lan, given):
    """firmware/pincheck.py's verdict on the lan pins given (as numbers) on this board. With every pin
    left to the board ("board"), the pin map is the profile's own, which tests/unit/test_boards.py
    checks: the rules are then not even loaded (they would take heap for good)."""
    for key in ("mdc", "mdio", "power", "ref_clk", "ref_clk_mode"):
        if given[key] != BOARD:
            import sys

            import firmware
            from firmware import pincheck

            try:
                return pincheck.check(name, prof, lan)
            finally:
                # Let go of the rules: an import stays in sys.modules and on the package for good,
                # and every device upgraded from a file with lan pins as numbers checks them at start.
                sys.modules.pop("firmware.pincheck", None)
                if hasattr(firmware, "pincheck"):
                    delattr(firmware, "pincheck")
    return None


def merge(base, changes):
    """base (a full document) with changes {section: {key: value}} applied, validated."""
    if not isinstance(changes, dict):
        raise ConfigError("config", "changes must be an object of settings sections")
    doc = {}
    for name in base:  # sections are copied one level deep: only their keys change below
        doc[name] = dict(base[name]) if isinstance(base[name], dict) else base[name]
    for name in sorted(changes):
        if name == "version":
            continue
        if name not in SCHEMA:
            raise ConfigError(name, "unknown section (known: %s)" % ", ".join(SECTIONS))
        if not isinstance(changes[name], dict):
            raise ConfigError(name, "must be an object of settings")
        for key in changes[name]:
            doc.setdefault(name, {})[key] = copy(changes[name][key])
    return validate(doc)


# Migrations: MIGRATIONS[n] turns a version-n document into version n + 1.
def _v0_to_v1(doc):
    """Version 0 (the pre-release layout) was flat: {"wifi_ssid", "wifi_password", "model",
    "upload_url", "ct_reversed"}. Version 1 groups settings into sections."""
    doc = dict(doc)
    doc.pop("version", None)  # an explicit "version": 0 must not overwrite the new version
    out = {}
    out.update({"version": 1, "wifi": {}, "meter": {}, "upload": {}})
    for old, section, key in (("wifi_ssid", "wifi", "ssid"), ("wifi_password", "wifi", "password"),
                              ("model", "meter", "model"), ("ct_reversed", "meter", "ct_reversed"),
                              ("upload_url", "upload", "url")):
        if old in doc:
            out[section][key] = doc.pop(old)
    for key in doc:  # anything else was never a v0 setting: keep it, so validation names it
        out[key] = doc[key]
    return out


MIGRATIONS = {0: _v0_to_v1}


def migrate(doc):
    """(document at VERSION, the version it was stored as). Raises ConfigError if it cannot be."""
    if not isinstance(doc, dict):
        raise ConfigError("config", "must be an object of settings sections")
    version = doc.get("version", 0)
    if type(version) is not int or version < 0:
        raise ConfigError("version", "must be a whole number")
    if version > VERSION:
        raise ConfigError("version", "is %d, from newer firmware (this firmware reads up to %d)"
                          % (version, VERSION))
    start = version
    while version < VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
    return doc, start


def wifi_problem(ssid, password):
    """None when ssid and password follow the WiFi rules, else the one that does not: "ssid" or "password"."""
    for field, rule, value in (("ssid", WIFI_SSID, ssid), ("password", WIFI_PASSPHRASE, password)):
        try:
            rule(field, value)
        except ConfigError:
            return field
    return None

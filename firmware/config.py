# config — the device's settings: one schema-validated, versioned JSON file that survives power cuts.
#
# config.json holds {"version": 1, "board": {...}, "wifi": {...}, "lan": {...}, "meter": {...}, "upload": {...},
# "ap": {...}, "energy": {...}}; SCHEMA (firmware/configcheck.py) lists every key with its default and rule
# (docs/CONFIG.md's table is the same list). A key left out of the file takes its default, so a newer
# firmware can add settings; an unknown or invalid key is rejected with "section.key: rule".
#
# Saving writes config.json atomically (lib/atomicfile), then the same bytes to config.json.bak.
# load() never raises and never writes: a missing, truncated, damaged, invalid or too-new config.json
# falls back to the backup, then to the defaults, sets needs_setup (the setup access point comes up
# unless ap.mode is "off") and records a Diagnostic (code + plain message). Identity and energy counters live in other
# files and are never touched here. Older files are brought up to date by MIGRATIONS at load time.
#
# The rules (configcheck, schema) are imported only while a document is checked and let go after it:
# a check happens at start-up and when the setup page saves, and the rules would otherwise keep
# ~17 KB of a 64-bit heap (~9 KB on the ESP32) for good.

import json

import atomicfile

VERSION = 1
PATH = "config.json"
MAX_BYTES = 16384
SECTIONS = ("board", "wifi", "lan", "meter", "upload", "ap", "energy", "mqtt", "modbus")
SECRETS = (("wifi", "password"),)  # never shown: summary() and repr() blank them


class ConfigError(ValueError):
    """A setting broke its rule. str(e) is "field: rule"; e.field and e.rule hold the parts."""

    def __init__(self, field, rule):
        super().__init__("%s: %s" % (field, rule))
        self.field = field
        self.rule = rule


class Diagnostic:
    """What happened while loading stored data: a stable code (for the setup page) and a plain sentence."""

    def __init__(self, code, message):
        self.code = code
        self.message = message

    def __repr__(self):
        return "%s: %s" % (self.code, self.message)

    def __str__(self):
        return self.__repr__()


_CHECKS = ("firmware.configcheck", "firmware.schema", "firmware.pincheck", "firmware.outputs_schema")


def _checks(name):
    """configcheck's `name`, with the rules imported for it and let go again: what it returns (a
    function keeps its module's globals alive while it runs) is all that stays."""
    import sys

    import firmware
    from firmware import configcheck

    try:
        return getattr(configcheck, name)
    finally:
        for mod in _CHECKS:
            sys.modules.pop(mod, None)
            if hasattr(firmware, mod[9:]):
                delattr(firmware, mod[9:])


def defaults():
    """The complete default settings document."""
    return _checks("defaults")()


def validate(doc):
    """The complete, normalised settings document for doc, or ConfigError naming the first bad field.

    doc may leave out sections and keys (they take their defaults); "version" may be absent or current.
    """
    return _checks("validate")(doc)


def merge(base, changes):
    """base (a full document) with changes {section: {key: value}} applied, validated."""
    return _checks("merge")(base, changes)


def apply(store, parts, changes, reset=False):
    """The one way a changed setting reaches the running device (firmware/app.py, Device.apply):
    changes {section: {key: value}} validated and saved (reset: every setting back to its default
    but the board profile, as ConfigStore.factory_reset), then handed to each part's
    on_settings(changed), which takes what it can live and returns the keys it took ("section.key").
    `changed` holds what the save changed, and what was asked for even where the file held it
    already (a running part may differ from the file: the simulator's meter_overrides). Raises
    ConfigError or OSError having saved and changed nothing. Returns the settings the save changed
    that no part took: saved, and in force after a restart."""
    before = store.config
    cfg = store.factory_reset() if reset else store.update(changes)
    diff = _checks("changed")(before, cfg) if before is not None else {}
    later = ["%s.%s" % (name, key) for name in diff for key in diff[name]]
    for name in changes:
        if name in SECTIONS:
            for key in changes[name]:
                diff.setdefault(name, {})[key] = cfg[name][key]
    taken = []
    for part in parts:
        take = getattr(part, "on_settings", None)
        if take is None:
            continue
        try:
            taken += take(diff) or ()
        except Exception as e:  # saved all the same: in force after a restart, and said
            store.log("config: a running part could not take the change (%s: %s)" % (type(e).__name__, e))
    return sorted(k for k in later if k not in taken)


def migrate(doc):
    """(document at VERSION, the version it was stored as). Raises ConfigError if it cannot be."""
    return _checks("migrate")(doc)


def wifi_problem(ssid, password):
    """None when ssid and password follow the WiFi rules, else "ssid" or "password": the one that does not."""
    return _checks("wifi_problem")(ssid, password)


def __getattr__(name):
    """config.SCHEMA and config.MIGRATIONS, the tables themselves (for tools and tests), and
    config.section(name, given) and config.changed(before, after) (configcheck's: see there), held
    only while they are used (the device itself needs section() never, changed() only in apply())."""
    if name in ("SCHEMA", "MIGRATIONS", "section", "changed"):
        return _checks(name)
    raise AttributeError(name)


def copy(value):
    """A deep copy of JSON-shaped data (dicts, lists, scalars)."""
    if isinstance(value, dict):
        return {k: copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy(v) for v in value]
    return value


def summary(doc):
    """The settings as the setup page may show them: secrets blanked, the certificate as its size."""
    out = {}
    for name in doc:
        out[name] = copy(doc[name])
    for section, key in SECRETS:
        out[section][key + "_set"] = bool(out[section][key])
        out[section][key] = ""
    cert = out["upload"]["ca_cert"]
    out["upload"]["ca_cert"] = ""
    out["upload"]["ca_cert_bytes"] = len(cert) * 3 // 4 - cert[-2:].count("=") if cert else 0
    return out


class Config:
    """Validated settings. config["meter"] is the meter's section; repr() never shows secrets."""

    def __init__(self, doc):
        self._doc = doc

    def __getitem__(self, section):
        return self._doc[section]

    def document(self):
        """A copy of the complete document, secrets included: for saving and merging only."""
        return copy(self._doc)

    def summary(self):
        return summary(self._doc)

    def network_configured(self):
        return self._doc["wifi"]["ssid"] != "" or self._doc["lan"]["enabled"]

    def __repr__(self):
        return "Config(%s)" % json.dumps(self.summary())

    def __str__(self):
        return self.__repr__()


# Diagnostic codes of load()
NEW = "CONFIG_NEW"  # nothing saved yet (first boot, or after a reset that removed the files): defaults
MIGRATED = "CONFIG_MIGRATED"  # stored by an older firmware, converted in memory (the file is unchanged)
RESTORED = "CONFIG_RESTORED"  # config.json unusable: the last good copy (config.json.bak) is in use
RESET = "CONFIG_RESET"  # config.json and its copy both unusable: defaults are in use


class ConfigStore:
    """The settings file on flash. load() raises only MemoryError (the board restarts: the file is not
    at fault); save()/update() raise ConfigError and then write nothing."""

    def __init__(self, path=PATH, log=print):
        self.path = path
        self.backup = path + ".bak"
        self.log = log
        self.config = None
        self.diagnostic = None  # Diagnostic of the last load(), or None when config.json was fine
        self.needs_setup = True  # the setup access point must come up

    def load(self):
        cfg, problem, was = self._read(self.path)
        diag = None
        if cfg is not None:
            if was != VERSION:
                diag = Diagnostic(MIGRATED, "%s is from settings version %d: converted to version %d"
                                  % (self.path, was, VERSION))
        else:
            cfg, b_problem, _ = self._read(self.backup)
            if cfg is not None:
                diag = Diagnostic(RESTORED, "%s %s: using the last good copy" % (self.path, problem))
            elif problem == _MISSING and b_problem == _MISSING:
                diag = Diagnostic(NEW, "no settings saved yet: using defaults")
            else:
                diag = Diagnostic(RESET, "%s %s, and its copy %s: using defaults" % (self.path, problem, b_problem))
            if cfg is None:
                cfg = Config(defaults())
        self.config = cfg
        self.diagnostic = diag
        self.needs_setup = (diag is not None and diag.code in (RESTORED, RESET)) or not cfg.network_configured()
        self.log("config: %s" % (diag if diag is not None else "loaded " + self.path))
        return cfg

    def _read(self, path):
        """(Config or None, why not, stored version). Raises only MemoryError (see load)."""
        try:
            try:
                data = atomicfile.read(path, MAX_BYTES)
            except ValueError:
                return None, "is larger than %d bytes" % MAX_BYTES, None
            if data is None:
                return None, _MISSING, None
            try:
                doc = json.loads(data.decode())
            except ValueError:  # UnicodeError too
                return None, "is not valid JSON (truncated or damaged)", None
            doc, was = migrate(doc)
            return Config(validate(doc)), None, was
        except ConfigError as e:
            return None, "is invalid (%s)" % e, None
        except OSError as e:
            return None, "cannot be read (I/O error %s)" % (e.args[0] if e.args else "?"), None
        except MemoryError:
            # A heap too full to parse the file says nothing about the file: running on defaults
            # would measure with the wrong model and invite the installer to set it up again.
            raise
        except Exception as e:  # the unforeseen: the meter must keep measuring
            return None, "cannot be loaded (%s)" % type(e).__name__, None

    def save(self, doc):
        """Validate doc (a complete or partial document) and store it. Returns the new Config."""
        doc = validate(doc)
        data = json.dumps(doc)
        atomicfile.replace(self.path, data)
        atomicfile.replace(self.backup, data)
        self.config = Config(doc)
        self.diagnostic = None
        self.needs_setup = not self.config.network_configured()
        self.log("config: saved %s" % self.path)
        return self.config

    def update(self, changes):
        """Apply {section: {key: value}} to the current settings and save. ConfigError names a bad field."""
        base = self.config.document() if self.config is not None else defaults()
        return self.save(merge(base, changes))

    def factory_reset(self):
        """Back to defaults: WiFi, LAN, meter, upload, AP and energy-save settings. The board profile
        stays (it says which hardware this is: the devkit's pins on a WT32-ETH01 would read its
        Ethernet clock as the button), and so do identity and energy counters, which are other files."""
        self.log("config: factory reset")
        doc = defaults()
        if self.config is not None:
            doc["board"] = {"profile": self.config["board"]["profile"]}
        return self.save(doc)


_MISSING = "is missing"

# schema — the rules one setting must follow (WiFi, URL, certificate, calibration...), each with the
# plain sentence shown when it is broken.
#
# A Rule is called as rule(field, value): it returns the (normalised) value or raises ConfigError
# naming the field and the rule, e.g. "wifi.ssid: must be 1-32 bytes of UTF-8". Rules never put the
# rejected value into the message: a wrong WiFi password must not end up on the console. Everything
# here behaves the same on MicroPython and CPython (no `re`; bool is checked before int because
# MicroPython's bool is not an int subclass and CPython's is). Like firmware/configcheck.py, it is
# imported only while settings are checked.

import binascii

from firmware import profiles
from firmware.config import ConfigError, Diagnostic, copy  # noqa: F401  (Diagnostic: for its importers)


class Rule:
    """A rule given by a sentence and a predicate."""

    def __init__(self, rule, ok):
        self.rule = rule
        self._ok = ok

    def __call__(self, field, value):
        if not self._ok(value):
            raise ConfigError(field, self.rule)
        return value


def is_int(v):
    return type(v) is int


def is_number(v):
    return type(v) is int or type(v) is float


def integer(lo, hi):
    return Rule("must be an integer from %d to %d" % (lo, hi), lambda v: is_int(v) and lo <= v <= hi)


def number(lo, hi):
    return Rule("must be a number from %s to %s" % (lo, hi), lambda v: is_number(v) and lo <= v <= hi)


def boolean():
    return Rule("must be true or false", lambda v: type(v) is bool)


def choice(*values):
    quoted = ", ".join('"%s"' % v if isinstance(v, str) else ("null" if v is None else str(v)) for v in values)
    return Rule("must be one of %s" % quoted, lambda v: type(v) is not bool and v in values)


def bool_list(n):
    return Rule("must be a list of %d true/false values (L1, L2, L3)" % n,
                lambda v: type(v) is list and len(v) == n and all(type(x) is bool for x in v))


def permutation(n):
    want = list(range(1, n + 1))
    return Rule("must list each of %s exactly once" % ", ".join(str(x) for x in want),
                lambda v: type(v) is list and all(is_int(x) for x in v) and sorted(v) == want)


def gpio(allowed, nullable=False):
    text = "must be one of the free output GPIOs %s" % _ranges(allowed)
    return Rule(text + (", or null for none" if nullable else ""),
                lambda v: (nullable and v is None) or (is_int(v) and v in allowed))


GPIO = Rule("must be a GPIO number 0-39", lambda v: is_int(v) and 0 <= v <= 39)
GPIO_OR_NONE = Rule("must be a GPIO number 0-39, or null for none", lambda v: v is None or (is_int(v) and 0 <= v <= 39))
BOARD = "board"  # a default meaning "the board profile's own value" (firmware/boards.py); see check_section


def _ranges(nums):
    out, k = [], 0
    while k < len(nums):
        j = k
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        if j - k >= 2:
            out.append("%d-%d" % (nums[k], nums[j]))
        else:
            j = k
            out.append(str(nums[k]))
        k = j + 1
    return ", ".join(out)


def _utf8_len(s):
    try:
        return len(s.encode())
    except Exception:  # a lone surrogate from JSON "\ud800" is not UTF-8
        return -1


def _ssid_ok(v):
    return isinstance(v, str) and (v == "" or (1 <= _utf8_len(v) <= 32 and "\x00" not in v))


def _passphrase_ok(v):
    if not isinstance(v, str):
        return False
    if v == "":
        return True
    if len(v) == 64:
        return all(c in "0123456789abcdefABCDEF" for c in v)
    return 8 <= len(v) <= 63 and all(" " <= c <= "~" for c in v)


WIFI_SSID = Rule("must be 1-32 bytes of UTF-8 without NUL characters (empty: no WiFi)", _ssid_ok)
WIFI_PASSPHRASE = Rule("must be 8-63 printable ASCII characters, exactly 64 hex digits, "
                       "or empty for an open network", _passphrase_ok)


def _url_ok(v):
    if not isinstance(v, str):
        return False
    if v == "":
        return True
    if len(v) > 256 or any(c <= " " or c == "\x7f" for c in v):
        return False
    for scheme in ("https://", "http://"):
        if v.startswith(scheme):
            authority = v[len(scheme):].split("/", 1)[0]
            if "@" in authority or authority.startswith(":"):
                return False
            host, _, port = authority.partition(":")
            if not host:
                return False
            if port:
                return port.isdigit() and 1 <= int(port) <= 65535
            return True
    return False


URL = Rule("must be empty or an http:// or https:// URL with a host, no spaces and no user:password@, "
           "at most 256 characters", _url_ok)

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MAX_CERT_BYTES = 4096


class CaCert(Rule):
    """One X.509 certificate, stored as base64 DER (a pasted PEM certificate is converted)."""

    def __init__(self):
        Rule.__init__(self, "must be empty, one PEM certificate, or one DER certificate in base64 "
                            "(at most %d bytes)" % MAX_CERT_BYTES, None)

    def __call__(self, field, value):
        if not isinstance(value, str):
            raise ConfigError(field, self.rule)
        text = value.strip()
        if text.startswith("-----BEGIN CERTIFICATE-----") and text.endswith("-----END CERTIFICATE-----"):
            text = text[27:-25]
        text = "".join(text.split())
        if text == "":
            return ""
        if len(text) % 4 or not all(c in _B64 for c in text.rstrip("=")) or len(text.rstrip("=")) < len(text) - 2:
            raise ConfigError(field, self.rule)
        if der_length(binascii.a2b_base64(text)) is None:
            raise ConfigError(field, self.rule)
        return text


def der_length(der):
    """len(der) if der is exactly one DER SEQUENCE (a certificate's outer shape) of a sane size, else None."""
    if len(der) < 4 or len(der) > MAX_CERT_BYTES or der[0] != 0x30:
        return None
    n = der[1]
    if n < 0x80:
        body, head = n, 2
    elif 0x81 <= n <= 0x82:
        k = n - 0x80
        body = int.from_bytes(der[2:2 + k], "big")
        head = 2 + k
    else:
        return None
    return len(der) if head + body == len(der) else None


CAL_RULES = {
    "divider_ratio": number(1, 10000),
    "ct_ratio": number(1, 100000),
    "burden_ohm": number(0.1, 10000),
    "adc_gain": number(0.5, 2.0),
    "adc_offset": integer(0, 4095),
    "phase_lead_deg": number(-20, 20),
}


class Calibration(Rule):
    """meter.calibration: {} or {"voltage": [3 objects], "current": [3 objects]} of per-channel overrides."""

    def __init__(self):
        Rule.__init__(self, 'must be {} or {"voltage": [3 objects], "current": [3 objects]}, one object per '
                            "phase holding any of the channel keys", None)

    def __call__(self, field, value):
        if not isinstance(value, dict):
            raise ConfigError(field, self.rule)
        for kind in sorted(value):
            if kind not in profiles.CHANNEL_KEYS:
                raise ConfigError("%s.%s" % (field, kind), 'unknown channel kind (known: "current", "voltage")')
            chans = value[kind]
            if type(chans) is not list or len(chans) != 3:
                raise ConfigError("%s.%s" % (field, kind), "must be a list of 3 objects (L1, L2, L3)")
            for k, chan in enumerate(chans):
                where = "%s.%s[%d]" % (field, kind, k)
                if not isinstance(chan, dict):
                    raise ConfigError(where, "must be an object of channel keys")
                for key in sorted(chan):
                    if key not in profiles.CHANNEL_KEYS[kind]:
                        raise ConfigError("%s.%s" % (where, key), "unknown %s channel key (known: %s)"
                                          % (kind, ", ".join(profiles.CHANNEL_KEYS[kind])))
                    CAL_RULES[key]("%s.%s" % (where, key), chan[key])
        return value


def check_section(name, spec, given):
    """Validate one section (a dict) against spec {key: (default, rule)}; fill in missing keys.
    A key whose default is BOARD also takes the value BOARD: the board profile's own.

    Unknown keys are rejected, in sorted order so both runtimes name the same one first.
    """
    if not isinstance(given, dict):
        raise ConfigError(name, "must be an object of settings")
    for key in sorted(given):
        if key not in spec:
            raise ConfigError("%s.%s" % (name, key), "unknown setting (known: %s)" % ", ".join(sorted(spec)))
    out = {}
    for key in spec:
        default, rule = spec[key]
        if key not in given or (default == BOARD and given[key] == BOARD):
            out[key] = copy(default if key not in given else given[key])
            continue
        try:
            out[key] = rule("%s.%s" % (name, key), copy(given[key]))
        except ConfigError as e:
            if default != BOARD:
                raise
            raise ConfigError(e.field, '%s, or "board" for the board profile\'s own' % e.rule)
    return out

# identity — who this device is: serial number, access-point password, cloud PIN and upload key.
#
# identity.json is written once by `python -m tools.provision` and copied by `make deploy
# IDENTITY=...`; the firmware only reads it. Fields:
#   serial       1-13 of A-Z a-z 0-9 -, so the AP name "Measurement Device_<serial>" fits 32 bytes
#   ap_password  the setup access point's WPA2 password, printed on the label: 16 characters from
#                AP_ALPHABET (no 0/O/o, 1/l/I look-alikes; lower case, so no shift key on a phone)
#   pin          8 digits, printed on the label: the installer pairs the device in the cloud with
#                serial + PIN
#   upload_key   64 hex digits: the key the device signs its uploads with (never printed, never sent)
#   check        first 16 hex digits of SHA-256 over the fields above: a damaged file is detected
#
# Derivation (defined once here; used by tools.provision and the cloud, never run on the device):
#   pin         = 8 decimal digits of uint64_be(HMAC(fleet_key, "open-meter/pin/v1" 0x00 serial)[:8]) % 10**8
#   ap_password = the first 80 bits of HMAC(fleet_key, "open-meter/ap/v1" 0x00 serial), 5 bits a
#                 character, as AP_ALPHABET symbols
#   upload_key  = HMAC-SHA256(fleet_key, "open-meter/upload/v1" 0x00 serial 0x00 pin)
# fleet_key is a 32-byte secret held by the manufacturer and the cloud, never by a device. So the
# cloud needs no per-device database: when the installer pairs a device with serial + PIN it checks
# the PIN and derives the same upload_key, and a lost identity file can be re-made from the serial.
# Each upload is signed: sign(message) = hex(HMAC-SHA256(upload_key, message)); what the message
# covers is fixed by the upload protocol (docs/PROTOCOL.md). The label alone (serial, PIN, AP
# password) does not give the upload key away.
#
# A device without a valid identity still measures, but refuses to upload: load() says why on the
# console and IdentityStatus.upload_refusal() gives the same sentence to the setup page (where the page
# can be reached: without an identity there is no password for the access point, so it stays down).

import hashlib
import json

from firmware.config import Diagnostic

PATH = "identity.json"
FORMAT = "open-meter-identity"
VERSION = 1
SSID_PREFIX = "Measurement Device_"
SERIAL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"
SERIAL_MAX = 32 - len(SSID_PREFIX)
AP_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyz"  # 32 symbols: 5 bits each, no 0 o 1 l (or O I)
AP_PASSWORD_LEN = 16  # 80 bits
AP_PASSWORD_MIN = 12
PIN_DIGITS = 8
UPLOAD_CONTEXT = b"open-meter/upload/v1"
PIN_CONTEXT = b"open-meter/pin/v1"
AP_CONTEXT = b"open-meter/ap/v1"
MAX_BYTES = 1024

MISSING = "IDENTITY_MISSING"
DAMAGED = "IDENTITY_DAMAGED"


def check_serial(serial):
    if not (isinstance(serial, str) and 1 <= len(serial) <= SERIAL_MAX and all(c in SERIAL_CHARS for c in serial)):
        raise ValueError("serial: must be 1-%d characters A-Z, a-z, 0-9 or -" % SERIAL_MAX)
    return serial


def _check_fields(serial, ap_password, pin, upload_key_hex):
    check_serial(serial)
    if not (isinstance(ap_password, str) and AP_PASSWORD_MIN <= len(ap_password) <= 63
            and all(c in AP_ALPHABET for c in ap_password)):
        raise ValueError("ap_password: must be %d-63 characters from %s" % (AP_PASSWORD_MIN, AP_ALPHABET))
    if not (isinstance(pin, str) and len(pin) == PIN_DIGITS and all(c in "0123456789" for c in pin)):
        raise ValueError("pin: must be %d digits" % PIN_DIGITS)
    if not (isinstance(upload_key_hex, str) and len(upload_key_hex) == 64
            and all(c in "0123456789abcdef" for c in upload_key_hex)):
        raise ValueError("upload_key: must be 64 lowercase hex digits")


def _hex(data):
    return "".join("%02x" % b for b in data)


def checksum(serial, ap_password, pin, upload_key_hex):
    text = "\n".join((FORMAT, serial, ap_password, pin, upload_key_hex))
    return _hex(hashlib.sha256(text.encode()).digest()[:8])


def derive_upload_key(fleet_key, serial, pin):
    """The device's upload key (32 bytes) from the fleet key, its serial and its PIN."""
    from hmacsha256 import hmac_sha256

    return hmac_sha256(fleet_key, UPLOAD_CONTEXT + b"\x00" + serial.encode() + b"\x00" + pin.encode())


def derive(fleet_key, serial):
    """The complete Identity of the device with this serial under this fleet key (see the header)."""
    from hmacsha256 import hmac_sha256

    check_serial(serial)
    pin_mac = hmac_sha256(fleet_key, PIN_CONTEXT + b"\x00" + serial.encode())
    pin = "%08d" % (int.from_bytes(pin_mac[:8], "big") % 10 ** PIN_DIGITS)
    bits = int.from_bytes(hmac_sha256(fleet_key, AP_CONTEXT + b"\x00" + serial.encode())[:10], "big")
    ap_password = "".join(AP_ALPHABET[(bits >> (5 * (AP_PASSWORD_LEN - 1 - i))) & 31] for i in range(AP_PASSWORD_LEN))
    return Identity(serial, ap_password, pin, derive_upload_key(fleet_key, serial, pin))


class Identity:
    """The device's identity. repr() and str() show the serial only."""

    def __init__(self, serial, ap_password, pin, upload_key):
        _check_fields(serial, ap_password, pin, _hex(upload_key))
        self.serial = serial
        self.ap_password = ap_password
        self.pin = pin
        self.upload_key = upload_key  # bytes

    def ap_ssid(self):
        return SSID_PREFIX + self.serial

    def sign(self, message):
        """hex(HMAC-SHA256(upload_key, message)) for an upload (message: bytes or a list of pieces)."""
        from hmacsha256 import hexdigest

        return hexdigest(self.upload_key, message)

    def to_json(self):
        """The identity file's text (secrets included: only tools.provision writes it)."""
        key = _hex(self.upload_key)
        return json.dumps({"format": FORMAT, "version": VERSION, "serial": self.serial,
                           "ap_password": self.ap_password, "pin": self.pin, "upload_key": key,
                           "check": checksum(self.serial, self.ap_password, self.pin, key)})

    def __repr__(self):
        return "Identity(serial=%s, secrets hidden)" % self.serial

    def __str__(self):
        return self.__repr__()


def parse(text):
    """Identity from an identity file's text; ValueError names the field that is wrong."""
    try:
        doc = json.loads(text)
    except Exception:
        raise ValueError("not valid JSON (truncated or damaged)")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError('format: must be "%s"' % FORMAT)
    if doc.get("version") != VERSION:
        raise ValueError("version: must be %d" % VERSION)
    fields = [doc.get(k) for k in ("serial", "ap_password", "pin", "upload_key")]
    _check_fields(*fields)
    if doc.get("check") != checksum(*fields):
        raise ValueError("check: does not match the other fields (the file is damaged)")
    key = str(fields[3])
    return Identity(fields[0], fields[1], fields[2], bytes(int(key[i:i + 2], 16) for i in range(0, 64, 2)))


class IdentityStatus:
    """The outcome of load(): the identity, or None and why (a Diagnostic)."""

    def __init__(self, identity, diagnostic=None):
        self.identity = identity
        self.diagnostic = diagnostic

    def serial(self):
        return self.identity.serial if self.identity is not None else None

    def upload_refusal(self):
        """None if uploads may go ahead; otherwise the sentence for the console and the setup page."""
        d = self.diagnostic
        return None if self.identity is not None or d is None else d.message


def load(path=PATH, log=print):
    """Read identity.json. A missing or damaged file gives an IdentityStatus without identity; only
    MemoryError is raised (the board restarts: the file is not at fault)."""
    try:
        f = open(path, "rb")
    except OSError:
        status = IdentityStatus(None, Diagnostic(
            MISSING, "no device identity (%s is missing): uploads are off until the device is provisioned "
                     "(python -m tools.provision, then make deploy IDENTITY=...)" % path))
    else:
        try:
            try:
                text = f.read(MAX_BYTES + 1)
            finally:
                f.close()
            if len(text) > MAX_BYTES:
                raise ValueError("larger than %d bytes" % MAX_BYTES)
            status = IdentityStatus(parse(text.decode()))
        except MemoryError:
            raise  # the heap, not the file: "damaged" would send an installer to re-provision it
        except Exception as e:  # ValueError, UnicodeError, OSError: never stop the meter
            why = str(e) if isinstance(e, ValueError) and not isinstance(e, UnicodeError) else type(e).__name__
            status = IdentityStatus(None, Diagnostic(
                DAMAGED, "device identity is damaged (%s: %s): uploads are off until it is deployed again"
                         % (path, why)))
    refusal = status.upload_refusal()
    log("identity: %s" % (refusal if refusal is not None else "serial %s" % status.serial()))
    return status

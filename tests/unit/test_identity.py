# Device identity: label-friendly secrets, a detectable damaged file, uploads refused without it.
from hmacsha256 import hexdigest, hmac_sha256

from firmware import identity
from firmware.identity import Identity
from support import raises, tmpdir

FLEET_KEY = bytes(range(32))


def make(serial="MD7K3Q9XPA", ap_password="k7pq2mzx9abcdrst", pin="40718265"):
    return Identity(serial, ap_password, pin, identity.derive_upload_key(FLEET_KEY, serial, pin))


def test_hmac_sha256_matches_rfc_4231():
    # RFC 4231 test cases 2 and 6 (key longer than the block).
    assert hexdigest(b"Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert hexdigest(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First") == (
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    # A message given in pieces (an upload body is sent that way) is signed as if joined.
    assert hexdigest(b"Jefe", [b"what do ya ", b"", b"want for nothing?"]) == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_upload_key_is_derived_from_fleet_key_serial_and_pin():
    key = identity.derive_upload_key(FLEET_KEY, "MD7K3Q9XPA", "40718265")
    assert key == hmac_sha256(FLEET_KEY, b"open-meter/upload/v1\x00MD7K3Q9XPA\x0040718265")
    assert len(key) == 32
    assert key != identity.derive_upload_key(FLEET_KEY, "MD7K3Q9XPA", "40718266")  # PIN matters
    assert key != identity.derive_upload_key(FLEET_KEY, "MD7K3Q9XPB", "40718265")  # serial matters
    assert key != identity.derive_upload_key(bytes(32), "MD7K3Q9XPA", "40718265")  # fleet key matters
    ident = make()
    assert ident.sign(b"body") == hexdigest(key, b"body")


def test_ap_password_alphabet_has_no_look_alikes():
    for c in "0Oo1lI":
        assert c not in identity.AP_ALPHABET
    assert len(set(identity.AP_ALPHABET)) == len(identity.AP_ALPHABET) == 32
    assert identity.AP_PASSWORD_LEN >= identity.AP_PASSWORD_MIN >= 12
    with raises(ValueError, "ap_password"):
        make(ap_password="k7pq2mzx9abO")  # an O where a 0 might be read
    with raises(ValueError, "ap_password"):
        make(ap_password="k7pq2mzx9ab")  # 11 characters


def test_ssid_fits_wpa2_and_serial_rules():
    ident = make(serial="A" * identity.SERIAL_MAX)
    assert ident.ap_ssid() == "Measurement Device_" + "A" * identity.SERIAL_MAX
    assert len(ident.ap_ssid().encode()) == 32
    for bad in ("", "A" * (identity.SERIAL_MAX + 1), "MD 1", "MD_1", "MDé"):
        with raises(ValueError, "serial: must be 1-13 characters"):
            make(serial=bad)
    with raises(ValueError, "pin: must be 8 digits"):
        make(pin="1234567a")


def test_identity_file_round_trip_and_load():
    d = tmpdir()
    ident = make()
    with open(d + "/identity.json", "w") as f:
        f.write(ident.to_json())
    lines = []
    status = identity.load(d + "/identity.json", log=lines.append)
    got = status.identity
    assert (got.serial, got.ap_password, got.pin, got.upload_key) == (
        ident.serial, ident.ap_password, ident.pin, ident.upload_key)
    assert status.upload_refusal() is None and status.serial() == "MD7K3Q9XPA"
    assert lines == ["identity: serial MD7K3Q9XPA"]


def test_without_identity_the_device_refuses_to_upload_and_says_why():
    d = tmpdir()
    lines = []
    status = identity.load(d + "/identity.json", log=lines.append)
    assert status.identity is None and status.diagnostic.code == identity.MISSING
    why = status.upload_refusal()
    assert "uploads are off" in why and "tools.provision" in why
    assert lines == ["identity: " + why]  # the console says the same as the setup page will


def test_a_damaged_identity_file_is_detected_at_every_truncation_and_edit():
    d = tmpdir()
    text = make().to_json()
    edits = [text[:k] for k in range(len(text))]
    edits.append(text.replace('"pin": "40718265"', '"pin": "40718264"'))  # consistent-looking but changed
    edits.append(text.replace("open-meter-identity", "other-format"))
    edits.append("\xff" + text)
    for edited in edits:
        with open(d + "/identity.json", "w") as f:
            f.write(edited)
        status = identity.load(d + "/identity.json", log=lambda line: None)
        assert status.identity is None, edited
        assert status.diagnostic.code == identity.DAMAGED
        assert "uploads are off" in status.upload_refusal()
    with open(d + "/identity.json", "w") as f:
        f.write(text.replace('"pin": "40718265"', '"pin": "40718264"'))
    assert "check: does not match" in identity.load(d + "/identity.json", log=lambda line: None).upload_refusal()


def test_derived_identities_are_repeatable_label_friendly_and_distinct():
    seen_pw, seen_pin = set(), set()
    for k in range(40):
        serial = "MD%08d" % (k * 7919)
        ident = identity.derive(FLEET_KEY, serial)
        assert identity.derive(FLEET_KEY, serial).ap_password == ident.ap_password  # same serial, same label
        assert len(ident.ap_password) == identity.AP_PASSWORD_LEN
        assert all(c in identity.AP_ALPHABET for c in ident.ap_password)
        assert len(ident.pin) == 8 and ident.pin.isdigit()
        assert ident.upload_key == identity.derive_upload_key(FLEET_KEY, serial, ident.pin)
        seen_pw.add(ident.ap_password)
        seen_pin.add(ident.pin)
    assert len(seen_pw) == 40 and len(seen_pin) == 40
    other = identity.derive(bytes(32), "MD00000000")
    assert other.ap_password != identity.derive(FLEET_KEY, "MD00000000").ap_password


def test_a_full_heap_is_not_taken_for_a_damaged_identity():
    d = tmpdir()
    with open(d + "/identity.json", "w") as f:
        f.write(make().to_json())

    def heap_full(text):
        raise MemoryError("memory allocation failed")

    real, identity.parse = identity.parse, heap_full
    try:
        with raises(MemoryError):
            identity.load(d + "/identity.json", log=lambda m: None)  # not "damaged: deploy it again"
    finally:
        identity.parse = real
    assert identity.load(d + "/identity.json", log=lambda m: None).serial() == "MD7K3Q9XPA"

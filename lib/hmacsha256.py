# hmacsha256 — HMAC-SHA256 (RFC 2104) from hashlib.sha256, for ports that have no `hmac` module.

import hashlib

_BLOCK = 64


def hmac_sha256(key, msg):
    """The 32-byte HMAC-SHA256 of msg under key (bytes); msg is bytes, or a list of bytes pieces
    signed as if joined (a large message need not be copied into one block)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    for piece in msg if isinstance(msg, list) else (msg,):
        inner.update(piece)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def hexdigest(key, msg):
    """hmac_sha256 as 64 lowercase hex digits."""
    return "".join("%02x" % b for b in hmac_sha256(key, msg))

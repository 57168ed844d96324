# mqtt — a small MQTT 3.1.1 client that publishes over asyncio streams: QoS 0, retained messages,
# a last will, keepalive pings. No subscriptions (nothing the device needs to hear), so the only
# packets that arrive after CONNACK are PINGRESPs.
#
# The caller opens the connection (plain TCP or TLS: asyncio.open_connection) and hands the streams
# to connect(); every wait here has a deadline, so a broker that stops answering raises OSError
# (errno ETIMEDOUT) instead of hanging its task. Packet layouts: OASIS MQTT Version 3.1.1, section 3.

import asyncio
import struct

CONNECT, CONNACK, PUBLISH, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 12, 13, 14
ETIMEDOUT = 110  # errno.ETIMEDOUT on Linux and in ESP-IDF's lwIP

REFUSED = {  # CONNACK return codes (3.2.2.3), in the words a person acts on
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker refused the client id",
    3: "the broker is unavailable just now",
    4: "the broker refused the user name or password",
    5: "the broker says this client is not authorised",
}


class MqttError(OSError):
    """The broker refused (CONNACK return code) or broke the protocol."""


def _utf8(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack(">H", len(b)) + b


def remaining_length(n):
    """MQTT's variable-length encoding of a packet's remaining length (1-4 bytes)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def connect_packet(client_id, user="", password="", keepalive_s=60, will=None):
    """CONNECT with a clean session; will = (topic, payload, retain) or None."""
    flags = 0x02
    payload = _utf8(client_id)
    if will:
        flags |= 0x04 | (0x20 if will[2] else 0)
        payload += _utf8(will[0]) + _utf8(will[1])
    if user:
        flags |= 0x80
        payload += _utf8(user)
        if password:
            flags |= 0x40
            payload += _utf8(password)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack(">H", keepalive_s) + payload
    return bytes([CONNECT << 4]) + remaining_length(len(body)) + body


def publish_header(topic, payload_len, retain=False):
    """Everything of a QoS 0 PUBLISH but its payload."""
    t = topic.encode()
    return (bytes([PUBLISH << 4 | (1 if retain else 0)]) + remaining_length(2 + len(t) + payload_len)
            + struct.pack(">H", len(t)) + t)


class Client:
    def __init__(self, client_id, user="", password="", keepalive_s=60, will=None, timeout_ms=10_000):
        self.client_id = client_id
        self.user = user
        self.password = password
        self.keepalive_s = keepalive_s
        self.will = will
        self.timeout_s = timeout_ms / 1000
        self.reader = self.writer = None

    async def connect(self, reader, writer):
        """Send CONNECT on open streams and wait for CONNACK; raises MqttError when refused."""
        self.reader, self.writer = reader, writer
        await self._send(connect_packet(self.client_id, self.user, self.password, self.keepalive_s, self.will))
        got = await self.read_packet(self.timeout_s)
        if got is None:
            raise OSError(ETIMEDOUT)
        kind, body = got
        if kind != CONNACK or len(body) != 2:
            raise MqttError("the broker did not answer CONNECT with CONNACK")
        if body[1]:
            raise MqttError(REFUSED.get(body[1], "the broker refused the connection (code %d)" % body[1]))

    async def publish(self, topic, payload, retain=False):
        if isinstance(payload, str):
            payload = payload.encode()
        # One write per message: with Nagle's algorithm on (lwIP on the ESP32 has no TCP_NODELAY
        # option), a second small write waits for the broker's delayed ACK.
        await self._send(publish_header(topic, len(payload), retain) + payload)

    async def ping(self):
        await self._send(b"\xc0\x00")

    async def disconnect(self):
        """A clean DISCONNECT (the broker then drops the will), then close."""
        try:
            await self._send(b"\xe0\x00")
        except OSError:
            pass
        await self.close()

    async def close(self):
        w, self.reader, self.writer = self.writer, None, None
        if w is not None:
            try:
                w.close()
                await w.wait_closed()
            except OSError:
                pass

    async def read_packet(self, timeout_s):
        """(packet type, body) of the next packet; None when none comes in time; EOFError when the
        broker closed the connection."""
        try:
            return await asyncio.wait_for(self._read_packet(), timeout_s)
        except asyncio.TimeoutError:
            return None

    async def _read_packet(self):
        r = self.reader
        if r is None:
            raise EOFError
        head = await r.readexactly(1)
        n = shift = 0
        while True:
            b = (await r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 21:
                raise MqttError("a packet longer than MQTT allows")
        if n > 1024:  # we subscribe to nothing: only small acknowledgements come
            raise MqttError("an unexpected %d-byte packet from the broker" % n)
        body = await r.readexactly(n) if n else b""
        return head[0] >> 4, body

    async def _send(self, data):
        w = self.writer
        if w is None:
            raise EOFError
        w.write(data)
        try:
            await asyncio.wait_for(w.drain(), self.timeout_s)
        except asyncio.TimeoutError:
            raise OSError(ETIMEDOUT)

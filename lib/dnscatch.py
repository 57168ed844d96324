# dnscatch — a DNS catch-all for a captive portal: every A query is answered with one address.
#
# answer(query, ip4) builds the reply to one UDP datagram (or None to drop it): it never raises on
# hostile input, answers A (and ANY) questions with ip4 and a short TTL, other types with an empty
# NOERROR answer, and drops replies, multi-question packets, compressed or malformed names.
# DnsCatch(ip, port).run() serves it on UDP over asyncio (the unix port and the ESP32 both).

import asyncio
import select
import socket

MAX_PACKET = 512  # classic DNS over UDP
TTL_S = 10  # short: once the device is set up the phone should ask the real resolver again


def _question_end(q):
    """Index just past the single question's QTYPE/QCLASS, or -1 if the name is malformed."""
    i = 12
    n = len(q)
    total = 0
    while True:
        if i >= n:
            return -1
        ln = q[i]
        if ln == 0:
            i += 1
            break
        if ln > 63:  # compression pointers have no place in a question; bigger labels are invalid
            return -1
        total += ln + 1
        if total > 255:
            return -1
        i += ln + 1
    if i + 4 > n:
        return -1
    return i + 4


def answer(query, ip4):
    """The reply datagram for query (bytes) with every A record pointing at ip4 ("a.b.c.d"), or None."""
    try:
        if not isinstance(query, (bytes, bytearray)) or not 17 <= len(query) <= MAX_PACKET:
            return None
        if query[2] & 0x80:  # a response, not a query: never answer (no loops)
            return None
        if query[2] & 0x78:  # opcode other than a standard query
            return None
        if query[4] != 0 or query[5] != 1:  # exactly one question
            return None
        end = _question_end(query)
        if end < 0:
            return None
        qtype = (query[end - 4] << 8) | query[end - 3]
        qclass = (query[end - 2] << 8) | query[end - 1]
        want_a = qtype in (1, 255) and qclass in (1, 255)
        parts = [int(x) for x in ip4.split(".")]
        head = bytearray(query[:12])
        head[2] = 0x80 | (query[2] & 0x01) | 0x04  # QR, authoritative, RD copied
        head[3] = 0x80  # RA, NOERROR
        head[6], head[7] = 0, 1 if want_a else 0  # ANCOUNT
        head[8] = head[9] = head[10] = head[11] = 0  # no authority or additional records
        out = bytes(head) + bytes(query[12:end])
        if want_a:
            out += bytes([0xC0, 0x0C, 0, 1, 0, 1, 0, 0, TTL_S >> 8, TTL_S & 255, 0, 4]) + bytes(parts)
        return out
    except Exception:  # hostile input must never stop the server
        return None


class DnsCatch:
    """Answers every DNS query on (host, port) with ip4. run() is an asyncio task; close() stops it."""

    def __init__(self, ip4, host="0.0.0.0", port=53, poll_ms=20):
        self.ip4 = ip4
        self.poll_ms = poll_ms
        self.answered = 0
        self.dropped = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(socket.getaddrinfo(host, port)[0][-1])
        self.sock.setblocking(False)
        # recvfrom() takes a fresh MAX_PACKET + 1 buffer each call, a datagram waiting or not (MicroPython
        # has no recvfrom_into): so it is called only once poll says one is waiting, and an idle poll,
        # every poll_ms, allocates nothing.
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)
        # MicroPython's ipoll reuses its one tuple (no allocation); CPython's poll has only poll().
        self._ready = getattr(self._poll, "ipoll", self._poll.poll)

    def _waiting(self):
        for _ in self._ready(0):
            return True
        return False

    def serve_pending(self, budget=16):
        """Answer up to budget waiting datagrams; returns how many were read."""
        n = 0
        while n < budget and self._waiting():
            try:
                data, addr = self.sock.recvfrom(MAX_PACKET + 1)
            except OSError:  # EAGAIN: nothing waiting after all
                break
            except MemoryError:  # a full heap: the datagram waits, and the next poll tries again
                self.dropped += 1
                break
            n += 1
            reply = answer(data, self.ip4)
            if reply is None:
                self.dropped += 1
                continue
            try:
                self.sock.sendto(reply, addr)
                self.answered += 1
            except OSError:
                self.dropped += 1
        return n

    async def run(self):
        try:
            while True:
                if not self.serve_pending():
                    await asyncio.sleep_ms(self.poll_ms)
                else:
                    await asyncio.sleep_ms(0)
        finally:
            self.close()

    def close(self):
        try:
            self._poll.unregister(self.sock)
        except (OSError, ValueError, KeyError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass

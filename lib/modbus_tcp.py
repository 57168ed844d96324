# modbus_tcp — a small Modbus TCP server (read functions only) over asyncio streams.
#
# The application owns the register map: it passes read(function, start, count, out, at), which
# writes count registers (2 bytes each, big-endian) into out[at:] and returns 0, or returns a Modbus
# exception code (ILLEGAL_ADDRESS, BUSY, ...). This module owns the framing (Modbus Application
# Protocol Specification V1.1b3 and Modbus Messaging on TCP/IP Implementation Guide V1.0b):
#
#   MBAP header: transaction id (2) | protocol id (2, always 0) | length (2: unit id + PDU) | unit id (1)
#   request PDU for 03/04: function (1) | start address (2) | quantity of registers (2, 1..125)
#
# Bounded by construction: at most max_clients connections (more are closed at once), one request
# and one response buffer per connection (a frame is at most 260 bytes), one response in flight
# (a client that does not read its answers is closed after timeout_ms), and an idle connection is
# closed after idle_ms. A frame that cannot be Modbus TCP (protocol id not 0, length field out of
# range) closes the connection, since the stream can no longer be split into frames; a well-framed
# request the server cannot serve gets an exception response. Nothing a client sends raises here.

import asyncio
import struct

ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
BUSY = 6  # "server device busy": nothing to answer with yet
GATEWAY_NO_RESPONSE = 0x0B  # a request for another unit id: no such device behind this "gateway"

FRAME_MAX = 260  # MBAP (7) + PDU (at most 253)
MAX_REGISTERS = 125  # per read request (the spec's limit for 03 and 04)
READ_FUNCTIONS = (3, 4)  # read holding registers, read input registers
BAD_FRAME_N, BAD_FRAME = -1, "a frame that is not Modbus TCP (protocol id or length field)"
SILENT_N, SILENT = -2, "silent for too long"


def answer(req, n, resp, unit_id, read):
    """The response to one complete frame req[:n] (its MBAP length field says n - 6), written into
    resp; its length. Exception responses for what a reader got wrong; never raises for bad input."""
    resp[0] = req[0]  # transaction id, echoed
    resp[1] = req[1]
    resp[2] = 0  # protocol id
    resp[3] = 0
    resp[6] = req[6]  # unit id, echoed
    func = req[7] if n > 7 else 0
    if req[6] != unit_id:
        return _exception(resp, func, GATEWAY_NO_RESPONSE)
    if func not in READ_FUNCTIONS:
        return _exception(resp, func, ILLEGAL_FUNCTION)
    if n != 12:  # 03/04 carry exactly start and quantity
        return _exception(resp, func, ILLEGAL_VALUE)
    start = (req[8] << 8) | req[9]
    count = (req[10] << 8) | req[11]
    if not 1 <= count <= MAX_REGISTERS:
        return _exception(resp, func, ILLEGAL_VALUE)
    if start + count > 0x10000:
        return _exception(resp, func, ILLEGAL_ADDRESS)
    try:
        code = read(func, start, count, resp, 9)
    except Exception:  # a bug in the map must not take the server down: the reader sees "busy"
        code = BUSY
    if code:
        return _exception(resp, func, code)
    resp[7] = func
    resp[8] = 2 * count
    size = 9 + 2 * count
    struct.pack_into(">H", resp, 4, size - 6)
    return size


def _exception(resp, func, code):
    resp[4] = 0
    resp[5] = 3  # unit id, function, code
    resp[7] = (func | 0x80) & 0xFF
    resp[8] = code
    return 9


class Server:
    def __init__(self, read, unit_id=1, max_clients=3, idle_ms=120_000, timeout_ms=5000, log=print, allow=None):
        self.read = read
        self.allow = allow  # allow(peername) -> False closes that client at once (None: everyone)
        self.unit_id = unit_id
        self.max_clients = max_clients
        self.idle_ms = idle_ms
        self.timeout_ms = timeout_ms
        self.log = log
        self.clients = 0
        self.requests = 0
        self.refused = 0  # connections closed at once: max_clients already connected
        self.dropped = 0  # connections closed for a bad frame, silence or not reading
        self.server = None

    async def serve(self, host, port):
        """Listen on host:port and serve until close() (OSError when the port cannot be had)."""
        srv = self.server = await asyncio.start_server(self._client, host, port, backlog=max(2, self.max_clients))
        self.log("modbus: listening on port %d, unit id %d" % (port, self.unit_id))
        await srv.wait_closed()

    def close(self):
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _client(self, reader, writer):
        if self.allow is not None and not self.allow(writer.get_extra_info("peername")):
            self.refused += 1
            await _close(writer)
            return
        if self.clients >= self.max_clients:
            self.refused += 1
            await _close(writer)
            return
        self.clients += 1
        req = bytearray(FRAME_MAX)
        resp = bytearray(FRAME_MAX)
        why = None
        try:
            while True:
                n = await self._frame(reader, req)
                if n <= 0:
                    why = BAD_FRAME if n == BAD_FRAME_N else SILENT if n == SILENT_N else None
                    break
                size = answer(req, n, resp, self.unit_id, self.read)
                self.requests += 1
                writer.write(memoryview(resp)[:size])
                await asyncio.wait_for(writer.drain(), self.timeout_ms / 1000)
        except asyncio.TimeoutError:
            why = "not reading its answers"
        except (OSError, EOFError):  # reset by the peer, or gone
            pass
        finally:
            self.clients -= 1
            if why:
                self.dropped += 1
                self.log("modbus: closed a connection: %s" % why)
            await _close(writer)

    async def _frame(self, reader, req):
        """Read one frame into req: its length, 0 at a clean end, BAD_FRAME_N or SILENT_N."""
        mv = memoryview(req)
        got = await self._fill(reader, mv, 0, 7, self.idle_ms)
        if got < 7:
            return SILENT_N if got < 0 else 0
        length = (req[4] << 8) | req[5]
        if req[2] or req[3] or not 2 <= length <= FRAME_MAX - 6:
            return BAD_FRAME_N
        got = await self._fill(reader, mv, 7, 6 + length, self.timeout_ms)
        return 6 + length if got == 6 + length else (SILENT_N if got < 0 else 0)

    async def _fill(self, reader, mv, have, want, timeout_ms):
        """Read into mv[have:want]; the bytes then held (fewer at the end of the stream), -1 on timeout."""
        while have < want:
            try:
                k = await asyncio.wait_for(reader.readinto(mv[have:want]), timeout_ms / 1000)
            except asyncio.TimeoutError:
                return -1
            if k is None:  # woken without data (TLS record not complete yet)
                continue
            if k == 0:
                return have
            have += k
        return have


async def _close(writer):
    try:
        writer.close()
        await writer.wait_closed()
    except OSError:
        pass

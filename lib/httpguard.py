# httpguard — puts limits around a microdot app: request head size, body size, time per connection,
# and how many connections are served at once, so hostile input gets a clean 4xx or a closed socket
# and never a crash or a growing heap.
#
# Guard(app).start(host, port) runs asyncio.start_server with serve() as the connection handler.
# serve() refuses connections above max_connections with 503 and hands microdot a LimitedReader: the
# request (line, headers and body) must arrive within head_ms and the line plus headers may not exceed
# max_head bytes, else microdot answers 400; it answers 413 above Request.max_content_length. The
# answer goes out through a LimitedWriter: all of it within write_ms, or the connection is dropped, so
# clients that never read cannot hold every connection slot for as long as they like.

import asyncio
import gc
import time

import microdot.microdot as _md
from microdot.microdot import Request

POLL_MS = 20
_AGAIN = (11, 35, 119)  # EAGAIN on Linux, macOS and lwIP (the ESP32's) builds


class LimitedReader:
    """The asyncio stream microdot reads, with a size budget for the head and a deadline per read."""

    def __init__(self, stream, max_head, max_body, head_ms):
        self.stream = stream
        self.sock = stream.s  # the non-blocking socket under MicroPython's asyncio Stream
        self.deadline = time.ticks_add(time.ticks_ms(), head_ms)
        self.max_head = max_head
        self.max_body = max_body
        self.head_ms = head_ms
        self.head_bytes = 0
        self.buf = b""

    async def _more(self):
        # Polls the socket instead of waiting on it through asyncio: cancelling a task that waits on a
        # socket and then closing that socket crashed the unix port (SIGSEGV) in our slowloris tests.
        while True:
            try:
                chunk = self.sock.recv(256)
                return chunk if chunk is not None else b""
            except OSError as e:
                if e.args[0] not in _AGAIN:
                    raise
            if time.ticks_diff(self.deadline, time.ticks_ms()) <= 0:
                raise ValueError("the request did not arrive in time")  # microdot answers 400
            await asyncio.sleep_ms(POLL_MS)

    async def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                self.head_bytes += len(line)
                if self.head_bytes > self.max_head:
                    raise ValueError("request head too large")
                return line
            if len(self.buf) + self.head_bytes > self.max_head:
                raise ValueError("request head too large")
            chunk = await self._more()
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk

    async def readexactly(self, n):
        if not 0 <= n <= self.max_body:
            raise ValueError("request body too large")
        while len(self.buf) < n:
            chunk = await self._more()
            if not chunk:
                raise EOFError()
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def read(self, n=-1):
        if self.buf:
            if n < 0:
                n = len(self.buf)
            out, self.buf = self.buf[:n], self.buf[n:]
            return out
        return await self._more()


class LimitedWriter:
    """The stream microdot writes its answer to (awrite), with one deadline for the whole answer."""

    def __init__(self, stream, write_ms):
        self.stream = stream
        self.s = stream.s
        self.write_ms = write_ms
        self.deadline = None

    async def awrite(self, data):
        # Sent straight on the non-blocking socket, polled like LimitedReader._more (never a task
        # parked on a socket that is then closed).
        if self.deadline is None:
            self.deadline = time.ticks_add(time.ticks_ms(), self.write_ms)
        data = memoryview(data)
        while data:
            try:
                n = self.s.send(data)
            except OSError as e:
                if e.args[0] not in _AGAIN:
                    raise
                n = 0
            if n:
                data = data[n:]
            elif time.ticks_diff(self.deadline, time.ticks_ms()) <= 0:
                raise OSError(110)  # ETIMEDOUT: the client does not read its answer
            else:
                await asyncio.sleep_ms(POLL_MS)

    def get_extra_info(self, name):
        return self.stream.get_extra_info(name)

    def close(self):
        self.stream.close()

    async def wait_closed(self):
        await self.stream.wait_closed()

    async def aclose(self):
        self.close()
        await self.wait_closed()


def _quiet(exc):
    print("http: bad request (%s)" % type(exc).__name__)


class Guard:
    def __init__(self, app, max_connections=4, max_head=2048, max_body=1024, head_ms=5000, write_ms=10000,
                 collect=False, send_buffer=None):
        self.app = app
        self.collect = collect  # gc.collect() after each connection: its garbage goes at once
        self.write_ms = write_ms
        # The socket send buffer in bytes (SO_SNDBUF), or None for the system's: on the desktop the
        # simulator sets lwIP's (the ESP32's TCP_SND_BUF), so a client that does not read blocks the
        # answer as early as it would on the board.
        self.send_buffer = send_buffer
        self.max_connections = max_connections
        self.max_head = max_head
        self.head_ms = head_ms
        self.active = 0
        self.served = 0
        self.refused = 0
        self.server = None
        Request.max_content_length = max_body  # microdot answers 413 above this
        Request.max_body_length = max_body
        Request.max_readline = max_head
        _md.print_exception = _quiet  # one line per malformed request, not a traceback

    async def serve(self, reader, writer):
        if self.active >= self.max_connections:
            self.refused += 1
            try:  # a few bytes: they fit the socket's send buffer, no waiting
                writer.s.send(b"HTTP/1.0 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 2\r\n"
                              b"Content-Length: 0\r\n\r\n")
            except Exception:
                pass
            await self._close(writer, reader)
            return
        self.active += 1
        try:
            if self.send_buffer is not None:
                # SOL_SOCKET, SO_SNDBUF on Linux, which doubles the value it is given (socket(7))
                writer.s.setsockopt(1, 7, self.send_buffer // 2)
            lim = LimitedReader(reader, self.max_head, Request.max_body_length, self.head_ms)
            await self.app.handle_request(lim, LimitedWriter(writer, self.write_ms))
            self.served += 1
        except Exception as e:  # timeouts, resets: the connection ends, the server goes on
            print("http: connection dropped (%s)" % type(e).__name__)
        finally:
            self.active -= 1
            await self._close(writer, reader)
            if self.collect:
                gc.collect()

    @staticmethod
    async def _close(writer, reader=None):
        # Take what the client sent and we ignored, without waiting: closing with unread data resets
        # the connection, and the client may then never see the answer written just before.
        sock = getattr(writer, "s", None)
        if sock is not None:
            for _ in range(8):
                try:
                    if not sock.recv(1024):
                        break
                except Exception:
                    break
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:
            pass

    async def start(self, host, port, backlog=8):
        self.server = await asyncio.start_server(self.serve, host, port, backlog)
        return self.server

    def close(self):
        if self.server is not None:
            self.server.close()
            self.server = None

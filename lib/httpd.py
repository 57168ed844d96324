# httpd — a small HTTP/1.0 server for MicroPython's asyncio, for a device's own pages: one request
# per connection, everything a client sends bounded, and nothing it sends (or does not read) can
# stop the server or hold it for long.
#
#     async def handle(req):  # req.method ("HEAD" arrives as "GET"), .path, .query, .headers, .body
#         return Response(b"hello", 200, {"Content-Type": "text/plain"})
#
#     server = Server(handle, keep=(b"host",))
#     server.start("0.0.0.0", 80)  # OSError when the address cannot be had
#     ...
#     server.close()
#
# Limits: the request line and each header line under max_line bytes, the head at most max_head
# bytes and max_headers headers, a body only with a Content-Length (else 400); a body over max_body
# gets 413 unread; the whole request must arrive within head_ms (else 400) and the whole answer go
# out within write_ms (else the connection is dropped: a client that stops reading frees its slot);
# at most max_connections at once, a 503 to the others at once. A handler that raises (MemoryError
# too) gets its client a 500, and the server goes on. req.headers holds only the headers named in
# keep (lower case), so a client's other headers take no heap. A Response's body is bytes, or a list
# of bytes pieces sent one after another (its Content-Length given): a page never needs one block
# of a fragmented heap its size. `headers` (bytes, "Name: value\r\n" lines) goes into every answer,
# the server's own ones too.
#
# Sockets, the same on the ESP32 (ports/esp32/modsocket.c) and the unix port: accept() hands back a
# blocking socket (socket_accept sets no timeout on it), made non-blocking here; on a non-blocking
# socket readinto() and write() return None when nothing can be read or written (py/stream.c,
# mp_stream_rw: a would-block error is not raised), so an idle poll allocates nothing; readinto()
# gives 0 once the client has closed (the ESP32 keeps saying 0: SOCKET_STATE_PEER_CLOSED). No task
# ever waits on a socket in asyncio's poller: accept, reads and writes are polled every POLL_MS,
# so a deadline is a comparison, never a cancelled wait (a wait cancelled on a socket that was then
# closed crashed the unix port under the setup page's first server), and close() cancels nothing.

import asyncio
import gc
import select
import socket
import time

POLL_MS = 20
REASONS = {200: "OK", 204: "No Content", 302: "Found", 303: "See Other", 308: "Permanent Redirect",
           400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           413: "Content Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class Request:
    def __init__(self, method, target):
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.headers = {}
        self.body = b""


class Response:
    """body: bytes, or a list of bytes pieces (give "Content-Length" in headers then)."""

    def __init__(self, body=b"", status=200, headers=None):
        self.body = body
        self.status = status
        self.headers = headers


def redirect(url, status=302):
    return Response(b"", status, {"Location": url})


def form(data):
    """Urlencoded data (bytes or str) as a dict of str, or None when it is not that (a bad %-escape, not UTF-8)."""
    if isinstance(data, str):
        data = data.encode()
    out = {}
    try:
        for pair in data.split(b"&"):
            if pair:
                kv = pair.split(b"=", 1)
                out[_unquote(kv[0])] = _unquote(kv[1]) if len(kv) > 1 else ""
    except ValueError:  # (UnicodeError is one)
        return None
    return out


def _unquote(b):
    parts = b.replace(b"+", b" ").split(b"%")
    out = bytearray(parts[0])
    for p in parts[1:]:
        # "1" in front: two hex digits give 256-511; int() would also take "+f", " f" or "f" alone
        c = int(b"1" + p[:2], 16) - 256
        if not 0 <= c < 256:
            raise ValueError
        out.append(c)
        out.extend(p[2:])
    return out.decode()


async def _recv(sock, buf, deadline):
    """Bytes read into buf (0: the client closed), or -1 when the deadline has passed first."""
    while True:
        n = sock.readinto(buf)
        if n is not None:
            return n
        if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
            return -1
        await asyncio.sleep_ms(POLL_MS)


async def _send(sock, data, deadline):
    off, end = 0, len(data)
    while off < end:
        n = sock.write(data, off, end - off)
        if n:
            off += n
        elif time.ticks_diff(deadline, time.ticks_ms()) <= 0:
            raise OSError(110)  # ETIMEDOUT: the client does not read its answer
        else:
            await asyncio.sleep_ms(POLL_MS)


class Server:
    def __init__(self, handler, keep=(), headers=b"", max_connections=4, max_line=512, max_head=2048,
                 max_headers=32, max_body=1024, head_ms=5000, write_ms=10000, collect=False, send_buffer=None):
        self.handler = handler
        self.keep = keep
        self.tail = headers + b"Connection: close\r\n\r\n"
        self.max_connections = max_connections
        self.max_line = max_line
        self.max_head = max_head
        self.max_headers = max_headers
        self.max_body = max_body
        self.head_ms = head_ms
        self.write_ms = write_ms
        self.collect = collect  # gc.collect() as each connection ends: its garbage goes at once
        # The sockets' send buffer in bytes (SO_SNDBUF), or None for the system's: on the desktop the
        # simulator gives lwIP's (the ESP32's TCP_SND_BUF), so a client that does not read blocks
        # the answer as early as it would on the board.
        self.send_buffer = send_buffer
        self.sock = None  # the listening socket while serving
        self.active = 0
        self.served = 0
        self.refused = 0
        self._scratch = bytearray(256)  # unread input is drained into it (never across an await: shared)
        self._busy = self._plain(503)  # ready made: refusing must not need the heap

    def start(self, host, port, backlog=8):
        ai = socket.getaddrinfo(host, port)[0]
        s = socket.socket(ai[0], socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(ai[-1])
            s.listen(backlog)
            s.setblocking(False)
            poll = select.poll()
            poll.register(s, select.POLLIN)
        except BaseException:
            s.close()
            raise
        self.sock = s
        asyncio.create_task(self._accept(s, poll))

    def close(self):
        s, self.sock = self.sock, None
        if s is not None:
            s.close()  # _accept sees it is no longer self.sock and ends

    async def _accept(self, s, poll):
        while self.sock is s:
            ready = False
            try:
                for _ in poll.ipoll(0):  # (ipoll reuses one tuple: an idle poll allocates nothing)
                    ready = True
                if ready:
                    c = s.accept()[0]
                    c.setblocking(False)
                    if self.active >= self.max_connections:
                        self.refused += 1
                        c.write(self._busy)  # a few bytes: they fit the socket's send buffer, no waiting
                        self._end(c)
                    else:
                        self.active += 1
                        asyncio.create_task(self._serve(c))
            except Exception as e:  # an accept that failed (reset, no heap): the next one may not
                ready = False
                _say("accept failed", e)
            await asyncio.sleep_ms(0 if ready else POLL_MS)
        poll.unregister(s)

    async def _serve(self, c):
        try:
            if self.send_buffer is not None:
                # SOL_SOCKET, SO_SNDBUF on Linux, which doubles the value it is given (socket(7))
                c.setsockopt(1, 7, self.send_buffer // 2)
            req = await self._read(c)
            head_only = False
            if not isinstance(req, int):
                if req.method == "HEAD":
                    req.method, head_only = "GET", True
                try:
                    req = await self.handler(req)
                except Exception as e:  # MemoryError too: this request fails, the server goes on
                    req = 500
                    _say("500", e)
            deadline = time.ticks_add(time.ticks_ms(), self.write_ms)
            if isinstance(req, int):
                await _send(c, self._plain(req), deadline)
            else:
                await self._answer(c, req, head_only, deadline)
            self.served += 1
        except Exception as e:  # a reset, the write deadline: the connection ends, the server goes on
            _say("connection dropped", e)
        finally:
            self.active -= 1
            self._end(c)
            if self.collect:
                gc.collect()

    async def _read(self, c):
        """The Request, or the status to answer instead (400, 413)."""
        deadline = time.ticks_add(time.ticks_ms(), self.head_ms)
        buf = bytearray(self.max_line)
        n = start = taken = count = length = 0  # buf[start:n]: read, not yet a whole line
        req = None
        try:
            while True:
                i = buf.find(b"\n", start, n)
                if i < 0:
                    if start:  # the part line to the front, to read the rest behind it
                        buf[:n - start] = buf[start:n]
                        n -= start
                        start = 0
                    if n == len(buf) or taken + n > self.max_head:
                        return 400  # a line or the head too long
                    k = await _recv(c, memoryview(buf)[n:], deadline)
                    if k <= 0:
                        return 400  # closed before the end of the head, or too slow
                    n += k
                    continue
                line = buf[start:i].strip()
                taken += i + 1 - start
                start = i + 1
                if taken > self.max_head:
                    return 400
                if req is None:  # the request line: METHOD TARGET HTTP/x.y
                    parts = line.split()
                    if len(parts) != 3 or not parts[2].startswith(b"HTTP/") or not parts[1].startswith(b"/"):
                        return 400
                    req = Request(parts[0].decode(), parts[1].decode())
                elif not line:
                    break
                else:
                    count += 1
                    k = line.find(b":")
                    if k <= 0 or count > self.max_headers:
                        return 400
                    name, value = line[:k].strip().lower(), line[k + 1:].strip()
                    if name == b"content-length":
                        if not value.isdigit():
                            return 400
                        length = int(value)
                    elif name in self.keep:
                        req.headers[name.decode()] = value.decode()
            if length > self.max_body:
                return 413
            if length:
                body = bytearray(length)
                have = min(n - start, length)
                body[:have] = buf[start:start + have]
                buf = None
                while have < length:
                    k = await _recv(c, memoryview(body)[have:], deadline)
                    if k <= 0:
                        return 400
                    have += k
                req.body = bytes(body)
            return req
        except ValueError:  # not UTF-8 (UnicodeError is one)
            return 400

    async def _answer(self, c, res, head_only, deadline):
        body, h = res.body, res.headers or {}
        out = "HTTP/1.0 %d %s\r\n" % (res.status, REASONS.get(res.status, ""))
        for k in h:
            out += "%s: %s\r\n" % (k, h[k])
        if isinstance(body, bytes) and "Content-Length" not in h:
            out += "Content-Length: %d\r\n" % len(body)
        await _send(c, out.encode(), deadline)
        await _send(c, self.tail, deadline)
        out = None
        if head_only:
            return
        if isinstance(body, bytes):
            await _send(c, body, deadline)
        else:
            for piece in body:
                await _send(c, piece, deadline)

    def _plain(self, status):
        """The server's own answers: the status in words."""
        text = REASONS[status]
        return ("HTTP/1.0 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % (status, text, len(text) + 1)
                ).encode() + self.tail + text.encode() + b"\n"

    def _end(self, c):
        # Take in what the client sent and was not read, without waiting: closing a socket with unread
        # input resets the connection, and the client may then lose the answer written just before.
        try:
            for _ in range(32):
                if not c.readinto(self._scratch):
                    break
        except OSError:
            pass
        try:
            c.close()
        except OSError:
            pass


def _say(what, e):
    try:
        print("http: %s (%s)" % (what, type(e).__name__))
    except MemoryError:
        pass

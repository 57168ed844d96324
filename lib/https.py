# https — a small HTTPS/1.1 client for asyncio: verified TLS, keep-alive, timeouts, bounded replies.
#
#     c = Client("https://host:8443", ca_der, resolve=board.resolve)
#     status, body = await c.request("POST", "/v1/records", body, {"X-Meter-Serial": "..."})
#
# The body is bytes, or a list of bytes pieces sent one after another as if joined: a large body
# then never needs one large block of a fragmented heap.
# TLS always verifies: SSLContext(PROTOCOL_TLS_CLIENT), verify_mode CERT_REQUIRED, the CA given as
# DER bytes, server_hostname = the URL's host. The host name is resolved through `resolve(host,
# port) -> address string` (the board's DNS seam; tests replace it), so the connection itself
# goes to an address and no resolver is asked twice; if DNS fails later, the last address that
# resolved is used (the certificate is still checked against the name). One connection is kept open and reused while
# the server allows (HTTP/1.1 keep-alive). Every step has a deadline; a reply larger than max_body
# is refused, and so is a reply head with a line over MAX_LINE bytes or more than MAX_HEADERS headers
# (an endless header must not take the heap); interim 1xx replies (100 Continue) are skipped.
# Failures raise HttpError with .kind: dns, connect, tls, timeout, reset, protocol, too_large; the
# message never includes request headers (they carry signatures). After each reply, .retry_after is
# its Retry-After header (bytes) or None.

import asyncio

try:
    import ssl
except ImportError:  # a build without TLS: every request fails with a clear error
    ssl = None

KINDS = ("dns", "connect", "tls", "timeout", "reset", "protocol", "too_large")
MAX_LINE = 512  # bytes in the status line or in one header line of a reply
MAX_HEADERS = 32  # header lines in a reply


class HttpError(Exception):
    def __init__(self, kind, message):
        super().__init__("%s: %s" % (kind, message))
        self.kind = kind


def parse_url(url):
    """(host, port, path) of an https:// URL; ValueError naming the rule otherwise."""
    if not url.startswith("https://"):
        raise ValueError("url: must start with https://")
    rest = url[8:]
    slash = rest.find("/")
    hostport, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    host, port = hostport, 443
    if ":" in hostport:
        host, p = hostport.rsplit(":", 1)
        try:
            port = int(p)
        except ValueError:
            raise ValueError("url: port must be a number")
    if not host or not 0 < port < 65536:
        raise ValueError("url: needs a host and a port 1-65535")
    return host, port, path.rstrip("/")


def body_length(body):
    """The length of a body given as bytes or as a list of bytes pieces."""
    return sum(len(p) for p in body) if isinstance(body, list) else len(body)


def _default_resolve(host, port):
    import socket

    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    if isinstance(addr, tuple):
        return addr[0]
    return ".".join(str(b) for b in addr[4:8])  # pyright: ignore  (the unix port: a raw sockaddr_in)


def _tls_failure(e):
    # mbedTLS reports through negative error codes (MicroPython) or ssl.SSLError (CPython).
    code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
    return code < -0x1000 or "SSL" in type(e).__name__ or "CERT" in str(e) or "X509" in str(e)


# mbedTLS's MBEDTLS_ERR_SSL_CONN_EOF and MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY: the server hung up during
# the handshake, which says nothing about certificates (the words reach the setup page); -0x2700 is
# MBEDTLS_ERR_X509_CERT_VERIFY_FAILED.
_TLS_CLOSED = (-0x7280, -0x7880)


def _tls_error(host, e):
    code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
    if code in _TLS_CLOSED or "EOF" in str(e):
        why = "the server closed the connection during the handshake: %s" % e
    elif code == -0x2700 or "CERT" in str(e) or "X509" in str(e) or "VERIFY" in str(e).upper():
        why = "certificate or host name not trusted: %s" % e
    else:
        why = "%s" % e
    return HttpError("tls", "TLS with %s failed (%s)" % (host, why))


class Client:
    def __init__(self, url, cadata, resolve=None, connect_timeout_ms=10000, timeout_ms=10000, max_body=4096):
        self.host, self.port, self.base_path = parse_url(url)
        self.cadata = cadata
        self.resolve = resolve or _default_resolve
        self.connect_timeout_ms = connect_timeout_ms
        self.timeout_ms = timeout_ms
        self.max_body = max_body
        self._r = self._w = None
        self._buf = b""  # bytes read from the connection past the last line taken
        self.retry_after = None  # the last reply's Retry-After (bytes), or None
        self._addr = None  # the last address the name resolved to
        self.connections = 0  # connections opened (keep-alive reuse keeps this low)
        self.bytes_sent = 0  # HTTP bytes (headers and bodies; TLS framing not counted)

    def _context(self):
        if ssl is None:
            raise HttpError("tls", "this firmware has no ssl module")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cadata=self.cadata)
        except Exception as e:
            raise HttpError("tls", "the CA certificate cannot be loaded (%s)" % type(e).__name__)
        return ctx

    async def _connect(self):
        try:
            addr = self._addr = self.resolve(self.host, self.port)
        except Exception as e:
            if self._addr is None:
                raise HttpError("dns", "cannot resolve %s (%s)" % (self.host, e))
            addr = self._addr  # DNS is down: the address that worked last (TLS still checks the name)
        ctx = self._context()
        try:
            self._r, self._w = await asyncio.wait_for(
                asyncio.open_connection(addr, self.port, ssl=ctx, server_hostname=self.host),
                self.connect_timeout_ms / 1000)
        except asyncio.TimeoutError:
            raise HttpError("timeout", "no connection to %s:%d within %d ms" % (self.host, self.port,
                                                                              self.connect_timeout_ms))
        except ValueError as e:  # MicroPython's mbedTLS reports a failed verification as ValueError
            raise HttpError("tls", "TLS with %s failed (%s)" % (self.host, str(e).strip()))
        except OSError as e:
            if _tls_failure(e):
                raise _tls_error(self.host, e)
            raise HttpError("connect", "cannot connect to %s:%d (%s)" % (self.host, self.port, e))
        self.connections += 1

    async def close(self):
        w, self._r, self._w, self._buf = self._w, None, None, b""
        if w is not None:
            try:
                w.close()
                await asyncio.wait_for(w.wait_closed(), 1)
            except Exception:
                pass

    async def request(self, method, path, body=b"", headers=None):
        """(status, reply body bytes). body: bytes or a list of bytes pieces. Reuses the open
        connection; opens one if there is none."""
        try:
            return await asyncio.wait_for(self._request(method, path, body, headers), self.timeout_ms / 1000)
        except asyncio.TimeoutError:
            await self.close()
            raise HttpError("timeout", "no complete reply from %s within %d ms" % (self.host, self.timeout_ms))
        except HttpError:
            await self.close()
            raise
        except ValueError as e:  # MicroPython's mbedTLS: verification failed during the handshake
            await self.close()
            raise HttpError("tls", "TLS with %s failed (%s)" % (self.host, str(e).strip()))
        except EOFError:
            await self.close()
            raise HttpError("reset", "connection to %s closed in the middle of the reply" % self.host)
        except OSError as e:
            await self.close()
            if _tls_failure(e):
                raise _tls_error(self.host, e)
            raise HttpError("reset", "connection to %s lost (%s)" % (self.host, e))

    async def _line(self, r):
        """The next line of the reply's head (b"" at the end of the stream), read in pieces of at most
        MAX_LINE bytes: a server that never ends a line gets an HttpError, not the whole heap."""
        buf = self._buf
        while True:
            i = buf.find(b"\n")
            if i >= 0:
                self._buf = buf[i + 1:]
                return buf[:i + 1]
            if len(buf) >= MAX_LINE:
                raise HttpError("protocol", "a reply line longer than %d bytes" % MAX_LINE)
            more = await r.read(MAX_LINE - len(buf))
            if not more:
                self._buf = b""
                return buf
            buf += more

    async def _request(self, method, path, body, headers):
        # The port goes into Host unless it is HTTPS's own (RFC 9110 7.2).
        host = self.host if self.port == 443 else "%s:%d" % (self.host, self.port)
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: keep-alive\r\n" % (
            method, self.base_path, path, host, body_length(body))
        for k in headers or {}:
            head += "%s: %s\r\n" % (k, headers[k])
        head = (head + "\r\n").encode()
        line = b""
        for _ in range(2):
            # A kept-alive connection the server has meanwhile closed fails before any reply: then
            # once more on a new connection (safe: the protocol's requests are idempotent).
            reused = self._w is not None
            if not reused:
                await self._connect()
            r, w = self._r, self._w
            if r is None or w is None:
                raise HttpError("connect", "no connection")
            try:
                # Drained piece by piece: a Stream that cannot send at once (a TLS handshake in
                # progress, a full send buffer) appends each write to one growing buffer.
                w.write(head)
                await w.drain()
                for piece in body if isinstance(body, list) else (body,):
                    w.write(piece)
                    await w.drain()
                self.bytes_sent += len(head) + body_length(body)
                line = await self._line(r)
            except OSError:
                if not reused:
                    raise
                line = b""
            if line or not reused:
                break
            await self.close()
        if not line:
            raise HttpError("reset", "the server closed the connection before replying")
        r = self._r
        if r is None:
            raise HttpError("reset", "connection lost")
        for _ in range(4):  # interim replies (1xx: 100 Continue, 103 Early Hints) come before the real one
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise HttpError("protocol", "not an HTTP reply: %r" % line[:40])
            try:
                status = int(parts[1])
            except ValueError:
                raise HttpError("protocol", "bad status line: %r" % line[:40])
            length, keep, self.retry_after = 0, parts[0] == b"HTTP/1.1", None
            for n in range(MAX_HEADERS + 1):
                line = await self._line(r)
                if not line:
                    raise HttpError("reset", "the server closed the connection in the reply headers")
                if line in (b"\r\n", b"\n"):
                    break
                if n == MAX_HEADERS:
                    raise HttpError("protocol", "a reply with more than %d header lines" % MAX_HEADERS)
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip()
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        raise HttpError("protocol", "bad Content-Length")
                    if length < 0:
                        raise HttpError("protocol", "bad Content-Length")
                elif name == b"connection":
                    keep = value.lower() == b"keep-alive" or (keep and value.lower() != b"close")
                elif name == b"transfer-encoding":
                    raise HttpError("protocol", "chunked replies are not supported")
                elif name == b"retry-after":
                    self.retry_after = value
            if status >= 200:
                break
            line = await self._line(r)
        else:
            raise HttpError("protocol", "no final reply after 4 interim ones")
        if length > self.max_body:
            raise HttpError("too_large", "reply of %d bytes exceeds %d" % (length, self.max_body))
        data, self._buf = self._buf[:length], self._buf[length:]
        if len(data) < length:
            data += await r.readexactly(length - len(data))
        if len(data) != length:
            raise HttpError("reset", "reply cut short")
        if not keep or self._buf:  # (bytes beyond the reply: not a server to keep talking to)
            await self.close()
        return status, data

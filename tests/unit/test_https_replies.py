# lib/https reading replies: the Host header, interim replies, Retry-After, and a reply head that never
# ends (bounded lines and header count), over a stand-in connection that hands out a few bytes at a time.
import asyncio

from https import MAX_HEADERS, MAX_LINE, Client, HttpError

from simworld import world


class _Reader:
    def __init__(self, data, piece=7):
        self.data, self.piece, self.asked = data, piece, 0

    async def read(self, n):
        self.asked = max(self.asked, n)
        k = min(n, self.piece)
        out, self.data = self.data[:k], self.data[k:]
        return out

    async def readexactly(self, n):
        out = b""
        while len(out) < n:
            more = await self.read(n - len(out))
            if not more:
                raise EOFError
            out += more
        return out


class _Writer:
    def __init__(self):
        self.sent = b""
        self.closed = False

    def write(self, data):
        self.sent += data

    async def drain(self):
        pass

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


def _ask(reply, url="https://ingest.example:8443"):
    """(status, body) or the HttpError, the client and what was sent, for one request answered by reply."""
    c = Client(url, b"", resolve=lambda host, port: "127.0.0.1")
    c._r, c._w = r, w = _Reader(reply), _Writer()
    world.set_realtime()  # asyncio waits in real time here
    try:
        out = asyncio.run(c.request("POST", "/v1/records", b"{}", {"X-Meter-Serial": "S1"}))
    except HttpError as e:
        out = e
    finally:
        asyncio.new_event_loop()
    return out, c, w, r


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"acked\":[]}"


def test_the_host_header_carries_a_port_other_than_443():
    out, _, w, _ = _ask(OK)
    assert out == (200, b'{"acked":[]}') and b"\r\nHost: ingest.example:8443\r\n" in w.sent
    out, _, w, _ = _ask(OK, "https://ingest.example/base")
    assert out[0] == 200 and b"\r\nHost: ingest.example\r\n" in w.sent and w.sent.startswith(b"POST /base/v1/")


def test_interim_replies_are_skipped():
    out, c, w, _ = _ask(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + OK)
    assert out == (200, b'{"acked":[]}') and not w.closed  # the connection stays open for the next


def test_retry_after_is_kept_for_the_caller():
    out, c, _, _ = _ask(b"HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n")
    assert out == (503, b"") and c.retry_after == b"120"
    out, c, _, _ = _ask(OK)
    assert c.retry_after is None


def test_a_reply_head_that_never_ends_is_a_failed_attempt_not_a_heap_gone():
    out, _, w, r = _ask(b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * 100000)
    assert isinstance(out, HttpError) and out.kind == "protocol" and "longer than %d" % MAX_LINE in str(out)
    assert r.asked <= MAX_LINE and len(r.data) > 90000 and w.closed  # never read more than a line's worth
    out, _, _, _ = _ask(b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n")
    assert isinstance(out, HttpError) and "more than %d header lines" % MAX_HEADERS in str(out)
    out, _, _, _ = _ask(b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * (MAX_HEADERS - 1) + b"Content-Length: 0\r\n\r\n")
    assert out == (200, b"")


def test_a_negative_or_garbled_length_is_refused():
    for length in (b"-1", b"lots"):
        out, _, _, _ = _ask(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n")
        assert isinstance(out, HttpError) and "Content-Length" in str(out), length

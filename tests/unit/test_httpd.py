# lib/httpd: urlencoded forms decoded strictly, and the server on a real socket on 127.0.0.1 (under the
# MicroPython unix port, whose sockets it is written for): limits, a handler that fails, what it keeps.
import asyncio
import gc
import socket

import httpd

from simworld import world
from support import MICROPYTHON, skip


def test_a_form_is_decoded_to_str():
    assert httpd.form(b"ssid=Caf%C3%A9+Libre&password=a%2Bb%3D&empty=&flag") == {
        "ssid": "Café Libre", "password": "a+b=", "empty": "", "flag": ""}
    assert httpd.form("n=12") == {"n": "12"} and httpd.form(b"") == {}


def test_a_form_with_a_bad_escape_or_not_utf8_is_none_not_an_error():
    for bad in (b"a=%zz", b"a=%4", b"a=%", b"a=%+1", b"a=% 1", b"a=%ff", b"%e0%a4=1", b"a=\xff"):
        assert httpd.form(bad) is None, bad


PORT = [18700]


def _serve(handler, **limits):
    """A Server on 127.0.0.1 (the first free port from PORT), started."""
    for _ in range(50):
        PORT[0] += 1
        server = httpd.Server(handler, keep=(b"host",), headers=b"X-Test: 1\r\n", **limits)
        try:
            server.start("127.0.0.1", PORT[0])
            return server
        except OSError:
            continue
    raise AssertionError("no free port")


async def _ask(port, data):
    """Send data on a new connection; everything the server answers before it closes."""
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s.setblocking(False)
    out = b""
    try:
        off = 0
        while off < len(data):
            n = s.write(data[off:])
            off += n or 0
            await asyncio.sleep_ms(1)
        for _ in range(2000):
            chunk = s.read(4096)
            if chunk == b"":
                break
            if chunk:
                out += chunk
            await asyncio.sleep_ms(2)
    finally:
        s.close()
    return out


def _status(answer):
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _run(coro):
    world.set_realtime()  # asyncio waits in real time here, as the sockets do
    try:
        return asyncio.run(coro)
    finally:
        asyncio.new_event_loop()


def test_a_failing_handler_gets_its_client_a_500_and_the_server_goes_on():
    if not MICROPYTHON:
        skip("the server polls MicroPython's non-blocking socket streams (readinto, write)")
    seen = []

    async def handler(req):
        seen.append((req.method, req.path, req.query, req.headers))
        if req.path == "/memory":
            raise MemoryError("memory allocation failed, allocating 4096 bytes")
        if req.path == "/bug":
            raise KeyError("x")
        return httpd.Response(b"fine", 200, {"Content-Type": "text/plain"})

    async def main():
        server = _serve(handler)
        try:
            port = PORT[0]
            out = []
            for path in ("/memory", "/bug", "/ok?a=1"):
                out.append(await _ask(port, b"GET %s HTTP/1.1\r\nHost: here\r\nX-Other: 1\r\n\r\n" % path.encode()))
            head = await _ask(port, b"HEAD /ok HTTP/1.0\r\n\r\n")
            return out, head, server.active, server.served
        finally:
            server.close()

    (memory, bug, ok), head, active, served = _run(main())
    assert _status(memory) == 500 and _status(bug) == 500, (memory, bug)
    assert b"X-Test: 1\r\n" in memory and b"Connection: close\r\n" in memory  # its headers on the server's own answers
    assert _status(ok) == 200 and ok.endswith(b"\r\n\r\nfine") and b"Content-Length: 4\r\n" in ok
    assert _status(head) == 200 and head.endswith(b"\r\n\r\n")  # HEAD: the head only...
    assert seen[3][0] == "GET"  # ...of the GET answer
    assert seen[2] == ("GET", "/ok", "a=1", {"host": "here"})  # only the headers asked for are kept
    assert active == 0 and served == 4


def test_every_part_of_a_request_is_bounded():
    if not MICROPYTHON:
        skip("the server polls MicroPython's non-blocking socket streams (readinto, write)")
    bodies = []

    async def handler(req):
        bodies.append(req.body)
        return httpd.Response(b"ok")

    async def main():
        server = _serve(handler, max_headers=4, max_line=64, max_head=256, max_body=16, head_ms=300)
        port = PORT[0]
        try:
            answers = {}
            cases = {
                "4 headers": b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 4 + b"\r\n",
                "5 headers": b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 5 + b"\r\n",
                "a long line": b"GET / HTTP/1.1\r\nX: " + b"a" * 64 + b"\r\n\r\n",
                "a long head": b"GET / HTTP/1.1\r\n" + (b"X: " + b"a" * 57 + b"\r\n") * 4 + b"\r\n",
                "body 16": b"POST / HTTP/1.1\r\nContent-Length: 16\r\n\r\n" + b"b" * 16,
                "body 17": b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n" + b"b" * 17,
                "length -1": b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "body short": b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc",
                "not http": b"GET /\r\n\r\n",
                "no slash": b"GET x HTTP/1.1\r\n\r\n",
                "not utf-8": b"GET /\xff HTTP/1.1\r\n\r\n",
            }
            for name, data in cases.items():
                answers[name] = _status(await _ask(port, data))
            return answers
        finally:
            server.close()

    answers = _run(main())
    assert answers == {"4 headers": 200, "5 headers": 400, "a long line": 400, "a long head": 400, "body 16": 200,
                       "body 17": 413, "length -1": 400, "body short": 400, "not http": 400, "no slash": 400,
                       "not utf-8": 400}, answers
    assert b"b" * 16 in bodies


def test_connections_beyond_the_limit_get_a_503_at_once():
    if not MICROPYTHON:
        skip("the server polls MicroPython's non-blocking socket streams (readinto, write)")

    async def handler(req):
        return httpd.Response(b"ok")

    async def main():
        server = _serve(handler, max_connections=2, head_ms=400)
        port = PORT[0]
        held = []
        try:
            for _ in range(2):  # two clients that never finish their request hold both slots
                s = socket.socket()
                s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
                s.write(b"GET / HTTP/1.1\r\n")
                held.append(s)
            await asyncio.sleep_ms(100)
            busy = await _ask(port, b"GET / HTTP/1.1\r\n\r\n")
            await asyncio.sleep_ms(500)  # their head deadline passes: the slots are free again
            after = await _ask(port, b"GET / HTTP/1.1\r\n\r\n")
            return busy, after, server.refused, server.active
        finally:
            for s in held:
                s.close()
            server.close()

    busy, after, refused, active = _run(main())
    assert _status(busy) == 503 and refused == 1
    assert _status(after) == 200 and active == 0


def test_serving_keeps_nothing_once_a_request_is_over():
    if not MICROPYTHON:
        skip("gc.mem_alloc() counts MicroPython's heap")

    async def handler(req):
        return httpd.Response([b"x" * 100] * 20, 200, {"Content-Length": "2000"})

    async def main():
        server = _serve(handler, collect=True)
        port = PORT[0]
        try:
            await _ask(port, b"GET / HTTP/1.1\r\n\r\n")
            gc.collect()
            before = gc.mem_alloc()
            for _ in range(20):
                r = await _ask(port, b"GET / HTTP/1.1\r\nX-Junk: " + b"j" * 200 + b"\r\n\r\n")
                assert _status(r) == 200 and len(r.split(b"\r\n\r\n", 1)[1]) == 2000
            gc.collect()
            return gc.mem_alloc() - before
        finally:
            server.close()

    assert _run(main()) < 512

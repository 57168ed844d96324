# The reference ingest server (tools/ingest.py) against clients that misbehave: nobody can stall it for
# every device, make it read a body it has not asked for, or kill a handler with a strange record.
import hmac
import json
import os
import socket
import ssl
import threading

import pytest

from firmware import identity
from tools import ingest, provision
from tools.sim.runner import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("ingest")
    certs = str(d / "certs")
    ingest.ensure_certs(certs)
    fleet_key, _ = provision.fleet_key_for(certs, os.path.join(certs, "fleet.key"), log=lambda m: None)
    port = free_port()
    ready = threading.Event()
    holder = {}

    def run():
        ingest.serve(port, str(d / "db.sqlite"), certs, ready=lambda srv: (holder.update(srv=srv), ready.set()))

    threading.Thread(target=run, daemon=True).start()
    assert ready.wait(10)
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    yield {"port": port, "ctx": ctx, "key": fleet_key, "db": str(d / "db.sqlite")}
    holder["srv"].shutdown()


def _ask(server, head, body=b"", timeout=5):
    """The reply to one request sent as raw bytes (head: the lines after the request line)."""
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=timeout) as raw:
        with server["ctx"].wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(head + body)
            out = b""
            while True:
                try:
                    more = s.recv(65536)
                except (ConnectionResetError, ssl.SSLError):
                    break
                if not more:
                    break
                out += more
                if b"\r\n\r\n" in out:
                    h, _, rest = out.partition(b"\r\n\r\n")
                    n = [int(x.split(b":")[1]) for x in h.split(b"\r\n") if x.lower().startswith(b"content-length")]
                    if n and len(rest) >= n[0]:
                        break
            return out


def _status(reply):
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None


def _signed(server, doc, serial="MDTEST0001", path="/v1/records"):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    key = identity.derive(server["key"], serial).upload_key
    sig = hmac.new(key, body, "sha256").hexdigest()
    head = ("POST %s HTTP/1.1\r\nHost: localhost\r\nX-Meter-Serial: %s\r\nX-Meter-Signature: %s\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % (path, serial, sig, len(body))).encode()
    return _ask(server, head, body)


def test_a_client_that_never_says_hello_stalls_nobody(server):
    idle = [socket.create_connection(("127.0.0.1", server["port"])) for _ in range(3)]
    try:
        reply = _signed(server, {"serial": "MDTEST0001", "records": [{"seq": 1, "phases": []}]})
        assert _status(reply) == 200 and b'"acked": [1]' in reply
    finally:
        for s in idle:
            s.close()


def test_no_body_is_read_before_the_headers_could_authenticate_it(server):
    # Content-Length -1 used to read until the client hung up, before any check.
    reply = _ask(server, b"POST /v1/records HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n", b"x" * 1000)
    assert _status(reply) == 400 and b"Content-Length" in reply
    # A large body announced without a device's headers: refused before a byte of it is read.
    reply = _ask(server, b"POST /v1/records HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200000\r\n\r\n")
    assert _status(reply) == 401 and b"X-Meter-Serial" in reply
    reply = _ask(server, b"POST /v1/records HTTP/1.1\r\nHost: localhost\r\nX-Meter-Serial: MDTEST0001\r\n"
                         b"X-Meter-Signature: nope\r\nContent-Length: 200000\r\n\r\n")
    assert _status(reply) == 401 and b"64 lowercase hex" in reply


@pytest.mark.parametrize("body, words", [
    (b'{"serial": "MDTEST0001", "records": [{"seq": true, "phases": []}]}', b"integer seq"),
    (b'{"serial": "MDTEST0001", "records": [{"seq": 2, "phases": [NaN]}]}', b"NaN is not JSON"),
    (b'{"serial": "MDTEST0001", "records": [{"seq": 2, "phases": [1e999]}]}', b"too large a number"),
    (b'{"serial": "MDTEST0001", "records": [{"seq": 1180591620717411303424, "phases": []}]}', b"integer seq"),
    (b'{"serial": "MDTEST0001", "records": [{"seq": 3, "phases": []}], "x": ' + b"[" * 100000 + b"]" * 100000 + b"}",
     b"not a JSON object"),
])
def test_a_strange_record_gets_a_400_with_a_reason_and_nothing_is_stored(server, body, words):
    reply = _signed(server, body)
    assert _status(reply) == 400 and words in reply, reply[:300]
    reply = _signed(server, {"serial": "MDTEST0001", "records": [{"seq": 7, "phases": []}]})
    assert _status(reply) == 200  # and the server goes on


def test_serials_sprayed_without_a_signature_do_not_grow_the_key_cache(tmp_path):
    ing = ingest.Ingest(str(tmp_path / "db.sqlite"), b"k" * 32)
    for n in range(ingest.KEY_CACHE * 4):
        assert ing.precheck("SPRAY%05d" % n, "0" * 64) is None
    assert len(ing._keys) == ingest.KEY_CACHE

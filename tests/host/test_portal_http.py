# The setup portal served by `python -m tools.sim portal`: the installer's flow over HTTP, captive-portal
# probes, and the HTTP and DNS servers under hostile input (the server stays up, the heap comes back).
import json
import os
import socket
import time
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.host.portal_sim import PortalSim, raw, status

AP = b"192.168.251.1"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = PortalSim(str(tmp_path_factory.mktemp("portal")))
    yield s
    s.stop()


BASELINE = [0]


def test_aa_heap_baseline(sim):
    time.sleep(0.5)
    BASELINE[0] = sim.heap()["alloc"]
    assert BASELINE[0] > 0


def _post(sim, path, fields, host=None):
    body = urllib.parse.urlencode(fields).encode()
    head = ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: %d\r\n\r\n" % (path, host or "127.0.0.1:%d" % sim.port, len(body))).encode()
    return raw(sim.port, head + body, timeout=30)


def _get(sim, path, host=None):
    return raw(sim.port, ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host or "127.0.0.1:%d" % sim.port)).encode())


def _location(r):
    for line in r.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"location:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


def _submit(sim, path, fields):
    """POST a form as the page does, follow the redirect back to the page (waiting while it says it
    is connecting): (the redirect's URL, the page it shows)."""
    r = _post(sim, path, fields)
    assert status(r) == 303, r[:300]  # Post/Redirect/Get: a reload of the result never posts again
    url = _location(r)
    assert url.startswith("/")
    for _ in range(100):
        page = _get(sim, url)
        assert status(page) == 200
        if b"http-equiv=refresh" not in page:
            return url, page.split(b"\r\n\r\n", 1)[1]
        time.sleep(0.2)
    raise AssertionError("still connecting after 20 s")


def test_phone_probes_and_unknown_hosts_are_sent_to_the_setup_page_while_unconfigured(sim):
    for host, path in (("connectivitycheck.gstatic.com", "/generate_204"),
                       ("captive.apple.com", "/hotspot-detect.html"),
                       ("www.msftconnecttest.com", "/connecttest.txt"),
                       ("detectportal.firefox.com", "/canonical.html"),
                       ("example.com", "/anything")):
        r = _get(sim, path, host)
        assert status(r) == 302, r[:200]
        assert b"\r\nLocation: http://192.168.251.1/\r\n" in r
    r = _get(sim, "/", "192.168.251.1")  # the AP address itself is the setup page
    assert status(r) == 200 and b"<h1>Meter setup</h1>" in r


def test_the_page_lists_scanned_networks_with_hostile_names_escaped(sim):
    r = _get(sim, "/")
    assert status(r) == 200
    body = r.split(b"\r\n\r\n", 1)[1].decode()
    for name in ("HomeNet", "Neighbour 5G", "Cafe Libre", "NoLease"):
        assert ">%s<" % name in body
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert body.index("HomeNet") < body.index("Cafe Libre")  # strongest first


def test_bad_input_is_named_in_plain_words_and_nothing_is_saved(sim):
    _, page = _submit(sim, "/connect", {"ssid": "HomeNet", "password": "short"})
    assert b"The WiFi password must be 8 to 63 characters long" in page
    assert b'value="HomeNet" checked' in page  # the chosen network stays chosen
    _, page = _submit(sim, "/connect", {"ssid_manual": "x" * 33, "password": "whatever1"})
    assert b"The network name must be 1 to 32 bytes long" in page
    _, page = _submit(sim, "/connect", {"password": "whatever1"})
    assert b"Choose a network from the list, or type its name." in page
    assert not os.path.exists(os.path.join(sim.state_dir, "config.json"))


def test_connection_outcomes_in_plain_words(sim):
    r = _post(sim, "/connect", {"ssid": "HomeNet", "password": "wrong password"})
    url = _location(r)
    first = _get(sim, url)  # the page answers at once, while the radio is still trying
    assert b"Connecting to HomeNet" in first and b"http-equiv=refresh content='2;url=%s'" % url.encode() in first
    doc = json.loads(_get(sim, "/api/status").split(b"\r\n\r\n", 1)[1])
    assert doc["join"]["state"] == "connecting" and doc["join"]["ssid"] == "HomeNet"
    busy = _post(sim, "/connect", {"ssid": "HomeNet", "password": "correct horse"})  # a second tap meanwhile
    assert _location(busy) == url  # shows the attempt under way, starts no other
    for _ in range(100):
        page = _get(sim, url)
        if b"http-equiv=refresh" not in page:
            break
        time.sleep(0.2)
    assert b"Could not log in to HomeNet: the password is probably wrong" in page and b"(nothing was saved)" in page
    _, page = _submit(sim, "/connect", {"ssid_manual": "Elsewhere", "password": "whatever1"})
    assert b"Network Elsewhere not found" in page
    url, page = _submit(sim, "/connect", {"ssid": "<script>alert(1)</script>", "password": "whatever1"})
    assert b"Connected to &lt;script&gt;alert(1)&lt;/script&gt;" in page and b"10.9.9.9" in page
    assert b"What happens next: the setup network Measurement Device_" in page
    # Reloading the result shows it again and tries nothing again; the plain page has no stale notice.
    again = _get(sim, url).split(b"\r\n\r\n", 1)[1]
    assert b"Connected to" in again and b"msg busy" not in again and b"http-equiv=refresh" not in again
    plain = _get(sim, "/").split(b"\r\n\r\n", 1)[1]  # no notice on top, the last attempt in the WiFi part
    assert b"id=msg" not in plain and b"<p id=last class='msg ok'>Last attempt: Connected to &lt;script" in plain
    assert sim.output().count("portal: joining a network:") == 3


def test_once_configured_the_probes_get_their_usual_answers(sim):
    # the previous test saved a network: the phone must now see "internet works", not a portal
    r = _get(sim, "/generate_204", "connectivitycheck.gstatic.com")
    assert status(r) == 204
    r = _get(sim, "/connecttest.txt", "www.msftconnecttest.com")
    assert status(r) == 200 and r.endswith(b"Microsoft Connect Test")
    r = _get(sim, "/hotspot-detect.html", "captive.apple.com")
    assert status(r) == 200 and b"Success" in r


def test_once_configured_a_page_under_another_name_reads_only_a_redirect(sim):
    # DNS rebinding: the meter's DNS answers every name with its own address, so a site's script can
    # make the browser fetch http://evil.example/ from the meter: it must get nothing but a redirect.
    with open(os.path.join(sim.state_dir, "identity.json")) as f:
        ident = json.load(f)
    for path in ("/", "/api/status", "/api/readings", "/nowhere"):
        r = _get(sim, path, "evil.example")
        assert status(r) == 302 and _location(r) == "http://192.168.251.1/", (path, r[:300])
        assert ident["pin"].encode() not in r and ident["serial"].encode() not in r
    page = _get(sim, "/")  # the page itself, under its own name, can be shown by no other site
    assert status(page) == 200 and b"X-Frame-Options: DENY" in page
    assert b"Content-Security-Policy: frame-ancestors 'none'" in page
    assert status(_get(sim, "/", "localhost:%d" % sim.port)) == 200  # a desktop browser's name for it
    odd = raw(sim.port, ("PUT / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % sim.port).encode())
    assert status(odd) == 405 and b"X-Frame-Options: DENY" in odd  # every answer, whatever the method
    bad = raw(sim.port, b"GET / HTTP/1.1\r\nNoColon\r\n\r\n")  # and the server's own answers
    assert status(bad) == 400 and b"X-Frame-Options: DENY" in bad and b"frame-ancestors 'none'" in bad


def test_the_status_endpoint_has_the_readings_upload_and_links(sim):
    doc = json.loads(_get(sim, "/api/status").split(b"\r\n\r\n", 1)[1])
    phases = doc["readings"]["phases"]
    assert [p["phase"] for p in phases] == [1, 2, 3]
    for p in phases:
        assert 220 < p["vrms"] < 240 and p["irms"] > 5 and p["direction"] == "import"
        assert p["voltage_derived"] is False and p["ct_unplugged"] is False
    # (an earlier test saved a network, which the simulated radio joined: the AP lingers 3 minutes)
    assert doc["links"]["lan"]["state"] == "off" and doc["links"]["ap_up"] is True
    assert doc["upload"]["state"] == "off" and doc["upload"]["pending_records"] == 0
    assert doc["fixes"] == [] and doc["diagnostics"] == []
    r = _get(sim, "/api/readings")  # its old name
    assert status(r) == 308 and _location(r) == "/api/status"


def test_malformed_requests_get_a_clean_4xx(sim):
    cases = {
        b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n": (400,),
        b"GARBAGE\r\n\r\n": (400,),
        b"GET / HTTP/1.1\r\nNoColonHeader\r\n\r\n": (400,),
        b"GET / HTTP/1.1\r\nX: " + b"a" * 65536 + b"\r\n\r\n": (400,),
        b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 3000 + b"\r\n": (400,),
        b"POST /connect HTTP/1.1\r\nContent-Length: 999999\r\n\r\n": (413,),
        b"POST /connect HTTP/1.1\r\nContent-Length: -5\r\n\r\n": (400,),
        b"POST /connect HTTP/1.1\r\nContent-Length: zz\r\n\r\n": (400,),
        b"GET /%zz%e0%a4?x=%ff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n": (400, 404),
    }
    for req, want in cases.items():
        r = raw(sim.port, req)
        assert status(r) in want, (req[:60], r[:100])
    body = b"ssid=%zz%E0%A4&password=%ff%fe%fd%fc%fb%fa%f9%f8"
    r = raw(sim.port, b"POST /connect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert status(r) == 303
    assert b"did not arrive intact" in _get(sim, _location(r))


def test_changes_come_only_from_the_setup_page_itself(sim):
    before = json.loads(_get(sim, "/api/status").split(b"\r\n\r\n", 1)[1])
    for path, body in (("/reset", b"confirm=yes"), ("/fix", b"ct=1&reversed=1"), ("/fix", b"ct_phase=2,1,3"),
                       ("/connect", b"ssid=Cafe+Libre&password=")):
        head = (b"POST %s HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n" % (path.encode(), len(body)))
        # Another site's page posting a form to the meter (the browser says where the form came from)...
        r = raw(sim.port, head + b"Host: 127.0.0.1\r\nOrigin: http://evil.example\r\n\r\n" + body)
        assert status(r) == 403, (path, r[:200])
        # ...or a name that merely resolves to the meter (DNS rebinding): refused, nothing changed.
        r = raw(sim.port, head + b"Host: evil.example\r\n\r\n" + body)
        assert status(r) in (302, 403), (path, r[:200])
    after = json.loads(_get(sim, "/api/status").split(b"\r\n\r\n", 1)[1])
    assert after["fixes"] == before["fixes"] == [] and after["links"]["wifi_ssid"] == before["links"]["wifi_ssid"]
    assert after["join"] == before["join"]


def test_slowloris_connections_are_cut_and_excess_ones_refused(sim):
    socks = []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        socks.append(s)
    t0 = time.monotonic()
    answers = []
    for s in socks:
        try:
            answers.append(s.recv(100))
        except OSError:
            answers.append(b"")
        s.close()
    assert time.monotonic() - t0 < 9  # the head deadline (5 s) ended them, not our 10 s timeout
    assert sum(1 for a in answers if a.startswith(b"HTTP/1.0 503")) >= 3  # above the cap of 4: refused at once
    assert sum(1 for a in answers if a.startswith(b"HTTP/1.0 400")) >= 1  # the held ones: cut at the deadline
    assert _eventually_ok(sim), (sim.proc.poll(), sim.output()[-1500:])


def test_clients_that_never_read_their_page_cannot_hold_every_slot(sim):
    # Four clients ask for the page (~15 KB) and never read it: lwIP's 5.7 KB send buffer (which the
    # simulator gives the sockets) fills and each answer stops half way. The write deadline (10 s)
    # frees their slots; before it, they held all four for as long as they stayed connected.
    socks = []
    for _ in range(4):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # (before connecting: the window is small)
        s.connect(("127.0.0.1", sim.port))
        s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % sim.port).encode())
        socks.append(s)
    try:
        time.sleep(1)
        assert status(_get(sim, "/")) == 503  # all four slots taken by the readers that do not read
        assert _eventually_ok(sim, within_s=20), (sim.proc.poll(), sim.output()[-1500:])
    finally:
        for s in socks:
            s.close()


def _eventually_ok(sim, within_s=3.0):
    """The page is served again once the slots are free (a slot is freed just after its answer is sent)."""
    end = time.monotonic() + within_s
    while True:
        try:
            r = _get(sim, "/")
            if status(r) == 200:
                return True
        except OSError as e:
            r = e
        if time.monotonic() > end:
            print("last answer:", r)
            return False
        time.sleep(0.1)


@settings(max_examples=1200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"\xff", b""]),
       path=st.binary(max_size=80), headers=st.lists(st.binary(max_size=60), max_size=6),
       body=st.binary(max_size=300), clen=st.one_of(st.none(), st.integers(-10, 5000), st.binary(max_size=8)))
def test_fuzzed_requests_never_get_a_5xx_or_break_the_server(sim, method, path, headers, body, clen):
    head = method + b" /" + path.replace(b"\r", b"").replace(b"\n", b"") + b" HTTP/1.1\r\n"
    for h in headers:
        head += h.replace(b"\n", b"") + b"\r\n"
    if clen is not None:
        head += b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + (
            str(clen).encode() if isinstance(clen, int) else clen) + b"\r\n"
    r = raw(sim.port, head + b"\r\n" + body)
    code = status(r)
    assert code is not None and 200 <= code < 500, r[:200]


def _dns_probe(qid):
    return bytes([qid >> 8, qid & 255]) + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01p\x00\x00\x01\x00\x01"


PROBE_ID = [0]


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(packets=st.lists(st.binary(max_size=600), min_size=1, max_size=12))
def test_fuzzed_dns_packets_never_break_the_catch_all(sim, packets):
    """Each example sends up to 12 hostile datagrams, then a valid query that must still be answered."""
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.settimeout(3)
    PROBE_ID[0] = (PROBE_ID[0] + 1) & 0xFFFF
    probe = _dns_probe(PROBE_ID[0])
    try:
        for p in packets:
            d.sendto(p, ("127.0.0.1", sim.dns_port))
        d.sendto(probe, ("127.0.0.1", sim.dns_port))
        while True:
            reply, _ = d.recvfrom(1024)
            assert reply[2] & 0x80  # only ever responses
            if reply[:2] == probe[:2] and reply.endswith(bytes([192, 168, 251, 1])):
                break
            assert any(reply[:2] == p[:2] for p in packets)
    finally:
        d.close()


def test_dns_answers_every_name_with_the_ap_address(sim):
    q = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.settimeout(3)
    d.sendto(q, ("127.0.0.1", sim.dns_port))
    reply, _ = d.recvfrom(1024)
    d.close()
    assert reply[:2] == b"\xab\xcd" and reply.endswith(bytes([192, 168, 251, 1]))


def test_zz_after_all_of_that_the_server_is_up_and_its_heap_is_back_to_baseline(sim):
    assert sim.alive(), (sim.proc.returncode, sim.output()[-2000:])
    first = sim.heap()
    for _ in range(50):
        _get(sim, "/")
        raw(sim.port, b"GET /\xff HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n")
    time.sleep(0.5)
    after = sim.heap()
    assert after["active"] == 1  # only the heap request itself
    assert after["alloc"] - BASELINE[0] < 16 * 1024, (BASELINE[0], first, after)
    assert status(_get(sim, "/")) == 200
    out = sim.output()
    assert "Traceback" not in out, out[-3000:]


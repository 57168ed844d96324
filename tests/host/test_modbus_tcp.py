# The SDM630 over Modbus TCP as a reader sees it: firmware/sdm630.py and lib/modbus_tcp.py run under
# the real MicroPython unix port (in an ESP32's 96wK heap) on 127.0.0.1, read by a real Modbus client
# (pymodbus), then fed frames a reader gets wrong, floods of connections and a client that never
# reads its answers: each gets an exception response or a close, and the server keeps answering.
import json
import os
import socket
import struct
import subprocess
import time

import pytest
from pymodbus.client import ModbusTcpClient
from unit.sample_readings import readings, sdm630_registers

from tools import mp
from tools.sim.runner import free_port

pytestmark = pytest.mark.slow
CHILD = os.path.join(os.path.dirname(__file__), "sdm630_child.py")
IDLE_MS = 60_000  # long enough that no test but the idle one meets it (a flood can take seconds)
SHORT_IDLE_MS = 1500
TIMEOUT_MS = 1000
MAX_CLIENTS = 3  # Sdm630Output's default


def plain_env():
    """The firmware and lib/ without the simulated board: its virtual clock would stand still here,
    where nothing but the network runs."""
    return dict(os.environ, MICROPYPATH=os.pathsep.join([mp.ROOT, os.path.join(mp.ROOT, "lib"), ".frozen"]))


class Child:
    def __init__(self, tmp_path, idle_ms=IDLE_MS, port=None, wait=True):
        self.port = port or free_port()
        self.readings_path = str(tmp_path / "readings.json")
        self.stats_path = str(tmp_path / "stats.json")
        self.feed(readings())
        cmd = mp.command(CHILD, str(self.port), self.readings_path, self.stats_path, str(idle_ms), str(TIMEOUT_MS),
                         heapsize="96wK")
        self.proc = subprocess.Popen(cmd, env=plain_env(), cwd=mp.ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        if wait:
            self.wait_for(lambda s: s["listening"], "the server listens")

    def feed(self, r):
        with open(self.readings_path + ".tmp", "w") as f:
            json.dump(r, f)
        os.rename(self.readings_path + ".tmp", self.readings_path)

    def stats(self):
        try:
            with open(self.stats_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_for(self, cond, what, tries=500):
        for _ in range(tries):  # bounded: 500 looks 20 ms apart
            assert self.proc.poll() is None, "the server died:\n" + self.proc.stdout.read()
            s = self.stats()
            if s is not None and cond(s):
                return s
            time.sleep(0.02)
        raise AssertionError("never happened: %s (stats %s)" % (what, self.stats()))

    def stop(self):
        self.proc.kill()
        out = self.proc.communicate()[0]
        return out


@pytest.fixture
def child(tmp_path):
    c = Child(tmp_path)
    yield c
    out = c.stop()
    assert "Traceback" not in out, out


def _client(child):
    c = ModbusTcpClient("127.0.0.1", port=child.port, timeout=3, retries=0)
    assert c.connect()
    return c


def _float(c, addr, func=4):
    read = c.read_input_registers if func == 4 else c.read_holding_registers
    rr = read(addr, count=2, device_id=1)
    assert not rr.isError(), (hex(addr), rr)
    return c.convert_from_registers(rr.registers, data_type=c.DATATYPE.FLOAT32, word_order="big")


def _f32(x):
    return struct.unpack(">f", struct.pack(">f", x))[0]


def _still_answers(child):
    """One read by a new client; returns once the server has seen it leave (the stats file lags: a
    snapshot with the request counted and no client connected is after the client left)."""
    requests = child.stats()["requests"]
    c = _client(child)
    try:
        assert _float(c, 0x0000) == _f32(readings()["phases"][0]["vrms"])
    finally:
        c.close()
    return child.wait_for(lambda s: s["requests"] > requests and s["clients"] == 0, "the reader left")


def test_pymodbus_reads_every_mapped_register_as_fed(child):
    c = _client(child)
    try:
        for addr, value in sorted(sdm630_registers(readings()).items()):
            assert _float(c, addr) == _f32(value), hex(addr)
        # The 76 registers readers poll at once, and the holding registers openWB and others read.
        rr = c.read_input_registers(0, count=0x4C, device_id=1)
        assert not rr.isError() and len(rr.registers) == 0x4C
        assert c.convert_from_registers(rr.registers[0x46:0x48], data_type=c.DATATYPE.FLOAT32) == _f32(49.987)
        rr = c.read_holding_registers(0xFC00, count=2, device_id=1)
        assert c.convert_from_registers(rr.registers, data_type=c.DATATYPE.UINT32) == 12345678
        assert _float(c, 0x000A, func=3) == 3.0
        # A new window: the next read has it, on the same connection.
        child.feed(readings(scale=1.5))
        want = _f32(readings(scale=1.5)["phases"][2]["irms"])
        for _ in range(200):
            if _float(c, 0x000A) == want:
                break
            time.sleep(0.02)
        assert _float(c, 0x000A) == want
        for addr, value in sorted(sdm630_registers(readings(scale=1.5)).items()):
            assert _float(c, addr) == _f32(value), hex(addr)
    finally:
        c.close()


def test_unknown_registers_and_functions_get_the_sdm630_exceptions(child):
    c = _client(child)
    try:
        rr = c.read_input_registers(0x004C, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 2
        rr = c.read_holding_registers(0x0000, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 2
        rr = c.read_coils(0, count=8, device_id=1)
        assert rr.isError() and rr.exception_code == 1
        rr = c.write_register(0x0014, 5, device_id=1)
        assert rr.isError() and rr.exception_code == 1
        assert _float(c, 0x0034) == _f32(sum(p["real_power_w"] for p in readings()["phases"]))
    finally:
        c.close()


def _raw(child):
    s = socket.create_connection(("127.0.0.1", child.port), timeout=3)
    return s


def _recv_frame(s):
    head = b""
    while len(head) < 7:
        got = s.recv(7 - len(head))
        if not got:
            return None
        head += got
    body = b""
    n = struct.unpack(">H", head[4:6])[0] - 1
    while len(body) < n:
        got = s.recv(n - len(body))
        if not got:
            return None
        body += got
    return head + body


def _closed(s):
    """True when the server closed the connection (reads EOF or reset within the socket's timeout)."""
    try:
        return s.recv(300) == b""
    except ConnectionResetError:
        return True


def test_malformed_frames_get_an_exception_or_a_close_never_a_crash(child):
    # Wrong function code: an exception response, and the connection stays usable.
    s = _raw(child)
    s.sendall(struct.pack(">HHHBB", 1, 0, 2, 1, 0x2B))
    assert _recv_frame(s)[7:9] == bytes([0xAB, 1])
    # A frame whose length field says the PDU is shorter than a read needs: illegal data value.
    s.sendall(struct.pack(">HHHBBH", 2, 0, 4, 1, 4, 0))
    assert _recv_frame(s)[7:9] == bytes([0x84, 3])
    # Quantity 0 and quantity 200: illegal data value.
    for count in (0, 200):
        s.sendall(struct.pack(">HHHBBHH", 3, 0, 6, 1, 4, 0, count))
        assert _recv_frame(s)[7:9] == bytes([0x84, 3])
    # A good request on the same connection after all that.
    s.sendall(struct.pack(">HHHBBHH", 4, 0, 6, 1, 4, 0x46, 2))
    f = _recv_frame(s)
    assert f[:2] == b"\x00\x04" and struct.unpack(">f", f[9:13])[0] == _f32(49.987)
    s.close()
    # Protocol id not 0: not Modbus TCP, closed.
    s = _raw(child)
    s.sendall(struct.pack(">HHHBBHH", 5, 7, 6, 1, 4, 0, 2))
    assert _closed(s)
    s.close()
    # A length field beyond the largest frame, and one below the smallest: closed.
    for length in (300, 0xFFFF, 1, 0):
        s = _raw(child)
        s.sendall(struct.pack(">HHH", 6, 0, length) + b"\x01\x04\x00\x00\x00\x02")
        assert _closed(s), length
        s.close()
    # A short frame, then silence: closed after the frame's time runs out.
    s = _raw(child)
    s.sendall(struct.pack(">HHHBB", 7, 0, 6, 1, 4))
    assert _closed(s)
    s.close()
    # Random bytes.
    s = _raw(child)
    s.sendall(bytes(range(256)) * 4)
    assert _closed(s)
    s.close()
    child.wait_for(lambda st: st["dropped"] == 7 and st["clients"] == 0, "each bad connection closed by the server")
    _still_answers(child)


def _flood(child):
    requests = _still_answers(child)["requests"]
    held = [_raw(child) for _ in range(MAX_CLIENTS)]
    child.wait_for(lambda s: s["clients"] == MAX_CLIENTS, "the first clients are served")
    refused = child.stats()["refused"]
    flood = []
    for _ in range(40):
        try:
            flood.append(_raw(child))  # (waits while the listen backlog is full: the kernel retries)
        except OSError:  # not let in within the socket's timeout: also a refusal
            pass
    for s in flood:
        assert _closed(s)
        s.close()
    child.wait_for(lambda s: s["refused"] >= refused + len(flood), "the flood was refused")
    for s in held:  # the clients already connected are still answered
        s.sendall(struct.pack(">HHHBBHH", 9, 0, 6, 1, 4, 0x46, 2))
        assert struct.unpack(">f", _recv_frame(s)[9:13])[0] == _f32(49.987)
        s.close()
    return child.wait_for(lambda s: s["requests"] == requests + MAX_CLIENTS and s["clients"] == 0,
                          "the held clients left")


def test_a_flood_of_connections_is_refused_beyond_the_limit_and_the_heap_stays_bounded(child):
    first = _flood(child)
    _still_answers(child)
    # The poller and the task queue grow once to the most connections seen; nothing is kept per
    # refused or closed connection, so a second flood leaves the heap where the first did.
    second = _flood(child)
    _still_answers(child)
    assert second["heap_alloc"] <= first["heap_alloc"] + 256, (first, second)


def test_a_client_that_never_reads_is_closed_and_others_are_served(child):
    s = _raw(child)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = struct.pack(">HHHBBHH", 1, 0, 6, 1, 4, 0, 0x4C) * 64
    sent = 0
    try:
        for _ in range(20000):  # bounded: ~25 MB of requests at most
            s.sendall(request)
            sent += 1
    except OSError:  # the server closed it: the send fails (reset / broken pipe)
        pass
    stats = child.wait_for(lambda st: st["dropped"] >= 1, "the silent reader was closed")
    assert stats["clients"] <= 1
    s.close()
    _still_answers(child)


def test_an_idle_client_is_closed_so_its_place_is_free_again(tmp_path):
    child = Child(tmp_path, idle_ms=SHORT_IDLE_MS)
    held = [_raw(child) for _ in range(MAX_CLIENTS)]
    child.wait_for(lambda s: s["clients"] == MAX_CLIENTS, "all places taken")
    for s in held:
        s.settimeout(4 * SHORT_IDLE_MS / 1000)
        assert _closed(s)
        s.close()
    try:
        child.wait_for(lambda s: s["dropped"] == MAX_CLIENTS and s["clients"] == 0, "the idle clients closed")
        _still_answers(child)
    finally:
        assert "Traceback" not in child.stop()


def test_a_port_in_use_is_retried_until_it_is_free(tmp_path):
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    child = Child(tmp_path, port=taken.getsockname()[1], wait=False)
    try:
        child.wait_for(lambda s: not s["listening"], "running without its port")
        said = ""
        for _ in range(100):  # bounded: the first try fails at once, then waits 1 s
            said = _read_some(child)
            if "cannot listen on port" in said:
                break
        assert "cannot listen on port %d" % child.port in said and "trying again in 1 s" in said, said
        taken.close()
        child.wait_for(lambda s: s["listening"], "listening once the port is free", tries=1500)
        _still_answers(child)
    finally:
        taken.close()
        assert "Traceback" not in child.stop()


def _read_some(child):
    import select

    r, _, _ = select.select([child.proc.stdout], [], [], 0.05)
    return child.proc.stdout.readline() if r else ""

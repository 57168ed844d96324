# The SDM630 register map and the Modbus TCP framing: what a reader gets for each register, and the
# exception or silence for frames it gets wrong. The network side is tests/host/test_modbus_tcp.py.
import struct

import modbus_tcp
from sample_readings import readings, sdm630_registers

from firmware import sdm630


def _f32(x):
    """x as the SDM sends it: rounded to single precision."""
    return struct.unpack(">f", struct.pack(">f", x))[0]


def _frame(func, start, count, unit=1, tid=0x1234, proto=0):
    return bytearray(struct.pack(">HHHBBHH", tid, proto, 6, unit, func, start, count))


def _ask(m, req, unit=1):
    resp = bytearray(modbus_tcp.FRAME_MAX)
    n = modbus_tcp.answer(req, len(req), resp, unit, m.read)
    return bytes(resp[:n])


def _map(r=None):
    m = sdm630.Sdm630Map("12345678", 1)
    m.readings = readings() if r is None else r
    return m


def test_every_mapped_register_reads_as_the_sdm630_holds_it():
    m = _map()
    for addr, value in sdm630_registers(readings()).items():
        resp = _ask(m, _frame(4, addr, 2))
        tid, proto, length, unit, func, nbytes = struct.unpack(">HHHBBB", resp[:9])
        assert (tid, proto, length, unit, func, nbytes) == (0x1234, 0, 7, 1, 4, 4), hex(addr)
        got = struct.unpack(">f", resp[9:13])[0]  # big-endian, high word first
        assert got == _f32(value), (hex(addr), got, value)


def test_a_block_read_matches_the_single_reads_and_undefined_words_read_zero():
    m = _map()
    want = sdm630_registers(readings())
    resp = _ask(m, _frame(4, 0x0000, 0x4C))  # 76 registers: the SDM630's first block, as readers poll it
    assert resp[8] == 2 * 0x4C
    for addr in range(0, 0x4C, 2):
        got = struct.unpack(">f", resp[9 + 2 * addr:13 + 2 * addr])[0]
        assert got == (_f32(want[addr]) if addr in want else 0.0), hex(addr)


def test_a_read_may_start_or_end_inside_a_value():
    m = _map()
    whole = _ask(m, _frame(4, 0x0000, 4))[9:]
    assert _ask(m, _frame(4, 0x0001, 2))[9:] == whole[2:6]
    assert _ask(m, _frame(4, 0x0000, 1))[9:] == whole[0:2]


def test_energy_registers_keep_the_exact_counters_to_single_precision():
    r = readings()
    r["energy_mwh"]["net_import_mwh"] = 16_777_216_000  # 16,777.216 kWh: 2^24 Wh, exact in a float32
    got = struct.unpack(">f", _ask(_map(r), _frame(4, 0x0048, 2))[9:13])[0]
    assert got == _f32(16777.216) and abs(got - 16777.216) < 0.001  # float32 steps are 1/512 kWh there


def test_registers_outside_the_map_answer_illegal_data_address():
    m = _map()
    for start, count in ((0x004C, 2), (0x0040, 16), (0x0100, 2), (0x0158, 2), (0x016C, 2), (0xFFFE, 2), (0x0154, 4)):
        resp = _ask(m, _frame(4, start, count))
        assert resp[7:9] == bytes([0x84, 2]), (hex(start), resp)
        assert struct.unpack(">H", resp[4:6])[0] == 3
    assert _ask(m, _frame(3, 0x0000, 2))[7:9] == bytes([0x83, 2])  # holding 0: not served


def test_holding_registers_readers_ask_for():
    m = _map(readings(wiring="single-phase"))
    assert struct.unpack(">I", _ask(m, _frame(3, 0xFC00, 2))[9:13])[0] == 12345678
    assert struct.unpack(">f", _ask(m, _frame(3, 0x000A, 2))[9:13])[0] == 1.0  # 1P2W
    assert struct.unpack(">f", _ask(_map(), _frame(3, 0x000A, 2))[9:13])[0] == 3.0  # 3P4W
    m2 = sdm630.Sdm630Map("A1-B2", 7)
    m2.readings = readings()
    assert struct.unpack(">f", _ask(m2, _frame(3, 0x0014, 2, unit=7), unit=7)[9:13])[0] == 7.0
    # A serial that is not a number is hashed, the same every time.
    assert sdm630.serial_u32("A1-B2") == sdm630.serial_u32("A1-B2") != sdm630.serial_u32("A1-B3")


def test_before_the_first_window_the_meter_is_busy():
    m = sdm630.Sdm630Map("1", 1)
    assert _ask(m, _frame(4, 0, 2))[7:9] == bytes([0x84, 6])


def test_unknown_functions_answer_illegal_function():
    m = _map()
    for func in (1, 2, 5, 6, 16, 43, 0x7F):
        resp = _ask(m, _frame(func, 0, 2))
        assert resp[7:9] == bytes([0x80 | func, 1]), func


def test_bad_quantities_answer_illegal_data_value():
    m = _map()
    for count in (0, 126, 0xFFFF):
        assert _ask(m, _frame(4, 0, count))[7:9] == bytes([0x84, 3]), count
    short = _frame(4, 0, 2)[:10]  # function and half a start address
    short[5] = 4
    assert _ask(m, short)[7:9] == bytes([0x84, 3])


def test_other_unit_ids_answer_that_no_such_device_responds():
    m = _map()
    resp = _ask(m, _frame(4, 0, 2, unit=9))
    assert resp[6] == 9 and resp[7:9] == bytes([0x84, 0x0B])


def test_a_bug_in_the_map_is_answered_busy_not_raised():
    def broken(func, start, count, out, at):
        raise KeyError("vrms")

    resp = bytearray(modbus_tcp.FRAME_MAX)
    n = modbus_tcp.answer(_frame(4, 0, 2), 12, resp, 1, broken)
    assert resp[7:9] == bytes([0x84, 6]) and n == 9


def test_a_single_phase_site_reads_its_derived_phases_too():
    r = readings(wiring="single-phase")
    for ph in r["phases"][1:]:
        ph["voltage_derived"] = True
    m = _map(r)
    assert struct.unpack(">f", _ask(m, _frame(4, 0x0002, 2))[9:13])[0] == _f32(r["phases"][1]["vrms"])


def test_no_load_gives_zero_angles_and_power_factor():
    r = readings(scale=0.0)
    m = _map(r)
    for addr in (0x0024, 0x003E, 0x0042):
        assert struct.unpack(">f", _ask(m, _frame(4, addr, 2))[9:13])[0] == 0.0, hex(addr)


def test_a_phone_on_the_setup_access_point_is_not_served():
    # Readers on the LAN only: a peer from the AP's network (as the ESP32 gives it: ("a.b.c.d", port))
    # is closed at once and counted; the LAN's and the unix port's (raw sockaddr bytes) are served.
    class Writer:
        def __init__(self, peer):
            self.peer = peer
            self.closed = False

        def get_extra_info(self, key):
            return self.peer if key == "peername" else None

        def close(self):
            self.closed = True

        async def wait_closed(self):
            pass

    out = sdm630.Sdm630Output({"enabled": True, "port": 5020, "unit_id": 1}, "TEST-1", log=lambda m: None)
    w = Writer(("192.168.251.7", 50123))
    coro = out.server._client(None, w)  # it never waits on anything here: run it by hand
    try:
        coro.send(None)
    except StopIteration:
        pass
    assert w.closed and out.server.refused == 1 and out.server.clients == 0 and out.server.requests == 0
    assert out.server.allow(("192.168.1.20", 50123)) and out.server.allow(b"\x02\x00\xc3\x50\x7f\x00\x00\x01")

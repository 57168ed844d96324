# sdm630 — the meter's readings as an Eastron SDM630 answers them over Modbus (TCP here), so evcc,
# openWB and wallboxes that read an SDM630 read this meter unchanged.
#
# Register map: Eastron, "SDM630 Modbus Protocol" (V1.8/V2.0), input registers (function 04) 30001ff,
# each value an IEEE-754 single-precision float in two registers, high word first, big-endian bytes.
# Cross-checked with what readers read: evcc's meter template eastron-sdm630.yaml uses mbmd's "sdm"
# model (github.com/volkszaehler/mbmd, meters/rs485/sdm.go: every value with function 04, two
# registers), and openWB reads the serial number with function 03 at 0xFC00 (uint32).
#
# Which counters: 0x0048/0x004A (total import/export kWh) are the net counters, what a bidirectional
# utility meter bills (the phases' power summed first, then integrated: firmware/energy.py); the
# per-phase counters 0x015A.. are each phase's own import/export. They are the exact integer mWh
# counters (readings["energy_mwh"]) divided once, so the float is the nearest to the true count.
#
# Addresses the SDM630 leaves undefined between two mapped values of one block read as 0.0 (a block
# read of 0x0000-0x004B works as on the meter); addresses outside the blocks answer Modbus exception
# 2 (illegal data address), as the SDM630 does; before the first window closes, exception 6 (busy).
#
# The consumer (Sdm630Output) stores the latest readings and serves them from its own task; see
# docs/API.md for the whole map and how the composition root wires it.

import math
import struct

from modbus_tcp import BUSY, ILLEGAL_ADDRESS, Server

from firmware.links import AP_ADDR

# Blocks of input registers (function 04): [start, end) in register addresses.
INPUT_BLOCKS = ((0x0000, 0x004C), (0x0156, 0x0158), (0x015A, 0x016C))
# Holding registers (function 03) that readers ask for: system type, node address, serial number.
HOLDING_BLOCKS = ((0x000A, 0x000C), (0x0014, 0x0016), (0xFC00, 0xFC02))
SYSTEM_1P2W = 1.0  # holding 0x000A: 1 = single phase two wire, 3 = three phase four wire
SYSTEM_3P4W = 3.0


def phase_angle_deg(w, var):
    return math.degrees(math.atan2(var, w)) if (w or var) else 0.0


def input_value(r, addr):
    """The float an SDM630 holds at input register addr (even, inside INPUT_BLOCKS), from readings r."""
    ph = r["phases"]
    if addr < 0x0024:  # per phase: V, A, W, VA, var, PF (0x0000 + 6 × kind + 2 × phase)
        kind, p = divmod(addr >> 1, 3)
        return ph[p][("vrms", "irms", "real_power_w", "apparent_power_va", "reactive_power_var",
                      "power_factor")[kind]]
    if addr < 0x002A:  # phase angles
        x = ph[(addr - 0x0024) >> 1]
        return phase_angle_deg(x["real_power_w"], x["reactive_power_var"])
    if addr >= 0x0156:
        mwh = r["energy_mwh"]
        if addr == 0x0156:  # total kWh: import + export
            return (mwh["net_import_mwh"] + mwh["net_export_mwh"]) / 1e6
        kind, p = divmod((addr - 0x015A) >> 1, 3)  # L1-3 import, L1-3 export, L1-3 total
        if kind == 0:
            return mwh["import_mwh"][p] / 1e6
        if kind == 1:
            return mwh["export_mwh"][p] / 1e6
        return (mwh["import_mwh"][p] + mwh["export_mwh"][p]) / 1e6
    if addr == 0x002A:
        return (ph[0]["vrms"] + ph[1]["vrms"] + ph[2]["vrms"]) / 3
    if addr == 0x002E:
        return (ph[0]["irms"] + ph[1]["irms"] + ph[2]["irms"]) / 3
    if addr == 0x0030:
        return ph[0]["irms"] + ph[1]["irms"] + ph[2]["irms"]
    if addr == 0x0046:
        return r["frequency_hz"]
    if addr == 0x0048:
        return r["energy_mwh"]["net_import_mwh"] / 1e6
    if addr == 0x004A:
        return r["energy_mwh"]["net_export_mwh"] / 1e6
    w = ph[0]["real_power_w"] + ph[1]["real_power_w"] + ph[2]["real_power_w"]
    if addr == 0x0034:
        return w
    var = ph[0]["reactive_power_var"] + ph[1]["reactive_power_var"] + ph[2]["reactive_power_var"]
    if addr == 0x003C:
        return var
    if addr == 0x0042:
        return phase_angle_deg(w, var)
    va = ph[0]["apparent_power_va"] + ph[1]["apparent_power_va"] + ph[2]["apparent_power_va"]
    if addr == 0x0038:
        return va
    if addr == 0x003E:
        return max(-1.0, min(1.0, w / va)) if va > 0 else 0.0
    return 0.0  # undefined by the SDM630 between two values of the block (0x002C, 0x0032, ...)


def serial_u32(serial):
    """The serial number as the SDM's uint32 (holding 0xFC00): the serial itself when it is a number
    that fits, else its FNV-1a hash (stable, so a reader that keys on it sees the same meter)."""
    if serial.isdigit() and int(serial) < 1 << 32:
        return int(serial)
    h = 0x811C9DC5
    for c in serial.encode():
        h = ((h ^ c) * 0x01000193) & 0xFFFFFFFF
    return h


class Sdm630Map:
    """read(function, start, count, out, at) for lib/modbus_tcp.py, from the latest readings."""

    def __init__(self, serial, unit_id):
        self.serial = serial_u32(serial)
        self.unit_id = unit_id
        self.readings = None
        self._word = bytearray(4)

    def read(self, func, start, count, out, at):
        blocks = INPUT_BLOCKS if func == 4 else HOLDING_BLOCKS
        for lo, hi in blocks:
            if lo <= start and start + count <= hi:
                break
        else:
            return ILLEGAL_ADDRESS
        r = self.readings
        if func == 4 and r is None:
            return BUSY
        word = self._word
        addr = start & ~1  # a read may start or end in the middle of a value
        end = start + count
        while addr < end:
            if func == 4:
                struct.pack_into(">f", word, 0, input_value(r, addr))
            elif addr == 0xFC00:
                struct.pack_into(">I", word, 0, self.serial)
            elif addr == 0x000A:
                struct.pack_into(">f", word, 0, SYSTEM_1P2W if r and r["wiring"] == "single-phase" else SYSTEM_3P4W)
            else:  # 0x0014: the Modbus node address
                struct.pack_into(">f", word, 0, self.unit_id)
            for k in (0, 1):
                reg = addr + k
                if start <= reg < end:
                    o = at + 2 * (reg - start)
                    out[o] = word[2 * k]
                    out[o + 1] = word[2 * k + 1]
            addr += 2
        return 0


AP_NET = AP_ADDR[:AP_ADDR.rindex(".") + 1]  # the setup access point's network


def _on_the_lan(peer):
    """Readers on the LAN only, not phones on the setup access point. On the ESP32 a peer is ("a.b.c.d",
    port) (ports/esp32/modsocket.c socket_accept: netutils_format_inet_addr; extmod/asyncio/stream.py
    hands it on as "peername"); the unix port gives a raw sockaddr, never from that network."""
    return not (isinstance(peer, tuple) and isinstance(peer[0], str) and peer[0].startswith(AP_NET))


class Sdm630Output:
    """A readings consumer: on_readings() keeps the newest window, run() serves Modbus TCP.

    settings: the "modbus" section ({"enabled", "port", "unit_id"}); serial: the meter's serial;
    start_server: asyncio.start_server or a stand-in; log: a print-like function.
    """

    name = "modbus"  # (firmware/app.py: the outputs' names in console lines and task names)

    def __init__(self, settings, serial, host="0.0.0.0", log=print, max_clients=3, idle_ms=120_000,
                 timeout_ms=5000):
        self.settings = settings
        self.listen_host = host
        self.log = log
        self.map = Sdm630Map(serial, settings["unit_id"])
        self.server = Server(self.map.read, settings["unit_id"], max_clients, idle_ms, timeout_ms, log, _on_the_lan)

    def on_readings(self, readings):
        self.map.readings = readings  # the meter makes a new dict every window: keeping it is enough

    async def run(self):
        import asyncio

        if not self.settings["enabled"]:
            return
        delay_s = 1
        while True:
            try:
                await self.server.serve(self.listen_host, self.settings["port"])  # until closed
                return
            except OSError as e:  # the port is taken, or the interface is not up yet: try again later
                self.log("modbus: cannot listen on port %d (%r); trying again in %d s"
                         % (self.settings["port"], e, delay_s))
                self.server.close()
                await asyncio.sleep(delay_s)
                delay_s = min(60, 2 * delay_s)

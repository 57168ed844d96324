# mqtt_ha — the meter's readings on an MQTT broker, announced to Home Assistant by MQTT discovery.
#
# Topics (BASE = settings "base_topic" + "/" + serial, e.g. meter/ABC123):
#   BASE/status          "online" / "offline", retained; "offline" is also the last will
#   BASE/l1, /l2, /l3    one JSON object per phase, every interval_s (volts, amps, watts, vars, VA,
#                        power factor, import/export Wh), not retained
#   BASE/total           the totals: watts, vars, VA, hertz, import/export Wh (sum of the phases'
#                        counters) and net import/export Wh (what a bidirectional meter bills)
#   PREFIX/sensor/meter_SERIAL/OBJECT/config   Home Assistant discovery, retained, one per value,
#                        all under one device (identifiers meter_SERIAL, serial_number SERIAL)
# Energy is written from the exact integer mWh counters (readings["energy_mwh"]) as Wh with three
# decimals, never through a float. docs/API.md has examples.
#
# A readings consumer: on_readings() keeps a reference to the newest window (the meter makes a new
# dict each window); run() is its own task: connect, announce, publish, ping, and on any failure close,
# wait (1 s doubling to 60 s) and try again. Nothing in on_readings() waits on the network.

import asyncio
import json
import time

from mqtt import ETIMEDOUT, PINGRESP, Client, MqttError

BACKOFF_MAX_S = 60
KEEPALIVE_S = 60

# (object id, JSON key, name, unit, device_class, state_class, display precision); unit None: none
PHASE_SENSORS = (
    ("voltage", "vrms", "voltage", "V", "voltage", "measurement", 1),
    ("current", "irms", "current", "A", "current", "measurement", 2),
    ("power", "real_power_w", "power", "W", "power", "measurement", 0),
    ("reactive_power", "reactive_power_var", "reactive power", "var", "reactive_power", "measurement", 0),
    ("apparent_power", "apparent_power_va", "apparent power", "VA", "apparent_power", "measurement", 0),
    ("power_factor", "power_factor", "power factor", None, "power_factor", "measurement", 2),
    ("energy_import", "import_wh", "energy import", "Wh", "energy", "total_increasing", 0),
    ("energy_export", "export_wh", "energy export", "Wh", "energy", "total_increasing", 0),
)
TOTAL_SENSORS = (
    ("power", "real_power_w", "Power", "W", "power", "measurement", 0),
    ("reactive_power", "reactive_power_var", "Reactive power", "var", "reactive_power", "measurement", 0),
    ("apparent_power", "apparent_power_va", "Apparent power", "VA", "apparent_power", "measurement", 0),
    ("frequency", "frequency_hz", "Frequency", "Hz", "frequency", "measurement", 2),
    ("energy_import", "net_import_wh", "Energy import", "Wh", "energy", "total_increasing", 0),
    ("energy_export", "net_export_wh", "Energy export", "Wh", "energy", "total_increasing", 0),
)


def _num(x, fmt):
    """A JSON number, or null for NaN/infinity (which JSON cannot carry)."""
    return fmt % x if x == x and x not in (float("inf"), float("-inf")) else "null"


def _wh(mwh):
    return "%d.%03d" % (mwh // 1000, mwh % 1000)


def phase_json(ph, import_mwh, export_mwh):
    return ('{"vrms":%s,"irms":%s,"real_power_w":%s,"reactive_power_var":%s,"apparent_power_va":%s,'
            '"power_factor":%s,"import_wh":%s,"export_wh":%s}'
            % (_num(ph["vrms"], "%.2f"), _num(ph["irms"], "%.3f"), _num(ph["real_power_w"], "%.1f"),
               _num(ph["reactive_power_var"], "%.1f"), _num(ph["apparent_power_va"], "%.1f"),
               _num(ph["power_factor"], "%.3f"), _wh(import_mwh), _wh(export_mwh)))


def total_json(r):
    ph = r["phases"]
    e = r["energy_mwh"]
    w = var = va = 0.0
    for x in ph:
        w += x["real_power_w"]
        var += x["reactive_power_var"]
        va += x["apparent_power_va"]
    return ('{"real_power_w":%s,"reactive_power_var":%s,"apparent_power_va":%s,"frequency_hz":%s,'
            '"import_wh":%s,"export_wh":%s,"net_import_wh":%s,"net_export_wh":%s}'
            % (_num(w, "%.1f"), _num(var, "%.1f"), _num(va, "%.1f"), _num(r["frequency_hz"], "%.3f"),
               _wh(sum(e["import_mwh"])), _wh(sum(e["export_mwh"])), _wh(e["net_import_mwh"]),
               _wh(e["net_export_mwh"])))


class MqttOutput:
    """settings: the "mqtt" section (firmware/outputs_schema.py); serial: the meter's serial;
    open_connection(host, port, tls) -> (reader, writer), awaited (TLS with the CA in the settings:
    the composition root builds it); online() -> True when a link is up (and, for TLS, the clock set)."""

    name = "mqtt"  # (firmware/app.py: the outputs' names in console lines and task names)

    def __init__(self, settings, serial, open_connection, online=lambda: True, model="Home", sw_version="",
                 log=print):
        self.settings = settings
        self.serial = serial
        self.open_connection = open_connection
        self.online = online
        self.model = model
        self.sw_version = sw_version
        self.log = log
        self.base = "%s/%s" % (settings["base_topic"], serial)
        self.status_topic = self.base + "/status"
        self.readings = None
        self._fresh = False
        self.state = "off"  # off, waiting, connecting, connected, retrying
        self.message = ""
        self.published = 0  # state messages sent
        self.connects = 0

    def on_readings(self, readings):
        self.readings = readings
        self._fresh = True

    async def run(self):
        s = self.settings
        if not s["enabled"] or not s["host"]:
            self.state = "off"
            return
        delay_s = 1
        while True:
            if not self.online():
                self._say("waiting", "no network link yet")
                await asyncio.sleep(1)
                continue
            self._say("connecting", "%s:%d" % (s["host"], s["port"]))
            client = Client("meter-" + self.serial, s["user"], s["password"], KEEPALIVE_S,
                            (self.status_topic, "offline", True))
            try:
                reader, writer = await asyncio.wait_for(
                    self.open_connection(s["host"], s["port"], s["tls"]), client.timeout_s)
                client.reader, client.writer = reader, writer  # (closed below even if CONNECT fails)
                await client.connect(reader, writer)
                self.connects += 1
                self._say("connected", "%s:%d" % (s["host"], s["port"]))
                delay_s = 1
                await self._session(client)
            except asyncio.CancelledError:
                await client.close()
                raise
            except Exception as e:  # OSError, MqttError, EOFError, TimeoutError: the broker or the link
                self._say("retrying", "%s; next try in %d s" % (_why(e), delay_s))
            await client.close()
            await asyncio.sleep(delay_s)
            delay_s = min(BACKOFF_MAX_S, 2 * delay_s)

    async def _session(self, client):
        await client.publish(self.status_topic, "online", retain=True)
        if self.settings["discovery_prefix"]:
            for topic, payload in self.discovery():
                await client.publish(topic, payload, retain=True)
        interval_ms = self.settings["interval_s"] * 1000
        next_publish = next_ping = time.ticks_ms()
        pong_due = None
        while True:
            now = time.ticks_ms()
            if time.ticks_diff(now, next_publish) >= 0:
                next_publish = time.ticks_add(now, interval_ms)
                if self._fresh and self.readings is not None:
                    self._fresh = False
                    await self.publish_state(client, self.readings)
            if time.ticks_diff(now, next_ping) >= 0:
                next_ping = time.ticks_add(now, KEEPALIVE_S * 500)
                await client.ping()
                pong_due = time.ticks_add(now, int(client.timeout_s * 1000))
            if pong_due is not None and time.ticks_diff(now, pong_due) >= 0:
                raise MqttError("the broker stopped answering pings")
            wait_ms = min(time.ticks_diff(next_publish, now), time.ticks_diff(next_ping, now))
            if pong_due is not None:
                wait_ms = min(wait_ms, time.ticks_diff(pong_due, now))
            # Wait by listening: a connection the broker closed shows at once, not at the next publish.
            got = await client.read_packet(max(1, wait_ms) / 1000)
            if got is not None and got[0] == PINGRESP:
                pong_due = None

    async def publish_state(self, client, r):
        e = r["energy_mwh"]
        for p in range(3):
            await client.publish("%s/l%d" % (self.base, p + 1),
                                 phase_json(r["phases"][p], e["import_mwh"][p], e["export_mwh"][p]))
        await client.publish(self.base + "/total", total_json(r))
        self.published += 1

    def discovery(self):
        """(topic, payload) of every Home Assistant discovery config, made one at a time."""
        node = "meter_" + self.serial
        device = {"identifiers": [node], "name": "Meter " + self.serial, "manufacturer": "open meter",
                  "model": self.model, "serial_number": self.serial}
        if self.sw_version:
            device["sw_version"] = self.sw_version
        for where, sensors in (("l1", PHASE_SENSORS), ("l2", PHASE_SENSORS), ("l3", PHASE_SENSORS),
                               ("total", TOTAL_SENSORS)):
            for obj, key, name, unit, dclass, sclass, precision in sensors:
                oid = "%s_%s" % (where, obj)
                cfg = {"name": ("L%s %s" % (where[1], name)) if where != "total" else name,
                       "unique_id": "%s_%s" % (node, oid), "state_topic": "%s/%s" % (self.base, where),
                       "value_template": "{{ value_json.%s }}" % key, "device_class": dclass,
                       "state_class": sclass, "suggested_display_precision": precision,
                       "availability_topic": self.status_topic, "device": device}
                if unit:
                    cfg["unit_of_measurement"] = unit
                yield "%s/sensor/%s/%s/config" % (self.settings["discovery_prefix"], node, oid), json.dumps(cfg)

    def _say(self, state, message):
        if state != self.state or (state == "retrying" and message != self.message):
            self.log("mqtt: %s (%s)" % (state, message))
        self.state = state
        self.message = message


def connector(settings, resolve=None):
    """open_connection(host, port, tls) for MqttOutput over the board's own TCP/IP: TLS trusts exactly
    the CA in settings["ca_cert"] (base64 DER) and checks the broker's name (as lib/https.py does).
    resolve(host, port) -> address: the board's DNS seam (firmware/board.py), as the uploader uses;
    without it asyncio.open_connection resolves the name itself."""
    async def open_connection(host, port, tls):
        addr = resolve(host, port) if resolve else host
        if not tls:
            return await asyncio.open_connection(addr, port)
        import binascii
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED  # MicroPython's default for a client context is CERT_NONE
        ctx.load_verify_locations(cadata=binascii.a2b_base64(settings["ca_cert"]))
        return await asyncio.open_connection(addr, port, ssl=ctx, server_hostname=host)

    return open_connection


def _why(e):
    if isinstance(e, MqttError):
        return str(e)
    if isinstance(e, EOFError):
        return "the broker closed the connection"
    if isinstance(e, asyncio.TimeoutError) or (isinstance(e, OSError) and e.args and e.args[0] == ETIMEDOUT):
        return "no answer from the broker in time"
    return "cannot reach the broker (%r)" % (e,)

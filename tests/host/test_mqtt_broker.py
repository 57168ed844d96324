# MQTT against a real broker: Debian's mosquitto on 127.0.0.1 (tools/check.py installs it), the
# meter's output (firmware/mqtt_ha.py, lib/mqtt.py) under the real MicroPython unix port, and a real
# client (paho-mqtt) checking topics, payloads, the retained discovery configs, the last will, a
# broker killed and restarted mid-run, refused credentials, and TLS with the broker's CA.
import getpass
import json
import os
import shutil
import subprocess
import threading
import time

import paho.mqtt.client as paho
import pytest
from unit.sample_readings import readings

from tools import mp
from tools.sim.runner import free_port

pytestmark = pytest.mark.slow
HERE = os.path.dirname(__file__)
SERIAL = "TEST-0042"
BASE = "meter/" + SERIAL


def _mosquitto():
    for path in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if path and os.path.exists(path):
            return path
    return None


if _mosquitto() is None:  # tools/check.py installs it (as root) before the tests run
    pytest.skip("Debian's mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)


class Broker:
    def __init__(self, folder, port=None, extra=""):
        self.folder = folder
        self.port = port or free_port()
        self.conf = os.path.join(folder, "mosquitto-%d.conf" % self.port)
        with open(self.conf, "w") as f:
            # As root mosquitto drops to its own user, which cannot read the test's files: keep ours.
            f.write("listener %d 127.0.0.1\npersistence false\nuser %s\n%s\n"
                    % (self.port, getpass.getuser(), extra))
            if "password_file" not in extra:
                f.write("allow_anonymous true\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([_mosquitto(), "-c", self.conf], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        for _ in range(250):  # bounded: 5 s
            try:
                c = paho.Client(paho.CallbackAPIVersion.VERSION2)
                c.connect("127.0.0.1", self.port)
                c.disconnect()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stdout.read()
                time.sleep(0.02)
        raise AssertionError("mosquitto did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()


class Child:
    """The meter's MQTT output in MicroPython, fed readings by a stand-in meter loop."""

    def __init__(self, folder, settings):
        self.readings_path = os.path.join(folder, "readings.json")
        self.stats_path = os.path.join(folder, "stats.json")
        settings_path = os.path.join(folder, "settings.json")
        with open(settings_path, "w") as f:
            json.dump(settings, f)
        self.feed(readings())
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([mp.ROOT, os.path.join(mp.ROOT, "lib"), ".frozen"]))
        cmd = mp.command(os.path.join(HERE, "mqtt_child.py"), settings_path, self.readings_path, self.stats_path,
                         heapsize="96wK")
        self.proc = subprocess.Popen(cmd, env=env, cwd=mp.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)

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

    def wait_for(self, cond, what, tries=1000):
        for _ in range(tries):  # bounded: 1000 looks 20 ms apart
            assert self.proc.poll() is None, "the output died:\n" + self.proc.stdout.read()
            s = self.stats()
            if s is not None and cond(s):
                return s
            time.sleep(0.02)
        raise AssertionError("never happened: %s (stats %s)" % (what, self.stats()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        out = self.proc.communicate()[0]
        assert "Traceback" not in out, out
        return out


class Watcher:
    """paho-mqtt subscribed to everything: the last message per topic, with its retain flag."""

    def __init__(self, port, topics=("meter/#", "homeassistant/#")):
        self.messages = {}
        self.log = []
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, u, f, rc, p: [c.subscribe(t) for t in topics]
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c, u, msg):
        with self.lock:
            self.messages[msg.topic] = (msg.payload.decode(), msg.retain)
            self.log.append((msg.topic, msg.payload.decode(), msg.retain))

    def wait_for(self, cond, what, tries=1000):
        for _ in range(tries):
            with self.lock:
                if cond(self.messages):
                    return dict(self.messages)
            time.sleep(0.02)
        raise AssertionError("never seen: %s (topics %s)" % (what, sorted(self.messages)))

    def clear(self):
        with self.lock:
            self.messages.clear()
            self.log.clear()

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def _settings(port, **kw):
    s = {"enabled": True, "host": "127.0.0.1", "port": port, "tls": False, "ca_cert": "", "user": "",
         "password": "", "base_topic": "meter", "discovery_prefix": "homeassistant", "interval_s": 1}
    s.update(kw)
    return s


N_CONFIGS = 3 * 8 + 6  # per phase V, A, W, var, VA, PF, import, export; totals W, var, VA, Hz, import, export


@pytest.fixture
def broker(tmp_path):
    b = Broker(str(tmp_path))
    yield b
    b.kill()


def _states_match(msgs, r):
    for p in range(3):
        got = msgs.get("%s/l%d" % (BASE, p + 1))
        if got is None or abs(json.loads(got[0])["vrms"] - r["phases"][p]["vrms"]) > 0.01:
            return False
    return True


def test_topics_payloads_and_retained_discovery_reach_the_broker(broker, tmp_path):
    # The broker by a name only the board's resolve() knows (tests/host/mqtt_child.py).
    child = Child(str(tmp_path), _settings(broker.port, host="mqtt-broker.test"))
    try:
        child.wait_for(lambda s: s["state"] == "connected" and s["published"] >= 1, "connected and publishing")
        w = Watcher(broker.port)  # subscribes after the output connected: retained messages arrive as such
        msgs = w.wait_for(lambda m: sum(t.startswith("homeassistant/") for t in m) == N_CONFIGS
                          and all("%s/%s" % (BASE, x) in m for x in ("status", "l1", "l2", "l3", "total")),
                          "discovery, status and states")
        w.stop()
        # A subscriber that comes later gets the status and every discovery config, retained.
        w = Watcher(broker.port)
        retained = w.wait_for(lambda m: sum(t.startswith("homeassistant/") and m[t][1] for t in m) == N_CONFIGS
                              and m.get(BASE + "/status") == ("online", True), "retained discovery and status")
        configs = {t: json.loads(p) for t, (p, kept) in retained.items() if t.startswith("homeassistant/")}
        assert configs == {t: json.loads(p) for t, (p, _) in msgs.items() if t.startswith("homeassistant/")}
        for topic, cfg in configs.items():
            assert topic.startswith("homeassistant/sensor/meter_%s/" % SERIAL) and topic.endswith("/config")
            assert cfg["device"]["serial_number"] == SERIAL and cfg["device"]["identifiers"] == ["meter_" + SERIAL]
            assert cfg["availability_topic"] == BASE + "/status"
            assert cfg["state_class"] == ("total_increasing" if cfg["device_class"] == "energy" else "measurement")
            # Its value template names a key the state topic really carries.
            key = cfg["value_template"].split("value_json.")[1].rstrip(" }")
            assert key in json.loads(msgs[cfg["state_topic"]][0]), (topic, key)
        # The states are the readings fed in, and are not retained (a stale reading must not outlive the meter).
        r = readings()
        for p in range(3):
            payload, retained = msgs["%s/l%d" % (BASE, p + 1)]
            ph = json.loads(payload)
            assert not retained
            assert abs(ph["vrms"] - r["phases"][p]["vrms"]) < 0.01 and abs(ph["irms"] - r["phases"][p]["irms"]) < 0.001
            assert ph["import_wh"] == r["energy_mwh"]["import_mwh"][p] / 1000
        t = json.loads(msgs[BASE + "/total"][0])
        assert t["net_import_wh"] == 987654.321 and abs(t["frequency_hz"] - 49.987) < 0.001
        # A new window reaches the broker at the next interval.
        r2 = readings(scale=1.1)
        child.feed(r2)
        w.wait_for(lambda m: _states_match(m, r2), "the new window")
        w.stop()
        # Killed without a DISCONNECT (a power cut, a pulled cable): the broker publishes the last will.
        w = Watcher(broker.port, topics=(BASE + "/status",))
        w.wait_for(lambda m: m.get(BASE + "/status", ("",))[0] == "online", "online")
        child.proc.kill()
        w.wait_for(lambda m: m.get(BASE + "/status") == ("offline", False), "the last will")
        w.stop()
        w = Watcher(broker.port, topics=(BASE + "/status",))  # and it is retained for late subscribers
        w.wait_for(lambda m: m.get(BASE + "/status") == ("offline", True), "the retained will")
        w.stop()
    finally:
        child.stop()


def test_a_broker_killed_mid_run_never_stalls_the_meter_and_is_reconnected(broker, tmp_path):
    child = Child(str(tmp_path), _settings(broker.port))
    try:
        child.wait_for(lambda s: s["state"] == "connected" and s["published"] >= 1, "connected")
        broker.kill()
        down = child.wait_for(lambda s: s["state"] == "retrying", "the output notices the broker is gone")
        # While the broker is down the meter's loop keeps handing on windows: the output never blocks it.
        child.wait_for(lambda s: s["feeds"] >= down["feeds"] + 40, "windows handed on while the broker is down")
        assert child.stats()["connects"] == 1
        broker.start()  # the same port, a fresh broker: nothing retained survives it
        w = Watcher(broker.port)
        child.wait_for(lambda s: s["connects"] == 2 and s["state"] == "connected", "reconnected", tries=4000)
        msgs = w.wait_for(lambda m: sum(t.startswith("homeassistant/") for t in m) == N_CONFIGS
                          and BASE + "/total" in m and m.get(BASE + "/status", ("",))[0] == "online",
                          "discovery, status and states again")
        assert json.loads(msgs[BASE + "/total"][0])["net_export_wh"] == 12345.678
        w.stop()
    finally:
        child.stop()


def test_refused_credentials_are_said_plainly_and_retried(tmp_path):
    folder = str(tmp_path)
    pw = os.path.join(folder, "passwords")
    subprocess.run(["mosquitto_passwd", "-b", "-c", pw, "meter", "right-password"], check=True, capture_output=True)
    os.chmod(pw, 0o600)
    b = Broker(folder, extra="allow_anonymous false\npassword_file %s" % pw)
    child = Child(folder, _settings(b.port, user="meter", password="wrong-password"))
    try:
        s = child.wait_for(lambda s: s["state"] == "retrying", "refused")
        assert "refused the user name or password" in s["message"] or "not authorised" in s["message"], s
        assert "wrong-password" not in child.stop()  # never on the console
        child = Child(folder, _settings(b.port, user="meter", password="right-password"))
        child.wait_for(lambda s: s["state"] == "connected" and s["published"] >= 1, "connected with the right one")
    finally:
        child.stop()
        b.kill()


def test_tls_to_a_broker_the_configured_ca_vouches_for(tmp_path):
    import base64

    from tools import ingest

    folder = str(tmp_path)
    cert, key = ingest.ensure_certs(os.path.join(folder, "certs"))
    ca_pem = os.path.join(folder, "certs", "ca.pem")
    with open(os.path.join(folder, "certs", "ca.der"), "rb") as f:
        ca_b64 = base64.b64encode(f.read()).decode()
    b = Broker(folder, extra="cafile %s\ncertfile %s\nkeyfile %s" % (ca_pem, cert, key))
    child = Child(folder, _settings(b.port, host="localhost", tls=True, ca_cert=ca_b64))
    try:
        child.wait_for(lambda s: s["state"] == "connected" and s["published"] >= 1, "connected over TLS")
        c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        c.tls_set(ca_certs=ca_pem)
        got = []
        c.on_message = lambda c, u, m: got.append((m.topic, m.payload.decode(), m.retain))
        c.on_connect = lambda c, u, f, rc, p: c.subscribe(BASE + "/#")
        c.connect("localhost", b.port)
        c.loop_start()
        for _ in range(500):
            if any(t == BASE + "/status" and p == "online" for t, p, _ in got):
                break
            time.sleep(0.02)
        c.loop_stop()
        c.disconnect()
        assert (BASE + "/status", "online", True) in got
    finally:
        child.stop()
        b.kill()
    # A CA that did not sign the broker's certificate: no connection, and the reason is kept.
    other = ingest.ensure_certs(os.path.join(folder, "other"))
    assert other
    with open(os.path.join(folder, "other", "ca.der"), "rb") as f:
        wrong = base64.b64encode(f.read()).decode()
    b.start()
    child = Child(folder, _settings(b.port, host="localhost", tls=True, ca_cert=wrong))
    try:
        s = child.wait_for(lambda s: s["state"] == "retrying", "refused over TLS")
        assert s["connects"] == 0
    finally:
        child.stop()
        b.kill()

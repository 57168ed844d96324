# A board whose Ethernet does not start (`python -m tools.sim device --lan-fault`: no PHY answers, so
# network.LAN raises OSError as the ESP32 port does): the setup access point comes up at once, the page
# says why Ethernet is not there, and WiFi chosen on the page joins and carries the uploads.
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from tools import mp
from tools.sim.runner import free_port


def _status(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/api/status" % port, timeout=5) as r:
        return json.loads(r.read())


def _until(port, test, timeout_s=60):
    doc, end = None, time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            doc = _status(port)
            if test(doc):
                return doc
        except OSError:
            pass  # not serving yet
        time.sleep(0.5)
    raise AssertionError("never got there: %r" % (doc and {k: doc[k] for k in ("links", "upload", "join")}))


def test_without_its_ethernet_the_device_opens_its_setup_network_and_joins_wifi(tmp_path):
    port, dns_port = free_port(), free_port(socket.SOCK_DGRAM)
    device = subprocess.Popen([sys.executable, "-m", "tools.sim", "device", "--ingest", str(tmp_path / "ingest"),
                               "--lan-fault", "--port", str(port), "--dns-port", str(dns_port)],
                              cwd=mp.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        doc = _until(port, lambda d: d["links"]["ap_up"])
        lan = doc["links"]["lan"]
        assert lan["state"] == "failed" and "Ethernet did not start" in lan["error"], lan
        assert doc["links"]["online_via"] is None
        body = urllib.parse.urlencode({"ssid": "HomeNet", "password": "correct horse"}).encode()
        req = urllib.request.Request("http://127.0.0.1:%d/connect" % port, body,
                                     {"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=10) as r:  # (follows the redirect back to the page)
            assert r.status == 200
        doc = _until(port, lambda d: d["links"]["online_via"] == "wifi" and d["upload"]["state"] == "ok")
        assert doc["links"]["wifi_ssid"] == "HomeNet" and doc["links"]["lan"]["state"] == "failed"
    finally:
        device.terminate()
        out, _ = device.communicate(timeout=30)
    assert "Traceback" not in out, out
    assert out.count("network: Ethernet did not start") <= 4, out  # retried rarely, not every tick
    assert "access point: up as Measurement Device_" in out and "(Ethernet did not start)" in out, out

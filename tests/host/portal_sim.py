# portal_sim — starts `python -m tools.sim portal` on free 127.0.0.1 ports for the portal tests.
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from tools import mp
from tools.sim.runner import free_port

NETWORKS = {
    "connect_delay_ms": 3000,  # long enough that a busy machine still sees the page say "Connecting"
    "networks": [
        {"ssid": "HomeNet", "password": "correct horse", "rssi": -52, "ip": "192.168.1.77"},
        {"ssid": "Neighbour 5G", "password": "not-yours-123", "rssi": -71},
        {"ssid": "Cafe Libre", "password": None, "rssi": -80, "ip": "10.20.0.9"},
        {"ssid": "<script>alert(1)</script>", "password": "whatever1", "rssi": -64, "ip": "10.9.9.9"},
        {"ssid": "NoLease", "password": "password123", "rssi": -66, "dhcp": False},
    ],
}


class PortalSim:
    def __init__(self, state_dir, networks=NETWORKS, extra=()):
        self.state_dir = state_dir
        self.port = free_port()
        self.dns_port = free_port(socket.SOCK_DGRAM)
        self.base = "http://127.0.0.1:%d" % self.port
        path = os.path.join(state_dir, "networks.json")
        os.makedirs(state_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(networks, f)
        self.log_path = os.path.join(state_dir, "sim.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.sim", "portal", "--port", str(self.port), "--dns-port", str(self.dns_port),
             "--state-dir", state_dir, "--networks", path, *extra],
            cwd=mp.ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.heap()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the portal did not start:\n" + self.output())
                time.sleep(0.2)

    def output(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def heap(self):
        with urllib.request.urlopen(self.base + "/_sim/heap", timeout=5) as r:
            return json.loads(r.read())

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def raw(port, data, timeout=8.0, shut=True):
    """Send data on a fresh connection, close our side, return everything the server sends back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status(resp):
    line = resp.split(b"\r\n", 1)[0].split(b" ")
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None

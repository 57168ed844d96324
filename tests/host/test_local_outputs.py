# The local outputs wired into the whole device (issue 19): `tools.sim device --modbus-port P --mqtt
# HOST:PORT` runs the meter with Modbus TCP as an SDM630 and MQTT with Home Assistant discovery on
# 127.0.0.1, read by a real Modbus client (pymodbus) and a real broker (Debian's mosquitto) with paho.
import json
import struct
import subprocess
import sys
import time

import pytest

from tests.host.test_mqtt_broker import Broker, Watcher
from tools import mp
from tools.sim.runner import free_port

pytestmark = pytest.mark.slow


def _float(regs):
    return struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0]


def test_the_whole_device_serves_modbus_and_publishes_mqtt(tmp_path):
    from pymodbus.client import ModbusTcpClient

    broker = Broker(str(tmp_path))
    watcher = Watcher(broker.port)
    modbus_port, port, dns_port = free_port(), free_port(), free_port()
    state = str(tmp_path / "flash")
    log = open(str(tmp_path / "device.log"), "w")
    child = subprocess.Popen([sys.executable, "-m", "tools.sim", "device", "--duration", "40", "--state-dir", state,
                              "--port", str(port), "--dns-port", str(dns_port), "--modbus-port", str(modbus_port),
                              "--mqtt", "127.0.0.1:%d" % broker.port], cwd=mp.ROOT, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        # MQTT: retained discovery configs and each phase's state, from the device's own serial.
        msgs = watcher.wait_for(lambda m: any(t.endswith("/l1") for t in m)
                                and any(t.startswith("homeassistant/") for t in m), "the meter's topics", tries=1500)
        l1 = [t for t in msgs if t.startswith("meter/") and t.endswith("/l1")][0]
        assert 225 < json.loads(msgs[l1][0])["vrms"] < 235, msgs[l1]
        late = Watcher(broker.port, topics=("homeassistant/#",))  # a Home Assistant started later still finds them
        configs = late.wait_for(lambda m: len(m) >= 30, "30 retained discovery configs")
        late.stop()
        assert all(retained for _, retained in configs.values())
        assert json.loads(configs[min(configs)][0])["device"]["identifiers"]
        assert msgs[l1.rsplit("/", 1)[0] + "/status"][0] == "online"
        # Modbus: the SDM630's L1 voltage (0x0000) and frequency (0x0046) as the meter reads them.
        client = ModbusTcpClient("127.0.0.1", port=modbus_port, timeout=5)
        for _ in range(100):
            if client.connect():
                r = client.read_input_registers(0x0000, count=2, device_id=1)
                if not r.isError():
                    break
            time.sleep(0.2)
        assert not r.isError(), r
        assert 225 < _float(r.registers) < 235
        r = client.read_input_registers(0x0046, count=2, device_id=1)
        assert abs(_float(r.registers) - 50.0) < 0.05
        client.close()
    finally:
        child.terminate()
        child.wait(60)
        watcher.stop()
        broker.kill()
        log.close()
    out = open(str(tmp_path / "device.log")).read()
    assert "Traceback" not in out, out[-3000:]

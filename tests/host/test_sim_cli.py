# `python -m tools.sim` as a user meets it: its help, bundled scenarios by name, refused input files,
# and one simulator at a time on a folder and a port.
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from tools import mp
from tools.sim import claim
from tools.sim.__main__ import build_parser
from tools.sim.runner import UsageError, bundled_scenarios, free_port

ROOT = mp.ROOT


def _sim(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tools.sim", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _commands():
    ap = build_parser()
    (sub,) = [a for a in ap._actions if a.dest == "command"]
    return sub.choices


def test_every_sub_command_has_a_description_and_every_option_a_help_text():
    commands = _commands()
    assert set(commands) == {"device", "portal", "run", "soak", "accuracy", "truth", "heapmap", "calibrate"}
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 40, name
        for action in parser._actions:
            assert action.help and action.help.strip(), "%s %s has no help text" % (name, action.option_strings)
        r = _sim(name, "--help")
        assert r.returncode == 0 and parser.description.split(".")[0] in " ".join(r.stdout.split()), r.stdout


def test_soak_help_says_how_long_a_day_takes_on_a_desktop():
    text = " ".join(_sim("soak", "--help").stdout.split())
    assert "24 simulated hours took 7,900-8,500 s (2.2-2.4 h) of host time on a 2-core desktop" in text, text
    assert "--heapsize 96wK about twice that" in text


def test_scenarios_are_taken_by_bundled_name_for_every_command_that_takes_one():
    assert {"three-phase-balanced", "reversed-ct", "single-phase", "solar-export"} <= set(bundled_scenarios())
    r = _sim("run", "--scenario", "reversed-ct", "--duration", "3")
    assert r.returncode == 0, r.stderr
    assert [(d["code"], d["phase"]) for d in json.loads(r.stdout)["diagnostics"]] == [("ct_reversed", 2)]
    r = _sim("truth", "--scenario", "reversed-ct.json")  # the file's name works too
    assert r.returncode == 0 and {"phase": 2, "fault": "ct_reversed"} in json.loads(r.stdout)["wiring_faults"]
    port, dns_port = str(free_port()), str(free_port(socket.SOCK_DGRAM))
    r = _sim("device", "--scenario", "solar-export", "--duration", "5", "--port", port, "--dns-port", dns_port)
    assert r.returncode == 0 and "scenarios/solar-export.json" in r.stdout, r.stdout + r.stderr
    assert re.search(r"^L1 .*W export", r.stdout, re.M), r.stdout  # a readings line: that scenario's mains
    # An unknown name: refused before anything starts, with the names there are.
    for command in (["run", "--duration", "1"], ["truth"], ["device"], ["portal"]):
        r = _sim(*command, "--scenario", "reversed-tc")
        assert r.returncode == 2 and r.stdout == "", r.stdout
        assert "--scenario reversed-tc: no such file, and no bundled scenario of that name" in r.stderr
        assert ", ".join(bundled_scenarios()) in r.stderr


def test_a_networks_file_with_an_unknown_key_is_refused_naming_it(tmp_path):
    cases = (({"networks": [{"ssid": "HomeNet", "pasword": "correct horse"}]},
              "radio.networks[0]: unknown key 'pasword' (known keys: auth_fail_reason, channel, dhcp, hidden, ip, "
              "password, rssi, ssid)"),
             ({"lan_lnk": True}, "radio: unknown key 'lan_lnk'"),
             ({"networks": [{"ssid": "x" * 33}]}, "radio.networks[0].ssid: must be a string of 1-32 bytes"),
             ({"connect_delay_ms": "soon"}, "radio.connect_delay_ms: must be a whole number from 0 to 60000"),
             ({"dns_answers": "no"}, "radio.dns_answers: must be true or false"))
    state = tmp_path / "flash"
    for k, (doc, words) in enumerate(cases):
        path = tmp_path / ("radio%d.json" % k)
        path.write_text(json.dumps(doc))
        command = ("portal", "device")[k % 2]  # both take a radio script
        r = _sim(command, "--networks", str(path), "--state-dir", str(state), "--port", str(free_port()))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "sim: networks file %s: %s" % (path, words) in r.stderr, r.stderr
    assert not state.exists()  # refused before anything was made
    r = _sim("portal", "--networks", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read it" in r.stderr


def test_the_bundled_networks_file_passes_its_own_check():
    from tools.sim import radio
    from tools.sim.__main__ import DEFAULT_NETWORKS

    with open(DEFAULT_NETWORKS) as f:
        script = radio.load_networks(json.load(f))
    assert len(script["networks"]) == 5 and script["networks"][2]["password"] is None


def test_a_folder_is_held_by_one_simulator_and_freed_when_it_dies_however_it_dies(tmp_path):
    folder = str(tmp_path / "ingest")
    fd = claim.hold(folder, port=8080)
    with pytest.raises(UsageError, match=r"another simulator \(process %d, setup page on 127.0.0.1:8080\) is "
                                         r"running on %s" % (os.getpid(), folder)):
        claim.hold(folder)
    os.close(fd)
    os.close(claim.hold(folder))  # released: free again
    # A holder killed outright (no clean-up at all) leaves no stale lock behind.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from tools.sim import claim; "
                               "claim.hold(sys.argv[1]); print('held', flush=True); time.sleep(60)", folder],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UsageError, match="process %d" % holder.pid):
            claim.hold(folder)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    os.close(claim.hold(folder))


def test_a_second_simulator_on_a_held_state_dir_is_refused(tmp_path):
    state = str(tmp_path / "flash")
    fd = claim.hold(state, port=8080)  # as a running simulator holds it
    try:
        port = str(free_port())
        for command in (["run", "--scenario", "three-phase-balanced"], ["portal", "--port", port],
                        ["device", "--port", port]):
            r = _sim(*command, "--state-dir", state, "--duration", "1")
            assert r.returncode == 2, (command, r.stdout, r.stderr)
            assert "another simulator (process %d, setup page on 127.0.0.1:8080) is running on %s" % (
                os.getpid(), state) in r.stderr, r.stderr
        assert os.listdir(state) == [claim.LOCK_NAME]  # nothing of a second device's was written
    finally:
        os.close(fd)


def test_a_port_taken_by_another_program_is_named(tmp_path):
    web = socket.socket()
    web.bind(("127.0.0.1", 0))
    web.listen()
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    try:
        taken_tcp, taken_udp = web.getsockname()[1], dns.getsockname()[1]
        free_tcp, free_udp = free_port(), free_port(socket.SOCK_DGRAM)
        for command in ("device", "portal"):
            r = _sim(command, "--port", str(taken_tcp), "--dns-port", str(free_udp), "--duration", "1")
            assert r.returncode == 2, r.stdout + r.stderr
            assert "--port %d: the setup page cannot listen on 127.0.0.1:%d" % (taken_tcp, taken_tcp) in r.stderr
            assert "choose a free port with --port" in r.stderr
            r = _sim(command, "--port", str(free_tcp), "--dns-port", str(taken_udp), "--duration", "1")
            assert r.returncode == 2, r.stdout + r.stderr
            assert "--dns-port %d: the DNS catch-all cannot listen on 127.0.0.1:%d" % (taken_udp, taken_udp) in r.stderr
    finally:
        web.close()
        dns.close()


def test_frozen_code_needs_a_heapsize_and_a_micropython_with_the_code_in_it():
    port, dns_port = str(free_port()), str(free_port(socket.SOCK_DGRAM))
    r = _sim("device", "--frozen", "--duration", "2", "--port", port, "--dns-port", dns_port)
    assert r.returncode != 0 and "--frozen: needs --heapsize" in r.stderr, r.stderr
    # The venv's MicroPython has no meter code frozen in: said so, before the device starts.
    r = _sim("device", "--heapsize", "96wK", "--frozen", "--duration", "2", "--port", port, "--dns-port", dns_port)
    assert r.returncode != 0, r.stdout
    assert "this MicroPython has no firmware frozen in" in r.stdout + r.stderr, r.stdout + r.stderr

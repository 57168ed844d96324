# radio — the simulated WiFi radio's script (`tools.sim portal --networks FILE.json`), checked.
#
# Runs under CPython (the host refuses a bad file before it starts anything) and under MicroPython
# (tools/sim/portal_main.py builds the simulated networks from the checked copy). A file such as
# tools/sim/networks.json:
#   {"description": "...", "connect_delay_ms": 1500, "lan_link": false, "dns_ms": 20, "dns_answers": true,
#    "ntp_ms": 100,
#    "networks": [{"ssid": "HomeNet", "password": "correct horse", "rssi": -52, "channel": 6,
#                  "hidden": false, "dhcp": true, "ip": "192.168.1.77"}, ...]}
# Every key but "ssid" may be left out (the defaults below). A key the simulator does not know, most
# likely a typo, is refused with a message naming it, as a scenario's are (tools/sim/mains.py).

from tools.sim.mains import ScenarioError, _choice, _fail, _flag, _integer, _keys

DEFAULTS = {
    "description": "",
    "networks": [],
    "connect_delay_ms": 1500,  # association + DHCP
    "lan_link": False,  # the Ethernet cable is in
    # The calls that hold the whole VM on the board (simworld.block_us): how long a name lookup takes,
    # whether the DNS server answers at all (false: each lookup blocks dns_ms, then fails), and how
    # long setting the clock by NTP takes.
    "dns_ms": 20,
    "dns_answers": True,
    "ntp_ms": 100,
}
NETWORK_DEFAULTS = {
    "ssid": None,  # required: 1-32 bytes of UTF-8, as a WPA2 network's name
    "password": None,  # null: an open network
    "rssi": -60,  # dBm
    "channel": 6,
    "hidden": False,  # not in a scan; joined by name
    "dhcp": True,  # false: associates, but never gets an address
    "ip": "10.0.0.50",  # the address its DHCP server gives
    "auth_fail_reason": 15,  # the disconnect reason a wrong password brings (15, 202, 204 or 205)
}

RadioError = ScenarioError  # (one kind of error for the simulator's input files)


def _network(where, given):
    n = _keys(where, given, NETWORK_DEFAULTS)
    ssid = n["ssid"]
    if not isinstance(ssid, str) or not 1 <= len(ssid.encode()) <= 32:
        _fail(where + ".ssid", "must be a string of 1-32 bytes of UTF-8", ssid)
    if n["password"] is not None and not isinstance(n["password"], str):
        _fail(where + ".password", "must be a string, or null for an open network", n["password"])
    ip = n["ip"]
    parts = ip.split(".") if isinstance(ip, str) else []
    if len(parts) != 4 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        _fail(where + ".ip", "must be an IPv4 address like \"10.0.0.50\"", ip)
    return {
        "ssid": ssid,
        "password": n["password"],
        "rssi": _integer(where + ".rssi", n["rssi"], -100, 0),
        "channel": _integer(where + ".channel", n["channel"], 1, 13),
        "hidden": _flag(where + ".hidden", n["hidden"]),
        "dhcp": _flag(where + ".dhcp", n["dhcp"]),
        "ip": ip,
        "auth_fail_reason": _choice(where + ".auth_fail_reason", n["auth_fail_reason"], (15, 202, 204, 205)),
    }


def load_networks(given):
    """A checked copy of a radio script (a dict from the JSON file), defaults filled in; RadioError
    naming the key and the rule if it is wrong."""
    r = _keys("radio", given, DEFAULTS)
    if not isinstance(r["description"], str):
        _fail("radio.description", "must be a string", r["description"])
    if not isinstance(r["networks"], list):
        _fail("radio.networks", "must be a list of network objects", r["networks"])
    return {
        "description": r["description"],
        "networks": [_network("radio.networks[%d]" % k, n) for k, n in enumerate(r["networks"])],
        "connect_delay_ms": _integer("radio.connect_delay_ms", r["connect_delay_ms"], 0, 60000),
        "lan_link": _flag("radio.lan_link", r["lan_link"]),
        "dns_ms": _integer("radio.dns_ms", r["dns_ms"], 0, 60000),
        "dns_answers": _flag("radio.dns_answers", r["dns_answers"]),
        "ntp_ms": _integer("radio.ntp_ms", r["ntp_ms"], 0, 60000),
    }

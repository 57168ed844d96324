# network — a simulated ESP32 `network` module: WLAN (station and access point) and LAN.
#
# Same names, constants and call shapes as MicroPython's ESP32 port. What the radio sees and how a
# connection attempt ends (joined, wrong password, not found, no DHCP lease) is scripted in
# simworld.world (networks, connect_delay_us, lan_link). WLAN objects are per-interface singletons,
# as on the board.

from simworld import world

STA_IF = 0
AP_IF = 1

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4
AUTH_WPA3_PSK = 6
AUTH_WPA2_WPA3_PSK = 7

PHY_LAN8710 = 0
PHY_LAN8720 = 1
PHY_IP101 = 2
PHY_RTL8201 = 3
PHY_DP83848 = 4
PHY_KSZ8041 = 5
PHY_KSZ8081 = 6

_PIN_IN = 1  # machine.Pin.IN: GPIO_MODE_INPUT, which get_lan() compares ref_clk_mode with

ETH_INITIALIZED = 0
ETH_STARTED = 1
ETH_STOPPED = 2
ETH_CONNECTED = 3
ETH_DISCONNECTED = 4
ETH_GOT_IP = 5

_hostname = "esp32"


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


def _addr4(value):
    if isinstance(value, tuple):
        return value
    ip, _, prefix = value.partition("/")
    bits = int(prefix or 24)
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    return ip, ".".join(str(mask >> s & 255) for s in (24, 16, 8, 0))


class WLAN:
    IF_STA = STA_IF
    IF_AP = AP_IF
    SEC_OPEN = AUTH_OPEN
    SEC_WEP = AUTH_WEP
    SEC_WPA = AUTH_WPA_PSK
    SEC_WPA2 = AUTH_WPA2_PSK
    SEC_WPA_WPA2 = AUTH_WPA_WPA2_PSK
    SEC_WPA3 = AUTH_WPA3_PSK
    SEC_WPA2_WPA3 = AUTH_WPA2_WPA3_PSK
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __new__(cls, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        obj = world.wlans.get(interface_id)
        if obj is None:
            obj = object.__new__(cls)
            obj._if = interface_id
            obj._active = False
            obj._target = None  # (Network or None, key, started_us) of the attempt under way
            obj._connected = False  # got an IP
            obj._associated = False  # the access point took the key (with or without an IP)
            obj._reason = 0  # wifi_sta_disconn_reason: the last STA_DISCONNECTED event's
            obj._requested = False  # wifi_sta_connect_requested
            obj._conf_reconnects = 0  # conf_wifi_sta_reconnects: 0 for ever, else reconnects + 1
            obj._reconnects = 0  # wifi_sta_reconnects
            obj._attempts = 0  # failed attempts in all (a simulation count)
            obj._cfg = {"ssid": "ESP_123456" if interface_id == AP_IF else "", "channel": 1,
                        "security": AUTH_OPEN, "hidden": False, "max_clients": 10,
                        "reconnects": -1, "txpower": 20, "pm": 1}
            obj._addr = ("192.168.4.1", "255.255.255.0") if interface_id == AP_IF else ("0.0.0.0", "0.0.0.0")
            # ESP-IDF's default AP netif: 192.168.4.1/24 with gateway 192.168.4.1. Its DHCP server
            # offers the interface's gateway as the router (see dhcp_offer()).
            obj._gw = "192.168.4.1" if interface_id == AP_IF else "0.0.0.0"
            world.wlans[interface_id] = obj
        return obj

    def __init__(self, interface_id=STA_IF):
        pass

    # The station follows ports/esp32/network_wlan.c (v1.24-1.28): connect() starts an attempt and
    # resets the reconnect counter but keeps the last disconnect reason; each failed attempt is a
    # STA_DISCONNECTED event that sets the reason and, while a connection is requested and reconnects
    # are left (config(reconnects=n): n more; -1, the default, for ever), starts the next attempt;
    # status() reads the reason as network_wlan_status() does, so a wrong password that arrives as
    # reason 15 (4-way handshake timeout) or 204 reads STAT_CONNECTING for as long as reconnects
    # go on, and a reason from the previous attempt is reported until the new one has an event.
    # Attempts run on the virtual clock: each ends world.connect_delay_us after it starts.
    # One radio (ESP-IDF's Station/AP coexistence): an attempt that reaches a network, with the right
    # key or not, tunes the radio to its channel, and the access point goes with it, dropping the
    # phones on it (simworld.tune); config("channel") reads the radio's (esp_wifi_get_channel()).

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        if not self._active and self._if == AP_IF:
            world.ap_phones = []
        if not self._active:
            # network_wlan_active(): esp_wifi_stop() or set_mode() without STA; a station that was
            # associated gets its STA_DISCONNECTED (ASSOC_LEAVE), which reconnects no more with STA
            # off. wifi_sta_connect_requested is *kept*: once active again, status() says
            # STAT_CONNECTING (reason 0) or the last reason, though nothing is trying until connect().
            self._events()
            if self._associated:
                self._reason = 8
            self._target = None
            self._connected = self._associated = False

    def _require_active(self):
        if not self._active:
            raise OSError("Wifi Not Started")

    def _events(self):
        """Play the attempts' events up to now (the ESP-IDF event task, between two Python calls)."""
        while self._target is not None and not self._connected:
            net, key, started = self._target
            if world.now_us() - started < world.connect_delay_us:
                return
            end = started + world.connect_delay_us
            if net is not None:
                world.tune(net.channel)  # authenticating, right or wrong key, is on the network's channel
            if net is not None and (net.password is None or key == net.password):
                self._associated = True  # WIFI_EVENT_STA_CONNECTED: the reason is not cleared
                if net.dhcp:
                    self._connected, self._reason = True, 0  # IP_EVENT_STA_GOT_IP clears it
                return  # without a lease it stays associated, "connecting"
            self._reason = STAT_NO_AP_FOUND if net is None else net.auth_fail_reason
            self._attempts += 1
            if self._requested and (self._conf_reconnects == 0 or self._reconnects + 1 < self._conf_reconnects):
                self._reconnects += 1
                self._target = (net, key, end)  # esp_wifi_connect() again, from the event handler
            else:
                if self._conf_reconnects:
                    self._reconnects += 1
                self._target = None

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._if != STA_IF:
            raise OSError("AP can't connect")
        self._require_active()
        ssid = ssid.encode() if isinstance(ssid, str) else ssid
        if ssid is None or not 1 <= len(ssid) <= 32:
            raise ValueError("invalid SSID")
        if key is not None and len(key) > 64:
            raise ValueError("invalid key")
        self._events()
        if self._target is not None:  # ESP-IDF refuses a connect over a live attempt
            raise OSError("Wifi Internal Error")
        self._reconnects = 0
        self._requested = True
        self._target = (world.find_network(ssid), key or None, world.now_us())  # the reason is kept

    def disconnect(self):
        self._events()
        self._requested = False
        if self._target is not None or self._connected:
            self._reason = 8  # WIFI_REASON_ASSOC_LEAVE: status() reads it as STAT_IDLE
        self._target = None
        self._connected = self._associated = False

    def status(self, param=None):
        if param == "rssi":  # esp_wifi_sta_get_ap_info(): fails unless associated (an IP or not)
            if self._if != STA_IF:
                raise OSError("STA required")
            self._events()
            if not self._associated:
                raise OSError("Wifi Not Connected")
            return self._target[0].rssi
        if param == "stations":
            if self._if != AP_IF:
                raise OSError("AP required")  # require_if(), network_wlan_status()
            if self.active() and world.wlans.get(STA_IF) is not None:
                world.wlans[STA_IF]._events()  # (a station attempt may have moved the channel by now)
            return [(mac,) for mac in world.ap_phones] if self._active else []
        if param is not None:
            raise ValueError("unknown status param")
        if self._if == AP_IF:
            return None
        self._events()
        r = self._reason
        if self._connected:
            return STAT_GOT_IP
        if r in (STAT_NO_AP_FOUND, 210, 211, 212):  # no AP found (in the RSSI/authmode threshold, compatible)
            return r
        if r in (STAT_WRONG_PASSWORD, 205):  # AUTH_FAIL, CONNECTION_FAIL: "wrong password"
            return STAT_WRONG_PASSWORD
        if r == 8:  # ASSOC_LEAVE, after disconnect()
            return STAT_IDLE
        if self._requested and (self._conf_reconnects == 0 or self._reconnects < self._conf_reconnects):
            return STAT_CONNECTING
        return STAT_IDLE if r == 0 else r

    def isconnected(self):
        if self._if == AP_IF:
            return self._active and bool(self.status("stations"))
        return self.status() == STAT_GOT_IP

    def scan(self):
        if self._if != STA_IF:
            raise OSError("AP can't scan")
        if not self._active:
            raise OSError("STA must be active")
        self._events()
        if self._target is not None and not self._connected:
            # esp_wifi_scan_start() refuses while the station is connecting (ESP_ERR_WIFI_STATE) and
            # network_wlan_scan() then returns an empty list, without an error.
            return []
        world.advance_us(2_000_000)  # a blocking scan takes about two seconds
        out = []
        for n in world.visible_networks():
            sec = AUTH_OPEN if n.password is None else AUTH_WPA2_PSK
            out.append((b"" if n.hidden else n.ssid, n.bssid, n.channel, n.rssi, sec, n.hidden))
        return out

    def config(self, *args, **kwargs):
        if args:
            if len(args) != 1 or kwargs:
                raise TypeError("either one positional or keyword args")
            name = args[0]
            if name == "mac":
                return b"\x24\x0a\xc4\x12\x34" + (b"\x56" if self._if == STA_IF else b"\x57")
            if name == "key":
                raise ValueError("unknown config param")  # the ESP32 never reads a key back
            if name == "ssid" and self._if == STA_IF and self.isconnected():
                return self._target[0].ssid.decode()
            if name == "reconnects" and self._if == STA_IF:
                return self._conf_reconnects - 1
            if name == "channel":  # esp_wifi_get_channel(): the one radio's, whichever interface asks
                if world.wlans.get(STA_IF) is not None:
                    world.wlans[STA_IF]._events()
                return world.radio_channel
            if name not in self._cfg:
                raise ValueError("unknown config param")
            return self._cfg[name]
        for name, value in kwargs.items():
            if name == "authmode":
                name = "security"
            if name == "key":
                if self._if == AP_IF and value and not 8 <= len(value) <= 64:
                    raise ValueError("invalid key")
                self._key = value
                continue
            if name == "reconnects":
                if self._if != STA_IF:
                    raise OSError("STA required")
                self._conf_reconnects = 0 if value == -1 else value + 1
                continue
            if name not in self._cfg:
                raise ValueError("unknown config param")
            if name == "ssid" and not 1 <= len(value.encode() if isinstance(value, str) else value) <= 32:
                raise ValueError("invalid SSID")
            if name == "channel":  # the AP's channel (cfg.ap.channel), which the station's may override
                sta = world.wlans.get(STA_IF)
                if self._if == STA_IF or sta is None or not sta._associated:
                    world.tune(value)
            self._cfg[name] = value

    def ipconfig(self, *args, **kwargs):
        # As ports/esp32/network_common.c esp_ipconfig() does it: addr4 ("a.b.c.d/n" or a tuple) sets
        # the address and mask only, gw4 the gateway; on the AP both restart the DHCP server, which
        # then offers the gateway as the router, however far outside the new subnet it lies.
        if args:
            if kwargs or len(args) != 1:
                raise TypeError("can't specify pos and kw args")
            if args[0] == "addr4":
                if self._if == STA_IF:
                    return (self._target[0].ip, "255.255.255.0") if self.isconnected() else ("0.0.0.0", "0.0.0.0")
                return self._addr
            if args[0] == "gw4":
                if self._if == STA_IF:
                    return "10.0.0.1" if self.isconnected() else "0.0.0.0"
                return self._gw
            if args[0] == "dhcp4":
                if self._if == AP_IF:
                    raise ValueError("unexpected key")
                return True
            raise ValueError("unexpected key")
        for key in kwargs:
            if key not in ("addr4", "gw4", "dhcp4"):
                raise ValueError("unexpected key")
        if "addr4" in kwargs:
            self._addr = _addr4(kwargs["addr4"])
        if "gw4" in kwargs:
            self._gw = kwargs["gw4"]

    def dhcp_offer(self):
        """What the AP's DHCP server offers a phone: a simulation hook, not a port API. As ESP-IDF's
        components/lwip/apps/dhcpserver/dhcpserver.c add_offer_options(): the router is the
        interface's gateway (esp_netif's ip_info.gw), the DNS server the server's own address."""
        if self._if != AP_IF or not self._active:
            raise OSError("Wifi Not Started")
        ip, mask = self._addr
        net = [int(a) & int(m) for a, m in zip(ip.split("."), mask.split("."))]
        client = ".".join(str(b) for b in net[:3] + [net[3] + 2])
        return {"address": client, "netmask": mask, "router": self._gw, "dns": ip}

    def ifconfig(self, cfg=None):
        if cfg is None:
            ip, mask = self.ipconfig("addr4")
            return (ip, mask, self._gw if self._if == AP_IF else "10.0.0.1", "10.0.0.1")
        self._addr = (cfg[0], cfg[1])


class LAN:
    # As ports/esp32/network_lan.c get_lan(): one interface, returned as it is once its driver is
    # installed. Until then every call builds the PHY, MAC and netif again (switching the PHY's power
    # pin on and waiting 100 ms first) and registers the event handlers again; when
    # esp_eth_driver_install() fails (no PHY answers at phy_addr, no reference clock) it raises
    # OSError and leaves all of that behind: world.lan_starts counts the attempts, each a leak.
    # The reference clock, as get_lan() takes it ("Dynamic ref_clk configuration"): ref_clk_mode is an
    # int, Pin.IN (GPIO_MODE_INPUT) meaning EMAC_CLK_EXT_IN and any other value EMAC_CLK_OUT; ref_clk a
    # Pin (machine_pin_get_id); either left out keeps ESP-IDF's ETH_ESP32_EMAC_DEFAULT_CONFIG (clock in,
    # GPIO0). ESP-IDF's EMAC takes a clock in on GPIO0 only and gives one out on GPIO0, 16 or 17: any
    # other pin leaves no MAC (esp_eth_mac_new_esp32 fails) and the install fails with "invalid
    # argument". A clock or address other than the board's wiring (world.lan_wiring) is no PHY answering.
    def __new__(cls, id=0, *, mdc=None, mdio=None, power=None, phy_type=None, phy_addr=0,
                ref_clk=None, ref_clk_mode=-1):
        if world.lan is not None:
            return world.lan
        if phy_type is None:
            raise TypeError("'phy_type' argument required")
        if not 0 <= phy_addr <= 31:
            raise ValueError("invalid phy address")
        if mdc is None or mdio is None:
            raise ValueError("mdc and mdio must be specified")
        clock_in = True if ref_clk_mode in (-1, None) else ref_clk_mode == _PIN_IN
        clock_gpio = 0 if ref_clk is None else (ref_clk.id() if hasattr(ref_clk, "id") else ref_clk)
        world.lan_starts += 1
        if power is not None:
            world.advance_us(100_000)  # mp_hal_delay_ms(100): the PHY's power settles, the VM waits
        if clock_gpio not in ((0,) if clock_in else (0, 16, 17)):
            raise OSError("esp_eth_driver_install failed with invalid argument")
        wired = world.lan_wiring
        if world.lan_fault or (wired is not None and (
                wired["phy_addr"] != phy_addr or wired["ref_clk"] != clock_gpio
                or (wired["ref_clk_mode"] == "in") != clock_in)):
            raise OSError("esp_eth_driver_install failed")
        obj = object.__new__(cls)
        obj._active = False
        world.lan = obj
        return obj

    def __init__(self, id=0, **kwargs):
        pass

    def active(self, state=None):
        if state is None:
            return self._active
        self._active = bool(state)

    def status(self):
        if not self._active:
            return ETH_STOPPED
        return ETH_GOT_IP if world.lan_link else ETH_DISCONNECTED

    def isconnected(self):
        return self._active and world.lan_link

    def config(self, name=None, **kwargs):
        if name == "mac":
            return b"\x24\x0a\xc4\x12\x34\x58"
        if name is not None:
            raise ValueError("unknown config param")

    def ipconfig(self, *args, **kwargs):
        if args and args[0] == "addr4":
            return (world.lan_ip, "255.255.255.0") if self.isconnected() else ("0.0.0.0", "0.0.0.0")
        if args:
            raise ValueError("unexpected key")

    def ifconfig(self, cfg=None):
        ip, mask = self.ipconfig("addr4")
        return (ip, mask, "10.0.1.1", "10.0.1.1")

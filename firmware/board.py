# board — the ESP32 hardware the meter runs on: the only module that touches `machine` and `network`.
#
# Board() builds the hardware objects from a pin map and hands them to the rest of the firmware,
# which never imports machine/network itself. On the desktop the simulated machine/network modules
# (tools/simboard) stand in for the real ones, so this same code runs there.

import time

import machine
import network

# Reference pin map (ESP32-WROOM-32). ADC1 only: ADC2 is unusable while WiFi runs.
# Each phase's voltage and CT go to one (v_pin, i_pin) pair.
PINS = {
    "adc_pairs": ((36, 35), (39, 32), (34, 33)),  # (V, I) for L1, L2, L3
    "button": 0,  # BOOT button, pulled up, reads 0 when pressed
    "led": 2,
    "lan": None,  # e.g. {"mdc": 23, "mdio": 18, "phy_addr": 1, "power": 16}
}
MEASURE_TIMER_ID = 0


class Board:
    def __init__(self, pins=PINS):
        self.pins = pins
        self.adc_pairs = tuple(
            (self._adc(v), self._adc(i)) for v, i in pins["adc_pairs"]
        )
        self.button = machine.Pin(pins["button"], machine.Pin.IN, machine.Pin.PULL_UP)
        self.led = machine.Pin(pins["led"], machine.Pin.OUT, value=0)
        self.sta = network.WLAN(network.WLAN.IF_STA)
        self.ap = network.WLAN(network.WLAN.IF_AP)
        self._lan = None

    @staticmethod
    def _adc(gpio):
        # 11 dB: the ~0.15-2.45 V linear range holds the whole biased AC swing of the front end.
        return machine.ADC(machine.Pin(gpio), atten=machine.ADC.ATTN_11DB)

    def timer(self, period_ms, callback):
        """A periodic soft timer: the callback is scheduled, never run in hard-IRQ context."""
        t = machine.Timer(MEASURE_TIMER_ID)
        t.init(mode=machine.Timer.PERIODIC, period=period_ms, callback=callback)
        return t

    def lan(self, cfg=None):
        """The Ethernet interface from the config's "lan" section (or the pin map), or None if off.

        cfg: {"enabled", "phy" (e.g. "LAN8720"), "phy_addr", "mdc", "mdio", "power" (or None)}.
        """
        cfg = cfg if cfg is not None else self.pins["lan"]
        if cfg is None or not cfg.get("enabled", True):
            return None
        if self._lan is None:
            power = machine.Pin(cfg["power"]) if cfg.get("power") is not None else None
            mdc, mdio = machine.Pin(cfg["mdc"]), machine.Pin(cfg["mdio"])
            phy, addr = getattr(network, "PHY_" + cfg.get("phy", "LAN8720")), cfg["phy_addr"]
            # The ESP32 port's signature (docs: esp32 quickref); the stub only knows the generic one.
            self._lan = network.LAN(mdc=mdc, mdio=mdio, power=power, phy_type=phy, phy_addr=addr)  # pyright: ignore
        return self._lan

    def watchdog(self, timeout_ms):
        """Once started the watchdog cannot be stopped: only start it when the loop is running."""
        return machine.WDT(timeout=timeout_ms)

    @staticmethod
    def reset():
        machine.reset()

    def reset_cause(self):
        return machine.reset_cause()

    # RTC memory: kept across resets (the watchdog's too), lost on power-off (firmware/bootguard.py).
    def boot_record(self):
        return machine.RTC().memory()

    def set_boot_record(self, data):
        machine.RTC().memory(data)

    def unique_id(self):
        return machine.unique_id()

    # Network seams: the uploader resolves names and sets the clock only through these, so the
    # simulator (tools/sim/simnet.py) and tests can replace them without touching DNS or NTP.
    def resolve(self, host, port):
        """The IPv4 address (a string) for host; OSError if DNS fails."""
        import socket

        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
        return addr[0] if isinstance(addr, tuple) else ".".join(str(b) for b in addr[4:8])  # pyright: ignore

    def clock_ready(self):
        """True once the RTC holds a real date (TLS certificate checks need it)."""
        return time.gmtime()[0] >= 2025

    def sync_clock(self):
        """Set the RTC from NTP (pool.ntp.org by default); True if it worked."""
        import ntptime

        ntptime.settime()
        return self.clock_ready()


WDT_RESET = machine.WDT_RESET

# WiFi constants the rest of the firmware needs (it never imports network itself).
STAT_IDLE = network.STAT_IDLE
STAT_CONNECTING = network.STAT_CONNECTING
STAT_GOT_IP = network.STAT_GOT_IP
STAT_WRONG_PASSWORD = network.STAT_WRONG_PASSWORD
STAT_NO_AP_FOUND = network.STAT_NO_AP_FOUND
# ESP-IDF disconnect reasons status() passes through once a station's reconnects are used up (the
# port's network_wlan_status()): a wrong WPA2 passphrase most often ends as one of these, not 202.
REASONS_WRONG_PASSWORD = (15, 204, 205)  # 4-way handshake timeout, handshake timeout, connection fail
REASONS_NOT_FOUND = (210, 211, 212)  # no AP in the RSSI or authmode threshold, none with compatible security
SEC_OPEN = network.WLAN.SEC_OPEN
SEC_WPA2 = network.WLAN.SEC_WPA2

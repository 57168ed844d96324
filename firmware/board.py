# board — the ESP32 hardware the meter runs on: the only module that touches `machine` and `network`.
#
# Board(profile) builds the hardware objects from a named pin map (firmware/boards.py) and hands them
# to the rest of the firmware, which never imports machine/network itself. On the desktop the
# simulated machine/network modules (tools/simboard) stand in for the real ones, so this same code
# runs there.

import time

import machine
import network

from firmware import boards

MEASURE_TIMER_ID = 0


class Board:
    """The hardware of one named board profile (firmware/boards.py): its ADC inputs, button, LED,
    radio and Ethernet."""

    # The WiFi codes the links read off their board (they never import network, nor this module).
    STAT_IDLE = network.STAT_IDLE
    STAT_CONNECTING = network.STAT_CONNECTING
    STAT_GOT_IP = network.STAT_GOT_IP
    STAT_WRONG_PASSWORD = network.STAT_WRONG_PASSWORD
    STAT_NO_AP_FOUND = network.STAT_NO_AP_FOUND
    # ESP-IDF disconnect reasons status() passes through once a station's reconnects are used up (the
    # port's network_wlan_status()): a wrong WPA2 passphrase most often ends as one of these, not 202.
    REASONS_WRONG_PASSWORD = (15, 204, 205)  # 4-way handshake timeout, handshake timeout, connection fail
    REASONS_NOT_FOUND = (210, 211, 212)  # no AP in the RSSI or authmode threshold, none with compatible security
    SEC_WPA2 = network.WLAN.SEC_WPA2

    def __init__(self, profile=boards.DEFAULT):
        self.sta = network.WLAN(network.WLAN.IF_STA)
        self.ap = network.WLAN(network.WLAN.IF_AP)
        self._lan = None
        self.use(profile)

    def use(self, name):
        """Build the pins of the profile called name (ValueError listing the profiles if unknown)."""
        prof = boards.get(name)
        self.name = name
        self.own_lan = prof["lan"]  # the board's own Ethernet (boards.LAN_KEYS order), or None
        v = tuple(self._adc(g) for g in prof["voltage"])
        # A board with L1's voltage alone: L2 and L3 are measured against L1 (boards.py), never read.
        self.voltage_inputs = len(v)
        self.adc_pairs = tuple((v[k] if k < len(v) else v[0], self._adc(i)) for k, i in enumerate(prof["current"]))
        # GPIO34-39 have no pull resistors (ESP-IDF's gpio_pullup_en() refuses them, logging an error,
        # which ports/esp32/machine_pin.c ignores): a button there has its own, as BUT1 on the ESP32-POE.
        btn = prof["button"]
        self.button = machine.Pin(btn, machine.Pin.IN) if btn >= 34 else machine.Pin(btn, machine.Pin.IN,
                                                                                      machine.Pin.PULL_UP)
        self.led = machine.Pin(prof["led"], machine.Pin.OUT, value=0)
        vp = prof["voltage"] + prof["voltage"][:1] * (3 - len(v))  # the GPIO each phase's voltage is read on
        self.pins = {"adc_pairs": tuple(zip(vp, prof["current"])), "button": prof["button"], "led": prof["led"]}

    @staticmethod
    def _adc(gpio):
        # 11 dB: the ~0.15-2.45 V linear range holds the whole biased AC swing of the front end.
        return machine.ADC(machine.Pin(gpio), atten=machine.ADC.ATTN_11DB)

    def timer(self, period_ms, callback, timer=None):
        """A one-shot soft timer: the callback is scheduled, never run in hard-IRQ context. Pass the
        timer it returned to arm the same one again (the meter re-arms it for every burst)."""
        t = timer or machine.Timer(MEASURE_TIMER_ID)
        # ports/esp32/machine_timer.c, machine_timer_init_helper(): init() disables the timer, then
        # enables it again with its counter from 0 and the interrupt handle reused; the arguments
        # are parsed on the stack. So re-arming from the scheduled callback allocates nothing.
        t.init(mode=machine.Timer.ONE_SHOT, period=period_ms, callback=callback)
        return t

    def lan(self, cfg=None):
        """The Ethernet interface from the config's "lan" section (without one: the board's own
        Ethernet, if it has one), or None if off. A setting "board" (the default) is the profile's own
        value (boards.lan_settings).

        cfg: {"enabled", "phy" (e.g. "LAN8720"), "phy_addr", "mdc", "mdio", "power", "ref_clk",
        "ref_clk_mode" ("in", "out" or None: ESP-IDF's default)}; pins are GPIO numbers or None.
        """
        if cfg is None:
            if self.own_lan is None:
                return None
            cfg = {}  # the board's own Ethernet, on
        cfg = boards.lan_settings(self.own_lan, cfg)
        if not cfg["enabled"]:
            return None
        if self._lan is None:
            pin = machine.Pin
            power = pin(cfg["power"]) if cfg["power"] is not None else None
            mdc, mdio = pin(cfg["mdc"]), pin(cfg["mdio"])
            phy, addr = getattr(network, "PHY_" + cfg["phy"]), cfg["phy_addr"]
            # The ESP32 port's signature (ports/esp32/network_lan.c get_lan()): ref_clk is a Pin,
            # ref_clk_mode Pin.IN (the PHY's clock comes in) or Pin.OUT (the ESP32 gives it); left
            # out, ESP-IDF's defaults apply (in, on GPIO0). The stub only knows the generic LAN.
            kw = {}
            if cfg["ref_clk"] is not None:
                kw["ref_clk"] = pin(cfg["ref_clk"])
            if cfg["ref_clk_mode"] is not None:
                kw["ref_clk_mode"] = pin.OUT if cfg["ref_clk_mode"] == "out" else pin.IN
            self._lan = network.LAN(mdc=mdc, mdio=mdio, power=power, phy_type=phy, phy_addr=addr,  # pyright: ignore
                                    **kw)
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

# links — the device's ways onto the network: Ethernet preferred, else WiFi; and the setup access point.
#
# Links(board, store, identity).tick() runs every TICK_MS from an asyncio task. It
#   - keeps WiFi STA off while Ethernet has a link and a lease (ESP-IDF would route over STA otherwise),
#   - otherwise joins the configured WiFi network,
#   - brings the setup access point up (SSID "Measurement Device_<serial>", WPA2 with the label's
#     password, 192.168.251.1/24, its own gateway) when there is no network configuration, when the
#     configured network has been unreachable for ap.fallback_s, when Ethernet is the only network
#     configured and did not start, on a short BOOT press, or always (ap.mode "always"),
#   - and takes it down AP_LINGER_MS after the device is online, so a working device has no open door.
# Joiner tries one network while the AP stays up and says in plain words how it went.

import time

from firmware import factory

AP_ADDR = "192.168.251.1"
AP_PREFIX = 24
AP_LINGER_MS = 180000  # online this long: the access point goes down
TICK_MS = 250
SHORT_PRESS_MS = 3000  # shorter than the 10 s factory-reset hold (factory.HOLD_MS)
CONNECT_TIMEOUT_MS = 25000  # two attempts (JOIN_RECONNECTS) of up to ~10 s each, then DHCP
JOIN_RECONNECTS = 1  # while the page tries a network (two attempts): then status() gives the reason, not CONNECTING
STALE_MS = 6000  # a failure status the same as before connect() may be the last attempt's (the port keeps it)
RETRY_MS = 30000  # the configured network failed (not found, refused): try it again after this...
RETRY_MAX_MS = 300000  # ...doubling each time up to this: a router that is away for hours is not hammered
# Ethernet that did not start: tried again after 10 s and 60 s, then not until its settings change or
# the meter restarts. Each failed network.LAN() leaves an ESP-IDF MAC behind (DMA buffers, a task,
# an interrupt: ~12-15 KB of internal RAM), which retries for ever would spend within hours.
LAN_RETRY_MS = (10000, 60000)

OK = "connected"
WRONG_PASSWORD = "wrong_password"
NOT_FOUND = "not_found"
NO_DHCP = "no_dhcp"
FAILED = "failed"


def outcome_message(outcome, ssid, ip=None):
    """The sentence the setup page shows for a connection attempt."""
    if outcome == OK:
        return "Connected to %s. The meter's address there is %s. Settings saved." % (ssid, ip)
    if outcome == WRONG_PASSWORD:
        return ("Could not log in to %s: the password is probably wrong. Check it (capitals count) and try "
                "again (nothing was saved)." % ssid)
    if outcome == NOT_FOUND:
        return ("Network %s not found: check the name, or move closer to the router "
                "(nothing was saved)." % ssid)
    if outcome == NO_DHCP:
        return ("Joined %s but got no address from its DHCP server: check the router "
                "(nothing was saved)." % ssid)
    return "Could not connect to %s (nothing was saved)." % ssid


def _no_action() -> bool:
    return False


class Joiner:
    """One connection attempt on the STA interface; poll() until it returns an outcome, then end().

    On the ESP32 port (ports/esp32/network_wlan.c) connect() keeps the previous attempt's disconnect
    reason, so right after it status() may still say WRONG_PASSWORD or NO_AP_FOUND for a network
    never tried: a failure equal to the status before connect() counts only once it changed or
    STALE_MS passed. A wrong passphrase mostly arrives as reason 15 or 204 (205 reads as 202), and
    with reconnects for ever status() would say CONNECTING until the timeout: the attempt gets
    JOIN_RECONNECTS, so its reason comes through. end() disconnects a failed attempt, which the port
    would otherwise retry for ever, and gives reconnects back to "for ever" (the links' own).

    codes: the board (firmware/board.py Board), whose STAT_* and REASONS_* say how an attempt ended."""

    def __init__(self, sta, codes, ssid, password, timeout_ms=CONNECT_TIMEOUT_MS):
        self.sta = sta
        self.codes = hw = codes
        self.ssid = ssid
        self.timeout_ms = timeout_ms
        self.ip = None
        sta.active(True)
        try:
            sta.disconnect()
        except OSError:
            pass
        sta.config(reconnects=JOIN_RECONNECTS)
        self._before = sta.status()
        # disconnect() takes effect in the port's event task: until then status() may still say
        # GOT_IP for the network it left, so GOT_IP counts only after another status was seen.
        self._left = self._before != hw.STAT_GOT_IP
        self.started = time.ticks_ms()
        sta.connect(ssid, password or None)

    def poll(self):
        """None while trying; otherwise OK, WRONG_PASSWORD, NOT_FOUND, NO_DHCP or FAILED."""
        hw = self.codes
        st = self.sta.status()
        if st == hw.STAT_GOT_IP:
            if self._left:
                self.ip = self.sta.ipconfig("addr4")[0]
                return OK
        else:
            self._left = True
        elapsed = time.ticks_diff(time.ticks_ms(), self.started)
        if st not in (hw.STAT_CONNECTING, hw.STAT_IDLE) and (st != self._before or elapsed >= STALE_MS) \
                and not self._associated():
            if st == hw.STAT_WRONG_PASSWORD or st in hw.REASONS_WRONG_PASSWORD:
                return WRONG_PASSWORD
            if st == hw.STAT_NO_AP_FOUND or st in hw.REASONS_NOT_FOUND:
                return NOT_FOUND
            return FAILED
        if elapsed >= self.timeout_ms:  # associated but no address: DHCP; else the port was still retrying
            return NO_DHCP if self._associated() else FAILED
        return None

    def _associated(self):
        """The access point took the key (a failure status is then a stale one): status("rssi")
        answers only while associated, lease or not."""
        try:
            self.sta.status("rssi")
            return True
        except OSError:
            return False

    def end(self, outcome):
        if outcome != OK:
            try:
                self.sta.disconnect()  # or the port goes on reconnecting to a network that failed
            except OSError:
                pass
        self.sta.config(reconnects=-1)


class Links:
    def __init__(self, board, store, identity, log=print):
        self.board = board
        self.store = store
        self.identity = identity
        self.log = log
        self.ap_up = False
        self.ap_reason = ""
        self.online_via = None  # "lan", "wifi" or None
        now = time.ticks_ms()
        self._offline_since = now
        self._online_since = now
        self._press_start = None
        self._long_done = False
        self.holding_ms = 0  # how long the button has been held now (the status LED shows it)
        self.reset_at = None  # ticks of the last factory reset by the button
        self.on_long_press = _no_action  # what a hold of factory.HOLD_MS does (app.py: the portal's reset)
        self._sta_started = False
        self._sta_tried = now
        self._retry_ms = RETRY_MS
        self._ap_since = now
        self.busy = False  # the setup page is trying a network: leave STA alone
        # The configured network's channel, once joined: the access point starts there (one radio).
        self.home_channel = None
        self.lan_error = None  # why Ethernet did not start, while it has not
        self._lan_retry_at = now
        self._lan_tries = 0  # failed starts with the current lan settings
        self._lan_cfg = None  # the lan settings they were made with

    def lan_status(self):
        """(state, address): "off" (not fitted or disabled), "no link", "connected" with its address,
        or "failed" (Ethernet did not start: lan_error says why)."""
        if not self.store.config["lan"]["enabled"]:
            self.lan_error = None
            return "off", None
        lan = self._lan()
        if lan is None:
            return ("failed" if self.lan_error else "off"), None
        if not lan.active():
            lan.active(True)
        if lan.isconnected():
            ip = lan.ipconfig("addr4")[0]
            if ip != "0.0.0.0":
                return "connected", ip
        return "no link", None

    def _lan(self):
        """The Ethernet interface, or None. network.LAN raises OSError when its driver does not install
        (no PHY answers at phy_addr, no reference clock) after it has built the PHY, MAC and netif,
        which stay behind, and it waits 100 ms on the power pin first: so a failed start is tried
        again only LAN_RETRY_MS later, twice, then only once the lan settings change, and nothing else
        waits for it."""
        now = time.ticks_ms()
        cfg = self.store.config["lan"]
        if cfg != self._lan_cfg:  # other settings (or the first try): a fresh start
            self._lan_cfg, self._lan_tries, self.lan_error = cfg, 0, None
        if self.lan_error is not None and (self._lan_tries > len(LAN_RETRY_MS)
                                           or time.ticks_diff(now, self._lan_retry_at) < 0):
            return None
        try:
            lan = self.board.lan(cfg)
        except OSError as e:
            self._lan_tries += 1
            self.lan_error = ("Ethernet did not start (%s). Check the Ethernet module and the lan settings "
                              "(phy, phy_addr, pins)." % e)
            if self._lan_tries <= len(LAN_RETRY_MS):
                wait_ms = LAN_RETRY_MS[self._lan_tries - 1]
                self._lan_retry_at = time.ticks_add(now, wait_ms)
                self.log("network: %s Trying again in %d s." % (self.lan_error, wait_ms // 1000))
            else:
                self.lan_error += " Not tried again until the lan settings change or the meter restarts."
                self.log("network: " + self.lan_error)
            return None
        if self.lan_error is not None:
            self.log("network: Ethernet started")
        self.lan_error = None
        return lan

    def _button(self, now):
        """True on the release of a short press (the setup access point). A hold of factory.HOLD_MS
        calls on_long_press once, while still held: a factory reset at any time while running (at
        power-up the BOOT button, GPIO0, cannot be used: held at reset it starts the ROM bootloader)."""
        pressed = self.board.button.value() == 0
        if pressed and self._press_start is None:
            self._press_start = now
            self._long_done = False
        elif not pressed and self._press_start is not None:
            held = time.ticks_diff(now, self._press_start)
            self._press_start = None
            self.holding_ms = 0
            if held < SHORT_PRESS_MS:
                return True
        if self._press_start is not None:
            self.holding_ms = time.ticks_diff(now, self._press_start)
            if self.holding_ms >= factory.HOLD_MS and not self._long_done:
                self._long_done = True
                self.log("button: held %d s: factory reset" % (factory.HOLD_MS // 1000))
                if self.on_long_press():
                    self.reset_at = now  # the LED says "done" only when it was
        return False

    async def run(self):
        """tick() every TICK_MS, on a task of its own (supervised by firmware/app.py)."""
        import asyncio

        while True:
            try:
                self.tick()
            except Exception as e:  # a radio error must not end the links for good
                self.log("network: %s: %s" % (type(e).__name__, e))
            await asyncio.sleep_ms(TICK_MS)

    def held_past_short_press(self):
        return self.holding_ms >= SHORT_PRESS_MS

    def tick(self):
        now = time.ticks_ms()
        cfg = self.store.config
        lan_state, _ = self.lan_status()
        sta = self.board.sta
        if lan_state == "connected":
            via = "lan"
            if sta.active() and not self.busy:
                sta.active(False)  # LAN preferred: STA off while Ethernet has a lease
                self._sta_started = False
            self._retry_ms = RETRY_MS  # if the cable is pulled, WiFi is tried again from 30 s
        else:
            via = None
            ssid = cfg["wifi"]["ssid"]
            if ssid and not self.busy:
                if sta.isconnected() and self._sta_started:
                    self._sta_tried = now  # keeps the retry clock fresh: no stale tick after a wrap
                    self._retry_ms = RETRY_MS
                elif not self._sta_started or self._retry_due(now):
                    if self._sta_started:  # a retry: the next one waits twice as long
                        self._retry_ms = min(2 * self._retry_ms, RETRY_MAX_MS)
                    sta.active(True)
                    # The ESP32 raises "Wifi Internal Error" on connect() over a live attempt.
                    sta.disconnect()
                    sta.connect(ssid, cfg["wifi"]["password"] or None)
                    self._sta_started = True
                    self._sta_tried = now
                if sta.isconnected():
                    via = "wifi"
        if via != self.online_via:
            self.log("network: %s" % ("online via " + via if via else "offline"))
            self.online_via = via
            if via:
                self._online_since = now
            if via == "wifi":  # (read once on joining, not every tick)
                self.home_channel = sta.config("channel")
            else:
                self._offline_since = now
        self._decide_ap(now, cfg, self._button(now))

    def _retry_due(self, now):
        board = self.board
        st = board.sta.status()
        if st in (board.STAT_GOT_IP, board.STAT_CONNECTING):
            return False
        return time.ticks_diff(now, self._sta_tried) >= self._retry_ms

    def joiner(self, ssid, password, timeout_ms=CONNECT_TIMEOUT_MS):
        """A Joiner for the setup page's attempt on this board's station."""
        return Joiner(self.board.sta, self.board, ssid, password, timeout_ms)

    def restart_attempt(self):
        """The station was stopped for a moment (a scan): join the configured network again on the next
        tick, keeping the retry backoff (unlike reconnect(), for new settings)."""
        self._sta_started = False

    def on_settings(self, changed):
        """Settings changed (firmware/config.py apply()): wifi and ap are read at every tick, and a
        changed network is joined from the next one; so is lan.enabled. The other lan keys (PHY and
        pins) are in force after a restart: the ESP32 port builds network.LAN once (board.lan)."""
        taken = ["%s.%s" % (name, k) for name in ("wifi", "ap") for k in changed.get(name) or {}]
        if "enabled" in (changed.get("lan") or {}):
            taken.append("lan.enabled")
        if "wifi" in changed or "lan" in changed:
            self.reconnect()
        return taken

    def reconnect(self):
        """The settings changed (the setup page saved a network): join it on the next tick."""
        self._sta_started = False
        self.home_channel = None
        self._retry_ms = RETRY_MS

    def _decide_ap(self, now, cfg, pressed):
        mode = cfg["ap"]["mode"]
        if mode == "off":
            return self.set_ap(False, "ap.mode is off")
        if mode == "always":
            return self.set_ap(True, "ap.mode is always")
        if pressed:
            return self.set_ap(True, "BOOT button pressed")
        if self.online_via:
            # Linger after going online, and after the access point came up (a BOOT press).
            if (self.ap_up and time.ticks_diff(now, self._online_since) >= AP_LINGER_MS
                    and time.ticks_diff(now, self._ap_since) >= AP_LINGER_MS):
                self.set_ap(False, "online via %s" % self.online_via)
            return
        if self.store.needs_setup:
            return self.set_ap(True, "no network configured")
        if self.lan_error is not None and not cfg["wifi"]["ssid"]:
            return self.set_ap(True, "Ethernet did not start")  # nothing else to wait for: ask at once
        if time.ticks_diff(now, self._offline_since) >= cfg["ap"]["fallback_s"] * 1000:
            self.set_ap(True, "network unreachable for %d s" % cfg["ap"]["fallback_s"])

    def set_ap(self, up, reason):
        if up == self.ap_up:
            return
        ap = self.board.ap
        ident = self.identity.identity
        if up and ident is None:
            if self.ap_reason != "no identity":
                self.log("access point: cannot start without a device identity (no password to protect it)")
                self.ap_reason = "no identity"
            return
        if up:
            self._ap_since = time.ticks_ms()
            ap.active(True)
            # One radio: each attempt at the configured network takes the AP to that network's
            # channel, and a phone on the AP loses it there. Started on that channel (when known), the
            # AP stays put while the meter keeps trying its network.
            channel = self.home_channel or self.store.config["ap"]["channel"]
            ap.config(ssid=ident.ap_ssid(), key=ident.ap_password, security=self.board.SEC_WPA2, channel=channel)
            # addr4 sets address and mask only: the gateway would stay ESP-IDF's 192.168.4.1, and the
            # DHCP server offers the gateway as the router, outside our subnet (a phone may then not
            # treat the network as a captive portal). The AP is its own gateway.
            ap.ipconfig(addr4="%s/%d" % (AP_ADDR, AP_PREFIX), gw4=AP_ADDR)
        else:
            ap.active(False)
        self.ap_up = up
        self.ap_reason = reason
        self.log("access point: %s (%s)" % ("up as " + ident.ap_ssid() if up and ident else "down", reason))

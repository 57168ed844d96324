# simworld — the simulated world around a simulated ESP32: clock, analogue inputs, pins, radio.
#
# The simulated `machine`, `network` and `time` modules in this folder read and change this state.
# Tests and the simulator script it (mains waveforms, button presses, WiFi networks); the firmware
# never imports this module, so it cannot tell the simulation from the board. Any object with an
# allocation-free raw_at(t_us) can stand on an ADC pin; mains waveforms are tools/sim/mains.py's.
#
# Time is virtual by default: it advances only when the firmware spends it (an ADC conversion, a
# sleep) or when the driver calls advance_us(). set_realtime() ties it to the host clock instead,
# for running the whole device interactively (ADC conversions still cost their 35 us, so the
# clock may run a little ahead of the host's and then wait for it). Ticks wrap at 2**30 as on
# the ESP32, and the virtual clock starts shortly before a wrap so that wrap bugs show up in the
# first seconds of every run (in real time, the ms ticks follow the host's: see set_realtime).
# set_accelerated() is real time that skips idle stretches: when the firmware's event loop waits
# only for its own timers, the clock jumps to the next one instead of sleeping (select.py in this
# folder does the jumping), so a simulated day passes in 1.5-2.5 hours of host time.

import sys

_CPYTHON = sys.implementation.name != "micropython"


def _host_us_from_ticks():
    """The host's µs since the first call, from the port's µs ticks, wraps included: they wrap at
    2**62 on a 64-bit unix port, at 2**30 (every 18 minutes) on a 32-bit one, as on the ESP32. It
    must be called at least every half period (9 minutes on a 32-bit port)."""
    global _host_last, _host_acc
    t = _port_us()
    if _host_last is None:
        _host_last = t
    _host_acc += _port_diff(t, _host_last)
    _host_last = t
    return _host_acc


_host_last, _host_acc = None, 0

if _CPYTHON:
    import time as _host_time

    def _host_us():
        return _host_time.monotonic_ns() // 1000

    def _host_sleep_us(us):
        _host_time.sleep(us / 1e6)

    def _schedule(fn, arg):
        fn(arg)

    _port_ms = _port_us = _port_diff = _PORT_MASK = None  # no C asyncio core to agree with
else:
    import micropython

    _p, sys.path = sys.path, []  # reach the built-in time module, not our shadow
    try:
        import time as _host_time
    finally:
        sys.path = _p
    _port_us = _host_time.ticks_us
    _port_ms = _host_time.ticks_ms
    _port_diff = _host_time.ticks_diff
    _PORT_MASK = _host_time.ticks_add(0, -1)  # the port's ticks period, less 1
    _host_us = _host_us_from_ticks
    _host_us()
    _host_sleep_us = _host_time.sleep_us
    _schedule = micropython.schedule

TICKS_PERIOD = 1 << 30  # ESP32: ticks_ms/ticks_us wrap here
START_US = TICKS_PERIOD - 5_000_000  # ticks_us wraps 5 s into every run
TCP_SND_BUF = 5760  # ESP-IDF's CONFIG_LWIP_TCP_SND_BUF_DEFAULT: what one TCP connection buffers on the board
ADC_READ_US = 35  # one oneshot conversion on the ESP32 (~28.5 kS/s in a viper loop)


# The strapping pins the ESP32's ROM latches at reset (GPIO_STRAP_REG, bits 5..0, the "boot:0x.." of
# its first log line), each with the level its weak pull gives when nothing drives it: esptool's
# "Boot Mode Selection" and the ESP32 datasheet's "Strapping Pins" table.
STRAPS = ((12, 0), (0, 1), (2, 0), (4, 0), (15, 1), (5, 1))


class SimReset(Exception):
    """machine.reset() or a watchdog timeout: the simulated board restarts."""

    def __init__(self, cause):
        super().__init__(cause)
        self.cause = cause


class ConstantSource:
    """An analogue input that reads the same raw 12-bit code forever (e.g. an unconnected input)."""

    def __init__(self, code):
        self.code = code

    def raw_at(self, t_us):
        return self.code


class Network:
    """A WiFi network the simulated radio can see and (maybe) join."""

    def __init__(self, ssid, password=None, rssi=-60, channel=6, bssid=b"\x02\x00\x00\x00\x00\x01",
                 hidden=False, dhcp=True, ip="10.0.0.50", auth_fail_reason=15):
        self.ssid = ssid if isinstance(ssid, bytes) else ssid.encode()
        self.password = password  # None: open network
        self.rssi = rssi
        self.channel = channel
        self.bssid = bssid
        self.hidden = hidden
        self.dhcp = dhcp  # False: associates but never gets an address
        self.ip = ip
        # The disconnect reason a wrong passphrase brings: on ESP-IDF's WPA2 stations most often 15
        # (4-way handshake timeout), sometimes 204 (handshake timeout), 205 or 202 (auth fail).
        self.auth_fail_reason = auth_fail_reason


class World:
    def __init__(self):
        self.reset()

    def set_radio(self, doc):
        """What the radio sees, from a networks document (tools/sim/networks.json): {"networks":
        [{"ssid", "password" (null: open), "rssi", "channel", "hidden", "dhcp", "ip"}],
        "connect_delay_ms", "lan_link"}."""
        for n in doc.get("networks", []):
            self.networks.append(Network(n["ssid"], n.get("password"), n.get("rssi", -60), n.get("channel", 6),
                                         hidden=n.get("hidden", False), dhcp=n.get("dhcp", True),
                                         ip=n.get("ip", "10.0.0.50"), auth_fail_reason=n.get("auth_fail_reason", 15)))
        self.connect_delay_us = int(doc.get("connect_delay_ms", 1500)) * 1000
        self.dns_us = int(doc.get("dns_ms", 20)) * 1000
        self.dns_answers = bool(doc.get("dns_answers", True))
        self.ntp_us = int(doc.get("ntp_ms", 100)) * 1000
        if "lan_link" in doc:
            self.lan_link = bool(doc["lan_link"])

    def reset(self):
        self.realtime = False
        self.accelerated = False
        self.ticks_mask = TICKS_PERIOD - 1  # time.py's ticks wrap here (see set_realtime)
        self.ticks_half = TICKS_PERIOD // 2
        self.skipped_us = 0  # how far the clock has jumped ahead of the host's (accelerated mode)
        self.idle_hooks = []  # called by select.py each time the event loop would wait
        self.network_waits = 0  # times select.py waited for the host's network in real time
        self._pumping = False
        # The clock counts from 0 and the ticks are offset from it: ticks_us wraps 5 s in, and on a
        # 32-bit port the clock stays a small int (no allocation per ADC read) for 2**30 µs.
        # (Its sub-ms part is START_US's, so that ticks_us and ticks_ms are START_US's ticks.)
        self._now_us = START_US % 1000
        self._rt_offset = 0
        self._us_offset = START_US - self._now_us - TICKS_PERIOD  # ticks_us() is (now + this) & ticks_mask
        self._ms_offset = START_US // 1000  # ticks_ms() is (now // 1000 + this) & ticks_mask
        self.adc_read_us = ADC_READ_US
        self.adc_uv = None  # raw -> µV as the port's ADC.read_uv() gives it (tools/sim/mains.py), or None
        self.sources = {}  # GPIO number -> source with raw_at(t_us)
        self.pin_levels = {}  # GPIO number -> level driven from outside (button) or by firmware
        self.held = {}  # GPIO number -> level driven from outside (press/release): kept across a reset
        self.pin_irqs = {}  # GPIO number -> Pin with an irq handler
        self.timers = []  # running machine.Timer objects
        self.wdt = None
        self.reset_cause = 1  # PWRON_RESET
        self.rtc_memory = b""  # machine.RTC().memory(): survives SimReset, not reset() (power-off)
        self.networks = []  # Network objects in range
        self.connect_delay_us = 1_500_000  # association + DHCP time
        self.dns_us = 20_000  # how long a name lookup holds the VM (lwIP's getaddrinfo)
        self.dns_answers = True  # False: no DNS server answers, each lookup blocks dns_us then fails
        self.ntp_us = 100_000  # how long ntptime.settime() holds the VM
        self.lan_link = False  # Ethernet cable plugged and PHY link up
        self.lan_ip = "10.0.1.60"
        self.wlans = {}  # interface id -> WLAN object (singletons, as on the ESP32)
        # One radio for both interfaces: the channel it is on, and the phones on the access point.
        self.radio_channel = 1
        self.ap_phones = []  # MACs (bytes) of the phones associated with the access point
        self.ap_drops = 0  # phones dropped from the access point by a channel move
        self.lan = None
        self.lan_fault = False  # True: no PHY answers (network.LAN raises OSError, see network.py)
        # The board's Ethernet as wired: {"phy_addr", "ref_clk", "ref_clk_mode", ...} (a board profile's
        # own, firmware/boards.py lan_settings()), or None: whatever network.LAN is told works.
        self.lan_wiring = None
        self.lan_starts = 0  # network.LAN attempts that built a driver (each failed one leaks it)
        self.wall_base_s = 946684800  # the RTC after power-up: 2000-01-01, i.e. not set
        self.wall_base_us = self._now_us
        # The module and the image on it (esp.py, esp32.py): a 4 MiB ESP32-WROOM-32 without PSRAM and a
        # stock image's partition table (None: esp32.partition_table()'s); romfs_file holds the ROMFS
        # partition's bytes when the image has one (tools/standin).
        self.flash_bytes = 4 * 1024 * 1024
        self.psram_bytes = 0
        self.partitions = None
        self.romfs_file = None
        self.heap_base_bytes = 0  # heap the simulation itself holds, not the board's code (tools/standin)

    # Clock
    def set_realtime(self, on=True, ahead_ms=60000):
        now = self.now_us()
        self.realtime = on
        self._rt_offset = 0
        if on:
            # MicroPython's C asyncio core stamps a task it queues without a time (create_task,
            # Event.set) with the port's own ticks_ms() and orders its queue with the port's
            # period; our ticks_ms() must agree with it, or that task waits behind every sleeping
            # one (the device hangs). So our ms ticks are the port's, aligned on a ms edge, and so
            # are the µs ticks. On a 32-bit port they wrap at 2**30, as on the ESP32. On a 64-bit
            # one they wrap at 2**62: ours keep the ESP32's 2**30 while the port's ms ticks stay
            # below it (the host up less than ~12 days) for the whole run, ahead_ms included (how far
            # the clock may get ahead of the host's: the accelerated clock skips the run's length);
            # otherwise they wrap at the port's period: no 2**30 wrap in this run, and the
            # firmware's µs ticks, kept in 32-bit arrays, glitch once every 71 minutes.
            # The clock itself restarts near 0: on a 32-bit port it stays a small int (no
            # allocation per simulated ADC read) for the first 2**30 µs (~18 minutes) of the run.
            new = 0
            if _port_ms is None:  # CPython: nothing to agree with
                self._rt_offset = new - _host_us()
                self._us_offset = self._ms_offset = 0
            else:
                ms = _port_ms()
                while _port_ms() == ms:  # the port's ms tick just turned: its µs are at a whole ms
                    pass
                ms, us, host = _port_ms(), _port_us(), _host_us()
                self.ticks_mask, self.ticks_half = TICKS_PERIOD - 1, TICKS_PERIOD // 2
                if _PORT_MASK != TICKS_PERIOD - 1 and ms + ahead_ms >= TICKS_PERIOD:
                    print("sim: the host has been up %d days: the simulated ticks follow its own, without the "
                          "ESP32's 2**30 wrap" % (ms // 86_400_000))
                    self.ticks_mask, self.ticks_half = _PORT_MASK, _PORT_MASK // 2 + 1
                self._rt_offset = new - host
                self._us_offset = self._half_range(us & self.ticks_mask)
                self._ms_offset = self._half_range(ms & self.ticks_mask)
            self.wall_base_us += new - now
            now = new
        self._now_us = now

    def _half_range(self, ticks):
        """ticks as an offset in -period/2..period/2, the same modulo the period: (now + offset)
        then stays a small int on a 32-bit port."""
        return ticks - self.ticks_mask - 1 if ticks >= self.ticks_half else ticks

    def ticks_add(self, ticks, delta):
        """(ticks + delta) modulo the period, without a sum above the period (a 32-bit port's
        small ints end at 2**30: that sum would allocate)."""
        if delta < 0:
            return (ticks + delta) & self.ticks_mask
        return (ticks - self.ticks_mask - 1 + delta) & self.ticks_mask

    def ticks_diff(self, ticks1, ticks2):
        d = (ticks1 - ticks2) & self.ticks_mask
        return d - self.ticks_mask - 1 if d >= self.ticks_half else d

    def ticks_us(self):
        return self.ticks_add(self.now_us() & self.ticks_mask, self._us_offset)

    def ticks_ms(self):
        return self.ticks_add((self.now_us() // 1000) & self.ticks_mask, self._ms_offset)

    def set_accelerated(self, run_ms):
        """Real time, but idle waits are skipped (see select.py): call before asyncio is imported,
        with how long the run will be (the clock gets that far ahead of the host's)."""
        self.set_realtime(ahead_ms=run_ms + 60000)
        self.accelerated = True

    def skip_us(self, us):
        """Accelerated mode: jump the clock ahead (the RTC with it), firing nothing on the way."""
        self._rt_offset += us
        self._now_us += us
        self.skipped_us += us

    def next_timer_due_us(self):
        """When the next machine.Timer fires (simulated us), or None."""
        due = None
        for t in self.timers:
            if due is None or t._due_us < due:
                due = t._due_us
        return due

    def now_us(self):
        if self.realtime:
            # Follow the host clock, but never run backwards: time the firmware spent in simulated
            # ADC conversions (faster on the host than on the board) puts the clock ahead for a while.
            h = _host_us() + self._rt_offset
            if h > self._now_us:
                self._now_us = h
        return self._now_us

    async def pump(self):
        """Real-time mode: an asyncio task that fires due timers and checks the watchdog."""
        import asyncio

        while self.realtime:
            self.poll()
            await asyncio.sleep_ms(1)

    def ensure_pump(self):
        if self.realtime and not self.accelerated and not self._pumping:  # accelerated: select.py pumps
            import asyncio

            self._pumping = True
            asyncio.create_task(self.pump())

    def advance_us(self, us):
        """Let `us` microseconds of simulated time pass, firing timers and the watchdog on the way."""
        if self.accelerated:  # a blocking sleep blocks the board: nothing else runs meanwhile
            self.skip_us(us)
            self.poll()
        elif self.realtime:
            _host_sleep_us(us)
        else:
            end = self._now_us + us
            while True:
                due = self._next_timer_due(end)
                if due is None:
                    break
                self._now_us = due[0]
                due[1]._fire()
            self._now_us = end
        self._check_wdt()

    def spend_us(self, us):
        """Time the firmware itself spends (an ADC conversion): no timers fire in between."""
        self._now_us += us

    def block_us(self, us):
        """A C call that holds the whole VM (getaddrinfo, ntptime): no Python runs until it
        returns, bursts included; the timers' callbacks wait in the schedule queue and run after.
        In real time the host really waits (the sockets too), else the virtual clock jumps."""
        if self.accelerated:
            self.skip_us(us)
        elif self.realtime:
            _host_sleep_us(us)
        else:
            self._now_us += us

    def _next_timer_due(self, end):
        best = None
        for t in self.timers:
            if t._due_us <= end and (best is None or t._due_us < best[0]):
                best = (t._due_us, t)
        return best

    def poll(self):
        """Fire whatever is due now (real-time mode): timers and the watchdog."""
        now = self.now_us()
        for t in list(self.timers):
            if t._due_us <= now:
                t._fire()
        self._check_wdt()

    def _check_wdt(self):
        w = self.wdt
        if w is not None and self.now_us() - w._fed_us > w._timeout_ms * 1000:
            self.wdt = None
            self.timers = []
            self.reset_cause = 3  # WDT_RESET
            raise SimReset("watchdog timeout")

    def wall_time_us(self):
        return self.wall_base_s * 1_000_000 + self.now_us() - self.wall_base_us

    def set_wall_time(self, epoch_s):
        self.wall_base_s = epoch_s
        self.wall_base_us = self.now_us()

    # Analogue front end
    def read_adc(self, gpio):
        src = self.sources.get(gpio)
        # The conversion happens at the simulated instant; in real-time mode the host clock is not
        # consulted here, so a host hiccup mid-burst cannot make samples jump (the burst is a tight
        # loop on the board too).
        code = 0 if src is None else src.raw_at(self._now_us)
        self.spend_us(self.adc_read_us)
        return code

    # Pins
    def press(self, gpio, level=0):
        """Drive an input pin from outside (a button to GND reads 0) and fire its irq if armed."""
        old = self.pin_levels.get(gpio, 1)
        self.pin_levels[gpio] = level
        self.held[gpio] = level
        pin = self.pin_irqs.get(gpio)
        if pin is not None and old != level:
            pin._edge(level)

    def release(self, gpio):
        self.press(gpio, 1)

    def boot(self, firmware, log=print):
        """A reset as the ESP32's ROM makes it: what the firmware drove is let go, the strapping pins
        are latched, and firmware() (main.py) runs only if they select a flash boot. Returns the
        ROM's boot mode: "flash" (firmware() ran), "download" or "flash_voltage" (it never did).

        GPIO0 low: the ROM's serial bootloader waits for esptool, the firmware never starts (so a
        BOOT button held at power-up can never reach the firmware). GPIO12 (MTDI) high: the flash is
        powered at 1.8 V, which a WROOM's 3.3 V flash cannot be read at ("flash read err"), so the
        ROM never gets to the firmware either (the board resets over and over)."""
        self.pin_levels = dict(self.held)
        self.pin_irqs = {}
        self.timers = []
        self.wdt = None
        level = self.pin_levels.get
        strap = 0
        for gpio, pull in STRAPS:
            strap = strap << 1 | level(gpio, pull)
        if not level(0, 1):
            mode, say = "download", "boot:0x%x (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\nwaiting for download"
        elif level(12, 0):
            mode, say = "flash_voltage", "boot:0x%x (SPI_FAST_FLASH_BOOT)\nflash read err, 1000"
        else:
            mode, say = "flash", "boot:0x%x (SPI_FAST_FLASH_BOOT)"
        log(say % strap)
        if mode == "flash":
            firmware()
        return mode

    # Radio
    def phone_joins_ap(self, mac=b"\x3a\x10\x00\x00\x00\x01"):
        """A phone associates with the setup access point (True), if it is up."""
        ap = self.wlans.get(1)
        if ap is None or not ap.active():
            return False
        if mac not in self.ap_phones:
            self.ap_phones.append(mac)
        return True

    def tune(self, channel):
        """The radio moves to channel. ESP-IDF's Station/AP coexistence: the access point works on the
        station's channel, so a station attempt on another channel takes the AP with it, and the
        phones on the AP lose it (they must find it again on the new channel)."""
        if channel != self.radio_channel:
            self.radio_channel = channel
            self.ap_drops += len(self.ap_phones)
            self.ap_phones = []

    def visible_networks(self):
        return [n for n in self.networks]

    def find_network(self, ssid):
        for n in self.networks:
            if n.ssid == ssid:
                return n
        return None


def epoch_from_civil(y, mo, d, h=0, mi=0, s=0):
    """Seconds since 1970-01-01 UTC for a calendar date (proleptic Gregorian)."""
    y -= mo <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + h * 3600 + mi * 60 + s


def civil_from_epoch(t):
    """(year, month, day, weekday 0=Monday, hour, minute, second) for seconds since 1970 UTC."""
    days, rem = divmod(t, 86400)
    wd = (days + 3) % 7
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    mo = mp + (3 if mp < 10 else -9)
    y = yoe + era * 400 + (mo <= 2)
    return (y, mo, d, wd, rem // 3600, rem // 60 % 60, rem % 60)


world = World()


def schedule(fn, arg):
    """Run a soft callback the way the ESP32 does: via micropython.schedule, never inline."""
    _schedule(fn, arg)

if _CPYTHON:
    # CPython's time is built in and cannot be shadowed by a file: give it the board's ticks here.
    _host_time.ticks_us = world.ticks_us
    _host_time.ticks_ms = world.ticks_ms
    _host_time.ticks_cpu = world.ticks_us
    _host_time.ticks_add = world.ticks_add
    _host_time.ticks_diff = world.ticks_diff
    _host_time.sleep_us = lambda us: world.advance_us(us)
    _host_time.sleep_ms = lambda ms: world.advance_us(ms * 1000)

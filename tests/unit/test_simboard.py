# The simulated board behaves like the ESP32 port where the firmware depends on it.
import time

import machine
import network

import simworld
from simworld import world
from support import MICROPYTHON, SMALL_INT_MAX, raises, skip, small_int


def test_ticks_wrap_at_2_30_like_the_esp32():
    t0 = time.ticks_us()
    world.advance_us(6_000_000)  # the simulated clock starts 5 s before the wrap
    t1 = time.ticks_us()
    assert t1 < t0  # wrapped...
    assert time.ticks_diff(t1, t0) == 6_000_000  # ...and ticks_diff still measures it
    assert time.ticks_add(t0, 6_000_000) == t1
    assert 0 <= time.ticks_ms() < (1 << 30)


class _Port32:
    """A 32-bit unix port's clock: its µs and ms ticks wrap at 2**30 (small ints end there), and it
    moves on 1 µs each time it is read (the host's clock runs while we look)."""

    MASK = (1 << 30) - 1

    def __init__(self, t_us):
        self.t = t_us

    def us(self):
        self.t += 1
        return self.t & self.MASK

    def ms(self):
        self.t += 1
        return (self.t // 1000) & self.MASK

    def diff(self, a, b):
        d = (a - b) & self.MASK
        return d - self.MASK - 1 if d > self.MASK // 2 else d


def test_the_realtime_clock_agrees_with_a_32_bit_ports_ticks_across_their_wraps():
    # On a 32-bit port the port's ticks wrap at 2**30 (µs: every 18 minutes) and its C asyncio core
    # stamps tasks with its own ticks_ms: the simulated clock must follow the host through the
    # wraps and keep ms ticks equal to the port's, or the device hangs. Here both wrap 2 s in.
    port = _Port32(((1 << 30) - 2000) * 1000)
    names = ("_port_us", "_port_ms", "_port_diff", "_PORT_MASK", "_host_us", "_host_last", "_host_acc")
    saved = [getattr(simworld, n) for n in names]
    for n, v in zip(names, (port.us, port.ms, port.diff, port.MASK, simworld._host_us_from_ticks, None, 0)):
        setattr(simworld, n, v)
    try:
        world.set_realtime()
        us0, ms0, now0 = time.ticks_us(), time.ticks_ms(), world.now_us()
        for _ in range(10):  # 5 s in steps of 0.5 s
            assert abs(time.ticks_diff(time.ticks_ms(), port.ms())) <= 1
            assert abs(time.ticks_diff(time.ticks_us(), port.us())) <= 5
            port.t += 500_000
        assert 4_990 <= time.ticks_diff(time.ticks_ms(), ms0) <= 5_010 and time.ticks_ms() < ms0  # wrapped
        assert 4_990_000 <= time.ticks_diff(time.ticks_us(), us0) <= 5_010_000 and time.ticks_us() < us0
        # The clock itself counts from 0, a small int on a 32-bit port for the first 18 minutes.
        assert 4_990_000 <= world.now_us() - now0 <= 5_010_000 and world.now_us() <= SMALL_INT_MAX
    finally:
        for n, v in zip(names, saved):
            setattr(simworld, n, v)
        world.reset()


def test_ticks_arithmetic_stays_within_a_32_bit_ports_small_ints():
    if MICROPYTHON:
        skip("the 64-bit port's ints reach 2**62: checked under CPython, every result of the arithmetic")
    mask = (1 << 30) - 1
    for a in (0, 1, 5_000_000, mask // 2, mask // 2 + 1, mask - 5_000_000, mask):
        for d in (0, 1, -1, 6_000_000, -6_000_000, mask // 2, -(mask // 2) - 1):
            t = world.ticks_add(small_int(a), small_int(d))
            assert t == (a + d) & mask
            assert world.ticks_diff(small_int(t), small_int(a)) == d
    for t in (0, 1, mask // 2, mask):
        world._now_us = small_int(t)
        world.ticks_us()
        world.ticks_ms()


def test_adc_only_on_adc_pins_and_scales_like_the_port():
    with raises(ValueError):
        machine.ADC(machine.Pin(5))
    world.sources[36] = simworld.ConstantSource(4095)
    adc = machine.ADC(machine.Pin(36), atten=machine.ADC.ATTN_11DB)
    assert adc.read_u16() == 65535
    assert adc.read() == 4095
    world.sources[36] = simworld.ConstantSource(2048)
    assert adc.read_u16() >> 4 == 2048
    t0 = time.ticks_us()
    adc.read_u16()
    assert time.ticks_diff(time.ticks_us(), t0) == world.adc_read_us  # a conversion takes time


def test_adc2_is_busy_while_wifi_runs():
    adc = machine.ADC(machine.Pin(25))
    adc.read_u16()
    network.WLAN(network.WLAN.IF_STA).active(True)
    with raises(OSError):
        adc.read_u16()


def test_input_only_pins_refuse_output():
    with raises(ValueError):
        machine.Pin(34, machine.Pin.OUT)
    machine.Pin(34, machine.Pin.IN)


def test_timer_callbacks_are_soft_and_periodic():
    with raises(ValueError):
        machine.Timer(0, period=10, callback=lambda t: None, hard=True)
    fired = []
    t = machine.Timer(0)
    t.init(mode=machine.Timer.PERIODIC, period=100, callback=lambda tim: fired.append(time.ticks_ms()))
    world.advance_us(1_050_000)
    assert len(fired) == 10
    t.deinit()
    world.advance_us(1_000_000)
    assert len(fired) == 10


def test_watchdog_resets_the_board_when_not_fed():
    wdt = machine.WDT(timeout=2000)
    world.advance_us(1_500_000)
    wdt.feed()
    world.advance_us(1_500_000)  # fed in time: still running
    with raises(simworld.SimReset):
        world.advance_us(1_000_000)
    assert machine.reset_cause() == machine.WDT_RESET


def test_a_reset_runs_the_firmware_only_if_the_strapping_pins_select_a_flash_boot():
    ran, said = [], []
    assert world.boot(lambda: ran.append(1), log=said.append) == "flash"
    assert ran == [1] and said == ["boot:0x13 (SPI_FAST_FLASH_BOOT)"]  # an ESP32's usual first line
    machine.Pin(12, machine.Pin.OUT, value=1)  # what the firmware drives is let go at reset
    world.press(0)  # BOOT held: the ROM's serial bootloader
    assert world.boot(lambda: ran.append(2), log=said.append) == "download"
    assert ran == [1] and said[-1] == "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\nwaiting for download"
    world.release(0)
    world.press(12, 1)  # MTDI pulled high from outside: a 3.3 V flash powered at 1.8 V
    assert world.boot(lambda: ran.append(3), log=said.append) == "flash_voltage"
    assert ran == [1] and "flash read err" in said[-1]


def test_wlan_connect_outcomes():
    world.networks = [simworld.Network("Panel WiFi", "correct horse", auth_fail_reason=202),
                      simworld.Network("Open Cafe")]
    sta = network.WLAN(network.WLAN.IF_STA)
    assert sta is network.WLAN(network.STA_IF)  # one object per interface, as on the board
    with raises(OSError):
        sta.scan()  # the radio must be active first ("STA must be active")
    sta.active(True)
    assert sorted(r[0] for r in sta.scan()) == [b"Open Cafe", b"Panel WiFi"]
    sta.config(reconnects=0)  # no reconnects: an attempt's failure shows as its reason
    for ssid, key, want in (("Panel WiFi", "wrong pass", network.STAT_WRONG_PASSWORD),
                            ("Nowhere", "whatever1", network.STAT_NO_AP_FOUND),
                            ("Open Cafe", None, network.STAT_GOT_IP),
                            ("Panel WiFi", "correct horse", network.STAT_GOT_IP)):
        sta.disconnect()
        sta.connect(ssid, key)
        world.advance_us(world.connect_delay_us)
        assert sta.status() == want, (ssid, sta.status())
        assert sta.isconnected() == (want == network.STAT_GOT_IP)
    assert sta.ipconfig("addr4")[0] != "0.0.0.0"


def test_wlan_station_follows_the_esp32_port():
    # ports/esp32/network_wlan.c: the reason of the last STA_DISCONNECTED event is kept across connect().
    world.networks = [simworld.Network("HomeNet", "correct horse"), simworld.Network("Other", "x" * 8,
                                                                                      auth_fail_reason=202)]
    sta = network.WLAN(network.WLAN.IF_STA)
    sta.active(True)
    assert sta.config("reconnects") == -1  # for ever, by default
    # A wrong WPA2 passphrase as reason 15 (4-way handshake timeout): with reconnects for ever the
    # port says CONNECTING, attempt after attempt, never "wrong password".
    sta.connect("HomeNet", "wrong password")
    world.advance_us(10 * world.connect_delay_us)
    assert sta.status() == network.STAT_CONNECTING and sta._attempts == 10
    # With bounded reconnects the reason comes through once they are used up.
    sta.disconnect()
    sta.config(reconnects=1)
    sta.connect("HomeNet", "wrong password")
    world.advance_us(world.connect_delay_us)
    assert sta.status() == network.STAT_CONNECTING  # one reconnect left
    world.advance_us(world.connect_delay_us)
    assert sta.status() == 15
    # A wrong password reported as AUTH_FAIL, then connect() to another network: until the new
    # attempt has an event, status() still reports the old attempt's reason.
    sta.config(reconnects=0)
    sta.disconnect()  # no attempt live: no event, the reason stays
    sta.connect("Other", "wrong password")
    world.advance_us(world.connect_delay_us)
    assert sta.status() == network.STAT_WRONG_PASSWORD
    sta.disconnect()
    sta.connect("HomeNet", "correct horse")
    assert sta.status() == network.STAT_WRONG_PASSWORD  # stale: the previous attempt's
    world.advance_us(world.connect_delay_us)
    assert sta.status() == network.STAT_GOT_IP
    # A connect() over a live attempt or connection is refused, as ESP-IDF does.
    with raises(OSError):
        sta.connect("HomeNet", "correct horse")
    # After disconnect() (ASSOC_LEAVE) the station is idle and nothing reconnects it.
    sta.disconnect()
    world.advance_us(5 * world.connect_delay_us)
    assert sta.status() == network.STAT_IDLE and not sta.isconnected()


def test_a_station_turned_off_mid_attempt_says_connecting_when_back_on_though_nothing_tries():
    world.networks = [simworld.Network("HomeNet", "correct horse")]
    sta = network.WLAN(network.WLAN.IF_STA)
    sta.active(True)
    sta.connect("HomeNet", "correct horse")
    sta.active(False)  # before the attempt had any event: wifi_sta_connect_requested stays set
    sta.active(True)
    world.advance_us(10 * world.connect_delay_us)
    assert sta.status() == network.STAT_CONNECTING and not sta.isconnected()
    sta.connect("HomeNet", "correct horse")  # only a new connect() tries again
    world.advance_us(world.connect_delay_us)
    assert sta.isconnected()
    sta.active(False)  # associated: the stop is an ASSOC_LEAVE, read as idle
    sta.active(True)
    assert sta.status() == network.STAT_IDLE


def test_a_scan_while_the_station_is_connecting_comes_back_empty():
    # esp_wifi_scan_start() refuses (ESP_ERR_WIFI_STATE) and network_wlan_scan() returns [] without an error.
    world.networks = [simworld.Network("HomeNet", "correct horse")]
    sta = network.WLAN(network.WLAN.IF_STA)
    sta.active(True)
    sta.connect("Nowhere", "whatever1")
    assert sta.scan() == []
    sta.disconnect()
    assert [r[0] for r in sta.scan()] == [b"HomeNet"]


def test_one_radio_the_access_point_follows_the_stations_channel_and_loses_its_phones():
    world.networks = [simworld.Network("HomeNet", "correct horse", channel=6)]
    sta, ap = network.WLAN(network.WLAN.IF_STA), network.WLAN(network.WLAN.IF_AP)
    ap.active(True)
    ap.config(channel=1)
    assert ap.config("channel") == 1 and world.phone_joins_ap()
    sta.active(True)
    sta.connect("HomeNet", "not the password")  # authenticating happens on the network's channel
    world.advance_us(world.connect_delay_us)
    assert ap.config("channel") == sta.config("channel") == 6
    assert ap.status("stations") == [] and world.ap_drops == 1
    sta.disconnect()
    sta.connect("HomeNet", "correct horse")
    world.advance_us(world.connect_delay_us)
    assert sta.isconnected() and world.phone_joins_ap()
    ap.config(channel=1)  # while the station is associated the AP stays on its channel
    assert ap.config("channel") == 6 and len(ap.status("stations")) == 1
    ap.active(False)
    assert world.ap_phones == []


def test_access_point_address_is_configurable():
    ap = network.WLAN(network.WLAN.IF_AP)
    ap.active(True)
    ap.config(ssid="Measurement Device_A1B2C3", key="abcdefghjkmn", security=network.WLAN.SEC_WPA2)
    ap.ipconfig(addr4="192.168.251.1/24")
    assert ap.ipconfig("addr4") == ("192.168.251.1", "255.255.255.0")
    assert ap.config("ssid") == "Measurement Device_A1B2C3"
    with raises(ValueError):
        ap.config(key="short")


def test_rtc_starts_unset_and_can_be_set():
    rtc = machine.RTC()
    assert rtc.datetime()[0] == 2000  # no NTP yet: the clock cannot be trusted for TLS
    rtc.datetime((2026, 11, 28, 5, 19, 30, 0, 0))
    assert rtc.datetime()[:7] == (2026, 11, 28, 5, 19, 30, 0)
    if MICROPYTHON:  # CPython's time.time() stays the host clock; only MicroPython's is shadowed
        assert time.gmtime()[:6] == (2026, 11, 28, 19, 30, 0)
        assert time.time() == simworld.epoch_from_civil(2026, 11, 28, 19, 30, 0)


def test_board_brings_up_lan_from_the_config_section():
    from firmware import config
    from firmware.board import Board

    lan_cfg = dict(config.defaults()["lan"])
    board = Board()
    assert board.lan(lan_cfg) is None  # LAN is off by default
    for phy in ("LAN8720", "LAN8710", "IP101", "RTL8201", "DP83848", "KSZ8041", "KSZ8081"):
        lan_cfg.update(enabled=True, phy=phy)
        board = Board()
        lan = board.lan(lan_cfg)  # every PHY the config offers exists on the ESP32 port
        lan.active(True)
        assert not lan.isconnected()
        world.lan_link = True
        assert lan.isconnected() and lan.ipconfig("addr4")[0] != "0.0.0.0"
        world.lan_link = False


def test_accelerated_clock_skips_idle_waits_and_stops_at_timers():
    if not MICROPYTHON:
        from support import skip

        skip("select.py shadows the unix port's select; CPython keeps its own")
    import asyncio
    import select

    world.set_accelerated(60000)
    poller = select.poll()
    flag = asyncio.ThreadSafeFlag()
    poller.register(flag, select.POLLIN)
    t0 = time.ticks_ms()
    assert poller.ipoll(500) == [] and time.ticks_diff(time.ticks_ms(), t0) >= 500  # nothing to wait for: skipped
    assert world.skipped_us >= 490_000
    flag.set()
    t1 = time.ticks_ms()
    assert poller.ipoll(500) == [(flag, select.POLLIN)] and time.ticks_diff(time.ticks_ms(), t1) < 50
    flag.clear()
    fired = []
    tim = machine.Timer(0)
    tim.init(period=100, mode=machine.Timer.PERIODIC, callback=lambda t: fired.append(time.ticks_ms()))
    t2 = time.ticks_ms()
    poller.ipoll(10_000)  # a timer is due in 100 ms: the clock stops there, not 10 s on
    poller.ipoll(0)  # (the soft callback runs once the VM gets to it)
    tim.deinit()
    assert fired and 90 <= time.ticks_diff(fired[0], t2) <= 150 and time.ticks_diff(time.ticks_ms(), t2) < 200
    poller.unregister(flag)
    time.sleep_ms(2000)  # a blocking sleep on the accelerated clock is skipped too, not slept
    assert world.skipped_us >= 2_500_000


def test_name_lookups_and_ntp_hold_the_vm_as_long_as_the_radio_script_says():
    from tools.sim import radio, simnet

    world.set_radio(radio.load_networks({"dns_ms": 5000, "ntp_ms": 1000, "lan_link": True}))
    board = simnet.SimBoard()
    t0 = time.ticks_ms()
    assert board.resolve("localhost", 8443) == "127.0.0.1"
    assert time.ticks_diff(time.ticks_ms(), t0) == 5000
    board.sync_clock()
    assert time.ticks_diff(time.ticks_ms(), t0) == 6000
    world.dns_answers = False  # no server answers: the lookup blocks just as long, then fails
    with raises(OSError):
        board.resolve("localhost", 8443)
    assert time.ticks_diff(time.ticks_ms(), t0) == 11000
    world.lan_link = False  # no link at all: lwIP fails at once
    with raises(OSError):
        board.resolve("localhost", 8443)
    assert time.ticks_diff(time.ticks_ms(), t0) == 11000


def test_esp32_heap_regions_show_psram_only_on_a_module_that_has_it():
    import esp
    import esp32

    assert esp.flash_size() == 4 * 1024 * 1024  # an ESP32-WROOM-32
    internal = esp32.idf_heap_info(esp32.HEAP_DATA)
    assert internal and max(r[0] for r in internal) < 200 * 1024
    assert all(len(r) == 4 and r[2] <= r[1] <= r[0] for r in internal)
    executable = esp32.idf_heap_info(esp32.HEAP_EXEC)
    assert executable and all(r not in internal for r in executable)
    world.psram_bytes = 4 * 1024 * 1024  # a WROVER
    regions = esp32.idf_heap_info(esp32.HEAP_DATA)
    assert regions[:-1] == internal and regions[-1][0] == 4 * 1024 * 1024 and 0 < regions[-1][1] <= regions[-1][0]
    assert esp32.idf_heap_info(esp32.HEAP_EXEC) == executable  # PSRAM is not executable


def test_esp32_partitions_as_the_ports_tables_have_them():
    import esp32

    # the stock image's partitions-4MiBplus.csv, and the "vfs" partition the port adds after it
    vfs = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")
    assert [p.info() for p in vfs] == [(1, 0x81, 0x200000, 0x200000, "vfs", False)]
    assert esp32.Partition.find(esp32.Partition.TYPE_DATA, label="romfs") == []
    assert esp32.romfs_partition() is None
    with raises(OSError):
        esp32.Partition("romfs")
    # an image with a ROMFS partition: partitions-4MiB-romfs.csv's 128 KiB at 0x1E0000
    world.partitions = esp32.partition_table(world.flash_bytes, 0x20000)
    romfs = esp32.Partition("romfs")
    assert romfs.info() == (1, 0x8F, 0x1E0000, 0x20000, "romfs", False)
    assert romfs.ioctl(4, 0) == 32 and romfs.ioctl(5, 0) == 4096
    with raises(OSError):  # its contents come with the stand-in (tools/standin) only
        romfs.readblocks(0, bytearray(16))

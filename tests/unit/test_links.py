# Joining a network from the setup page, LAN preference and when the setup access point is up.
import network

from firmware import config, identity, links
from firmware.board import Board
from firmware.identity import Identity, IdentityStatus
from simworld import Network, world
from support import tmpdir

FLEET_KEY = bytes(range(32))


def _ident():
    serial, pin = "MD7K3Q9XPA", "40718265"
    return IdentityStatus(Identity(serial, "k7pq2mzx9abcdrst", pin, identity.derive_upload_key(FLEET_KEY, serial, pin)))


def _parts(doc=None):
    store = config.ConfigStore(path=tmpdir() + "/config.json", log=lambda m: None)
    store.load()
    if doc:
        store.update(doc)
    board = Board()
    logs = []
    return board, store, links.Links(board, store, _ident(), log=logs.append), logs


def _join(ssid, password, networks=None):
    world.networks = networks or [Network("HomeNet", "correct horse", ip="192.168.1.77"), Network("Cafe", None),
                                  Network("NoLease", "password123", dhcp=False)]
    board = Board()
    j = links.Joiner(board.sta, board, ssid, password, timeout_ms=10000)
    for _ in range(100):
        out = j.poll()
        if out is not None:
            j.end(out)
            return out, j
        world.advance_us(250000)
    raise AssertionError("the attempt never ended")


def test_joining_reports_each_outcome_in_plain_words():
    out, j = _join("HomeNet", "correct horse")
    assert out == links.OK and j.ip == "192.168.1.77"
    assert "192.168.1.77" in links.outcome_message(out, "HomeNet", j.ip)
    out, _ = _join("HomeNet", "wrong-password")
    assert out == links.WRONG_PASSWORD and "password is probably wrong" in links.outcome_message(out, "HomeNet")
    out, _ = _join("Elsewhere", "whatever1")
    assert out == links.NOT_FOUND and "not found" in links.outcome_message(out, "Elsewhere")
    out, _ = _join("NoLease", "password123")
    assert out == links.NO_DHCP and "no address from its DHCP" in links.outcome_message(out, "NoLease")
    out, j = _join("Cafe", "")
    assert out == links.OK


def test_the_access_point_comes_up_when_nothing_is_configured_with_the_label_credentials():
    board, store, net, _ = _parts()
    net.tick()
    ap = board.ap
    assert net.ap_up and ap.active()
    assert ap.config("ssid") == "Measurement Device_MD7K3Q9XPA"
    assert ap.config("security") == board_sec_wpa2()
    assert ap.ipconfig("addr4") == ("192.168.251.1", "255.255.255.0")


def board_sec_wpa2():
    return Board.SEC_WPA2


def test_no_identity_means_no_access_point_rather_than_an_open_one():
    board, store, net, logs = _parts()
    net.identity = IdentityStatus(None)
    net.tick()
    assert not net.ap_up and not board.ap.active()
    assert any("without a device identity" in m for m in logs)


def test_online_device_takes_the_access_point_down_after_the_linger_time():
    world.networks = [Network("HomeNet", "correct horse")]
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    net.set_ap(True, "test")
    net.tick()
    world.advance_us(2_000_000)
    net.tick()
    assert net.online_via == "wifi" and net.ap_up
    world.advance_us(links.AP_LINGER_MS * 1000)
    net.tick()
    assert not net.ap_up and not board.ap.active()


def test_unreachable_network_brings_the_access_point_up_after_fallback_s():
    world.networks = []
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}, "ap": {"fallback_s": 30}})
    net.tick()
    world.advance_us(29_000_000)
    net.tick()
    assert not net.ap_up
    world.advance_us(2_000_000)
    net.tick()
    assert net.ap_up and "unreachable" in net.ap_reason


def test_the_meters_own_retries_never_move_the_access_point_under_a_phone():
    # The router's password changed: the meter keeps trying its old one, on the router's channel 11,
    # and on one radio each attempt takes the access point to channel 11 with it.
    world.networks = [Network("HomeNet", "correct horse", channel=11)]
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"},
                                   "ap": {"fallback_s": 30, "channel": 1}})
    for _ in range(20):
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    assert net.online_via == "wifi"
    world.networks[0].password = "a new one"
    board.sta.disconnect()  # (the router dropped the meter)
    for _ in range(1400):  # 5 minutes of retries with the old password; the AP up after fallback_s
        net.tick()
        if net.ap_up and not world.ap_phones:
            assert world.phone_joins_ap()  # the installer's phone, as soon as it sees the AP
        world.advance_us(links.TICK_MS * 1000)
    assert board.ap.status("stations") and world.ap_drops == 0  # the phone stayed on the setup page
    assert board.ap.config("channel") == 11


def test_a_short_boot_press_brings_the_access_point_up():
    world.networks = [Network("HomeNet", "correct horse")]
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    net.tick()
    world.advance_us(2_000_000)
    net.tick()
    assert not net.ap_up
    world.press(0)
    net.tick()
    world.advance_us(300_000)
    world.release(0)
    net.tick()
    assert net.ap_up and "BOOT" in net.ap_reason


def test_lan_with_a_lease_is_preferred_and_wifi_sta_stays_off():
    world.networks = [Network("HomeNet", "correct horse")]
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}, "lan": {"enabled": True}})
    board.pins = dict(board.pins)
    board.pins["lan"] = {"mdc": 23, "mdio": 18, "phy_addr": 1, "power": 16}
    world.lan_link = True
    board.sta.active(True)
    net.tick()
    assert net.online_via == "lan" and not board.sta.active()
    assert net.lan_status() == ("connected", world.lan_ip)
    world.lan_link = False  # cable pulled: WiFi takes over
    net.tick()
    world.advance_us(2_000_000)
    net.tick()
    assert net.online_via == "wifi" and board.sta.active()


def test_wifi_stopped_mid_attempt_for_ethernet_is_joined_again_when_the_cable_is_pulled():
    # The port keeps wifi_sta_connect_requested across active(False): back on, status() says
    # CONNECTING though nothing is trying, so only a fresh connect() joins.
    world.networks = [Network("HomeNet", "correct horse")]
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}, "lan": {"enabled": True}})
    net.tick()  # WiFi starts joining...
    assert board.sta.status() == network.STAT_CONNECTING
    world.lan_link = True  # ...and Ethernet comes up first: STA off, mid-attempt
    net.tick()
    assert net.online_via == "lan" and not board.sta.active()
    for _ in range(40):
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    world.lan_link = False
    for _ in range(40):
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    assert net.online_via == "wifi"


def test_a_network_that_was_away_is_tried_again():
    world.networks = []
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    net.tick()
    world.advance_us(2_000_000)
    net.tick()
    assert net.online_via is None
    world.networks = [Network("HomeNet", "correct horse")]  # the router is back
    world.advance_us(links.RETRY_MS * 1000)
    net.tick()
    world.advance_us(2_000_000)
    net.tick()
    assert net.online_via == "wifi"


def test_a_boot_press_long_after_going_online_keeps_the_access_point_up_for_the_linger_time():
    world.networks = [Network("HomeNet", "correct horse")]
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    net.tick()
    world.advance_us(2_000_000)
    net.tick()
    assert net.online_via == "wifi"
    world.advance_us(links.AP_LINGER_MS * 1000 + 1_000_000)  # online for longer than the linger time
    net.tick()
    world.press(0)
    net.tick()
    world.advance_us(300_000)
    world.release(0)
    net.tick()
    world.advance_us(links.AP_LINGER_MS * 1000 // 2)
    net.tick()
    assert net.ap_up  # the installer gets the whole linger time to join
    world.advance_us(links.AP_LINGER_MS * 1000)
    net.tick()
    assert not net.ap_up


def test_the_station_is_never_asked_to_connect_over_a_live_connection():
    # On the ESP32 connect() over a live or pending connection raises "Wifi Internal Error".
    world.networks = [Network("HomeNet", "correct horse"), Network("Office", "staff-only-1")]
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    calls = []
    sta = board.sta
    connect, disconnect = sta.connect, sta.disconnect
    sta.connect = lambda *a, **k: (calls.append("connect"), connect(*a, **k))
    sta.disconnect = lambda: (calls.append("disconnect"), disconnect())
    for _ in range(5):
        net.tick()
        world.advance_us(40_000_000)  # longer than the retry interval each time
    assert net.online_via == "wifi" and calls.count("connect") == 1
    store.update({"wifi": {"ssid": "Office", "password": "staff-only-1"}})
    net.reconnect()  # the setup page saved another network while this one is up
    net.tick()
    assert calls[-2:] == ["disconnect", "connect"]


def test_retries_of_an_absent_network_back_off_to_five_minutes_and_reset_once_joined():
    world.networks = []
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    attempts = []
    connect = board.sta.connect

    def counting(*a, **k):
        attempts.append(world.now_us() // 1000)
        return connect(*a, **k)

    board.sta.connect = counting
    for _ in range(3600):  # an hour without the router, ticking as the portal task does
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert [round(g / 1000) for g in gaps[:4]] == [30, 60, 120, 240], gaps  # (within a tick)
    assert max(gaps) < (links.RETRY_MAX_MS + 2 * links.TICK_MS) and len(attempts) < 20
    world.networks = [Network("HomeNet", "correct horse")]  # back
    for _ in range(1400):  # at most the longest wait, then joined
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    assert net.online_via == "wifi"
    world.networks = []  # the next outage: retries start from 30 s again
    board.sta.disconnect()
    lost_ms = world.now_us() // 1000
    del attempts[:]
    for _ in range(400):
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    assert net.online_via is None and [round((t - lost_ms) / 1000) for t in attempts[:2]] == [30, 90], attempts


def test_the_access_point_is_its_own_gateway_so_a_phone_gets_a_router_inside_the_setup_subnet():
    # On the ESP32, ipconfig(addr4=...) leaves the gateway at 192.168.4.1 and the DHCP server offers
    # that as the router: outside 192.168.251.0/24, which can stop a phone taking it for a captive portal.
    board, store, net, _ = _parts()
    net.tick()
    offer = board.ap.dhcp_offer()
    assert board.ap.ipconfig("gw4") == links.AP_ADDR
    assert offer["router"] == links.AP_ADDR and offer["dns"] == links.AP_ADDR
    assert offer["address"].rsplit(".", 1)[0] == links.AP_ADDR.rsplit(".", 1)[0] and offer["netmask"] == "255.255.255.0"


def _lan_that_does_not_start(doc):
    board, store, net, logs = _parts(doc)
    board.pins["lan"] = {"mdc": 23, "mdio": 18, "phy_addr": 1, "power": 16}
    world.lan_fault = True  # no PHY answers: network.LAN raises OSError after building its driver
    world.networks = [Network("HomeNet", "correct horse", ip="192.168.1.77")]
    return board, store, net, logs


def test_ethernet_that_does_not_start_leaves_wifi_working_and_is_retried_rarely():
    board, store, net, logs = _lan_that_does_not_start({"wifi": {"ssid": "HomeNet", "password": "correct horse"},
                                                        "lan": {"enabled": True}})
    for _ in range(int(60_000 / links.TICK_MS)):  # a minute of ticks
        net.tick()  # never raises
        world.advance_us(links.TICK_MS * 1000)
    assert net.online_via == "wifi"  # WiFi carried on
    state, _ = net.lan_status()
    assert state == "failed" and "Ethernet did not start" in net.lan_error and "esp_eth_driver_install" in net.lan_error
    # Each attempt leaks a driver (~12-15 KB on the ESP32) and waits 100 ms on the power pin: the
    # first, then after 10 s and 60 s, and no more, however long it runs.
    for _ in range(int(24 * 3600 / 60)):  # a day, a tick a minute
        net.tick()
        world.advance_us(60_000_000)
    assert world.lan_starts == 3, world.lan_starts
    assert sum("Ethernet did not start" in m for m in logs) == 3 and "until the lan settings change" in net.lan_error
    world.lan_fault = False  # the module fixed, and the settings saved again (the page, or a deploy)
    store.update({"lan": {"phy_addr": 0}})
    net.tick()
    assert net.lan_error is None and net.lan_status()[0] in ("connected", "no link")


def test_ethernet_alone_that_does_not_start_brings_the_access_point_up_at_once():
    board, store, net, logs = _lan_that_does_not_start({"lan": {"enabled": True}})
    assert not store.needs_setup  # a network is configured: Ethernet...
    net.tick()
    assert net.ap_up and net.ap_reason == "Ethernet did not start"  # ...but it cannot start: ask the installer now


def test_a_wrong_password_is_named_whichever_reason_the_esp32_gives_it():
    # Reason 15 or 204 (not 202): with the port's reconnects for ever status() would say CONNECTING
    # until the timeout, read as "no address from its DHCP server".
    for reason in (15, 202, 204, 205):
        out, j = _join("HomeNet", "not the password", [Network("HomeNet", "correct horse", auth_fail_reason=reason)])
        assert out == links.WRONG_PASSWORD, (reason, out)
        assert time_ms(j) < links.CONNECT_TIMEOUT_MS


def time_ms(j):
    import time

    return time.ticks_diff(time.ticks_ms(), j.started)


def test_a_failed_attempt_is_stopped_not_left_to_reconnect_for_ever():
    out, j = _join("HomeNet", "not the password")
    sta = j.sta
    tried = sta._attempts
    world.advance_us(60_000_000)
    sta.status()  # (the simulated radio plays its events when asked)
    assert sta._attempts == tried  # the port would have gone on trying the failed network
    assert sta.config("reconnects") == -1  # the links' configured network: for ever again


def test_the_last_attempts_status_is_never_this_attempts_outcome():
    # A wrong password on one network, then the right one on another: right after connect() the port
    # still says WRONG_PASSWORD (the kept reason) for a network that has not answered yet.
    nets = [Network("HomeNet", "correct horse", ip="192.168.1.77"),
            Network("Office", "letmein99", auth_fail_reason=202)]
    out, _ = _join("Office", "wrong one", nets)
    assert out == links.WRONG_PASSWORD
    out, j = _join("HomeNet", "correct horse", nets)
    assert out == links.OK and j.ip == "192.168.1.77"


def test_the_page_scans_even_while_the_links_are_retrying_a_network():
    # The port's scan() comes back empty while the station is connecting: the portal stops the
    # attempt for the scan and the links start it again.
    from firmware import portal

    board, store, net, _ = _parts({"wifi": {"ssid": "Gone", "password": "whatever1"}})
    world.networks = [Network("HomeNet", "correct horse")]
    net.tick()  # the links start joining "Gone", which is not there (retried for ever by the port)
    p = portal.Portal(board.sta, store, net.identity, None, net, None, log=lambda m: None)
    assert [n[0] for n in p.scan()] == ["HomeNet"]
    net.tick()  # and they start again
    board.sta.status()
    tried = board.sta._attempts
    world.advance_us(10 * world.connect_delay_us)
    board.sta.status()  # (the simulated radio plays its events when asked)
    assert board.sta._attempts > tried  # "Gone" is being tried again


def test_holding_the_button_ten_seconds_while_running_is_a_factory_reset():
    # At power-up the BOOT button (GPIO0) cannot be used: held at reset, the ESP32 starts its ROM
    # bootloader and the firmware never runs. So the hold works at any time while running.
    board, store, net, logs = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    resets = []
    net.on_long_press = lambda: resets.append(store.factory_reset()) or True
    world.press(0)
    for _ in range(int(4000 / links.TICK_MS)):  # past a short press: the LED says "keep holding"
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    assert net.held_past_short_press() and resets == []
    for _ in range(int(7000 / links.TICK_MS)):
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    assert len(resets) == 1 and store.config["wifi"]["ssid"] == "" and net.reset_at is not None
    world.release(0)
    net.tick()
    assert not net.held_past_short_press() and len(resets) == 1  # once per hold
    assert not net.ap_reason.startswith("BOOT")  # a long hold is not a short press
    # A reset that was refused (the page is trying a network) does not show as done.
    net.reset_at = None
    net.on_long_press = lambda: False
    world.press(0)
    for _ in range(int(11_000 / links.TICK_MS)):
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    world.release(0)
    assert net.reset_at is None


def test_a_hold_released_before_ten_seconds_changes_nothing():
    board, store, net, logs = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    resets = []
    net.on_long_press = lambda: resets.append(1)
    world.press(0)
    for _ in range(int(8000 / links.TICK_MS)):
        net.tick()
        world.advance_us(links.TICK_MS * 1000)
    world.release(0)
    net.tick()
    assert resets == [] and store.config["wifi"]["ssid"] == "HomeNet"


def test_the_links_run_on_a_task_of_their_own_and_a_failing_tick_does_not_end_it():
    from support import MICROPYTHON, skip

    if not MICROPYTHON:
        skip("the links' task uses MicroPython's asyncio (sleep_ms)")
    import asyncio

    board, store, net, logs = _parts()
    world.set_realtime()  # asyncio waits in real time here
    ticks = []

    def tick():
        ticks.append(1)
        raise OSError("Wifi Internal Error")

    net.tick = tick

    async def main():
        try:
            await asyncio.wait_for(net.run(), 2.0)
        except asyncio.TimeoutError:
            pass

    try:
        asyncio.run(main())
    finally:
        asyncio.new_event_loop()
    assert len(ticks) >= 2 and logs.count("network: OSError: Wifi Internal Error") == len(ticks)


def test_a_join_never_takes_the_last_networks_connection_for_its_own():
    # On the port disconnect() takes effect in the event task: right after it, status() may still
    # say GOT_IP for the network being left. The join must see another status before GOT_IP counts.
    world.networks = [Network("HomeNet", "correct horse", ip="192.168.1.77"), Network("Office", "letmein99")]
    sta = Board().sta
    sta.active(True)
    sta.connect("HomeNet", "correct horse")
    world.advance_us(world.connect_delay_us)
    assert sta.isconnected()
    sta.disconnect = lambda: None  # the disconnect event has not arrived yet: still GOT_IP for HomeNet
    sta.connect = lambda ssid, key=None: None  # (nor the new attempt's first one)
    try:
        j = links.Joiner(sta, Board, "Office", "letmein99", timeout_ms=10000)
        assert j.poll() is None  # GOT_IP, but of the old network: not this join's outcome
    finally:
        del sta.disconnect, sta.connect


def test_a_failure_left_by_a_finished_attempt_is_not_the_next_attempts_outcome():
    # A finished attempt (its reconnects used up) leaves its reason; disconnect() then makes no
    # event, so right after connect() the port still reports it.
    world.networks = [Network("HomeNet", "correct horse", ip="192.168.1.77"),
                      Network("Office", "letmein99", auth_fail_reason=202)]
    sta = Board().sta
    sta.active(True)
    sta.config(reconnects=0)
    sta.connect("Office", "wrong one")
    world.advance_us(world.connect_delay_us)
    assert sta.status() == 202  # finished: wrong password
    j = links.Joiner(sta, Board, "HomeNet", "correct horse", timeout_ms=10000)
    assert sta.status() == 202  # stale: HomeNet has not answered yet
    assert j.poll() is None  # ...and is not taken for HomeNet's outcome
    for _ in range(40):
        world.advance_us(250_000)
        out = j.poll()
        if out is not None:
            break
    j.end(out)
    assert out == links.OK and j.ip == "192.168.1.77"


def test_a_scan_the_radio_refuses_keeps_the_networks_found_before():
    from firmware import portal

    board, store, net, _ = _parts()
    world.networks = [Network("HomeNet", "correct horse")]
    p = portal.Portal(board.sta, store, net.identity, None, net, None, log=lambda m: None)
    assert [n[0] for n in p.scan()] == ["HomeNet"]
    board.sta.scan = lambda: []  # what the port answers when ESP-IDF refuses a scan
    world.advance_us(portal.SCAN_EVERY_MS * 1000)
    assert [n[0] for n in p.scan()] == ["HomeNet"]


def test_a_failed_join_from_the_page_goes_back_to_the_working_network_at_once():
    # Anyone on the setup network can try a network: a failed try must not leave a working meter
    # offline until the links' 30 s retry.
    import asyncio

    from firmware import portal

    world.networks = [Network("HomeNet", "correct horse", ip="192.168.1.77"), Network("Cafe", "cafe-pass-1")]
    board, store, net, _ = _parts({"wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    world.connect_delay_us = 200_000
    world.set_realtime()  # asyncio waits in real time here
    p = portal.Portal(board.sta, store, net.identity, None, net, None, log=lambda m: None)

    async def main():
        for _ in range(20):
            net.tick()
            await asyncio.sleep(0.05)
        assert net.online_via == "wifi"
        ok, _ = await p.join("Cafe", "not the password", poll_ms=50)
        assert not ok
        t0 = world.now_us()
        while not (net.online_via == "wifi" and board.sta.config("ssid") == "HomeNet"):
            if world.now_us() - t0 > 10_000_000:
                break
            net.tick()
            await asyncio.sleep(0.05)
        return (world.now_us() - t0) // 1000

    try:
        back_ms = asyncio.run(main())
    finally:
        asyncio.new_event_loop()
    assert back_ms < 3000, back_ms  # back on HomeNet within about one association, not 30 s

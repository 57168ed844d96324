# Named board profiles: each one a pin map that can work, a bad one refused with a clear message, the
# `board.profile` and `lan` settings checked against the board, and each board measuring on simulated mains.
from firmware import boards, config, pincheck
from firmware.board import Board
from firmware.config import ConfigError
from firmware.meter import Meter
from simworld import world
from support import raises
from tools.sim import mains


def _profile(name, **changes):
    p = boards.get(name)
    p.update(changes)
    return p


def _problem(name, **changes):
    problem = pincheck.check(name, _profile(name, **changes))
    assert problem is not None and problem.startswith("board %s: " % name), problem
    return problem


def test_every_named_profile_is_a_pin_map_that_can_work():
    assert boards.NAMES == ("esp32-devkitc", "olimex-esp32-poe", "wt32-eth01")
    for name in boards.NAMES:
        assert pincheck.check(name, boards.get(name)) is None, name


def test_devkitc_is_the_pin_map_of_before():
    b = Board()
    assert b.name == "esp32-devkitc" and b.voltage_inputs == 3
    assert b.pins["adc_pairs"] == ((36, 35), (39, 32), (34, 33)) == mains.ADC_GPIOS
    assert b.pins["button"] == 0 and b.pins["led"] == 2 and b.lan() is None  # no Ethernet of its own


def test_wt32_eth01_keeps_gpio0_for_the_phy_clock_and_uses_only_its_five_adc1_pins():
    p = boards.get("wt32-eth01")
    used = set(p["voltage"]) | set(p["current"])
    assert used <= {32, 33, 35, 36, 39} and len(p["voltage"]) == 1 and p["button"] != 0
    lan = boards.lan_settings(p)
    assert (lan["phy"], lan["phy_addr"], lan["mdc"], lan["mdio"], lan["power"]) == ("LAN8720", 1, 23, 18, None)
    assert (lan["ref_clk"], lan["ref_clk_mode"]) == (0, "in")


def test_olimex_esp32_poe_leaves_gpio34_to_its_button_and_gives_the_clock_out_on_gpio17():
    p = boards.get("olimex-esp32-poe")
    assert p["button"] == 34 and 34 not in p["voltage"] and 34 not in p["current"]
    lan = boards.lan_settings(p)
    assert (lan["phy_addr"], lan["power"], lan["ref_clk"], lan["ref_clk_mode"]) == (0, 12, 17, "out")


def test_a_bad_pin_map_is_refused_naming_the_board_the_role_and_the_pin():
    assert "L1 voltage on GPIO25: not an ADC1 pin" in _problem("esp32-devkitc", voltage=(25, 39, 34))
    assert "GPIO34 is both the L1 voltage and the button" in _problem("olimex-esp32-poe", voltage=(34,))
    assert "GPIO0 is both the button and the lan.ref_clk" in _problem("wt32-eth01", button=0)
    assert "GPIO16/17 are PSRAM on WROVER" in _problem("esp32-devkitc", led=16)
    assert "a strapping pin" in _problem("wt32-eth01", led=12)
    assert "RMII" in _problem("esp32-devkitc", led=21)
    assert "flash" in _problem("esp32-devkitc", led=6)
    assert "inputs only" in _problem("wt32-eth01", led=39)
    assert "1 or 3 voltage inputs" in _problem("esp32-devkitc", voltage=(36, 39))
    wt32 = boards.get("wt32-eth01")
    wrong_clock = boards.lan_settings(wt32, {"ref_clk": 17})  # a clock *in* on 17
    assert "goes in on GPIO 0 only" in pincheck.check("wt32-eth01", wt32, wrong_clock)


def test_the_board_setting_defaults_to_devkitc_and_a_bad_name_lists_the_profiles():
    assert config.defaults()["board"] == {"profile": "esp32-devkitc"}
    # a file written before the setting existed (no "board", lan pins given) stays valid
    old = {"version": 1, "lan": {"enabled": True, "phy": "LAN8720", "phy_addr": 1, "mdc": 23, "mdio": 18, "power": 16}}
    assert config.validate(old)["board"]["profile"] == "esp32-devkitc"
    with raises(ConfigError) as e:
        config.validate({"board": {"profile": "esp32-s3"}})
    assert e.value.field == "board.profile"
    for name in boards.NAMES:
        assert name in str(e.value), str(e.value)


def test_lan_settings_take_the_boards_own_ethernet_unless_given():
    doc = config.validate({"board": {"profile": "olimex-esp32-poe"}, "lan": {"enabled": True}})
    lan = boards.lan_settings(boards.get("olimex-esp32-poe"), doc["lan"])
    got = (lan["phy_addr"], lan["power"], lan["ref_clk"], lan["ref_clk_mode"], lan["enabled"])
    assert got == (0, 12, 17, "out", True)
    v14 = config.validate({"board": {"profile": "wt32-eth01"}, "lan": {"enabled": True, "power": 16}})
    assert boards.lan_settings(boards.get("wt32-eth01"), v14["lan"])["power"] == 16  # a v1.4 board
    for doc, field, part in (
            ({"board": {"profile": "olimex-esp32-poe"}, "lan": {"power": 16}}, "lan.power", "12, 18, 23"),
            ({"board": {"profile": "wt32-eth01"}, "lan": {"ref_clk": 17}}, "lan", "goes in on GPIO 0 only"),
            ({"lan": {"ref_clk_mode": "sideways"}}, "lan.ref_clk_mode", '"in", "out", null'),
            ({"lan": {"enabled": True, "ref_clk": 0, "ref_clk_mode": "in"}}, "lan",
             "GPIO0 is both the button and the lan.ref_clk"),  # a module's clock on the devkit's BOOT pin
            ({"board": {"profile": "wt32-eth01"}, "meter": {"wiring": "three-phase"}}, "meter.wiring",
             "L1's voltage only")):
        with raises(ConfigError) as e:
            config.validate(doc)
        assert e.value.field == field and part in str(e.value), str(e.value)


def test_the_board_gives_network_lan_the_profiles_clock_and_power():
    world.lan_wiring = boards.lan_settings(boards.get("olimex-esp32-poe"))
    with raises(OSError):  # the wt32-eth01's clock (in on GPIO0, PHY at 1) on an Olimex: no PHY answers
        Board("wt32-eth01").lan({"enabled": True})
    lan = Board("olimex-esp32-poe").lan({"enabled": True})
    assert lan is not None and world.lan_starts == 2
    world.lan = None
    with raises(OSError) as e:  # ESP-IDF's EMAC takes a clock in on GPIO0 only
        Board("esp32-devkitc").lan({"enabled": True, "ref_clk": 17, "ref_clk_mode": "in"})
    assert "invalid argument" in str(e.value)


def _measure(name, scenario):
    mains.connect(world, mains.load_scenario(scenario), name)
    m = Meter(Board(name))
    m.start()
    r = None
    end = world.now_us() + 3_000_000
    while world.now_us() < end:
        world.advance_us(1000)
        r = m.poll() or r
    m.stop()
    return r


def test_each_board_measures_its_inputs_and_a_board_with_one_voltage_input_derives_l2_l3():
    s = {"phases": [{"vrms": 230.0, "irms": 10.0, "phase_deg": 20.0} for _ in range(3)]}
    for name in boards.NAMES:
        r = _measure(name, s)
        one = len(boards.get(name)["voltage"]) == 1
        assert r["wiring"] == ("single-phase" if one else "three-phase"), (name, r["wiring"])
        assert [ph["voltage_derived"] for ph in r["phases"]] == [False, one, one], name
        for ph in r["phases"]:
            assert abs(ph["vrms"] - 230.0) < 2.0 and abs(ph["irms"] - 10.0) < 0.2, (name, ph)
            assert abs(ph["real_power_w"] - 2300 * 0.9397) < 40, (name, ph)

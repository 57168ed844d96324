# boards — the named board profiles: which GPIO each of the meter's inputs, its button, its LED and the
# board's Ethernet use, and the rules a pin map must follow. Pure data: firmware/board.py builds the
# hardware from a profile, firmware/config.py checks the `board.profile` and `lan` settings against it.
#
# A profile: "voltage" (the L1, L2, L3 voltage inputs; a board with fewer ADC1 pins lists L1 alone and
# measures single-phase, deriving L2/L3 from L1), "current" (CT1-CT3), "button" (pulled up, 0 when
# pressed), "led", "lan" (the board's own Ethernet, or None: an external module wired as the lan
# settings say), "lan_pins" (the GPIOs the lan settings may name on this board), "strap_ok" (strapping
# pins whose level at reset the board's own circuit sets: allowed for the part the board put there) and
# "psram" (the board may carry a WROVER module, whose PSRAM takes GPIO16/17). Where each pin comes from:
# docs/HARDWARE.md, "Board profiles".

DEFAULT = "esp32-devkitc"

# An external LAN8720 module on an esp32-devkitc, as the lan settings always defaulted to.
MODULE_LAN = {"phy": "LAN8720", "phy_addr": 1, "mdc": 23, "mdio": 18, "power": 16, "ref_clk": None,
              "ref_clk_mode": None}
LAN_KEYS = ("phy", "phy_addr", "mdc", "mdio", "power", "ref_clk", "ref_clk_mode")

PROFILES = {
    # WROOM-32 or WROVER dev boards: the BOOT button on GPIO0 is the board's; an LED with its resistor
    # to ground on GPIO2 holds that pin low at reset, the level the ROM bootloader wants.
    "esp32-devkitc": {"voltage": (36, 39, 34), "current": (35, 32, 33), "button": 0, "led": 2,
                      "lan": None, "lan_pins": (4, 5, 13, 14, 15, 16, 17, 18, 23), "strap_ok": (0, 2),
                      "psram": True},
    # LAN8720 at address 1, its 50 MHz oscillator into GPIO0: no button there. Five ADC1 pins on the
    # headers (32, 33, 35, 36, 39): L1's voltage and three CTs. v1.4 boards switch the oscillator
    # with GPIO16 (lan.power 16).
    "wt32-eth01": {"voltage": (36,), "current": (35, 32, 33), "button": 4, "led": 14,
                   "lan": {"phy": "LAN8720", "phy_addr": 1, "mdc": 23, "mdio": 18, "power": None, "ref_clk": 0,
                           "ref_clk_mode": "in"},
                   "lan_pins": (16, 18, 23), "strap_ok": (0,), "psram": False},
    # LAN8720 at address 0, powered by GPIO12, its clock from the ESP32 on GPIO17; BUT1 is GPIO34, which
    # leaves five ADC1 pins: L1's voltage and three CTs.
    "olimex-esp32-poe": {"voltage": (36,), "current": (35, 32, 33), "button": 34, "led": 4,
                         "lan": {"phy": "LAN8720", "phy_addr": 0, "mdc": 23, "mdio": 18, "power": 12,
                                 "ref_clk": 17, "ref_clk_mode": "out"},
                         "lan_pins": (12, 18, 23), "strap_ok": (12,), "psram": False},
}
NAMES = tuple(sorted(PROFILES))

ADC1 = (32, 33, 34, 35, 36, 37, 38, 39)  # ADC2 cannot be read while WiFi runs
INPUT_ONLY = (34, 35, 36, 37, 38, 39)
FLASH = (6, 7, 8, 9, 10, 11)
STRAPPING = (0, 2, 5, 12, 15)
PSRAM = (16, 17)
RMII = (19, 21, 22, 25, 26, 27)  # TXD0, TX_EN, TXD1, RXD0, RXD1, CRS_DV: fixed in the ESP32
CLOCK_IN = (0,)  # where the EMAC takes a 50 MHz reference clock in...
CLOCK_OUT = (0, 16, 17)  # ...and where it can give one out


def get(name):
    """The profile called name; ValueError listing the profiles otherwise."""
    if name not in PROFILES:
        raise ValueError("unknown board %r (known: %s)" % (name, ", ".join(NAMES)))
    return PROFILES[name]


def lan_settings(profile, given=None):
    """The Ethernet settings in force: each key of given (the config's lan section), where it is not
    "board", else the profile's own Ethernet (or MODULE_LAN on a board without one)."""
    base = profile["lan"] or MODULE_LAN
    out = {}
    for key in LAN_KEYS:
        value = (given or {}).get(key, "board")
        out[key] = base[key] if value == "board" else value
    if given is not None:
        out["enabled"] = given.get("enabled", True)
    return out


def roles(profile, lan=None):
    """[(role, gpio)] of every pin the profile (and the lan settings in force) use."""
    out = [("L%d voltage" % (k + 1), g) for k, g in enumerate(profile["voltage"])]
    out += [("CT%d" % (k + 1), g) for k, g in enumerate(profile["current"])]
    out += [("button", profile["button"]), ("LED", profile["led"])]
    for key in ("mdc", "mdio", "power", "ref_clk"):
        if lan is not None and lan[key] is not None:
            out.append(("lan." + key, lan[key]))
    return out


def check(name, profile, lan=None):
    """None if the profile (with the lan settings in force, if given) is a pin map that can work;
    otherwise the first problem, as a sentence naming the board, the role and the GPIO."""
    where = "board %s: " % name
    if len(profile["voltage"]) not in (1, 3) or len(profile["current"]) != 3:
        return where + "needs 3 CT inputs and 1 or 3 voltage inputs"
    lan = lan if lan is not None else (lan_settings(profile) if profile["lan"] else None)
    seen = {}
    for role, g in roles(profile, lan):
        if type(g) is not int or not 0 <= g <= 39 or g in (20, 24, 28, 29, 30, 31):
            return where + "%s: GPIO%s is not an ESP32 GPIO" % (role, g)
        if g in seen:
            return where + "GPIO%d is both the %s and the %s" % (g, seen[g], role)
        seen[g] = role
        if (role[-1] == "e" or role[:2] == "CT") and g not in ADC1:  # "Ln voltage", "CTn"
            return where + "%s on GPIO%d: not an ADC1 pin (32-39); ADC2 cannot be read while WiFi runs" % (role, g)
        if g in FLASH:
            return where + "%s on GPIO%d: GPIO6-11 are the module's flash" % (role, g)
        if g in RMII:
            return where + "%s on GPIO%d: GPIO19, 21, 22, 25, 26, 27 are Ethernet (RMII) pins" % (role, g)
        # An external module's pins (a board without Ethernet of its own) are the installer's choice,
        # from lan_pins: only clashes are refused there.
        chosen = role[0] != "l" or profile["lan"] is not None
        if chosen and g in STRAPPING and g not in profile["strap_ok"]:
            return where + "%s on GPIO%d: a strapping pin (0, 2, 5, 12, 15), its level at reset matters" % (role, g)
        if chosen and g in PSRAM and profile["psram"]:
            return where + "%s on GPIO%d: GPIO16/17 are PSRAM on WROVER modules" % (role, g)
        if role in ("LED", "lan.mdc", "lan.mdio", "lan.power") and g in INPUT_ONLY:
            return where + "%s on GPIO%d: GPIO34-39 are inputs only" % (role, g)
    if lan is not None and lan["ref_clk"] is not None:
        out = lan["ref_clk_mode"] == "out"  # unset: ESP-IDF's default, the clock comes in
        pins = CLOCK_OUT if out else CLOCK_IN
        if lan["ref_clk"] not in pins:
            return where + "lan.ref_clk: the 50 MHz clock goes %s on GPIO %s only" % (
                "out" if out else "in", ", ".join(str(p) for p in pins))
    return None

# boards — the named board profiles: which GPIO each of the meter's inputs, its button, its LED and the
# board's Ethernet use. Pure data: firmware/board.py builds the hardware from a profile;
# firmware/pincheck.py holds the rules a pin map must follow, and firmware/config.py checks the
# `board.profile` and `lan` settings against them.
#
# A profile: "voltage" (the L1, L2, L3 voltage inputs; a board with fewer ADC1 pins lists L1 alone and
# measures single-phase, deriving L2/L3 from L1), "current" (CT1-CT3), "button" (pulled up, 0 when
# pressed), "led", "lan" (the board's own Ethernet, or None: an external module wired as the lan
# settings say), "lan_pins" (the GPIOs the lan settings may name on this board), "strap_ok" (strapping
# pins whose level at reset the board's own circuit sets: allowed for the part the board put there) and
# "psram" (the board may carry a WROVER module, whose PSRAM takes GPIO16/17); "lan" is a tuple in
# LAN_KEYS order. Where each pin comes from: docs/HARDWARE.md, "Board profiles".
#
# Memory: a table of profiles would sit in the heap for good (each constant tuple and dict is built
# when the module loads, even from ROMFS). So the profiles are code, decoded only when asked for, and
# pin sets are bit masks (small ints, nothing allocated): the heap holds the one profile in use.
# The pin rules (firmware/pincheck.py) are loaded only while settings are checked.

DEFAULT = "esp32-devkitc"
NAMES = ("esp32-devkitc", "olimex-esp32-poe", "wt32-eth01")
LAN_KEYS = ("phy", "phy_addr", "mdc", "mdio", "power", "ref_clk", "ref_clk_mode")
# An external LAN8720 module on an esp32-devkitc, as the lan settings always defaulted to (LAN_KEYS order).
MODULE_LAN = ("LAN8720", 1, 23, 18, 16, None, None)

def _pins(mask):
    return tuple(g for g in range(30) if mask >> g & 1)


def _profile(name):
    # (voltage L1-L3 (0: none), CT1-CT3, button, LED, lan_pins mask, strap_ok mask, psram, lan or None)
    if name == "esp32-devkitc":
        # WROOM-32 or WROVER dev boards: the BOOT button on GPIO0 is the board's; an LED with its
        # resistor to ground on GPIO2 holds that pin low at reset, the level the ROM bootloader wants.
        return (36, 39, 34, 35, 32, 33, 0, 2, 0x87E030, 0b101, True, None)  # lan_pins 4, 5, 13-18, 23
    if name == "wt32-eth01":
        # LAN8720 at address 1, its 50 MHz oscillator into GPIO0: no button there. Five ADC1 pins on the
        # headers (32, 33, 35, 36, 39): L1's voltage and three CTs. v1.4 boards switch the oscillator
        # with GPIO16 (lan.power 16).
        return (36, 0, 0, 35, 32, 33, 4, 14, 1 << 16 | 1 << 18 | 1 << 23, 1, False,
                ("LAN8720", 1, 23, 18, None, 0, "in"))
    if name == "olimex-esp32-poe":
        # LAN8720 at address 0, powered by GPIO12, its clock from the ESP32 on GPIO17; BUT1 is GPIO34
        # and GPIO39 senses the external supply, which leaves L1's voltage and three CTs.
        return (36, 0, 0, 35, 32, 33, 34, 4, 1 << 12 | 1 << 18 | 1 << 23, 1 << 12, False,
                ("LAN8720", 0, 23, 18, 12, 17, "out"))
    return None


def get(name):
    """The profile called name (a new dict); ValueError listing the profiles otherwise."""
    t = _profile(name)
    if t is None:
        raise ValueError("unknown board %r (known: %s)" % (name, ", ".join(NAMES)))
    return {"voltage": tuple(g for g in t[:3] if g), "current": t[3:6], "button": t[6], "led": t[7],
            "lan_pins": _pins(t[8]), "strap_ok": t[9], "psram": t[10], "lan": t[11]}


def lan_settings(profile, given=None):
    """The Ethernet settings in force: each key of given (the config's lan section), where it is not
    "board", else the profile's own Ethernet (or MODULE_LAN on a board without one). profile: get()'s
    dict, or its "lan" alone (a tuple, or None)."""
    base = (profile.get("lan") if isinstance(profile, dict) else profile) or MODULE_LAN
    out = {}
    for k, key in enumerate(LAN_KEYS):
        value = (given or {}).get(key, "board")
        out[key] = base[k] if value == "board" else value
    if given is not None:
        out["enabled"] = given.get("enabled", True)
    return out

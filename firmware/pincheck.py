# pincheck — the rules a board's pin map must follow (firmware/boards.py), with the sentence that says
# which one is broken. Loaded by firmware/config.py only while it checks settings, then let go: the
# rules take no heap while the meter runs.
#
# Pin sets are bit masks, bit g for GPIO g, written as numbers so that nothing is kept in the module:
#   0x9025    strapping pins 0, 2, 5, 12, 15: their level at reset matters
#   0x30000   16, 17: PSRAM on WROVER modules
#   0xE680000 19, 21, 22, 25, 26, 27: the Ethernet RMII pins (TXD0, TX_EN, TXD1, RXD0, RXD1, CRS_DV)
#   0x30001   0, 16, 17: where ESP-IDF's EMAC gives its 50 MHz clock out (it takes one in on GPIO0 only)
#   0x1100000 20, 24: no such GPIO (nor 28-31)

from firmware import boards


def check(name, profile, lan=None):
    """None if the profile (with the lan settings in force, if given) is a pin map that can work;
    otherwise the first problem, as a sentence naming the board, the role and the GPIO. profile is
    get()'s dict, where "strap_ok" is a mask of GPIOs."""
    where = "board %s: " % name
    if len(profile["voltage"]) not in (1, 3) or len(profile["current"]) != 3:
        return where + "needs 3 CT inputs and 1 or 3 voltage inputs"
    lan = lan if lan is not None else (boards.lan_settings(profile) if profile["lan"] else None)
    roles = [("L%d voltage" % (k + 1), g) for k, g in enumerate(profile["voltage"])]
    roles += [("CT%d" % (k + 1), g) for k, g in enumerate(profile["current"])]
    roles += [("button", profile["button"]), ("LED", profile["led"])]
    for key in ("mdc", "mdio", "power", "ref_clk"):
        if lan is not None and lan[key] is not None:
            roles.append(("lan." + key, lan[key]))
    seen = {}
    for role, g in roles:
        if type(g) is not int or not 0 <= g <= 39 or 28 <= g <= 31 or 0x1100000 >> g & 1:
            return where + "%s: GPIO%s is not an ESP32 GPIO" % (role, g)
        if g in seen:
            return where + "GPIO%d is both the %s and the %s" % (g, seen[g], role)
        seen[g] = role
        bit = 1 << g if g < 30 else 0
        if (role[-1] == "e" or role[:2] == "CT") and g < 32:  # "Ln voltage", "CTn"
            return where + "%s on GPIO%d: not an ADC1 pin (32-39); ADC2 cannot be read while WiFi runs" % (role, g)
        if 6 <= g <= 11:
            return where + "%s on GPIO%d: GPIO6-11 are the module's flash" % (role, g)
        if bit & 0xE680000:
            return where + "%s on GPIO%d: GPIO19, 21, 22, 25, 26, 27 are Ethernet (RMII) pins" % (role, g)
        # An external module's pins (a board without Ethernet of its own) are the installer's choice,
        # from lan_pins: only clashes are refused there.
        chosen = role[0] != "l" or profile["lan"] is not None
        if chosen and bit & 0x9025 & ~profile["strap_ok"]:
            return where + "%s on GPIO%d: a strapping pin (0, 2, 5, 12, 15), its level at reset matters" % (role, g)
        if chosen and bit & 0x30000 and profile["psram"]:
            return where + "%s on GPIO%d: GPIO16/17 are PSRAM on WROVER modules" % (role, g)
        if role in ("LED", "lan.mdc", "lan.mdio", "lan.power") and g >= 34:
            return where + "%s on GPIO%d: GPIO34-39 are inputs only" % (role, g)
    if lan is not None and lan["ref_clk"] is not None:
        out = lan["ref_clk_mode"] == "out"  # unset: ESP-IDF's default, the clock comes in
        if not (0x30001 if out else 1) >> lan["ref_clk"] & 1:
            return where + "lan.ref_clk: the 50 MHz clock goes %s on GPIO %s only" % (
                ("out", "0, 16, 17") if out else ("in", "0"))
    return None

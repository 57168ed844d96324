# diagnostics — wiring problems in words an installer understands, with the software fix where one exists.
#
# CT direction and CT-to-phase placement are judged together, as one hypothesis for the whole
# panel: for every way the CTs could really be placed (which conductor, which way round) the angle
# each CT's current would then have against its own voltage is computed, and the most plausible
# placement wins. Plausible means small load angles (loads sit near the voltage, |angle| < 40° for
# most), plus a penalty per CT that would be wired differently from the configuration, so a
# correctly wired panel with low-power-factor loads is never "fixed". On a site with generation
# (solar, wind) export is normal, so a CT's direction cannot be judged and only placement is.

import math

from firmware.metering import angle_deg

VOLTAGE_MIN_V = 40.0  # below this a phase has no voltage
CT_UNPLUGGED_CODE = 200  # the jack switch pulls an empty CT input to 0 V: its codes sit near 0
MIN_CURRENT_FRACTION = 0.01  # angles are judged only above 1 % of the CT range...
MIN_CURRENT_A = 0.5  # ...and above half an amp
CHANGE_PENALTY_DEG = 45.0  # the evidence one rewired CT must overcome
FREQ_TOLERANCE = 0.05  # +-5 % of nominal: 47.5-52.5 Hz, 57-63 Hz

PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def _wrap(deg):
    """An angle in (-180, 180]."""
    deg = math.fmod(deg, 360.0)
    if deg > 180:
        deg -= 360
    elif deg <= -180:
        deg += 360
    return deg


def _cost(load_deg, generation):
    a = abs(_wrap(load_deg))
    return min(a, 180 - a) if generation else a


def best_placement(angles, ct_phase, generation):
    """The most plausible (conductor, direction) for every CT.

    angles[c]: lag of CT c's current behind the voltage it is paired with (None: too little current).
    ct_phase[c]: the configured phase (1..3) of CT c. Returns (new_ct_phase, flip) where flip[c] is
    True when CT c is the other way round from how it is configured now.
    """
    directions = ((False,), (False, True))[0 if generation else 1]
    best = (1e9, PERMUTATIONS[0], (False, False, False))
    for perm in PERMUTATIONS:
        # perm[c]: the conductor (0..2) CT c clamps under this hypothesis
        for flips in _flip_sets(directions):
            cost = 0.0
            for c in range(3):
                moved = perm[c] != ct_phase[c] - 1
                changes = (1 if moved else 0) + (1 if flips[c] else 0)
                cost += CHANGE_PENALTY_DEG * changes
                if angles[c] is not None:
                    # Against the voltage it is paired with, a CT on conductor j lags by 120° per
                    # phase step, and a reversed CT by another 180°.
                    shift = 120.0 * (perm[c] - (ct_phase[c] - 1)) + (180.0 if flips[c] else 0.0)
                    cost += _cost(angles[c] - shift, generation)
            if cost < best[0] - 1e-9:
                best = (cost, perm, flips)
    return [j + 1 for j in best[1]], list(best[2])


def _flip_sets(directions):
    for a in directions:
        for b in directions:
            for c in directions:
                yield (a, b, c)


def evaluate(phases, frequency_hz, settings, ct_range_a, single_phase):
    """Diagnostics for one window.

    phases[p] (voltage phase p = 0..2): dict with vrms, irms, real_power_w, reactive_power_var,
    voltage_own (bool: its own voltage input has voltage), ct (index of the CT read on it),
    ct_mean_code (DC level of that CT's input).
    """
    out = []
    nominal = settings["nominal_hz"] or (50 if frequency_hz < 55 else 60)
    if frequency_hz > 0 and abs(frequency_hz - nominal) > FREQ_TOLERANCE * nominal:
        out.append({"code": "frequency_out_of_range", "phase": None,
                    "message": "Mains frequency is %.2f Hz, outside %.1f-%.1f Hz for a %d Hz grid. "
                    "Check that the meter is on the grid, not on a generator." % (
                        frequency_hz, nominal * (1 - FREQ_TOLERANCE), nominal * (1 + FREQ_TOLERANCE), nominal)})
    for p in range(3):
        ph = phases[p]
        if not ph["voltage_own"] and not (single_phase and p > 0):
            out.append({"code": "voltage_missing", "phase": p + 1,
                        "message": "No voltage on L%d. Check the L%d voltage wire to the meter and its fuse." % (
                            p + 1, p + 1)})
    ct_phase = settings["ct_phase"]
    angles: list = [None, None, None]
    min_a = max(MIN_CURRENT_A, MIN_CURRENT_FRACTION * ct_range_a)
    for p in range(3):
        ph = phases[p]
        c = ph["ct"]
        if ph["ct_mean_code"] < CT_UNPLUGGED_CODE:
            out.append({"code": "ct_unplugged", "phase": p + 1, "ct": c + 1,
                        "message": "The current clamp on L%d (CT %d) is not plugged in, or its cable is broken. "
                        "Plug it into CT socket %d." % (p + 1, c + 1, c + 1)})
            continue
        has_voltage = ph["voltage_own"] or (single_phase and phases[0]["voltage_own"])
        if has_voltage and ph["vrms"] >= VOLTAGE_MIN_V and ph["irms"] >= min_a:
            angles[c] = angle_deg(ph["real_power_w"], ph["reactive_power_var"])
    new_phase, flip = best_placement(angles, ct_phase, settings["generation"])
    reversed_now = settings["ct_reversed"]
    for c in range(3):
        p = ct_phase[c]
        if flip[c]:
            fixed = list(reversed_now)
            fixed[c] = not fixed[c]
            out.append({"code": "ct_reversed", "phase": p, "ct": c + 1,
                        "message": "Power on L%d flows out of the building, and this site has no generation: "
                        "CT %d is on backwards (its arrow must point towards the load). Turn it round, "
                        "or tap Fix it to invert it in software." % (p, c + 1),
                        "fix": {"ct_reversed": fixed}})
        if new_phase[c] != p:
            out.append({"code": "ct_wrong_phase", "phase": p, "ct": c + 1,
                        "message": "CT %d is read as L%d, but its current is 120° away from L%d's voltage: it "
                        "clamps the L%d conductor. Move it to L%d, or tap Fix it to remap it in software." % (
                            c + 1, p, p, new_phase[c], p),
                        "fix": {"ct_phase": new_phase}})
    return out

# metering — from one burst's integer sums to volts, amps, watts, vars and hertz for one phase.
#
# Inputs are the kernels' block sums (already added up) over the whole-cycle window of n pairs:
#   sv=Σdv, si=Σdi, svv=Σdv², sii=Σdi², svi=Σdv·di   (dv, di: codes minus the channel bias)
# and shifted products Σ dv[k]·di[k+s] at the two integer shifts around a fractional shift.
# The DC offset is removed exactly (variance = mean of squares - square of mean), so the bias
# used by the kernels only has to be close, not right.
#
# Reactive power is the quadrature product: the current advanced by a quarter cycle against the
# voltage gives Vrms·Irms·sin(phi) for the fundamental (+ when the current lags, i.e. inductive).
# Phase correction rotates (P, Q) by the sensors' phase errors: the CT's lead, the voltage channel's
# lead, and the skew of reading I one conversion after V (measured per burst, 360·f·skew degrees).

import math


def mean_removed(sum_xy, sum_x, sum_y, n):
    """Σ(x - x̄)(y - ȳ)/n from raw sums, in codes² (works for x == y: the variance)."""
    return sum_xy / n - (sum_x / n) * (sum_y / n)


def interpolate(c0, c1, frac):
    """A product at a fractional shift from the products at the integer shifts either side."""
    return c0 + (c1 - c0) * frac


def frequency_hz(cycles, window_pairs, pair_s):
    """Mains frequency from the time the burst took for `cycles` whole cycles."""
    if window_pairs <= 0 or pair_s <= 0:
        return 0.0
    return cycles / (window_pairs * pair_s)


def phase_values(n, sv, si, svv, sii, p_codes2, q_codes2, v_units, i_units, sign, correction_deg):
    """(vrms, irms, real_power_w, reactive_power_var) for one burst of one phase.

    p_codes2/q_codes2: the in-phase and quadrature products with means removed (codes²).
    sign: -1 when the CT is configured as reversed. correction_deg: how many degrees the measured
    current angle must be turned back (CT lead - voltage lead + V/I read skew).
    """
    var_v = mean_removed(svv, sv, sv, n)
    var_i = mean_removed(sii, si, si, n)
    vrms = math.sqrt(var_v) * v_units if var_v > 0 else 0.0
    irms = math.sqrt(var_i) * i_units if var_i > 0 else 0.0
    scale = v_units * i_units * sign
    p = p_codes2 * scale
    q = q_codes2 * scale
    c = math.radians(correction_deg)
    cos_c = math.cos(c)
    sin_c = math.sin(c)
    return vrms, irms, p * cos_c - q * sin_c, q * cos_c + p * sin_c


def apparent_and_pf(vrms, irms, real_power_w):
    """(apparent_power_va, power_factor); PF carries the sign of P (negative when exporting)."""
    s = vrms * irms
    if s <= 0:
        return 0.0, 0.0
    pf = real_power_w / s
    return s, max(-1.0, min(1.0, pf))


def angle_deg(real_power_w, reactive_power_var):
    """The angle by which the current lags the voltage, in (-180, 180]."""
    return math.degrees(math.atan2(reactive_power_var, real_power_w))

# calibrate — an installer's calibration: what a multimeter and a clamp meter read, in; the channels'
# gains (and a CT's phase lead) out, as the meter.calibration setting.
#
# Each reference the installer gives sets one channel's adc_gain to old * reference / measured,
# the meter's own reading averaged over a few windows (Average). With a resistive load on the
# clamped conductor (power factor 1: a kettle, a heater) the CT's phase lead is set so that its
# reactive power reads zero: the meter shows a lead it does not correct as a power-factor angle,
# -(true lead - assumed lead) at 50 Hz. Loaded only while an installer calibrates (like configcheck).
import math

from firmware import profiles

MAX_CHANGE = 0.25  # a reading more than 25 % off is the wrong phase or a meter in the wrong mode
MIN_VOLTS = 20.0  # below this a multimeter's reading says little about the divider's gain
MIN_RANGE = 0.05  # a CT needs at least 5 % of its range through it to calibrate on
MAX_PF_DEG = 8.0  # a "resistive" load further from PF 1 than this is not one (or the CT is off)


class Average:
    """The meter's readings summed window by window (what a calibration compares with)."""

    def __init__(self):
        self.n = 0
        self.sums = [[0.0] * 4 for _ in range(3)]  # per phase: vrms, irms, real W, reactive var
        self.own = [True, True, True]
        self.hz = 0.0

    def add(self, readings):
        self.n += 1
        self.hz += readings["frequency_hz"]
        for p, ph in enumerate(readings["phases"]):
            s = self.sums[p]
            s[0] += ph["vrms"]
            s[1] += ph["irms"]
            s[2] += ph["real_power_w"]
            s[3] += ph["reactive_power_var"]
            self.own[p] = self.own[p] and not ph["voltage_derived"]

    def phase(self, p):
        """(vrms, irms, W, var) of phase p (0..2), averaged."""
        return [x / self.n for x in self.sums[p]]


def _channel(cal, kind, k, model):
    """The channel's calibration as it stands: the model's defaults and the overrides."""
    out = dict(profiles.defaults(model)[kind][k])
    given = cal.get(kind) or [{}, {}, {}]
    out.update(given[k] or {})
    return out


def _set(cal, kind, k, key, value):
    chans = cal.setdefault(kind, [{}, {}, {}])
    chans[k] = dict(chans[k] or {})
    chans[k][key] = value


def _ratio(what, reference, measured):
    if measured <= 0:
        raise ValueError("%s: the meter reads nothing there, so it cannot be calibrated on it" % what)
    r = reference / measured
    if abs(r - 1) > MAX_CHANGE:
        raise ValueError("%s: the meter reads %.4g and you typed %.4g, more than %d %% apart. Check that the "
                         "instrument is on the right conductor and set to AC; nothing was changed."
                         % (what, measured, reference, MAX_CHANGE * 100))
    return r


def plan(settings, average, vrms=(None, None, None), ct=None, amps=None, resistive=False):
    """The new meter.calibration and what changes: (calibration, [(what, before, after)]).

    settings: the meter settings (model, calibration, ct_phase); average: an Average of at least one
    window; vrms: the multimeter's reading on L1..L3 (None: not measured); ct, amps: a CT (1..3) and the
    clamp meter's reading on the conductor it clamps; resistive: that conductor's load is resistive.
    ValueError (a sentence for the installer) when a reference cannot be used; nothing is changed then.
    """
    if not average.n:
        raise ValueError("No readings yet: wait a few seconds and try again.")
    model = settings["model"]
    cal = {k: [dict(c or {}) for c in v] for k, v in (settings["calibration"] or {}).items()}
    changes = []
    for p in range(3):
        v = vrms[p]
        if v is None:
            continue
        if not average.own[p]:
            raise ValueError("L%d: the meter has no voltage of its own there (it is derived from L1): "
                             "calibrate L1 instead." % (p + 1))
        if v < MIN_VOLTS:
            raise ValueError("L%d: calibrate on at least %d V." % (p + 1, MIN_VOLTS))
        gain = _channel(cal, "voltage", p, model)["adc_gain"]
        new = gain * _ratio("L%d voltage" % (p + 1), v, average.phase(p)[0])
        _set(cal, "voltage", p, "adc_gain", new)
        changes.append(("voltage L%d adc_gain" % (p + 1), gain, new))
    if ct is not None:
        c = ct - 1
        p = settings["ct_phase"][c] - 1  # the phase this CT's readings are reported on
        vrms_p, irms, watts, var = average.phase(p)
        need = MIN_RANGE * profiles.ct_range_a(model)
        if irms < need:
            raise ValueError("CT %d: switch on a load drawing at least %.1f A on its conductor (it reads %.2f A)."
                             % (ct, need, irms))
        ch = _channel(cal, "current", c, model)
        new = ch["adc_gain"] * _ratio("CT %d current" % ct, amps, irms)
        _set(cal, "current", c, "adc_gain", new)
        changes.append(("CT %d adc_gain" % ct, ch["adc_gain"], new))
        if resistive:
            if watts < 0:  # a reversed CT (or export): the angle is the same either way round
                watts, var = -watts, -var
            deg = math.degrees(math.atan2(var, watts))
            if abs(deg) > MAX_PF_DEG:
                raise ValueError("CT %d: the load is %.1f° away from a resistive one: use a kettle or a heater "
                                 "for the phase step; nothing was changed." % (ct, deg))
            hz = average.hz / average.n or 50.0
            lead = ch["phase_lead_deg"] - deg * hz / 50.0
            _set(cal, "current", c, "phase_lead_deg", lead)
            changes.append(("CT %d phase_lead_deg" % ct, ch["phase_lead_deg"], lead))
    if not changes:
        raise ValueError("Type at least one reading to calibrate on.")
    return cal, changes

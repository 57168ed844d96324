# mains — synthetic three-phase mains on the simulated ESP32's ADC pins (MicroPython and CPython).
#
# load_scenario(dict) checks a scenario (see docs/SIMULATOR.md) and fills in its defaults;
# connect(world, scenario) puts one MainsSource per ADC pin into the world: one period of the input
# in TABLE_LEN steps, read with linear interpolation, plus a prime-length table of Gaussian noise
# that the six pins share from different offsets, so that reading a pin stays integer-only and
# allocation-free while the firmware samples it. All of it takes ~45 KB: the whole device, simulator
# included, runs in an ESP32's 96 KB heap (micropython -X heapsize=96wK).
#
# The analogue front end is the reference one from firmware/profiles.py:
#     code = bias + value / units_per_code + noise, rounded, clipped to 0..4095
# and a channel's sensor leads by its phase_lead_deg at 50 Hz, falling as 1/frequency (a CT leads
# through its magnetising inductance): L·50/F degrees for a component at F Hz, so L·50/f at the
# fundamental, which the firmware's default correction undoes, and less for each harmonic.
# The tables hold sixteenths of a code and the ADC rounds only after the noise is added, as a real
# converter does: the noise dithers the quantisation, so a current of a few codes is not biased by
# rounding (rounding first skews power at 1 A on the Public model by several percent).
#
# Table generation uses integer sine/cosine tables and fixed-point coefficients, so it is fast
# under MicroPython (no float boxing in the per-sample loops) and gives the same codes, to the last
# bit, on both runtimes. Noise comes from our own xorshift generator for the same reason.

import gc
import math
from array import array

from firmware import boards, profiles


def adc_gpios(board=None):
    """((V, I) per phase) on the named board profile (firmware/boards.py, the one place pins are
    given): V is None where the board has no voltage input for that phase (L1's alone)."""
    prof = boards.get(board or boards.DEFAULT)
    v = prof["voltage"]
    return tuple((v[k] if k < len(v) else None, i) for k, i in enumerate(prof["current"]))


ADC_GPIOS = adc_gpios()  # the default board's: ((36, 35), (39, 32), (34, 33))
CODE_MAX = 4095
SUB = 16  # table and noise entries are in 1/SUB of a code
NOISE_LEN = 10007  # prime: the noise never lines up with a table period or a burst
# Entries per period: ~10 µs apart at 50 Hz. Linear interpolation between them is off by at most
# (2π·order/TABLE_LEN)²/8 of a component's peak: 1.2e-6 at the fundamental, 3e-5 at the 5th.
TABLE_LEN = 2048
_SIN_ONE = 1 << 20  # fixed-point scale of the sine/cosine tables
_COEF_ONE = 1 << 16  # fixed-point scale of the component amplitudes (in codes)

MODELS = ("home", "public")
WIRINGS = ("three-phase", "single-phase")
FREQUENCY_RANGE_HZ = (40.0, 70.0)
VRMS_MAX = 1000.0
IRMS_MAX = 2000.0
HARMONIC_ORDER_MAX = 50
NOISE_LSB_MAX = 100.0
ADC_READ_US_RANGE = (1, 1000)

DEFAULTS = {
    "description": "",
    "model": "home",
    "frequency_hz": 50.0,
    "wiring": "three-phase",
    "noise_lsb": 1.0,
    "seed": 1,
    "adc_read_us": 35,
    "adc": None,
    "front_end": None,
    "meter": None,
    "phases": None,
}
PHASE_DEFAULTS = {
    "vrms": 230.0,
    "irms": 0.0,
    "phase_deg": 0.0,
    "v_harmonics": None,
    "i_harmonics": None,
    "ct_reversed": False,
    "ct_phase": None,  # None: the CT clamps its own phase's conductor
    "ct_connected": True,
    "voltage_connected": True,
    "cycle_pattern": None,  # None: always on; [1, 0, ...] per mains cycle; {"random": p, "seed": s}
    "steps": None,  # [[t_s, {"irms": ..., "phase_deg": ...}], ...]: the load changes at t_s
}
PATTERN_LEN_MAX = 100_000
STEPS_MAX = 10_000
STEP_KEYS = ("irms", "phase_deg")


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message names the key and the rule it breaks."""


def _fail(where, rule, value=None, show=True):
    if show:
        raise ScenarioError("%s: %s (got %r)" % (where, rule, value))
    raise ScenarioError("%s: %s" % (where, rule))


def _is_number(x):
    return not isinstance(x, bool) and isinstance(x, (int, float)) and x - x == 0  # finite


def _number(where, x, lo, hi):
    if not _is_number(x) or not lo <= x <= hi:
        _fail(where, "must be a number from %g to %g" % (lo, hi), x)
    return float(x)


def _integer(where, x, lo, hi):
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
        _fail(where, "must be a whole number from %d to %d" % (lo, hi), x)
    return x


def _flag(where, x):
    if not isinstance(x, bool):
        _fail(where, "must be true or false", x)
    return x


def _choice(where, x, choices):
    if x not in choices:
        _fail(where, "must be one of %s" % ", ".join('"%s"' % c for c in choices), x)
    return x


def _keys(where, given, known):
    if not isinstance(given, dict):
        _fail(where, "must be an object", given)
    for k in given:
        if k not in known:
            _fail(where, "unknown key %r (known keys: %s)" % (k, ", ".join(sorted(known))), show=False)
    out = dict(known)
    out.update(given)
    return out


def _harmonics(where, x):
    if x is None:
        return []
    if not isinstance(x, list):
        _fail(where, "must be a list of [order, amplitude, phase_deg] entries", x)
    out = []
    seen = []
    for k, h in enumerate(x):
        w = "%s[%d]" % (where, k)
        if not isinstance(h, list) or len(h) != 3:
            _fail(w, "must be [order, amplitude relative to the fundamental, phase_deg]", h)
        order = _integer(w + " order", h[0], 2, HARMONIC_ORDER_MAX)
        if order in seen:
            _fail(w + " order", "harmonic %d is given twice" % order, show=False)
        seen.append(order)
        out.append([order, _number(w + " amplitude", h[1], 0.0, 1.0), _number(w + " phase_deg", h[2], -360.0, 360.0)])
    return out


def _pattern(where, x):
    """None, a list of 0/1 per mains cycle, or {"random": p, "seed": s}; checked."""
    if x is None:
        return None
    if isinstance(x, dict):
        r = _keys(where, x, {"random": None, "seed": 1})
        if r["random"] is None:
            _fail(where, "a random pattern needs \"random\": the probability that a cycle is on", show=False)
        return {"random": _number(where + ".random", r["random"], 0.0, 1.0),
                "seed": _integer(where + ".seed", r["seed"], 0, 0x7FFFFFFF)}
    if not isinstance(x, list) or not 1 <= len(x) <= PATTERN_LEN_MAX:
        _fail(where, "must be a list of 1 to %d entries of 1 (on) or 0 (off), one per mains cycle, or "
                     "{\"random\": p, \"seed\": s}" % PATTERN_LEN_MAX, x)
    for k, on in enumerate(x):
        if isinstance(on, bool) or on not in (0, 1):
            _fail("%s[%d]" % (where, k), "must be 1 (on) or 0 (off)", on)
    return list(x)


def _steps(where, x):
    """None or [[t_s, {"irms", "phase_deg"}], ...] with t_s increasing; checked."""
    if x is None:
        return []
    if not isinstance(x, list) or len(x) > STEPS_MAX:
        _fail(where, "must be a list of at most %d [t_s, {\"irms\": ..., \"phase_deg\": ...}] entries"
              % STEPS_MAX, x)
    out = []
    last = -1.0
    for k, st in enumerate(x):
        w = "%s[%d]" % (where, k)
        if not isinstance(st, list) or len(st) != 2 or not isinstance(st[1], dict):
            _fail(w, "must be [t_s, {\"irms\": ..., \"phase_deg\": ...}]", st)
        t = _number(w + " t_s", st[0], 0.0, 1e7)
        if t <= last:
            _fail(w + " t_s", "steps must come in increasing time", st[0])
        last = t
        change = {}
        for key, value in st[1].items():
            if key not in STEP_KEYS:
                _fail(w, "unknown key %r (a step changes %s)" % (key, " and ".join(STEP_KEYS)), show=False)
            change[key] = _number(w + "." + key, value, 0.0 if key == "irms" else -360.0,
                                  IRMS_MAX if key == "irms" else 360.0)
        out.append([t, change])
    return out


def _phase(where, p, x):
    s = _keys(where, x, PHASE_DEFAULTS)
    return {
        "vrms": _number(where + ".vrms", s["vrms"], 0.0, VRMS_MAX),
        "irms": _number(where + ".irms", s["irms"], 0.0, IRMS_MAX),
        "phase_deg": _number(where + ".phase_deg", s["phase_deg"], -360.0, 360.0),
        "v_harmonics": _harmonics(where + ".v_harmonics", s["v_harmonics"]),
        "i_harmonics": _harmonics(where + ".i_harmonics", s["i_harmonics"]),
        "ct_reversed": _flag(where + ".ct_reversed", s["ct_reversed"]),
        "ct_phase": p if s["ct_phase"] is None else _integer(where + ".ct_phase", s["ct_phase"], 1, 3),
        "ct_connected": _flag(where + ".ct_connected", s["ct_connected"]),
        "voltage_connected": _flag(where + ".voltage_connected", s["voltage_connected"]),
        "cycle_pattern": _pattern(where + ".cycle_pattern", s["cycle_pattern"]),
        "steps": _steps(where + ".steps", s["steps"]),
    }


def load_scenario(given):
    """A checked copy of a scenario dict with every default filled in; ScenarioError if it is wrong."""
    s = _keys("scenario", given, DEFAULTS)
    if not isinstance(s["description"], str):
        _fail("scenario.description", "must be a string", s["description"])
    phases = s["phases"]
    if phases is None:
        phases = [{}, {}, {}]
    if not isinstance(phases, list) or not 1 <= len(phases) <= 3:
        _fail("scenario.phases", "must be a list of 1 to 3 phase objects (L1, L2, L3)", phases)
    phases = phases + [{"irms": 0.0}] * (3 - len(phases))  # a missing phase carries no current
    meter = {} if s["meter"] is None else s["meter"]
    if not isinstance(meter, dict):
        _fail("scenario.meter", "must be an object of meter settings", meter)
    out = {
        "description": s["description"],
        "model": _choice("scenario.model", s["model"], MODELS),
        "frequency_hz": _number("scenario.frequency_hz", s["frequency_hz"], FREQUENCY_RANGE_HZ[0],
                                FREQUENCY_RANGE_HZ[1]),
        "wiring": _choice("scenario.wiring", s["wiring"], WIRINGS),
        "noise_lsb": _number("scenario.noise_lsb", s["noise_lsb"], 0.0, NOISE_LSB_MAX),
        "seed": _integer("scenario.seed", s["seed"], 0, 0x7FFFFFFF),
        "adc_read_us": _integer("scenario.adc_read_us", s["adc_read_us"], ADC_READ_US_RANGE[0],
                                ADC_READ_US_RANGE[1]),
        "adc": _adc("scenario.adc", s["adc"]),
        "front_end": s["front_end"],
        "meter": dict(meter),
        "phases": [_phase("scenario.phases[%d]" % k, k + 1, ph) for k, ph in enumerate(phases)],
    }
    if out["adc"] is not None:
        for k, inside in (("noise_lsb", "noise_lsb"), ("adc_read_us", "read_us")):
            if k in given and given[k] != DEFAULTS[k]:
                _fail("scenario." + k, "goes into scenario.adc as %r when the scenario has an adc object" % inside,
                      show=False)
    try:
        front_end(out)
    except ScenarioError:
        raise
    except Exception as e:
        _fail("scenario.front_end", "must be shaped like profiles.defaults(model): %s" % e, show=False)
    return out


def front_end(scenario):
    """(voltage_channels, current_channels) of the simulated hardware: the reference front end."""
    fe = scenario["front_end"]
    if fe is not None and not isinstance(fe, dict):
        _fail("scenario.front_end", "must be an object like {\"voltage\": [...], \"current\": [...]}", fe)
    if fe and "bias" in fe:
        _choice("scenario.front_end.bias", fe["bias"], BIAS_CIRCUITS)
        fe = {k: fe[k] for k in fe if k != "bias"}
    return profiles.channels(scenario["model"], fe)


def bias_circuit(scenario):
    """"buffered" (the reference front end) or "shared" (the dividers' currents move the bias)."""
    fe = scenario["front_end"] or {}
    return fe.get("bias", "buffered")


# --- the converter: ESP32 ADC1 at 11 dB ------------------------------------------------------
#
# The chip's transfer is ESP-IDF's own characterisation of ADC1 at 11 dB (esp_adc_cal_esp32.c in
# ESP-IDF 4, adc_cali_line_fitting.c in 5): below raw 2880 a line, mV = raw * vref * 196602 / 4096 /
# 65536 + 142 (0.806 mV per code at Vref 1100 mV); from 2944 up a 20-point table (raw 2880-4096,
# step 64) interpolated between a chip with Vref 1000 and one with 1200 mV; a blend between. Below
# the line's offset the converter reads 0. A chip's Vref is 1000-1200 mV; `offset_mv` moves its
# whole curve (the eFuse does not record it, so the port's read_uv() does not know it either).
IDF_SCALE_11DB = 196602  # adc1_vref_atten_scale[ADC_ATTEN_DB_11]
IDF_OFFSET_11DB_MV = 142  # adc1_vref_atten_offset[ADC_ATTEN_DB_11]
LUT_LOW_RAW = 2880
LUT_STEP = 64
LUT_VREF_LOW_MV = (2240, 2297, 2352, 2405, 2457, 2512, 2564, 2616, 2664, 2709,
                   2754, 2795, 2832, 2868, 2903, 2937, 2969, 3000, 3030, 3060)  # lut_adc1_low
LUT_VREF_HIGH_MV = (2667, 2706, 2745, 2780, 2813, 2844, 2873, 2901, 2928, 2956,
                    2982, 3006, 3032, 3059, 3084, 3110, 3135, 3160, 3184, 3209)  # lut_adc1_high
EFUSE_VREF_STEP_MV = 7  # the eFuse holds Vref as 1100 mV + a 5-bit signed count of 7 mV steps
IDEAL_MV_PER_CODE = 3100.0 / CODE_MAX  # the ideal converter: 0 V at code 0, 3.1 V at 4095
BIAS_CIRCUITS = ("buffered", "shared")
ADC_DEFAULTS = {
    "vref_mv": 1100.0,
    "offset_mv": float(IDF_OFFSET_11DB_MV),
    "inl": "esp32",
    "noise_lsb": 4.0,
    "spikes_per_s": 20.0,
    "read_us": 35,
    "efuse_vref_mv": None,  # what the chip's eFuse says its Vref is; None: the true one, to its 7 mV step
}
SPIKE_CODES = (100, 400)  # a spike's size, uniform between these, either sign (see docs/SIMULATOR.md)


def _adc(where, x):
    """The converter: None or "ideal" (the old exact one), or an object of ADC_DEFAULTS' keys."""
    if x is None or x == "ideal":
        return None
    a = _keys(where, x, ADC_DEFAULTS)
    return {
        "vref_mv": _number(where + ".vref_mv", a["vref_mv"], 1000.0, 1200.0),
        "offset_mv": _number(where + ".offset_mv", a["offset_mv"], 0.0, 300.0),
        "inl": _choice(where + ".inl", a["inl"], ("esp32", "none")),
        "noise_lsb": _number(where + ".noise_lsb", a["noise_lsb"], 0.0, NOISE_LSB_MAX),
        "spikes_per_s": _number(where + ".spikes_per_s", a["spikes_per_s"], 0.0, 10_000.0),
        "read_us": _integer(where + ".read_us", a["read_us"], ADC_READ_US_RANGE[0], ADC_READ_US_RANGE[1]),
        "efuse_vref_mv": (None if a["efuse_vref_mv"] is None
                          else _integer(where + ".efuse_vref_mv", a["efuse_vref_mv"], 995, 1205)),
    }


def idf_mv(raw, vref_mv):
    """ESP-IDF's conversion of a raw 11 dB ADC1 reading to mV for a chip of Vref vref_mv, in floats
    (the port's read_uv() is this in integers, efuse_uv())."""
    line = raw * vref_mv * IDF_SCALE_11DB / 4096 / 65536 + IDF_OFFSET_11DB_MV
    if raw < LUT_LOW_RAW:
        return line
    i = min(int((raw - LUT_LOW_RAW) // LUT_STEP), len(LUT_VREF_LOW_MV) - 2)
    fy = (raw - LUT_LOW_RAW - i * LUT_STEP) / LUT_STEP
    fx = (vref_mv - 1000.0) / 200.0
    lo = LUT_VREF_LOW_MV[i] + (LUT_VREF_LOW_MV[i + 1] - LUT_VREF_LOW_MV[i]) * fy
    hi = LUT_VREF_HIGH_MV[i] + (LUT_VREF_HIGH_MV[i + 1] - LUT_VREF_HIGH_MV[i]) * fy
    lut = lo + (hi - lo) * fx
    if raw <= LUT_LOW_RAW + LUT_STEP:
        f = (raw - LUT_LOW_RAW) / LUT_STEP
        return line + (lut - line) * f
    return lut


def efuse_vref_mv(vref_mv):
    """The Vref a chip's eFuse holds: the true one to the nearest 7 mV step from 1100 mV."""
    return 1100 + int(round((vref_mv - 1100) / EFUSE_VREF_STEP_MV)) * EFUSE_VREF_STEP_MV


def efuse_uv(raw, vref_mv):
    """What the ESP32 port's ADC.read_uv() returns for a raw reading: ESP-IDF's line fitting with
    the eFuse Vref, in whole mV (ports/esp32/adc.c, madcblock_read_uv_helper: mV * 1000), integers
    as ESP-IDF computes them (adc_cali_line_fitting.c: calculate_voltage_linear, _lut)."""
    coeff_a = vref_mv * IDF_SCALE_11DB // 4096
    linear = (coeff_a * raw + 32768) // 65536 + IDF_OFFSET_11DB_MV
    if raw < LUT_LOW_RAW:
        return linear * 1000
    i = (raw - LUT_LOW_RAW) // LUT_STEP
    if i > len(LUT_VREF_LOW_MV) - 2:
        i = len(LUT_VREF_LOW_MV) - 2
    x2, x1 = 1200 - vref_mv, vref_mv - 1000
    y2 = (i + 1) * LUT_STEP + LUT_LOW_RAW - raw
    y1 = raw - (i * LUT_STEP + LUT_LOW_RAW)
    v = (LUT_VREF_LOW_MV[i] * x2 * y2 + LUT_VREF_HIGH_MV[i] * x1 * y2 + LUT_VREF_LOW_MV[i + 1] * x2 * y1
         + LUT_VREF_HIGH_MV[i + 1] * x1 * y1)
    lut = (v + 200 * LUT_STEP // 2) // (200 * LUT_STEP)
    if raw <= LUT_LOW_RAW + LUT_STEP:
        x = raw - LUT_LOW_RAW
        return ((linear * LUT_STEP) + (lut * x) - (linear * x) + LUT_STEP // 2) // LUT_STEP * 1000
    return lut * 1000


class Converter:
    """A chip's transfer: mV at the pin -> raw code (a float; the ADC rounds after its noise)."""

    def __init__(self, adc):
        self.vref = adc["vref_mv"]
        self.shift = adc["offset_mv"] - IDF_OFFSET_11DB_MV
        self.esp32 = adc["inl"] == "esp32"
        self.slope = self.vref * IDF_SCALE_11DB / 4096 / 65536  # mV per code on the line

    def mv(self, raw):
        if self.esp32:
            return idf_mv(raw, self.vref) + self.shift
        return raw * self.slope + IDF_OFFSET_11DB_MV + self.shift

    def raw(self, mv):
        """The code mv reads as, unclipped below 0 (the table clips): the curve is monotonic, so
        the line answers below the table's start and a bisection above it."""
        r = (mv - IDF_OFFSET_11DB_MV - self.shift) / self.slope
        if not self.esp32 or r < LUT_LOW_RAW:
            return r
        lo, hi = float(LUT_LOW_RAW), float(CODE_MAX)
        if mv >= self.mv(hi):
            return hi + (mv - self.mv(hi)) / self.slope
        for _ in range(24):
            mid = (lo + hi) / 2
            if self.mv(mid) < mv:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def sub(self, x):
        """A table entry (1/SUB codes of the ideal converter, + SUB/2) as this chip reads it."""
        r = self.raw((x - SUB // 2) / SUB * IDEAL_MV_PER_CODE)
        return int(round(r * SUB)) + SUB // 2


def period_ns(scenario):
    """The mains period in whole nanoseconds (what the tables repeat at)."""
    return int(round(1e9 / scenario["frequency_hz"]))


# --- waveforms -------------------------------------------------------------------------------


def _rad(deg):
    return deg * math.pi / 180.0


def voltage_components(scenario, p):
    """[(order, peak volts, phase rad)] of conductor p's voltage (p = 1..3), at t = 0 of the period."""
    ph = scenario["phases"][p - 1]
    peak = math.sqrt(2.0) * ph["vrms"]
    rot = -120.0 * (p - 1)
    out = [(1, peak, _rad(rot))]
    for order, a, deg in ph["v_harmonics"]:
        out.append((order, peak * a, _rad(order * rot + deg)))
    return out


def current_components(scenario, c, state=None):
    """[(order, peak amps, phase rad)] of conductor c's current (c = 1..3); state: a step's
    {"irms", "phase_deg"} in place of the phase's own (see load_states)."""
    ph = dict(scenario["phases"][c - 1])
    if state:
        ph.update(state)
    peak = math.sqrt(2.0) * ph["irms"]
    rot = -120.0 * (c - 1) - ph["phase_deg"]
    out = [(1, peak, _rad(rot))]
    for order, a, deg in ph["i_harmonics"]:
        out.append((order, peak * a, _rad(order * rot + deg)))
    return out


# --- loads that change over time --------------------------------------------------------------
#
# Mains cycle k is the k-th period of the mains from the start of the run (k = floor(t·f)); the
# start of the run is a rising zero crossing of L1's voltage (connect() sets it, run_main starts the
# meter there). A phase's "cycle_pattern" gates its current whole cycles at a time, and its "steps"
# take effect at the start of the first cycle at or after their time, as a zero-crossing switch
# would; so every cycle carries one load whole, and truth.py integrates the energy cycle by cycle.

_M32 = 0xFFFFFFFF


def random_gate(p, seed):
    """(threshold, salt) of a {"random": p, "seed": s} pattern, for random_on()."""
    return int(round(p * 4294967296.0)), (seed * 2654435761 + 0x9E3779B9) & _M32


def random_on(k, threshold, salt):
    """Is cycle k on in a random pattern? A hash of k (integer-only: no allocation on MicroPython,
    every product below 2**62), the same on both runtimes, so truth.py counts the very cycles."""
    x = (k * 2654435761 + salt) & _M32
    x ^= x >> 16
    x = (x * 0x45D9F3B) & _M32
    x ^= x >> 16
    x = (x * 0x45D9F3B) & _M32
    x ^= x >> 16
    return x < threshold


def cycle_on(pattern, k):
    """Does a phase with this (loaded) cycle_pattern carry current in mains cycle k?"""
    if pattern is None:
        return True
    if isinstance(pattern, dict):
        thr, salt = random_gate(pattern["random"], pattern["seed"])
        return random_on(k, thr, salt)
    return pattern[k % len(pattern)] == 1


def step_cycle(t_s, pns):
    """The first mains cycle that starts at or after t_s (the cycle a step takes effect in)."""
    return -(-int(round(t_s * 1e9)) // pns)


def load_states(scenario, c):
    """[(first cycle, {"irms", "phase_deg"})] of conductor c (1..3): its own load from the start, then
    each step's, the keys a step leaves out kept from before."""
    ph = scenario["phases"][c - 1]
    state = {"irms": ph["irms"], "phase_deg": ph["phase_deg"]}
    out = [(None, dict(state))]
    pns = period_ns(scenario)
    for t_s, change in ph["steps"]:
        state.update(change)
        out.append((step_cycle(t_s, pns), dict(state)))
    return out


def time_varying(scenario):
    """Does any phase's load change over the run (a cycle pattern or steps)?"""
    return any(ph["cycle_pattern"] is not None or ph["steps"] for ph in scenario["phases"])


def lead_deg(phase_lead_deg, order, frequency_hz):
    """A sensor's lead for harmonic `order` of the mains: specified at 50 Hz, falling as 1/frequency."""
    return phase_lead_deg * 50.0 / (order * frequency_hz)


def _lead(channel, order, scenario):
    return _rad(lead_deg(channel.phase_lead_deg, order, scenario["frequency_hz"]))


def pin_components(scenario, gpios=ADC_GPIOS, state=None):
    """{gpio: (bias, [(order, peak codes, phase rad)] or None for a dead input, flat_code)}.

    Describes what each of the board's ADC inputs (gpios: adc_gpios(board)) carries, in codes, after
    the front end. A phase whose voltage the board has no input for reaches no pin. state: {conductor:
    a step's load} in place of the conductors' own (load_states()).
    """
    vch, ich = front_end(scenario)
    ripple = bias_ripple(scenario) if bias_circuit(scenario) == "shared" else []
    out = {}
    for k in range(3):
        p = k + 1
        ph = scenario["phases"][k]
        v_gpio, i_gpio = gpios[k]
        ch = vch[k]
        if v_gpio is None:
            pass
        elif ph["voltage_connected"] and (scenario["wiring"] == "three-phase" or p == 1):
            comps = [(o, a / ch.units_per_code, ang + _lead(ch, o, scenario))
                     for o, a, ang in voltage_components(scenario, p)]
            out[v_gpio] = (ch.bias, comps + ripple)
        else:
            out[v_gpio] = (ch.bias, ripple or None)  # no AC reaches this input: it idles at its bias
        ch = ich[k]
        if ph["ct_connected"]:
            sign = -1.0 if ph["ct_reversed"] else 1.0
            c = ph["ct_phase"]
            comps = [(o, sign * a / ch.units_per_code, ang + _lead(ch, o, scenario))
                     for o, a, ang in current_components(scenario, c, (state or {}).get(c))]
            out[i_gpio] = (ch.bias, comps + ripple)
        else:
            out[i_gpio] = (0, None)  # the jack's switch grounds an unplugged CT input: 0 V
    return out


# The shared bias of the first reference front end: every voltage divider (5 x 100 kΩ + 1 kΩ)
# returns its current into the node that biases all six inputs, a 15 kΩ / 10 kΩ divider from 3.3 V
# (6 kΩ) decoupled by 10 µF + 100 nF. Balanced phases' currents cancel there; anything else is
# ripple on every input that node biases (~146 mV RMS from one 230 V phase: 318 Ω at 50 Hz).
SHARED_DIVIDER_OHM = 501e3
SHARED_NODE_OHM = 6e3
SHARED_NODE_FARAD = 10.1e-6


def bias_ripple(scenario):
    """[(order, peak codes, phase rad)] the shared bias node carries (none from phases not wired)."""
    sums = {}
    for k in range(3):
        ph = scenario["phases"][k]
        if not ph["voltage_connected"] or (scenario["wiring"] == "single-phase" and k > 0):
            continue
        for order, peak_v, ang in voltage_components(scenario, k + 1):
            i = peak_v / SHARED_DIVIDER_OHM
            sums[order] = sums.get(order, 0j) + complex(i * math.cos(ang), i * math.sin(ang))
    out = []
    w = 2 * math.pi * scenario["frequency_hz"]
    for order in sorted(sums):
        z = 1 / complex(1 / SHARED_NODE_OHM, w * order * SHARED_NODE_FARAD)
        v = sums[order] * z
        if abs(v) > 0:
            out.append((order, abs(v) * 1000 / IDEAL_MV_PER_CODE, math.atan2(v.imag, v.real)))
    return out


def _trig_tables(n):
    s = array("i", bytearray(4 * n))
    c = array("i", bytearray(4 * n))
    w = 2.0 * math.pi / n
    for k in range(n):
        s[k] = int(round(math.sin(w * k) * _SIN_ONE))
        c[k] = int(round(math.cos(w * k) * _SIN_ONE))
    return s, c


def table(bias, comps, n, trig, conv=None):
    """One period of the input: (table, clipped).

    Entries are SUB·(bias + Σ a·sin(2π·order·k/n + phase)) + SUB/2, rounded (the SUB/2 makes the
    reader's floor division a rounding), in codes of the ideal converter; conv (a Converter) turns
    them into what a real chip reads. clipped counts entries beyond the ADC's range.
    """
    sin_t, cos_t = trig
    coefs = []
    for order, amp, ang in comps:
        a = int(round(amp * math.cos(ang) * _COEF_ONE))  # sin(x + ang) = sin x cos ang + cos x sin ang
        b = int(round(amp * math.sin(ang) * _COEF_ONE))
        if a or b:
            coefs.append((order % n, a, b))
    one = _SIN_ONE * _COEF_ONE // SUB
    half = one >> 1
    base = SUB * bias + SUB // 2
    top = SUB * (CODE_MAX + 1) - 1
    out = array("H", bytearray(2 * n))
    clipped = 0
    for k in range(n):
        acc = half
        for order, a, b in coefs:
            j = order * k % n
            acc += a * sin_t[j] + b * cos_t[j]
        x = base + acc // one
        if conv is not None:
            x = conv.sub(x)
        if x < 0:
            x = 0
            clipped += 1
        elif x > top:
            x = top
            clipped += 1
        out[k] = x
    return out, clipped


def flat(code, conv=None):
    """A one-entry table for an input that carries no AC: it sits at `code` (of the ideal converter)."""
    x = SUB * code + SUB // 2
    if conv is not None:
        x = conv.sub(x)
    return array("H", [min(max(x, SUB // 2), SUB * CODE_MAX + SUB // 2)])


FRAC_BITS = 13  # between two table steps, the waveform is interpolated to 1/8192 of a step
SMALL_INT_MAX = (1 << 30) - 1  # a 32-bit port's (and the ESP32's) largest small int: beyond, ints allocate


class MainsSource:
    """A periodic input: one period of table, read with linear interpolation, plus cycled noise, both
    in 1/SUB codes (the ADC rounds signal + noise, so noise dithers the quantisation).

    raw_at() is integer-only and allocation-free, so the firmware's acquisition path can run under
    micropython.heap_lock() against it; on a 32-bit port too, where an int above 2**30 is allocated:
    every value stays below that (tests/unit/test_mains.py proves the bounds). The time base is
    reduced per call: a read shortly after the last one moves the position in the period on by
    the time between them, exactly, and only a jump (a new burst) works it out from t_us. mains.py
    does not import simworld, so host tools can load scenarios without the simulated board's clock.
    """

    # A load that changes over time (set_load); class defaults keep a steady source's instance small.
    gate = None  # None: always on; a bytearray of 1/0 per mains cycle
    random = False  # True: each cycle on by random_on() instead
    starts_ns = None  # steps: the instant each of `tables` starts, ascending (tables[0]: before any)
    _load_i = 0  # the step under way

    def __init__(self, table, period_ns, noise=None, noise_start=0):
        self.table = table  # one period, equally spaced in time, in 1/SUB codes (+ SUB/2)
        self.n = len(table)
        self.period_ns = period_ns  # below 2**25 (40 Hz and up): so x << 5 of a remainder stays small
        self.noise = noise  # array('h') in 1/SUB codes, cycled one entry per read (or None)
        self._k = noise_start % len(noise) if noise else 0
        self.clipped = 0
        # The position in the period is step·period_ns + rem in units of period_ns/n: a table step
        # and how far past it. A µs moves it on by 1000·n units, a read up to step_us_max later by at
        # most that many (kept below 2**30 with rem).
        self._per_us = 1000 * self.n
        self.step_us_max = (SMALL_INT_MAX - period_ns) // self._per_us
        self._frac_div = period_ns >> FRAC_BITS  # rem // this: how far past the step, in 1/8192 steps
        self._top_bit = 1  # n's highest bit: seek() multiplies by n a bit at a time
        while self._top_bit * 2 <= self.n:
            self._top_bit *= 2
        self._step = self._rem = 0
        self._t_us = -1 - self.step_us_max  # the first read seeks

    def _seek(self, t_us):
        """Where t_us falls in the period, from scratch: (t_us·1000 mod period_ns)·n / period_ns."""
        pns = self.period_ns
        x = t_us % pns
        y = (((x << 5) % pns) << 5) % pns  # x·1024 mod period_ns, 5 bits at a time
        ns = (y - 24 * x) % pns  # x·1000 mod period_ns: the ns since the period began
        step = r = 0  # ns·n = step·period_ns + r, for n's bits so far (Horner's rule, from the top)
        b = self._top_bit
        while b:
            step += step
            r += r  # r < period_ns: twice it, plus ns, stays below 2**30
            if self.n & b:
                r += ns
            while r >= pns:
                r -= pns
                step += 1
            b >>= 1
        self._step = step
        self._rem = r

    def set_load(self, origin_ns, off, pattern=None, tables=None, starts_ns=None):
        """Make this a current input whose load changes: gated per mains cycle by a (loaded)
        cycle_pattern, cycle 0 starting at origin_ns; and/or `tables[i]` from starts_ns[i] on."""
        self.origin_ns = origin_ns
        self.off = off  # an input with no current sits at its bias: flat(bias)'s entry
        if isinstance(pattern, dict):
            self.random = True
            self.threshold, self.salt = random_gate(pattern["random"], pattern["seed"])
        elif pattern is not None:
            self.gate = bytearray(pattern)
        if tables is not None and len(tables) > 1:
            self.tables = tables
            self.starts_ns = starts_ns
            self._load_i = 0
            self.table = tables[0]

    def _load_at(self, t_ns):
        """The table of the step under way at t_ns (allocation-free: times only go forward in a run,
        so this steps on from the last one, or starts again from the first)."""
        starts = self.starts_ns
        i = self._load_i
        if t_ns < starts[i]:
            i = 0
        while i + 1 < len(starts) and t_ns >= starts[i + 1]:
            i += 1
        self._load_i = i
        self.table = self.tables[i]

    def raw_at(self, t_us):
        on = True
        if self.gate is not None or self.random or self.starts_ns is not None:
            # A load that changes: these ints pass 2**30 (allocated on a 32-bit port); a steady
            # source never comes here, so its reads stay allocation-free.
            t_ns = t_us * 1000
            if self.starts_ns is not None:
                self._load_at(t_ns)
            if self.random:
                on = random_on((t_ns - self.origin_ns) // self.period_ns, self.threshold, self.salt)
            elif self.gate is not None:
                c = (t_ns - self.origin_ns) // self.period_ns  # the mains cycle, from the start of the run
                on = self.gate[c % len(self.gate)] == 1
        d = t_us - self._t_us  # (the position in the period moves on whether the load is on or not)
        if 0 <= d <= self.step_us_max:
            rem = self._rem + d * self._per_us
            if rem >= self.period_ns:
                q = rem // self.period_ns
                rem -= q * self.period_ns
                q += self._step
                self._step = q % self.n if q >= self.n else q
            self._rem = rem
        else:
            self._seek(t_us)
        self._t_us = t_us
        if on:
            k = self._step
            a = self.table[k]
            j = k + 1
            if j == self.n:
                j = 0
            x = a + (((self.table[j] - a) * (self._rem // self._frac_div) + (1 << (FRAC_BITS - 1))) >> FRAC_BITS)
        else:
            x = self.off
        if self.noise is not None:
            x += self.noise[self._k]
            self._k += 1
            if self._k == len(self.noise):
                self._k = 0
        x //= SUB
        return 0 if x < 0 else CODE_MAX if x > CODE_MAX else x

    def codes(self):
        """One period as codes before noise and rounding (floats): what the tables say exactly."""
        return [(x - SUB // 2) / SUB for x in self.table]


class _XorShift:
    """xorshift32: the same stream on MicroPython and CPython for the same seed."""

    def __init__(self, seed):
        self.x = (seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF or 1

    def uniform(self):
        """A float in (0, 1]."""
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x / 4294967296.0 + 1.0 / 8589934592.0


def noise(sigma, rng, n=NOISE_LEN, spike_p=0.0):
    """n Gaussian noise values (σ = sigma codes) in 1/SUB codes, by Box-Muller; then each entry is a
    spike (SPIKE_CODES, either sign) with probability spike_p."""
    out = array("h", bytearray(2 * n))
    sigma = sigma * SUB
    k = 0
    while k < n:
        r = min(sigma * math.sqrt(-2.0 * math.log(rng.uniform())), 32767.0)
        t = 2.0 * math.pi * rng.uniform()
        out[k] = int(round(r * math.cos(t)))
        if k + 1 < n:
            out[k + 1] = int(round(r * math.sin(t)))
        k += 2
    if spike_p > 0:
        lo, hi = SPIKE_CODES
        for k in range(n):
            if rng.uniform() < spike_p:
                size = lo + (hi - lo) * rng.uniform()
                out[k] = int(round((size if rng.uniform() < 0.5 else -size) * SUB))
    return out


def sources(scenario, gpios=ADC_GPIOS, origin_ns=0):
    """{gpio: MainsSource} for the six ADC inputs. Each source has .clipped: table entries at a rail.

    The pins share one noise table, each starting a sixth of it further on: the noise each pin
    reads is independent of every other pin's at the same instant, as separate converters' is.
    A current input whose conductor has a cycle_pattern or steps gets them (MainsSource.set_load),
    mains cycle 0 starting at origin_ns; each distinct load of a step costs one more table (4 KB).
    """
    pns = period_ns(scenario)
    trig = None
    adc = scenario["adc"]
    conv = Converter(adc) if adc else None
    sigma, spike_p = noise_of(scenario)
    nz = noise(sigma, _XorShift(scenario["seed"]), NOISE_LEN, spike_p) if sigma > 0 or spike_p > 0 else None
    out = {}
    comps = pin_components(scenario, gpios)
    pins = [g for pair in gpios for g in pair if g is not None]
    made = {}  # (gpio, irms, phase_deg) -> table, so that a load a step returns to shares its table
    for k, gpio in enumerate(pins):
        bias, c = comps[gpio]
        if c is None:
            tab, clipped = flat(bias, conv), 0
        else:
            if trig is None:
                trig = _trig_tables(TABLE_LEN)
            tab, clipped = table(bias, c, TABLE_LEN, trig, conv)
        src = MainsSource(tab, pns, nz, k * NOISE_LEN // len(pins))
        src.clipped = clipped
        out[gpio] = src
    for k, (_, gpio) in enumerate(gpios):
        ph = scenario["phases"][k]
        cond = scenario["phases"][ph["ct_phase"] - 1]
        if not ph["ct_connected"] or (cond["cycle_pattern"] is None and not cond["steps"]):
            continue
        src = out[gpio]
        tables, starts = [src.table], [0]
        made[(gpio, cond["irms"], cond["phase_deg"])] = src.table
        for first, state in load_states(scenario, ph["ct_phase"])[1:]:
            key = (gpio, state["irms"], state["phase_deg"])
            if key not in made:
                bias, c = pin_components(scenario, gpios, {ph["ct_phase"]: state})[gpio]
                tab, clipped = table(bias, c, TABLE_LEN, trig or _trig_tables(TABLE_LEN), conv)
                src.clipped += clipped
                made[key] = tab
            tables.append(made[key])
            starts.append(origin_ns + first * pns)
        src.set_load(origin_ns, flat(comps[gpio][0], conv)[0], cond["cycle_pattern"], tables, starts)
    return out


def run_origin_us(world, scenario):
    """The first rising zero crossing of L1's voltage at or after now, rounded up to the microsecond:
    where a run starts, mains cycle 0 of cycle patterns and the clock of steps."""
    pns = period_ns(scenario)
    return -(-(-(-world.now_us() * 1000 // pns) * pns) // 1000)


def connect(world, scenario, board=None):
    """Wire the scenario's mains to the simulated board (a profile name, firmware/boards.py; None: the
    default one): sources on its ADC pins, ADC timing. Mains cycle 0 (of cycle patterns) and time 0
    (of steps) are at run_origin_us(): a run starts there."""
    for name in boards.NAMES:
        for pair in adc_gpios(name):
            for gpio in pair:
                world.sources.pop(gpio, None)  # let the old tables go before making new ones
    gc.collect()
    srcs = sources(scenario, adc_gpios(board), run_origin_us(world, scenario) * 1000)
    for gpio in srcs:
        world.sources[gpio] = srcs[gpio]
    world.adc_read_us = read_us(scenario)
    adc = scenario["adc"]
    if adc:
        vref = adc["efuse_vref_mv"] or efuse_vref_mv(adc["vref_mv"])
        world.adc_uv = lambda raw: efuse_uv(raw, vref)
    else:
        world.adc_uv = None
    return srcs


def noise_of(scenario):
    """(σ in codes, spike probability per read) of the scenario's converter. A spike rate is per
    second of one input read continuously, one read per V/I pair."""
    adc = scenario["adc"]
    if adc is None:
        return scenario["noise_lsb"], 0.0
    return adc["noise_lsb"], adc["spikes_per_s"] * 2 * adc["read_us"] * 1e-6


def read_us(scenario):
    """µs one conversion takes."""
    adc = scenario["adc"]
    return adc["read_us"] if adc else scenario["adc_read_us"]

# profiles — the two meter models and their analogue front ends: what one ADC code means.
#
# A channel's calibration turns 12-bit ADC codes into volts or amps:
#   voltage: volts_per_code = ADC_V_PER_CODE * adc_gain * divider_ratio
#   current: amps_per_code  = ADC_V_PER_CODE * adc_gain * ct_ratio / burden_ohm
# adc_offset is the code the biased input sits at with no signal (the kernel subtracts it before
# squaring; any residue is removed exactly per burst). phase_lead_deg is how far that channel's
# sensor leads the true waveform at 50 Hz (a CT leads its primary current by a degree or two,
# through its magnetising inductance, so the lead scales as 50/f); the sequential V-then-I read
# skew is measured per burst and corrected on top of it.
#
# The defaults describe the reference front end in docs/HARDWARE.md; calibrate a real board by
# adjusting adc_gain (against a reference meter) and phase_lead_deg (at a low power factor).

ADC_FULL_SCALE_V = 3.1  # ESP32 ADC at ATTN_11DB, nominal
ADC_V_PER_CODE = ADC_FULL_SCALE_V / 4095
# The ESP32's ADC is accurate at 11 dB only from about 150 mV to 2450 mV (ESP-IDF docs): the front
# end biases every input at the middle of that range, 1.30 V (code 1717), and keeps the largest
# signal within +-1.10 V of it, so peaks never reach the non-linear ends.
BIAS_V = 1.30
BIAS_CODE = 1717

# Voltage front end (both models): 0-390 V RMS. A 501:1 divider puts 390 V RMS (551.5 V peak) at
# +/-1.10 V = +/-1453 codes around the bias; 230 V RMS is +/-858 codes.
VOLTAGE = {"divider_ratio": 501.0, "adc_gain": 1.0, "adc_offset": BIAS_CODE, "phase_lead_deg": 0.0}

MODELS = {
    # Home: 100 A : 50 mA split-core CTs (ratio 2000) into 12.4 ohm burdens: 100 A RMS is
    # +/-0.877 V = +/-1158 codes, so 125 % of range still stays inside the ADC's linear part.
    "home": {
        "ct_range_a": 100.0,
        "current": {"ct_ratio": 2000.0, "burden_ohm": 12.4, "adc_gain": 1.0, "adc_offset": BIAS_CODE,
                    "phase_lead_deg": 1.5},
    },
    # Public: 400 A : 100 mA CTs (ratio 4000) into 6.2 ohm burdens: 400 A RMS is +/-1158 codes.
    "public": {
        "ct_range_a": 400.0,
        "current": {"ct_ratio": 4000.0, "burden_ohm": 6.2, "adc_gain": 1.0, "adc_offset": BIAS_CODE,
                    "phase_lead_deg": 0.8},
    },
}

CHANNEL_KEYS = {
    "voltage": ("divider_ratio", "adc_gain", "adc_offset", "phase_lead_deg"),
    "current": ("ct_ratio", "burden_ohm", "adc_gain", "adc_offset", "phase_lead_deg"),
}


class Channel:
    """One calibrated ADC input: scale (units per code), bias code and phase lead.

    line: (mV per code, mV at code 0) of the chip's own conversion (sampler.chip_line), or None for
    the nominal converter (ADC_V_PER_CODE, bias at adc_offset). With a line the bias is where
    BIAS_V falls on it: only a starting point, as the meter follows each input's measured bias."""

    def __init__(self, kind, cal, line=None):
        self.kind = kind
        self.cal = cal
        gain = (line[0] / 1000 if line else ADC_V_PER_CODE) * cal["adc_gain"]
        if kind == "voltage":
            self.units_per_code = gain * cal["divider_ratio"]
        else:
            self.units_per_code = gain * cal["ct_ratio"] / cal["burden_ohm"]
        self.bias = int(cal["adc_offset"]) if not line else int((BIAS_V * 1000 - line[1]) / line[0] + 0.5)
        self.phase_lead_deg = cal["phase_lead_deg"]


def defaults(model):
    """Default calibration for a model: {"voltage": [3 dicts], "current": [3 dicts]} (one per phase)."""
    if model not in MODELS:
        raise ValueError("model must be one of: %s" % ", ".join(sorted(MODELS)))
    return {
        "voltage": [dict(VOLTAGE) for _ in range(3)],
        "current": [dict(MODELS[model]["current"]) for _ in range(3)],
    }


def channels(model, calibration=None, line=None):
    """Calibrated (voltage_channels, current_channels) for a model, with per-channel overrides.

    calibration is shaped like defaults(model); any key it leaves out keeps its default. line: the
    chip's conversion (see Channel).
    """
    cal = defaults(model)
    for kind in ("voltage", "current"):
        given = (calibration or {}).get(kind) or []
        for k, over in enumerate(given[:3]):
            for key, value in (over or {}).items():
                if key not in CHANNEL_KEYS[kind]:
                    raise ValueError("calibration.%s[%d]: unknown key %r" % (kind, k, key))
                cal[kind][k][key] = value
    return (
        [Channel("voltage", c, line) for c in cal["voltage"]],
        [Channel("current", c, line) for c in cal["current"]],
    )


def ct_range_a(model):
    return MODELS[model]["ct_range_a"]

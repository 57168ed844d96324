"""accuracy — the scenarios behind the accuracy tests, and a summary of the meter's worst errors.

    python -m tools.sim accuracy        runs every case (two at a time) and prints the worst error
                                        per quantity against the analytic truth (tools/sim/truth.py)

tests/host/test_accuracy.py asserts the issue's targets on the same cases.
"""

import concurrent.futures

from tools.sim import runner, truth

SECONDS = 6.0  # six windows: each phase gets ~20 bursts


def _three(vrms=230.0, irms=10.0, phase_deg=0.0, **extra):
    return [dict({"vrms": vrms, "irms": irms, "phase_deg": phase_deg}, **extra) for _ in range(3)]


CASES = {}
CHIP = {}


def case(name, scenario, seconds=SECONDS):
    if "adc" not in scenario:
        scenario.setdefault("noise_lsb", 1.0)
    CASES[name] = (scenario, seconds)


# Power factor and direction: lagging, leading, export (a site with solar), 50 and 60 Hz.
for hz in (50.0, 60.0):
    for deg in (0.0, 25.8, -25.8, 60.0, -60.0, 180.0, 150.0, -120.0):
        case("pf-%g-%ghz" % (deg, hz), {"frequency_hz": hz, "meter": {"generation": abs(deg) > 90},
                                        "phases": _three(230.0, 40.0, deg)})
# Current range 1-120 % of each model's CTs, sinusoidal, PF 0.9.
for model, full in (("home", 100.0), ("public", 400.0)):
    for pct in (1, 5, 10, 50, 100, 120):
        case("range-%s-%d" % (model, pct), {"model": model, "phases": _three(230.0, full * pct / 100, 25.8)})
# Voltage across the input's range (5 % of 390 V up to 390 V).
for volts in (20.0, 110.0, 230.0, 390.0):
    case("volts-%g" % volts, {"phases": _three(volts, 20.0, 10.0)})
# Distorted waveforms: a flat-topped voltage and rectifier-like currents.
case("distorted", {"phases": _three(230.0, 30.0, 20.0, v_harmonics=[[3, 0.03, 0.0], [5, 0.02, 180.0]],
                                    i_harmonics=[[3, 0.30, 10.0], [5, 0.15, 40.0], [7, 0.08, 0.0]])})
case("distorted-60hz-public", {"model": "public", "frequency_hz": 60.0,
                               "phases": _three(120.0, 200.0, -15.0, v_harmonics=[[5, 0.04, 0.0]],
                                                i_harmonics=[[3, 0.2, 0.0], [5, 0.1, 90.0]])})
# Unbalanced three-phase with mixed directions, and frequencies off nominal.
case("unbalanced", {"meter": {"generation": True}, "phases": [
    {"vrms": 228.0, "irms": 63.0, "phase_deg": 5.0}, {"vrms": 233.0, "irms": 12.0, "phase_deg": 180.0},
    {"vrms": 231.0, "irms": 2.0, "phase_deg": -70.0}]})
for hz in (47.6, 49.5, 50.5, 52.4, 59.2, 61.3):
    case("freq-%g" % hz, {"frequency_hz": hz, "phases": _three(230.0, 16.0, 20.0)})
# Single-phase wiring: only L1's voltage reaches the meter; L2/L3 power against L1 shifted.
case("single-phase", {"wiring": "single-phase", "phases": [
    {"vrms": 230.0, "irms": 30.0, "phase_deg": 10.0}, {"vrms": 230.0, "irms": 12.0, "phase_deg": 45.0},
    {"vrms": 230.0, "irms": 50.0, "phase_deg": -20.0}]})
case("single-phase-60hz-export", {"wiring": "single-phase", "frequency_hz": 60.0, "meter": {"generation": True},
                                  "phases": _three(120.0, 25.0, 170.0)})
# Energy over 60 s, import and a bidirectional site.
case("energy-import", {"phases": _three(230.0, 45.0, 25.8)}, 60.0)
case("energy-mixed", {"meter": {"generation": True}, "phases": [
    {"vrms": 230.0, "irms": 20.0, "phase_deg": 0.0}, {"vrms": 230.0, "irms": 30.0, "phase_deg": 180.0},
    {"vrms": 230.0, "irms": 5.0, "phase_deg": 30.0}]}, 60.0)

# A real ESP32 ADC (tools/sim/mains.py: ESP-IDF's 11 dB curve for the chip's Vref, 4 codes of noise,
# WiFi spikes), measured with the chip's eFuse line alone (no installer calibration): chips at both
# ends of the Vref spread, across the voltage range and 5-100 % of the CTs' range.
for vref in (1000, 1100, 1200):
    for volts in (20.0, 230.0, 390.0):
        CHIP["chip-vref%d-%gv" % (vref, volts)] = {"adc": {"vref_mv": vref}, "phases": [
            {"vrms": volts, "irms": 5.0, "phase_deg": 25.8}, {"vrms": volts, "irms": 50.0, "phase_deg": -25.8},
            {"vrms": volts, "irms": 100.0, "phase_deg": 0.0}]}
CHIP["chip-offset-100mv"] = {"adc": {"offset_mv": 100}, "phases": _three(230.0, 20.0, 25.8)}
CHIP["chip-offset-190mv"] = {"adc": {"offset_mv": 190}, "phases": _three(230.0, 20.0, 25.8)}
CHIP["chip-efuse-7mv-high"] = {"adc": {"vref_mv": 1100, "efuse_vref_mv": 1107}, "phases": _three(230.0, 20.0, 25.8)}
CHIP["chip-no-spikes"] = {"adc": {"spikes_per_s": 0}, "phases": _three(230.0, 20.0, 25.8)}
CHIP["chip-many-spikes"] = {"adc": {"spikes_per_s": 200}, "phases": _three(230.0, 20.0, 25.8)}
CHIP["chip-60hz-public"] = {"adc": {}, "model": "public", "frequency_hz": 60.0, "phases": _three(120.0, 200.0, -15.0)}
for name, sc in CHIP.items():
    case(name, sc)
# Crosstalk: no current in any CT, unbalanced voltages; the shared bias of the first front end and
# the buffered one of docs/HARDWARE.md, side by side.
for bias in ("buffered", "shared"):
    for label, volts in (("one-phase", (230.0, 0.0, 0.0)), ("unbalanced", (230.0, 245.0, 215.0))):
        case("crosstalk-%s-%s" % (bias, label), {"adc": {}, "front_end": {"bias": bias}, "phases": [
            {"vrms": v, "irms": 0.0, "voltage_connected": v > 0} for v in volts]})

# Wiring faults, each on each phase, and in combination.
FAULTS = {}
for p in range(3):
    for fault, keys in (("ct_reversed", {"ct_reversed": True}), ("ct_unplugged", {"ct_connected": False}),
                        ("voltage_missing", {"voltage_connected": False})):
        phases = _three(230.0, 20.0, 20.0)
        phases[p].update(keys)
        FAULTS["%s-L%d" % (fault, p + 1)] = {"phases": phases}
for perm in ((2, 1, 3), (1, 3, 2), (3, 2, 1), (2, 3, 1), (3, 1, 2)):
    phases = _three(230.0, 20.0, 20.0)
    for c in range(3):
        phases[c]["ct_phase"] = perm[c]
    FAULTS["ct_wrong_phase-%d%d%d" % perm] = {"phases": phases}
FAULTS["reversed-and-swapped"] = {"phases": [
    {"vrms": 230.0, "irms": 20.0, "phase_deg": 15.0, "ct_phase": 2},
    {"vrms": 230.0, "irms": 25.0, "phase_deg": 10.0, "ct_phase": 1},
    {"vrms": 230.0, "irms": 15.0, "phase_deg": 5.0, "ct_reversed": True}]}
FAULTS["frequency-45hz"] = {"frequency_hz": 45.0, "phases": _three(230.0, 20.0, 20.0)}
FAULTS["frequency-64hz"] = {"frequency_hz": 64.0, "phases": _three(230.0, 20.0, 20.0)}
FAULTS["correct-low-pf-mix"] = {"phases": [
    {"vrms": 230.0, "irms": 20.0, "phase_deg": 60.0}, {"vrms": 230.0, "irms": 20.0, "phase_deg": -60.0},
    {"vrms": 230.0, "irms": 20.0, "phase_deg": 84.0}]}
FAULTS["correct-solar-export"] = {"meter": {"generation": True}, "phases": _three(230.0, 20.0, 178.0)}
FAULTS["correct-single-phase"] = {"wiring": "single-phase", "phases": _three(230.0, 20.0, 20.0)}
for name, sc in FAULTS.items():
    case("fault-" + name, sc)


def run_all(workers=2):
    """{name: report} for every case, `workers` simulations at a time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(runner.simulate, sc, secs) for name, (sc, secs) in CASES.items()}
        return {name: fut.result()[0] for name, fut in futures.items()}


def _rel_pct(got, want):
    return abs(got - want) / abs(want) * 100


def worst_errors(results, chip=False):
    """Worst error per quantity over the ideal converter's measurement cases (faults and the sub-5 %
    range excluded), or over the real chip's (chip=True)."""
    worst = {"vrms_pct": 0.0, "irms_pct": 0.0, "real_power_pct": 0.0, "power_factor": 0.0, "frequency_hz": 0.0,
             "energy_pct": 0.0}
    for name, (scenario, seconds) in CASES.items():
        if chip != name.startswith("chip-"):
            continue
        if name.startswith(("fault-", "crosstalk-")) or name in ("range-home-1", "range-public-1"):
            continue
        rep = results[name]
        want = truth.expected(scenario, seconds)
        ref = want["as_wired"]["phases"] if name.startswith("single") else want["phases"]
        for g, e in zip(rep["phases"], ref, strict=True):
            worst["vrms_pct"] = max(worst["vrms_pct"], _rel_pct(g["vrms"], e["vrms"]))
            worst["irms_pct"] = max(worst["irms_pct"], _rel_pct(g["irms"], e["irms"]))
            if abs(e["power_factor"]) >= 0.5:
                worst["real_power_pct"] = max(worst["real_power_pct"], _rel_pct(g["real_power_w"], e["real_power_w"]))
            worst["power_factor"] = max(worst["power_factor"], abs(g["power_factor"] - e["power_factor"]))
            if name.startswith("energy"):
                for key in ("import_wh", "export_wh"):
                    if e[key]:
                        worst["energy_pct"] = max(worst["energy_pct"], _rel_pct(g[key], e[key]))
        worst["frequency_hz"] = max(worst["frequency_hz"], abs(rep["frequency_hz"] - want["frequency_hz"]))
    return worst


def _hz_error(results, name):
    return abs(results[name]["frequency_hz"] - truth.expected(*CASES[name])["frequency_hz"])


def main():
    import time

    t0 = time.monotonic()
    results = run_all()
    w = worst_errors(results)
    print("accuracy: %d cases in %.1f s (firmware under the MicroPython unix port)"
          % (len(CASES), time.monotonic() - t0))
    print("  worst Vrms error        %.3f %%   (target 0.5 %%)" % w["vrms_pct"])
    print("  worst Irms error        %.3f %%   (target 0.5 %%, 5-100 %% of range)" % w["irms_pct"])
    print("  worst real power error  %.3f %%   (target 0.5 %%, |PF| >= 0.5)" % w["real_power_pct"])
    print("  worst PF error          %.4f     (target 0.01)" % w["power_factor"])
    print("  worst frequency error   %.4f Hz  (target 0.02 Hz; at 20 V: %.4f Hz)"
          % (w["frequency_hz"], _hz_error(results, "volts-20")))
    print("  worst 60 s energy error %.3f %%   (target 0.5 %%)" % w["energy_pct"])
    for lo in ("range-home-1", "range-public-1"):
        rep = results[lo]
        want = truth.expected(*CASES[lo])
        print("  %s (1 %% of range): Irms error %.2f %%" % (lo, _rel_pct(rep["phases"][0]["irms"],
                                                                        want["phases"][0]["irms"])))
    faults = [n for n in CASES if n.startswith("fault-")]
    print("  wiring faults: %d cases" % len(faults))
    w = worst_errors(results, chip=True)
    chips = [n for n in CASES if n.startswith("chip-")]
    print("real ESP32 ADC, eFuse line only (%d cases, target 2 %% before calibration):" % len(chips))
    print("  worst Vrms error        %.3f %%" % w["vrms_pct"])
    print("  worst Irms error        %.3f %%" % w["irms_pct"])
    print("  worst real power error  %.3f %%" % w["real_power_pct"])
    print("  worst PF error          %.4f" % w["power_factor"])
    print("  worst frequency error   %.4f Hz (20 V: %.4f Hz)"
          % (w["frequency_hz"], max(_hz_error(results, n) for n in chips if n.endswith("-20v"))))
    for n in sorted(c for c in CASES if c.startswith("crosstalk-")):
        print("  %-32s empty CTs read %s A" % (n, ", ".join("%.3f" % p["irms"] for p in results[n]["phases"])))
    return 0

"""bench_calibration — accuracy after an installer's calibration, on real ESP32 ADCs (issue 17's targets).

    python -m tools.bench_calibration [--chips 1000,1100,1200]

For each chip (its Vref, and a front end whose parts are off: L1's divider 3 % high, L2's 2 % low,
CT 1 4 % low and leading 1° more than its profile says, CT 2 4 % high), the simulated device is
calibrated once through its setup portal at one load (`tools.sim calibrate`: 230 V, 50 A resistive
on every phase, the true values as the multimeter's and clamp meter's readings); then other loads
are measured with that calibration (`tools.sim run --state-dir`): 20-390 V, 5-100 % of the CTs'
range, PF 1, 0.9 lagging and 0.5 leading, each for 60 s. Prints the worst error per quantity per
chip against the targets, and the same cases before calibration (the eFuse line alone).
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile

from tools.sim import calibration, runner, truth

FRONT_END = {"voltage": [{"adc_gain": 1.03}, {"adc_gain": 0.98}, {}],
             "current": [{"adc_gain": 0.96, "phase_lead_deg": 2.5}, {"adc_gain": 1.04}, {}]}
TARGETS = {"vrms_pct": 0.5, "irms_pct": 0.5, "real_power_pct": 0.5, "power_factor": 0.01, "frequency_hz": 0.02,
           "energy_pct": 0.5}
SECONDS = 60.0


def _three(vrms, irms, deg):
    return [{"vrms": vrms, "irms": irms, "phase_deg": deg} for _ in range(3)]


def loads():
    """{name: (phases, seconds)}: the loads measured after calibrating at 230 V, 50 A (60 s each: over 6 s
    the random part at 20 V, 4 codes of noise on ±87, sat at the 0.5 % target)."""
    out = {}
    for volts in (20.0, 110.0, 230.0, 390.0):
        for amps, deg in ((5.0, 0.0), (50.0, 25.8), (100.0, -60.0)):
            out["%gV-%gA-%gdeg" % (volts, amps, deg)] = (_three(volts, amps, deg), SECONDS)
    out["energy-60s"] = ([{"vrms": 231.0, "irms": 32.0, "phase_deg": 18.0}, {"vrms": 228.0, "irms": 12.0,
                                                                              "phase_deg": 0.0},
                          {"vrms": 233.0, "irms": 71.0, "phase_deg": -30.0}], 60.0)
    return out


def _rel_pct(got, want):
    return abs(got - want) / abs(want) * 100


def errors(report, scenario, seconds):
    """Worst error per quantity of one run."""
    want = truth.expected(scenario, seconds)
    w = {k: 0.0 for k in TARGETS}
    for g, e in zip(report["phases"], want["phases"], strict=True):
        w["vrms_pct"] = max(w["vrms_pct"], _rel_pct(g["vrms"], e["vrms"]))
        w["irms_pct"] = max(w["irms_pct"], _rel_pct(g["irms"], e["irms"]))
        if abs(e["power_factor"]) >= 0.5:
            w["real_power_pct"] = max(w["real_power_pct"], _rel_pct(g["real_power_w"], e["real_power_w"]))
        w["power_factor"] = max(w["power_factor"], abs(g["power_factor"] - e["power_factor"]))
        if seconds >= 60:
            w["energy_pct"] = max(w["energy_pct"], _rel_pct(g["import_wh"], e["import_wh"]))
    w["frequency_hz"] = abs(report["frequency_hz"] - want["frequency_hz"])
    return w


def _measure(chip, phases, seconds, config_json):
    scenario = {"adc": chip, "front_end": FRONT_END, "phases": phases}
    with tempfile.TemporaryDirectory(prefix="meter-cal-") as state:
        if config_json:
            shutil.copy(config_json, os.path.join(state, "config.json"))
        report, _ = runner.simulate(scenario, seconds, state_dir=state)
    return errors(report, scenario, seconds)


def bench_chip(vref, workers=2, log=sys.stderr.write):
    """(before, after): the worst errors over every load, before and after calibrating, and the calibration."""
    chip = {"vref_mv": vref}
    with tempfile.TemporaryDirectory(prefix="meter-cal-") as folder:
        f = os.path.join(folder, "calibrate-at.json")
        with open(f, "w") as out:
            json.dump({"adc": chip, "front_end": FRONT_END, "phases": _three(230.0, 50.0, 0.0)}, out)
        state = os.path.join(folder, "flash")
        if calibration.calibrate(f, state, log=lambda m: None, out=lambda m: None) != 0:
            raise SystemExit("calibration failed on chip %d mV (see %s)" % (vref, state))
        config_json = os.path.join(state, "config.json")
        result = []
        for cfg in (None, config_json):
            worst = {k: 0.0 for k in TARGETS}
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                futs = [pool.submit(_measure, chip, ph, secs, cfg) for ph, secs in loads().values()]
                for fut in futs:
                    for k, v in fut.result().items():
                        worst[k] = max(worst[k], v)
            result.append(worst)
        with open(config_json) as cf:
            result.append(json.load(cf)["meter"]["calibration"])
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench_calibration", description=__doc__.split("\n\n")[0])
    ap.add_argument("--chips", default="1000,1100,1200", help="the chips' Vref in mV (default: %(default)s)")
    args = ap.parse_args(argv)
    print("accuracy after one calibration at 230 V / 50 A resistive, %d loads per chip (20-390 V, 5-100 %% of "
          "range, PF 1 / 0.9 lag / 0.5 lead, 60 s each)" % len(loads()))
    print("%-14s %-7s %8s %8s %8s %8s %9s %8s" % ("chip", "", "Vrms %", "Irms %", "P %", "PF", "f Hz", "E 60s %"))
    ok = True
    for vref in (int(x) for x in args.chips.split(",")):
        before, after, _ = bench_chip(vref)
        for label, w in (("before", before), ("after", after)):
            print("%-14s %-7s %8.3f %8.3f %8.3f %8.4f %9.4f %8.3f" % (
                "Vref %d mV" % vref, label, w["vrms_pct"], w["irms_pct"], w["real_power_pct"], w["power_factor"],
                w["frequency_hz"], w["energy_pct"]))
        ok = ok and all(after[k] <= TARGETS[k] for k in TARGETS)
    print("targets after calibration: Vrms/Irms/P 0.5 %%, PF 0.01, f 0.02 Hz, energy 0.5 %%: %s"
          % ("all met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

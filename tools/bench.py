"""Benchmarks of the meter firmware on this computer: `python -m tools.bench [--json] [--quick]`.

Each measurement is one function below that takes `quick` and returns a dict of result fields;
MEASUREMENTS lists them in order, so adding one is a function and a line. Human-readable output
by default; with --json exactly one JSON object on stdout (progress goes to stderr).

- dsp_speed: in ONE MicroPython process, the viper DSP kernels against their plain-Python twins
  on the same burst, alternating, several rounds. viper_speedup = best twin time / best viper
  time; viper_speedup_median = median of the per-round ratios (robust on a busy machine).
- dsp_instructions: x86-64 instructions per V/I pair of the viper kernels under
  `valgrind --tool=callgrind`: the difference between two runs that differ only in the number of
  pairs the kernel processes, divided by that difference, so start-up cancels. null without valgrind.
- cpu_fraction: host CPU of the measurement path (timer, bursts, kernels, metering, windows) per
  simulated second, tools/bench_chain.py under the unix port: the median of several runs.
- sampling_time: the share of the VM's time the bursts take at the ESP32's 35 µs per ADC conversion,
  in virtual time on the simulated board (tools/bench_busy.py): what is left is for the network side.
- blocking_calls: the VM blocked for D s (a WiFi scan, NTP, a DNS lookup) three times in a run on
  simulated mains (tools/bench_blocking.py): the longest window, the energy on a steady load against
  the same run unblocked, and the energy a load step at the block's start hides.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tools import mp

ROOT = mp.ROOT
SCRIPT = os.path.join("tools", "bench_dsp.py")


def _micropython_env():
    # The real `time` module, not the simulated board's virtual clock: this measures real time.
    e = dict(os.environ)
    e["MICROPYPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "lib"), ".frozen"])
    e["PYTHONHASHSEED"] = "0"  # the unix port runs inside CPython: keep its start-up identical
    return e


def _run_micropython(args, wrap=()):
    cmd = [*wrap, mp.micropython_exe(), SCRIPT, *args]
    p = subprocess.run(cmd, cwd=ROOT, env=_micropython_env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, (p.stderr or p.stdout)[-800:]))
    return p


# --- measurements ------------------------------------------------------------------------------


def dsp_speed(quick):
    pairs, repeats = (4000, 3) if quick else (20000, 9)
    p = _run_micropython(["speed", str(pairs), str(repeats)])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if not r["kernel_is_viper"] or not r["results_agree"]:
        raise RuntimeError("viper kernels missing or disagreeing with their twins: %r" % r)

    def ratios(viper, twin):
        best = min(r[twin]) / max(min(r[viper]), 1e-9)
        median = statistics.median(t / max(v, 1e-9) for v, t in zip(r[viper], r[twin], strict=True))
        return round(best, 1), round(median, 1)

    best, median = ratios("viper_us", "twin_us")
    xbest, xmedian = ratios("cross_viper_us", "cross_twin_us")
    return {
        "viper_speedup": best,
        "viper_speedup_median": median,
        "viper_ns_per_pair": round(1000 * min(r["viper_us"]) / pairs, 2),
        "twin_ns_per_pair": round(1000 * min(r["twin_us"]) / pairs, 1),
        "cross_sum_speedup": xbest,
        "cross_sum_speedup_median": xmedian,
        "speed_pairs": pairs,
        "speed_rounds": repeats,
        "micropython": r["micropython"],
    }


def _callgrind_instructions(kernel, pairs, max_pairs):
    # Fixed-width arguments: the process's memory layout must not depend on the number itself.
    p = _run_micropython(["count", kernel, "%08d" % pairs, "%08d" % max_pairs],
                         wrap=["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"])
    m = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
    if not m:
        raise RuntimeError("no instruction count in callgrind's output: " + p.stderr[-400:])
    return int(m.group(1))


def dsp_instructions(quick):
    low, high = (4000, 24000) if quick else (20000, 120000)
    out = {"instructions_per_pair": None, "cross_sum_instructions_per_pair": None,
           "instructions_pairs": [low, high]}
    if shutil.which("valgrind") is None:
        out["instructions_note"] = "valgrind not found"
        return out
    kernels = [("pair_sums", "instructions_per_pair")]
    if not quick:
        kernels.append(("cross_sum", "cross_sum_instructions_per_pair"))
    runs = [(kernel, pairs) for kernel, _ in kernels for pairs in (low, high)]
    # Instruction counts do not depend on load, so the runs may share the cores.
    with ThreadPoolExecutor(max_workers=min(len(runs), os.cpu_count() or 1)) as pool:
        counts = dict(zip(runs, pool.map(lambda r: _callgrind_instructions(r[0], r[1], high), runs), strict=True))
    for kernel, key in kernels:
        out[key] = round((counts[kernel, high] - counts[kernel, low]) / (high - low), 2)
    return out


def cpu_fraction(quick):
    """Host CPU of the measurement path per simulated second (tools/bench_chain.py): median of runs."""
    seconds, repeats = (5, 1) if quick else (30, 5)
    runs = []
    for _ in range(repeats):
        cmd = [mp.micropython_exe(), os.path.join("tools", "bench_chain.py"), str(seconds)]
        p = subprocess.run(cmd, cwd=ROOT, env=_micropython_env(), capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("bench_chain failed (%d): %s" % (p.returncode, (p.stderr or p.stdout)[-800:]))
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    fractions = sorted(r["cpu_fraction_per_sim_second"] for r in runs)
    return {
        "cpu_fraction_per_sim_second": round(fractions[len(fractions) // 2], 6),
        "cpu_fraction_runs": [round(f, 6) for f in fractions],
        "cpu_fraction_bursts_per_sim_second": runs[0]["bursts"] // seconds,
        "cpu_fraction_note": "timer hand-off, burst loop with replayed ADC codes, kernels, metering, window "
                             "(energy, diagnostics, readings) for %d simulated s at the default settings; "
                             "median of %d runs" % (seconds, repeats),
    }


def _simboard_env():
    return dict(os.environ, MICROPYPATH=os.pathsep.join([os.path.join(ROOT, "tools", "simboard"), ROOT,
                                                         os.path.join(ROOT, "lib"), ".frozen"]))


def sampling_time(quick):
    """The share of the VM's time the bursts take at the ESP32's read time (tools/bench_busy.py)."""
    seconds = 10 if quick else 60
    cmd = [mp.micropython_exe(), os.path.join("tools", "bench_busy.py"), str(seconds)]
    p = subprocess.run(cmd, cwd=ROOT, env=_simboard_env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("bench_busy failed (%d): %s" % (p.returncode, (p.stderr or p.stdout)[-800:]))
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"sampling_busy_fraction": round(r["busy_fraction"], 4), "sampling_bursts": r["bursts"],
            "sampling_busy_ms_per_burst": round(r["busy_ms_per_burst"], 2),
            "sampling_note": "simulated time inside the meter's poll() (ADC conversions at 35 us: the wait for "
                             "the zero crossing, 2 cycles at 50 Hz, the extra pairs) over %d simulated s" % seconds}


def blocking_calls(quick):
    """What a call that blocks the VM (a scan, NTP, a DNS lookup) does to the windows and the energy
    (tools/bench_blocking.py, virtual time on the simulated board)."""
    env = _simboard_env()
    cmd = [mp.micropython_exe(), os.path.join("tools", "bench_blocking.py")] + (["quick"] if quick else [])
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("bench_blocking failed (%d): %s" % (p.returncode, (p.stderr or p.stdout)[-800:]))
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"blocking_calls": r["cases"], "blocking_unblocked_longest_window_ms": r["unblocked_longest_window_ms"],
            "blocking_note": "the VM blocked D s at %s s of %d simulated s; steady 3 x 10 A at 230 V, or the "
                             "load doubling as the first block starts" % (r["blocks_at_s"], r["duration_s"])}


MEASUREMENTS = [dsp_speed, dsp_instructions, cpu_fraction, sampling_time, blocking_calls]


# --- report ------------------------------------------------------------------------------------


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
        if m:
            cpu = m.group(1).strip()
    except OSError:
        pass
    return {"cores": os.cpu_count(), "arch": platform.machine(), "cpu": cpu}


def run(quick, progress=lambda msg: None):
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "quick": quick}
    for measure in MEASUREMENTS:
        progress("measuring %s ..." % measure.__name__)
        t0 = time.monotonic()
        result.update(measure(quick))
        progress("  done in %.1f s" % (time.monotonic() - t0))
    return result


def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "%g" % v
    return str(v)


def human(r):
    m = r["machine"]
    lines = [
        "bench %s on %s (%s cores, %s)%s"
        % (r["date"], m["cpu"], m["cores"], m["arch"], " [quick]" if r["quick"] else ""),
        "  MicroPython: %s" % r.get("micropython"),
        "",
        "DSP kernel (firmware/dsp.py), in one MicroPython process, %s pairs, best of %s rounds:"
        % (r.get("speed_pairs"), r.get("speed_rounds")),
        "  pair_sums  viper %s ns/pair, plain-Python twin %s ns/pair: %sx faster (median of rounds %sx)"
        % (_fmt(r.get("viper_ns_per_pair")), _fmt(r.get("twin_ns_per_pair")), _fmt(r.get("viper_speedup")),
           _fmt(r.get("viper_speedup_median"))),
        "  cross_sum  viper %sx faster than its twin (median %sx)"
        % (_fmt(r.get("cross_sum_speedup")), _fmt(r.get("cross_sum_speedup_median"))),
        "",
        "x86-64 instructions per V/I pair (callgrind, runs of %s and %s pairs, difference):"
        % tuple(r.get("instructions_pairs", ("?", "?"))),
        "  pair_sums  %s" % _fmt(r.get("instructions_per_pair")),
        "  cross_sum  %s" % _fmt(r.get("cross_sum_instructions_per_pair")),
    ]
    if r.get("instructions_note"):
        lines.append("  (%s)" % r["instructions_note"])
    lines += ["", "CPU fraction per simulated second: %s (%s)"
              % (_fmt(r.get("cpu_fraction_per_sim_second")), r.get("cpu_fraction_note", ""))]
    if r.get("sampling_busy_fraction") is not None:
        lines += ["", "Bursts take %.1f %% of the VM's time at the ESP32's read time (%s ms each, %s bursts; %s): "
                  "%.1f %% left" % (100 * r["sampling_busy_fraction"], _fmt(r.get("sampling_busy_ms_per_burst")),
                                    r.get("sampling_bursts"), r.get("sampling_note"),
                                    100 - 100 * r["sampling_busy_fraction"])]
    lines += ["", "A call that blocks the VM (%s; windows are %s ms long otherwise):"
              % (r.get("blocking_note"), r.get("blocking_unblocked_longest_window_ms"))]
    for c in r.get("blocking_calls") or []:
        lines.append("  %4.1f s: longest window %d ms, steady energy x%.4f, energy a step hides %+.2f Wh (%+.2f %%)"
                     % (c["block_s"], c["longest_window_ms"], c["steady_energy_ratio"], c["step_energy_error_wh"],
                        100 * c["step_energy_error"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help="small, fast smoke run (a few seconds)")
    args = ap.parse_args(argv)
    progress = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    r = run(args.quick, progress)
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        print(human(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())

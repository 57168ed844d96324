# The benchmark tool: one JSON object with every field, the viper kernel faster than its twin.
import json
import shutil
import subprocess
import sys

from tools import bench, mp

FIELDS = (
    "date", "machine", "quick", "micropython",
    "viper_speedup", "viper_speedup_median", "viper_ns_per_pair", "twin_ns_per_pair",
    "cross_sum_speedup", "speed_pairs", "speed_rounds",
    "instructions_per_pair", "instructions_pairs",
    "cpu_fraction_per_sim_second", "cpu_fraction_note", "sampling_busy_fraction",
    "blocking_calls", "blocking_unblocked_longest_window_ms",
)


def test_quick_json_run_reports_a_faster_kernel():
    p = subprocess.run([sys.executable, "-m", "tools.bench", "--json", "--quick"], cwd=mp.ROOT,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)  # raises if stdout holds anything besides one JSON document
    assert isinstance(r, dict)
    missing = [k for k in FIELDS if k not in r]
    assert not missing, missing
    assert r["quick"] is True
    assert r["machine"]["cores"] >= 1
    assert "MicroPython" in r["micropython"]
    # Ratios measured within one MicroPython process, not wall-clock thresholds.
    assert r["viper_speedup"] > 1
    assert r["viper_speedup_median"] > 1
    assert r["cross_sum_speedup"] > 1
    assert r["viper_ns_per_pair"] < r["twin_ns_per_pair"]
    # The measurement path really ran: ten bursts per simulated second, and a positive CPU share.
    assert r["cpu_fraction_bursts_per_sim_second"] == 10
    assert 0 < r["cpu_fraction_per_sim_second"] < 1
    # The bursts (2 cycles at 50 Hz, ~10 a second) keep the VM busy about half the time: 40 ms of
    # cycles plus the wait for a zero crossing and the extra pairs, ~55 ms a burst.
    assert 0.4 < r["sampling_busy_fraction"] < 0.7
    assert 45 < r["sampling_busy_ms_per_burst"] < 65
    # A 2 s block stretches the window it falls in by as much, and no more; the energy of a steady
    # load stays what the unblocked run counts (within 0.5 %).
    (block,) = r["blocking_calls"]
    assert block["block_s"] == 2.0
    stretch_ms = block["longest_window_ms"] - r["blocking_unblocked_longest_window_ms"]
    assert 2000 - 200 <= stretch_ms <= 2000 + 100, block
    assert abs(block["steady_energy_ratio"] - 1) < 0.005
    if shutil.which("valgrind"):
        # An instruction count is exact and repeatable: hold the kernel to its budget.
        assert 0 < r["instructions_per_pair"] <= 60
    else:
        assert r["instructions_per_pair"] is None and r["instructions_note"]


def test_human_report_names_every_figure():
    r = {"date": "2026-01-01", "machine": {"cores": 2, "arch": "x86_64", "cpu": "test cpu"}, "quick": False,
         "micropython": "MicroPython test", "viper_speedup": 101.5, "viper_speedup_median": 99.0,
         "viper_ns_per_pair": 1.3, "twin_ns_per_pair": 135.0, "cross_sum_speedup": 120.0,
         "cross_sum_speedup_median": 118.0, "speed_pairs": 20000, "speed_rounds": 9,
         "instructions_per_pair": 27.7, "cross_sum_instructions_per_pair": 18.7,
         "instructions_pairs": [20000, 120000], "cpu_fraction_per_sim_second": None,
         "cpu_fraction_note": "measured once the measurement chain lands"}
    text = bench.human(r)
    for figure in ("101.5x", "99x", "27.7", "18.7", "1.3 ns/pair", "135 ns/pair", "2 cores", "n/a"):
        assert figure in text, figure

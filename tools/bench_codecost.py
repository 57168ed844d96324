"""What the device's code costs in RAM, by where it is loaded from.

    python -m tools.bench_codecost [--from lib,romfs,frozen] [--json]

Imports every device module (firmware/, lib/) under the MicroPython unix port, with
what the board has built in already loaded, and prints the heap they keep (gc.mem_alloc() after a
collection, after less before; tools/codecost_main.py), loaded
  lib     from .mpy files on a filesystem, as a stock image without ROMFS loads /lib: the bytecode
          and its strings are copied into the heap;
  romfs   from a ROMFS image (tools/romfs.py), as the meter's image in its ROMFS variant runs it
          (docs/IMAGE.md): in place, from flash;
  frozen  frozen into the MicroPython binary itself, as the meter's image has it. Only a binary built
          with the device's code frozen in has it (FROZEN_MANIFEST=..., docs/IMAGE.md); --from frozen
          refuses any other.
The default is lib and romfs, or frozen on a binary with the code frozen in (which measures only
that: its names are in the binary already, so files of the same code would cost it less than they
cost a board). The unix port the tools run is the venv's (64-bit); MICROPYTHON=/path/to/micropython
measures another, e.g. a 32-bit build (docs/SIMULATOR.md), where objects take the bytes they take on
the ESP32. The .mpy files and the image are compiled for that
binary's own native code (x64 or x86), as `make build` compiles them for the ESP32's.

    python -m tools.bench_codecost --write-manifest FILE
        writes a FROZEN_MANIFEST for the unix port: its usual frozen modules and the device's code
        as boards/METER_ESP32/manifest.py freezes it (docs/IMAGE.md, "Measuring the code's cost")
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from tools import build, mp, romfs

SCRIPT = os.path.join(mp.ROOT, "tools", "codecost_main.py")

# As measured (BENCHMARKS.md, "The code's own cost"; firmware at 2d5cfca, with lib/httpd.py and the
# calibration step; i686 and frozen on binaries built by hand from v1.28.0, docs/IMAGE.md): bytes of
# heap kept by importing every device module. The 32-bit figures are the ESP32's, near enough: what
# `make deploy` quotes when it refuses a stock image without PSRAM. tests/host/test_image.py fails
# when this machine's 64-bit figures move by more than a quarter from these: measure again then.
MEASURED_BYTES = {
    "i686": {"lib": 154_688, "romfs": 64_320, "frozen": 26_448},
    "x64": {"lib": 214_016, "romfs": 114_912, "frozen": 51_776},
}
SOURCES = ("lib", "romfs", "frozen")
BOARD_DIR = os.path.join(mp.ROOT, "boards", "METER_ESP32")


def device_modules():
    """Every device module's import name (packages before their modules), boot.py and main.py aside."""
    names = []
    for rel, _ in romfs.sources():
        parts = rel[:-3].split("/")
        if parts[0] == "lib":
            parts = parts[1:]  # /lib is on the board's sys.path
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return sorted(names, key=lambda n: (n.split("."), n))


def _env():
    e = dict(os.environ)
    # The simulated board (machine, network, time) and the binary's frozen modules; not the
    # repository, so that every device module comes from the source being measured.
    e["MICROPYPATH"] = os.pathsep.join([mp.SIMBOARD, ".frozen"])
    return e


def has_frozen_firmware(exe=None):
    """Whether the binary has the device's code frozen in (a FROZEN_MANIFEST build)."""
    r = subprocess.run([exe or mp.micropython_exe(), "-c", "import firmware.app;print(firmware.app.__file__)"],
                       env=_env(), cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and _came_from("frozen", r.stdout.strip())


def _mpy_tree(march, dest, everything=False):
    """The device's .mpy tree as `make build` lays it out (firmware/, lib/), compiled for march."""
    for rel, src in romfs.sources(everything):
        build.compile_file(src, rel, os.path.join(dest, rel[:-3] + ".mpy"), march)


def measure(source, exe=None, modules=None, everything=False):
    """{"source", "bytes", "word_bytes", "modules": [[name, bytes]...], "files": {...}} for one source:
    every device module, or those named (in that order: a module's share holds what it imports first);
    everything: with the modules not yet wired in (tools/romfs.py NOT_YET_WIRED) in the tree or image."""
    exe = exe or mp.micropython_exe()
    word_bytes, march = mp.describe(exe)
    if march is None:
        raise SystemExit("%s has no native code emitter: the device's viper code cannot run on it" % exe)
    modules = modules or device_modules()
    with tempfile.TemporaryDirectory(prefix="meter-codecost-") as tmp:
        if source == "lib":
            where = os.path.join(tmp, "flash")
            _mpy_tree(march, where, everything)
        elif source == "romfs" and everything:
            where = os.path.join(tmp, "everything.romfs")
            with open(where, "wb") as f:
                f.write(romfs.make_image(march, romfs.sources(everything=True)))
        elif source == "romfs":
            where = romfs.image_path(march)
        elif source == "frozen":
            if not has_frozen_firmware(exe):
                raise SystemExit("%s has no device code frozen in: build a unix port with "
                                 "FROZEN_MANIFEST (python -m tools.bench_codecost --write-manifest FILE; "
                                 "docs/IMAGE.md, \"Measuring the code's cost\") and name it with MICROPYTHON=" % exe)
            where = "-"
        else:
            raise SystemExit("--from: %r is not one of %s" % (source, ", ".join(SOURCES)))
        r = subprocess.run([exe, SCRIPT, source, where, *modules], env=_env(), cwd=tmp,
                           capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit("%s: measuring %s failed:\n%s" % (exe, source, (r.stderr or r.stdout)[-3000:]))
    out = json.loads(r.stdout.strip().splitlines()[-1])
    wrong = {m: f for m, f in out["files"].items() if not _came_from(source, f)}
    if wrong:  # e.g. a module found in the binary's frozen ones instead of the tree measured
        raise SystemExit("measuring %s: these modules came from elsewhere: %s" % (source, wrong))
    out["word_bytes"] = word_bytes
    return out


def _came_from(source, path):
    """Whether a module's __file__ says it was loaded from source: a frozen module's is its path in
    the manifest (firmware/app.py), a file's is where it was found (absolute here)."""
    if source == "frozen":
        return path.endswith(".py") and not path.startswith("/")
    if source == "romfs":
        return path.startswith("/rom/")
    return path.endswith(".mpy") and path.startswith("/") and not path.startswith("/rom/")


def manifest_text():
    """A FROZEN_MANIFEST for the unix port: its own frozen modules, and the device's code."""
    return ("# The unix port's usual frozen modules, and the device's code as the purpose-built image freezes it.\n"
            "# Written by `python -m tools.bench_codecost --write-manifest` (docs/IMAGE.md).\n"
            'include("$(PORT_DIR)/variants/standard/manifest.py")\n'
            "include(%r)\n" % os.path.join(BOARD_DIR, "manifest_device.py"))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench_codecost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="sources", help="comma-separated: lib, romfs, frozen (default: lib,romfs; "
                                                   "frozen on a binary with the code frozen in)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--write-manifest", metavar="FILE", help="write a FROZEN_MANIFEST for the unix port and stop")
    args = ap.parse_args(argv)
    if args.write_manifest:
        with open(args.write_manifest, "w") as f:
            f.write(manifest_text())
        print(args.write_manifest)
        return 0
    exe = mp.micropython_exe()
    if args.sources:
        sources = [s.strip() for s in args.sources.split(",") if s.strip()]
        bad = [s for s in sources if s not in SOURCES]
        if bad or not sources:
            ap.error("--from: %s; choose from %s" % (", ".join(bad) or "nothing given", ", ".join(SOURCES)))
    frozen_in = has_frozen_firmware(exe)
    if not args.sources:
        sources = ["frozen"] if frozen_in else ["lib", "romfs"]
    elif frozen_in and set(sources) - {"frozen"}:
        # Its names are interned in the binary already: loading the same code from files would be
        # charged for none of them, and come out far below what a board without it pays.
        ap.error("%s has the device's code frozen in: it measures --from frozen only; measure lib and "
                 "romfs with a binary built without it (the venv's, or MICROPYTHON=...)" % exe)
    results = [measure(s, exe) for s in sources]
    if args.json:
        print(json.dumps({"micropython": exe, "word_bytes": results[0]["word_bytes"],
                          "modules": len(results[0]["modules"]),
                          "bytes": {r["source"]: r["bytes"] for r in results},
                          "per_module": {r["source"]: r["modules"] for r in results}}))
        return 0
    print("heap kept by importing the device's %d modules, on this %d-bit unix port (%s):"
          % (len(results[0]["modules"]), 8 * results[0]["word_bytes"], exe))
    for r in results:
        print("  %-7s %8d bytes (%.1f KiB)" % (r["source"], r["bytes"], r["bytes"] / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())

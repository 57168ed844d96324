"""The meter's own MicroPython image for the ESP32: boards/METER_ESP32 (docs/IMAGE.md).

    python -m tools.image [--variant ROMFS]     (`make image [VARIANT=ROMFS]`)
        builds build/image/METER_ESP32[-ROMFS]/firmware.bin with the ESP-IDF that IDF_PATH names
        (its export.sh sourced), from MicroPython v1.28.0's source: MICROPY_DIR if set, else a clone of
        that tag in build/micropython (git, from GitHub; once). Without an ESP-IDF it builds nothing:
        it prints what to install and run, and exits with status 2.
    python -m tools.image --prepare             only what needs no ESP-IDF (the source and the
                                                stamp): the first step of a build in Espressif's
                                                container (docs/IMAGE.md)
    python -m tools.image --layout              the partition table and where esptool writes what
    python -m tools.image --digest              the stamp an image of the code as it is here carries
                                                (meter_image.SOURCES_SHA256 on the board)

The default image has the meter's code frozen in (boards/METER_ESP32/manifest.py): of the three ways
to load it, frozen code keeps the least heap (BENCHMARKS.md, "The code's own cost"). The ROMFS
variant leaves the code out; `make deploy` writes it to the romfs partition instead.
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys

from tools import build

ROOT = build.ROOT
BOARD = "METER_ESP32"
BOARD_DIR = os.path.join(ROOT, "boards", BOARD)
PARTITIONS_CSV = os.path.join(BOARD_DIR, "partitions-4MiB-meter.csv")
IMAGE_BUILD = os.path.join(build.BUILD, "image")
STAMP = os.path.join(IMAGE_BUILD, "meter_image.py")  # frozen by manifest.py
VARIANTS = ("ROMFS",)

# The MicroPython release the board definition targets (its mpconfigboard.h stops any other).
MICROPYTHON_TAG = "v1.28.0"
MICROPYTHON_GIT = "https://github.com/micropython/micropython.git"
# ports/esp32/README.md at v1.28.0: "The current recommended version of ESP-IDF for MicroPython is
# v5.5.1. MicroPython also supports v5.3, v5.4, v5.4.1 and v5.4.2."
IDF_VERSION = "v5.5.1"
IDF_SUPPORTED = ("v5.3", "v5.4", "v5.4.1", "v5.4.2", "v5.5.1")
# Espressif's ESP-IDF container image of that version (MicroPython's docs name no container).
IDF_CONTAINER = "espressif/idf:" + IDF_VERSION
# The .mpy format each release loads: (MPY_VERSION, MPY_SUB_VERSION) in py/persistentcode.h at its tag.
MPY_VERSIONS = {
    "v1.22.0": (6, 2),
    "v1.23.0": (6, 3), "v1.24.0": (6, 3), "v1.25.0": (6, 3), "v1.26.0": (6, 3), "v1.27.0": (6, 3),
    "v1.28.0": (6, 3),
}

FLASH_BYTES = 4 * 1024 * 1024  # the ESP32-WROOM-32's flash (sdkconfig.base: CONFIG_ESPTOOLPY_FLASHSIZE_4MB)
BOOTLOADER_OFFSET = 0x1000  # the ESP32's (ESP-IDF's CONFIG_BOOTLOADER_OFFSET_IN_FLASH; later chips use 0)
PARTITION_TABLE_OFFSET = 0x8000  # ESP-IDF's default CONFIG_PARTITION_TABLE_OFFSET
MMU_PAGE_BYTES = 0x10000  # the ESP32 maps flash into memory in 64 KiB pages: romfs is mmapped whole


def partition_table(path=PARTITIONS_CSV):
    """The board's partition table, parsed and verified by esp-idf-defs (ESP-IDF's gen_esp32part.py's
    parser): alignment, overlaps, names, and that it fits the flash. Raises its InputError if not."""
    from esp_idf_defs.partitions import PartitionTable

    with open(path, encoding="utf-8") as f:
        table = PartitionTable.from_csv(f.read(), PARTITION_TABLE_OFFSET)
    table.verify(partition_table_offset=PARTITION_TABLE_OFFSET)
    table.verify_size_fits(FLASH_BYTES)
    return table


def romfs_partition_bytes():
    return partition_table()["romfs"].size


def source_digest():
    """sha256 of the device's code as the image freezes it (every device module; boot.py and main.py
    stay on the filesystem): the stamp in the image, to compare with."""
    from tools import romfs

    h = hashlib.sha256()
    for rel, src in sorted(romfs.sources(everything=True)):  # the manifest freezes every module
        with open(src, "rb") as f:
            h.update(rel.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def write_stamp():
    """build/image/meter_image.py: which build of the code the image carries (frozen with it)."""
    os.makedirs(IMAGE_BUILD, exist_ok=True)
    text = ("# meter_image: written by python -m tools.image, frozen into the meter's ESP32 image.\n"
            "SOURCES_SHA256 = %r  # tools.image.source_digest() of the code frozen with it\n"
            "MICROPYTHON = %r\n" % (source_digest(), MICROPYTHON_TAG))
    with open(STAMP + ".tmp", "w") as f:
        f.write(text)
    os.replace(STAMP + ".tmp", STAMP)
    return STAMP


def source_version(micropy_dir):
    """'v1.28.0' from a MicroPython tree's py/mpconfig.h, or None if it is not one."""
    try:
        with open(os.path.join(micropy_dir, "py", "mpconfig.h"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    parts = [re.search(r"#define MICROPY_VERSION_%s (\d+)" % p, text) for p in ("MAJOR", "MINOR", "MICRO")]
    if not all(parts):
        return None
    return "v" + ".".join(m.group(1) for m in parts)


def micropython_source(clone=True):
    """MicroPython's source at MICROPYTHON_TAG: MICROPY_DIR, or build/micropython (cloned if missing)."""
    given = os.environ.get("MICROPY_DIR")
    path = given or os.path.join(build.BUILD, "micropython")
    if not given and not os.path.exists(path):
        if not clone:
            raise SystemExit("image: no MicroPython source in %s" % path)
        cmd = ["git", "clone", "--depth", "1", "--branch", MICROPYTHON_TAG, MICROPYTHON_GIT, path]
        print("image: " + " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit("image: could not clone MicroPython %s (messages above); or set MICROPY_DIR to a "
                             "checkout of that tag" % MICROPYTHON_TAG)
    found = source_version(path)
    if found is None:
        raise SystemExit("image: %s is not a MicroPython source tree (no py/mpconfig.h with its version)" % path)
    if found != MICROPYTHON_TAG:
        raise SystemExit("image: %s holds MicroPython %s; boards/%s targets %s (the .mpy format and the port's "
                         "source were checked against it): check out %s there" % (path, found, BOARD,
                                                                                    MICROPYTHON_TAG, MICROPYTHON_TAG))
    return path


def build_dir(variant=None):
    return os.path.join(IMAGE_BUILD, BOARD + ("-" + variant if variant else ""))


def port_make_args(micropy_dir, variant=None, board_dir=BOARD_DIR, build_path=None):
    """The make command (without its goals) that builds the board in MicroPython's ports/esp32."""
    args = ["make", "-C", os.path.join(micropy_dir, "ports", "esp32"), "BOARD_DIR=" + board_dir,
            "BUILD=" + (build_path or build_dir(variant))]
    if variant:
        args.append("BOARD_VARIANT=" + variant)
    return args


def _container_command(variant, src=None):
    # Paths as the container sees the repository, mounted at /meter: the source must be inside it.
    src = os.path.relpath(src, ROOT) if src else "build/micropython"
    if src.startswith(".."):
        raise SystemExit("image: the container sees only this folder, and MICROPY_DIR=%s is outside it: unset "
                         "MICROPY_DIR (the source then goes into build/micropython)" % os.environ.get("MICROPY_DIR"))
    inside = port_make_args(src, variant, board_dir="/meter/boards/" + BOARD,
                            build_path="/meter/" + os.path.relpath(build_dir(variant), ROOT))
    return ('docker run --rm --user "$(id -u):$(id -g)" -e HOME=/tmp -v "$PWD":/meter -w /meter %s \\\n'
            "        %s submodules all" % (IDF_CONTAINER, " ".join(inside)))


def instructions(variant=None, why="no ESP-IDF here: IDF_PATH is not set"):
    """What to install and run to build the image, for a machine without an ESP-IDF."""
    again = "make image" + (" VARIANT=" + variant if variant else "")
    return "\n".join([
        "make image: %s." % why,
        "The image is MicroPython %s built for boards/%s (docs/IMAGE.md). MicroPython %s builds with "
        "ESP-IDF %s" % (MICROPYTHON_TAG, BOARD, MICROPYTHON_TAG, IDF_VERSION),
        "(its ports/esp32/README.md; it also supports %s). Either:" % ", ".join(v for v in IDF_SUPPORTED
                                                                              if v != IDF_VERSION),
        "",
        "1. Install ESP-IDF %s (Linux or macOS; git, python3, cmake and ninja needed), then build:" % IDF_VERSION,
        "       git clone -b %s --recursive https://github.com/espressif/esp-idf.git ~/esp-idf" % IDF_VERSION,
        "       ~/esp-idf/install.sh esp32",
        "       . ~/esp-idf/export.sh",
        "       " + again,
        "",
        "2. Or build in Espressif's ESP-IDF container, %s (Docker), from this folder:" % IDF_CONTAINER,
        "       .venv/bin/python -m tools.image --prepare" + (" --variant " + variant if variant else ""),
        "       " + _container_command(variant),
        "",
        "Either way the image is %s/firmware.bin; docs/IMAGE.md says how to flash it." % os.path.relpath(
            build_dir(variant), ROOT),
    ])


def idf_problem():
    """Why the ESP-IDF cannot build here, or None."""
    idf = os.environ.get("IDF_PATH")
    if not idf:
        return "no ESP-IDF here: IDF_PATH is not set"
    if not os.path.isfile(os.path.join(idf, "tools", "idf.py")):
        return "IDF_PATH=%s is not an ESP-IDF (no tools/idf.py in it)" % idf
    if not shutil.which("idf.py"):
        return "idf.py is not on PATH: source %s/export.sh first" % idf
    return None


def idf_version():
    """The ESP-IDF's version as `idf.py --version` prints it (e.g. v5.5.1), or None."""
    r = subprocess.run(["idf.py", "--version"], capture_output=True, text=True)
    m = re.search(r"v\d+\.\d+(\.\d+)?", r.stdout + r.stderr)
    return m.group(0) if m else None


def layout_text(variant=None):
    table = partition_table()
    out = ["boards/%s/%s (%d MiB of flash):" % (BOARD, os.path.basename(PARTITIONS_CSV), FLASH_BYTES >> 20)]
    for p in table:
        out.append("  %-9s 0x%06x  %5d KiB" % (p.name, p.offset, p.size // 1024))
    rel = os.path.relpath(build_dir(variant), ROOT)
    out += ["esptool writes:",
            "  %-8s  %s/firmware.bin  (bootloader at 0x%x, partition table at 0x%x, MicroPython at 0x%x)"
            % ("0x%x" % BOOTLOADER_OFFSET, rel, BOOTLOADER_OFFSET, PARTITION_TABLE_OFFSET, table["factory"].offset),
            "  %-8s  build/device.romfs  (the ROMFS variant's code; or `mpremote romfs deploy`)"
            % ("0x%x" % table["romfs"].offset)]
    return "\n".join(out)


def prepare(variant=None):
    src = micropython_source()
    write_stamp()
    print("image: MicroPython %s in %s; stamp %s" % (MICROPYTHON_TAG, os.path.relpath(src, ROOT),
                                                   os.path.relpath(STAMP, ROOT)))
    return src


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.image", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=VARIANTS, help="ROMFS: the image without the meter's code frozen in")
    ap.add_argument("--prepare", action="store_true", help="only the steps that need no ESP-IDF")
    ap.add_argument("--layout", action="store_true", help="print the partition table and the flash offsets")
    ap.add_argument("--digest", action="store_true", help="print the stamp of the code as it is here")
    args = ap.parse_args(argv)
    if args.digest:
        print(source_digest())
        return 0
    if args.layout:
        print(layout_text(args.variant))
        return 0
    if args.prepare:
        src = prepare(args.variant)
        print("then, in the container (docs/IMAGE.md):\n    " + _container_command(args.variant, src))
        return 0
    problem = idf_problem()
    if problem:
        sys.stderr.write(instructions(args.variant, problem) + "\n")
        return 2
    found = idf_version()
    if found not in IDF_SUPPORTED:
        print("image: warning: ESP-IDF %s; MicroPython %s supports %s (recommended: %s)"
              % (found, MICROPYTHON_TAG, ", ".join(IDF_SUPPORTED), IDF_VERSION), flush=True)
    src = prepare(args.variant)
    make = port_make_args(src, args.variant)
    for goal in ("submodules", "all"):
        print("image: " + " ".join(make + [goal]), flush=True)
        if subprocess.run(make + [goal]).returncode != 0:
            raise SystemExit("image: the build failed (messages above)")
    print(layout_text(args.variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())

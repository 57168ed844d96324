"""ROMFS images of the device's code: .mpy files the MicroPython VM runs in place, from flash.

An ESP32-WROOM-32 without PSRAM gives MicroPython about 96 KB of heap. Loaded from the filesystem,
the firmware's .mpy files would be copied into that heap (bytecode, constants, strings) and leave
little room for the meter itself; from a ROMFS partition they run where they lie, as frozen modules
do, and only the objects the code creates take heap. So:

  * on the board, `make build` writes build/device.romfs (the code for -march=xtensawin), which
    `mpremote romfs deploy` writes to the board's ROMFS partition (docs/HARDWARE.md);
  * on the desktop, `python -m tools.sim device --heapsize 96wK` mounts the same tree compiled for
    this machine (build/romfs-<march>.img) and gives the firmware exactly that heap.

The image holds firmware/ and lib/ as the board's /rom sees them:
/rom/firmware/*.mpy and /rom/lib/*.mpy; MicroPython puts /rom and /rom/lib on sys.path.

    python -m tools.romfs [--march x64] [-o FILE]    build an image; print its path and size
"""

import argparse
import hashlib
import os
import sys
import tempfile

from tools import build

HOST_MARCH = "x64"  # the unix port's native code (viper) on this desktop


# Device modules the ROMFS image leaves out: the local outputs of issue 19 (MQTT, Modbus TCP). The
# composition root imports them only when their settings turn them on (firmware/app.py), and the
# image has under 8 KiB to spare in its 128 KiB partition while they take 13 KiB (BENCHMARKS.md, "The
# local outputs"); a ROMFS board with one turned on says it does not carry them and measures on. The
# frozen image and `make build`'s .mpy tree carry them. (Their settings' rules, outputs_schema, are in.)
NOT_YET_WIRED = ("firmware/mqtt_ha.py", "firmware/sdm630.py", "lib/modbus_tcp.py", "lib/mqtt.py")


def sources(everything=False):
    """[(path in the image, absolute source path)] of the device's code, boot.py and main.py aside;
    without the modules NOT_YET_WIRED unless everything."""
    out = []
    for rel in build.device_sources():
        if rel in ("boot.py", "main.py"):
            continue  # the board runs these two from its filesystem
        if rel in NOT_YET_WIRED and not everything:
            continue
        out.append((rel, os.path.join(build.ROOT, rel)))
    return out


def _digest(files, march):
    h = hashlib.sha256(march.encode())
    for rel, src in files:
        with open(src, "rb") as f:
            h.update(rel.encode() + b"\0" + f.read())
    return h.hexdigest()


def make_image(march, files=None):
    """The ROMFS image (bytes) of the device's code compiled with mpy-cross -march=MARCH."""
    from mpremote.romfs import VfsRomWriter  # the writer `mpremote romfs build` uses

    files = sorted(files or sources())
    tree = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rel, src in files:
            dst = os.path.join(tmp, rel[:-3] + ".mpy")
            build.compile_file(src, rel, dst, march)
            node = tree
            parts = rel[:-3].split("/")
            for d in parts[:-1]:
                node = node.setdefault(d, {})
            with open(dst, "rb") as f:
                node[parts[-1] + ".mpy"] = f.read()
    writer = VfsRomWriter()

    def add(node):
        for name in sorted(node):
            if isinstance(node[name], dict):
                writer.opendir(name)
                add(node[name])
                writer.closedir()
            else:
                writer.mkfile(name, node[name])

    add(tree)
    return writer.finalise()


def image_path(march=HOST_MARCH):
    """build/romfs-MARCH.img, rebuilt only when a source file changed."""
    files = sources()
    path = os.path.join(build.BUILD, "romfs-%s.img" % march)
    stamp = path + ".sha256"
    digest = _digest(files, march)
    if os.path.exists(path) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == digest:
                return path
    image = make_image(march, files)
    os.makedirs(build.BUILD, exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(image)
    os.replace(path + ".tmp", path)
    with open(stamp, "w") as f:
        f.write(digest)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.romfs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--march", default=HOST_MARCH, help="mpy-cross architecture (default: %(default)s; "
                                                        "the ESP32's is xtensawin)")
    ap.add_argument("-o", "--output", help="write the image here (default: build/romfs-MARCH.img)")
    args = ap.parse_args(argv)
    if args.output:
        image = make_image(args.march)
        with open(args.output, "wb") as f:
            f.write(image)
        path = args.output
    else:
        path = image_path(args.march)
    print("%s: %d bytes" % (path, os.path.getsize(path)))


if __name__ == "__main__":
    sys.exit(main())

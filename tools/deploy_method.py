"""How the meter's code goes onto a board: `frozen`, `romfs`, `files`, or `refuse`, and why.

Pure: it decides from what the board said about itself (`python -m tools.deploy` asks it through
mpremote, tools/deploy_probe.py; `--plan --board-info FILE.json` reads the same facts from a file) and
from what this folder's build is. Nothing here talks to a board or writes a file. docs/DEPLOY.md
explains every sentence it can say.

    decide(board, build) -> Decision(method, reasons)

  frozen  the meter's own image (sys.implementation._build "METER_ESP32", docs/IMAGE.md) carrying this
          code (its meter_image.SOURCES_SHA256 is tools.image.source_digest()): only boot.py, main.py,
          the identity and settings go on; code copies in /firmware or /lib are removed. /firmware
          would shadow the frozen package: the ESP32's sys.path is '' (the working directory, /), then
          '.frozen' (py/runtime.c mp_init(), v1.28.0), then '/rom', '/rom/lib' when a ROMFS image is
          mounted (extmod/vfs.c mp_vfs_mount_romfs_protected()), then '/lib' (ports/esp32/main.c
          mp_task()); an import takes the first entry that has the module. /lib comes after the frozen
          code and is removed as a stale copy. The same image of other code: refused.
  romfs   an image with a ROMFS partition big enough for build/device.romfs (the METER_ESP32-ROMFS
          variant): the code runs in place from flash.
  files   a stock image on a module with PSRAM: the .mpy files in /firmware and /lib (they take heap,
          which PSRAM has plenty of).
  refuse  a stock image without PSRAM (the code alone takes more heap than the board has), a
          MicroPython whose .mpy format is not this build's, too little room for the code.
"""

import os

# MicroPython's native architectures (py/persistentcode.h, enum MP_NATIVE_ARCH_*, v1.28.0)
ARCHES = ("none", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp", "xtensa",
          "xtensawin", "rv32imc", "rv64imc")
WORD_BYTES = {"x64": 8, "rv64imc": 8}  # every other architecture MicroPython runs on is 32-bit
METER_IMAGE = "METER_ESP32"  # sys.implementation._build of the meter's image (boards/METER_ESP32)
PSRAM_MIN_BYTES = 1024 * 1024  # a "psram" of bytes below this is no PSRAM (modules have 2-8 MiB)
FS_SPARE_BYTES = 64 * 1024  # room the meter needs on its filesystem besides the code (settings, spool)
METHODS = ("frozen", "romfs", "files", "refuse")
KEYS = ("micropython", "mpy_version", "romfs", "psram", "heap_free_bytes", "flash_bytes")


class BoardInfoError(ValueError):
    pass


class Board:
    """What a board said about itself (the probe's BOARD line, or a --board-info file)."""

    def __init__(self, micropython, mpy, arch, romfs, psram_bytes, heap_free_bytes, flash_bytes, build="",
                 image_digest=None, romfs_bytes=None, fs_free_bytes=None, unique_id=None):
        self.micropython = micropython  # "1.28.0"
        self.mpy = mpy  # (6, 3)
        self.arch = arch  # "xtensawin", or None if not known
        self.romfs = romfs
        self.romfs_bytes = romfs_bytes
        self.psram_bytes = psram_bytes
        self.heap_free_bytes = heap_free_bytes
        self.flash_bytes = flash_bytes
        self.build = build or ""
        self.image_digest = image_digest
        self.fs_free_bytes = fs_free_bytes
        self.unique_id = unique_id

    @property
    def word_bytes(self):
        return WORD_BYTES.get(self.arch, 4)

    def lines(self):
        """What was found, for the person deploying."""
        out = ["MicroPython %s (.mpy %d.%d%s), image %s" % (
            self.micropython, self.mpy[0], self.mpy[1], ", native code " + self.arch if self.arch else "",
            self.build or "(not named)")]
        if self.image_digest:
            out.append("the meter's code frozen in, stamp %s" % self.image_digest[:12])
        out.append("ROMFS: %s" % ("a partition of %s" % kib(self.romfs_bytes) if self.romfs and self.romfs_bytes
                                  else "yes" if self.romfs else "none (a stock image)"))
        out.append("PSRAM: %s; heap free %s; flash %s%s" % (
            kib(self.psram_bytes) if self.psram_bytes else "none", kib(self.heap_free_bytes), mib(self.flash_bytes),
            "; filesystem free %s" % kib(self.fs_free_bytes) if self.fs_free_bytes is not None else ""))
        if self.unique_id:
            out.append("unique id %s" % self.unique_id)
        return out


def kib(n):
    return "%d KiB" % round(n / 1024) if n is not None else "?"


def mib(n):
    return ("%g MiB" % round(n / 1048576, 1)) if n is not None else "?"


def _mpy_pair(value, field):
    """(version, sub-version, arch name or None) from "6.3", [6, 3] or sys.implementation._mpy."""
    if isinstance(value, bool):
        raise BoardInfoError("%s: %r is not a .mpy version" % (field, value))
    if isinstance(value, int):
        if value > 0xFF:  # sys.implementation._mpy: version | sub << 8 | arch << 10 (py/persistentcode.h)
            arch = (value >> 10) & 0x2F
            return (value & 0xFF, (value >> 8) & 3), ARCHES[arch] if 0 < arch < len(ARCHES) else None
        return (value, None), None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value):
        return (value[0], value[1]), None
    if isinstance(value, str):
        parts = value.strip().split(".")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return (int(parts[0]), int(parts[1])), None
    raise BoardInfoError('%s: %r is not a .mpy version (give "6.3", or sys.implementation._mpy)' % (field, value))


def board_from_info(info):
    """Board from a --board-info document (or the probe's BOARD line). BoardInfoError names what is wrong."""
    if not isinstance(info, dict):
        raise BoardInfoError("the board information must be a JSON object with the keys %s" % ", ".join(KEYS))
    missing = [k for k in KEYS if k not in info]
    if missing:
        raise BoardInfoError("missing: %s (needed: %s)" % (", ".join(missing), ", ".join(KEYS)))
    mp = info["micropython"]
    if not isinstance(mp, str) or not mp.strip():
        raise BoardInfoError('micropython: %r is not a version (e.g. "1.28.0")' % (mp,))
    mpy, arch = _mpy_pair(info["mpy_version"], "mpy_version")
    if mpy[1] is None:
        raise BoardInfoError("mpy_version: %r lacks the sub-version (e.g. \"6.3\")" % info["mpy_version"])
    if info.get("mpy_arch") is not None:
        if info["mpy_arch"] not in ARCHES:
            raise BoardInfoError("mpy_arch: %r is not one of %s" % (info["mpy_arch"], ", ".join(ARCHES)))
        arch = info["mpy_arch"]
    for key in ("romfs",):
        if not isinstance(info[key], bool):
            raise BoardInfoError("%s: must be true or false" % key)
    psram = info["psram"]
    if isinstance(psram, bool):
        psram = 4 * 1024 * 1024 if psram else 0
    elif not (isinstance(psram, int) and psram >= 0):
        raise BoardInfoError("psram: must be true, false or the PSRAM's size in bytes")
    for key in ("heap_free_bytes", "flash_bytes", "romfs_bytes", "fs_free_bytes"):
        v = info.get(key)
        if v is not None and not (type(v) is int and v >= 0):
            raise BoardInfoError("%s: must be a number of bytes" % key)
    for key in ("build", "image_digest", "unique_id"):
        v = info.get(key)
        if v is not None and not isinstance(v, str):
            raise BoardInfoError("%s: must be text" % key)
    return Board(mp.strip().lstrip("v"), mpy, arch, info["romfs"], psram if psram >= PSRAM_MIN_BYTES else 0,
                 info["heap_free_bytes"], info["flash_bytes"], info.get("build") or "", info.get("image_digest"),
                 info.get("romfs_bytes"), info.get("fs_free_bytes"), info.get("unique_id"))


class Build:
    """What this folder would put on the board."""

    def __init__(self, mpy, arch, digest, romfs_image_bytes=None, tree_bytes=None, code_heap_bytes=None,
                 micropython="1.28.0"):
        self.mpy = mpy  # (6, 3): the .mpy format of the build's files
        self.arch = arch  # native code's architecture ("xtensawin"), None if the files have none
        self.digest = digest  # tools.image.source_digest()
        self.romfs_image_bytes = romfs_image_bytes
        self.tree_bytes = tree_bytes
        # {word_bytes: heap the code keeps when loaded from /lib}: tools.bench_codecost.MEASURED_BYTES
        self.code_heap_bytes = code_heap_bytes or {}
        self.micropython = micropython  # the release the build targets (tools.image.MICROPYTHON_TAG)


def read_mpy_header(path):
    """(version, sub-version, arch name) from a .mpy file's first bytes (py/persistentcode.c mp_raw_code_load)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4 or head[0:1] != b"M":
        raise ValueError("%s is not a .mpy file" % path)
    arch = (head[2] >> 2) & 0x2F
    return head[1], head[2] & 3, ARCHES[arch] if arch < len(ARCHES) else "arch %d" % arch


def build_facts(device_dir, romfs_image, digest, code_heap_bytes, micropython):
    """Build from a device tree (build/device) and its ROMFS image: the .mpy format its files carry,
    the architecture of their native code, their sizes. ValueError if the tree is not a usable build."""
    versions, arches, tree = set(), set(), 0
    for folder, _, names in os.walk(device_dir):
        for n in names:
            p = os.path.join(folder, n)
            tree += os.path.getsize(p)
            if n.endswith(".mpy"):
                version, sub, arch = read_mpy_header(p)
                versions.add(version)
                if arch != "none":  # (only files with native code carry the sub-version and arch)
                    arches.add((sub, arch))
    if not versions:
        raise ValueError("%s holds no .mpy files: run `make build`" % device_dir)
    if len(versions) > 1 or len(arches) > 1:
        found = ["version %d" % v for v in sorted(versions)] + ["native %s (sub-version %d)" % (a, s)
                                                                  for s, a in sorted(arches)]
        raise ValueError("%s mixes .mpy formats (%s): run `make build` again" % (device_dir, ", ".join(found)))
    (version,) = versions
    sub, arch = next(iter(arches)) if arches else (3, None)
    image = os.path.getsize(romfs_image) if romfs_image and os.path.exists(romfs_image) else None
    return Build((version, sub), arch, digest, image, tree, code_heap_bytes, micropython)


class Decision:
    def __init__(self, method, summary, reasons):
        self.method = method
        self.summary = summary
        self.reasons = reasons  # sentences: why, and for a refusal what to do instead

    def text(self):
        """The decision as printed: its first line names the method."""
        return "\n".join(["%s: %s" % (self.method, self.summary)] + ["  " + r for r in self.reasons])


IMAGE_WAY = [
    "The way for this board is the meter's own image, with the code frozen in (docs/IMAGE.md):",
    "    make image                # builds build/image/METER_ESP32/firmware.bin (needs ESP-IDF v5.5.1, or",
    "                              # Docker: make image prints what to install and run)",
    "    .venv/bin/esptool --chip esp32 --port PORT erase-flash",
    "    .venv/bin/esptool --chip esp32 --port PORT --baud 460800 write-flash 0x1000 "
    "build/image/METER_ESP32/firmware.bin",
    "then `make deploy PORT=PORT ...` again. Erasing loses what the board holds (identity, settings, energy "
    "counters); a board whose identity file you keep gets it back with IDENTITY=.",
]


def _mpy_words(mpy):
    return "%d.%d" % mpy


def _releases(mpy):
    """The MicroPython releases that load .mpy files of this format (tools.image.MPY_VERSIONS)."""
    from tools.image import MPY_VERSIONS

    tags = [t for t, v in MPY_VERSIONS.items() if v == tuple(mpy)]
    if not tags:
        return None
    key = [tuple(int(x) for x in t[1:].split(".")) for t in tags]
    lo, hi = tags[key.index(min(key))], tags[key.index(max(key))]
    return "%s to %s" % (lo[1:].rsplit(".", 1)[0], hi[1:].rsplit(".", 1)[0]) if lo != hi else lo[1:]


def _mpy_problem(board, build):
    """None, or the sentences of a refusal when the board cannot load this build's .mpy files."""
    newer = board.mpy > build.mpy
    if board.mpy[0] != build.mpy[0] or (build.arch and board.mpy[1] != build.mpy[1]):
        releases = _releases(build.mpy)
        return [
            "the board runs MicroPython %s, which loads .mpy version %s; this build's .mpy files are version %s "
            "(MicroPython %s makes and loads them)%s." % (
                board.micropython, _mpy_words(board.mpy), _mpy_words(build.mpy), releases or build.micropython,
                ": the board's MicroPython is newer than this build's tools" if newer else
                ": the board's MicroPython is older"),
            "MicroPython would refuse every file (\"incompatible .mpy file\"). Flash MicroPython %s (a stock "
            "ESP32_GENERIC image from micropython.org, or the meter's own image: docs/IMAGE.md), then deploy "
            "again." % (releases or build.micropython),
        ]
    if build.arch and board.arch and board.arch != build.arch:
        return ["the board runs native code for %s, and this build's native code (the viper kernels) is for %s: "
                "MicroPython would refuse it (\"incompatible .mpy arch\"). Build for the board (`make build` "
                "compiles for the ESP32's xtensawin)." % (board.arch, build.arch)]
    return None


def decide(board, build):
    """The Decision for board (Board) and build (Build)."""
    if board.build == METER_IMAGE:
        if board.image_digest and board.image_digest == build.digest:
            return Decision("frozen", "the meter's own image, with this code frozen in", [
                "the board runs %s with the meter's code frozen in, stamp %s: the same code as here "
                "(tools.image.source_digest())." % (METER_IMAGE, board.image_digest[:12]),
                "Only boot.py, main.py, the identity and the settings go on; any /firmware or /lib left by an "
                "earlier deploy is removed, as /firmware would be imported instead of the frozen code.",
            ])
        return Decision("refuse", "the meter's own image, but of other code", [
            "the board runs %s, whose frozen code is %s; the code here is %s. Deploying now would pair "
            "this folder's boot.py and settings with other code." % (
                METER_IMAGE, "stamped %s" % board.image_digest[:12] if board.image_digest else "not stamped",
                build.digest[:12]),
            "Build the image of this code and flash it, keeping the board's files (docs/IMAGE.md):",
            "    make image",
            "    .venv/bin/esptool --chip esp32 --port PORT --baud 460800 write-flash 0x10000 "
            "build/image/METER_ESP32/micropython.bin",
            "then `make deploy PORT=PORT ...` again. (Or check out the code the board carries: "
            "`python -m tools.image --digest` prints this folder's stamp.)",
        ])
    problem = _mpy_problem(board, build)
    if problem:
        return Decision("refuse", "the board's MicroPython cannot load this build's files", problem)
    reasons = []
    if board.romfs:
        if board.romfs_bytes and build.romfs_image_bytes and build.romfs_image_bytes > board.romfs_bytes:
            reasons.append("the board's ROMFS partition (%s) is too small for the code's image (%s)."
                           % (kib(board.romfs_bytes), kib(build.romfs_image_bytes)))
        else:
            return Decision("romfs", "the code as a ROMFS image, run in place from flash", [
                "the board's image has a ROMFS partition%s: the code runs from flash and takes little heap%s." % (
                    " (%s)" % kib(board.romfs_bytes) if board.romfs_bytes else "",
                    ", and the image (%s) fits it" % kib(build.romfs_image_bytes) if build.romfs_image_bytes else ""),
                "Then any /firmware or /lib of an earlier deploy goes: /firmware would be imported instead.",
            ])
    code = build.code_heap_bytes.get(board.word_bytes) or build.code_heap_bytes.get(4)
    if board.psram_bytes:
        if (board.fs_free_bytes is not None and build.tree_bytes
                and board.fs_free_bytes < build.tree_bytes + FS_SPARE_BYTES):
            return Decision("refuse", "too little room on the board's filesystem for the code", reasons + [
                "the .mpy files take %s and the meter needs %s besides; the filesystem has %s free. Remove what "
                "else is on it (mpremote fs ls, fs rm), or erase and flash the board (docs/DEPLOY.md)."
                % (kib(build.tree_bytes), kib(FS_SPARE_BYTES), kib(board.fs_free_bytes))])
        return Decision("files", "the code as .mpy files in /firmware and /lib", reasons + [
            "a %s image without ROMFS, on a module with %s of PSRAM: the code is loaded into the heap (about %s), "
            "which is %s here." % ("stock" if not board.romfs else "ROMFS", kib(board.psram_bytes), kib(code),
                                   kib(board.heap_free_bytes)),
        ])
    headline = ("the code's image is too big for this board's ROMFS partition, and it has no PSRAM" if board.romfs
                else "a stock image on a board without PSRAM")
    return Decision("refuse", headline, reasons + [
        "the code alone, loaded from .mpy files, takes %s of heap (BENCHMARKS.md, \"The code's own cost\"), and "
        "this board has %s of heap free: the meter could not even start." % (kib(code), kib(board.heap_free_bytes)),
    ] + IMAGE_WAY)

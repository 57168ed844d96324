# codecost_main — what the device's code itself costs in heap (runs under MicroPython): every device
# module imported, gc.mem_alloc() after a collection, before and after.
#
# Started by `python -m tools.bench_codecost` as
#     codecost_main.py lib DIR        the .mpy tree of `make build` (DIR/firmware, DIR/lib), read from a
#                                     filesystem as a stock image reads /lib: copied into the heap
#     codecost_main.py romfs IMAGE    the same code as a ROMFS image mounted at /rom, run in place
#     codecost_main.py frozen -       the code frozen into this MicroPython binary (a FROZEN_MANIFEST
#                                     build, docs/IMAGE.md)
#     ... MODULE [MODULE...]          the modules to import, in that order
# What the board has built in (asyncio, json, socket, ssl...) and the simulated board's modules are
# loaded first and not counted. Prints one JSON object: {"source", "bytes", "modules": [[name, bytes]
# ...], "word_bytes", "files": {module: where it came from}}.
import gc
import sys

import vfs

SOURCE, WHERE = sys.argv[1:3]
MODULES = sys.argv[3:]

import array  # noqa: E402, F401  (built in on the board: not the firmware's)
import asyncio  # noqa: E402, F401
import binascii  # noqa: E402, F401
import errno  # noqa: E402, F401
import hashlib  # noqa: E402, F401
import io  # noqa: E402, F401
import json  # noqa: E402
import math  # noqa: E402, F401
import os  # noqa: E402, F401
import random  # noqa: E402, F401
import re  # noqa: E402, F401
import select  # noqa: E402, F401
import socket  # noqa: E402, F401
import ssl  # noqa: E402, F401
import struct  # noqa: E402, F401
import time  # noqa: E402, F401  (the simulated board's, as machine and network)

import machine  # noqa: E402, F401
import micropython  # noqa: E402, F401
import network  # noqa: E402, F401

if SOURCE == "lib":
    # The board's '' (its flash's root, where firmware/ lies) and /lib, ahead of everything else.
    sys.path[:0] = [WHERE, WHERE + "/lib"]
elif SOURCE == "romfs":
    with open(WHERE, "rb") as f:
        _image = f.read()
    vfs.mount(vfs.VfsRom(_image), "/rom")
    sys.path[:0] = ["/rom", "/rom/lib"]
elif SOURCE != "frozen":
    raise SystemExit("codecost_main: source must be lib, romfs or frozen, not %r" % SOURCE)

# Each import's share goes into an array made beforehand: storing a small int allocates nothing, so
# the bookkeeping adds no byte to what is measured.
kept = array.array("i", [0] * len(MODULES))
gc.collect()
start = gc.mem_alloc()
for k in range(len(MODULES)):
    gc.collect()
    before = gc.mem_alloc()
    __import__(MODULES[k])
    gc.collect()
    kept[k] = gc.mem_alloc() - before
gc.collect()
total = gc.mem_alloc() - start

print(json.dumps({"source": SOURCE, "bytes": total, "word_bytes": struct.calcsize("P"),
                  "modules": [[MODULES[k], kept[k]] for k in range(len(MODULES))],
                  "files": {name: getattr(sys.modules[name], "__file__", "?") for name in MODULES}}))

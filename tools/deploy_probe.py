"""What `python -m tools.deploy` asks a board through mpremote, and how it reads the answers.

PROBE runs on the board in one `mpremote exec` and prints one line, `BOARD {json}`: the image
(MicroPython version, .mpy version sys.implementation._mpy, sys.implementation._build, the meter
image's stamp meter_image.SOURCES_SHA256 when there is one), ROMFS (vfs.rom_ioctl and its partition's
size), PSRAM and the heap (esp32.idf_heap_info, gc.mem_free), the flash (esp.flash_size) and the
filesystem's free space, the chip's unique id, and what the meter keeps on the board: its identity
(serial and checksum only, never a secret), settings, energy counters, spooled records, code copies.

READBACK runs after the deploy has written everything and prints `LABEL {json}`: the identity's
label fields as the board has them, where the firmware package is imported from, and the settings
the installer needs to see. The board's answers are on its own console only, over the USB cable.
"""

import json
import os
import subprocess
import sys

# The ESP32 has 320 KiB of data RAM in all (its technical reference manual, "System and Memory"):
# an ESP-IDF heap region larger than this one is external RAM, PSRAM.
INTERNAL_REGION_MAX = 384 * 1024

# Runs on the board. What each call is, in ports/esp32 (v1.28.0): sys.implementation._mpy and _build
# (py/modsys.c), vfs.rom_ioctl (extmod/modvfs.c, only on images built with MICROPY_VFS_ROM;
# esp32_partition.c hands out the romfs partition, whose ioctl 4 and 5 are its block count and size),
# esp32.idf_heap_info(esp32.HEAP_DATA) (modesp32.c: one (total, free, largest, min free) per ESP-IDF
# heap region), esp.flash_size() (modesp.c), machine.unique_id() (the MAC in eFuse).
PROBE = r"""
import sys, gc, os, json
d = {}
i = sys.implementation
d['micropython'] = '%d.%d.%d' % i.version[:3]
d['mpy_version'] = getattr(i, '_mpy', 0)
d['build'] = getattr(i, '_build', '')
try:
    import struct
    d['word_bytes'] = struct.calcsize('P')
except Exception:
    pass
try:
    import vfs
    r = hasattr(vfs, 'rom_ioctl')
except ImportError:
    r = False
d['romfs'] = False
if r:
    try:
        if vfs.rom_ioctl(1) > 0:
            p = vfs.rom_ioctl(2, 0)
            if not isinstance(p, int):
                d['romfs'] = True
                d['romfs_bytes'] = p.ioctl(4, 0) * p.ioctl(5, 0) if hasattr(p, 'ioctl') else len(p)
    except Exception:
        pass
    p = None
psram = 0
try:
    import esp32
    for t in esp32.idf_heap_info(esp32.HEAP_DATA):
        if t[0] > INTERNAL_MAX:
            psram += t[0]
except Exception:
    pass
d['psram'] = psram
gc.collect()
d['heap_free_bytes'] = gc.mem_free()
try:
    import esp
    d['flash_bytes'] = esp.flash_size()
except Exception:
    d['flash_bytes'] = 0
try:
    import machine
    d['unique_id'] = ''.join('%02x' % b for b in machine.unique_id())
except Exception:
    pass
try:
    s = os.statvfs('/')
    d['fs_free_bytes'] = s[0] * s[3]
except Exception:
    pass
try:
    import meter_image
    d['image_digest'] = meter_image.SOURCES_SHA256
except ImportError:
    pass
names = os.listdir('/')
f = {}
if 'identity.json' in names:
    try:
        with open('identity.json') as h:
            x = json.loads(h.read())
        f['identity'] = [x['serial'], x['check']]
    except Exception:
        f['identity'] = 'damaged'
f['settings'] = [n for n in ('config.json', 'config.json.bak') if n in names]
f['energy'] = [n for n in ('energy.a', 'energy.b') if n in names]
f['spool'] = len(os.listdir('spool')) if 'spool' in names else 0
f['code'] = [n for n in ('firmware', 'lib') if n in names]
f['boot'] = [n for n in ('boot.py', 'main.py') if n in names]
d['on_board'] = f
print('BOARD ' + json.dumps(d))
""".replace("INTERNAL_MAX", str(INTERNAL_REGION_MAX))

# Runs on the board after the deploy. Which `firmware` package it imports is the one the meter
# will run (sys.path, as the board has it).
READBACK = r"""
import json, sys, os
d = {}
try:
    with open('identity.json') as h:
        x = json.loads(h.read())
    d['identity'] = [x['serial'], x['ap_password'], x['pin']]
except Exception as e:
    d['identity'] = None
try:
    with open('config.json') as h:
        c = json.loads(h.read())
    d['settings'] = {'wifi_ssid': c['wifi']['ssid'], 'upload_url': c['upload']['url'],
                     'ca_cert': bool(c['upload']['ca_cert']), 'ap_mode': c['ap']['mode'],
                     'profile': c['board']['profile']}
except Exception:
    d['settings'] = None
try:
    import firmware
    f = getattr(firmware, '__file__', 'firmware')
    # A frozen module's __file__ is its path in the manifest ('firmware/__init__.py': py/builtinimport.c
    # do_load() stores the raw code's source name), with no file behind it; a file's is where it was found.
    if not f.startswith('/'):
        try:
            os.stat(f)
        except OSError:
            f = '.frozen/' + f
    d['code'] = [f, getattr(firmware, 'VERSION', '?')]
except Exception as e:
    d['code'] = ['(cannot be imported: %s: %s)' % (type(e).__name__, e), None]
print('LABEL ' + json.dumps(d))
"""


def mpremote():
    return os.environ.get("MPREMOTE") or os.path.join(os.path.dirname(sys.executable), "mpremote")


def run_snippet(port, code, marker, timeout=60):
    """Run code on the board (one mpremote exec) and return the JSON after its `MARKER ` line.
    SystemExit saying what mpremote said when there is none."""
    try:
        r = subprocess.run([mpremote(), "connect", port, "exec", code], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit("the board at %s did not answer within %d s: is it running MicroPython? (press its reset "
                         "button, or see docs/DEPLOY.md, \"Back to a working board\")" % (port, timeout))
    for line in r.stdout.splitlines():
        if line.startswith(marker + " "):
            try:
                return json.loads(line[len(marker) + 1:])
            except ValueError:
                break
    said = (r.stderr or r.stdout).strip() or "nothing"
    raise SystemExit("could not ask the board at %s (mpremote said: %s)" % (port, said[-1500:]))


def probe(port):
    """The board's BOARD line, as a dict (the keys of tools.deploy_method.board_from_info and on_board)."""
    return run_snippet(port, PROBE, "BOARD")


def readback(port):
    return run_snippet(port, READBACK, "LABEL")

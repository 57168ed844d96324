"""What the local outputs' code costs in heap (issue 19): MQTT with Home Assistant discovery, Modbus TCP as
an SDM630, and their settings rules.

    python -m tools.bench_outputs [--json]

Imports each module under the MicroPython unix port as tools.bench_codecost does (what the board
builds in, asyncio among it, loaded first and not counted), the generic lib/ module before the meter's
module that uses it, so each row is that module's own share; from .mpy files (`/lib`, a stock image)
and from a ROMFS image (in place). The figures are this binary's (64-bit: about twice the ESP32's).
"""

import argparse
import json

from tools import bench_codecost

# firmware.schema (with config and profiles) is the device's already, loaded while settings are checked:
# imported first, so outputs_schema's row is its own.
MODULES = ["modbus_tcp", "firmware.sdm630", "mqtt", "firmware.mqtt_ha", "firmware.schema", "firmware.outputs_schema"]
ALREADY = ("firmware.schema",)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench_outputs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)
    out = {}
    for source in ("lib", "romfs"):
        r = bench_codecost.measure(source, modules=MODULES, everything=True)  # (not in the device's ROMFS yet)
        out[source] = dict(r["modules"])
        out["word_bytes"] = r["word_bytes"]
    if args.json:
        print(json.dumps(out))
        return 0
    print("heap kept by importing each module, %d-bit unix port (bytes):" % (8 * out["word_bytes"]))
    print("  %-26s %10s %10s" % ("module", ".mpy files", "ROMFS"))
    for m in MODULES:
        print("  %-26s %10d %10d%s" % (m, out["lib"][m], out["romfs"][m],
                                       "  (the device's already, not counted)" if m in ALREADY else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

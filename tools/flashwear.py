"""Flash wear of the energy counters, measured on MicroPython's own littlefs2 (block_cycles=100).

    python -m tools.flashwear [--saves N] [--blocks B]

Formats a simulated 2 MB flash of 4 KB blocks (a typical ESP32 4 MB module's filesystem partition)
with the same littlefs2 settings the ESP32 port uses, fills it like a deployed device (the firmware,
the settings, the identity), then saves the energy counters N times as firmware/energy_store.py does
and counts the block erases: per save, per block, and how widely littlefs spread them. The numbers
feed BENCHMARKS.md, "Flash wear". Runs itself under the MicroPython unix port.
"""

import sys

BLOCKS = 512  # 2 MB of 4 KB blocks


def measure(saves, blocks):
    import os

    import simflash

    from firmware.config import ConfigStore
    from firmware.energy_store import EnergyStore

    firmware_bytes = min(300 * 1024, blocks * 4096 * 15 // 100)  # build/device is smaller than 300 KB
    flash = simflash.format_flash(blocks)
    simflash.mount(flash, "/flash")
    for k in range(firmware_bytes // 10240):
        with open("/flash/firmware%02d.mpy" % k, "wb") as f:
            f.write(b"\x4d" * 10240)
    ConfigStore("/flash/config.json", log=lambda line: None).save(
        {"wifi": {"ssid": "Panel WiFi", "password": "correct horse"}, "upload": {"url": "https://ingest.example/v1"}})
    with open("/flash/identity.json", "w") as f:
        f.write("x" * 260)
    store = EnergyStore("/flash/energy")
    store.load()
    free = os.statvfs("/flash")[3]
    base = list(flash.erases)
    for k in range(saves):
        store.save({"import_mwh": [k * 4000, k * 3000, k * 3000], "export_mwh": [0, 0, 0],
                    "net_import_mwh": k * 10000, "net_export_mwh": 0})
    spent = [flash.erases[b] - base[b] for b in range(blocks)]
    config_erases = list(flash.erases)
    store_cfg = ConfigStore("/flash/config.json", log=lambda line: None)
    store_cfg.load()
    for k in range(200):
        store_cfg.update({"ap": {"channel": 1 + k % 13}})
    cfg_spent = sum(flash.erases) - sum(config_erases)
    simflash.unmount("/flash")
    print("flash: %d blocks of 4096 bytes, %d free before the run" % (blocks, free))
    print("energy saves: %d" % saves)
    print("erases: %d in all, %.4f per save" % (sum(spent), sum(spent) / saves))
    touched = [x for x in spent if x]
    print("blocks erased: %d; erases per erased block: most %d, mean %.1f"
          % (len(touched), max(spent), sum(touched) / len(touched)))
    print("settings saves: 200, erases: %d, %.2f per save" % (cfg_spent, cfg_spent / 200))


def main():
    if sys.implementation.name == "micropython":
        measure(int(sys.argv[1]), int(sys.argv[2]))
        return 0
    import argparse

    from tools import mp

    ap = argparse.ArgumentParser(prog="python -m tools.flashwear", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saves", type=int, default=20000)
    ap.add_argument("--blocks", type=int, default=BLOCKS, help="flash size in 4 KB blocks (default 512: 2 MB)")
    args = ap.parse_args()
    return mp.run("tools/flashwear.py", str(args.saves), str(args.blocks), heapsize="16M").returncode


if __name__ == "__main__":
    sys.exit(main())

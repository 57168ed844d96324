# The settings and energy stores on the real littlefs2 (MicroPython's, as on the ESP32) over a RAM
# flash: the power fails at every flash operation of a save, cleanly or halfway through it, and the
# device boots with the old or the new data every time. Also: what an energy save costs in erases.
# (littlefs itself commits a file's new content atomically when it is closed, so here even an in-place
# write survives; tests/unit/test_power_safe.py cuts bytes on a filesystem that does not, like the
# simulator's state directory.) MicroPython only: CPython has no littlefs.
from firmware import config
from firmware.config import ConfigStore
from firmware.energy_store import EnergyStore
from support import MICROPYTHON, skip

MNT = "/lfs"
OLD = {"wifi": {"ssid": "Old WiFi", "password": "old-password"}}
NEW = {"wifi": {"ssid": "New WiFi", "password": "new-password-2"}, "meter": {"model": "public"},
       "upload": {"url": "https://ingest.example/v1"}}
IDENTITY = b'{"format": "open-meter-identity", "serial": "LFS1"}'


def quiet(line):
    pass


def _need_littlefs():
    if not MICROPYTHON:
        skip("littlefs (vfs.VfsLfs2) exists only in MicroPython")


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _cut_every_operation(image, blocks, action, check):
    """Run action() on a copy of image with the power failing at each flash operation (clean and torn),
    then mount what is left and check() it. Returns the number of operations of an uncut action()."""
    import simflash

    probe = simflash.RamFlash(blocks, image)
    simflash.mount(probe, MNT)
    action()
    simflash.unmount(MNT)
    total = probe.ops
    for cut in range(total + 1):
        for torn in (False, True):
            flash = simflash.RamFlash(blocks, image, cut_at=cut, torn=torn)
            simflash.mount(flash, MNT)
            try:
                action()
            except OSError:
                pass  # littlefs noticed the dead flash: the device is off anyway
            simflash.unmount(MNT)
            simflash.mount(simflash.RamFlash(blocks, flash.data), MNT)  # power back on
            try:
                check(cut)
            finally:
                simflash.unmount(MNT)
    return total


def test_settings_save_with_power_cut_at_every_flash_operation():
    _need_littlefs()
    import simflash

    blocks = 32
    flash = simflash.format_flash(blocks)
    simflash.mount(flash, MNT)
    ConfigStore(MNT + "/config.json", log=quiet).save(OLD)
    with open(MNT + "/identity.json", "wb") as f:
        f.write(IDENTITY)
    EnergyStore(MNT + "/energy").save({"import_mwh": [7, 8, 9], "export_mwh": [0, 0, 0],
                                       "net_import_mwh": 24, "net_export_mwh": 0})
    simflash.unmount(MNT)
    image = bytes(flash.data)
    old_doc, new_doc = config.validate(OLD), config.validate(NEW)
    seen = []

    def save():
        store = ConfigStore(MNT + "/config.json", log=quiet)
        store.load()
        store.save(NEW)

    def check(cut):
        store = ConfigStore(MNT + "/config.json", log=quiet)
        doc = store.load().document()
        assert doc == old_doc or doc == new_doc, cut
        assert store.diagnostic is None, (cut, store.diagnostic)
        assert _read(MNT + "/identity.json") == IDENTITY
        assert EnergyStore(MNT + "/energy").load()["import_mwh"] == [7, 8, 9]
        seen.append(doc == new_doc)

    total = _cut_every_operation(image, blocks, save, check)
    assert total >= 4 and True in seen and False in seen and seen[-1]


def test_energy_saves_with_power_cut_at_every_flash_operation_never_go_backwards():
    _need_littlefs()
    import simflash

    blocks = 32
    flash = simflash.format_flash(blocks)
    for k in range(1, 4):  # three consecutive saves: each slot is hit
        before = {"import_mwh": [k * 100, 0, 0], "export_mwh": [0, k, 0], "net_import_mwh": k * 100,
                  "net_export_mwh": 0}
        after = {"import_mwh": [k * 100 + 50, 0, 0], "export_mwh": [0, k + 1, 0], "net_import_mwh": k * 100 + 50,
                 "net_export_mwh": 0}
        simflash.mount(flash, MNT)
        EnergyStore(MNT + "/energy").save(before)
        simflash.unmount(MNT)
        image = bytes(flash.data)

        def save(after=after):
            s = EnergyStore(MNT + "/energy")
            s.load()
            s.save(after)

        def check(cut, before=before, after=after):
            got = EnergyStore(MNT + "/energy").load()
            assert got == before or got == after, (cut, got)

        assert _cut_every_operation(image, blocks, save, check) >= 1


def test_an_energy_save_costs_a_small_fraction_of_an_erase():
    _need_littlefs()
    import simflash

    flash = simflash.format_flash(64)
    simflash.mount(flash, MNT)
    ConfigStore(MNT + "/config.json", log=quiet).save(NEW)  # a realistic directory beside the slots
    store = EnergyStore(MNT + "/energy")
    store.load()
    e0 = sum(flash.erases)
    saves = 2000
    for k in range(saves):
        store.save({"import_mwh": [k, k, k], "export_mwh": [0, 0, 0], "net_import_mwh": 3 * k, "net_export_mwh": 0})
    erases = sum(flash.erases) - e0
    simflash.unmount(MNT)
    # Measured 0.045 (one metadata-block compaction every ~22 saves; BENCHMARKS.md "Flash wear" relies
    # on <= 0.1). A record too big to stay inline in the directory would cost >= 1 erase per save.
    assert erases / saves <= 0.1, erases

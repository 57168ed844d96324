# Any content in any file the device reads from flash: it still boots, measures, keeps its energy
# counters and says why. Each case damages one file of a healthy device's flash in one way.
import os

from firmware import app
from simworld import world
from support import MICROPYTHON, on_flash, skip
from tools.sim import mains

FILES = ("config.json", "config.json.bak", "identity.json", "energy.a", "energy.b", "spool/state.json",
         "spool/0000000000_003.rec", "spool")
CONTENTS = (
    b"",
    b"\x00\xff\xfe garbage \x80\x81" * 20,
    b'{"version": 1, "wifi": {"ssid": "Pan',  # cut off
    b'{"reserved": "abc", "lost": [1], "rejected": null}',  # JSON of the wrong types
    b'{"reserved": null, "lost": 1e999, "rejected": -5}',
    b'{"reserved": 1e999}',
    b"[1, 2]",
    b"1e999",
    b'"a string"',
    b'{"seq": 2, "energy_mwh": {"import_mwh": [1e999, 0, 0], "export_mwh": [0, 0, 0], "net_import_mwh": 1e30}}\n',
    "folder",  # a directory in its place
    None,  # removed
)
# What the console names when the file is damaged (a file the device does not need, such as the
# settings' backup while the settings are good, or an empty spool state, may pass in silence).
SAYS = {"config.json": "config.json", "identity.json": "identity", "energy.a": "energy.a", "energy.b": "energy.b",
        "spool": "spool"}
ENERGY = {"import_mwh": [2000000, 0, 0], "export_mwh": [0, 0, 0], "net_import_mwh": 2000000, "net_export_mwh": 0}


def _healthy(d):
    """A device's flash after a healthy run: settings, an identity, saved energy, spooled records."""
    from firmware import identity
    from firmware.config import ConfigStore
    from firmware.energy_store import EnergyStore
    from firmware.spool import Spool

    store = ConfigStore(log=lambda m: None)
    store.load()
    store.update({"wifi": {"ssid": "Panel", "password": "hunter2hunter2"}})
    store.update({"wifi": {"ssid": "Panel", "password": "hunter2hunter2"}})  # (and its .bak)
    with open("identity.json", "w") as f:
        f.write(identity.derive(b"k" * 32, "MDTEST0001").to_json())
    EnergyStore().save(ENERGY)
    EnergyStore().save(ENERGY)  # both slots
    spool = Spool(ram_max=3, log=lambda m: None)
    for _ in range(3):
        spool.add({"energy_mwh": ENERGY})


def _rmtree(path):
    try:
        os.remove(path)
    except OSError:
        for name in os.listdir(path):
            _rmtree(path + "/" + name)
        os.rmdir(path)


def _damage(path, content):
    try:
        _rmtree(path)
    except OSError:
        pass
    if isinstance(content, str):  # "folder"
        os.mkdir(path)
    elif content is not None:
        with open(path, "wb") as f:
            f.write(content)


def _boot_and_measure():
    """Device() as at power-up, then one measurement window through on_readings: (device, console)."""
    said = []
    d = app.Device(log=said.append)
    d.meter.start()
    reading = None
    for _ in range(2000):
        world.advance_us(1000)
        reading = d.meter.poll()
        if reading is not None:
            break
    d.meter.stop()
    assert reading is not None and abs(reading["phases"][0]["vrms"] - 230.0) < 2, "no window measured"
    d.on_readings(reading)
    return d, said


def test_any_content_in_any_file_still_boots_measures_and_keeps_the_energy():
    failures = []
    for path in FILES:
        for content in CONTENTS:
            if path == "spool" and isinstance(content, bytes) and content:
                content = b"a plain file where the spool folder was"
            with on_flash():
                world.reset()
                mains.connect(world, mains.load_scenario({"phases": [{"irms": 5.0}] * 3}))
                _healthy(".")
                _damage(path, content)
                try:
                    d, said = _boot_and_measure()
                    total = d.energy.snapshot()["net_import_mwh"]
                    if total < ENERGY["net_import_mwh"]:  # (one slot, or the spool, always holds it)
                        failures.append("%s %r: energy went back to %d" % (path, content and content[:20], total))
                    word = SAYS.get(path) if not (path == "spool" and isinstance(content, str)) else None  # (empty)
                    if word and content is not None and not [x for x in said if word in x]:
                        failures.append("%s %r: the console does not say why: %s" % (path, content and content[:20],
                                                                                     said))
                except Exception as e:
                    failures.append("%s %r: %s: %s" % (path, content and content[:20], type(e).__name__, e))
    assert not failures, "\n".join(failures)


def test_arbitrary_bytes_or_json_in_any_file_still_boot():
    # The same property over contents hypothesis makes up (CPython only: MicroPython has no hypothesis).
    if MICROPYTHON:
        skip("hypothesis runs under CPython")
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    docs = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                        st.dictionaries(st.sampled_from(["version", "reserved", "lost", "rejected", "seq", "wifi",
                                                         "gaps", "block", "next", "unsure", "shift", "serial",
                                                         "format", "energy_mwh", "meter", "x"]),
                                        inner, max_size=5), max_leaves=12)
    contents = (st.binary(max_size=600) | docs.map(lambda d: json.dumps(d).encode()) | st.just("folder")
                | st.just(None))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(FILES), contents)
    def boots(path, content):
        with on_flash():
            world.reset()
            mains.connect(world, mains.load_scenario({"phases": [{"irms": 5.0}] * 3}))
            _healthy(".")
            _damage(path, content)
            d, _ = _boot_and_measure()
            assert d.energy.snapshot()["net_import_mwh"] >= ENERGY["net_import_mwh"]

    boots()

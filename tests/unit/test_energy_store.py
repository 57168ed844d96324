# Energy counters on flash: never backwards across reboots and power cuts, bounded loss, bounded writes.
import time

from powercut import Flash, PowerCut, files, restore, steps_of

from firmware import config, energy_store
from firmware.energy_store import EnergyPersister, EnergyStore
from support import raises, tmpdir


def snap(imp, exp=(0, 0, 0), net_imp=None, net_exp=0):
    return {"import_mwh": list(imp), "export_mwh": list(exp),
            "net_import_mwh": sum(imp) if net_imp is None else net_imp, "net_export_mwh": net_exp}


def counters(s):
    return s["import_mwh"] + s["export_mwh"] + [s["net_import_mwh"], s["net_export_mwh"]]


def not_lower(a, b):
    return all(x >= y for x, y in zip(counters(a), counters(b)))  # noqa: B905 (MicroPython has no strict=)


def test_counters_survive_reboots_and_alternate_slots():
    d = tmpdir()
    store = EnergyStore(d + "/energy")
    assert store.load() is None and store.diagnostic.code == energy_store.NEW
    big = 5 * 10 ** 15  # 40 years of a 400 A three-phase site in mWh: beyond 32 bits, fits the record
    for k in range(1, 6):
        store.save(snap([k * 1000, k * 2000, big + k], [k, 0, 0], net_exp=k))
        after = EnergyStore(d + "/energy")
        assert after.load() == snap([k * 1000, k * 2000, big + k], [k, 0, 0], net_exp=k)
        assert after.diagnostic is None
    assert sorted(files(d)) == ["energy.a", "energy.b"]
    assert all(len(data) == energy_store.RECORD_BYTES for data in files(d).values())
    assert energy_store.RECORD_BYTES <= 128  # stays a littlefs inline file (see BENCHMARKS.md)


def test_a_restart_says_which_slot_and_how_much_energy_it_restored():
    d = tmpdir()
    first = EnergyStore(d + "/energy")
    first.load()
    assert first.restored_line() is None  # nothing saved yet: the diagnostic says so instead
    first.save(snap([1000000, 200000, 34000], [0, 0, 5000], net_imp=1229000, net_exp=0))
    first.save(snap([1500000, 200000, 34000], [0, 0, 7000], net_imp=1727000, net_exp=2500))
    again = EnergyStore(d + "/energy")
    again.load()
    # (2.5 Wh shows as 0.002 kWh: truncated, as a meter's register shows it)
    assert again.restored_line() == "restored from %s/energy.b (save 2): net import 1.727 kWh, net export 0.002 kWh" % d
    # With the newest slot damaged, the line names the slot really used.
    with open(d + "/energy.b", "wb") as f:
        f.write(b"torn")
    damaged = EnergyStore(d + "/energy")
    damaged.load()
    assert damaged.diagnostic.code == energy_store.SLOT_DAMAGED
    assert damaged.restored_line().startswith("restored from %s/energy.a (save 1): net import 1.229 kWh" % d)


def test_a_save_cut_at_any_byte_loses_at_most_that_save():
    d = tmpdir()
    store = EnergyStore(d + "/energy")
    history = [snap([0, 0, 0])]
    store.save(history[0])
    for k in range(1, 4):  # three saves: both slots get cut at every byte
        history.append(snap([k * 1500, k * 700, k * 10], [k, k, k], net_exp=k * 3))
        picture = files(d)
        total = steps_of(lambda: EnergyStore(d + "/energy").load() and None)  # reading takes no steps
        assert total == 0
        probe = EnergyStore(d + "/energy")
        probe.load()
        total = steps_of(lambda p=probe, s=history[k]: p.save(s))
        restore(d, picture)
        assert total == 1 + energy_store.RECORD_BYTES  # open/truncate + every byte
        for cut in range(total + 1):
            restore(d, picture)
            s = EnergyStore(d + "/energy")
            s.load()
            try:
                with Flash(cut):
                    s.save(history[k])
            except PowerCut:
                pass
            booted = EnergyStore(d + "/energy").load()
            assert booted in (history[k - 1], history[k]), cut  # the previous save or this one
            assert not_lower(booted, history[k - 1])
        assert booted == history[k]
        store = EnergyStore(d + "/energy")
        store.load()


def test_damaged_slots_are_reported_and_never_lower_the_counters():
    d = tmpdir()
    store = EnergyStore(d + "/energy")
    store.save(snap([100, 0, 0]))
    store.save(snap([200, 0, 0]))  # in energy.b
    with open(d + "/energy.b", "r+b") as f:
        f.seek(20)
        f.write(b"\x01")  # one flipped byte in the newest record
    s = EnergyStore(d + "/energy")
    assert s.load() == snap([100, 0, 0])
    assert s.diagnostic.code == energy_store.SLOT_DAMAGED and "energy.b" in s.diagnostic.message
    s.save(snap([250, 0, 0]))  # rewrites the damaged slot first, keeping the good one
    assert EnergyStore(d + "/energy").load() == snap([250, 0, 0])
    for name in ("energy.a", "energy.b"):
        with open(d + "/" + name, "wb") as f:
            f.write(b"garbage")
    s = EnergyStore(d + "/energy")
    assert s.load() is None and s.diagnostic.code == energy_store.LOST


def test_save_never_stores_a_lower_counter():
    d = tmpdir()
    store = EnergyStore(d + "/energy")
    store.save(snap([500, 500, 500], [9, 9, 9], net_exp=9))
    store.save(snap([400, 600, 0], [0, 10, 0], net_exp=0))  # e.g. an Energy object that was not restored
    assert EnergyStore(d + "/energy").load() == snap([500, 600, 500], [9, 10, 9], net_imp=1500, net_exp=9)
    with raises(ValueError, "import_mwh[3]"):
        store.save({"import_mwh": [1, 2], "export_mwh": [0, 0, 0], "net_import_mwh": 0, "net_export_mwh": 0})
    with raises(ValueError, "whole milliwatt-hours"):
        store.save(snap([1.5, 0, 0]))


class CountingStore:
    def __init__(self):
        self.last = None
        self.saved = []
        self.fail = False

    def save(self, s):
        if self.fail:
            raise OSError(5)
        self.saved.append(s)
        self.last = s


def test_persister_saves_every_10_wh_but_not_more_often_than_every_10_s():
    store = CountingStore()
    p = EnergyPersister(store)
    t = time.ticks_ms()
    e = 0
    # 3.6 kW: 1 Wh a second. Readings every second for a minute: 10 Wh arrive every 10 s.
    for s in range(60):
        e += 1000
        p.maybe_save(snap([e, 0, 0]), time.ticks_add(t, s * 1000))
    assert [x["import_mwh"][0] for x in store.saved] == [10000, 20000, 30000, 40000, 50000, 60000]
    # 69 kW (a Home site at full load): 10 Wh in half a second, but a write at most every 10 s.
    store.saved = []
    for k in range(1, 121):
        e += 9583  # 69 kW for 500 ms
        p.maybe_save(snap([e, 0, 0]), time.ticks_add(t, 60000 + k * 500))
    assert len(store.saved) == 6
    assert p.unsaved_mwh(snap([e, 0, 0])) <= 20 * 9583  # bound: 10 s of full power


def test_persister_saves_a_trickle_after_5_minutes_and_nothing_when_idle():
    store = CountingStore()
    p = EnergyPersister(store)
    t = time.ticks_ms()
    for s in range(0, 3600, 1):  # an hour with no energy at all: nothing to write
        p.maybe_save(snap([0, 0, 0]), time.ticks_add(t, s * 1000))
    assert store.saved == []
    for s in range(3600, 3600 + 301):  # 2 W: 0.56 mWh a second, far below 10 Wh in 5 minutes
        p.maybe_save(snap([(s - 3599) * 5 // 9, 0, 0]), time.ticks_add(t, s * 1000))
    assert len(store.saved) == 1
    when = store.saved[0]["import_mwh"][0] * 9 // 5
    assert 299 <= when <= 301  # saved once the oldest unsaved energy was 5 minutes old


def test_persister_counts_export_and_every_phase():
    p = EnergyPersister(CountingStore(), config.section("energy", {"save_max_unsaved_wh": 10}))
    t = time.ticks_ms()
    assert not p.due(snap([0, 0, 0]), t)
    assert not p.due(snap([3000, 3000, 0], [3000, 0, 0], net_imp=3000), t)  # 9 Wh in all
    assert p.due(snap([3000, 3000, 0], [3000, 1000, 0], net_imp=2000), t)  # 10 Wh in all


def test_persister_follows_the_config_and_survives_a_flash_error():
    store = CountingStore()
    p = EnergyPersister(store, {"save_max_interval_s": 600, "save_max_unsaved_wh": 50,
                                            "save_min_interval_s": 30})
    assert (p.max_interval_ms, p.max_unsaved_mwh, p.min_interval_ms) == (600000, 50000, 30000)
    t = time.ticks_ms()
    store.fail = True
    assert not p.maybe_save(snap([60000, 0, 0]), t)
    assert "I/O error 5" in p.error
    store.fail = False
    assert not p.maybe_save(snap([61000, 0, 0]), time.ticks_add(t, 29000))  # retried no sooner than 30 s
    assert p.maybe_save(snap([62000, 0, 0]), time.ticks_add(t, 30000))
    assert p.error is None and p.writes == 1


def test_loss_window_is_right_across_a_tick_wrap():
    store = CountingStore()
    p = EnergyPersister(store)
    t = time.ticks_ms()  # the simulated clock wraps 5 s into the run, as on the ESP32 after 12 days
    for s in range(0, 400):
        p.maybe_save(snap([s // 60 + 1, 0, 0]), time.ticks_add(t, s * 1000))
    assert len(store.saved) == 1  # 5 minutes after the first unsaved energy, wrap or not


def test_a_slot_that_cannot_be_written_does_not_stop_the_saves():
    import os

    d = tmpdir()
    store = EnergyStore(d + "/energy")
    store.save(snap([100, 0, 0]))  # energy.a
    os.mkdir(d + "/energy.b")  # energy.b can no longer be written: a folder stands in its place
    p = EnergyPersister(store, config.section("energy", {"save_min_interval_s": 0}))
    for k in range(4):
        assert p.save(snap([200 + k, 0, 0]), time.ticks_ms())
        assert "energy.b cannot be written (I/O error" in p.error and p.error.endswith("saving to %s/energy.a" % d)
    assert p.news() == p.error and p.news() is None  # said once on the console, not at every save
    s = EnergyStore(d + "/energy")
    assert s.load() == snap([203, 0, 0])  # every save kept
    assert s.diagnostic.code == energy_store.SLOT_UNREADABLE and "cannot be read" in s.diagnostic.message
    assert "cut short" not in s.diagnostic.message  # nobody's save was cut short
    os.rmdir(d + "/energy.b")  # the slot comes back: saves alternate again
    assert p.save(snap([300, 0, 0]), time.ticks_ms()) and p.error is None
    assert p.save(snap([301, 0, 0]), time.ticks_ms())
    assert sorted(os.listdir(d)) == ["energy.a", "energy.b"] and EnergyStore(d + "/energy").load() == snap([301, 0, 0])

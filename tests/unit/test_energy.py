# Energy counters: integration, import/export per phase, net across phases, never backwards.
from firmware.energy import Energy


def test_integrates_power_over_time_per_direction():
    e = Energy()
    for _ in range(3600):  # one hour of one-second windows
        e.add([1000.0, -500.0, 0.0], 1000)
    wh = e.wh()
    # Whole mWh are counted; the fraction below one is carried, so a reading is at most 1 mWh short.
    assert _near(wh["import_wh"], [1000.0, 0.0, 0.0])
    assert _near(wh["export_wh"], [0.0, 500.0, 0.0])
    assert _near([wh["import_wh_total"], wh["export_wh_total"]], [1000.0, 500.0])
    # Net: the phases are added first, as a bidirectional utility meter bills: 1000 - 500.
    assert _near([wh["net_import_wh"], wh["net_export_wh"]], [500.0, 0.0])


def _near(got, want):
    return all(0 <= w - g <= 0.001 for g, w in zip(got, want))


def test_small_windows_are_not_rounded_away():
    # 0.3 W for a day in 250 ms windows: each window brings 0.0000208 Wh.
    e = Energy()
    for _ in range(4 * 86400):
        e.add([0.3, 0.0, 0.0], 250)
    assert abs(e.wh()["import_wh"][0] - 7.2) <= 0.001


def test_large_counters_keep_counting():
    # A public meter after years: 4 GWh already counted; one more second of 230 W still counts.
    e = Energy()
    e.restore({"import_mwh": [4_000_000_000_000, 0, 0], "export_mwh": [0, 0, 0],
               "net_import_mwh": 4_000_000_000_000, "net_export_mwh": 0})
    for _ in range(3600):
        e.add([230.0, 0.0, 0.0], 1000)
    assert 0 <= 4_000_000_000_000 + 230_000 - e.import_mwh[0] <= 1


def test_restore_never_moves_a_counter_backwards():
    e = Energy()
    e.add([3600.0, 0.0, 0.0], 3_600_000)  # 3.6 kWh
    before = e.snapshot()
    e.restore({"import_mwh": [5, 0, 0], "export_mwh": [0, 0, 0], "net_import_mwh": 5, "net_export_mwh": 0})
    assert e.snapshot() == before
    e.restore({"import_mwh": [9_000_000, 1, 2], "export_mwh": [3, 4, 5], "net_import_mwh": 7, "net_export_mwh": 8})
    s = e.snapshot()
    assert s["import_mwh"] == [9_000_000, 1, 2]
    assert s["net_import_mwh"] == before["net_import_mwh"]


def test_counters_are_monotonic_whatever_the_power():
    e = Energy()
    last = e.total_mwh()
    for k in range(2000):
        w = (k % 17 - 8) * 123.4
        e.add([w, -w, w / 2], 1000)
        now = e.total_mwh()
        assert now >= last
        last = now


def test_counters_are_shown_in_kwh_exactly_however_large():
    from firmware.energy import kwh_text

    assert kwh_text(0) == "0.000" and kwh_text(19_400) == "0.019" and kwh_text(999) == "0.000"
    # 123,456.789 kWh: a Public meter's year; a single-precision float would get the last digits wrong
    assert kwh_text(123_456_789_000) == "123456.789"

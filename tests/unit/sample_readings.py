# sample_readings — one window's readings, shaped as firmware/meter.py _readings() makes them, with a
# different value in every field so a mixed-up register or topic shows (not a test module).
import math


def readings(wiring="three-phase", scale=1.0):
    phases = []
    imp = [1234567890, 22222222, 0]  # mWh: 1234.56789 kWh on L1
    exp = [0, 3333333, 444444444]
    for p in range(3):
        v = (229.5 + 1.25 * p) * scale
        i = (10.5 + 2.75 * p) * scale
        w = (2300.0 + 310.0 * p) * (1 if p < 2 else -1) * scale
        var = (120.0 - 170.0 * p) * scale
        va = v * i
        phases.append({"phase": p + 1, "vrms": v, "irms": i, "real_power_w": w, "apparent_power_va": va,
                       "reactive_power_var": var, "power_factor": w / va if va else 0.0,
                       "direction": "import" if w > 0 else "export",
                       "voltage_derived": False, "ct_unplugged": False,
                       "import_wh": imp[p] / 1000, "export_wh": exp[p] / 1000})
    energy = {"import_mwh": imp, "export_mwh": exp, "net_import_mwh": 987654321, "net_export_mwh": 12345678}
    total_w = sum(ph["real_power_w"] for ph in phases)
    return {"t_ms": 123456, "frequency_hz": 49.987 * scale, "wiring": wiring, "phases": phases,
            "total": {"real_power_w": total_w, "import_wh": sum(imp) / 1000, "export_wh": sum(exp) / 1000,
                      "net_import_wh": energy["net_import_mwh"] / 1000,
                      "net_export_wh": energy["net_export_mwh"] / 1000},
            "diagnostics": [], "judged": True, "energy_mwh": energy}


def _angle(w, var):
    return math.degrees(math.atan2(var, w))


def sdm630_registers(r):
    """Eastron's SDM630 input registers, written out from the protocol document (independently of the
    firmware's own table): register address -> the value it holds for readings r."""
    ph = r["phases"]
    e = r["energy_mwh"]
    want = {}
    for p in range(3):
        want[0x0000 + 2 * p] = ph[p]["vrms"]
        want[0x0006 + 2 * p] = ph[p]["irms"]
        want[0x000C + 2 * p] = ph[p]["real_power_w"]
        want[0x0012 + 2 * p] = ph[p]["apparent_power_va"]
        want[0x0018 + 2 * p] = ph[p]["reactive_power_var"]
        want[0x001E + 2 * p] = ph[p]["power_factor"]
        want[0x0024 + 2 * p] = _angle(ph[p]["real_power_w"], ph[p]["reactive_power_var"])
        want[0x015A + 2 * p] = e["import_mwh"][p] / 1e6
        want[0x0160 + 2 * p] = e["export_mwh"][p] / 1e6
        want[0x0166 + 2 * p] = (e["import_mwh"][p] + e["export_mwh"][p]) / 1e6
    w = sum(x["real_power_w"] for x in ph)
    var = sum(x["reactive_power_var"] for x in ph)
    va = sum(x["apparent_power_va"] for x in ph)
    want[0x002A] = sum(x["vrms"] for x in ph) / 3
    want[0x002E] = sum(x["irms"] for x in ph) / 3
    want[0x0030] = sum(x["irms"] for x in ph)
    want[0x0034] = w
    want[0x0038] = va
    want[0x003C] = var
    want[0x003E] = w / va
    want[0x0042] = _angle(w, var)
    want[0x0046] = r["frequency_hz"]
    want[0x0048] = e["net_import_mwh"] / 1e6
    want[0x004A] = e["net_export_mwh"] / 1e6
    want[0x0156] = (e["net_import_mwh"] + e["net_export_mwh"]) / 1e6
    return want

# sample_readings — one window's readings, shaped as firmware/meter.py _readings() makes them, with a
# different value in every field so a mixed-up register or topic shows (not a test module).


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

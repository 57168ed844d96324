"""truth — what an ideal meter reads on a scenario's mains, computed from the scenario itself (CPython).

The ground truth for accuracy tests: every number comes straight from the scenario's phasors, never
from the sampled tables, so a bug in the table generator cannot hide a bug in the meter.

    expected(scenario, duration_s=0.0) -> {
        "frequency_hz", "wiring",
        "phases": [...3], "total": {...},      # each conductor as a correctly installed meter reads it
        "as_wired": {"phases": [...3], "total": {...}},   # CT p against voltage p, as installed
        "wiring_faults": [{"phase", "fault"}],  # what the installation gets wrong (see below)
    }

Per phase: vrms, irms (RMS including harmonics), real_power_w = Σ_h V_h·I_h·cos(angle between them)
over matching harmonic orders, apparent_power_va = vrms·irms, reactive_power_var = fundamental only,
V1·I1·sin(angle by which I1 lags V1) (+ inductive/lagging, − capacitive/leading), power_factor =
real/apparent (0.0 when apparent is 0, as the meter reports it), import_wh / export_wh = P·t/3600 for P > 0 / P < 0.
Signs: + import (the site draws power), − export.

Loads that change over time (a phase's "cycle_pattern" or "steps", docs/SIMULATOR.md) are integrated
cycle by cycle: every mains cycle of the run carries one load whole (off, or a step's), so a phase's
energy is Σ over cycles of that cycle's P·T, the last partial cycle counted for its fraction; the
readings are then averages over the run (power and vars time-averaged, irms the RMS over the run).

Totals: real_power_w = Σ phases; import_wh / export_wh = Σ of the phases' import / export (each
phase metered on its own); net_import_wh / net_export_wh = from the sum of the three phases' power
(a phase exporting offsets another importing), i.e. max(±ΣP, 0)·t/3600.

"phases" is physics: conductor p's own voltage (even when single-phase wiring leaves the meter
without it) and current, with the CT on the right conductor the right way round. "as_wired" is what
meter input p gets as installed: the voltage the meter has for phase p (its own input; or, when
that carries nothing — single-phase wiring, a missing wire — another phase's voltage delayed by the
thirds of a period between them, see meter_voltages()) against CT p (the current of the conductor
it clamps, negated when reversed, 0 when unplugged). Neither includes
the CT's phase lead, the ADC's noise or quantisation: the meter is expected to remove those.
"""

import cmath
import math

from tools.sim import mains

POWER_KEYS = ("vrms", "irms", "real_power_w", "apparent_power_va", "reactive_power_var", "power_factor")


def _phasors(components):
    """{order: complex peak phasor} for [(order, peak, phase rad)]: x(t) = Σ |c|·sin(hωt + arg c)."""
    out = {}
    for order, peak, ang in components:
        out[order] = out.get(order, 0j) + cmath.rect(peak, ang)
    return out


def _rms(ph):
    return math.sqrt(sum(abs(c) ** 2 for c in ph.values()) / 2.0)


def _power(v, i):
    """Mean of v(t)·i(t) over a period: Σ over matching orders of ½·Re(V·conj(I))."""
    return sum((v[h] * i[h].conjugate()).real / 2.0 for h in v if h in i)


def _reading(v, i, duration_s):
    vrms, irms = _rms(v), _rms(i)
    p = _power(v, i)
    s = vrms * irms
    q = (v.get(1, 0j) * i.get(1, 0j).conjugate()).imag / 2.0  # V1·I1·sin(lag of I1 behind V1)
    hours = duration_s / 3600.0
    return {
        "vrms": vrms,
        "irms": irms,
        "real_power_w": p,
        "apparent_power_va": s,
        "reactive_power_var": q,
        "power_factor": p / s if s > 0 else 0.0,
        "import_wh": max(p, 0.0) * hours,
        "export_wh": max(-p, 0.0) * hours,
    }


def _total(phases, duration_s):
    hours = duration_s / 3600.0
    p = sum(ph["real_power_w"] for ph in phases)
    return {
        "real_power_w": p,
        "import_wh": sum(ph["import_wh"] for ph in phases),
        "export_wh": sum(ph["export_wh"] for ph in phases),
        "net_import_wh": max(p, 0.0) * hours,
        "net_export_wh": max(-p, 0.0) * hours,
    }


def _scaled(ph, k):
    return {h: c * k for h, c in ph.items()}


def _delayed(ph, periods):
    """The waveform `periods` of a period later: each order h turns by −h·2π·periods."""
    return {h: c * cmath.rect(1.0, -2.0 * math.pi * h * periods) for h, c in ph.items()}


def wiring_faults(scenario):
    """[{"phase", "fault"}] for what the installation gets wrong, named as the meter's diagnostics are.

    ct_unplugged, ct_reversed, ct_wrong_phase (with "clamps": the conductor it is really on),
    voltage_missing (a voltage input with nothing on it in three-phase wiring).
    """
    s = mains.load_scenario(scenario)
    out = []
    for p, ph in enumerate(s["phases"], 1):
        if not ph["voltage_connected"] and (s["wiring"] == "three-phase" or p == 1):
            out.append({"phase": p, "fault": "voltage_missing"})
        if not ph["ct_connected"]:
            out.append({"phase": p, "fault": "ct_unplugged"})
            continue
        if ph["ct_reversed"]:
            out.append({"phase": p, "fault": "ct_reversed"})
        if ph["ct_phase"] != p:
            out.append({"phase": p, "fault": "ct_wrong_phase", "clamps": ph["ct_phase"]})
    return out


def meter_voltages(scenario):
    """The voltage waveform the meter has for each phase: its own input, or one derived from another.

    A phase whose own input carries no voltage (single-phase wiring, or a missing wire) gets the
    voltage of the first phase that has its own, delayed by the thirds of a period between them
    (L2 = L1 delayed 1/3, L3 = L1 delayed 2/3, L1 = L2 delayed 2/3, ...): what DESIGN.md asks for.
    """
    s = mains.load_scenario(scenario)
    own = [ph["voltage_connected"] and (s["wiring"] == "three-phase" or p == 0) for p, ph in enumerate(s["phases"])]
    volts = [_phasors(mains.voltage_components(s, p)) for p in (1, 2, 3)]
    out = []
    for p in range(3):
        if own[p]:
            out.append(volts[p])
            continue
        ref = next((r for r in range(3) if r != p and own[r]), None)
        out.append({} if ref is None else _delayed(volts[ref], ((p - ref) % 3) / 3.0))
    return out


def _views(s, volts):
    """For "phases" and "as_wired": per phase (voltage phasors, conductor of the current, sign)."""
    physics = [(volts[k], k + 1, 1.0) for k in range(3)]
    wired = []
    for ph, v in zip(s["phases"], meter_voltages(s), strict=True):
        if ph["ct_connected"]:
            wired.append((v, ph["ct_phase"], -1.0 if ph["ct_reversed"] else 1.0))
        else:
            wired.append((v, None, 1.0))
    return physics, wired


def _steady(s, view, duration_s):
    out = []
    for v, c, sign in view:
        i = {} if c is None else _scaled(_phasors(mains.current_components(s, c)), sign)
        out.append(_reading(v, i, duration_s))
    return out


def _varying(s, view, duration_s):
    """Readings of loads that change over time, integrated cycle by cycle (see the module's notes)."""
    pns = mains.period_ns(s)
    period_s = pns / 1e9
    per_phase = []  # per phase: (conductor, [(first cycle, reading of that load)], voltage phasors)
    for v, c, sign in view:
        if c is None:
            per_phase.append((None, _reading(v, {}, 0.0), v))
            continue
        steps = [(first, _reading(v, _scaled(_phasors(mains.current_components(s, c, st)), sign), 0.0))
                 for first, st in mains.load_states(s, c)]
        per_phase.append((c, steps, v))
    full = int(duration_s // period_s)
    last = duration_s / period_s - full  # the fraction of the last, partial cycle inside the run
    acc = [{"p": 0.0, "q": 0.0, "i2": 0.0, "imp": 0.0, "exp": 0.0} for _ in range(3)]
    net_imp = net_exp = 0.0
    idx = [0, 0, 0]
    k = 0
    while k < full + (1 if last > 0 else 0):
        w = period_s if k < full else last * period_s  # seconds of this cycle inside the run
        total = 0.0
        for n, (c, steps, _) in enumerate(per_phase):
            if c is None:
                continue
            while idx[n] + 1 < len(steps) and k >= steps[idx[n] + 1][0]:
                idx[n] += 1
            if not mains.cycle_on(s["phases"][c - 1]["cycle_pattern"], k):
                continue
            r = steps[idx[n]][1]
            a = acc[n]
            a["p"] += r["real_power_w"] * w
            a["q"] += r["reactive_power_var"] * w
            a["i2"] += r["irms"] ** 2 * w
            if r["real_power_w"] > 0:
                a["imp"] += r["real_power_w"] * w
            else:
                a["exp"] -= r["real_power_w"] * w
            total += r["real_power_w"]
        if total > 0:
            net_imp += total * w
        else:
            net_exp -= total * w
        k += 1
    out = []
    for n, (c, steps, v) in enumerate(per_phase):
        vrms = (steps if c is None else steps[0][1])["vrms"]
        if duration_s <= 0:  # no run to average over: the load in cycle 0
            on = c is not None and mains.cycle_on(s["phases"][c - 1]["cycle_pattern"], 0)
            out.append(dict(steps[0][1]) if on else _reading(v, {}, 0.0))
            continue
        a = acc[n]
        p, irms = a["p"] / duration_s, math.sqrt(a["i2"] / duration_s)
        sva = vrms * irms
        out.append({"vrms": vrms, "irms": irms, "real_power_w": p, "apparent_power_va": sva,
                    "reactive_power_var": a["q"] / duration_s, "power_factor": p / sva if sva > 0 else 0.0,
                    "import_wh": a["imp"] / 3600.0, "export_wh": a["exp"] / 3600.0})
    return out, net_imp / 3600.0, net_exp / 3600.0


def expected(scenario, duration_s=0.0):
    """The true readings for a scenario (a raw or loaded scenario dict); energy over duration_s
    from the start of the run (mains cycle 0)."""
    s = mains.load_scenario(scenario)
    volts = [_phasors(mains.voltage_components(s, p)) for p in (1, 2, 3)]
    physics, wired = _views(s, volts)
    if mains.time_varying(s):
        phases, net_imp, net_exp = _varying(s, physics, duration_s)
        as_wired, w_imp, w_exp = _varying(s, wired, duration_s)
        total, w_total = _total(phases, duration_s), _total(as_wired, duration_s)
        total.update(net_import_wh=net_imp, net_export_wh=net_exp)
        w_total.update(net_import_wh=w_imp, net_export_wh=w_exp)
    else:
        phases, as_wired = _steady(s, physics, duration_s), _steady(s, wired, duration_s)
        total, w_total = _total(phases, duration_s), _total(as_wired, duration_s)
    return {
        "frequency_hz": 1e9 / mains.period_ns(s),
        "wiring": s["wiring"],
        "phases": phases,
        "total": total,
        "as_wired": {"phases": as_wired, "total": w_total},
        "wiring_faults": wiring_faults(s),
    }

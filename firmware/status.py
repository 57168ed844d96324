# status — the device's state as one document: what the setup page shows, and GET /api/status.
#
# Plain data only (numbers rounded to what the page shows, words an installer reads), built from
# the parts that own it: the meter's latest readings, the uploader and its spool, the links, the
# settings in force. The page and the JSON come from the same document, so they never disagree.

import time

# The uploader's states in an installer's words (firmware/uploader.py sets status["state"]).
UPLOAD_WORDS = {
    "starting": "Starting: the first upload has not been tried yet.",
    "ok": "Readings reach the cloud.",
    "retrying": "Readings do not reach the cloud just now (%s). The meter keeps trying; "
                "records wait on the meter meanwhile.",
    "waiting": "Readings wait on the meter: %s.",
    "waiting_clock": "Waiting for the clock to be set from the internet (NTP) before the first secure upload.",
    "credentials": "The cloud refused this meter (pairing or credentials). Pair it in the cloud with the "
                   "serial number and PIN below; the meter asks again every 15 minutes.",
}


def upload(uploader, now_s=None):
    st = uploader.status
    state = st["state"]
    words = UPLOAD_WORDS.get(state)
    if state == "off" or words is None:
        message = "Uploads are off: %s." % st["message"].split(": uploads are off")[0]
    elif "%s" in words:
        message = words % st["message"]
    else:
        message = words
    last = st.get("last_ok_s")
    now_s = time.time() if now_s is None else now_s
    return {"state": state, "message": message,
            "pending_records": uploader.spool.pending(), "lost_records": uploader.spool.lost,
            "rejected_records": uploader.spool.rejected,
            "last_success_age_s": None if last is None else max(0, int(now_s - last))}


def readings(meter):
    """The latest window, rounded as shown: volts to 0.1, amps to 0.01, watts to 1. A phase whose CT
    is unplugged has no current or power (None): its input reads noise, not a load."""
    r = meter.readings
    if not r:
        return None
    phases = []
    for ph in r["phases"]:
        no_ct = ph.get("ct_unplugged", False)
        phases.append({"phase": ph["phase"], "vrms": round(ph["vrms"], 1), "voltage_derived": ph["voltage_derived"],
                       "irms": None if no_ct else round(ph["irms"], 2),
                       "real_power_w": None if no_ct else round(ph["real_power_w"]),
                       "direction": "no CT" if no_ct else ph["direction"], "ct_unplugged": no_ct})
    return {"wiring": r["wiring"], "frequency_hz": round(r["frequency_hz"], 2), "phases": phases,
            "total_w": round(r["total"]["real_power_w"]), "judged": r.get("judged", True)}


def fix_fields(fix, ct):
    """A diagnostic's fix as the form fields that set it: always a target, never a toggle."""
    if "ct_reversed" in fix:
        return {"ct": ct, "reversed": 1 if fix["ct_reversed"][ct - 1] else 0}
    if "ct_phase" in fix:
        return {"ct_phase": ",".join(str(p) for p in fix["ct_phase"])}
    return None


def diagnostics(meter):
    r = meter.readings
    out = []
    for d in (r["diagnostics"] if r else ()):
        fix = d.get("fix")
        out.append({"code": d["code"], "phase": d["phase"], "ct": d.get("ct"), "message": d["message"],
                    "fix": fix_fields(fix, d.get("ct")) if fix else None})
    return out


def fixes(settings):
    """The software fixes in force, each with the form fields that undo it."""
    out = []
    for c, rev in enumerate(settings["ct_reversed"]):
        if rev:
            out.append({"code": "ct_inverted", "ct": c + 1,
                        "message": "CT %d is inverted in software (it is fitted the wrong way round)." % (c + 1),
                        "undo": {"ct": c + 1, "reversed": 0}})
    ct_phase = list(settings["ct_phase"])
    if ct_phase != [1, 2, 3]:
        moved = ", ".join("CT %d reads L%d" % (c + 1, p) for c, p in enumerate(ct_phase) if p != c + 1)
        out.append({"code": "ct_remapped", "ct": None,
                    "message": "CTs remapped in software: %s." % moved, "undo": {"ct_phase": "1,2,3"}})
    return out


def _link_words(via, ssid, lan, join):
    if join is not None and join["state"] == "connecting":
        return "Connecting to %s..." % join["ssid"]
    if via == "lan":
        return "Online over Ethernet (address %s)" % lan["ip"]
    if via == "wifi":
        return "Online over WiFi (%s)" % ssid
    if ssid:
        return "Not connected: trying WiFi %s" % ssid
    return "Not connected: choose a WiFi network below"


def _lan_words(state, ip, error):
    if state == "connected":
        return "connected, address %s (used instead of WiFi)" % ip
    return error if state == "failed" else state


def link_doc(net, store, join=None):
    """The links, each with the sentence the page shows for it (its script shows the same)."""
    lan_state, lan_ip = net.lan_status()
    error = net.lan_error if lan_state == "failed" else None
    lan = {"state": lan_state, "ip": lan_ip, "error": error, "message": _lan_words(lan_state, lan_ip, error)}
    ssid = store.config["wifi"]["ssid"] or None
    return {"online_via": net.online_via, "ap_up": net.ap_up, "wifi_ssid": ssid, "lan": lan,
            "message": _link_words(net.online_via, ssid, lan, join)}


def document(meter, uploader, net, store, join=None):
    """Everything GET /api/status returns."""
    notices = []
    diag = store.diagnostic
    if diag is not None and diag.code in ("CONFIG_RESTORED", "CONFIG_RESET"):  # not NEW or MIGRATED: all is well
        notices.append({"code": diag.code, "message": "Settings: %s." % diag.message.rstrip(".")})
    return {"readings": readings(meter), "upload": upload(uploader), "links": link_doc(net, store, join),
            "join": join, "fixes": fixes(meter.settings), "diagnostics": diagnostics(meter), "notices": notices}

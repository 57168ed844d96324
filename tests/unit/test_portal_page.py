# The setup page and /api/status: what an installer reads, escaped, in pieces; fixes as targets; notices once.
from firmware import config, identity, links, portal, portal_page, status
from firmware.board import Board
from firmware.identity import IdentityStatus
from firmware.schema import Diagnostic
from firmware.spool import Spool
from firmware.uploader import Uploader
from support import tmpdir


class _Meter:
    def __init__(self, readings=None, **settings):
        self.readings = readings
        self.settings = config.section("meter")
        self.settings.update(settings)
        self.changed = []

    def on_settings(self, changed):  # as firmware/meter.py's: the changed "meter" keys, taken
        if "meter" in changed:
            self.change_settings(changed["meter"])
        return ["meter." + k for k in changed.get("meter", ())]

    def change_settings(self, changes):
        self.settings.update(changes)
        self.changed.append(changes)
        if self.readings is not None:
            self.readings["diagnostics"] = []
            self.readings["judged"] = False


def _ident():
    return IdentityStatus(identity.derive(b"k" * 32, "MDTEST0001"))


def _portal(ident=None, meter=None, upload=None):
    folder = tmpdir()
    store = config.ConfigStore(path=folder + "/config.json", log=lambda m: None)
    store.load()
    board = Board()
    st = ident or IdentityStatus(None, Diagnostic("IDENTITY_MISSING", "no device identity <here>"))
    net = links.Links(board, store, st, log=lambda m: None)
    spool = Spool(folder + "/spool", log=lambda m: None)
    up = Uploader(config.section("upload", upload), st, spool, log=lambda m: None)
    return portal.Portal(board.sta, store, st, meter or _Meter(), net, up, log=lambda m: None)


def _html(p, n=None):
    return b"".join(p.page(n).body).decode()


def _phase(n, vrms=230.0, irms=10.0, w=2200.0, derived=False, unplugged=False):
    return {"phase": n, "vrms": vrms, "irms": irms, "real_power_w": w, "voltage_derived": derived,
            "direction": "import" if w > 1 else "idle", "ct_unplugged": unplugged}


def _readings(phases=None, diags=(), wiring="three-phase"):
    return {"wiring": wiring, "frequency_hz": 50.0, "phases": phases or [_phase(1), _phase(2), _phase(3)],
            "total": {"real_power_w": 6600.0}, "diagnostics": list(diags), "judged": True}


def test_scan_list_keeps_the_strongest_of_each_name_and_drops_hidden_and_undecodable_ones():
    raw = [(b"Home", b"", 6, -70, 3, False), (b"Home", b"", 6, -50, 3, False), (b"", b"", 1, -40, 3, True),
           (b"\xff\xfe", b"", 1, -30, 3, False), (b"Cafe", b"", 1, -80, 0, False)]
    assert portal.scan_list(raw) == [("Home", -50, True), ("Cafe", -80, False)]


def test_every_scanned_name_is_escaped_in_the_page():
    p = _portal()
    p.networks = [("<script>alert(1)</script>", -50, True), ('"><img src=x onerror=alert(1)>', -60, False)]
    html = _html(p)
    assert "<script>alert" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "no device identity &lt;here&gt;" in html  # the refusal text, escaped


def test_page_needs_no_external_assets():
    html = _html(_portal(_ident()))
    for bad in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert bad not in html, bad


def test_the_page_goes_out_in_small_pieces_with_its_length_announced():
    p = _portal(_ident(), _Meter(_readings(diags=[{"code": "ct_reversed", "phase": 2, "ct": 2, "message": "m" * 200,
                                                   "fix": {"ct_reversed": [False, True, False]}}]),
                                 ct_reversed=[True, False, True], ct_phase=[2, 1, 3]))
    p.networks = [("net%d" % i, -50 - i, True) for i in range(portal.MAX_NETWORKS)]  # the longest page
    p.say("ok", "Saved." * 50)
    r = p.page(p.notice[0])
    pieces = list(r.body)
    size = sum(len(b) for b in pieces)
    assert int(r.headers["Content-Length"]) == size > 8000
    # A fragmented heap may lack a 4 KB block but not a 1.5 KB one: no piece is ever the whole page.
    assert max(len(b) for b in pieces) <= 1536


def test_upload_status_in_plain_words_with_records_waiting_and_lost():
    p = _portal(_ident(), upload={"url": "https://cloud.example/", "ca_cert": "AAAA"})
    up = p.uploader
    assert up.enabled
    doc = status.upload(up, now_s=1000)
    assert doc == {"state": "starting", "message": status.UPLOAD_WORDS["starting"], "pending_records": 0,
                   "lost_records": 0, "rejected_records": 0, "last_success_age_s": None}
    for _ in range(3):
        up.spool.add({"t": None})
    up.spool.lost = 4
    up.status.update({"state": "credentials", "last_ok_s": 900})
    doc = status.upload(up, now_s=1000)
    assert doc["pending_records"] == 3 and doc["lost_records"] == 4 and doc["last_success_age_s"] == 100
    assert "refused this meter" in doc["message"] and "serial number and PIN" in doc["message"]
    up.status.update({"state": "retrying", "message": "the server answered HTTP 503"})
    assert "(the server answered HTTP 503)" in status.upload(up)["message"]
    html = _html(p)
    assert "<dd id=pending>3 records</dd>" in html and "<dd id=lost>4 records</dd>" in html
    assert "HTTP 503" in html and "class='bad'" in html


def test_uploads_off_says_why():
    doc = status.upload(_portal(_ident()).uploader)
    assert doc["state"] == "off" and doc["message"] == "Uploads are off: no upload URL configured."


def test_a_derived_voltage_is_marked_and_an_unplugged_ct_shows_a_dash_not_a_reading():
    diags = [{"code": "voltage_missing", "phase": 2, "message": "No voltage on L2."},
             {"code": "ct_unplugged", "phase": 3, "ct": 3, "message": "The current clamp on L3 is not plugged in."}]
    phases = [_phase(1), _phase(2, vrms=229.96, derived=True), _phase(3, irms=0.013, w=-1.4, unplugged=True)]
    p = _portal(_ident(), _Meter(_readings(phases, diags)))
    doc = p.status_doc()
    l2, l3 = doc["readings"]["phases"][1], doc["readings"]["phases"][2]
    assert l2["voltage_derived"] is True and l2["vrms"] == 230.0
    assert l3["irms"] is None and l3["real_power_w"] is None and l3["ct_unplugged"] and l3["direction"] == "no CT"
    html = _html(p)
    assert "<td class=derived>230.0*</td>" in html and "computed from L1" in html
    assert "<tr><th>L3</th><td>230.0</td><td>&mdash;</td><td>&mdash;</td><td>no CT</td></tr>" in html
    assert "-1 W" not in html and "idle" not in html
    # Fixed decimals, whatever the reading: the columns never jitter.
    assert "<td>10.00</td><td>2200</td>" in html


def test_without_a_derived_phase_the_note_is_hidden():
    html = _html(_portal(_ident(), _Meter(_readings())))
    assert "<p class=note id=derived hidden>" in html


def test_a_fix_sets_a_target_so_a_second_tap_changes_nothing():
    m = _Meter(_readings(diags=[{"code": "ct_reversed", "phase": 2, "ct": 2, "message": "CT 2 is on backwards.",
                                 "fix": {"ct_reversed": [False, True, False]}}]))
    p = _portal(_ident(), m)
    fix = p.status_doc()["diagnostics"][0]["fix"]
    assert fix == {"ct": 2, "reversed": 1}
    form = dict((k, str(v)) for k, v in fix.items())
    assert p.apply_fix(form)[0] and p.apply_fix(form)[0]  # the same form twice: the same target
    assert m.settings["ct_reversed"] == [False, True, False]
    assert p.store.config["meter"]["ct_reversed"] == [False, True, False]  # saved
    assert m.readings["diagnostics"] == []  # the old judgement is gone from the very next page
    html = _html(p)
    assert "Checking the wiring again" in html and ">Fix it</button>" not in html


def test_fixes_in_force_are_listed_each_with_an_undo():
    m = _Meter(_readings(), ct_reversed=[True, False, False], ct_phase=[2, 1, 3])
    p = _portal(_ident(), m)
    fixes = p.status_doc()["fixes"]
    assert [f["code"] for f in fixes] == ["ct_inverted", "ct_remapped"]
    assert fixes[0]["undo"] == {"ct": 1, "reversed": 0} and fixes[1]["undo"] == {"ct_phase": "1,2,3"}
    assert "CT 1 reads L2, CT 2 reads L1" in fixes[1]["message"]
    html = _html(p)
    assert html.count(">Undo</button>") == 2
    for f in fixes:
        ok, _ = p.apply_fix(dict((k, str(v)) for k, v in f["undo"].items()))
        assert ok
    assert m.settings["ct_reversed"] == [False, False, False] and m.settings["ct_phase"] == [1, 2, 3]
    assert p.status_doc()["fixes"] == []
    assert "None: every CT is read as it is fitted." in _html(p)


def test_a_bad_fix_form_is_refused_and_changes_nothing():
    m = _Meter(_readings())
    p = _portal(_ident(), m)
    for form in ({"ct": "4", "reversed": "1"}, {"ct": "1", "reversed": "yes"}, {"ct_phase": "1,1,3"},
                 {"ct_phase": "x"}, {}):
        ok, message = p.apply_fix(form)
        assert not ok and "not valid" in message, form
    assert m.changed == [] and m.settings["ct_reversed"] == [False, False, False]


def test_a_notice_shows_on_its_own_url_only():
    p = _portal(_ident())
    url = p.say("bad", "Wrong password for <HomeNet>.", "HomeNet")
    n = int(url.split("=")[1])
    assert "Wrong password for &lt;HomeNet&gt;." in _html(p, n)
    assert "Wrong password" not in _html(p)  # the plain page: no stale message
    p.say("ok", "Something else.")
    assert "Wrong password" not in _html(p, n)  # a later form's notice replaces it


def test_while_joining_the_page_says_so_and_comes_back_by_itself():
    p = _portal(_ident())
    p.joining = True
    n = 7
    p.join_notice = [n, "busy", "Connecting to HomeNet...", "HomeNet"]
    p.say("bad", "Another form meanwhile.")
    html = _html(p, n)
    assert "<meta http-equiv=refresh content='2;url=/?n=%d'>" % n in html
    assert "Connecting to HomeNet" in html and 'action="/connect"' not in html  # no second attempt meanwhile
    assert p.start_join("Other", "password1") == "/?n=7"  # a second tap shows the attempt under way
    p.joining = False
    p.join_notice = [n, "ok", "Connected to HomeNet.", "HomeNet"]
    html = _html(p, n)
    assert "http-equiv=refresh" not in html and "Connected to HomeNet." in html
    assert "Last attempt" not in html  # on top already: not twice


def test_a_page_opened_anywhere_during_a_join_comes_back_to_its_outcome_which_stays_until_the_next():
    p = _portal(_ident())
    p.joining = True
    p.join_notice = [12, "busy", "Connecting to HomeNet...", "HomeNet"]
    html = _html(p)  # plain "/": the phone dropped off the setup network and came back
    assert "<meta http-equiv=refresh content='2;url=/?n=12'>" in html and "join it again" in html
    p.joining = False
    p.join_notice = [12, "bad", "Wrong password for HomeNet.", "HomeNet"]
    html = _html(p)
    assert "http-equiv=refresh" not in html
    assert "<p id=last class='msg bad'>Last attempt: Wrong password for HomeNet.</p>" in html


def test_a_join_that_breaks_unexpectedly_ends_as_failed_not_connecting_for_ever():
    import asyncio

    from simworld import world

    world.set_realtime()  # asyncio waits in real time here
    p = _portal(_ident())

    async def broken(ssid, password, poll_ms=250):
        raise MemoryError()

    p.join = broken
    p.joining = True
    p.join_notice = [3, "busy", "Connecting to HomeNet...", "HomeNet"]
    try:
        asyncio.run(p._join("HomeNet", "password1"))
    finally:
        asyncio.new_event_loop()
    assert not p.joining and p.join_doc()["state"] == "failed" and p.join_notice[1] == "bad"
    assert "MemoryError" in p.join_notice[2] and "nothing was saved" in p.join_notice[2]


def test_a_factory_reset_drops_the_software_fixes_from_the_running_meter_too():
    m = _Meter(_readings(), ct_reversed=[True, False, False], ct_phase=[2, 1, 3])
    p = _portal(_ident(), m)
    p.store.update({"meter": {"ct_reversed": [True, False, False], "ct_phase": [2, 1, 3]},
                    "wifi": {"ssid": "HomeNet", "password": "correct horse"}})
    p.joining = True
    ok, message = p.factory_reset()
    assert not ok and "nothing was changed" in message and p.store.config["wifi"]["ssid"] == "HomeNet"
    p.joining = False
    ok, message = p.factory_reset()
    assert ok and p.store.config["wifi"]["ssid"] == "" and p.store.config["meter"]["ct_reversed"] == [False] * 3
    assert m.settings["ct_reversed"] == [False, False, False] and m.settings["ct_phase"] == [1, 2, 3]
    assert p.status_doc()["fixes"] == []


def test_after_joining_the_installer_is_told_what_happens_next():
    p = _portal(_ident())
    words = p.next_steps("HomeNet")
    assert "Measurement Device_MDTEST0001 closes about 3 minutes after the meter is online" in words
    assert "press the meter's button briefly" in words


def test_a_damaged_settings_file_is_shown_on_the_page():
    p = _portal(_ident())
    p.store.diagnostic = Diagnostic(config.RESTORED, "config.json is not valid JSON: using the last good copy")
    doc = p.status_doc()
    assert doc["notices"][0]["code"] == "CONFIG_RESTORED"
    assert "using the last good copy" in _html(p)


def test_the_status_document_has_what_the_page_shows():
    doc = _portal(_ident(), _Meter(_readings())).status_doc()
    for key in ("readings", "upload", "links", "fixes", "diagnostics", "join", "notices"):
        assert key in doc, key
    for key in ("state", "message", "pending_records", "lost_records", "last_success_age_s"):
        assert key in doc["upload"], key
    for key in ("online_via", "ap_up", "wifi_ssid"):
        assert key in doc["links"], key


def test_ages_and_counts_in_words():
    assert portal_page.age_words(None) == "never" and portal_page.age_words(5) == "5 s ago"
    assert portal_page.age_words(600) == "10 min ago" and portal_page.age_words(3 * 3600) == "3 h ago"
    assert portal_page.records_words(0) == "none" and portal_page.records_words(1) == "1 record"


def test_ethernet_that_did_not_start_says_why_on_the_page():
    from simworld import world

    world.lan_fault = True  # no PHY answers: network.LAN raises OSError
    p = _portal(_ident())
    p.store.update({"lan": {"enabled": True}})
    lan = p.status_doc()["links"]["lan"]
    assert lan["state"] == "failed" and "Ethernet did not start" in lan["error"]
    assert "<b id=lan>Ethernet did not start (" in _html(p)

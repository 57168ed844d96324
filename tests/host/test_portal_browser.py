# The installer's phone in real headless Chromium (360x640 and 390x844 viewports, light and dark), against
# the device served by `python -m tools.sim portal` on 127.0.0.1. Screenshots go to build/screenshots/;
# docs/screenshots/ holds copies of them (docs/INSTALL.md shows them).
import json
import os
import shutil
import tempfile

import pytest

from tests.host.cdp import Browser
from tests.host.portal_sim import PortalSim
from tools import mp

SHOTS = os.path.join(mp.ROOT, "build", "screenshots")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCENARIOS = os.path.join(mp.ROOT, "tools", "sim", "scenarios")
PHONES = {"small": (360, 640), "large": (390, 844)}

# Every word on the page that a line break splits in two (scanned network names may wrap anywhere:
# they can be 32 characters without a space).
SPLIT_WORDS = """(() => { const bad = []; const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let n; while ((n = w.nextNode())) { if (n.parentElement.closest('script,.ssid')) continue;
    const re = /\\S+/g; let m; while ((m = re.exec(n.data))) { const r = document.createRange();
      r.setStart(n, m.index); r.setEnd(n, m.index + m[0].length);
      const tops = new Set([...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top)));
      if (tops.size > 1) bad.push(m[0]); } } return bad; })()"""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium) when run as root")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    b = Browser(CHROMIUM, profile)
    yield b
    b.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def sim(tmp_path, request):
    scenario = getattr(request, "param", None)  # a bundled scenario's name, by indirect parametrization
    extra = ("--scenario", os.path.join(SCENARIOS, scenario + ".json")) if scenario else ()
    s = PortalSim(str(tmp_path / "device"), extra=extra)
    yield s
    s.stop()


def _msg(page):
    return page.eval("(document.getElementById('msg')||{}).textContent||''")


def _fits_a_phone(page, width):
    assert page.eval("document.documentElement.scrollWidth") <= width  # nothing sticks out sideways
    assert page.eval(SPLIT_WORDS) == []  # and no word is split across two lines
    # Touch targets: every button and radio row at least 44 px high (Apple's and Google's guidance).
    small = page.eval("[...document.querySelectorAll('button, label.net')].filter(e => e.offsetParent)"
                      ".map(e => e.getBoundingClientRect().height).filter(h => h < 44)")
    assert small == []


def _joins(sim):
    return sim.output().count("portal: joining a network:")


@pytest.mark.parametrize("phone", sorted(PHONES))
def test_phone_flow_scan_bad_password_progress_then_good_password_saved(browser, sim, phone):
    width, height = PHONES[phone]
    page = browser.page(width, height)
    page.navigate(sim.base + "/")
    assert page.eval("document.title") == "Meter setup"
    names = page.eval("[...document.querySelectorAll('#nets .ssid')].map(e => e.textContent)")
    assert names[0] == "HomeNet" and "<script>alert(1)</script>" in names and len(names) == 5
    _fits_a_phone(page, width)
    assert page.eval("document.getElementById('cloud').textContent").startswith("Uploads are off")
    page.screenshot(os.path.join(SHOTS, "%s-setup-page.png" % phone))

    page.eval("document.getElementById('show').click()")
    assert page.eval("document.getElementById('pw').type") == "text"  # show password
    page.eval("document.getElementById('show').click()")
    assert page.eval("document.getElementById('pw').type") == "password"

    page.act_and_wait_load("document.querySelector('input[value=\"HomeNet\"]').click();"
                           "document.getElementById('pw').value='not the password';"
                           "document.querySelector('form[action=\"/connect\"] button').click()")
    # The page answers at once and says it is connecting, instead of hanging while the radio tries
    # (read on a loaded page: it reloads itself every 2 s meanwhile).
    page.wait_for("(document.getElementById('msg')||{textContent:''}).textContent.indexOf('Connecting to HomeNet')"
                  " >= 0 && !document.querySelector('form[action=\"/connect\"]')", timeout_s=5)
    page.screenshot(os.path.join(SHOTS, "%s-connecting.png" % phone))
    page.wait_for("document.getElementById('msg').className.indexOf('busy') < 0")  # it reloads by itself
    msg = _msg(page)
    assert "Could not log in to HomeNet: the password is probably wrong" in msg and "nothing was saved" in msg
    assert page.eval("document.querySelector('input[value=\"HomeNet\"]').checked")  # still chosen
    _fits_a_phone(page, width)
    page.screenshot(os.path.join(SHOTS, "%s-wrong-password.png" % phone))
    assert not os.path.exists(os.path.join(sim.state_dir, "config.json"))  # nothing saved

    page.act_and_wait_load("document.querySelector('input[value=\"HomeNet\"]').click();"
                           "document.getElementById('pw').value='correct horse';"
                           "document.querySelector('form[action=\"/connect\"] button').click()")
    page.wait_for("document.getElementById('msg').className.indexOf('busy') < 0")
    msg = _msg(page)
    assert "Connected to HomeNet" in msg and "192.168.1.77" in msg
    assert "closes about 3 minutes after the meter is online" in msg and "press the meter's button" in msg
    page.screenshot(os.path.join(SHOTS, "%s-connected.png" % phone))
    with open(os.path.join(sim.state_dir, "config.json")) as f:
        assert json.load(f)["wifi"] == {"ssid": "HomeNet", "password": "correct horse"}
    # A reload shows the outcome again and posts nothing (Post/Redirect/Get).
    joins = _joins(sim)
    page.act_and_wait_load("location.reload()")
    assert "Connected to HomeNet" in _msg(page) and _joins(sim) == joins
    # The network's status follows, from the page's own refresh.
    page.wait_for("document.getElementById('net').textContent.indexOf('HomeNet') >= 0")


def test_installer_view_live_readings_with_fixed_decimals_pairing_facts_and_dark_mode(browser, sim):
    page = browser.page(*PHONES["large"])
    page.navigate(sim.base + "/")
    with open(os.path.join(sim.state_dir, "identity.json")) as f:
        ident = json.load(f)
    assert page.eval("document.getElementById('serial').textContent") == ident["serial"]
    assert page.eval("document.getElementById('pin').textContent") == ident["pin"]
    # The live table, refreshed by the page's own script (a reading in every row).
    page.wait_for("[...document.querySelectorAll('#live tr')].slice(1).every(r => r.cells[1].textContent != '\u2014')")
    cells = page.eval("[...document.querySelectorAll('#live tr')].slice(1)"
                      ".map(r => [...r.cells].map(c => c.textContent))")
    for row in cells:
        assert 220 < float(row[1]) < 240 and float(row[2]) > 5 and row[4] == "import"
        assert len(row[1].split(".")[1]) == 1 and len(row[2].split(".")[1]) == 2 and "." not in row[3]
    assert page.eval("document.getElementById('derived').hidden")  # no derived phase: no footnote
    _fits_a_phone(page, PHONES["large"][0])
    page.color_scheme("dark")
    page.navigate(sim.base + "/")
    bg = page.eval("getComputedStyle(document.body).backgroundColor")
    assert sum(int(x) for x in bg[bg.index("(") + 1:-1].split(",")[:3]) < 150, bg  # dark, for a dark cupboard
    page.screenshot(os.path.join(SHOTS, "large-dark.png"))
    page.color_scheme("light")


@pytest.mark.parametrize("phone", sorted(PHONES))
@pytest.mark.parametrize("sim", ["reversed-ct"], indirect=True)
def test_a_reversed_ct_is_fixed_with_one_tap_shown_in_force_and_undone(browser, sim, phone):
    page = browser.page(*PHONES[phone])
    for _ in range(40):  # the first windows' readings, then the diagnosis
        page.navigate(sim.base + "/")
        if page.eval("document.querySelectorAll('#diags form').length"):
            break
        page.eval("new Promise(r => setTimeout(r, 250))")
    assert "L2" in page.eval("document.getElementById('diags').textContent")
    assert page.eval("document.querySelectorAll('#live tr')[2].cells[4].textContent") == "export"
    assert page.eval("document.getElementById('fixes').textContent") == "None: every CT is read as it is fitted."
    page.eval("document.getElementById('meter').scrollIntoView()")
    _fits_a_phone(page, PHONES[phone][0])
    page.screenshot(os.path.join(SHOTS, "%s-wiring-diagnostic.png" % phone))
    page.act_and_wait_load("document.querySelector('#diags form button').click()")
    assert page.eval("location.pathname + location.search").startswith("/?n=")  # redirected: a reload posts nothing
    assert _msg(page).startswith("CT 2 is now inverted in software.")
    # The page after the fix shows no stale diagnostic and no second Fix button...
    assert page.eval("document.querySelectorAll('#diags form').length") == 0
    # ...and lists the fix in force, with its Undo.
    assert "CT 2 is inverted in software" in page.eval("document.getElementById('fixes').textContent")
    assert page.eval("document.querySelector('#fixes button').textContent") == "Undo"
    with open(os.path.join(sim.state_dir, "config.json")) as f:
        assert json.load(f)["meter"]["ct_reversed"] == [False, True, False]
    # The open page catches up by itself (the script refreshes every 3 s).
    page.wait_for("document.getElementById('diags').textContent == 'Wiring looks right.'")
    assert page.eval("document.querySelectorAll('#live tr')[2].cells[4].textContent") == "import"
    page.eval("document.getElementById('meter').scrollIntoView()")
    _fits_a_phone(page, PHONES[phone][0])
    page.screenshot(os.path.join(SHOTS, "%s-fix-in-force.png" % phone))
    # Tapping the same fix again (an old tab, a double tap) sets the same target: nothing flips back.
    page.eval("fetch('/fix', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},"
              " body: 'ct=2&reversed=1'})")
    with open(os.path.join(sim.state_dir, "config.json")) as f:
        assert json.load(f)["meter"]["ct_reversed"] == [False, True, False]
    page.act_and_wait_load("document.querySelector('#fixes button').click()")
    assert "CT 2 is read as fitted again" in _msg(page)
    with open(os.path.join(sim.state_dir, "config.json")) as f:
        assert json.load(f)["meter"]["ct_reversed"] == [False, False, False]
    page.wait_for("document.querySelectorAll('#diags form').length == 1")  # reversed again, so reported again


@pytest.mark.parametrize("phone", sorted(PHONES))
@pytest.mark.parametrize("sim", ["wiring-faults"], indirect=True)
def test_a_derived_voltage_is_marked_and_an_unplugged_ct_shows_a_dash(browser, sim, phone):
    page = browser.page(*PHONES[phone])
    page.navigate(sim.base + "/")
    page.wait_for("document.getElementById('diags').textContent.indexOf('not plugged in') >= 0")
    page.wait_for("document.querySelectorAll('#live tr')[2].cells[1].className == 'derived'")  # the script's refresh
    rows = page.eval("[...document.querySelectorAll('#live tr')].slice(1)"
                     ".map(r => [...r.cells].map(c => c.textContent))")
    assert rows[1][1].endswith("*")
    assert page.eval("document.querySelectorAll('#live tr')[2].cells[1].className") == "derived"
    assert not page.eval("document.getElementById('derived').hidden")
    assert "No voltage on L2" in page.eval("document.getElementById('diags').textContent")
    assert rows[2][2] == "\u2014" and rows[2][3] == "\u2014" and rows[2][4] == "no CT"
    _fits_a_phone(page, PHONES[phone][0])
    page.eval("document.getElementById('meter').scrollIntoView()")
    page.screenshot(os.path.join(SHOTS, "%s-derived-and-unplugged.png" % phone))


@pytest.mark.parametrize("phone", sorted(PHONES))
def test_calibration_from_the_phone_with_its_outcome_and_undo(browser, sim, phone):
    from tools.sim import runner, truth

    with open(runner.scenario_path("three-phase-balanced")) as f:  # what `tools.sim portal` plays by default
        want = truth.expected(json.load(f))["phases"]
    page = browser.page(*PHONES[phone])
    page.navigate(sim.base + "/")
    page.eval("document.getElementById('cal').open = true; document.getElementById('cal').scrollIntoView()")
    _fits_a_phone(page, PHONES[phone][0])
    page.screenshot(os.path.join(SHOTS, "%s-calibrate.png" % phone))
    # What the installer types: the multimeter on L1 (a comma as the decimal point, as many phones
    # give it), the clamp meter on CT 1's conductor.
    page.eval("document.getElementById('v1').value = '%s'; document.getElementById('ct').value = '1';"
              "document.getElementById('amps').value = '%.2f'" % (("%.1f" % want[0]["vrms"]).replace(".", ","),
                                                                  want[0]["irms"]))
    page.act_and_wait_load("document.querySelector('#cal form button').click()", timeout=40)
    assert _msg(page).startswith("Calibrated: L1 read "), _msg(page)
    assert page.eval("document.querySelectorAll('#cal button').length") == 2  # Calibrate, and Undo
    with open(os.path.join(sim.state_dir, "config.json")) as f:
        assert "voltage" in json.load(f)["meter"]["calibration"]
    page.eval("document.getElementById('cal').open = true; document.getElementById('cal').scrollIntoView()")
    _fits_a_phone(page, PHONES[phone][0])
    page.act_and_wait_load("document.querySelectorAll('#cal button')[1].click()")
    assert _msg(page) == "The last calibration is undone."
    with open(os.path.join(sim.state_dir, "config.json")) as f:
        assert json.load(f)["meter"]["calibration"] == {}

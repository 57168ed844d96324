# The installer's phone flow in real headless Chromium at a 360 px phone viewport, against the portal
# served by `python -m tools.sim portal` on 127.0.0.1. Screenshots go to build/screenshots/.
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


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium) when run as root")
    sim = PortalSim(str(tmp_path_factory.mktemp("portal-browser")))
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    browser = Browser(CHROMIUM, profile)
    try:
        yield sim, browser.page()
    finally:
        browser.close()
        sim.stop()
        shutil.rmtree(profile, ignore_errors=True)


def _msg(page):
    return page.eval("(document.getElementById('msg')||{}).textContent||''")


def test_phone_flow_scan_bad_password_then_good_password_saved(phone):
    sim, page = phone
    page.navigate(sim.base + "/")
    assert page.eval("document.title") == "Meter setup"
    names = page.eval("[...document.querySelectorAll('#nets .ssid')].map(e => e.textContent)")
    assert names[0] == "HomeNet" and "<script>alert(1)</script>" in names and len(names) == 5
    assert page.eval("document.documentElement.scrollWidth") <= 360  # nothing sticks out on a phone
    assert page.eval("document.querySelectorAll('#live tr').length") == 4
    page.screenshot(os.path.join(SHOTS, "1-setup-page.png"))

    page.eval("document.getElementById('show').click()")
    assert page.eval("document.getElementById('pw').type") == "text"  # show password
    page.eval("document.getElementById('show').click()")
    assert page.eval("document.getElementById('pw').type") == "password"

    page.act_and_wait_load("document.querySelector('input[value=\"HomeNet\"]').click();"
                           "document.getElementById('pw').value='not the password';"
                           "document.querySelector('form[action=\"/connect\"] button').click()")
    assert "Wrong password for HomeNet" in _msg(page)
    page.screenshot(os.path.join(SHOTS, "2-wrong-password.png"))
    assert not os.path.exists(os.path.join(sim.state_dir, "config.json"))  # nothing saved

    page.act_and_wait_load("document.querySelector('input[value=\"HomeNet\"]').click();"
                           "document.getElementById('pw').value='correct horse';"
                           "document.querySelector('form[action=\"/connect\"] button').click()")
    msg = _msg(page)
    assert "Connected to HomeNet" in msg and "192.168.1.77" in msg
    page.screenshot(os.path.join(SHOTS, "3-connected.png"))
    with open(os.path.join(sim.state_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["wifi"] == {"ssid": "HomeNet", "password": "correct horse"}


def test_installer_view_shows_live_readings_and_pairing_facts(phone):
    sim, page = phone
    page.navigate(sim.base + "/")
    with open(os.path.join(sim.state_dir, "identity.json")) as f:
        ident = json.load(f)
    assert page.eval("document.getElementById('serial').textContent") == ident["serial"]
    assert page.eval("document.getElementById('pin').textContent") == ident["pin"]
    page.eval("new Promise(r => setTimeout(r, 3500))")  # one refresh of the live table
    cells = page.eval("[...document.querySelectorAll('#live tr')].slice(1)"
                      ".map(r => [...r.cells].map(c => c.textContent))")
    for row in cells:
        assert 220 < float(row[1]) < 240 and float(row[2]) > 5 and row[4] == "import"
    page.eval("document.querySelector('h2:nth-of-type(2), section:nth-of-type(2)').scrollIntoView()")
    page.screenshot(os.path.join(SHOTS, "4-installer.png"))


def test_a_reversed_ct_is_reported_and_fixed_with_one_tap(tmp_path):
    scenario = os.path.join(mp.ROOT, "tools", "sim", "scenarios", "reversed-ct.json")
    sim = PortalSim(str(tmp_path / "state"), extra=("--scenario", scenario))
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    browser = Browser(CHROMIUM, profile)
    try:
        page = browser.page()
        for _ in range(40):  # the first windows' readings, then the diagnosis
            page.navigate(sim.base + "/")
            if page.eval("document.querySelectorAll('#diags form').length"):
                break
            page.eval("new Promise(r => setTimeout(r, 250))")
        assert "L2" in page.eval("document.getElementById('diags').textContent")
        assert page.eval("document.querySelectorAll('#live tr')[2].cells[4].textContent") == "export"
        page.eval("document.getElementById('diags').scrollIntoView()")
        page.screenshot(os.path.join(SHOTS, "5-wiring-diagnostic.png"))
        page.act_and_wait_load("document.querySelector('#diags form button').click()")
        assert _msg(page).startswith("Fixed:")
        with open(os.path.join(sim.state_dir, "config.json")) as f:
            assert json.load(f)["meter"]["ct_reversed"] == [False, True, False]
        for _ in range(40):  # the running meter uses the fix from its next window on
            page.eval("new Promise(r => setTimeout(r, 250))")
            doc = json.loads(page.eval("fetch('/api/readings').then(r => r.text())"))
            if not doc["diagnostics"] and doc["phases"][1]["direction"] == "import":
                break
        assert doc["diagnostics"] == [] and doc["phases"][1]["direction"] == "import"
        for _ in range(20):  # the open page catches up by itself (the script refreshes every 3 s)
            if page.eval("document.getElementById('diags').textContent") == "Wiring looks right.":
                break
            page.eval("new Promise(r => setTimeout(r, 250))")
        assert page.eval("document.getElementById('diags').textContent") == "Wiring looks right."
        assert page.eval("document.querySelectorAll('#live tr')[2].cells[4].textContent") == "import"
    finally:
        browser.close()
        sim.stop()
        shutil.rmtree(profile, ignore_errors=True)

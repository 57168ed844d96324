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

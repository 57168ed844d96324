# The setup page says whether readings reach the cloud: the whole device (`python -m tools.sim device`)
# uploading over TLS to a real ingest server (`python -m tools.ingest`) on 127.0.0.1, whose answers the
# test turns bad (HTTP 500) and then refusing (401), reading /api/status and the page in headless
# Chromium as a phone would (screenshots in build/screenshots/).
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from tests.host.cdp import Browser
from tests.host.test_portal_browser import CHROMIUM, PHONES, SHOTS
from tools import mp
from tools.sim.runner import free_port, prepare_upload


def _wait_listening(port, proc, what):
    for _ in range(150):
        if proc.poll() is not None:
            raise AssertionError("%s exited (%d)" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("%s did not listen" % what)


def _get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
        return r.read().decode()


def _status_until(port, test, timeout_s=40):
    doc = None
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            doc = json.loads(_get(port, "/api/status"))
            if test(doc["upload"]):
                return doc
        except OSError:
            pass  # the page is not up yet
        time.sleep(0.5)
    raise AssertionError("upload status never got there: %r" % (doc and doc["upload"]))


def _cloud_on_the_phone(page, port, shot):
    """The page's Status part as the phone shows it (after its own refresh): (cloud text, its class)."""
    page.navigate("http://127.0.0.1:%d/" % port)
    page.eval("document.getElementById('status').scrollIntoView()")
    page.screenshot(os.path.join(SHOTS, shot))
    return page.eval("[document.getElementById('cloud').textContent, document.getElementById('cloud').className]")


def test_the_page_says_whether_readings_reach_the_cloud_and_when_the_cloud_refuses_the_meter(tmp_path):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium) when run as root")
    fault = tmp_path / "fault"
    fault.write_text("")
    certs, state = tmp_path / "certs", tmp_path / "flash"
    state.mkdir()
    ingest_port, http_port, dns_port = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    ingest = subprocess.Popen([sys.executable, "-m", "tools.ingest", "--port", str(ingest_port),
                               "--db", str(tmp_path / "records.sqlite"), "--certs", str(certs),
                               "--fault-file", str(fault)], cwd=mp.ROOT, stderr=subprocess.DEVNULL)
    device = browser = None
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        _wait_listening(ingest_port, ingest, "the ingest server")
        prepare_upload(str(state), "https://localhost:%d" % ingest_port, str(certs / "ca.der"), None, 10)
        device = subprocess.Popen([sys.executable, "-m", "tools.sim", "device", "--state-dir", str(state),
                                   "--port", str(http_port), "--dns-port", str(dns_port)],
                                  cwd=mp.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        browser = Browser(CHROMIUM, profile)
        phone = browser.page(*PHONES["small"])
        doc = _status_until(http_port, lambda u: u["state"] == "ok" and u["last_success_age_s"] is not None)
        assert doc["upload"]["message"] == "Readings reach the cloud." and doc["upload"]["last_success_age_s"] >= 0
        assert doc["links"]["online_via"] == "lan"
        assert _cloud_on_the_phone(phone, http_port, "small-cloud-ok.png") == ["Readings reach the cloud.", "good"]
        assert phone.eval("document.getElementById('age').textContent").endswith(" ago")

        fault.write_text("500")  # the cloud is down: records wait on the meter, the page says so
        doc = _status_until(http_port, lambda u: u["state"] == "retrying")
        assert "(the server answered HTTP 500)" in doc["upload"]["message"]
        assert "records wait on the meter" in doc["upload"]["message"]
        doc = _status_until(http_port, lambda u: u["pending_records"] >= 1, timeout_s=25)  # a record every 10 s
        cloud, cls = _cloud_on_the_phone(phone, http_port, "small-cloud-down.png")
        assert cloud.startswith("Readings do not reach the cloud just now") and cls == "bad"
        assert phone.eval("document.getElementById('pending').textContent").endswith(("record", "records"))

        fault.write_text("401")  # the cloud does not know this meter (not paired, or its credentials are wrong)
        doc = _status_until(http_port, lambda u: u["state"] == "credentials", timeout_s=30)
        assert "The cloud refused this meter (pairing or credentials)" in doc["upload"]["message"]
        cloud, cls = _cloud_on_the_phone(phone, http_port, "small-cloud-refused.png")
        assert cloud.startswith("The cloud refused this meter") and cls == "bad"
    finally:
        if browser is not None:
            browser.close()
        shutil.rmtree(profile, ignore_errors=True)
        for p in (device, ingest):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

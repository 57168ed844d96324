# cdp — a minimal Chrome DevTools Protocol client over --remote-debugging-pipe (no websocket, no npm).
#
# Browser(exe, profile_dir) starts headless Chromium with fds 3/4 as the protocol pipe; page() opens a
# tab and returns a Page with navigate(), eval(), click-and-wait, screenshot(). Only for tests on
# 127.0.0.1: Chromium is started with everything that would phone home switched off.
import base64
import json
import os
import queue
import subprocess
import threading
import time

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
         "--disable-domain-reliability", "--disable-client-side-phishing-detection",
         "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
         "--metrics-recording-only", "--no-pings", "--remote-debugging-pipe"]


def _high(fd):
    import fcntl

    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return new


class Browser:
    def __init__(self, exe, profile_dir):
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        # Above 4, so that "3<&A 4>&B" cannot overwrite one with the other (bash takes fds above 9).
        to_r, from_w = [_high(fd) for fd in (to_r, from_w)]
        cmd = ["/bin/bash", "-c", 'exec "$0" "$@" 3<&%d 4>&%d' % (to_r, from_w), exe,
               "--user-data-dir=" + profile_dir, *FLAGS, "about:blank"]
        self.proc = subprocess.Popen(cmd, pass_fds=(to_r, from_w), stdout=subprocess.DEVNULL,
                                     stderr=open(os.environ.get("CDP_LOG", os.devnull), "w"))
        os.close(to_r)
        os.close(from_w)
        self._id = 0
        self._replies = {}
        self._events = queue.Queue()
        self._cond = threading.Condition()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_r, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[None] = "closed"
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._events.put(msg)

    def send(self, method, params=None, session=None, timeout=20):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        with self._cond:
            while self._id not in self._replies:
                if None in self._replies:
                    raise RuntimeError("chromium went away")
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(method)
                self._cond.wait(left)
            reply = self._replies.pop(self._id)
        if "error" in reply:
            raise RuntimeError("%s: %s" % (method, reply["error"]))
        return reply["result"]

    def wait_event(self, method, session, timeout=20):
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(method)
            ev = self._events.get(timeout=left)
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev
            if ev.get("method") == "Page.javascriptDialogOpening":
                raise AssertionError("the page opened a dialog: %s" % ev["params"].get("message"))

    def page(self, width=360, height=780):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        p = Page(self, session)
        self.send("Page.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True}, session)
        return p

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)


class Page:
    def __init__(self, browser, session):
        self.b = browser
        self.session = session

    def _drain(self):
        while True:
            try:
                ev = self.b._events.get_nowait()
            except queue.Empty:
                return
            if ev.get("method") == "Page.javascriptDialogOpening":
                raise AssertionError("the page opened a dialog: %s" % ev["params"].get("message"))

    def navigate(self, url):
        self._drain()
        self.b.send("Page.navigate", {"url": url}, self.session)
        self.b.wait_event("Page.loadEventFired", self.session)

    def eval(self, expression):
        r = self.b.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True}, self.session)
        if "exceptionDetails" in r:
            raise RuntimeError("%s: %s" % (expression, r["exceptionDetails"].get("text")))
        return r["result"].get("value")

    def act_and_wait_load(self, expression, timeout=30):
        """Run expression (e.g. a click that submits a form) and wait until the next page has loaded."""
        self._drain()
        self.eval(expression)
        self.b.wait_event("Page.loadEventFired", self.session, timeout)

    def color_scheme(self, scheme):
        """Render as a phone set to "dark" or "light" would (prefers-color-scheme)."""
        self.b.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
                    self.session)

    def wait_for(self, expression, timeout_s=20.0):
        """Evaluate expression every 0.25 s, on a page that has finished loading, until it is truthy;
        its value. An error (the page was reloading itself meanwhile, an element not there yet)
        counts as not yet. (A page that reloads itself is seen half parsed otherwise: its top part
        there, its forms not yet.)"""
        why = "false"
        for _ in range(int(timeout_s * 4)):
            try:
                value = self.eval("document.readyState === 'complete' && (%s)" % expression)
                if value:
                    return value
            except RuntimeError as e:
                why = str(e)
            time.sleep(0.25)
        raise AssertionError("not true within %g s (%s): %s" % (timeout_s, why, expression))

    def screenshot(self, path, full=False):
        """What the phone's screen shows now (full: the whole page, as tall as it is)."""
        data = self.b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full},
                           self.session)["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

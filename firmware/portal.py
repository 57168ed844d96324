# portal — the setup web server on the access point: WiFi setup, live readings and wiring fixes.
#
# Routes: GET / (the page, firmware/portal_page.py), GET /api/status (everything the page shows, as
# JSON: firmware/status.py; /api/readings, its old name, redirects there), GET and POST
# /api/calibration (the installer's calibration for tools, as JSON), and the forms: POST /connect,
# /scan, /fix, /calibrate, /reset. Every POST answers with a redirect back to the page (Post/Redirect/
# Get), so reloading never sends a form again; its outcome travels as a notice whose number is in
# the redirect's URL, shown by that URL only. Joining a network runs in the background while the page
# says so and reloads itself until the outcome is known. A fix sets a target value (CT 2 inverted:
# yes), never a toggle, so a second tap changes nothing. Phone captive-portal probes are redirected to
# the setup page while the device needs setup; any unknown Host, always, on every route. Served by
# lib/httpd.py, which bounds every request and answer and adds the no-framing headers to each.

import asyncio
import json
import random
import sys
import time

from httpd import Response, Server, form, redirect

from firmware import config, factory, links, portal_page, status
from firmware.config import ConfigError

# No other site may show the page inside its own (clickjacking a factory reset): on every answer.
NO_FRAMING = b"X-Frame-Options: DENY\r\nContent-Security-Policy: frame-ancestors 'none'\r\n"
KEEP = (b"host", b"origin", b"content-type")  # the request headers handle() reads: the rest take no heap
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
PROBES = ("/generate_204", "/gen_204", "/hotspot-detect.html", "/library/test/success.html",
          "/connecttest.txt", "/ncsi.txt", "/canonical.html", "/success.txt")
MAX_NETWORKS = 20
JOIN_STATES = {"busy": "connecting", "ok": "connected", "bad": "failed"}  # a join notice's kind, as /api/status says it
SCAN_EVERY_MS = 15000  # a scan blocks the event loop ~2 s on the ESP32: never more often than this
CAL_WINDOWS = 5  # a calibration compares the references with the meter's mean over this many windows
CAL_WAIT_MS = 20000  # ... and gives up when they do not come within this long

# The rules of a WiFi name and password, as an installer reads them (firmware/schema.py has the exact ones).
SSID_WORDS = "The network name must be 1 to 32 bytes long (an accented letter counts 2, an emoji 4)."
PASSWORD_WORDS = ("The WiFi password must be 8 to 63 characters long, using only letters without accents, "
                  "digits, spaces and keyboard symbols (or the 64-character hex key). Leave it empty for an "
                  "open network.")


def scan_list(raw):
    """[(ssid, rssi, secured)] strongest first, one entry per name, hidden and undecodable names left out."""
    best = {}
    for entry in raw:
        try:
            ssid = bytes(entry[0]).decode()
        except Exception:  # not UTF-8: it could not be typed in anyway
            continue
        if not ssid or "\x00" in ssid:
            continue
        rssi, secured = entry[3], entry[4] != 0
        if ssid not in best or rssi > best[ssid][1]:
            best[ssid] = (ssid, rssi, secured)
    out = sorted(best.values(), key=lambda n: -n[1])
    return out[:MAX_NETWORKS]


def fix_changes(form, settings):
    """The meter settings a /fix form asks for, as targets: ({key: value}, words) or (None, why not).

    ct=N&reversed=0|1 sets CT N's direction; ct_phase=a,b,c sets which phase each CT clamps."""
    if "ct_phase" in form:
        try:
            target = [int(x) for x in form["ct_phase"].split(",")]
        except ValueError:
            target = []
        if sorted(target) != [1, 2, 3]:
            return None, "That change is not valid: each CT must read a different phase (1, 2 and 3)."
        if target == [1, 2, 3]:
            return {"ct_phase": target}, "Every CT is read as the phase it is fitted on again."
        return {"ct_phase": target}, "CTs now read as: %s." % ", ".join(
            "CT %d on L%d" % (c + 1, p) for c, p in enumerate(target))
    ct, rev = form.get("ct"), form.get("reversed")
    if ct not in ("1", "2", "3") or rev not in ("0", "1"):
        return None, "That change is not valid: nothing was changed."
    target = list(settings["ct_reversed"])
    target[int(ct) - 1] = rev == "1"
    return {"ct_reversed": target}, ("CT %s is now inverted in software." % ct if rev == "1"
                                     else "CT %s is read as fitted again (no longer inverted)." % ct)


class Portal:
    """The setup page's web app. parts: the WiFi station (for scans), store, identity, meter, links,
    uploader (firmware/app.py). apply(changes, reset=False): the one way its changes are saved and
    reach the running device (firmware/app.py Device.apply); None: to the meter and the links only."""

    def __init__(self, sta, store, identity, meter, net, uploader, ap_addr=links.AP_ADDR, known_hosts=(),
                 log=print, apply=None):
        self.sta = sta
        self.store = store
        self.identity = identity
        self.meter = meter
        self.net = net
        self.uploader = uploader
        self.apply = apply or (lambda changes, reset=False: config.apply(store, (meter, net), changes, reset))
        self.ap_addr = ap_addr
        self.home = "http://%s/" % ap_addr
        self.known_hosts = (ap_addr,) + tuple(known_hosts)
        self.log = log
        self.networks = []
        self._scanned_ms = None
        self.joining = False
        self._join_task = None
        # The outcome of the last form, shown by GET /?n=<number> only: [number, kind, text, ssid];
        # a join has its own, so that another form meanwhile does not hide where it ends.
        self.notice = [0, None, None, ""]
        self.join_notice = [0, None, None, ""]
        self._notices = random.getrandbits(20)  # a tab left open across a restart shows no stranger's notice
        self.calibrating = False
        self.cal_undo = None  # meter.calibration before the last calibration (in RAM: until a restart)
        self.cal_changes = []  # what the last calibration changed: [what, before, after]
        self.server = None  # lib/httpd's Server, made by run()

    # --- serving ----------------------------------------------------------------------------------
    async def run(self, host=None, http_port=80, dns_port=53, always=False, send_buffer=None):
        """Serve HTTP and DNS while the access point is up (or always). The links run on their own
        task (Links.run): a failing page must not stop the meter joining its network.

        host None: every interface on the board, only 127.0.0.1 anywhere else (a desktop test run).
        send_buffer: the sockets' send buffer (the simulator gives lwIP's); None: the system's.
        """
        if host is None:
            # On the board: only on the access point's address, so the setup page (with the PIN and
            # the factory reset) is reachable only by someone who knows the label's WPA2 password.
            host = self.ap_addr if sys.platform == "esp32" else "127.0.0.1"
        from dnscatch import DnsCatch

        # A page leaves KBs of garbage (its pieces, the status document): collected as the request
        # ends, not left to pile up until the next window with a TLS upload on top. (self.handle is
        # looked up here, once: the simulator puts its own in front of it.)
        self.server = server = Server(self.handle, KEEP, NO_FRAMING, collect=True, send_buffer=send_buffer)
        if host != "0.0.0.0":  # served on a named address (the simulator's 127.0.0.1): that Host is ours too
            self.known_hosts += ("%s:%d" % (host, http_port), host)
            if host == "127.0.0.1":  # (and a desktop browser's name for it)
                self.known_hosts += ("localhost:%d" % http_port, "localhost")
        dns_task = None
        try:
            while True:
                want = always or self.net.ap_up
                if want and server.sock is None:
                    try:
                        server.start(host, http_port)
                        self.scan()  # blocks ~2 s on the board: once per start, never per retry
                        dns = DnsCatch(self.ap_addr, host, dns_port)
                        dns_task = asyncio.create_task(dns.run())
                        self.log("portal: serving http on %s:%d, dns on %d" % (host, http_port, dns_port))
                    except OSError as e:  # the meter goes on measuring; try again in a while
                        server.close()
                        self.log("portal: cannot serve on %s:%d/%d (%s)" % (host, http_port, dns_port, e))
                        await asyncio.sleep_ms(10000)
                elif not want and server.sock is not None:
                    server.close()
                    if dns_task is not None:
                        dns_task.cancel()
                    self.log("portal: stopped")
                await asyncio.sleep_ms(links.TICK_MS)
        finally:
            server.close()
            if dns_task is not None:
                dns_task.cancel()

    # --- scanning ---------------------------------------------------------------------------------
    def scan(self):
        """Scan for networks (blocks about 2 s on the radio, and the meter with it: at most every 15 s)."""
        now = time.ticks_ms()
        if self._scanned_ms is not None and time.ticks_diff(now, self._scanned_ms) < SCAN_EVERY_MS:
            return self.networks
        if self.joining:  # the radio is busy with the page's own attempt: keep the list
            return self.networks
        self._scanned_ms = now
        sta = self.sta
        try:
            if not sta.active():
                sta.active(True)
            if not sta.isconnected():
                # The port's scan() comes back empty, without an error, while the station is
                # connecting (ESP-IDF refuses it): stop the links' attempt for the scan's 2 s, and
                # let them start again on their next tick (their backoff kept).
                sta.disconnect()
                self.net.restart_attempt()
            found = scan_list(sta.scan())
            if found or not self.networks:  # an empty answer may be a refusal: keep what was found before
                self.networks = found
        except Exception as e:
            self.log("portal: scan failed (%s)" % type(e).__name__)
        return self.networks

    # --- actions ----------------------------------------------------------------------------------
    def say(self, kind, text, ssid=""):
        """Make the notice the next page shows; the URL that shows it (and only it)."""
        self._notices += 1
        self.notice = [self._notices, kind, text, ssid]
        return "/?n=%d" % self._notices

    def start_join(self, ssid, password):
        """Try the network in the background; the page shows progress. The URL to show it on."""
        if self.joining:  # a second tap: show the attempt under way
            return "/?n=%d" % self.join_notice[0]
        self.joining = True
        self._notices += 1
        self.join_notice = [self._notices, "busy", "Connecting to %s..." % ssid, ssid]
        self._join_task = asyncio.create_task(self._join(ssid, password))
        return "/?n=%d" % self._notices

    async def _join(self, ssid, password):
        try:
            ok, message = await self.join(ssid, password)
        except Exception as e:  # (join() catches the radio's errors; this is for the rest, e.g. MemoryError)
            self.joining = False
            ok, message = False, "Could not connect to %s (%s): nothing was saved." % (ssid, type(e).__name__)
        self.join_notice = [self.join_notice[0], "ok" if ok else "bad", message, ssid]

    async def join(self, ssid, password, poll_ms=250):
        """Try the network while the AP stays up; on success save it. Returns (ok, message)."""
        self.joining = True
        self.net.busy = True
        try:
            j = self.net.joiner(ssid, password)
            outcome = links.FAILED
            try:
                while True:
                    outcome = j.poll()
                    if outcome is not None:
                        break
                    await asyncio.sleep_ms(poll_ms)
            finally:
                j.end(outcome)  # reconnects back to "for ever", whatever happened
        except Exception as e:
            self.log("portal: connect failed (%s)" % type(e).__name__)
            outcome = links.FAILED
            j = None
        finally:
            self.joining = False
            self.net.busy = False
        self.log("portal: joining a network: %s" % outcome)
        message = links.outcome_message(outcome, ssid, j.ip if j else None)
        if outcome != links.OK:
            # The attempt left the configured network (one radio: there is no trying a new one beside
            # it): back to it at once, not after the links' 30 s retry wait.
            self.net.restart_attempt()
            return False, message
        try:
            self.apply({"wifi": {"ssid": ssid, "password": password}})
        except (ConfigError, OSError) as e:
            return False, "Connected, but the settings could not be saved (%s)." % e
        self.net.reconnect()
        return True, message + "\n" + self.next_steps(ssid)

    def next_steps(self, ssid):
        """What happens after a successful join, in the order the installer will see it."""
        ident = self.identity.identity
        ap = ident.ap_ssid() if ident is not None else "the setup network"
        if self.store.config["ap"]["mode"] == "always":
            return "The setup network %s stays on (ap.mode is always)." % ap
        return ("What happens next: the setup network %s closes about %d minutes after the meter is online, "
                "and your phone drops off it and goes back to its usual network. The meter then sends its "
                "readings to the cloud over %s. To open this page again later, press the meter's button "
                "briefly and join %s again." % (ap, links.AP_LINGER_MS // 60000, ssid, ap))

    def apply_fix(self, form):
        """Set the meter settings a /fix form asks for. (ok, message)."""
        changes, words = fix_changes(form, self.meter.settings)
        if changes is None:
            return False, words
        try:
            self.apply({"meter": changes})  # saved, and the running meter measures with it
        except (ConfigError, OSError) as e:
            return False, "The change could not be saved (%s): nothing was changed." % e
        self.log("portal: meter settings changed: %s" % words)
        return True, words + " The wiring is checked again over the next readings."

    async def calibrate(self, refs, windows=CAL_WINDOWS, wait_ms=CAL_WAIT_MS):
        """An installer's calibration (firmware/calibrate.py) from the instruments' readings `refs`
        (calibration_refs), against the meter's mean over the next `windows` judged windows. Saved and
        in force at once; undo_calibration() goes back. (ok, message)."""
        if self.calibrating:
            return False, "A calibration is under way: wait for its result, then try again."
        self.calibrating = True
        try:
            from firmware import calibrate

            avg = calibrate.Average()
            seen = self.meter.readings
            t0 = time.ticks_ms()
            while avg.n < windows:
                if time.ticks_diff(time.ticks_ms(), t0) > wait_ms:
                    return False, "The meter gave no readings to compare with: nothing was changed."
                await asyncio.sleep_ms(100)
                r = self.meter.readings
                if r is not seen and r is not None:
                    seen = r
                    if r["judged"]:  # not one that straddles a settings change
                        avg.add(r)
            try:
                cal, changes = calibrate.plan(self.meter.settings, avg, **refs)
            except ValueError as e:
                return False, str(e)
            # Before and after, as the installer compares them with the instruments.
            seen_words = ["L%d read %.1f V, now %.1f V" % (p + 1, avg.phase(p)[0], v)
                          for p, v in enumerate(refs["vrms"]) if v is not None]
            if refs["ct"] is not None:
                p = self.meter.settings["ct_phase"][refs["ct"] - 1] - 1
                seen_words.append("CT %d read %.2f A, now %.2f A" % (refs["ct"], avg.phase(p)[1], refs["amps"]))
        finally:
            self.calibrating = False
            # Loaded only while calibrating (as config's checks are): let go of the module again.
            sys.modules.pop("firmware.calibrate", None)
            import firmware

            if hasattr(firmware, "calibrate"):
                delattr(firmware, "calibrate")
        old = self.meter.settings["calibration"]
        try:
            self.apply({"meter": {"calibration": cal}})
        except (ConfigError, OSError) as e:
            return False, "The calibration could not be saved (%s): nothing was changed." % e
        self.cal_undo = old
        self.cal_changes = [[what, round(a, 5), round(b, 5)] for what, a, b in changes]
        words = "; ".join("%s %.4f to %.4f" % (what, a, b) for what, a, b in changes)
        self.log("portal: calibrated: %s" % words)
        return True, ("Calibrated: %s (%s). The live readings use it from now on; Undo goes back."
                      % ("; ".join(seen_words), words))

    def undo_calibration(self):
        """Back to the calibration before the last one. (ok, message)."""
        if self.cal_undo is None:
            return False, "There is no calibration to undo."
        try:
            self.apply({"meter": {"calibration": self.cal_undo}})
        except (ConfigError, OSError) as e:
            return False, "The undo could not be saved (%s): nothing was changed." % e
        self.cal_undo = None
        self.cal_changes = []
        self.log("portal: calibration undone")
        return True, "The last calibration is undone."

    def calibration_doc(self):
        return {"calibration": self.meter.settings["calibration"], "busy": self.calibrating,
                "can_undo": self.cal_undo is not None, "last_changes": self.cal_changes}

    def factory_reset(self):
        """Clear WiFi and settings (identity and energy stay). (ok, message)."""
        if self.joining:  # it would save its network after the reset
            return False, "Wait until the WiFi attempt is over, then reset: nothing was changed."
        factory.factory_reset(self.store, self.log, self.apply)  # the running meter drops the fixes too, at once
        self.net.reconnect()
        self.join_notice = [0, None, None, ""]
        return True, "Factory reset done: WiFi, software fixes and settings cleared."

    # --- views ------------------------------------------------------------------------------------
    def join_doc(self):
        """The last join as /api/status gives it ({"state", "ssid", "message"}), read from its notice."""
        n, kind, text, ssid = self.join_notice
        if kind is None:
            return None
        return {"state": JOIN_STATES[kind], "ssid": ssid, "message": text}

    def status_doc(self):
        return status.document(self.meter, self.uploader, self.net, self.store, self.join_doc())

    def page(self, n=None):
        """The page; with n the number of the current notice, that notice shows on it. While a join
        is under way every page comes back by itself, to the join's outcome, whatever URL it was
        opened at (a phone that dropped off the setup network comes back to plain "/")."""
        notice, ssid, refresh = None, "", None
        for shown in (self.notice, self.join_notice):
            if n is not None and n == shown[0] and shown[1] is not None:
                notice, ssid = (shown[1], shown[2]), shown[3]
        if self.joining:
            refresh = "/?n=%d" % self.join_notice[0]
        # A finished join's outcome stays in the WiFi part until the next attempt (unless on top already).
        outcome = None
        if not self.joining and self.join_notice[1] is not None and n != self.join_notice[0]:
            outcome = (self.join_notice[1], self.join_notice[2])
        return portal_page.html_response(portal_page.page(self, self.status_doc(), notice, ssid, refresh, outcome))

    # --- requests ---------------------------------------------------------------------------------
    async def handle(self, req):
        """The answer to one request (lib/httpd.py: HEAD arrives as GET)."""
        path, post = req.path, req.method == "POST"
        if path in PROBES:
            if self.store.needs_setup:
                return redirect(self.home)
            return _probe_ok(path)
        if req.headers.get("host", "") not in self.known_hosts:
            # Any other name leads to the page at its own address, whatever the route: a phone typing
            # any URL finds it, and a site's page whose name now points here (DNS rebinding: our DNS
            # answers every name) reads only a redirect to another origin, never the PIN or the serial.
            return Response(REFUSED, 403, TEXT) if post else redirect(self.home)
        if post:
            # Changes come only from this page: a form from another site's page is refused.
            origin = req.headers.get("origin")
            if origin is not None and origin not in ["http://" + h for h in self.known_hosts]:
                return Response(REFUSED, 403, TEXT)
            if path == "/scan":
                self.scan()
                return _back("/")
            if path == "/api/calibration":
                return _json(await self._calibrate_json(req))
            if path in ("/connect", "/fix", "/reset", "/calibrate"):
                f = None
                if req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                    f = form(req.body)
                if path == "/reset":
                    return _back(self._reset(f or {}))
                if f is None:
                    return _back(self.say("bad", "The form did not arrive intact: try again."))
                if path == "/calibrate":
                    return _back(await self._calibrate_form(f))
                return _back(self._connect(f) if path == "/connect" else self._fix(f))
        elif req.method != "GET":
            return Response(b"Method not allowed\n", 405, {"Content-Type": TEXT["Content-Type"], "Allow": "GET, POST"})
        elif path == "/":
            n = (form(req.query) or {}).get("n")
            return self.page(int(n) if n and n.isdigit() and len(n) < 9 else None)
        elif path == "/api/status":
            return Response(json.dumps(self.status_doc()).encode(), 200,
                            {"Content-Type": "application/json", "Cache-Control": "no-store"})
        elif path == "/api/calibration":
            return _json((self.calibration_doc(), 200))
        elif path == "/api/readings":  # its old name: everything it gave is in /api/status now
            return redirect("/api/status", 308)
        return Response(b"Not found\n", 404, TEXT)

    async def _calibrate_form(self, f):
        if f.get("undo") == "yes":
            ok, message = self.undo_calibration()
        else:
            refs, message = calibration_refs([f.get("v1"), f.get("v2"), f.get("v3")], f.get("ct"), f.get("amps"),
                                             f.get("resistive") == "yes")
            ok = False
            if refs is not None:
                ok, message = await self.calibrate(refs)
        return self.say("ok" if ok else "bad", message)

    async def _calibrate_json(self, req):
        """(document, status) of POST /api/calibration. JSON only: a browser sends no other site's
        JSON without asking first (a CORS preflight, which this server never allows)."""
        doc = None
        if req.headers.get("content-type", "").startswith("application/json"):
            try:
                doc = json.loads(req.body)
            except (ValueError, UnicodeError):
                doc = None
        if not isinstance(doc, dict):
            return {"ok": False, "message": "Send a JSON object (Content-Type: application/json)."}, 400
        if doc.get("undo") is True:
            ok, message = self.undo_calibration()
        else:
            vrms = doc.get("vrms", [None, None, None])
            refs, message = calibration_refs(vrms if isinstance(vrms, list) else "", doc.get("ct"), doc.get("amps"),
                                             doc.get("resistive") is True)
            ok = False
            if refs is not None:
                ok, message = await self.calibrate(refs)
        out = self.calibration_doc()
        out["ok"] = ok
        out["message"] = message
        return out, 200 if ok else 400

    def _connect(self, form):
        ssid = (form.get("ssid_manual") or "").strip() or form.get("ssid") or ""
        password = form.get("password") or ""
        if not ssid:
            return self.say("bad", "Choose a network from the list, or type its name.")
        problem = config.wifi_problem(ssid, password)
        if problem == "ssid":
            return self.say("bad", SSID_WORDS)
        if problem == "password":
            return self.say("bad", PASSWORD_WORDS, ssid)
        return self.start_join(ssid, password)

    def _fix(self, form):
        ok, message = self.apply_fix(form)
        return self.say("ok" if ok else "bad", message)

    def _reset(self, form):
        if form.get("confirm") != "yes":
            return self.say("bad", "Factory reset needs the confirmation box ticked: nothing was changed.")
        ok, message = self.factory_reset()
        return self.say("ok" if ok else "bad", message)


def _number(x):
    """A reading typed or sent: a positive finite number (str or number), None when empty, False when bad."""
    if x is None or x == "":
        return None
    if isinstance(x, bool):
        return False
    try:
        v = float(x.strip().replace(",", ".")) if isinstance(x, str) else float(x)
    except (TypeError, ValueError):
        return False
    return v if 0 < v < 1e6 else False


def calibration_refs(vrms, ct, amps, resistive):
    """(refs for Portal.calibrate, None) from what the installer typed (strings) or a tool sent
    (numbers), or (None, what is wrong)."""
    if len(vrms) != 3:
        return None, "vrms: give three voltages (L1, L2, L3), null or empty where not measured."
    volts = []
    for p in range(3):
        v = _number(vrms[p])
        if v is False:
            return None, "L%d voltage: type the multimeter's reading in volts, e.g. 231.4." % (p + 1)
        volts.append(v)
    c = None
    if ct is not None and ct != "":
        c = ct if isinstance(ct, int) and not isinstance(ct, bool) else ct.strip() if isinstance(ct, str) else None
        c = int(c) if isinstance(c, str) and c.isdigit() else c
        if c not in (1, 2, 3):
            return None, "CT: choose 1, 2 or 3."
    a = _number(amps)
    if a is False:
        return None, "Amps: type the clamp meter's reading in amps, e.g. 12.3."
    if (c is None) != (a is None):
        return None, "Choose the CT and type the amps its conductor carries: both, or neither."
    refs = {"vrms": volts, "ct": c, "amps": a, "resistive": bool(resistive) and c is not None}
    return refs, None


REFUSED = b"Changes are only accepted from the setup page itself.\n"


def _json(doc_status):
    return Response(json.dumps(doc_status[0]).encode(), doc_status[1],
                    {"Content-Type": "application/json", "Cache-Control": "no-store"})


def _back(url):
    return redirect(url, 303)  # See Other: the browser GETs the page; a reload sends nothing


def _probe_ok(path):
    if path in ("/generate_204", "/gen_204"):
        return Response(b"", 204)
    if path == "/connecttest.txt":
        return Response(b"Microsoft Connect Test", 200, TEXT)
    if path == "/ncsi.txt":
        return Response(b"Microsoft NCSI", 200, TEXT)
    if path == "/success.txt":
        return Response(b"success\n", 200, TEXT)
    return Response(b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>", 200,
                    {"Content-Type": "text/html"})

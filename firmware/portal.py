# portal — the setup web server on the access point: WiFi setup, live readings and wiring fixes.
#
# One self-contained page (no external assets, works at 360 px, the form works without JavaScript):
# networks found by scan (every SSID HTML-escaped: scanned names are attacker-controlled), manual
# SSID, password with show/hide, LAN status; the installer view with live per-phase readings
# (GET /api/readings, refreshed by a few lines of script), wiring diagnostics with one-tap fixes,
# model, serial number and PIN for cloud pairing, and the firmware version. Phone captive-portal
# probes, and any unknown Host, are redirected to the setup page while the device needs setup.
# Built on microdot; lib/httpguard puts the size, time and connection limits around it.

import asyncio
import json
import sys
import time

from microdot import Microdot, Response

from firmware import VERSION, factory, links
from firmware.schema import WIFI_PASSPHRASE, WIFI_SSID, ConfigError

PROBES = ("/generate_204", "/gen_204", "/hotspot-detect.html", "/library/test/success.html",
          "/connecttest.txt", "/ncsi.txt", "/canonical.html", "/success.txt")
MAX_NETWORKS = 20


def esc(s):
    """s made safe as HTML text or a quoted attribute value."""
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def html_response(pieces, status=200):
    """A page sent as the pieces it was built from, one after another. Never joined: a ~4 KB page
    needs a ~4 KB free block, and after days of uptime a fragmented heap may have none to spare."""
    body = [p.encode() if isinstance(p, str) else p for p in pieces]
    # (microdot sends any iterator of bytes; pyright infers `bytes` from its default, b"")
    return Response(iter(body), status, {  # pyright: ignore[reportArgumentType]
        "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
        "Content-Length": str(sum(len(b) for b in body))})


def signal_bars(rssi):
    return 4 if rssi >= -55 else 3 if rssi >= -67 else 2 if rssi >= -75 else 1


SCAN_EVERY_MS = 15000  # a scan blocks the event loop ~2 s on the ESP32: never more often than this

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


class Portal:
    """The setup page's web app. parts: board, store, identity, meter, links (see firmware/app.py)."""

    def __init__(self, board, store, identity, meter, net, ap_addr=links.AP_ADDR, known_hosts=(), log=print):
        self.board = board
        self.store = store
        self.identity = identity
        self.meter = meter
        self.net = net
        self.ap_addr = ap_addr
        self.home = "http://%s/" % ap_addr
        self.known_hosts = (ap_addr,) + tuple(known_hosts)
        self.log = log
        self.networks = []
        self._scanned_ms = None
        self.joining = False
        self.app = self._build()

    # --- serving ----------------------------------------------------------------------------------
    async def run(self, host=None, http_port=80, dns_port=53, always=False):
        """Keep the links up to date and serve HTTP and DNS while the access point is up (or always).

        host None: every interface on the board, only 127.0.0.1 anywhere else (a desktop test run).
        """
        if host is None:
            # On the board: only on the access point's address, so the setup page (with the PIN and
            # the factory reset) is reachable only by someone who knows the label's WPA2 password.
            host = self.ap_addr if sys.platform == "esp32" else "127.0.0.1"
        from dnscatch import DnsCatch
        from httpguard import Guard

        self.guard = guard = Guard(self.app)
        if host != "0.0.0.0":  # served on a named address (the simulator's 127.0.0.1): that Host is ours too
            self.known_hosts += ("%s:%d" % (host, http_port), host)
        dns_task = None
        try:
            while True:
                try:
                    self.net.tick()
                except Exception as e:  # a radio error must not end the links and setup page for good
                    self.log("network: %s: %s" % (type(e).__name__, e))
                want = always or self.net.ap_up
                if want and guard.server is None:
                    try:
                        await guard.start(host, http_port)
                        self.scan()  # blocks ~2 s on the board: once per start, never per retry
                        dns = DnsCatch(self.ap_addr, host, dns_port)
                        dns_task = asyncio.create_task(dns.run())
                        self.log("portal: serving http on %s:%d, dns on %d" % (host, http_port, dns_port))
                    except OSError as e:  # the meter goes on measuring; try again in a while
                        guard.close()
                        self.log("portal: cannot serve on %s:%d/%d (%s)" % (host, http_port, dns_port, e))
                        await asyncio.sleep_ms(10000)
                elif not want and guard.server is not None:
                    guard.close()
                    if dns_task is not None:
                        dns_task.cancel()
                    self.log("portal: stopped")
                await asyncio.sleep_ms(links.TICK_MS)
        finally:
            guard.close()
            if dns_task is not None:
                dns_task.cancel()

    # --- scanning ---------------------------------------------------------------------------------
    def scan(self):
        """Scan for networks (blocks about 2 s on the radio, and the meter with it: at most every 15 s)."""
        now = time.ticks_ms()
        if self._scanned_ms is not None and time.ticks_diff(now, self._scanned_ms) < SCAN_EVERY_MS:
            return self.networks
        self._scanned_ms = now
        sta = self.board.sta
        try:
            if not sta.active():
                sta.active(True)
            self.networks = scan_list(sta.scan())
        except Exception as e:
            self.log("portal: scan failed (%s)" % type(e).__name__)
        return self.networks

    # --- actions ----------------------------------------------------------------------------------
    async def join(self, ssid, password, poll_ms=250):
        """Try the network while the AP stays up; on success save it. Returns (ok, message)."""
        self.joining = True
        self.net.busy = True
        try:
            j = links.Joiner(self.board.sta, ssid, password)
            while True:
                outcome = j.poll()
                if outcome is not None:
                    break
                await asyncio.sleep_ms(poll_ms)
        except Exception as e:
            self.log("portal: connect failed (%s)" % type(e).__name__)
            outcome = links.FAILED
            j = None
        finally:
            self.joining = False
            self.net.busy = False
        if outcome == links.OK:
            try:
                self.store.update({"wifi": {"ssid": ssid, "password": password}})
            except (ConfigError, OSError) as e:
                return False, "Connected, but the settings could not be saved (%s)." % e
            self.net.reconnect()
        self.log("portal: joining a network: %s" % outcome)
        return outcome == links.OK, links.outcome_message(outcome, ssid, j.ip if j else None)

    def apply_fix(self, code, phase):
        """Apply the fix of the diagnostic (code, phase) the meter reports now. (ok, message)."""
        r = self.meter.readings
        for d in (r or {}).get("diagnostics", []):
            if d["code"] == code and str(d["phase"]) == phase and d.get("fix"):
                try:
                    self.store.update({"meter": d["fix"]})
                except (ConfigError, OSError) as e:
                    return False, "The fix could not be saved (%s)." % e
                self.meter.settings.update(d["fix"])
                return True, "Fixed: %s" % d["message"]
        return False, "That problem is no longer reported: nothing was changed."

    # --- views ------------------------------------------------------------------------------------
    def readings_doc(self):
        r = self.meter.readings
        lan_state, lan_ip = self.net.lan_status()
        doc = {"online": self.net.online_via, "lan": {"state": lan_state, "ip": lan_ip},
               "phases": [], "diagnostics": [], "wiring": None, "frequency_hz": None}
        if r:
            doc["wiring"] = r["wiring"]
            doc["frequency_hz"] = round(r["frequency_hz"], 2)
            for ph in r["phases"]:
                doc["phases"].append({"phase": ph["phase"], "vrms": round(ph["vrms"], 1), "irms": round(ph["irms"], 2),
                                      "real_power_w": round(ph["real_power_w"]), "direction": ph["direction"]})
            for d in r["diagnostics"]:
                doc["diagnostics"].append({"code": d["code"], "phase": d["phase"], "message": d["message"],
                                           "fixable": bool(d.get("fix"))})
        return doc

    def page(self, message=None, ok=True, ssid="", status=200):
        p = []
        a = p.append
        a(HEAD)
        if message:
            a('<p id=msg class="%s" role=status>%s</p>' % ("ok" if ok else "bad", esc(message)))
        cfg = self.store.config
        cur = cfg["wifi"]["ssid"]
        a("<section><h2>WiFi</h2>")
        if cur:
            a("<p>Saved network: <b>%s</b>%s</p>" % (esc(cur), " (connected)" if self.net.online_via == "wifi" else ""))
        a('<form method=post action="/connect"><fieldset id=nets><legend>Networks found</legend>')
        if not self.networks:
            a("<p>No networks found yet.</p>")
        for i, (name, rssi, secured) in enumerate(self.networks):
            a('<label class=net><input type=radio name=ssid value="%s"%s> <span class=ssid>%s</span>'
              ' <span class=sig title="%d dBm">%s</span>%s</label>'
              % (esc(name), " checked" if name == ssid or (not ssid and i == 0) else "", esc(name), rssi,
                 "&#9679;" * signal_bars(rssi) + "&#9675;" * (4 - signal_bars(rssi)),
 " <span class=lock>secured</span>" if secured else " <span class=lock>open</span>"))
        a('</fieldset><label>Other network (name)<input name=ssid_manual maxlength=32 autocomplete=off'
          ' autocapitalize=none></label>'
          '<label>Password<input type=password name=password id=pw maxlength=64 autocomplete=off></label>'
          '<label class=inline><input type=checkbox id=show onclick="pw.type=this.checked?\'text\':\'password\'">'
          ' Show password</label><button type=submit>Connect</button></form>'
          '<form method=post action="/scan"><button type=submit class=second>Scan again</button></form>')
        lan_state, lan_ip = self.net.lan_status()
        a("<p>Ethernet (LAN): <b id=lan>%s</b></p></section>" % esc(
            "connected, address %s (used instead of WiFi)" % lan_ip if lan_state == "connected" else lan_state))
        self._installer(a)
        a(b"<script>")
        a(SCRIPT)
        a(b"</script></body></html>")
        return html_response(p, status)

    def _installer(self, a):
        a("<section><h2>Installer</h2>")
        ident = self.identity.identity
        model = self.store.config["meter"]["model"]
        a("<table class=kv><tr><th>Model</th><td>%s</td></tr>" % ("Public" if model == "public" else "Home"))
        if ident is not None:
            a("<tr><th>Serial number</th><td id=serial>%s</td></tr><tr><th>PIN</th><td id=pin>%s</td></tr>"
              % (esc(ident.serial), esc(ident.pin)))
        a("<tr><th>Firmware</th><td>%s</td></tr></table>" % esc(VERSION))
        refusal = self.identity.upload_refusal()
        if refusal:
            a("<p class=bad id=identity>%s</p>" % esc(refusal))
        else:
            a("<p>Pair the meter in the cloud with its serial number and PIN.</p>")
        doc = self.readings_doc()
        a("<h3>Live readings</h3><table id=live><tr><th></th><th>V</th><th>A</th><th>W</th><th></th></tr>")
        for ph in doc["phases"] or [{"phase": n, "vrms": "-", "irms": "-", "real_power_w": "-", "direction": ""}
                                    for n in (1, 2, 3)]:
            a("<tr><th>L%s</th><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
              % (ph["phase"], ph["vrms"], ph["irms"], ph["real_power_w"], esc(ph["direction"])))
        a("</table><ul id=diags>")
        for d in doc["diagnostics"]:
            a("<li>%s" % esc(d["message"]))
            if d["fixable"]:
                a('<form method=post action="/fix"><input type=hidden name=code value="%s">'
                  '<input type=hidden name=phase value="%s"><button type=submit>Fix it</button></form>'
                  % (esc(d["code"]), esc(d["phase"])))
            a("</li>")
        if not doc["diagnostics"]:
            a("<li>Wiring looks right.</li>")
        a("</ul><h3>Factory reset</h3><form method=post action=\"/reset\"><label><input type=checkbox name=confirm"
          " value=yes required> Clear WiFi and all settings (serial number, PIN and energy counters stay)</label>"
          "<button type=submit class=second>Factory reset</button></form></section>")

    # --- routes -----------------------------------------------------------------------------------
    def _build(self):
        app = Microdot()
        portal = self

        @app.before_request
        async def captive(req):
            host = req.headers.get("Host", "")
            if req.path in PROBES:
                if portal.store.needs_setup:
                    return Response.redirect(portal.home)
                return portal._probe_ok(req.path)
            if portal.store.needs_setup and host not in portal.known_hosts:
                return Response.redirect(portal.home)
            if req.method == "POST":
                # Changes come only from this page: a request for another Host (DNS rebinding) or
                # from another site's page (a cross-site form) is refused.
                origin = req.headers.get("Origin")
                if host not in portal.known_hosts or (
                        origin is not None and origin not in ["http://" + h for h in portal.known_hosts]):
                    return Response(b"Changes are only accepted from the setup page itself.\n", 403)

        @app.get("/")
        async def index(req):
            return portal.page()

        @app.post("/scan")
        async def rescan(req):
            portal.scan()
            return Response.redirect("/", 303)

        @app.post("/connect")
        async def connect(req):
            form = _form(req)
            if form is None:
                return portal.page("The form did not arrive intact: try again.", False, status=400)
            ssid = (form.get("ssid_manual") or "").strip() or form.get("ssid") or ""
            password = form.get("password") or ""
            if not ssid:
                return portal.page("Network name: choose a network or type its name.", False, status=400)
            try:
                WIFI_SSID("Network name", ssid)
                WIFI_PASSPHRASE("Password", password)
            except ConfigError as e:
                return portal.page(str(e), False, ssid, status=400)
            if portal.joining:
                return portal.page("Already trying a network: wait a moment.", False, ssid, status=409)
            ok, message = await portal.join(ssid, password)
            return portal.page(message, ok, ssid)

        @app.post("/fix")
        async def fix(req):
            form = _form(req)
            if form is None:
                return portal.page("The form did not arrive intact: try again.", False, status=400)
            ok, message = portal.apply_fix(form.get("code") or "", form.get("phase") or "")
            return portal.page(message, ok, status=200 if ok else 409)

        @app.post("/reset")
        async def reset(req):
            form = _form(req)
            if form is None or form.get("confirm") != "yes":
                return portal.page("Factory reset needs the confirmation box ticked.", False, status=400)
            factory.factory_reset(portal.store, portal.log)
            portal.net.reconnect()
            return portal.page("Factory reset done: WiFi and settings cleared.", True)

        @app.get("/api/readings")
        async def readings(req):
            return Response(json.dumps(portal.readings_doc()).encode(), 200,
                            {"Content-Type": "application/json", "Cache-Control": "no-store"})

        @app.route("/<path:rest>", methods=["GET", "POST"])
        async def elsewhere(req, rest):  # microdot runs before_request only for routes it knows
            r = await captive(req)
            return r if r is not None else ("Not found", 404)

        return app

    def _probe_ok(self, path):
        if path in ("/generate_204", "/gen_204"):
            return Response(b"", 204)
        if path in ("/connecttest.txt",):
            return Response(b"Microsoft Connect Test", 200, {"Content-Type": "text/plain"})
        if path == "/ncsi.txt":
            return Response(b"Microsoft NCSI", 200, {"Content-Type": "text/plain"})
        if path == "/success.txt":
            return Response(b"success\n", 200, {"Content-Type": "text/plain"})
        return Response(b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>", 200,
                        {"Content-Type": "text/html"})


def _form(req):
    """The urlencoded form of req as a dict of str, or None when it is not one (bad %-escapes, not UTF-8)."""
    try:
        ctype = req.headers.get("Content-Type", "")
        if not ctype.startswith("application/x-www-form-urlencoded"):
            return None
        f = req.form
        if f is None:
            return None
        out = {}
        for k in f:
            v = f.get(k)
            if not isinstance(v, str):
                return None
            out[k] = v
        return out
    except Exception:
        return None


HEAD = (b"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        b"<meta name=viewport content='width=device-width,initial-scale=1'><title>Meter setup</title><style>"
        b"body{font:16px/1.4 sans-serif;margin:0 auto;max-width:34em;padding:0 .8em;color:#111}"
        b"h1{font-size:1.3em}h2{font-size:1.15em;border-bottom:1px solid #ccc}h3{font-size:1em}"
        b"label{display:block;margin:.6em 0}input{font-size:1em;box-sizing:border-box}"
        b"input[name=ssid_manual],#pw{display:block;width:100%;padding:.5em}"
        b".net{padding:.4em;border-bottom:1px solid #eee;margin:0;word-break:break-all}.sig{color:#2a7}"
        b"fieldset{border:1px solid #ccc;padding:.3em}"
        b"button{font-size:1em;padding:.6em 1.2em;margin:.3em 0}.second{background:#eee}.inline{display:inline}"
        b".ok{background:#dfd;padding:.6em}.bad{background:#fdd;padding:.6em}"
        b"table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.2em .3em}"
        b"li form{display:inline;margin-left:.5em}"
        b"</style></head><body><h1>Measurement device setup</h1>")

SCRIPT = (b"function u(){fetch('/api/readings').then(function(r){return r.json()}).then(function(d){"
          b"var t=document.getElementById('live');d.phases.forEach(function(p,i){var c=t.rows[i+1].cells;"
          b"c[1].textContent=p.vrms;c[2].textContent=p.irms;c[3].textContent=p.real_power_w;"
          b"c[4].textContent=p.direction});var l=document.getElementById('lan');"
          b"l.textContent=d.lan.state=='connected'?"
          b"'connected, address '+d.lan.ip+' (used instead of WiFi)':d.lan.state;"
          b"g(d.diagnostics)}).catch(function(){})}"
          # the diagnostics list, rebuilt with textContent only (never innerHTML) when it changes
          b"function g(ds){var ul=document.getElementById('diags'),k=JSON.stringify(ds);if(ul.dataset.k==k)return;"
          b"ul.dataset.k=k;ul.textContent='';if(!ds.length){ds=[{message:'Wiring looks right.'}]}"
          b"ds.forEach(function(x){var li=document.createElement('li');li.textContent=x.message;if(x.fixable){"
          b"var f=document.createElement('form');f.method='post';f.action='/fix';[['code',x.code],['phase',x.phase]]"
          b".forEach(function(h){var i=document.createElement('input');i.type='hidden';i.name=h[0];i.value=h[1];"
          b"f.appendChild(i)});var b=document.createElement('button');b.textContent='Fix it';f.appendChild(b);"
          b"li.appendChild(f)}ul.appendChild(li)})}setInterval(u,3000);")

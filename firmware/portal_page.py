# portal_page — the setup page as HTML: what an installer at the panel reads on a phone.
#
# One page, no external resources, mobile first: large touch targets, readable in sunlight and in a
# dark cupboard (prefers-color-scheme), works without JavaScript (forms post and redirect back); a
# few lines of script refresh the live parts from GET /api/status every few seconds, building
# elements with textContent only (scanned network names are attacker-controlled). The page is sent
# as the pieces it is built from, never joined: after days of uptime a fragmented heap may have no
# free block the size of the whole page. The constant pieces (style, script) stay in flash when the
# code runs from ROMFS; each is kept under 1.5 KB all the same.

from httpd import Response

from firmware import VERSION


def esc(s):
    """s made safe as HTML text or a quoted attribute value."""
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def html_response(pieces, code=200):
    """A page sent as the pieces it was built from, one after another, with its length announced.
    Each text piece is encoded once, in place (its str is garbage at once), so the page is never in
    memory twice, and the bytes counted are the bytes sent."""
    size = 0
    for i, p in enumerate(pieces):
        if isinstance(p, str):
            p = pieces[i] = p.encode()
        size += len(p)
    return Response(pieces, code, {
        "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "Content-Length": str(size)})


def signal_bars(rssi):
    return 4 if rssi >= -55 else 3 if rssi >= -67 else 2 if rssi >= -75 else 1


def age_words(age_s):
    """How long ago, as the script says it too (AGE in SCRIPT)."""
    if age_s is None:
        return "never"
    if age_s < 120:
        return "%d s ago" % age_s
    if age_s < 7200:
        return "%d min ago" % (age_s // 60)
    return "%d h ago" % (age_s // 3600)


def records_words(n):
    return "none" if not n else "%d record%s" % (n, "" if n == 1 else "s")


UPLOAD_CLASS = {"ok": "good", "starting": "", "off": "", "waiting_clock": "warn", "waiting": "warn"}


def page(portal, doc, notice=None, ssid="", refresh_to=None, join_outcome=None):
    """The whole page: pieces of str and bytes. notice: (kind "ok"/"bad"/"busy", text) or None;
    join_outcome: the last join's (kind, text), for the WiFi part."""
    p = []
    a = p.append
    a(HEAD)
    if refresh_to:  # joining a network: come back by itself until the outcome is known
        a("<meta http-equiv=refresh content='2;url=%s'>" % esc(refresh_to))
    for piece in STYLE:
        a(piece)
    ident = portal.identity.identity
    model = portal.store.config["meter"]["model"]
    a("</head><body><header><h1>Meter setup</h1><p>%s%s model (CTs up to %d A)</p></header><main>"
      % (esc(ident.ap_ssid()) + " &middot; " if ident is not None else "", "Public" if model == "public" else "Home",
         400 if model == "public" else 100))
    if notice:
        a('<p id=msg class="msg %s" role=status>%s</p>' % (notice[0], esc(notice[1]).replace("\n", "<br>")))
    _status(a, doc)
    _wifi(a, portal, doc, ssid, join_outcome)
    _readings(a, doc)
    _wiring(a, doc)
    _calibration(a, portal)
    _pairing(a, portal, ident, model)
    a(RESET)
    for piece in SCRIPT:
        a(piece)
    return p


def _status(a, doc):
    up, links = doc["upload"], doc["links"]
    a("<section id=status><h2>Status</h2><dl><dt>Network</dt><dd id=net>%s</dd>"
      % esc(links["message"]))
    a("<dt>Cloud</dt><dd id=cloud class='%s'>%s</dd>" % (UPLOAD_CLASS.get(up["state"], "bad"), esc(up["message"])))
    a("<dt>Last upload</dt><dd id=age>%s</dd><dt>Waiting</dt><dd id=pending>%s</dd>"
      "<dt>Lost</dt><dd id=lost>%s</dd></dl>" % (
          age_words(up["last_success_age_s"]), records_words(up["pending_records"]),
          records_words(up["lost_records"])))
    for n in doc["notices"]:
        a("<p class='msg bad'>%s</p>" % esc(n["message"]))
    a("</section>")


def _wifi(a, portal, doc, ssid, join_outcome):
    a("<section id=wifi><h2>WiFi</h2>")
    join = doc["join"]
    if join is not None and join["state"] == "connecting":
        a("<p class='msg busy'>Connecting to %s. This takes up to 15 seconds; the page updates by itself. "
          "Your phone may drop off the setup network for a moment: if it does, join it again.</p>"
          "</section>" % esc(join["ssid"]))
        return
    if join_outcome:
        a("<p id=last class='msg %s'>Last attempt: %s</p>"
          % (join_outcome[0], esc(join_outcome[1]).replace("\n", "<br>")))
    cur = doc["links"]["wifi_ssid"]
    if cur:
        a("<p>Saved network: <b>%s</b>%s</p>" % (esc(cur), " (connected)" if doc["links"]["online_via"] == "wifi"
                                                 else ""))
    a('<form method=post action="/connect"><fieldset id=nets><legend>Networks found</legend>')
    if not portal.networks:
        a("<p class=note>No networks found yet: tap Scan again, or type the name below.</p>")
    for i, (name, rssi, secured) in enumerate(portal.networks):
        bars = signal_bars(rssi)
        a('<label class=net><input type=radio name=ssid value="%s"%s><span class=ssid>%s</span>'
          '<span class=sig title="%d dBm">%s</span><span class=note>%s</span></label>'
          % (esc(name), " checked" if name == ssid or (not ssid and i == 0) else "", esc(name), rssi,
             "&#9679;" * bars + "&#9675;" * (4 - bars), "secured" if secured else "open"))
    a(WIFI_FORM)
    a("<p>Ethernet: <b id=lan>%s</b></p></section>" % esc(doc["links"]["lan"]["message"]))


def _readings(a, doc):
    r = doc["readings"]
    a("<section id=meter><h2>Live readings</h2><table id=live><tr><th></th><th>Volts</th><th>Amps</th>"
      "<th>Watts</th><th></th></tr>")
    derived = False
    for n in (0, 1, 2):
        ph = r["phases"][n] if r else None
        if ph is None:
            a("<tr><th>L%d</th><td>&mdash;</td><td>&mdash;</td><td>&mdash;</td><td></td></tr>" % (n + 1))
            continue
        derived = derived or ph["voltage_derived"]
        a("<tr><th>L%d</th><td%s>%.1f%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            ph["phase"], " class=derived" if ph["voltage_derived"] else "", ph["vrms"],
            "*" if ph["voltage_derived"] else "", "&mdash;" if ph["irms"] is None else "%.2f" % ph["irms"],
            "&mdash;" if ph["real_power_w"] is None else "%d" % ph["real_power_w"], esc(ph["direction"])))
    a("</table><p class=note id=derived%s>* computed from L1's voltage, not measured on that phase.</p>"
      % ("" if derived else " hidden"))
    a("<p class=note id=freq>%s</p></section>" % (
        "%.2f Hz, %s wiring" % (r["frequency_hz"], r["wiring"]) if r else "Waiting for the first reading..."))


def _items(a, list_id, items, key, label, empty):
    a("<ul id=%s class=items>" % list_id)
    for x in items:
        a("<li>%s" % esc(x["message"]))
        fields = x.get(key)
        if fields:
            a('<form method=post action="/fix">')
            for name in fields:
                a('<input type=hidden name="%s" value="%s">' % (esc(name), esc(fields[name])))
            a("<button type=submit%s>%s</button></form>" % (" class=second" if key == "undo" else "", label))
        a("</li>")
    if not items:
        a("<li>%s</li>" % empty)
    a("</ul>")


def _wiring(a, doc):
    a("<section id=wiring><h2>Wiring</h2>")
    r = doc["readings"]
    empty = ("Waiting for the first reading..." if r is None else
             "Checking the wiring again with the new settings..." if not r["judged"] else "Wiring looks right.")
    _items(a, "diags", doc["diagnostics"], "fix", "Fix it", empty)
    a("<h3>Software fixes in force</h3>")
    _items(a, "fixes", doc["fixes"], "undo", "Undo", "None: every CT is read as it is fitted.")
    a("</section>")


def _calibration(a, portal):
    a(CAL_FORM)
    if portal.cal_undo is not None:
        a(CAL_UNDO)
    a("</details>")


def _pairing(a, portal, ident, model):
    a("<section id=pair><h2>Cloud pairing</h2><table class=kv>")
    if ident is not None:
        a("<tr><th>Serial number</th><td id=serial>%s</td></tr><tr><th>PIN</th><td id=pin>%s</td></tr>"
          % (esc(ident.serial), esc(ident.pin)))
    a("<tr><th>Model</th><td>%s</td></tr><tr><th>Firmware</th><td>%s</td></tr></table>"
      % ("Public" if model == "public" else "Home", esc(VERSION)))
    refusal = portal.identity.upload_refusal()
    if refusal:
        a("<p class='msg bad' id=identity>%s</p>" % esc(refusal))
    else:
        a("<p>Pair the meter in the cloud with its serial number and PIN.</p>")
    a("</section>")


HEAD = (b"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        b"<meta name=viewport content='width=device-width,initial-scale=1'>"
        b"<meta name=color-scheme content='light dark'><title>Meter setup</title>")

STYLE = (
    b"<style>:root{--bg:#eef1f4;--card:#fff;--fg:#14181d;--mute:#55606c;--line:#d5dbe1;--acc:#0a5cb8;"
    b"--onacc:#fff;--good:#146c34;--goodbg:#e0f3e6;--bad:#a61b12;--badbg:#fde9e7;--warn:#7a4f00;--warnbg:#fff2cf}"
    b"@media(prefers-color-scheme:dark){:root{--bg:#0d1014;--card:#181c22;--fg:#eef1f4;--mute:#a7b0bb;"
    b"--line:#2c323a;--acc:#6aaaff;--onacc:#0d1014;--good:#56cf83;--goodbg:#102a19;--bad:#ff7b6e;--badbg:#361512;"
    b"--warn:#f2bb48;--warnbg:#33270b}}"
    b"*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);"
    b"font:17px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;-webkit-text-size-adjust:100%}"
    b"header{background:#0a4a94;color:#fff;padding:.7em 1em}header h1{margin:0;font-size:1.3em}"
    b"header p{margin:.1em 0 0;font-size:.9em}main{max-width:36em;margin:0 auto;padding:.1em .6em 2em}"
    b"section,details{background:var(--card);border:1px solid var(--line);border-radius:12px;"
    b"padding:.8em 1em;margin:.7em 0}h2{font-size:1.1em;margin:0 0 .5em}h3{font-size:1em;margin:1em 0 .3em}"
    b"p{margin:.4em 0}.note{color:var(--mute);font-size:.9em}[hidden]{display:none}",
    b".msg{border-radius:10px;padding:.6em .8em;margin:.6em 0}"
    b".ok,.good{color:var(--good)}.msg.ok{background:var(--goodbg)}.bad{color:var(--bad)}"
    b".msg.bad{background:var(--badbg)}.busy,.warn{color:var(--warn)}.msg.busy{background:var(--warnbg)}"
    b"dl{display:grid;grid-template-columns:auto 1fr;gap:.25em .8em;margin:0}dt{color:var(--mute)}dd{margin:0}"
    b"table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}"
    b"th,td{padding:.45em .25em;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}"
    b"th:first-child,td:last-child{text-align:left}.derived{font-style:italic;color:var(--mute)}"
    b".kv th,.kv td{text-align:left;white-space:normal}.kv td{font-weight:600}"
    b"button{font:inherit;font-weight:600;min-height:48px;width:100%;padding:.5em 1em;margin:.35em 0;"
    b"border:2px solid var(--acc);border-radius:10px;background:var(--acc);color:var(--onacc)}"
    b"button.second{background:transparent;color:var(--acc)}button.danger{background:var(--bad);"
    b"border-color:var(--bad);color:var(--onacc)}",
    b"label{display:block;margin:.7em 0 .2em;font-weight:600}input{font:inherit}"
    b"#ssid_manual,#pw,#cal input:not([type=checkbox]),#cal select{width:100%;min-height:48px;"
    b"padding:.4em .7em;border:1px solid var(--mute);"
    b"border-radius:10px;background:var(--bg);color:var(--fg)}"
    b"input[type=radio],input[type=checkbox]{width:1.3em;height:1.3em;margin:0;flex:none}"
    b"fieldset{border:0;padding:0;margin:0}legend{font-weight:600;padding:0}"
    b".net{display:flex;align-items:center;gap:.6em;min-height:52px;margin:0;font-weight:400;"
    b"border-bottom:1px solid var(--line)}.net .ssid{flex:1;overflow-wrap:anywhere}"
    b".sig{color:var(--good);white-space:nowrap}.check{display:flex;gap:.6em;align-items:center;font-weight:400}"
    b"ul.items{list-style:none;padding:0;margin:0}ul.items li{padding:.5em 0;border-bottom:1px solid var(--line)}"
    b"summary{font-weight:600;min-height:32px}</style>",
)

WIFI_FORM = (
    b"</fieldset><label for=ssid_manual>Or type the network name</label><input id=ssid_manual name=ssid_manual "
    b"maxlength=32 autocomplete=off autocapitalize=none spellcheck=false>"
    b"<label for=pw>WiFi password</label><input type=password name=password id=pw maxlength=64 "
    b"autocomplete=off autocapitalize=none spellcheck=false>"
    b"<p class=note>8 to 63 characters: letters without accents, digits, spaces and keyboard symbols. "
    b"Capitals count. Leave it empty for an open network.</p>"
    b"<label class=check><input type=checkbox id=show onclick=\"pw.type=this.checked?'text':'password'\">"
    b"Show password</label><button type=submit>Connect</button></form>"
    b"<form method=post action=\"/scan\"><button type=submit class=second>Scan again</button></form>")

CAL_FORM = (
    b"<details id=cal><summary>Calibrate</summary><p class=note>Measure each phase's voltage with a multimeter "
    b"and, with a load running, the current of one CT's conductor with a clamp meter; type what they read. "
    b"The meter compares them with its own readings over 5 s and sets its gains. With a kettle or a heater "
    b"as the load it also sets that CT's phase.</p><form method=post action=\"/calibrate\">"
    b"<label for=v1>L1 volts</label><input id=v1 name=v1 inputmode=decimal autocomplete=off>"
    b"<label for=v2>L2 volts</label><input id=v2 name=v2 inputmode=decimal autocomplete=off>"
    b"<label for=v3>L3 volts</label><input id=v3 name=v3 inputmode=decimal autocomplete=off>"
    b"<label for=ct>CT</label><select id=ct name=ct><option value=''>none</option><option>1</option>"
    b"<option>2</option><option>3</option></select><label for=amps>Amps on that CT's conductor</label>"
    b"<input id=amps name=amps inputmode=decimal autocomplete=off><label class=check><input type=checkbox "
    b"name=resistive value=yes>The load is a kettle or a heater</label>"
    b"<button type=submit>Calibrate</button></form>")
CAL_UNDO = (b"<form method=post action=\"/calibrate\"><input type=hidden name=undo value=yes>"
            b"<button type=submit class=second>Undo the last calibration</button></form>")

RESET = (
    b"<details><summary>Factory reset</summary><form method=post action=\"/reset\"><label class=check>"
    b"<input type=checkbox name=confirm value=yes required>Clear WiFi and all settings. The serial number, "
    b"PIN and energy counters stay.</label><button type=submit class=danger>Factory reset</button></form>"
    b"</details></main>")

SCRIPT = (
    b"<script>var $=function(i){return document.getElementById(i)};"
    b"function age(s){return s==null?'never':s<120?s+' s ago':s<7200?Math.floor(s/60)+' min ago':"
    b"Math.floor(s/3600)+' h ago'}function recs(n){return n?n+(n==1?' record':' records'):'none'}"
    b"var CL={ok:'good',starting:'',off:'',waiting_clock:'warn',waiting:'warn'};"
    b"function t(i,s){var e=$(i);if(e)e.textContent=s}",
    b"function L(id,xs,key,label,empty){var ul=$(id),k=JSON.stringify(xs)+empty;if(ul.dataset.k==k)return;"
    b"ul.dataset.k=k;ul.textContent='';if(!xs.length)xs=[{message:empty}];xs.forEach(function(x){"
    b"var li=document.createElement('li');li.textContent=x.message;var fs=x[key];if(fs){"
    b"var f=document.createElement('form');f.method='post';f.action='/fix';for(var n in fs){"
    b"var i=document.createElement('input');i.type='hidden';i.name=n;i.value=fs[n];f.appendChild(i)}"
    b"var b=document.createElement('button');b.textContent=label;if(key=='undo')b.className='second';"
    b"f.appendChild(b);li.appendChild(f)}ul.appendChild(li)})}",
    b"function u(){fetch('/api/status').then(function(r){return r.json()}).then(function(d){"
    b"var up=d.upload,r=d.readings;t('net',d.links.message);t('cloud',up.message);"
    b"$('cloud').className=up.state in CL?CL[up.state]:'bad';t('age',age(up.last_success_age_s));"
    b"t('pending',recs(up.pending_records));t('lost',recs(up.lost_records));"
    b"t('lan',d.links.lan.message);if(!r)return;var rows=$('live').rows,dv=false;"
    b"r.phases.forEach(function(p,i){var c=rows[i+1].cells;dv=dv||p.voltage_derived;"
    b"c[1].textContent=p.vrms.toFixed(1)+(p.voltage_derived?'*':'');c[1].className=p.voltage_derived?'derived':'';"
    b"c[2].textContent=p.irms==null?'\\u2014':p.irms.toFixed(2);"
    b"c[3].textContent=p.real_power_w==null?'\\u2014':p.real_power_w.toFixed(0);c[4].textContent=p.direction});"
    b"$('derived').hidden=!dv;t('freq',r.frequency_hz.toFixed(2)+' Hz, '+r.wiring+' wiring');"
    b"L('diags',d.diagnostics,'fix','Fix it',r.judged?'Wiring looks right.':"
    b"'Checking the wiring again with the new settings...');"
    b"L('fixes',d.fixes,'undo','Undo','None: every CT is read as it is fitted.')}).catch(function(){})}"
    b"setInterval(u,3000)</script></body></html>",
)

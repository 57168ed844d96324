# uploader — the HTTPS transport: live frames and the spool's interval records to the cloud
# (docs/PROTOCOL.md).
#
# An output of the composition root (firmware/app.py), beside the interval recorder
# (firmware/recorder.py), which makes the records this one sends. on_readings(r) is called every
# window and only keeps the newest live frame (latest wins; a frame older than stale_ms is dropped,
# never queued). run() is one asyncio task: it waits for the clock (NTP) before the first TLS
# connection, sends the newest live frame every live_interval_ms, and backfills spooled records
# oldest-first in batches, with the sequence floor and the gap declarations of protocol version 2.
# Errors: 2xx done; 401/403 stop, status "credentials", and ask again every 15 min; 400 drop that
# record (or frame) and say so; 429, 5xx, timeouts, resets: retry with capped, jittered exponential
# backoff (and a server's Retry-After, within reason). Every request is signed (X-Meter-Serial,
# X-Meter-Signature: HMAC-SHA256 of the body with the upload key); the key and signatures are never
# logged. `status` is a dict for the setup page (firmware/status.py).

import asyncio
import binascii
import json
import random
import time

from https import Client, HttpError

from firmware.recorder import EPOCH_TO_UNIX_S, _r
from firmware.spool import LOST, MAX_SEQ, SKIPPED

LIVE_KEYS = ("vrms", "irms", "real_power_w")
_sleep_ms = getattr(asyncio, "sleep_ms", None) or (lambda ms: asyncio.sleep(ms / 1000))  # CPython tests
CREDENTIALS_RETRY_MS = 15 * 60 * 1000  # after a 401/403, try again this much later
CLOCK_SYNC_MS = 24 * 3600 * 1000  # NTP again once a day: the RTC drifts by seconds a day
CLOCK_RETRY_MS = 60 * 1000  # a failed check is tried again after this, doubling up to a day
CLOCK_STEP_S = 2  # a correction larger than this is logged and carried by the next record
RETRY_AFTER_MAX_MS = 10 * 60 * 1000  # a server's Retry-After (429, 503) is honoured up to this
_MONTHS = b"JanFebMarAprMayJunJulAugSepOctNovDec"
CREDENTIALS = "pairing or credentials: the server refused this device (HTTP %d); pair it again in the cloud"


def _utc_s(y, mo, d, h, mi, s):
    """Seconds from a fixed origin to a UTC date and time (only differences are used)."""
    y -= mo <= 2
    days = 365 * y + y // 4 - y // 100 + y // 400 + (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d
    return ((days * 24 + h) * 60 + mi) * 60 + s


def retry_after_ms(value, now=None):
    """How long a Retry-After header (bytes) asks to wait, in ms: delay-seconds, or an HTTP-date such
    as b"Wed, 21 Oct 2026 07:28:00 GMT" (RFC 9110 10.2.3) against now (time.gmtime()'s tuple; the
    RTC is UTC); None if it cannot be read."""
    try:
        if value.isdigit():
            return int(value) * 1000
        _, d, mon, y, hms, _ = value.split()
        k = _MONTHS.find(mon)
        h, mi, sec = (int(x) for x in hms.split(b":"))
        if len(mon) != 3 or k < 0 or k % 3:  # (b"ebM" is in the table, but no month)
            return None
        mo = k // 3 + 1
        t = now or time.gmtime()
        return max(0, _utc_s(int(y), mo, int(d), h, mi, sec) - _utc_s(t[0], t[1], t[2], t[3], t[4], t[5])) * 1000
    except (ValueError, TypeError):
        return None


class Uploader:
    name = "uploader"

    def __init__(self, settings, identity_status, spool, resolve=None, clock_ready=None, sync_clock=None,
                 log=print, batch_records=20, batch_bytes=8192, backoff_ms=(1000, 60000), timeout_ms=10000,
                 stale_ms=None, on_clock_step=None):
        """settings: the "upload" section, complete. on_clock_step(step_s): NTP corrected the clock by
        more than CLOCK_STEP_S (the recorder's clock_stepped: the next record carries it)."""
        self.url = settings["url"]
        ca = settings["ca_cert"]
        self.ca = binascii.a2b_base64(ca) if isinstance(ca, str) else ca  # config keeps it as base64 DER
        self.live_interval_ms = settings["live_interval_ms"]
        self.stale_ms = stale_ms or max(2000, 2 * self.live_interval_ms)
        self.identity = identity_status.identity
        self.spool = spool
        self.resolve = resolve
        self.clock_ready = clock_ready or (lambda: time.gmtime()[0] >= 2024)
        self.sync_clock = sync_clock
        self.on_clock_step = on_clock_step
        self.log = log
        self.batch_records, self.batch_bytes = batch_records, batch_bytes
        self.backoff_min_ms, self.backoff_max_ms = backoff_ms
        self.timeout_ms = timeout_ms
        self._live = None  # (ticks_ms, frame dict): only the newest
        self._fresh = asyncio.Event()  # set by on_readings: a new frame is waiting
        self._live_sent_ms = time.ticks_ms()
        self._failures = 0
        self._server_version = None  # 2 once a reply carried next_seq; 1 if it did not (docs/PROTOCOL.md)
        self._single = False  # after a 400 on a batch: send one record at a time to find the bad one
        self._synced_ms = None  # ticks of the last NTP attempt
        self._sync_every_ms = CLOCK_SYNC_MS  # until the next one: a day, or less after a failure
        refusal = identity_status.upload_refusal() if self.identity is None else None
        if refusal is None and self.identity is None:
            refusal = "no device identity: uploads are off"
        if not self.url:
            refusal = "no upload URL configured: uploads are off"
        elif not self.url.startswith("https://"):  # the settings allow http://; the meter sends only over TLS
            refusal = "upload.url is not an https:// URL (the meter uploads only over TLS): uploads are off"
        elif not self.ca:
            refusal = "no CA certificate configured (upload.ca_cert): uploads are off"
        self.enabled = refusal is None
        self.status = {"state": "off" if refusal else "starting", "message": refusal or "starting",
                       "pending": 0, "lost": spool.lost, "rejected": spool.rejected, "records_sent": 0,
                       "live_sent": 0, "live_dropped": 0, "last_ok_s": None, "last_error": None,
                       "retry_in_ms": 0, "connections": 0}

    # -- the measurement side: cheap, never blocks -------------------------------------------------
    def on_readings(self, r):
        if not self.enabled:
            return
        self._live = (time.ticks_ms(), r)
        self._fresh.set()

    def on_settings(self, changed):
        """Settings changed (firmware/config.py apply()): live_interval_ms taken from the next frame
        on. url and ca_cert are not: whether uploads are on at all was decided at start-up, and with
        it whether the recorder makes records (firmware/app.py); they are in force after a restart."""
        up = changed.get("upload") or {}
        if "live_interval_ms" not in up:
            return ()
        self.live_interval_ms = up["live_interval_ms"]
        self.stale_ms = max(2000, 2 * self.live_interval_ms)
        return ("upload.live_interval_ms",)

    # -- the clock: NTP at start and then daily (the RTC drifts, and a deploy sets it from a computer) --
    def clock_sync_due(self):
        return self.sync_clock is not None and (
            self._synced_ms is None or time.ticks_diff(time.ticks_ms(), self._synced_ms) >= self._sync_every_ms)

    def set_clock(self):
        """NTP now (it blocks the VM while it waits: at start, then once a day). True if the clock is
        set. A step of more than CLOCK_STEP_S is logged and carried by the next record."""
        before_s, before_ms = time.time(), time.ticks_ms()
        was_set = self.clock_ready()
        ok = False
        if self.sync_clock is not None:
            try:
                ok = self.sync_clock()
            except Exception as e:
                self.status["last_error"] = "clock: %s" % e
        self._synced_ms = time.ticks_ms()
        # A failure (at start the network is often not up yet) is tried again soon, then less often.
        if ok:
            self._sync_every_ms = CLOCK_SYNC_MS
        elif self._sync_every_ms >= CLOCK_SYNC_MS:  # the first failure since a success
            self._sync_every_ms = CLOCK_RETRY_MS
        else:
            self._sync_every_ms = min(2 * self._sync_every_ms, CLOCK_SYNC_MS)
        if ok and was_set:
            step_s = time.time() - before_s - time.ticks_diff(time.ticks_ms(), before_ms) // 1000
            if step_s > CLOCK_STEP_S or step_s < -CLOCK_STEP_S:
                if self.on_clock_step is not None:
                    self.on_clock_step(step_s)
                self.log("clock: corrected by %+d s from NTP (records before this one have times off by that)"
                         % step_s)
        return ok or self.clock_ready()

    def _live_body(self):
        now = time.ticks_ms()
        if self._live is None:
            return None
        t, r = self._live
        self._live = None
        if time.ticks_diff(now, t) > self.stale_ms:
            self.status["live_dropped"] += 1
            return None
        phases = [dict((k, _r(ph[k], 2)) for k in LIVE_KEYS) for ph in r["phases"]]
        age_ms = time.ticks_diff(now, t)
        t_ms = time.time_ns() // 1000000 + EPOCH_TO_UNIX_S * 1000 - age_ms
        return json.dumps({"serial": self.identity.serial, "t_ms": t_ms,
                           "phases": phases, "total_w": _r(r["total"]["real_power_w"], 1)}).encode()

    # -- the network side ---------------------------------------------------------------------------
    def _headers(self, body):
        return {"Content-Type": "application/json", "X-Meter-Serial": self.identity.serial,
                "X-Meter-Signature": self.identity.sign(body)}

    def _backoff_ms(self):
        d = min(self.backoff_max_ms, self.backoff_min_ms << min(self._failures, 16))
        return d // 2 + random.getrandbits(16) * (d // 2) // 65536  # "equal jitter": 50-100 % of d

    def _failed(self, why, state="retrying", wait_ms=0):
        """Count a failure and say it; the delay before the next try: the backoff, or wait_ms (what the
        server asked for) if longer, with the time it ends in the message."""
        self._failures += 1
        delay = max(self._backoff_ms(), wait_ms)
        if wait_ms:
            until = time.gmtime(time.time() + delay // 1000)
            why += ": waiting for the server until %02d:%02d:%02d UTC" % (until[3], until[4], until[5])
        self.status.update({"state": state, "message": why, "last_error": why, "retry_in_ms": delay})
        self.log("upload: %s (retry in %d ms)" % (why, delay))
        return delay

    async def _send(self, client, path, body):
        """The reply's (status, body); HttpError for a network failure."""
        status, reply = await client.request("POST", path, body, self._headers(body))
        if 200 <= status < 300:
            # Wall-clock time (set: TLS needed it), not ticks: an age from ticks would wrap after ~6 days.
            self.status["last_ok_s"] = time.time()
        return status, reply

    async def _send_records(self, client):
        spool = self.spool
        # Numbering not known to be the server's (spool.unsure): ask first (no records: the reply's
        # next_seq), and send none that could carry a number the server already holds.
        held = spool.unsure is not None
        batch = [] if held else spool.batch(1 if self._single else self.batch_records, self.batch_bytes)
        # (declarations: not to a version 1 server, which cannot keep them, nor numbers not yet final)
        gaps = list(spool.gaps) if self._server_version != 1 and not held else []
        if not (batch or gaps or held):
            return None
        # The body as pieces (lib/https sends them in turn): a batch is up to batch_bytes, and after
        # days of uptime the heap may have no free block that large.
        body = [b'{"serial":' + json.dumps(self.identity.serial).encode() + b',"records":[']
        for i, (_, r) in enumerate(batch):
            body.append(b"," + r if i else r)
        body.append(b"]")
        for kind in (SKIPPED, LOST):  # declared numbers no record will come for: [[first, end], ...]
            ranges = [[a, b] for a, b, k in gaps if k == kind]
            if ranges:
                body.append(b',"' + kind.encode() + b'":' + json.dumps(ranges).encode())
        body.append(b"}")
        status, reply = await self._send(client, "/v1/records", body)
        if 200 <= status < 300:
            try:
                doc = json.loads(reply)
                acked, floor = doc["acked"], doc.get("next_seq")
                # Only records of this batch can be acknowledged: a seq the device did not just send
                # (a buggy or hostile server) must not delete a record the server never had.
                acked = [s for s, _ in batch if s in acked]
            except (ValueError, KeyError, TypeError, AttributeError):
                return "the server's reply has no acked list"
            spool.ack(acked)
            self.status["records_sent"] += len(acked)
            self._single = False
            if type(floor) is int and 0 <= floor < MAX_SEQ:  # protocol version 2: it keeps declarations too
                self._server_version = 2
                spool.delivered(gaps)
                spool.floor(floor)
            else:
                self._server_version = 1
                if held:
                    spool.floor(None)  # it cannot say: go on as version 1 did, said on the console
            if batch and not acked:
                return "the server acknowledged none of the records sent"  # back off, don't spin
            return None
        if status == 400:
            if not batch:  # declarations or the question alone refused: they cannot become valid by waiting
                spool.delivered(gaps)
                return "the server refused the request without records (HTTP 400: %s)" % reply[:120].decode()
            if len(batch) > 1:
                self._single = True  # find the bad record one at a time
                return None
            self.spool.reject(batch[0][0])
            self.log("upload: the server refused record seq %d as invalid (%s): dropped" % (
                batch[0][0], reply[:120].decode()))
            return None
        return status

    async def _cycle(self, client):
        """One round: the live frame, then one batch of records. None when all went well, else why."""
        body = self._live_body()
        if body is not None:
            self._live_sent_ms = time.ticks_ms()
            status, reply = await self._send(client, "/v1/live", body)
            if status == 400:
                self.status["live_dropped"] += 1
                self.log("upload: the server refused a live frame as invalid (%s): dropped" % reply[:120].decode())
            elif not 200 <= status < 300:
                return status
            else:
                self.status["live_sent"] += 1
        return await self._send_records(client)

    async def run(self):
        if not self.enabled:
            self.log("upload: " + self.status["message"])
            return
        client = Client(self.url, self.ca, self.resolve, self.timeout_ms, self.timeout_ms)
        while True:
            self.status["pending"] = self.spool.pending()
            self.status["lost"], self.status["rejected"] = self.spool.lost, self.spool.rejected
            if not self.clock_ready() or self.clock_sync_due():
                if not self.set_clock():
                    await _sleep_ms(self._failed("the clock is not set (NTP): TLS waits for it", "waiting_clock"))
                    continue
            try:
                why = await self._cycle(client)
            except HttpError as e:
                why = str(e)
            except Exception as e:  # whatever happens, the task keeps going (and the meter keeps measuring)
                await client.close()
                why = "unexpected %s: %s" % (type(e).__name__, e)
            self.status["connections"] = client.connections
            if why in (401, 403):
                # Stopped, not hammering the server; but pairing may be fixed in the cloud meanwhile,
                # so ask again now and then rather than only after a reboot.
                self.status.update({"state": "credentials", "message": CREDENTIALS % why, "last_error": why,
                                    "retry_in_ms": CREDENTIALS_RETRY_MS})
                self.log("upload: " + CREDENTIALS % why + ": uploads stopped, asking again in %d min"
                         % (CREDENTIALS_RETRY_MS // 60000))
                await client.close()
                await _sleep_ms(CREDENTIALS_RETRY_MS)
                continue
            wait_ms = retry_after_ms(client.retry_after) if why in (429, 503) and client.retry_after else None
            if wait_ms is not None:  # the server says when: then, within reason, and never sooner than backoff
                await _sleep_ms(self._failed("the server is busy (HTTP %d) and asked to wait" % why, "waiting",
                                             max(1, min(wait_ms, RETRY_AFTER_MAX_MS))))
                continue
            if why is not None:
                if isinstance(why, int):
                    why = "the server answered HTTP %d" % why
                await _sleep_ms(self._failed(why))
                continue
            self._failures = 0
            self.status.update({"retry_in_ms": 0, "pending": self.spool.pending()})
            if self.status["last_ok_s"] is not None:  # "ok" once the server has accepted something, not
                self.status.update({"state": "ok", "message": "uploading"})  # a round with nothing to send
            # Backfilling: next batch at once (yielding to the meter); otherwise wait for the next frame.
            await self._pause()

    async def _pause(self):
        """Backfilling: go on at once (yielding to the meter). Otherwise wait for the next frame, but
        send frames at most every live_interval_ms: a frame goes out as soon as its window closes."""
        if self.spool.pending():
            await _sleep_ms(0)
            return
        # (7/8 of the interval: a frame that comes a little early, by jitter, still goes at once)
        wait = self.live_interval_ms * 7 // 8 - time.ticks_diff(time.ticks_ms(), self._live_sent_ms)
        if wait > 0:
            await _sleep_ms(wait)
        if self._live is None:
            self._fresh.clear()
            try:
                await asyncio.wait_for(self._fresh.wait(), self.live_interval_ms / 1000)
            except asyncio.TimeoutError:
                pass

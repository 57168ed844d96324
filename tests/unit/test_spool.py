# The upload spool and the uploader's measurement side: numbering, spilling, acks, losses, reboots.
import json
import os

from firmware import identity
from firmware.recorder import Recorder
from firmware.spool import SEQ_BLOCK, Spool
from firmware.uploader import Uploader
from simworld import world
from support import MICROPYTHON, skip, tmpdir


def _spool(folder, **kw):
    return Spool(folder, log=lambda m: None, **kw)


def _seqs(batch):
    return [s for s, _ in batch]


def test_sequence_numbers_only_increase_across_reboots():
    d = tmpdir() + "/spool"
    s = _spool(d)
    assert [s.add({"n": i}) for i in range(3)] == [0, 1, 2]
    s.shutdown()
    s2 = _spool(d)  # a reboot: numbering continues above everything handed out before
    seq = s2.add({"n": 3})
    assert seq >= 3
    assert seq == SEQ_BLOCK  # one reserved block per SEQ_BLOCK records, not a write per record
    assert _seqs(s2.batch(10, 100000)) == [0, 1, 2]  # the spilled records wait, oldest first


def test_a_restart_says_why_the_record_numbers_jump():
    d = tmpdir() + "/spool"
    said = []
    s = Spool(d, log=said.append)
    # a first start (or an erased flash) cannot know which numbers the server holds: it says so
    assert said == ["upload: no spool state (a first start, or an erased flash): records are numbered from 0 but "
                    "held until the server says which numbers it already has"]
    for i in range(3):
        s.add({"n": i})
    s.shutdown()
    Spool(d, log=said.append)
    assert said[1:] == ["upload: record numbers go on from %d: they are reserved %d at a time, so a restart skips "
                        "3-%d (declared to the server as skipped)" % (SEQ_BLOCK, SEQ_BLOCK, SEQ_BLOCK - 1)]


def test_records_spill_to_flash_in_batches_and_are_deleted_only_when_acknowledged():
    d = tmpdir() + "/spool"
    s = _spool(d, ram_max=3)
    for i in range(7):
        s.add({"n": i})
    assert len([n for n in os.listdir(d) if n.endswith(".rec")]) == 2  # two files of 3; one record in RAM
    assert s.pending() == 7
    b = s.batch(2, 100000)
    assert _seqs(b) == [0, 1]
    assert json.loads(b[0][1])["n"] == 0
    s.ack([1])  # acks may come for any subset: only those go
    assert _seqs(s.batch(10, 100000)) == [0, 2]
    s.ack([0, 2])
    assert len([n for n in os.listdir(d) if n.endswith(".rec")]) == 1  # the first file is gone
    assert _seqs(s.batch(10, 100000)) == [3, 4, 5]
    s.ack([3, 4, 5])
    assert _seqs(s.batch(10, 100000)) == [6]
    s.ack([6])
    assert s.pending() == 0 and s.batch(10, 100000) == []


def test_a_full_spool_drops_the_oldest_and_counts_the_loss_across_reboots():
    d = tmpdir() + "/spool"
    s = _spool(d, ram_max=2, max_files=2)
    for i in range(7):  # files [0,1] [2,3] [4,5]: the third pushes out the first
        s.add({"n": i})
    assert s.lost == 2
    s.shutdown()  # RAM [6] spilled: pushes out [2,3]
    s2 = _spool(d, ram_max=2, max_files=2)
    assert s2.lost == 4
    assert _seqs(s2.batch(10, 100000)) == [4, 5]
    s2.ack([4, 5])
    assert _seqs(s2.batch(10, 100000)) == [6]


def test_a_rejected_record_is_dropped_and_counted():
    d = tmpdir() + "/spool"
    s = _spool(d)
    s.add({"n": 0})
    s.add({"n": 1})
    s.reject(0)
    assert s.rejected == 1 and _seqs(s.batch(10, 100000)) == [1]
    assert _spool(d).rejected == 1


def test_a_batch_stays_near_its_byte_budget():
    s = _spool(tmpdir() + "/spool")
    for _ in range(5):
        s.add({"pad": "x" * 100})
    assert len(s.batch(10, 250)) == 2


def _readings(p_w):
    ph = [{"phase": p, "vrms": 230.0, "irms": p_w / 230.0, "real_power_w": p_w, "apparent_power_va": p_w,
           "reactive_power_var": 0.0, "power_factor": 1.0, "direction": "import"} for p in (1, 2, 3)]
    return {"t_ms": 0, "frequency_hz": 50.0, "wiring": "three-phase", "phases": ph,
            "total": {"real_power_w": 3 * p_w}, "diagnostics": [{"code": "X", "phase": 1, "message": "m"}]}


class _Energy:
    def snapshot(self):
        return {"import_mwh": [5, 6, 7], "export_mwh": [0, 0, 0], "net_import_mwh": 18, "net_export_mwh": 0}


class _Uploader(Uploader):
    """The HTTPS transport with the interval recorder beside it, wired and fed each window's readings
    as the composition root does (firmware/app.py: the recorder first, then the transport)."""

    def on_readings(self, r):
        self.recorder.on_readings(r)
        Uploader.on_readings(self, r)


def _uploader(settings=None, ident=True, settled=True):
    """An uploader on a fresh spool; settled: whose numbering the server has confirmed already (else it
    asks the server first, as after a first start)."""
    st = identity.IdentityStatus(identity.derive(b"k" * 32, "UNIT-1") if ident else None)
    cfg = {"url": "https://localhost:1", "ca_cert": b"\x30\x03\x02\x01\x00", "live_interval_ms": 1000,
           "record_interval_s": 10}
    cfg.update(settings or {})
    spool = _spool(tmpdir() + "/spool")
    if settled:
        spool.floor(0)
    up = _Uploader(cfg, st, spool, log=lambda m: None)
    up.recorder = Recorder(cfg, _Energy(), spool, enabled=up.enabled, log=lambda m: None)
    up.on_clock_step = up.recorder.clock_stepped
    return up


def test_an_interval_record_averages_the_windows_and_carries_the_counters():
    up = _uploader()
    for p_w in (100.0, 200.0, 300.0):
        world.advance_us(1_000_000)
        up.on_readings(_readings(p_w))
    assert up.spool.pending() == 0  # the interval (10 s) is not over yet
    for _ in range(7):
        world.advance_us(1_000_000)
        up.on_readings(_readings(400.0))
    rec = json.loads(up.spool.batch(1, 100000)[0][1])
    assert rec["seq"] == 0 and rec["windows"] == 10
    assert abs(rec["phases"][1]["real_power_w"] - (100 + 200 + 300 + 7 * 400) / 10) < 0.01
    assert rec["energy_mwh"]["net_import_mwh"] == 18
    assert rec["diagnostics"] == ["X"]


def test_a_stale_live_frame_is_dropped_not_sent():
    up = _uploader()
    up.on_readings(_readings(100.0))
    world.advance_us(2_500_000)  # older than twice the live interval
    assert up._live_body() is None and up.status["live_dropped"] == 1
    up.on_readings(_readings(200.0))
    body = json.loads(up._live_body())
    assert body["phases"][0]["real_power_w"] == 200.0 and body["serial"] == "UNIT-1"
    assert up._live_body() is None  # latest wins, and is sent once


def test_without_identity_or_url_uploads_are_off_and_say_why():
    up = _uploader(ident=False)
    assert not up.enabled and "identity" in up.status["message"]
    up.on_readings(_readings(1.0))
    assert up.spool.pending() == 0
    up = _uploader({"url": ""})
    assert not up.enabled and "URL" in up.status["message"]
    # The settings allow http://, the meter sends only over TLS: off, saying so (not a task failing each minute).
    up = _uploader({"url": "http://cloud.example/", "ca_cert": "AAAA"})
    assert not up.enabled and up.status["state"] == "off" and "https://" in up.status["message"]


def test_the_signature_covers_the_body_and_the_key_never_shows():
    up = _uploader()
    h = up._headers(b'{"a":1}')
    assert h["X-Meter-Serial"] == "UNIT-1"
    assert h["X-Meter-Signature"] == up.identity.sign(b'{"a":1}') != up.identity.sign(b'{"a":2}')
    key_hex = "".join("%02x" % b for b in up.identity.upload_key)
    assert key_hex not in json.dumps(up.status) and key_hex not in str(h)


def test_backoff_doubles_with_jitter_and_is_capped():
    up = _uploader()
    up.backoff_min_ms, up.backoff_max_ms = 1000, 60000
    seen = []
    for failures in range(12):
        up._failures = failures
        d = min(60000, 1000 << failures)
        waits = [up._backoff_ms() for _ in range(20)]
        assert all(d // 2 <= w <= d for w in waits), (failures, waits)
        seen.append(max(waits))
    assert max(seen) <= 60000 and len(set(waits)) > 1  # capped, and jittered


def test_a_failing_flash_does_not_make_ram_grow_without_bound():
    d = tmpdir() + "/spool"
    s = _spool(d, ram_max=3)

    def refuse():
        raise OSError(28)  # ENOSPC

    s.spill = refuse
    for i in range(50):
        try:
            s.add({"n": i})
        except OSError:
            pass
    assert len(s.ram) <= 2 * 3 + 1 and s.lost >= 40  # the oldest go, and are counted


def test_a_foreign_state_file_or_an_unreadable_spool_file_does_not_stop_the_spool():
    d = tmpdir() + "/spool"
    s = _spool(d, ram_max=2)
    for i in range(4):
        s.add({"n": i})
    with open(d + "/state.json", "w") as f:
        f.write("[1, 2, 3]")  # valid JSON, not a state object
    s2 = _spool(d, ram_max=2)  # boots instead of raising
    first, count = s2.files[0]
    import atomicfile

    read_lines = atomicfile.read_lines
    bad = s2._path(first, count)

    def failing_read(path, **kw):
        if path == bad:
            raise OSError(5)  # EIO: the flash cannot read this file back
        return read_lines(path, **kw)

    atomicfile.read_lines = failing_read
    try:
        out = s2.batch(10, 100000)
    finally:
        atomicfile.read_lines = read_lines
    # The unreadable file's records are counted lost, and the next file's go out instead.
    assert s2.lost >= count and _seqs(out) == [2, 3]


def test_the_upload_state_is_ok_only_once_the_server_has_accepted_something():
    # A round with nothing to send (no fresh frame, no record) is not an upload: the page must not
    # say "Readings reach the cloud, last upload 0 s ago" while nothing goes out.
    import asyncio

    from firmware import uploader as mod

    world.set_realtime()  # asyncio waits in real time here
    sent = []

    class Server:  # stands in for lib/https.Client: answers every request with 200
        connections = 0

        def __init__(self, *args):
            pass

        async def request(self, method, path, body, headers):
            sent.append(path)
            return 200, b'{"acked": []}'

        async def close(self):
            pass

    real, mod.Client = mod.Client, Server
    try:
        up = _uploader({"live_interval_ms": 500})
        up.clock_ready = lambda: True

        async def main():
            task = asyncio.create_task(up.run())
            await asyncio.sleep(1.2)  # a few rounds with nothing to send
            before = (up.status["state"], up.status["last_ok_s"], len(sent))
            up.on_readings(_readings(100.0))
            for _ in range(40):
                await asyncio.sleep(0.05)
                if up.status["state"] == "ok":
                    break
            task.cancel()
            return before

        before = asyncio.run(main())
    finally:
        mod.Client = real
        asyncio.new_event_loop()
    assert before == ("starting", None, 0)
    assert sent == ["/v1/live"] and up.status["state"] == "ok" and up.status["last_ok_s"] is not None


def test_the_clock_is_set_from_ntp_at_start_and_daily_and_a_correction_is_carried_by_the_next_record():
    if not MICROPYTHON:
        skip("the simulated RTC: under CPython time.time() is the host's")
    from firmware import uploader as mod

    # The RTC an old `mpremote rtc --set` left: the computer's local time (UTC+1), taken for UTC.
    world.set_wall_time(simworld_epoch(2026, 12, 7, 2, 0, 0))
    said = []
    wrong_by_s = [3600]

    def ntp():  # what ntptime.settime() does: the RTC set to the true UTC time
        world.set_wall_time(world.wall_time_us() // 1_000_000 - wrong_by_s[0])
        wrong_by_s[0] = 0
        return True

    up = _uploader()
    up.sync_clock, up.log = ntp, said.append
    assert up.clock_ready() and up.clock_sync_due()  # set, but never checked against NTP: due at start
    assert up.set_clock() and not up.clock_sync_due()
    assert said == ["clock: corrected by -3600 s from NTP (records before this one have times off by that)"]
    for _ in range(10):  # the next interval record says the clock was corrected, and by how much
        world.advance_us(1_000_000)
        up.on_readings(_readings(100.0))
    world.advance_us(1_000_000)
    up.on_readings(_readings(100.0))
    records = [json.loads(r) for _, r in up.spool.batch(10, 100000)]
    assert records[0]["clock_step_s"] == -3600 and all("clock_step_s" not in r for r in records[1:])
    world.advance_us(mod.CLOCK_SYNC_MS * 1000 - 20_000_000)
    assert not up.clock_sync_due()
    world.advance_us(30_000_000)
    assert up.clock_sync_due()  # once a day: the RTC drifts
    assert up.set_clock() and len(said) == 1  # a correction within 2 s is not news


def simworld_epoch(*civil):
    import simworld

    return simworld.epoch_from_civil(*civil)


def test_a_failed_clock_check_is_tried_again_soon_then_less_often_and_daily_once_it_works():
    from firmware import uploader as mod

    answers = [False, False, True]
    up = _uploader()
    up.sync_clock = lambda: answers.pop(0)
    waits = []
    for _ in range(3):
        assert up.clock_sync_due()
        up.set_clock()
        waits.append(up._sync_every_ms)
        world.advance_us(up._sync_every_ms * 1000)
    assert waits == [mod.CLOCK_RETRY_MS, 2 * mod.CLOCK_RETRY_MS, mod.CLOCK_SYNC_MS]


def test_only_the_records_just_sent_can_be_acknowledged():
    # A server that acknowledges seqs the device did not send in this batch (buggy or hostile) must
    # not make them vanish: they were never stored there.
    import asyncio

    world.set_realtime()  # asyncio waits in real time here
    up = _uploader()
    for n in range(30):
        up.spool.add({"n": n})
    sent = []

    class Server:
        async def request(self, method, path, body, headers):
            sent.append(json.loads(b"".join(body)))
            return 200, json.dumps({"acked": [0, 1] + list(range(25, 30)) + ["x", None]}).encode()

    assert asyncio.run(up._send_records(Server())) is None
    asyncio.new_event_loop()
    assert [r["seq"] for r in sent[0]["records"]][:2] == [0, 1] and 25 not in [r["seq"] for r in sent[0]["records"]]
    assert up.status["records_sent"] == 2  # 0 and 1: sent and acknowledged
    pending = []
    while True:
        batch = up.spool.batch(50, 1 << 20)
        if not batch:
            break
        pending += _seqs(batch)
        up.spool.ack(_seqs(batch))
    assert pending == list(range(2, 30)) and up.spool.lost == 0


def test_retry_after_is_read_as_seconds_or_an_http_date():
    from firmware.uploader import retry_after_ms

    now = (2026, 12, 7, 10, 0, 0, 0, 341)
    assert retry_after_ms(b"120", now) == 120000
    assert retry_after_ms(b"Mon, 07 Dec 2026 10:02:30 GMT", now) == 150000
    assert retry_after_ms(b"Thu, 01 Jan 2027 00:00:00 GMT", now) == (24 * 24 + 14) * 3600 * 1000
    assert retry_after_ms(b"Sun, 06 Dec 2026 10:00:00 GMT", now) == 0  # a date gone by: now
    for bad in (b"soon", b"Mon, 07 Foo 2026 10:02:30 GMT", b"", b"-5", b"Mon, 07 Dec 2026 10:xx:30 GMT",
                b"Mon, 07 ebM 2026 10:02:30 GMT"):
        assert retry_after_ms(bad, now) is None, bad


def test_a_busy_server_that_says_when_is_waited_for_within_a_cap():
    import asyncio

    from firmware import uploader as mod

    world.set_realtime()  # asyncio waits in real time here
    asked, after = [], [None]

    class Server:  # stands in for lib/https.Client
        connections = 0
        retry_after = None

        def __init__(self, *args):
            pass

        async def request(self, method, path, body, headers):
            asked.append(path)
            self.retry_after = after[0]
            return 503, b"busy"

        async def close(self):
            pass

    real, mod.Client = mod.Client, Server
    try:
        seen = []
        async def main(up):
            task = asyncio.create_task(up.run())
            for _ in range(40):
                await asyncio.sleep(0.05)
                if up.status["state"] != "starting":
                    break
            task.cancel()

        for after[0] in (b"120", b"86400"):
            up = _uploader({"live_interval_ms": 500})
            up.clock_ready = lambda: True
            up.on_readings(_readings(100.0))
            asyncio.run(main(up))
            seen.append((up.status["state"], up.status["retry_in_ms"], up.status["message"]))
    finally:
        mod.Client = real
        asyncio.new_event_loop()
    assert seen[0][:2] == ("waiting", 120000) and "waiting for the server until" in seen[0][2]
    assert seen[1][:2] == ("waiting", mod.RETRY_AFTER_MAX_MS)  # a day asked: ten minutes given
    assert len(asked) == 2  # one request each: nothing more while waiting


def test_one_oversized_line_is_skipped_counted_and_never_blocks_the_uploads():
    from firmware import spool as mod

    d = tmpdir() + "/spool"
    s = _spool(d, ram_max=3)
    for i in range(6):
        s.add({"n": i})  # two files of three
    first, count = s.files[0]
    with open(s._path(first, count), "rb") as f:
        lines = f.read().split(b"\n")
    lines[1] = b'{"seq": 1, "pad": "' + b"x" * 200000 + b'"}'  # a damaged file: one line of 200 KB
    with open(s._path(first, count), "wb") as f:
        f.write(b"\n".join(lines))
    s2 = _spool(d, ram_max=3)
    out = s2.batch(10, 100000)
    assert _seqs(out) == [0, 2] and s2.lost == 1  # the line was left out, not read whole
    s2.ack(_seqs(out))
    assert _seqs(s2.batch(10, 100000)) == [3, 4, 5]
    # ...and a record that would be such a line is never written.
    seq = s2.add({"pad": "y" * mod.MAX_RECORD_BYTES})
    assert s2.lost == 2 and seq == s2.next_seq - 1 and all(q != seq for q, _ in s2.ram)


def _counters(x):
    return x if isinstance(x, dict) and type(x.get("net_import_mwh")) is int else None


def test_the_newest_spooled_energy_is_found_whatever_the_file_ends_with():
    d = tmpdir() + "/spool"
    s = _spool(d, ram_max=3)
    for i in range(6):
        s.add({"energy_mwh": {"net_import_mwh": 100 * i}})
    assert s.newest_energy(_counters) == (5, {"net_import_mwh": 500})
    first, count = s.files[-1]
    with open(s._path(first, count), "ab") as f:
        f.write(b'{"seq": 9, "pad": "' + b"z" * 5000 + b'"')  # a cut-off, oversized last line
    assert s.newest_energy(_counters) == (5, {"net_import_mwh": 500})
    with open(s._path(first, count), "ab") as f:
        f.write(b'\n{"seq": 10, "energy_mwh": {"net_imp')  # cut short by a power cut, not oversized
    assert s.newest_energy(_counters) == (5, {"net_import_mwh": 500})
    with open(s._path(first, count), "wb") as f:
        f.write(b"garbage")  # the newest file damaged: the one before it
    assert s.newest_energy(_counters) == (2, {"net_import_mwh": 200})
    assert _spool(tmpdir() + "/empty").newest_energy(_counters) is None

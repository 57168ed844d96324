# Record numbers (docs/PROTOCOL.md, version 2): never reused, even when the device lost its numbering
# (spool state gone or damaged, a flash erased and provisioned again), and every number the server
# has no record for is declared skipped or lost, through restarts, outages and power cuts.
import asyncio
import json
import os

from powercut import Flash, PowerCut, steps_of

from firmware import config, identity
from firmware.spool import MAX_RECORD_BYTES, SEQ_BLOCK, Spool
from firmware.uploader import Uploader
from simworld import world
from support import tmpdir

SERIAL = "UNIT-1"


class Server:
    """The ingest server's side of the protocol in memory (tools/ingest.py is the real one): stores
    records by seq (a seq it holds already is acknowledged, not stored again), keeps declarations,
    answers next_seq (version 2; version=1: a server from before, which does not)."""

    def __init__(self, held=0, version=2):
        self.records = dict((s, {"seq": s, "old": True}) for s in range(held))  # an earlier life's records
        self.gaps = []  # (kind, first, end)
        self.version = version
        self.down = False
        self.refuse = ()  # "n" of records it answers 400 for
        self.requests = 0

    def next_seq(self):
        return max([s + 1 for s in self.records] + [b for _, _, b in self.gaps] + [0])

    async def request(self, method, path, body, headers):
        self.requests += 1
        if self.down:
            return 500, b'{"error": "down"}'
        doc = json.loads(b"".join(body))
        for r in doc["records"]:
            if r.get("n") in self.refuse:
                return 400, b'{"error": "invalid"}'
        acked = []
        for r in doc["records"]:
            self.records.setdefault(r["seq"], r)  # a duplicate: acknowledged, kept once
            acked.append(r["seq"])
        reply = {"acked": acked}
        if self.version == 2:
            for kind in ("skipped", "lost"):
                self.gaps += [(kind, a, b) for a, b in doc.get(kind, ())]
            reply["next_seq"] = self.next_seq()
        return 200, json.dumps(reply).encode()

    def account(self):
        """(records, skipped, lost, unexplained), as `python -m tools.ingest --gaps` counts them."""
        n = [0, 0, 0, 0]
        for seq in range(self.next_seq()):
            kinds = [k for k, a, b in self.gaps if a <= seq < b]
            n[0 if seq in self.records else 2 if "lost" in kinds else 1 if kinds else 3] += 1
        return tuple(n)

    def made(self):
        """The "n" of every record this device made that the server holds, in seq order."""
        return [self.records[s]["n"] for s in sorted(self.records) if "n" in self.records[s]]


def _uploader(spool):
    st = identity.IdentityStatus(identity.derive(b"k" * 32, SERIAL))
    cfg = {"url": "https://localhost:1", "ca_cert": b"\x30\x03\x02\x01\x00", "record_interval_s": 10}
    return Uploader(config.section("upload", cfg), st, spool, log=lambda m: None)


def _upload(up, server, rounds=40):
    """Upload rounds until nothing is waiting (or the rounds are spent)."""
    async def run():
        for _ in range(rounds):
            await up._send_records(server)
            sp = up.spool
            if not sp.pending() and not getattr(sp, "gaps", ()) and getattr(sp, "unsure", None) is None:
                break

    world.set_realtime()
    asyncio.run(run())
    asyncio.new_event_loop()


def _add(spool, *ns, pad=0):
    for n in ns:
        spool.add({"n": n, "phases": [], "pad": "x" * pad})


def test_a_device_that_lost_its_numbering_never_reuses_a_number_the_server_holds():
    # The server holds seqs 0-9 of this serial from before; the device starts with no spool state
    # (erased and provisioned again, or state.json removed) and no spooled records. Before the fix
    # it numbered from 0 again, the server took 0-4 for duplicates, and they were deleted unseen.
    for damage in (None, b"\x00garbage", b'{"reserved": "abc"}'):
        d = tmpdir() + "/spool"
        if damage is not None:
            os.mkdir(d)
            with open(d + "/state.json", "wb") as f:
                f.write(damage)
        server = Server(held=10)
        spool = Spool(d, ram_max=2, log=lambda m: None)
        up = _uploader(spool)
        _add(spool, 0, 1, 2, 3, 4)  # two files of two and one in RAM, numbered before the device can know
        server.down = True
        _upload(up, server, rounds=3)
        assert len(server.records) == 10 and server.made() == []  # nothing sent that could collide
        server.down = False
        _upload(up, server)
        assert server.made() == [0, 1, 2, 3, 4], damage  # every record stored, under new numbers
        assert min(s for s, r in server.records.items() if "n" in r) >= 10
        _add(spool, 5)
        _upload(up, server)
        assert server.made() == [0, 1, 2, 3, 4, 5] and spool.pending() == 0
        assert server.account()[3] == 0, server.account()  # and no number left unexplained


def test_every_reply_sets_a_floor_the_numbering_never_goes_below():
    server = Server()
    spool = Spool(tmpdir() + "/spool", log=lambda m: None)
    up = _uploader(spool)
    _add(spool, 0)
    _upload(up, server)
    _add(spool, 1)
    for s in range(2, 500):  # numbers of this serial the server holds (declared, or from a board before)
        server.records[s] = {"seq": s, "old": True}
    _upload(up, server)  # the reply says next_seq 500: the next record is numbered from there
    _add(spool, 2)
    _upload(up, server)
    assert server.made() == [0, 1, 2] and max(server.records) == 500


def test_a_server_of_version_1_lets_the_device_go_on_as_before():
    server = Server(version=1)
    spool = Spool(tmpdir() + "/spool", log=lambda m: None)
    up = _uploader(spool)
    _add(spool, 0, 1)
    _upload(up, server)
    assert server.made() == [0, 1] and spool.unsure is None and spool.pending() == 0
    _add(spool, 2)
    _upload(up, server)
    assert server.made() == [0, 1, 2]
    assert server.requests <= 4  # the declarations it cannot keep are not sent again and again


def test_every_number_is_a_record_or_declared_through_restarts_outages_and_losses():
    # Before the fix the numbers a restart skipped (the rest of a block of 64) and the records dropped
    # were only counted on the device: the server could not tell one from the other.
    d = tmpdir() + "/spool"
    server = Server()
    spool = Spool(d, ram_max=2, max_files=2, log=lambda m: None)
    up = _uploader(spool)
    _add(spool, 0, 1, 2)
    _upload(up, server)
    spool.shutdown()  # an orderly restart: 3-63 are skipped
    spool = Spool(d, ram_max=2, max_files=2, log=lambda m: None)
    up = _uploader(spool)
    _add(spool, 3, 4)
    _upload(up, server)
    _add(spool, 5)  # in RAM, sent, then a power cut: no shutdown
    _upload(up, server)
    _add(spool, 6)  # in RAM, never sent: lost in the cut
    spool = Spool(d, ram_max=2, max_files=2, log=lambda m: None)
    up = _uploader(spool)
    server.down = True  # an outage: the spool fills, the oldest file is dropped
    _add(spool, 7, 8, 9, 10, 11, 12, 13)
    _upload(up, server, rounds=2)
    assert spool.lost == 2
    _add(spool, 14, pad=MAX_RECORD_BYTES)  # a line too long: dropped
    server.refuse = (15,)
    server.down = False
    _add(spool, 15)  # refused by the server
    _upload(up, server)
    _add(spool, 16)
    _upload(up, server)
    records, skipped, lost, unexplained = server.account()
    assert unexplained == 0, server.account()
    assert server.made() == [0, 1, 2, 3, 4, 5, 11, 12, 13, 16]
    # 7-10 (spool full: 15 spilled with 13 pushed out 9 and 10), 14 (too long), 15 (refused)
    assert lost == 6 and spool.lost == 5 and spool.rejected == 1
    assert skipped == server.next_seq() - records - lost and skipped >= 2 * SEQ_BLOCK - 6


def test_a_failed_upload_keeps_the_declarations_for_the_next():
    d = tmpdir() + "/spool"
    server = Server()
    spool = Spool(d, log=lambda m: None)
    up = _uploader(spool)
    _add(spool, 0)
    _upload(up, server)
    spool.shutdown()
    spool = Spool(d, log=lambda m: None)
    assert spool.gaps == [(1, SEQ_BLOCK, "skipped")]
    up = _uploader(spool)
    server.down = True
    _add(spool, 1)
    _upload(up, server, rounds=2)
    spool = Spool(d, log=lambda m: None)  # a power cut as well: the declaration is on flash
    up = _uploader(spool)
    server.down = False
    _upload(up, server)
    assert server.account()[3] == 0 and spool.gaps == []


def test_a_power_cut_at_any_step_reuses_no_number_and_leaves_none_unexplained():
    # Flash erased, the server holds 0-4; records numbered while it cannot be asked, then moved above
    # the server's numbers once it answers (files rewritten, a journal in state.json), an orderly stop.
    # The power goes at every step of that; after the next start every record the server stores is
    # stored once, and every number is a record or declared.
    def life(d, server):
        spool = Spool(d, ram_max=2, log=lambda m: None)
        up = _uploader(spool)
        server.down = True
        _add(spool, 0, 1, 2, 3, 4)
        _upload(up, server, rounds=1)
        server.down = False
        _upload(up, server)
        _add(spool, 5, 6, 7)
        spool.shutdown()

    def fresh():
        d = tmpdir() + "/spool"
        return d, Server(held=5)

    d, server = fresh()
    total = steps_of(lambda: life(d, server))
    assert server.made() == [0, 1, 2, 3, 4]  # uncut: 5-7 wait on flash
    for k in range(total + 1):
        d, server = fresh()
        try:
            with Flash(k):
                life(d, server)
        except PowerCut:
            pass
        server.down = False
        spool = Spool(d, ram_max=2, log=lambda m: None)  # the next start
        up = _uploader(spool)
        _add(spool, 8)
        _upload(up, server)
        made = server.made()
        assert len(made) == len(set(made)) and 8 in made, (k, made)
        assert server.account()[3] == 0, (k, server.account(), server.gaps)
        assert [s for s in range(5) if server.records[s].get("old")] == [0, 1, 2, 3, 4], k  # untouched
        assert spool.pending() == 0 and spool.gaps == [], k

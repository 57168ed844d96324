# spool — interval records waiting for the server: in RAM first, spilled to a bounded flash spool.
#
# Every record gets the next sequence number (per device, only ever increasing, across reboots).
# New records wait in RAM; when RAM holds ram_max of them (the server is unreachable, or slow),
# they are written to flash as one file, spool/<first seq>_<count>.rec (JSON lines, written
# atomically), so one flash write covers ram_max records. The spool holds at most max_files files:
# spilling into a full spool first deletes the oldest file, and its unacknowledged records are
# counted in `lost` (persisted, shown on the setup page). batch() hands out the oldest records first
# (flash, then RAM); ack(seqs) forgets only the records the server acknowledged; a file is deleted
# once all of its records are acknowledged. shutdown() spills RAM, so an orderly reboot loses nothing.
#
# Sequence numbers are reserved in blocks of SEQ_BLOCK in spool/state.json (one small write per
# SEQ_BLOCK records): after a reboot numbering continues above the reserved block, never reusing one.
# Every number the server will not get a record for is declared to it (docs/PROTOCOL.md, version 2):
# `gaps` holds ranges [first, end) of numbers skipped (the rest of a block at a restart) or records
# lost (spool full, a line too long, refused by the server), kept in state.json until the server has
# them, so the server can tell a record lost from a number never used.
# Without a valid state.json (a first start, an erased or damaged flash) the device cannot know which
# numbers the server already holds for its serial: `unsure` is then the first number it gave out
# since, and the uploader sends nothing until the server has said its next_seq (floor()); numbers that
# could collide are then moved above it (files renamed, with a journal in state.json: power-safe).
import json
import os

import atomicfile

SEQ_BLOCK = 64
STATE = "state.json"
MAX_RECORD_BYTES = 2048  # one record's JSON line (an interval record is ~650 bytes): longer is not ours
MAX_GAPS = 16  # declarations waiting for the server; beyond, one is widened (state.json stays small)
MAX_SEQ = 1 << 53  # seqs are JSON numbers: exact in every reader below this
SKIPPED, LOST = "skipped", "lost"


def restart_line(first, end):
    """The console line at a restart: where numbering goes on, and why it jumps."""
    return ("upload: record numbers go on from %d: they are reserved %d at a time, so a restart skips %d-%d "
            "(declared to the server as skipped)" % (end, SEQ_BLOCK, first, end - 1))


def _name(first, count):
    return "%010d_%03d.rec" % (first, count)


def _whole(x):
    """x if it is a whole number a counter can hold (not a bool, a float or a string), else None."""
    return x if type(x) is int and 0 <= x < MAX_SEQ else None


def _gaps(x):
    """state.json's gaps as [(first, end, kind)], or None if they are not that."""
    if not isinstance(x, list) or len(x) > MAX_GAPS:
        return None
    out = []
    for g in x:
        if not (isinstance(g, list) and len(g) == 3 and _whole(g[0]) is not None and _whole(g[1]) is not None
                and g[0] < g[1] and g[2] in (SKIPPED, LOST)):
            return None
        out.append((g[0], g[1], g[2]))
    return out


def _reseq(line, delta):
    """A spooled line with its seq moved by delta (None if the line is no record)."""
    try:
        rec = json.loads(line)
        rec["seq"] += delta
        return json.dumps(rec).encode()
    except (ValueError, KeyError, TypeError):
        return None


class Spool:
    def __init__(self, folder="spool", max_files=144, ram_max=10, log=print):
        self.folder = folder
        self.max_files = max_files
        self.ram_max = ram_max
        self.log = log
        self.ram = []  # [(seq, encoded record bytes)], oldest first
        self.files = []  # [(first seq, count)], oldest first
        self._loaded = None  # (first, [(seq, bytes)]) of the oldest file, acked records removed
        self.lost = 0  # records dropped because the spool was full (or a file was damaged)
        self.rejected = 0  # records the server refused as invalid (400)
        self.gaps = []  # [(first, end, SKIPPED or LOST)] declared, not yet acknowledged by the server
        self.unsure = None  # the first seq given out since the numbering was lost, until the server says
        self._shift = None  # (first, end, by): provisional seqs being moved (a journal in state.json)
        names = self._open_folder()
        state = None
        try:
            state = json.loads(atomicfile.read(folder + "/" + STATE, 1024) or b"null")
        except (ValueError, OSError):
            state = False
        for n in names:
            if n.endswith(".rec") and len(n) == 18:
                try:
                    self.files.append((int(n[:10]), int(n[11:14])))
                except ValueError:
                    pass
        top = self.files[-1][0] + self.files[-1][1] if self.files else 0
        # Valid JSON of the wrong shape ({"reserved": "abc"}, [1], 1e999) is as damaged as garbage.
        st = state if isinstance(state, dict) else {}
        reserved = _whole(st.get("reserved"))
        block = _whole(st.get("block", max(0, (reserved or 0) - SEQ_BLOCK)))  # (version 1 had no block)
        nxt, unsure, shift = st.get("next"), st.get("unsure"), st.get("shift")
        gaps = _gaps(st.get("gaps", []))
        self.lost, self.rejected = _whole(st.get("lost", 0)) or 0, _whole(st.get("rejected", 0)) or 0
        if reserved is None or block is None or gaps is None or not (
                (nxt is None or _whole(nxt) is not None) and (unsure is None or _whole(unsure) is not None) and
                (shift is None or _gaps([shift + [SKIPPED]] if isinstance(shift, list) and len(shift) == 3
                                        else None))):
            # No numbering to go on from: number from above the spooled records, but hold them until the
            # server has said which numbers it already holds (a flash erased and provisioned again).
            self.log("upload: %s: records are numbered from %d but held until the server says which numbers "
                     "it already has" % ("no spool state (a first start, or an erased flash)" if state is None
                                         else "spool state damaged", top))
            self.unsure = self.next_seq = self._reserved = self._block = top
        else:
            self.gaps, self.unsure = gaps, unsure
            if shift is not None:  # a power cut while moving provisional numbers: finish it
                self._shift = tuple(shift)
                self._finish_shift(shift)
            # Numbers of this block past the last record: exactly known after an orderly shutdown; after a
            # power cut, past the newest spooled record (records in RAM then were lost, or had reached the server).
            first = min(max(top, nxt if nxt is not None else block), reserved)
            if first < reserved:
                self._declare(first, reserved, SKIPPED)
                self.log(restart_line(first, reserved))
            self.next_seq = self._reserved = self._block = reserved
            if first < reserved or nxt is not None or shift is not None:
                self._save_state()
        while len(self.files) > max_files:
            self._drop_oldest_file()

    def _open_folder(self):
        """The spool folder's names, the folder made if missing. A plain file in its place is not ours
        to keep (nothing else writes there): it goes, said on the console; a folder that cannot be read
        leaves the spool in RAM (records beyond it are counted lost)."""
        folder = self.folder
        try:
            return sorted(os.listdir(folder))
        except OSError:
            pass
        try:
            os.mkdir(folder)  # a first start
            return []
        except OSError:
            pass
        try:
            os.remove(folder)
            os.mkdir(folder)
            self.log("upload: %s was a file, not the spool folder: removed, a new spool made" % folder)
            return []
        except OSError:
            pass
        self.log("upload: spool folder %s cannot be used: records wait in RAM only" % folder)
        return []

    def _path(self, first, count):
        return self.folder + "/" + _name(first, count)

    def _save_state(self, nxt=None):
        st = {"reserved": self._reserved, "block": self._block, "lost": self.lost, "rejected": self.rejected}
        if self.gaps:
            st["gaps"] = self.gaps
        if self.unsure is not None:
            st["unsure"] = self.unsure
        if self._shift is not None:
            st["shift"] = self._shift
        if nxt is not None:
            st["next"] = nxt  # an orderly shutdown: the numbers from here to reserved were never used
        atomicfile.replace(self.folder + "/" + STATE, json.dumps(st))

    def _declare(self, first, end, kind):
        """Declare seqs first..end-1 skipped or lost (saved with the next state write)."""
        g = self.gaps
        for i, (a, b, k) in enumerate(g):
            if k == kind and a <= end and first <= b:  # touching or overlapping one of its kind: widen it
                g[i] = (min(a, first), max(b, end), k)
                return
        if len(g) >= MAX_GAPS:  # (rare: the server unreachable through many restarts) widen the last of its kind
            for i in range(len(g) - 1, -1, -1):
                if g[i][2] == kind:
                    g[i] = (min(g[i][0], first), max(g[i][1], end), kind)
                    return
            a, b = g.pop(0), g.pop(0)  # all of the other kind: its oldest two become one
            g.insert(0, (min(a[0], b[0]), max(a[1], b[1]), a[2]))
        g.append((first, end, kind))

    def delivered(self, gaps):
        """The server has stored these declarations (as sent): forget them."""
        left = [g for g in self.gaps if g not in gaps]
        if len(left) != len(self.gaps):
            self.gaps = left
            self._save_state()

    def floor(self, next_seq):
        """The server's next_seq for this device (every acknowledgement carries it; None from a server of
        protocol version 1): numbering never goes below it, and provisional numbers move above it."""
        if self.unsure is None:
            if next_seq is not None and next_seq > self.next_seq:
                self.log("upload: the server already holds record numbers up to %d: numbering goes on from there"
                         % (next_seq - 1))
                self.next_seq = self._reserved = self._block = next_seq
                self._save_state()
            return
        p0, end = self.unsure, self.next_seq
        self.unsure = None
        if next_seq is None:
            self.log("upload: the server does not say which record numbers it holds (protocol version 1): "
                     "numbering goes on from %d unchecked" % end)
        elif next_seq <= p0:
            if next_seq < p0:
                self._declare(next_seq, p0, SKIPPED)
        else:  # numbers this device gave out may be the server's already: move them all above both
            start = max(next_seq, end)
            by = start - p0
            self.gaps = [(a + by, b + by, k) if a >= p0 else (a, b, k) for a, b, k in self.gaps]
            if start > next_seq:
                self._declare(next_seq, start, SKIPPED)
            self.log("upload: the server already holds record numbers up to %d: records %d-%d become %d-%d"
                     % (next_seq - 1, p0, end - 1, start, end + by - 1))
            self._shift = (p0, end, by)
            self.next_seq = self._reserved = end + by
            self._block = start  # a power cut meanwhile: the moved records in RAM are past the spooled ones
            self._save_state()  # the journal first
            self._finish_shift(self._shift)
            self.ram = [(s + by, x) for s, r in self.ram for x in (_reseq(r, by),) if x]
        self._save_state()

    def _finish_shift(self, shift):
        """Move the spool files of provisional seqs (a journal in state.json says which, and by how much)."""
        p0, end, by = shift
        self._loaded = None
        files = []
        for first, count in self.files:
            if p0 <= first < end:
                old, new = self._path(first, count), self._path(first + by, count)
                if not atomicfile.exists(new):  # (else a power cut came between writing it and removing this)
                    lines = atomicfile.read_lines(old, max_line_bytes=MAX_RECORD_BYTES) or ()
                    atomicfile.replace(new, [p for x in lines for p in (_reseq(x, by) or b"", b"\n") if p != b""])
                atomicfile.remove(old)
                first += by
            if (first, count) not in files:
                files.append((first, count))
        self.files = sorted(files)
        self._shift = None


    def add(self, record):
        """Give record (a dict) the next sequence number and queue it; returns the seq."""
        seq = self.next_seq
        if seq >= self._reserved:
            self._block, self._reserved = seq, seq + SEQ_BLOCK
            self._save_state()
        self.next_seq = seq + 1
        record["seq"] = seq
        line = json.dumps(record).encode()
        if len(line) > MAX_RECORD_BYTES:  # never spooled: one such line would fail every batch after it
            self.lost += 1
            self._declare(seq, seq + 1, LOST)
            self.log("upload: record seq %d is %d bytes, over %d: dropped (%d lost in all)" % (
                seq, len(line), MAX_RECORD_BYTES, self.lost))
            self._save_state()
            return seq
        self.ram.append((seq, line))
        if len(self.ram) >= self.ram_max:
            try:
                self.spill()
            except OSError:
                # The flash refuses the write (full, failing): RAM must not grow without bound either.
                while len(self.ram) > 2 * self.ram_max:
                    q = self.ram.pop(0)[0]
                    self.lost += 1
                    self._declare(q, q + 1, LOST)
                raise
        return seq

    def spill(self):
        """Write the RAM records to flash as one file (deleting the oldest file if the spool is full)."""
        if not self.ram:
            return
        while len(self.files) >= self.max_files:
            self._drop_oldest_file()
        first, count = self.ram[0][0], len(self.ram)
        # in pieces, as they are read back: ram_max records make several KB, more than a
        # fragmented heap may hold in one block
        atomicfile.replace(self._path(first, count), [p for _, r in self.ram for p in (r, b"\n")])
        self.files.append((first, count))
        self.ram = []

    def _drop_oldest_file(self):
        recs = self._oldest_file_records()  # (its records' seqs, to declare them lost)
        first, count = self.files.pop(0)
        self._loaded = None
        if recs:  # declared before the file goes: a power cut between leaves records declared lost that
            for seq, _ in recs:  # still arrive (a stored record counts as stored), never the other way round
                self._declare(seq, seq + 1, LOST)
            self.lost += len(recs)
            self.log("upload: spool full: %d oldest records dropped (%d lost in all)" % (len(recs), self.lost))
            self._save_state()
        atomicfile.remove(self._path(first, count))

    def _oldest_file_records(self):
        first, count = self.files[0]
        if self._loaded is None or self._loaded[0] != first:
            recs = []
            try:
                lines = atomicfile.read_lines(self._path(first, count), max_line_bytes=MAX_RECORD_BYTES) or ()
            except OSError:  # unreadable: its records are lost, not a reason to stop all uploads
                lines = ()
            for line in lines:
                try:
                    seq = json.loads(line)["seq"]
                    if _whole(seq) is not None:
                        recs.append((seq, line))
                except (ValueError, KeyError, TypeError):
                    pass
            if len(recs) < count:
                self.lost += count - len(recs)
                self.log("upload: spool file %s damaged: %d records lost" % (_name(first, count), count - len(recs)))
                self._save_state()
            self._loaded = (first, recs)
        return self._loaded[1]

    def newest_energy(self, checked):
        """(seq, counters) of the newest record on flash whose energy_mwh checked() accepts (it returns
        the counters, or None), or None: at start, where the energy counters had got to, for when
        their own slots are damaged or gone (the wire's counters never go back)."""
        for first, count in reversed(self.files):
            try:  # (a file is ram_max lines, as batch() reads it; a line cut short or too long is no record)
                lines = atomicfile.read_lines(self._path(first, count), max_line_bytes=MAX_RECORD_BYTES) or ()
            except OSError:
                continue
            for line in reversed(lines):
                try:
                    rec = json.loads(line)
                    seq, snap = rec["seq"], checked(rec["energy_mwh"])
                except (ValueError, KeyError, TypeError):
                    continue
                if type(seq) is int and snap is not None:
                    return seq, snap
        return None

    def batch(self, max_records, max_bytes):
        """The oldest waiting records, [(seq, bytes)], at most max_records and about max_bytes."""
        out, size = [], 0
        while self.files:
            recs = self._oldest_file_records()
            if recs:
                break
            self._forget_oldest_file()
        src = self._loaded[1] if self.files and self._loaded is not None else self.ram
        for seq, data in src:
            if out and (len(out) >= max_records or size + len(data) > max_bytes):
                break
            out.append((seq, data))
            size += len(data)
        return out

    def _forget_oldest_file(self):
        first, count = self.files.pop(0)
        self._loaded = None
        atomicfile.remove(self._path(first, count))

    def ack(self, seqs):
        """Forget the records the server acknowledged (seqs: a collection of sequence numbers)."""
        self.ram = [r for r in self.ram if r[0] not in seqs]
        if self._loaded is not None:
            left = [r for r in self._loaded[1] if r[0] not in seqs]
            self._loaded = (self._loaded[0], left)
            if not left and self.files and self.files[0][0] == self._loaded[0]:
                self._forget_oldest_file()

    def reject(self, seq):
        """The server refused this record as invalid: drop it, and count it."""
        self.rejected += 1
        self.ack((seq,))
        self._declare(seq, seq + 1, LOST)
        self._save_state()

    def pending(self):
        n = len(self.ram)
        for i, (first, count) in enumerate(self.files):
            n += len(self._loaded[1]) if i == 0 and self._loaded is not None and self._loaded[0] == first else count
        return n

    def shutdown(self):
        self.spill()
        self._save_state(self.next_seq)  # numbers from here to the reserved end are skipped, exactly

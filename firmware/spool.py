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
# SEQ_BLOCK records): after a reboot numbering continues above the reserved block, so a reboot
# leaves a gap in the numbers but never reuses one. A power cut loses at most the records in RAM.
# The spool says so on the console at start, so nobody takes the gap for lost records.

import json
import os

import atomicfile

SEQ_BLOCK = 64
STATE = "state.json"
MAX_RECORD_BYTES = 2048  # one record's JSON line (an interval record is ~650 bytes): longer is not ours


def restart_line(next_seq):
    """The console line at a restart: where numbering goes on, and why it jumps."""
    return ("upload: record numbers go on from %d: they are reserved %d at a time, so a restart skips the "
            "rest of a block (no record is lost)" % (next_seq, SEQ_BLOCK))


def _name(first, count):
    return "%010d_%03d.rec" % (first, count)


def _whole(x):
    """x if it is a whole number a counter can hold (not a bool, a float or a string), else None."""
    return x if type(x) is int and 0 <= x < 1 << 53 else None


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
        names = self._open_folder()
        state = None
        try:
            state = json.loads(atomicfile.read(folder + "/" + STATE, 512) or b"{}")
        except (ValueError, OSError):
            pass
        # Valid JSON of the wrong shape ({"reserved": "abc"}, [1], 1e999) is as damaged as garbage.
        keys = ("reserved", "lost", "rejected")
        counts = [_whole(state.get(k, 0)) if isinstance(state, dict) else None for k in keys]
        self.lost, self.rejected = counts[1] or 0, counts[2] or 0
        for n in names:
            if n.endswith(".rec") and len(n) == 18:
                try:
                    self.files.append((int(n[:10]), int(n[11:14])))
                except ValueError:
                    pass
        top = self.files[-1][0] + self.files[-1][1] if self.files else 0
        if None in counts:
            self.log("upload: spool state damaged: numbering continues %s" % (
                "after the newest spooled record" if top else "from 0 (no spooled record to go on from)"))
        self.next_seq = max(counts[0] or 0, top)
        self._reserved = self.next_seq
        if self.next_seq:  # a restart after records were numbered: the first new one skips ahead
            self.log(restart_line(self.next_seq))
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

    def _save_state(self):
        atomicfile.replace(self.folder + "/" + STATE, json.dumps(
            {"reserved": self._reserved, "lost": self.lost, "rejected": self.rejected}))

    def add(self, record):
        """Give record (a dict) the next sequence number and queue it; returns the seq."""
        seq = self.next_seq
        if seq >= self._reserved:
            self._reserved = seq + SEQ_BLOCK
            self._save_state()
        self.next_seq = seq + 1
        record["seq"] = seq
        line = json.dumps(record).encode()
        if len(line) > MAX_RECORD_BYTES:  # never spooled: one such line would fail every batch after it
            self.lost += 1
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
                    self.ram.pop(0)
                    self.lost += 1
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
        first, count = self.files.pop(0)
        unacked = count
        if self._loaded is not None and self._loaded[0] == first:
            unacked = len(self._loaded[1])
            self._loaded = None
        atomicfile.remove(self._path(first, count))
        if unacked:
            self.lost += unacked
            self.log("upload: spool full: %d oldest records dropped (%d lost in all)" % (unacked, self.lost))
            self._save_state()

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
                    recs.append((json.loads(line)["seq"], line))
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
        self._save_state()

    def pending(self):
        n = len(self.ram)
        for i, (first, count) in enumerate(self.files):
            n += len(self._loaded[1]) if i == 0 and self._loaded is not None and self._loaded[0] == first else count
        return n

    def shutdown(self):
        self.spill()

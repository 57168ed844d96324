# energy_store — the energy counters on flash, with bounded loss and a bounded number of writes.
#
# EnergyStore keeps two alternating slots, energy.a and energy.b, each one 80-byte record:
#   magic "MEn1" | sequence (u32) | import_mwh[3] | export_mwh[3] | net_import_mwh | net_export_mwh
#   (int64 each, little-endian) | first 8 bytes of the SHA-256 of everything before.
# save() writes the slot NOT holding the newest record, so a power cut in the middle of a save can
# only damage that save: load() takes the newest record whose checksum holds. Counters never go
# backwards: load() takes each counter's largest value over the valid slots, and save() never stores
# a value lower than the one already stored. 80 bytes fit littlefs's inline-file limit (128 bytes
# with MicroPython's 32-byte prog size), so a save is one small metadata commit: see BENCHMARKS.md,
# "Flash wear".
#
# At start the firmware says where the counters came from (restored_line()): which slot, which
# save, how much net import and export, so a restart never looks like lost energy on the console.
#
# EnergyPersister decides when to save: once max_unsaved_wh has accumulated or max_interval_ms has
# passed with unsaved energy (by default 10 Wh or 5 minutes, whichever first), but never sooner than
# min_interval_ms after the previous write (by default 10 s: at most 8640 writes a day), and never when
# nothing changed: the "energy" section of the settings, taken live when it changes. Call
# maybe_save(snapshot, now_ms) with every reading.

import hashlib
import struct
import time

import atomicfile

from firmware import config
from firmware.config import Diagnostic
from firmware.energy import kwh_text

MAGIC = b"MEn1"
_FMT = "<4sI8q"
_BODY_BYTES = struct.calcsize(_FMT)
_HASH_BYTES = 8
RECORD_BYTES = _BODY_BYTES + _HASH_BYTES
_INT64_MAX = (1 << 63) - 1

NEW = "ENERGY_NEW"  # no counters saved yet: counting from zero
SLOT_DAMAGED = "ENERGY_SLOT_DAMAGED"  # one slot damaged (a save cut short): the other one is in use
SLOT_UNREADABLE = "ENERGY_SLOT_UNREADABLE"  # one slot cannot be read (an I/O error, a folder in its place)
LOST = "ENERGY_LOST"  # no valid slot although files exist: counting from zero


def _why(e):
    """An OSError in a few words: its errno (what MicroPython's carry) or its text."""
    return "I/O error %s" % e.args[0] if isinstance(e, OSError) and e.args and type(e.args[0]) is int else repr(e)


def _values(snapshot):
    """The snapshot's 8 counters in record order; ValueError if it is not a well-formed snapshot."""
    try:
        vals = list(snapshot["import_mwh"]) + list(snapshot["export_mwh"])
        if len(vals) != 6:
            raise ValueError
        vals += [snapshot["net_import_mwh"], snapshot["net_export_mwh"]]
    except (KeyError, TypeError, ValueError):
        raise ValueError("energy snapshot must hold import_mwh[3], export_mwh[3], net_import_mwh, net_export_mwh")
    for v in vals:
        if type(v) is not int or not 0 <= v <= _INT64_MAX:
            raise ValueError("energy counters must be whole milliwatt-hours from 0 to 2**63-1")
    return vals


def checked(snapshot):
    """The snapshot as stored counters (a new dict), or None if it is not one (wrong keys or types,
    a value outside 0..2**63-1): for counters read from elsewhere, such as a spooled record."""
    try:
        return _snapshot(_values(snapshot))
    except ValueError:
        return None


def _snapshot(vals):
    return {"import_mwh": vals[0:3], "export_mwh": vals[3:6], "net_import_mwh": vals[6], "net_export_mwh": vals[7]}


def pack(seq, snapshot):
    body = struct.pack(_FMT, MAGIC, seq, *_values(snapshot))
    return body + hashlib.sha256(body).digest()[:_HASH_BYTES]


def unpack(data):
    """(sequence, counters list) of a record, or None if it is not an intact record."""
    if data is None or len(data) != RECORD_BYTES:
        return None
    body = data[:_BODY_BYTES]
    if data[_BODY_BYTES:] != hashlib.sha256(body).digest()[:_HASH_BYTES]:
        return None
    fields = struct.unpack(_FMT, body)
    if fields[0] != MAGIC or min(fields[2:]) < 0:
        return None
    return fields[1], list(fields[2:])


class EnergyStore:
    """Energy counters in two alternating checksummed slot files, path.a and path.b."""

    def __init__(self, path="energy"):
        self.slots = (path + ".a", path + ".b")
        self.seq = 0
        self.last = None  # the counters as stored (a snapshot), or None before anything was stored
        self.diagnostic = None
        self.restored_from = None  # the slot load() took the newest record from, or None
        self.slot_error = None  # why a slot could not be written at the last save (saved in the other), or None
        self._next = 0  # index of the slot the next save writes

    def load(self):
        """The saved counters (a snapshot), or None if there are none. Never raises."""
        found, damaged, unreadable = [], [], []
        for k, path in enumerate(self.slots):
            try:
                data = atomicfile.read(path, RECORD_BYTES)
                if data is None:
                    continue
            except ValueError:  # oversized: not a record of ours
                data = b""
            except Exception as e:  # an I/O error, a folder in its place: not a save cut short
                unreadable.append("%s (%s)" % (path, _why(e)))
                continue
            rec = unpack(data)
            if rec is None:
                damaged.append(path)
            else:
                found.append((rec[0], k, rec[1]))
        self.restored_from = None
        if not found:
            self.seq, self.last, self._next = 0, None, 0
            bad = damaged + unreadable
            self.diagnostic = (Diagnostic(LOST, "saved energy counters (%s) are damaged or unreadable: counting "
                                                "from zero" % ", ".join(bad)) if bad else
                               Diagnostic(NEW, "no energy counters saved yet: counting from zero"))
            return None
        found.sort()
        seq, k, vals = found[-1]
        for other in found[:-1]:  # counters only grow: never let an older slot lower one
            vals = [max(vals[i], other[2][i]) for i in range(8)]
        self.seq, self._next = seq, 1 - k
        self.restored_from = self.slots[k]
        self.last = _snapshot(vals)
        if unreadable:
            self.diagnostic = Diagnostic(SLOT_UNREADABLE, "%s cannot be read: using %s" % (unreadable[0],
                                                                                          self.slots[k]))
        elif damaged:
            self.diagnostic = Diagnostic(SLOT_DAMAGED, "%s was damaged (a save cut short): using %s"
                                         % (damaged[0], self.slots[k]))
        else:
            self.diagnostic = None
        return _snapshot(list(vals))

    def restored_line(self):
        """After load(): one console line saying what was restored and from where, or None if nothing
        was (then the diagnostic says why). The totals are the net ones the readings line shows."""
        if self.restored_from is None or self.last is None:
            return None
        return "restored from %s (save %d): net import %s kWh, net export %s kWh" % (
            self.restored_from, self.seq, kwh_text(self.last["net_import_mwh"]), kwh_text(self.last["net_export_mwh"]))

    def save(self, snapshot):
        """Store the counters (never lower than already stored). OSError if neither slot can be written.

        A slot that cannot be written (an I/O error, a folder in its place) is not retried for ever:
        the save goes to the other slot instead, by replace() (a new file renamed over it), so the
        newest good record there is never half overwritten; slot_error says which slot failed and
        why. The failed slot is tried again at the next save, so it comes back once it can."""
        vals = _values(snapshot)
        if self.last is not None:
            old = _values(self.last)
            vals = [max(vals[i], old[i]) for i in range(8)]
        stored = _snapshot(vals)
        record = pack(self.seq + 1, stored)
        k = self._next
        try:
            atomicfile.overwrite(self.slots[k], record)
            self.slot_error = None
        except OSError as e:
            self.slot_error = "%s cannot be written (%s): saving to %s" % (self.slots[k], _why(e), self.slots[1 - k])
            k = 1 - k
            atomicfile.replace(self.slots[k], record)  # (OSError from here: neither slot can be written)
        self.seq += 1
        self._next = 1 - k
        self.last = stored


class EnergyPersister:
    """When to save: bounded loss (Wh or time, whichever first) and at most one write per min_interval_ms."""

    def __init__(self, store, settings=None):
        """settings: the "energy" section of the settings, complete (None: the defaults, whose one
        owner is the schema, firmware/configcheck.py)."""
        self.store = store
        self.on_settings({"energy": settings if settings is not None else config.section("energy")})
        self.error = None  # why the last save failed, or that it went to the other slot; None if all is well
        self.writes = 0
        self._told = None  # the error last returned by news()
        self._since_ms = None  # when the unsaved energy started to accumulate
        self._write_ms = None  # the last write attempt, until min_interval_ms has passed

    def on_settings(self, changed):
        """Settings changed (firmware/config.py apply()): the "energy" keys, all taken at once."""
        e = changed.get("energy") or {}
        if "save_max_interval_s" in e:
            self.max_interval_ms = e["save_max_interval_s"] * 1000
        if "save_max_unsaved_wh" in e:
            self.max_unsaved_mwh = e["save_max_unsaved_wh"] * 1000
        if "save_min_interval_s" in e:
            self.min_interval_ms = e["save_min_interval_s"] * 1000
        return ["energy." + k for k in e]

    def unsaved_mwh(self, snapshot):
        """Energy through the meter since the last save: every phase's import and export together."""
        now = _values(snapshot)[:6]
        then = _values(self.store.last)[:6] if self.store.last is not None else [0] * 6
        return sum(max(0, now[i] - then[i]) for i in range(6))

    def due(self, snapshot, now_ms):
        unsaved = self.unsaved_mwh(snapshot)
        if unsaved == 0:
            self._since_ms = now_ms  # nothing to lose yet: the loss window starts now
            return False
        if self._since_ms is None:
            self._since_ms = now_ms
        if self._write_ms is not None:
            if time.ticks_diff(now_ms, self._write_ms) < self.min_interval_ms:
                return False
            self._write_ms = None  # forgotten once passed, so an old tick value can never wrap
        return unsaved >= self.max_unsaved_mwh or time.ticks_diff(now_ms, self._since_ms) >= self.max_interval_ms

    def save(self, snapshot, now_ms):
        """Save now (also for an orderly shutdown). True if stored; a flash error is kept in .error."""
        self._write_ms = now_ms
        try:
            self.store.save(snapshot)
        except OSError as e:
            self.error = "cannot save energy counters (I/O error %s)" % (e.args[0] if e.args else "?")
            return False
        self.error = getattr(self.store, "slot_error", None)  # saved, but one slot is failing
        self.writes += 1
        self._since_ms = now_ms
        return True

    def news(self):
        """A console line each time the error changes, the recovery included (not a line every
        window), else None."""
        if self.error == self._told:
            return None
        self._told, was = self.error, self._told
        return self.error or "energy counters saved again (%s)" % was

    def maybe_save(self, snapshot, now_ms):
        """Call with every reading: saves only when due(). True if it saved."""
        return self.due(snapshot, now_ms) and self.save(snapshot, now_ms)

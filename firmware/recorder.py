# recorder — the interval recorder: readings in, one interval record into the spool every
# record_interval_s (docs/PROTOCOL.md, "Interval records").
#
# An output of the composition root (firmware/app.py): on_readings(r) is called once a window and
# only does arithmetic, summing the per-phase values; once record_interval_s has passed it closes
# the interval into a record (averages, the energy counters, the diagnostics codes, the frequency)
# and hands it to the spool (firmware/spool.py), which numbers it and keeps it until the server
# acknowledges its seq. The HTTPS transport (firmware/uploader.py) sends what the spool holds; it
# tells this recorder when NTP corrected the clock (clock_stepped), and the next record says so.
# Records are made only while uploads are on (enabled): with nowhere to go, they would only fill
# the flash.

import time

AVG_KEYS = ("vrms", "irms", "real_power_w", "reactive_power_var", "apparent_power_va")
# The ESP32 port counts time from 2000-01-01, the unix port (and the protocol) from 1970-01-01.
EPOCH_TO_UNIX_S = 946684800 if time.gmtime(0)[0] == 2000 else 0


def _r(x, digits):
    return round(x, digits) if isinstance(x, float) else x


class Recorder:
    name = "recorder"

    def __init__(self, settings, energy, spool, clock_ready=None, enabled=True, log=print):
        """settings: the "upload" section (record_interval_s; record_interval_ms, tools' own, wins)."""
        self.record_interval_ms = settings.get("record_interval_ms") or settings["record_interval_s"] * 1000
        self.energy = energy
        self.spool = spool
        self.clock_ready = clock_ready or (lambda: time.gmtime()[0] >= 2024)
        self.enabled = enabled
        self.log = log
        self._sums = None
        self._n = 0
        self._diag = []
        self._freq = 0.0
        self._start_ms = time.ticks_ms()
        self._clock_step_s = 0  # NTP corrections not yet carried by a record

    def on_readings(self, r):
        if not self.enabled:
            return
        now = time.ticks_ms()
        if self._sums is None:
            self._sums = [[0.0] * len(AVG_KEYS) for _ in r["phases"]]
            self._n = 0
        for s, ph in zip(self._sums, r["phases"]):
            for i, k in enumerate(AVG_KEYS):
                s[i] += ph[k]
        self._n += 1
        self._diag = [d["code"] for d in r["diagnostics"]]
        self._freq = r["frequency_hz"]
        if time.ticks_diff(now, self._start_ms) >= self.record_interval_ms:
            self._close_interval(now)

    def clock_stepped(self, step_s):
        """NTP moved the clock by step_s: the next record carries it (records before it have times
        off by that much)."""
        self._clock_step_s += step_s

    def on_settings(self, changed):
        """Settings changed (firmware/config.py apply()): record_interval_s taken at once (the
        interval under way closes when the new length is reached)."""
        up = changed.get("upload") or {}
        if "record_interval_s" not in up:
            return ()
        self.record_interval_ms = up["record_interval_s"] * 1000
        return ("upload.record_interval_s",)

    def _close_interval(self, now):
        n = self._n
        phases = []
        for p, s in enumerate(self._sums or []):
            ph = {"phase": p + 1}
            for i, k in enumerate(AVG_KEYS):
                ph[k] = _r(s[i] / n, 3)
            phases.append(ph)
        rec = {"t": int(time.time()) + EPOCH_TO_UNIX_S if self.clock_ready() else None,
               "interval_ms": time.ticks_diff(now, self._start_ms), "windows": n,
               "frequency_hz": _r(self._freq, 3), "phases": phases, "energy_mwh": self.energy.snapshot(),
               "diagnostics": self._diag}
        if self._clock_step_s:  # the clock was corrected since the last record: say by how much
            rec["clock_step_s"] = self._clock_step_s
            self._clock_step_s = 0
        self._sums = None
        self._start_ms = now
        try:
            self.spool.add(rec)
        except OSError as e:  # flash full or failing: say so, keep measuring
            self.log("upload: cannot spool a record (%s)" % e)

    def shutdown(self):
        """An orderly stop: the records waiting in RAM go to the flash spool."""
        try:
            self.spool.shutdown()
        except OSError as e:  # flash full or failing: say so; the rest of the shutdown goes on
            self.log("upload: cannot spool the records in RAM (%s)" % e)

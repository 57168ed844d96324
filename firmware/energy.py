# energy — import/export watt-hour counters per phase and in total, integrated from measured power.
#
# Counters are integers in milliwatt-hours: floats on the ESP32 are single precision, and a float
# counter of a few MWh could no longer add the 0.06 Wh a one-second window brings. The fraction
# below one mWh is carried per counter, so nothing is rounded away. Counters only ever go up.
#
#   import_mwh[p] / export_mwh[p]: what flowed in / out on phase p
#   net_import_mwh / net_export_mwh: the sum of the phases' power first, then integrated, which is
#       what a bidirectional utility meter bills (export on L1 offsets import on L2 at the same time)
#
# Persistence goes through a store with load() -> snapshot or None and save(snapshot), implemented
# by the configuration layer (power-safe files); snapshot() and restore() are the whole interface.

MS_PER_HOUR = 3_600_000


def kwh_text(mwh):
    """An integer mWh counter as kWh with three decimals, exactly: a float kWh on the ESP32 (single
    precision) gets the third decimal wrong above ~16,000 kWh, which a Public meter reaches in weeks."""
    return "%d.%03d" % (mwh // 1_000_000, mwh // 1000 % 1000)


class Energy:
    def __init__(self, phases=3):
        self.import_mwh = [0] * phases
        self.export_mwh = [0] * phases
        self.net_import_mwh = 0
        self.net_export_mwh = 0
        # sub-mWh remainders, same order as _counters()
        self._rest = [0.0] * (2 * phases + 2)

    def add(self, real_power_w, dt_ms):
        """Integrate one window: real_power_w per phase (+ import, - export) held for dt_ms."""
        if dt_ms <= 0:
            return
        n = len(self.import_mwh)
        total_w = 0.0
        for p in range(n):
            w = real_power_w[p]
            total_w += w
            if w > 0:
                self.import_mwh[p] += self._carry(p, w * dt_ms / MS_PER_HOUR * 1000)
            elif w < 0:
                self.export_mwh[p] += self._carry(n + p, -w * dt_ms / MS_PER_HOUR * 1000)
        if total_w > 0:
            self.net_import_mwh += self._carry(2 * n, total_w * dt_ms / MS_PER_HOUR * 1000)
        elif total_w < 0:
            self.net_export_mwh += self._carry(2 * n + 1, -total_w * dt_ms / MS_PER_HOUR * 1000)

    def _carry(self, k, mwh):
        r = self._rest[k] + mwh
        whole = int(r)
        self._rest[k] = r - whole
        return whole

    def snapshot(self):
        return {
            "import_mwh": list(self.import_mwh),
            "export_mwh": list(self.export_mwh),
            "net_import_mwh": self.net_import_mwh,
            "net_export_mwh": self.net_export_mwh,
        }

    def restore(self, snap):
        """Continue from stored counters; never move a counter backwards."""
        if not snap:
            return
        for p in range(len(self.import_mwh)):
            self.import_mwh[p] = max(self.import_mwh[p], int(snap["import_mwh"][p]))
            self.export_mwh[p] = max(self.export_mwh[p], int(snap["export_mwh"][p]))
        self.net_import_mwh = max(self.net_import_mwh, int(snap["net_import_mwh"]))
        self.net_export_mwh = max(self.net_export_mwh, int(snap["net_export_mwh"]))

    def total_mwh(self):
        """Everything counted so far: grows with every counter (for 'how much is unsaved')."""
        return sum(self.import_mwh) + sum(self.export_mwh) + self.net_import_mwh + self.net_export_mwh

    def wh(self):
        """Counters in Wh (floats) for readings and reports."""
        return {
            "import_wh": [x / 1000 for x in self.import_mwh],
            "export_wh": [x / 1000 for x in self.export_mwh],
            "import_wh_total": sum(self.import_mwh) / 1000,
            "export_wh_total": sum(self.export_mwh) / 1000,
            "net_import_wh": self.net_import_mwh / 1000,
            "net_export_wh": self.net_export_mwh / 1000,
        }

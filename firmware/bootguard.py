# bootguard — no reboot loops: a board that keeps failing to start waits longer before each try.
#
# The number of failed starts in a row lives in RTC memory, which keeps across resets (including
# the watchdog's) and is cleared by a power cycle, so an installer who switches the meter off and
# on gets a prompt start. A start that ends in an exception or a watchdog reset counts one more;
# STABLE_MS of healthy measurement clears the count. Before starting, the firmware waits
# delay_ms(): nothing the first time, then 5 s, doubling up to 5 min. A crash loop then costs a
# few writes of RTC memory (not flash) and leaves the serial console usable between tries.

FIRST_DELAY_MS = 5000
LONGEST_DELAY_MS = 300000
STABLE_MS = 600000  # this long measuring without a fault: the start counts as a good one
_MAGIC = b"MBG1"


class BootGuard:
    def __init__(self, board):
        self.board = board
        record = board.boot_record()
        self.failures = record[4] if len(record) >= 5 and record[:4] == _MAGIC else 0

    def delay_ms(self):
        """How long to wait before this start."""
        if not self.failures:
            return 0
        return min(FIRST_DELAY_MS << min(self.failures - 1, 16), LONGEST_DELAY_MS)

    def failed(self):
        self.failures = min(self.failures + 1, 255)
        self._store()

    def stable(self):
        if self.failures:
            self.failures = 0
            self._store()

    def _store(self):
        self.board.set_boot_record(_MAGIC + bytes((self.failures,)))

# Firmware tests under CPython: the MicroPython names come from tools/mpshim and the ESP32 hardware
# from the simulated board, exactly as under tests/mprun.py on the unix port.
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIMBOARD = os.path.join(ROOT, "tools", "simboard")
if SIMBOARD not in sys.path:
    sys.path.insert(0, SIMBOARD)

from tools import mpshim  # noqa: E402

mpshim.install()


@pytest.fixture(autouse=True)
def _fresh_world():
    import simworld

    simworld.world.reset()
    yield


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        import support

        support.remove_tmpdirs()

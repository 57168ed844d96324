# Host-side pytest setup. Firmware tests (tests/unit) run against the simulated board and the
# CPython shims; tests/host tests drive tools and whole processes.
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "lib"), os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)


@pytest.fixture(autouse=True, scope="session")
def _own_config_home(tmp_path_factory):
    """No test reads or makes the fleet key of the person running them: tools.provision's default
    ($XDG_CONFIG_HOME/meter/fleet.key) points into a folder of the test session's own."""
    before = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if before is None:
        del os.environ["XDG_CONFIG_HOME"]
    else:
        os.environ["XDG_CONFIG_HOME"] = before

# Host-side pytest setup. Firmware tests (tests/unit) run against the simulated board and the
# CPython shims; tests/host tests drive tools and whole processes.
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (os.path.join(ROOT, "build", "hostlib"), ROOT, os.path.join(ROOT, "lib"), os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from tools import build  # noqa: E402

build.host_lib()  # the pinned microdot in build/hostlib (above): a fresh clone has none until now

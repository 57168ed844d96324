"""Run every test and check; `make test` calls this. Exits non-zero if any step fails.

Steps: ruff; pyright over the device files against micropython-esp32-stubs; mpy-cross
-march=xtensawin over every device file; pytest under CPython (all of tests/); the same firmware
test modules (tests/unit) under the real MicroPython unix port. A summary closes the run.

--quick (`make quick`, the edit-test loop, well under a minute): the same steps, but pytest runs only
the firmware tests (tests/unit) and the docs' links (tests/host/test_docs.py), not the host tests
that start whole devices, browsers and servers. Before a commit, run the whole of `make test`.
"""

import os
import re
import subprocess
import sys
import sysconfig
import time

from tools import mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _run(name, cmd, env=None):
    t0 = time.monotonic()
    print("\n=== %s: %s" % (name, " ".join(cmd)), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(p.stdout)
    return p.returncode, p.stdout, time.monotonic() - t0


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tools.check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="firmware tests on both runtimes and the checks, "
                                                         "without the host tests of whole processes")
    quick = ap.parse_args(argv).quick
    results = []
    if not quick:
        ensure_chromium()  # the setup page's phone-flow test drives Debian's headless Chromium
        ensure_mosquitto()  # the MQTT output is tested against Debian's mosquitto broker

    rc, _, dt = _run("ruff", [os.path.join(BIN, "ruff"), "check", "."])
    results.append(("ruff", rc, "clean" if rc == 0 else "problems found", dt))

    stubs = sysconfig.get_paths()["purelib"]
    rc, out, dt = _run("pyright", [os.path.join(BIN, "pyright"), "--pythonpath", sys.executable,
                                   "--typeshedpath", stubs])
    m = re.search(r"(\d+) errors?", out)
    results.append(("pyright (ESP32 stubs)", rc, "%s errors" % (m.group(1) if m else "?"), dt))

    rc, out, dt = _run("mpy-cross", [sys.executable, "-m", "tools.build", "--check"])
    m = re.search(r"(\d+) files compiled", out)
    results.append(("mpy-cross -march=xtensawin", rc, "%s files compiled" % (m.group(1) if m else "0"), dt))

    targets = ["tests/unit", "tests/host/test_docs.py"] if quick else ["tests"]
    rc, out, dt = _run("pytest (CPython)", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets])
    m = re.search(r"(\d+) passed", out)
    passed_cpy = int(m.group(1)) if m else 0
    results.append(("pytest (CPython)", rc, _tail(out), dt))

    # A roomy heap: these tests check logic; the ESP32 memory budget has its own test.
    mpy = [os.path.join(BIN, "micropython"), "-X", "heapsize=64M", "tests/mprun.py", "-q", "tests/unit"]
    rc, out, dt = _run("MicroPython unix port", mpy, env=mp.env([os.path.join(ROOT, "tests")]))
    m = re.search(r"(\d+) passed", out)
    passed_mpy = int(m.group(1)) if m else 0
    results.append(("tests under MicroPython", rc, _tail(out), dt))

    print("\n=== summary")
    failed = [r for r in results if r[1] != 0]
    for name, rc, what, dt in results:
        print("  %-28s %-4s %s  (%.1f s)" % (name, "ok" if rc == 0 else "FAIL", what, dt))
    print("tests passed: %d under CPython, %d under MicroPython" % (passed_cpy, passed_mpy))
    # The closing line, in the plain form CI reads: every passed test on both runtimes, failed steps.
    print("all: %d passed, %d failed" % (passed_cpy + passed_mpy, len(failed)))
    return 1 if failed else 0


def ensure_chromium():
    """Install Debian's chromium when it is missing and we may (root, as in CI): the browser tests need it."""
    import shutil

    if shutil.which("chromium") or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    _apt_install("chromium")


def _apt_install(package):
    """apt-get install the Debian package (updating the lists once if that fails)."""
    print("=== %s is missing: apt-get install -y %s" % (package, package), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env)
        subprocess.run(cmd, env=env)


def ensure_mosquitto():
    """Install Debian's mosquitto (the broker, not its service) when it is missing and we may, as for chromium."""
    import shutil

    if shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto"):
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    _apt_install("mosquitto")


def _tail(out):
    lines = [x for x in out.strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else "no output"


if __name__ == "__main__":
    sys.exit(main())

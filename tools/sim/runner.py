"""runner — run the meter on a scenario in a child process and collect its report (host side, CPython).

`python -m tools.sim run` is a thin layer over simulate(); accuracy tests can call it directly:

    from tools.sim import runner, truth
    report, wall_s = runner.simulate({"phases": [{"irms": 10.0}]}, 30.0, runtime="micropython")
    want = truth.expected({"phases": [{"irms": 10.0}]}, 30.0)

The child is tools/sim/run_main.py under the MicroPython unix port (default) or CPython; it runs in
the state directory, so the firmware's files persist there between runs as on the board's flash.
"""

import base64
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from tools import mp
from tools.sim import mains

RUN_MAIN = os.path.join(mp.ROOT, "tools", "sim", "run_main.py")


class UsageError(Exception):
    pass


STOP_GRACE_S = 15  # after a stop request, how long the child may take before it is killed


def run_until_stopped(cmd, **popen_kw):
    """Run a MicroPython child that stops on request (device_main.py, portal_main.py); its exit status.

    The child runs in a session of its own, so a Ctrl-C in the terminal (SIGINT), a SIGTERM or a
    SIGHUP reaches only this process, which asks the child to stop through a stop file (never in the
    device's own folder): tools/sim/stop.py turns that into a KeyboardInterrupt between two
    bytecodes, as on the board. A second Ctrl-C, or a child still running STOP_GRACE_S later, is
    killed."""
    with tempfile.TemporaryDirectory(prefix="meter-stop-") as folder:
        stop_file = os.path.join(folder, "stop")
        open(stop_file, "wb").close()
        env = dict(popen_kw.pop("env", None) or mp.env(), SIM_STOP_FILE=stop_file, SIM_HOST_PID=str(os.getpid()))
        asked = []

        def stop(signum, frame):
            asked.append(time.monotonic())
            if len(asked) == 1:
                sys.stderr.write("sim: stopping (Ctrl-C again to kill it)\n")
                with open(stop_file, "ab") as f:
                    f.write(b"x")

        signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
        previous = {s: signal.signal(s, stop) for s in signals}  # before the child exists: no gap
        child = None
        try:
            child = subprocess.Popen(cmd, env=env, start_new_session=True, **popen_kw)
            while True:
                try:
                    return child.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    if len(asked) > 1 or (asked and time.monotonic() - asked[0] > STOP_GRACE_S):
                        child.kill()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()


def free_port(kind=None):
    """A port on 127.0.0.1 that nothing uses just now: TCP, or kind=socket.SOCK_DGRAM for UDP."""
    import socket

    s = socket.socket(socket.AF_INET, kind or socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


SCENARIOS = os.path.join(mp.ROOT, "tools", "sim", "scenarios")


def bundled_scenarios():
    """The names of the scenarios in tools/sim/scenarios/, for --scenario NAME."""
    return sorted(n[:-5] for n in os.listdir(SCENARIOS) if n.endswith(".json"))


def scenario_path(given):
    """The file of --scenario GIVEN: a path to a JSON file, or the name of a bundled scenario
    (reversed-ct, or reversed-ct.json: tools/sim/scenarios/reversed-ct.json). An existing file wins;
    UsageError listing the bundled names if GIVEN is neither."""
    if os.path.isfile(given):
        return given
    if os.sep not in given:
        name = given[:-5] if given.endswith(".json") else given
        if name in bundled_scenarios():
            return os.path.join(SCENARIOS, name + ".json")
        raise UsageError("--scenario %s: no such file, and no bundled scenario of that name (bundled, in "
                         "tools/sim/scenarios/: %s)" % (given, ", ".join(bundled_scenarios())))
    return given  # a path that is not there: load_scenario_file says so


def _load_checked(path, kind, check):
    """check(the JSON in a file); UsageError naming the kind of file, the file and the problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError("%s %s: cannot read it: %s" % (kind, path, e.strerror or e)) from None
    try:
        given = json.loads(text)
    except ValueError as e:
        raise UsageError("%s %s: not valid JSON: %s" % (kind, path, e)) from None
    try:
        return check(given)
    except mains.ScenarioError as e:  # (radio.RadioError is the same class)
        raise UsageError("%s %s: %s" % (kind, path, e)) from None


def load_scenario_file(path):
    """The checked scenario in a JSON file; UsageError naming the file and the problem."""
    return _load_checked(path, "scenario file", mains.load_scenario)


def load_networks_file(path):
    """The checked radio script in a JSON file (tools.sim portal --networks); UsageError naming the
    file and the problem, as for a scenario file."""
    from tools.sim import radio

    return _load_checked(path, "networks file", radio.load_networks)


def _check_fleet_key(ident_path, fleet_key, key_path):
    """UsageError when identity.json was made from another fleet key than key_path's: the server
    would refuse every upload's signature. A damaged file is left to the device to report."""
    identity = importlib.import_module("firmware.identity")  # (prepare_upload put lib/ on sys.path)
    try:
        with open(ident_path, "rb") as f:
            ident = identity.parse(f.read().decode())
    except (ValueError, UnicodeError):
        return
    if identity.derive(fleet_key, ident.serial).upload_key != ident.upload_key:
        raise UsageError("%s (serial %s) was made from another fleet key than %s, so the server would refuse "
                         "its uploads: remove it (one is made for this server) or use the server that "
                         "fleet key belongs to" % (ident_path, ident.serial, key_path))


def prepare_upload(state_dir, url, ca_path, fleet_key_path=None, record_interval_s=10, serial="SIM-1"):
    """Make the state dir (the board's flash) a device that uploads to url, trusting the CA in ca_path.

    identity.json: made for `serial` from the fleet key (default: fleet.key next to the CA file, as
    `python -m tools.ingest` leaves it) if missing; kept if present, refused (UsageError) if it was
    made from another fleet key. config.json: its upload section set.
    """
    from tools import provision  # puts lib/ on sys.path for firmware.config and firmware.identity

    try:
        with open(ca_path, "rb") as f:
            der = f.read()
    except OSError as e:
        raise UsageError("--ca %s: cannot read it: %s" % (ca_path, e.strerror or e)) from None
    ident_path = os.path.join(state_dir, "identity.json")
    key_path = fleet_key_path or os.path.join(os.path.dirname(os.path.abspath(ca_path)), "fleet.key")
    if not os.path.exists(ident_path):
        if not os.path.exists(key_path):
            raise UsageError("no identity.json in the state dir and no fleet key at %s (--fleet-key)" % key_path)
        _, produced = provision.provision(state_dir, serial, key_path, log=lambda m: None)
        os.replace(produced, ident_path)
    elif os.path.exists(key_path):
        _check_fleet_key(ident_path, provision.read_fleet_key(key_path), key_path)
    # An installed meter on Ethernet: LAN preferred, so no setup access point (and no WiFi scan).
    save_settings(state_dir, {"lan": {"enabled": True},
                              "upload": {"url": url, "ca_cert": base64.b64encode(der).decode(),
                                         "record_interval_s": record_interval_s}}, "upload settings")


def save_settings(state_dir, changes, what="settings"):
    """Set {section: {key: value}} in the state dir's config.json (and its copy), over what is there:
    checked by the device's own rules first (UsageError naming the field)."""
    from tools import provision  # noqa: F401  (puts lib/ on sys.path for firmware.config)

    config = importlib.import_module("firmware.config")
    cfg_path = os.path.join(state_dir, "config.json")
    doc = {}
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            doc = json.load(f)
    for section, keys in changes.items():
        doc.setdefault(section, {}).update(keys)
    try:
        doc = config.validate(doc)
    except config.ConfigError as e:
        raise UsageError("%s: %s" % (what, e)) from None
    text = json.dumps(doc)
    for path in (cfg_path, cfg_path + ".bak"):
        with open(path, "w") as f:
            f.write(text)


def child_command(runtime, scenario_path, duration_s, report_path, heapsize=None, upload=False, board=None):
    """(argv, env) of the child that runs the meter: the MicroPython unix port or CPython."""
    args = [scenario_path, repr(float(duration_s)), report_path] + (["--upload"] if upload else [])
    args += ["--board", board] if board else []
    if runtime == "micropython":
        return mp.command(RUN_MAIN, *args, heapsize=heapsize), mp.env()
    return [sys.executable, RUN_MAIN, *args], dict(os.environ)


def simulate(scenario, duration_s, runtime="micropython", state_dir=None, heapsize=None, upload=None, board=None):
    """Run the meter on a scenario (a file path, a bundled scenario's name or a dict) in a child
    process, on the named board profile (firmware/boards.py; None: the default): (report, wall seconds).

    The report's keys come in the documented order. ScenarioError for a bad scenario dict,
    RuntimeError if the child fails (its messages are on stderr).
    """
    scratch = tempfile.mkdtemp(prefix="meter-sim-")
    try:
        if isinstance(scenario, dict):
            scenario_file = os.path.join(scratch, "scenario.json")
            with open(scenario_file, "w", encoding="utf-8") as f:
                json.dump(mains.load_scenario(scenario), f)
        else:
            scenario_file = os.path.abspath(scenario_path(scenario))  # a bundled name or a path
        if state_dir is None:
            state_dir = os.path.join(scratch, "state")
        os.makedirs(state_dir, exist_ok=True)
        if upload is not None:  # {"url", "ca", "fleet_key", "record_interval_s"}
            if runtime != "micropython":
                raise UsageError("--upload: the device uploads under the MicroPython runtime only")
            prepare_upload(state_dir, upload["url"], upload["ca"], upload.get("fleet_key"),
                           upload.get("record_interval_s", 10))
        report_path = os.path.join(scratch, "report.json")
        cmd, env = child_command(runtime, scenario_file, duration_s, report_path, heapsize, upload is not None, board)
        try:
            chatter = sys.stderr.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            chatter = subprocess.PIPE  # stderr is not a file (e.g. captured in a test): relay it
        t0 = time.monotonic()
        # The child's stdout is the firmware's chatter: it goes to our stderr, keeping stdout for the report.
        p = subprocess.run(cmd, env=env, cwd=state_dir, stdout=chatter)
        wall_s = time.monotonic() - t0
        if p.stdout:
            sys.stderr.write(p.stdout.decode("utf-8", "replace"))
        rc = p.returncode
        if rc != 0:
            raise RuntimeError("the simulation failed under %s (exit status %d); see the messages above"
                               % (runtime, rc))
        with open(report_path, encoding="utf-8") as f:
            return ordered_report(json.load(f)), wall_s
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


REPORT_KEYS = ("frequency_hz", "wiring", "phases", "total", "diagnostics")
PHASE_KEYS = ("vrms", "irms", "real_power_w", "apparent_power_va", "reactive_power_var", "power_factor",
              "import_wh", "export_wh", "voltage_derived")
TOTAL_KEYS = ("real_power_w", "import_wh", "export_wh", "net_import_wh", "net_export_wh")


def _ordered(d, keys):
    """d with `keys` first in the documented order (MicroPython's json does not keep the meter's order)."""
    if not isinstance(d, dict):
        return d
    out = {k: d[k] for k in keys if k in d}
    out.update((k, v) for k, v in sorted(d.items()) if k not in out)
    return out


def ordered_report(report):
    out = _ordered(report, REPORT_KEYS)
    if isinstance(out.get("phases"), list):
        out["phases"] = [_ordered(ph, PHASE_KEYS) for ph in out["phases"]]
    if "total" in out:
        out["total"] = _ordered(out["total"], TOTAL_KEYS)
    if isinstance(out.get("diagnostics"), list):
        out["diagnostics"] = [_ordered(d, ("code", "phase", "message")) for d in out["diagnostics"]]
    return out


def format_text(report):
    """The report as a small table for people."""
    head = "%-6s %8s %8s %10s %10s %10s %7s %11s %11s"
    rows = [head % ("phase", "V", "A", "W", "VA", "var", "PF", "import Wh", "export Wh")]
    for k, ph in enumerate(report.get("phases", []), 1):
        pf = ph.get("power_factor")
        rows.append(head % ("L%d" % k, "%.2f" % ph["vrms"], "%.3f" % ph["irms"], "%.1f" % ph["real_power_w"],
                            "%.1f" % ph["apparent_power_va"], "%.1f" % ph["reactive_power_var"],
                            "-" if pf is None else "%.3f" % pf, "%.3f" % ph["import_wh"], "%.3f" % ph["export_wh"]))
    t = report.get("total", {})
    rows.append(head % ("total", "", "", "%.1f" % t.get("real_power_w", 0.0), "", "", "",
                        "%.3f" % t.get("import_wh", 0.0), "%.3f" % t.get("export_wh", 0.0)))
    rows.append("net import %.3f Wh, net export %.3f Wh; %s, %.3f Hz" % (
        t.get("net_import_wh", 0.0), t.get("net_export_wh", 0.0), report.get("wiring"), report.get("frequency_hz")))
    for d in report.get("diagnostics", []):
        rows.append("diagnostic %s (phase %s): %s" % (d.get("code"), d.get("phase"), d.get("message")))
    up = report.get("upload")
    if up:
        rows.append("upload: %s (%s); %d live frames and %d records sent, %d records waiting, %d lost" % (
            up.get("state"), up.get("message"), up.get("live_sent", 0), up.get("records_sent", 0),
            up.get("pending", 0), up.get("lost", 0)))
    return "\n".join(rows)

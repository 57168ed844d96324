"""The desktop simulator: the meter firmware on a simulated ESP32, under the MicroPython unix port.

    python -m tools.sim device [--scenario SCENARIO] [--duration SECONDS] [--state-dir DIR]
                               [--ingest INGEST] [--heapsize 96wK [--heap-areas 56wK,40wK] [--frozen]]
                               [--report json]
                               [--port 8080] [--lan-fault] [--board NAME] [--networks FILE.json]
                               [--modbus-port P] [--mqtt HOST:PORT]
                                the whole device, in real time, until Ctrl-C (`make sim` is
                                `device --ingest build/sim-ingest`). The device's flash
                                filesystem (config.json, identity.json, energy counters) is the
                                folder DIR, kept between runs; without --state-dir, INGEST/flash
                                with --ingest (the server remembers the device), else a fresh
                                temporary folder, removed afterwards. --heapsize runs it as on an ESP32 without
                                PSRAM (code from ROMFS, that much heap), --heap-areas in separate
                                areas as the ESP32 port grows it; --report json prints the
                                heap figures (heap_peak_bytes...) when it stops.
    python -m tools.sim portal [--port 8080] [--dns-port 8053] [--state-dir DIR] [--networks FILE.json]
                               [--scenario SCENARIO] [--no-identity] [--duration SECONDS]
                                the device with its setup portal served on 127.0.0.1:PORT (DNS catch-all
                                on 127.0.0.1:PORT2); the simulated radio's networks and how joining them
                                ends are scripted in FILE.json (default tools/sim/networks.json). A
                                state folder without identity.json gets a freshly provisioned one
                                (unless --no-identity).
    python -m tools.sim run --scenario SCENARIO --duration SECONDS [--report json|text]
                            [--runtime micropython|cpython] [--state-dir DIR] [--board NAME]
                            [--upload https://localhost:PORT --ca DIR/ca.der [--record-interval S]]
                                the measurement chain on a scenario's simulated mains, in virtual
                                time; prints one report. With --upload the whole device runs in
                                real time and uploads to that server (python -m tools.ingest)
    python -m tools.sim soak [--hours 24] [--heapsize 96wK] [--report text|json] [--keep DIR]
                                the whole device for a simulated day (load changes, outages, setup
                                page visits) on an accelerated clock, uploading to a local ingest
                                server; prints a verdict (tools/sim/soak.py). A day takes hours:
                                see `python -m tools.sim soak --help`
    python -m tools.sim heapmap [--report text|json]
                                where the firmware's heap goes: what each import, each part of the
                                device and each task keeps (tools/sim/heapmap_main.py)
    python -m tools.sim calibrate --scenario SCENARIO --state-dir DIR [--phase N]
                                an installer's calibration of the simulated device through its
                                setup portal, the scenario's true values as the instruments'
                                readings; saved in DIR/config.json for later runs
    python -m tools.sim accuracy
                                runs the accuracy cases; prints the worst error per quantity
    python -m tools.sim truth --scenario SCENARIO [--duration SECONDS]
                                what an ideal meter reads on that scenario

NAME is a board profile (esp32-devkitc, the default; wt32-eth01; olimex-esp32-poe: docs/HARDWARE.md):
the simulated mains reach the ADC pins that board uses.
SCENARIO is the name of a bundled scenario (three-phase-balanced, reversed-ct, ...: the files in
tools/sim/scenarios/) or a scenario file; scenario files and the report are described in
docs/SIMULATOR.md. One simulator at a time on a folder: a second one on the same --ingest or
--state-dir folder is refused (it would be a second device with the same identity and flash), and
so is a port another program listens on. `python -m tools.sim COMMAND --help` describes each one.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from firmware import boards
from tools import mp
from tools.sim import claim
from tools.sim.runner import (
    UsageError,
    bundled_scenarios,
    format_text,
    free_port,
    load_networks_file,
    load_scenario_file,
    run_until_stopped,
    scenario_path,
    simulate,
)

DEFAULT_SCENARIO = "three-phase-balanced"  # tools/sim/scenarios/
DEFAULT_NETWORKS = os.path.join(mp.ROOT, "tools", "sim", "networks.json")


def _sim_identity(state_dir):
    """Give the simulated device an identity (as `make deploy IDENTITY=...` does on a board)."""
    import shutil

    from tools import provision

    target = os.path.join(state_dir, "identity.json")
    if os.path.exists(target):
        return
    # The simulated device's own fleet key, beside its flash: never the fleet's real one.
    made = os.path.join(state_dir, ".provision")
    _, path = provision.provision(made, fleet_key_path=os.path.join(made, "fleet.key"), log=lambda m: None)
    shutil.copyfile(path, target)


def _hold(folders, **about):
    """claim.hold() each distinct folder of [(path, as the user wrote it)]: the locks' descriptors."""
    fds, seen = [], set()
    for path, shown in folders:
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            fds.append(claim.hold(path, shown, **about))
    return fds


def cmd_portal(args):
    for name, port in (("--port", args.port), ("--dns-port", args.dns_port)):
        if not 1 <= port <= 65535:
            raise UsageError("%s: must be a port number 1-65535 (got %d)" % (name, port))
    load_networks_file(args.networks)  # a bad file is refused here, naming the key and the rule
    scenario = scenario_path(args.scenario)
    load_scenario_file(scenario)
    with tempfile.TemporaryDirectory(prefix="meter-flash-") as scratch:
        state_dir = os.path.abspath(args.state_dir) if args.state_dir else scratch
        locks = _hold([(state_dir, args.state_dir)] if args.state_dir else [], port=args.port)
        claim.check_ports(args.port, args.dns_port)
        if not args.no_identity:
            _sim_identity(state_dir)
        cmd = mp.command(os.path.join(mp.ROOT, "tools", "sim", "portal_main.py"), state_dir,
                         os.path.abspath(scenario), os.path.abspath(args.networks), str(args.port),
                         str(args.dns_port), *([str(int(args.duration * 1000))] if args.duration else []),
                         heapsize=args.heapsize)
        sys.stderr.write("sim: setup page on http://127.0.0.1:%d/ (DNS on 127.0.0.1:%d)\n" % (args.port, args.dns_port))
        return run_until_stopped(cmd, cwd=mp.ROOT, pass_fds=locks)


def cmd_calibrate(args):
    from tools.sim import calibration

    scenario = scenario_path(args.scenario)
    load_scenario_file(scenario)
    return calibration.calibrate(os.path.abspath(scenario), os.path.abspath(args.state_dir), args.phase)


def _start_ingest(folder, extra_args=(), quiet=False):
    """`python -m tools.ingest` on a free 127.0.0.1 port, its CA, fleet key and records in folder."""
    import socket

    os.makedirs(folder, exist_ok=True)
    port = free_port()
    db = os.path.join(folder, "records.sqlite")
    # In a session of its own, like the device: a Ctrl-C in the terminal reaches only this process,
    # which stops the device first and the server after it (a server gone first made the device's
    # last upload fail with a TLS error on every Ctrl-C).
    srv = subprocess.Popen([sys.executable, "-m", "tools.ingest", "--port", str(port), "--db", db, "--certs",
                            os.path.join(folder, "certs"), *extra_args, *([] if quiet else ["--verbose"])],
                           cwd=mp.ROOT, stderr=subprocess.DEVNULL if quiet else None, start_new_session=True)
    for _ in range(100):  # wait until it listens (its first run makes a CA: a fraction of a second)
        if srv.poll() is not None:
            raise UsageError("--ingest: the ingest server did not start (exit status %d)" % srv.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return srv, port, db
        except OSError:
            time.sleep(0.1)
    srv.kill()
    raise UsageError("--ingest: the ingest server did not start listening within 10 s")


def heap_bytes(spec, word_bytes=None):
    """The heap that `micropython -X heapsize=SPEC` gives, in bytes, as the unix port reads SPEC.

    "96wK" is 96 KiB's worth of 32-bit words: the port scales a w-size by its own pointer size
    (MP_BYTES_PER_OBJ_WORD, in ports/unix/main.c), so it doubles on a 64-bit port, where objects
    take about twice the bytes, and not on a 32-bit one. word_bytes: that binary's pointer size
    (default: the micropython the tools run, tools/mp.py).
    """
    text = spec.strip()
    scale = 1
    if text[-1:] in ("K", "k", "M", "m"):
        scale = 1024 if text[-1] in "Kk" else 1024 * 1024
        text = text[:-1]
    word = text[-1:] == "w"
    if word:
        text = text[:-1]
    if not text.isdigit() or int(text) == 0:
        raise UsageError("--heapsize: %r is not a heap size like 96wK, 512K or 4M" % spec)
    n = int(text) * scale
    if not word:
        return n
    return n * (word_bytes or mp.describe()[0]) // 4


# The simulated mains and board beside the firmware's heap (a ballast takes the rest), with room for the
# pool the firmware's names go into (14 KB on x64: tools/sim/namepool.py).
SIM_HEAP_BYTES = 288 * 1024


def heap_areas(spec, heapsize):
    """[bytes] of each heap area in `--heap-areas 56wK,40wK`: sizes as --heapsize reads them, adding up to it."""
    if not heapsize:
        raise UsageError("--heap-areas: needs --heapsize (the areas split that heap)")
    sizes = [heap_bytes(part.strip()) for part in spec.split(",")]
    if len(sizes) < 2 or sum(sizes) != heap_bytes(heapsize) or min(sizes) < 4096:
        raise UsageError("--heap-areas: %r must be two or more sizes of at least 4K that add up to --heapsize %s "
                         "(%d bytes)" % (spec, heapsize, heap_bytes(heapsize)))
    return sizes


def budget_args(heapsize, sim_bytes=SIM_HEAP_BYTES, frozen=False):
    """device_main.py's arguments and the child's -X heapsize for a firmware heap of `heapsize`
    (e.g. "96wK"): the code from the ROMFS image (or frozen into the MicroPython binary), the
    simulator's sim_bytes beside it."""
    from tools import romfs

    budget = heap_bytes(heapsize)
    if frozen:
        return ["--rom", "frozen", "--heap-bytes", str(budget)], str(budget + sim_bytes)
    rom = romfs.image_path(mp.describe()[1] or romfs.HOST_MARCH)
    return ["--rom", rom, "--heap-bytes", str(budget)], str(budget + os.path.getsize(rom) + sim_bytes)


def cmd_device(args):
    if args.duration and not 0 < args.duration <= 144 * 3600:  # asyncio's sleeps reach 2**29 ms: ~6.2 days
        raise UsageError("--duration: must be more than 0 and at most 518400 s (6 days)")
    scenario = scenario_path(args.scenario)
    load_scenario_file(scenario)  # a bad file is refused here, with a clear message
    load_networks_file(args.networks)  # and a bad radio script, naming the key and the rule
    with tempfile.TemporaryDirectory(prefix="meter-flash-") as scratch:
        # The ingest remembers the device (its records by seq, the fleet key its identity is made
        # from), so with --ingest the device's flash is kept too: a fresh one would number its records
        # from 0 again and the server would take them for ones it already has.
        state_dir = os.path.abspath(args.state_dir or (os.path.join(args.ingest, "flash") if args.ingest else scratch))
        # This simulator alone on its folders (the ingest first: `make sim` is refused naming it).
        folders = [(args.ingest, args.ingest)] if args.ingest else []
        if state_dir != scratch:
            folders.append((state_dir, args.state_dir or os.path.join(args.ingest, "flash")))
        locks = _hold(folders, port=args.port)
        claim.check_ports(args.port, args.dns_port)
        os.makedirs(state_dir, exist_ok=True)
        if args.frozen and not args.heapsize:
            raise UsageError("--frozen: needs --heapsize (it measures the heap the frozen code leaves)")
        extra, heapsize = budget_args(args.heapsize, frozen=args.frozen) if args.heapsize else ([], None)
        if args.heap_areas:
            extra += ["--heap-areas", ",".join(str(n) for n in heap_areas(args.heap_areas, args.heapsize))]
        report = os.path.join(scratch, "report.json") if args.report else None
        if report:
            extra += ["--report", report]
        if args.duration:
            extra += ["--run-ms", str(int(args.duration * 1000))]
        if args.lan_fault:
            extra += ["--lan-fault"]
        if args.board:
            extra += ["--board", args.board]
        extra += ["--networks", os.path.abspath(args.networks)]
        cmd = mp.command(os.path.join(mp.ROOT, "tools", "sim", "device_main.py"), state_dir,
                         os.path.abspath(scenario), "--port", str(args.port), "--dns-port", str(args.dns_port),
                         *extra, heapsize=heapsize)
        srv = stored = None
        try:
            outputs = {}
            if args.modbus_port:  # the local outputs (docs/API.md), on 127.0.0.1 as the setup page is
                outputs["modbus"] = {"enabled": True, "port": args.modbus_port}
            if args.mqtt:
                host, _, port = args.mqtt.rpartition(":")
                if not host or not port.isdigit():
                    raise UsageError("--mqtt: give the broker as HOST:PORT, e.g. 127.0.0.1:1883 (got %r)" % args.mqtt)
                outputs["mqtt"] = {"enabled": True, "host": host, "port": int(port)}
            if outputs:
                from tools.sim.runner import save_settings

                outputs["lan"] = {"enabled": True}  # an installed meter on Ethernet, online: the cable is in

                save_settings(state_dir, outputs, "--modbus-port/--mqtt")
            if args.ingest:
                from tools.sim.runner import prepare_upload

                srv, port, db = _start_ingest(os.path.abspath(args.ingest))
                prepare_upload(state_dir, "https://localhost:%d" % port,
                               os.path.join(os.path.abspath(args.ingest), "certs", "ca.der"), None,
                               args.record_interval)
                _warn_numbering_again(state_dir, db)
            if args.port:
                sys.stderr.write("sim: setup page on http://127.0.0.1:%d/ (DNS on 127.0.0.1:%d); readings below; "
                                 "Ctrl-C stops the device\n" % (args.port, args.dns_port))
            # The firmware's console goes to stderr when stdout carries the report.
            # The child holds the folders' locks too: they stay held as long as the device runs.
            rc = run_until_stopped(cmd, cwd=mp.ROOT, stdout=sys.stderr if report else None, pass_fds=locks)
        finally:
            if srv is not None:
                srv.terminate()
                srv.wait(10)
        if srv is not None:
            import sqlite3

            con = sqlite3.connect(db)
            stored = con.execute("SELECT count(*) FROM records").fetchone()[0]
            con.close()
            sys.stderr.write("sim: the ingest server stored %d interval records in %s "
                             "(python -m tools.ingest --db %s --dump)\n" % (stored, db, db))
        if report:
            if rc != 0 or not os.path.exists(report):
                sys.stderr.write("sim: the device failed (exit status %d); no report\n" % rc)
                return rc or 1
            with open(report) as f:
                out = json.load(f)
            if stored is not None:
                out["ingest_records"] = stored
            sys.stdout.write(json.dumps(out) + "\n")
        return rc


def _warn_numbering_again(state_dir, db):
    """A flash that never numbered a record, uploading to a server that has this serial's records
    (--state-dir a new folder, or an ingest folder from before the flash was kept in it)."""
    if os.path.exists(os.path.join(state_dir, "spool", "state.json")):
        return
    try:
        with open(os.path.join(state_dir, "identity.json")) as f:
            serial = json.load(f)["serial"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # damaged: the device says so
    from tools import ingest

    have = len(ingest.stored_seqs(db, serial))
    if have:
        sys.stderr.write("sim: note: the ingest server already has %d records of %s, and this device's "
                         "flash (%s) has no record numbering: the device holds its records until the server "
                         "has said where its numbers are, and numbers on above them. Remove the ingest folder "
                         "to start over with a new server and device.\n" % (have, serial, state_dir))


def _duration(args):
    if not 0 < args.duration <= 7 * 86400:
        raise UsageError("--duration: must be more than 0 and at most 604800 seconds (got %g)" % args.duration)
    return args.duration


def cmd_run(args):
    args.scenario = scenario_path(args.scenario)
    load_scenario_file(args.scenario)  # refuse a bad file here, with the parent's clear message
    duration_s = _duration(args)
    if args.state_dir:
        _hold([(args.state_dir, args.state_dir)])  # (held until this process ends)
    try:
        upload = None
        if args.upload:
            if not args.ca:
                raise UsageError("--upload needs --ca DIR/ca.der (the CA that signed the server's certificate)")
            upload = {"url": args.upload, "ca": args.ca, "fleet_key": args.fleet_key,
                      "record_interval_s": args.record_interval}
        report, wall_s = simulate(args.scenario, duration_s, args.runtime, args.state_dir, args.heapsize, upload,
                                  args.board)
    except RuntimeError as e:
        sys.stderr.write("sim: %s\n" % e)
        return 1
    sys.stderr.write("sim: %g simulated s in %.2f wall s under %s\n" % (duration_s, wall_s, args.runtime))
    if args.report == "json":
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(format_text(report) + "\n")
    return 0


def cmd_heapmap(args):
    """Where the firmware's heap goes: tools/sim/heapmap_main.py under the unix port, as a table."""
    from tools import romfs

    rom = romfs.image_path(mp.describe()[1] or romfs.HOST_MARCH)
    with tempfile.TemporaryDirectory(prefix="meter-heapmap-") as state_dir:
        r = mp.run(os.path.join(mp.ROOT, "tools", "sim", "heapmap_main.py"), state_dir,
                   os.path.join(mp.ROOT, "tools", "sim", "scenarios", DEFAULT_SCENARIO + ".json"), rom,
                   str(free_port()), heapsize="4M", capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-3000:] + r.stdout[-3000:])
        return 1
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if args.report == "json":
        sys.stdout.write(json.dumps(out) + "\n")
        return 0
    lines = ["heap kept, in bytes, on this %d-bit unix port (code from ROMFS)" % (8 * out["word_bytes"])]
    for title, key in (("importing (leaf first)", "imports"), ("building the Device", "device"),
                       ("each task's first 2 s", "tasks"), ("buffers asked for in one piece", "buffers")):
        rows = out[key]
        lines.append("%s: %d in all" % (title, sum(n for _, n in rows)) if key == "imports" else title + ":")
        lines += ["  %-66s %7d" % (name, n) for name, n in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_soak(args):
    from tools.sim import soak

    if not 0 < args.hours <= 144:  # asyncio's sleeps and ticks_diff reach 2**29 ms: ~6.2 days
        raise UsageError("--hours: must be more than 0 and at most 144 (got %g)" % args.hours)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    try:
        report, checks, wall_s = soak.run(args.hours, args.heapsize, args.keep and os.path.abspath(args.keep))
    except RuntimeError as e:
        sys.stderr.write("sim: soak: %s\n" % e)
        return 1
    if args.report == "json":
        report["verdict"] = [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks]
        report["wall_s"] = wall_s
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(soak.format_verdict(checks, args.hours, wall_s) + "\n")
    return 0 if all(ok is not False for _, ok, _ in checks) else 1  # None: not checked (too short)


def cmd_truth(args):
    from tools.sim import truth

    scenario = load_scenario_file(scenario_path(args.scenario))
    sys.stdout.write(json.dumps(truth.expected(scenario, _duration(args) if args.duration else 0.0)) + "\n")
    return 0


# How long a simulated day takes, as measured (BENCHMARKS.md, "Soak"; the 2-core development machine).
SOAK_TIME = ("A simulated day takes hours: 24 simulated hours took 7,900-8,500 s (2.2-2.4 h) of host time "
             "on a 2-core desktop, and with --heapsize 96wK about twice that (5 simulated hours took 3,538 s). "
             "A shorter run checks all but the heap, which needs 14 simulated hours or more.")


def build_parser():
    names = ", ".join(bundled_scenarios())
    scenario_help = ("the simulated mains: a bundled scenario's name (%s; tools/sim/scenarios/) or a scenario "
                     "file (docs/SIMULATOR.md)" % names)
    ap = argparse.ArgumentParser(prog="python -m tools.sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, summary, description):
        return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ". " + description)

    d = command("device", "run the whole device in real time until Ctrl-C",
                "The firmware on the simulated board and mains, under the real MicroPython: readings on the "
                "console, the setup page on 127.0.0.1:PORT. `make sim` runs `device --ingest build/sim-ingest`. "
                "One simulator at a time on a folder (--ingest, --state-dir): a second is refused.")
    d.add_argument("--scenario", default=DEFAULT_SCENARIO, metavar="SCENARIO",
                   help=scenario_help + " (default: %(default)s)")
    d.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds (default: run "
                                                                     "until Ctrl-C)")
    d.add_argument("--heapsize", help="the firmware's heap, e.g. 96wK (an ESP32 without PSRAM): its code then "
                                      "runs from a ROMFS image, as on the board, and the simulator's own "
                                      "memory is kept apart")
    d.add_argument("--frozen", action="store_true", help="with --heapsize: the code frozen into the MicroPython "
                                                          "binary (MICROPYTHON=..., built as docs/SIMULATOR.md "
                                                          "shows), as in the meter's own image, instead of ROMFS")
    d.add_argument("--heap-areas", metavar="SIZES", help="with --heapsize: that heap in separate areas, e.g. "
                                                          "56wK,40wK (the ESP32 port starts with 56 KB and adds "
                                                          "areas): no block can span two areas")
    d.add_argument("--report", choices=("json",), help="when the device stops, print its heap figures, "
                                                       "energy, uploads and any task that died as JSON")
    d.add_argument("--port", type=int, default=8080, help="setup page on 127.0.0.1:PORT (default: %(default)s; "
                                                          "0: any free port)")
    d.add_argument("--dns-port", type=int, default=8053, help="DNS catch-all on UDP 127.0.0.1:PORT (default: "
                                                              "%(default)s; 0: any free port)")
    d.add_argument("--record-interval", type=int, default=10, metavar="S",
                   help="with --ingest: seconds per interval record (default 10; 10-3600)")
    d.add_argument("--state-dir", metavar="DIR", help="folder holding the device's flash filesystem, kept between "
                                                      "runs (default: INGEST/flash with --ingest, else a fresh "
                                                      "temporary folder)")
    d.add_argument("--ingest", metavar="INGEST", help="also run a local ingest server (python -m tools.ingest; "
                                                      "CA, fleet key and records.sqlite in INGEST) and upload to it")
    d.add_argument("--modbus-port", type=int, metavar="P", help="also serve Modbus TCP as an Eastron SDM630 on "
                                                               "127.0.0.1:P (saved in the device's config.json; "
                                                               "docs/API.md)")
    d.add_argument("--mqtt", metavar="HOST:PORT", help="also publish to this MQTT broker, with Home Assistant "
                                                      "discovery (saved in the device's config.json; docs/API.md)")
    d.add_argument("--lan-fault", action="store_true",
                   help="no Ethernet PHY answers: network.LAN raises OSError, as on a board whose PHY is "
                        "missing or at another address; the setup access point and WiFi must carry on")
    board_help = ("the board profile to simulate: %s (docs/HARDWARE.md); its pins carry the mains, and it "
                  "overrides config.json's board.profile" % ", ".join(boards.NAMES))
    d.add_argument("--board", choices=boards.NAMES, metavar="NAME", help=board_help + " (default: as config.json "
                                                                                     "says, else esp32-devkitc)")
    d.add_argument("--networks", default=DEFAULT_NETWORKS, metavar="FILE.json",
                   help="the simulated radio: its networks, and how long name lookups and NTP hold the VM "
                        "(dns_ms, dns_answers, ntp_ms); unknown keys are refused (default: tools/sim/networks.json)")
    d.set_defaults(fn=cmd_device)

    p = command("portal", "the device with its setup portal on 127.0.0.1 and a scripted radio",
                "The page a phone sees on the device's access point, served on 127.0.0.1:PORT, with a DNS "
                "catch-all on UDP 127.0.0.1:DNS_PORT; the simulated radio's networks come from --networks.")
    p.add_argument("--port", type=int, default=8080, help="HTTP port on 127.0.0.1 (default: %(default)s)")
    p.add_argument("--dns-port", type=int, default=8053, help="DNS port on 127.0.0.1 (default: %(default)s)")
    p.add_argument("--state-dir", metavar="DIR", help="folder holding the device's flash filesystem, kept between "
                                                      "runs (default: a fresh temporary folder)")
    p.add_argument("--networks", default=DEFAULT_NETWORKS, metavar="FILE.json",
                   help="the simulated radio's networks and how joining them ends; unknown keys are refused "
                        "(default: tools/sim/networks.json, which shows every key)")
    p.add_argument("--scenario", default=DEFAULT_SCENARIO, metavar="SCENARIO",
                   help=scenario_help + " (default: %(default)s)")
    p.add_argument("--no-identity", action="store_true", help="run without a device identity (the page says "
                                                              "uploads are off, and why)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds (default: run "
                                                                     "until Ctrl-C)")
    p.add_argument("--heapsize", help="MicroPython heap, e.g. 96wK (an ESP32 without PSRAM)")
    p.set_defaults(fn=cmd_portal)

    r = command("run", "measure a scenario's simulated mains in virtual time; print the report",
                "The measurement chain (sampler to readings) on the scenario, faster than real time; the report "
                "(JSON on stdout, or a table) is described in docs/SIMULATOR.md. With --upload the whole device "
                "runs in real time and uploads to a server started with python -m tools.ingest.")
    r.add_argument("--scenario", required=True, metavar="SCENARIO", help=scenario_help)
    r.add_argument("--duration", type=float, required=True, metavar="SECONDS", help="simulated seconds")
    r.add_argument("--report", choices=("json", "text"), default="json",
                   help="json: one JSON object on stdout (default); text: a table")
    r.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython",
                   help="run the firmware under the MicroPython unix port (default) or CPython")
    r.add_argument("--state-dir", metavar="DIR",
                   help="the board's flash: the firmware's files persist here between runs (default: fresh)")
    r.add_argument("--heapsize", help="MicroPython heap for the child, e.g. 4M")
    r.add_argument("--upload", metavar="URL", help="also upload to this server (https://localhost:PORT): the "
                                                   "whole device then runs in real time (--duration is wall time)")
    r.add_argument("--ca", metavar="CA.der", help="with --upload: the CA to trust (tools.ingest's DIR/ca.der)")
    r.add_argument("--fleet-key", metavar="FILE", help="with --upload: the fleet key for the device's identity "
                                                       "(default: fleet.key next to the CA file)")
    r.add_argument("--record-interval", type=int, default=10, metavar="S",
                   help="with --upload: seconds per interval record (default 10; 10-3600)")
    r.add_argument("--board", choices=boards.NAMES, metavar="NAME", help=board_help + " (default: esp32-devkitc)")
    r.set_defaults(fn=cmd_run)

    k = command("soak", "the whole device for a simulated day on an accelerated clock; a verdict",
                "Load changes, server outages, a pulled cable and setup-page visits, uploading to a local ingest "
                "server; the verdict checks records, energy, heap and tasks (tools/sim/soak.py). " + SOAK_TIME)
    k.add_argument("--hours", type=float, default=24.0, help="simulated hours, at most 144 (default: %(default)s)")
    k.add_argument("--heapsize", help="run the firmware in this heap with its code from ROMFS, e.g. 96wK (the "
                                      "ESP32's; about twice as slow on the host); default: the unix port's")
    k.add_argument("--report", choices=("json", "text"), default="text", help="the verdict as text (default) "
                                                                              "or the whole report as JSON")
    k.add_argument("--keep", metavar="DIR", help="keep the run's files (console log, flash, ingest) in DIR")
    k.set_defaults(fn=cmd_soak)

    h = command("heapmap", "where the firmware's heap goes: each import, each part of the device, each task",
                "What each firmware module's import keeps, each part of firmware/app.py's Device, each task's "
                "first 2 s and the buffers asked for in one piece, in bytes after a collection, with the code "
                "from ROMFS as on the board (tools/sim/heapmap_main.py). MICROPYTHON=/path measures another "
                "unix port (a 32-bit build: docs/SIMULATOR.md).")
    h.add_argument("--report", choices=("text", "json"), default="text", help="a table (default) or JSON")
    h.set_defaults(fn=cmd_heapmap)

    c = command("calibrate", "an installer's calibration of the simulated device, saved in its state dir",
                "Runs the device with its setup portal and sends the reference instruments' readings (the "
                "scenario's true values) to the portal's POST /api/calibration, as the setup page's Calibrate "
                "form does; the gains land in DIR/config.json, where a later `run --state-dir DIR` measures with "
                "them (tools/sim/calibration.py).")
    c.add_argument("--scenario", required=True, metavar="SCENARIO", help=scenario_help)
    c.add_argument("--state-dir", required=True, metavar="DIR", help="the device's flash: the calibration is "
                                                                     "saved in DIR/config.json")
    c.add_argument("--phase", type=int, choices=(1, 2, 3), help="only L N's voltage and CT N (default: all three "
                                                                "voltages and every CT)")
    c.set_defaults(fn=cmd_calibrate)

    a = command("accuracy", "run the accuracy cases and print the worst errors",
                "The cases of tests/host/test_accuracy.py (power factors, ranges, frequencies, distortion, wiring "
                "faults) through the firmware under MicroPython, two at a time, against the analytic truth.")
    a.set_defaults(fn=lambda args: __import__("tools.sim.accuracy", fromlist=["main"]).main())

    t = command("truth", "print what an ideal meter reads on a scenario (JSON)",
                "Computed analytically from the scenario's phasors (tools/sim/truth.py), never from samples: "
                "the readings, the readings as wired (with the scenario's wiring faults) and the faults.")
    t.add_argument("--scenario", required=True, metavar="SCENARIO", help=scenario_help)
    t.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                   help="seconds of energy for the counters (default: 0, no energy)")
    t.set_defaults(fn=cmd_truth)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as e:
        sys.stderr.write("sim: %s\n" % e)
        return 2


if __name__ == "__main__":
    sys.exit(main())

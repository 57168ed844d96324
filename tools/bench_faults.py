"""The upload fault matrix (issue 18): records lost, duplicated and unexplained across faults.

    python -m tools.bench_faults [--only NAME ...] [--json] [--keep DIR]

Each scenario runs the uploader under the real MicroPython unix port (tools/sim/upload_main.py, one
process per device start) against its own `tools.ingest` over real HTTPS on 127.0.0.1, makes the
fault, starts the device again where the fault calls for it, and lets it drain. Every record the
device makes carries a made id, written to a log as it is numbered, so a device killed like a power
cut still says what it made. Then, per scenario:

  made        records the device made (its log, and any stored the log missed at a kill)
  stored      of those, how many the server holds
  dup         rows the server holds twice for one record (under two seqs)
  lost        seqs the device declared lost (spool full, a line too long, refused), as --gaps counts
  cut         records made by a start that was killed, never stored nor declared: the records that
              were in its RAM at the power cut (docs/PROTOCOL.md "Losses": fewer than one spool file)
  unseen      any other record made, not stored and not declared lost: lost without a trace
  skipped     seqs declared skipped (never used, the rest of a block at a restart)
  unexplained seqs in no category (`python -m tools.ingest --gaps`)

A power cut is SIGKILL to the device's process: the records still in its RAM die with it (at most
one spool file's worth, docs/PROTOCOL.md "Losses"). Exit status 1 if any scenario has a duplicate,
an unexplained seq, an unseen loss, or more records lost at a cut than RAM holds (10).
"""

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

from tools import ingest, mp, provision
from tools.sim.runner import free_port

ROOT = mp.ROOT
SERIAL = "FAULTS-1"


class Rig:
    """One scenario's server, device flash (a folder) and fault file."""

    def __init__(self, base, certs, name):
        self.dir = os.path.join(base, name.replace(" ", "-").replace(",", ""))
        self.state = os.path.join(self.dir, "flash")
        os.makedirs(self.state)
        self.certs, self.db = certs, os.path.join(self.dir, "db.sqlite")
        self.fault_file = os.path.join(self.dir, "fault")
        self.made_log = os.path.join(self.dir, "made.log")
        self.port = free_port()
        self.srv = None
        self.runs = 0
        self.killed = set()  # the run names of starts ended by a power cut
        with open(os.path.join(certs, "fleet.key")) as f:
            self.fleet_key = f.read().strip()

    def start(self):
        ready = threading.Event()

        def run():
            ingest.serve(self.port, self.db, self.certs, fault_file=self.fault_file,
                         ready=lambda srv: (setattr(self, "srv", srv), ready.set()))

        threading.Thread(target=run, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the ingest server did not start")

    def stop(self):
        if self.srv is not None:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

    def fault(self, mode):
        with open(self.fault_file, "w") as f:
            f.write(mode)

    def device(self, run_ms, kill_at_ms=None, **kw):
        """One start of the device: run_ms of records, then drained and stopped in order, or killed
        (a power cut) kill_at_ms after it started."""
        self.runs += 1
        plan = {"state_dir": self.state, "url": "https://localhost:%d" % self.port,
                "ca_der": os.path.join(self.certs, "ca.der"), "fleet_key": self.fleet_key, "serial": SERIAL,
                "run_ms": run_ms, "drain_ms": 8000, "window_ms": 50, "record_ms": 150,
                "report": os.path.join(self.dir, "report%d.json" % self.runs), "fault_file": self.fault_file,
                "run": "r%d" % self.runs, "made_log": self.made_log, "phases": []}
        plan.update(kw)
        path = os.path.join(self.dir, "plan%d.json" % self.runs)
        with open(path, "w") as f:
            json.dump(plan, f)
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "lib"), ".frozen"]))
        with open(os.path.join(self.dir, "console%d.txt" % self.runs), "w") as out:
            p = subprocess.Popen([mp.micropython_exe(), os.path.join(ROOT, "tools", "sim", "upload_main.py"), path],
                                 env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            try:
                p.wait(timeout=None if kill_at_ms is None else kill_at_ms / 1000)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)  # the power goes: nothing more reaches the flash
                p.wait()
                self.killed.add(plan["run"])
                return None
            p.wait(timeout=90)
        if p.returncode:
            raise RuntimeError("the device failed (see %s)" % out.name)
        with open(plan["report"]) as f:
            return json.load(f)

    def judge(self):
        made = {}
        if os.path.exists(self.made_log):
            with open(self.made_log) as f:
                for line in f:
                    if line.strip():
                        made_id, seq = line.split()
                        made[made_id] = int(seq)
        db = sqlite3.connect(self.db)
        rows = [(seq, json.loads(rec).get("made")) for seq, rec in
                db.execute("SELECT seq, record FROM records WHERE serial = ?", (SERIAL,))]
        db.close()
        stored = {}
        for _, made_id in rows:
            stored[made_id] = stored.get(made_id, 0) + 1
        for made_id in stored:
            made.setdefault(made_id, None)  # numbered and sent just before a kill, before its log line
        (acc,) = [g for g in ingest.gaps(self.db) if g["serial"] == SERIAL] or [
            {"records": 0, "skipped": 0, "lost": 0, "unexplained": 0}]
        lost_ranges = [(a, b) for a, b in sqlite3.connect(self.db).execute(
            "SELECT first, end FROM gaps WHERE serial = ? AND kind = 'lost'", (SERIAL,))]
        unseen = [m for m, seq in made.items() if m not in stored and
                  not (seq is not None and any(a <= seq < b for a, b in lost_ranges))]
        cut = [m for m in unseen if m.split("-")[0] in self.killed]
        return {"made": len(made), "stored": len(stored), "dup": sum(n - 1 for n in stored.values()),
                "lost": acc["lost"], "cut": len(cut), "unseen": len(unseen) - len(cut), "skipped": acc["skipped"],
                "unexplained": acc["unexplained"], "starts": self.runs}


# -- the scenarios: each makes its fault on a Rig ---------------------------------------------------

def restart(r):
    r.start()
    r.device(1500)
    r.device(1500)  # an orderly restart: the rest of the block is skipped, exactly


def power_cut(r):
    r.start()
    r.device(4000, kill_at_ms=2500)
    r.device(1500)


def power_cut_in_outage(r):
    r.fault("500")
    r.start()
    r.device(4000, kill_at_ms=2500)  # records in RAM the server never had: gone with the power
    r.fault("")
    r.device(1500)


def state_lost(r):
    r.start()
    r.device(1500)
    os.remove(os.path.join(r.state, "spool", "state.json"))
    r.device(1500)


def state_damaged(r):
    r.start()
    r.device(1500)
    with open(os.path.join(r.state, "spool", "state.json"), "w") as f:
        f.write('{"reserved": "abc"}')
    r.device(1500)


def reprovisioned(r):
    r.start()
    r.device(1500)
    shutil.rmtree(r.state)  # the flash erased, the same serial provisioned again
    os.makedirs(r.state)
    r.device(1500)


def erased_in_outage(r):
    r.start()
    r.device(1500)
    shutil.rmtree(r.state)
    os.makedirs(r.state)
    r.fault("500")
    r.device(2000, drain_ms=0)  # numbered while the server cannot say: held, spooled, then moved
    r.fault("")
    r.device(1000)


def outage(r):
    threading.Timer(2.0, r.start).start()  # the server comes up after two seconds
    r.device(3000)


def outage_spool_full(r):
    r.device(2500, drain_ms=0, spool_files=3, ram_max=2)  # server down: the oldest records dropped
    r.start()
    r.device(1000, spool_files=3, ram_max=2)


def server_fault(mode):
    def scenario(r):
        r.start()
        r.device(3000, phases=[[300, mode, None], [1800, "", None]])
    return scenario


def oversized(r):
    r.start()
    r.device(2000, oversized_at=3)


SCENARIOS = [("restart", restart), ("power cut", power_cut), ("power cut in an outage", power_cut_in_outage),
             ("state lost", state_lost), ("state damaged", state_damaged),
             ("re-provisioned after erase", reprovisioned), ("erased, then an outage", erased_in_outage),
             ("outage", outage), ("outage, spool full", outage_spool_full), ("server 500", server_fault("500")),
             ("server 429", server_fault("429")), ("server hangs", server_fault("hang")),
             ("server resets", server_fault("reset")), ("bogus acks", server_fault("bogus")),
             ("line too long", oversized)]


def run(names=None, keep=None, parallel=3):
    base = keep or tempfile.mkdtemp(prefix="bench-faults-")
    certs = os.path.join(base, "certs")
    ingest.ensure_certs(certs)
    provision.fleet_key_for(certs, os.path.join(certs, "fleet.key"), log=lambda m: None)
    todo = [(n, fn) for n, fn in SCENARIOS if not names or n in names]
    results, lock = {}, threading.Lock()

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                name, fn = todo.pop(0)
            r = Rig(base, certs, name)
            try:
                fn(r)
                time.sleep(0.2)
                out = r.judge()
            except Exception as e:
                out = {"error": "%s: %s" % (type(e).__name__, e)}
            finally:
                r.stop()
            results[name] = out

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if keep is None:
        shutil.rmtree(base, ignore_errors=True)
    return [(n, results[n]) for n, _ in SCENARIOS if n in results]


COLUMNS = ("made", "stored", "dup", "lost", "cut", "unseen", "skipped", "unexplained")
RAM_RECORDS = 10  # upload_main's ram_max: what a power cut can take


def table(rows):
    head = "%-27s" % "fault" + "".join("%12s" % c for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, r in rows:
        if "error" in r:
            lines.append("%-28s %s" % (name, r["error"]))
        else:
            lines.append("%-27s" % name + "".join("%12d" % r[c] for c in COLUMNS))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench_faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="run only this scenario (by name; repeatable)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ap.add_argument("--keep", help="keep the flash folders, databases and consoles in this new folder")
    args = ap.parse_args(argv)
    known = [n for n, _ in SCENARIOS]
    for n in args.only or ():
        if n not in known:
            ap.error("--only %r: no such scenario (%s)" % (n, ", ".join(known)))
    rows = run(args.only, args.keep)
    print(json.dumps(dict(rows), indent=1) if args.json else table(rows))
    bad = [n for n, r in rows if "error" in r or r["dup"] or r["unexplained"] or r["unseen"] or
           r["cut"] > RAM_RECORDS]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

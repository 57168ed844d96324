"""Reference ingest server for the meter's uploads (docs/PROTOCOL.md), over real HTTPS.

    python -m tools.ingest --port PORT --db FILE.sqlite --certs DIR [--fleet-key FILE]
                           [--host 127.0.0.1] [--fault-file FILE] [--verbose]
    python -m tools.ingest --db FILE.sqlite --dump
    python -m tools.ingest --db FILE.sqlite --gaps

On first run DIR gets a new CA (DIR/ca.pem, DIR/ca.der: give ca.der to the device as upload.ca_cert)
and a server certificate for localhost and 127.0.0.1 signed by it. Devices are authenticated with
the fleet key (--fleet-key FILE, created there if missing; default DIR/fleet.key, created on first
run: this server's own, not the fleet's; `python -m tools.provision --fleet-key DIR/fleet.key` makes
identities it accepts): each device's upload key is derived from its serial (firmware/identity.py), and
X-Meter-Signature must be HMAC-SHA256 of the body under it. Interval records are stored in SQLite,
deduplicated by (serial, seq), and acknowledged by seq; live frames are kept with their arrival
time. Every reply to /v1/records carries next_seq, the lowest seq above every record and declaration
held for the serial (protocol version 2), and a request may declare ranges of seqs skipped or lost
("skipped"/"lost": [[first, end], ...]). --dump prints the stored records as JSON lines, each with
"serial" and "seq"; --gaps prints per serial how many seqs below next_seq are stored records, declared
lost, declared skipped, or unexplained (in that order of precedence).

It is meant to stay up under clients that misbehave: each TLS handshake runs in its connection's own
thread with a 15 s timeout on each read and write (a client that never says hello stalls nobody), a
body is read only once the headers could authenticate it (X-Meter-Serial of a valid serial, a 64-hex
X-Meter-Signature, a Content-Length of digits up to 256 KB), and a record that is not what
docs/PROTOCOL.md says (a seq that is not an integer from 0 to 2**53 - 1, NaN, a number too large for
a double, nesting deeper than Python parses) gets a 400 with the reason. The upload keys derived for
serials are cached, 256 at most.

For tests only, --fault-file names a file read on every request: "500", "429", "401", "hang"
(no reply for 60 s), "reset" (headers and half the reply, then a TCP reset), "reject" (400 for
the first record of every batch), "drop" (close every kept-alive connection after its reply,
without announcing it) or "bogus" (acknowledge seqs that were not sent as well) make the server
misbehave that way; empty or absent means normal.
"""

import argparse
import datetime
import hmac
import http.server
import json
import os
import socket
import sqlite3
import ssl
import struct
import sys
import threading
import time

from tools import provision

MAX_BODY = 256 * 1024
MAX_SEQ = 2 ** 53  # seqs are JSON numbers: beyond this they are not exact in every JSON reader
KEY_CACHE = 256  # upload keys kept (derived before a request is authenticated: bounded against serial spraying)
TIMEOUT_S = 15  # a client that stops sending (in the TLS handshake or a request) is dropped after this


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)  # NaN, Infinity: Python's json takes them, JSON does not


def _finite(text):
    x = float(text)
    if x in (float("inf"), float("-inf")):
        raise ValueError("%s is too large a number" % text[:20])  # 1e999: stored, it would dump as Infinity
    return x


def ensure_certs(folder):
    """Create DIR/ca.pem, ca.der, server.pem, server.key on first use; return (certfile, keyfile)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(folder, exist_ok=True)
    cert_path, key_path = os.path.join(folder, "server.pem"), os.path.join(folder, "server.key")
    if all(os.path.exists(os.path.join(folder, n)) for n in ("ca.pem", "ca.der", "server.pem", "server.key")):
        return cert_path, key_path
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "open-meter test ingest CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    with open(os.path.join(folder, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(folder, "ca.der"), "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.DER))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def open_db(path):
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("CREATE TABLE IF NOT EXISTS records (serial TEXT, seq INTEGER, record TEXT, received_ms INTEGER,"
               " PRIMARY KEY (serial, seq))")
    # numbers the device declared it will send no record for: [first, end) skipped (never used) or lost
    db.execute("CREATE TABLE IF NOT EXISTS gaps (serial TEXT, kind TEXT, first INTEGER, end INTEGER,"
               " PRIMARY KEY (serial, kind, first))")
    db.execute("CREATE TABLE IF NOT EXISTS live (serial TEXT, t_ms INTEGER, received_ms INTEGER, bytes INTEGER,"
               " frame TEXT)")
    db.commit()
    return db


def stored_seqs(path, serial):
    """The sequence numbers of serial's records in the database at path, in order."""
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT seq FROM records WHERE serial = ? ORDER BY seq", (serial,))]
    finally:
        db.close()


def next_seq(db, serial):
    """The lowest seq above every record and declaration held for serial (0 if none)."""
    a = db.execute("SELECT max(seq) + 1 FROM records WHERE serial = ?", (serial,)).fetchone()[0]
    b = db.execute("SELECT max(end) FROM gaps WHERE serial = ?", (serial,)).fetchone()[0]
    return max(a or 0, b or 0)


def _merged(ranges):
    """Sorted, non-overlapping [first, end) ranges covering the same seqs."""
    out = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _minus(ranges, cut):
    """The seqs of ranges not in cut (both merged), as merged ranges."""
    out = []
    for a, b in ranges:
        for c, d in cut:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append([a, c])
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            out.append([a, b])
    return out


def _count_in(seqs, ranges):
    import bisect

    return sum(bisect.bisect_left(seqs, b) - bisect.bisect_left(seqs, a) for a, b in ranges)


def gaps(path):
    """Per serial: {"serial", "records", "skipped", "lost", "unexplained"}: every seq from 0 to the highest
    held is a stored record, else declared lost, else declared skipped, else unexplained."""
    db = open_db(path)
    serials = [r[0] for r in db.execute("SELECT serial FROM records UNION SELECT serial FROM gaps ORDER BY 1")]
    out = []
    for serial in serials:
        seqs = [r[0] for r in db.execute("SELECT seq FROM records WHERE serial = ? ORDER BY seq", (serial,))]
        kinds = {"lost": [], "skipped": []}
        for kind, a, b in db.execute("SELECT kind, first, end FROM gaps WHERE serial = ?", (serial,)):
            kinds[kind].append((a, b))
        lost = _merged(kinds["lost"])
        skipped = _minus(_merged(kinds["skipped"]), lost)
        n_lost = sum(b - a for a, b in lost) - _count_in(seqs, lost)
        n_skipped = sum(b - a for a, b in skipped) - _count_in(seqs, skipped)
        top = next_seq(db, serial)
        out.append({"serial": serial, "records": len(seqs), "skipped": n_skipped, "lost": n_lost,
                    "unexplained": top - len(seqs) - n_lost - n_skipped})
    db.close()
    return out


def _ranges(x, what):
    """A declaration list [[first, end], ...] checked, or ValueError saying what is wrong."""
    if x is None:
        return []
    if not isinstance(x, list) or len(x) > 64:
        raise ValueError("%s: needs a list of at most 64 [first, end] pairs" % what)
    for r in x:
        if not (isinstance(r, list) and len(r) == 2 and all(type(v) is int for v in r) and 0 <= r[0] < r[1] <= MAX_SEQ):
            raise ValueError("%s: each must be [first, end], integers with 0 <= first < end <= 2**53" % what)
    return x


def dump(path, out=sys.stdout):
    db = open_db(path)
    for serial, seq, record in db.execute("SELECT serial, seq, record FROM records ORDER BY serial, seq"):
        doc = json.loads(record)
        doc.update({"serial": serial, "seq": seq})
        out.write(json.dumps(doc) + "\n")


class Ingest:
    def __init__(self, db_path, fleet_key, fault_file=None, verbose=False):
        self.verbose = verbose
        self.db = open_db(db_path)
        self.lock = threading.Lock()
        self.fleet_key = fleet_key
        self.fault_file = fault_file
        self._keys = {}

    def fault(self):
        if not self.fault_file:
            return ""
        try:
            with open(self.fault_file) as f:
                return f.read().strip()
        except OSError:
            return ""

    def upload_key(self, serial):
        key = self._keys.get(serial)
        if key is None:
            from firmware import identity

            key = identity.derive(self.fleet_key, identity.check_serial(serial)).upload_key
            with self.lock:
                if len(self._keys) >= KEY_CACHE:
                    del self._keys[next(iter(self._keys))]  # the oldest: dicts keep insertion order
                self._keys[serial] = key
        return key

    def precheck(self, serial, signature):
        """Before any body is read: None if the headers could authenticate a request, else why."""
        if not serial or not signature:
            return "X-Meter-Serial and X-Meter-Signature headers are required"
        if len(signature) != 64 or not all(c in "0123456789abcdef" for c in signature):
            return "X-Meter-Signature: must be 64 lowercase hex digits (HMAC-SHA256)"
        try:
            self.upload_key(serial)
        except ValueError as e:
            return str(e)
        return None

    def authenticate(self, serial, signature, body):
        """None if the signature is right, else the reason."""
        why = self.precheck(serial, signature)
        if why:
            return why
        good = hmac.new(self.upload_key(serial), body, "sha256").hexdigest()
        return None if hmac.compare_digest(good, signature) else "X-Meter-Signature: does not match the body"

    def records(self, serial, doc):
        """(status, reply dict) for POST /v1/records."""
        recs = doc.get("records")
        if doc.get("serial") != serial or not isinstance(recs, list):
            return 400, {"error": "body: needs the device's serial and a records list"}
        try:
            declared = [(k, a, b) for k in ("skipped", "lost") for a, b in _ranges(doc.get(k), k)]
        except ValueError as e:
            return 400, {"error": str(e)}
        now = int(time.time() * 1000)
        acked, new = [], 0
        with self.lock:
            for kind, a, b in declared:  # (a device widens a declaration it has not had acknowledged yet)
                self.db.execute("INSERT INTO gaps VALUES (?, ?, ?, ?) ON CONFLICT (serial, kind, first) DO UPDATE"
                                " SET end = max(end, excluded.end)", (serial, kind, a, b))
            reject = self.fault() == "reject"
            for i, r in enumerate(recs):
                seq = r.get("seq") if isinstance(r, dict) else None
                # (bool is an int in Python: true is not seq 1)
                if type(seq) is not int or not 0 <= seq < MAX_SEQ or not isinstance(r.get("phases"), list) or (
                        reject and i == 0):
                    self.db.commit()
                    return 400, {"error": "records[%d]: needs an integer seq from 0 to 2**53 - 1 and a phases "
                                          "list" % i, "seq": seq if type(seq) is int else None, "acked": acked}
                new += self.db.execute("INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?)",
                                       (serial, seq, json.dumps(r), now)).rowcount
                acked.append(seq)
            self.db.commit()
            floor = next_seq(self.db, serial)
            if acked and self.fault() == "bogus":  # acknowledge records never sent as well
                acked = acked + [max(acked) + k for k in (1, 2, 3, 50)]
        if self.verbose and acked:
            sys.stderr.write("ingest: %s: records seq %d-%d stored (%d new, %d already had)\n" % (
                serial, min(acked), max(acked), new, len(acked) - new))
        if self.verbose and declared:
            sys.stderr.write("ingest: %s: declared %s\n" % (serial, ", ".join("%s %d-%d" % (k, a, b - 1)
                                                                             for k, a, b in declared)))
        # next_seq: the device never numbers below it (docs/PROTOCOL.md, version 2)
        return 200, {"acked": acked, "next_seq": floor}

    def live(self, serial, doc, size):
        if doc.get("serial") != serial or not isinstance(doc.get("phases"), list):
            return 400, {"error": "body: needs the device's serial and a phases list"}
        with self.lock:
            self.db.execute("INSERT INTO live VALUES (?, ?, ?, ?, ?)",
                            (serial, doc.get("t_ms"), int(time.time() * 1000), size, json.dumps(doc)))
            self.db.commit()
        return 200, {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = TIMEOUT_S  # every read and write on the connection (StreamRequestHandler sets it)
    server_version = "open-meter-ingest/1"
    ingest = None  # set by serve()

    def log_message(self, fmt, *args):  # quiet; errors are in the replies
        pass

    def _reply(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.ingest.fault() == "reset":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            raw = self.connection
            try:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                raw.close()
            self.close_connection = True
            return
        self.wfile.write(data)
        if self.ingest.fault() == "drop":  # close the kept-alive connection without saying so
            self.close_connection = True

    def do_POST(self):
        ing = self.ingest
        given = self.headers.get("Content-Length")
        if given is None or not given.isdigit() or not given.isascii():
            self.close_connection = True  # what follows the headers cannot be told from the next request
            return self._reply(411 if given is None else 400, {"error": "Content-Length: needs a whole number "
                                                                         "of bytes, as digits"})
        length = int(given)
        if length > MAX_BODY:
            self.close_connection = True
            return self._reply(413, {"error": "body larger than %d bytes" % MAX_BODY})
        serial, signature = self.headers.get("X-Meter-Serial"), self.headers.get("X-Meter-Signature")
        why = ing.precheck(serial, signature)  # nobody gets a body read for them unless they could be a device
        if why:
            self.close_connection = True
            return self._reply(401, {"error": why})
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return
        fault = ing.fault()
        if fault == "hang":
            time.sleep(60)
            self.close_connection = True
            return
        if fault in ("500", "429", "401", "403"):
            return self._reply(int(fault), {"error": "test fault %s" % fault})
        why = ing.authenticate(serial, signature, body)
        if why:
            return self._reply(401, {"error": why})
        try:
            doc = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError) as e:  # (RecursionError: nesting deeper than Python goes)
            return self._reply(400, {"error": "body: not a JSON object (%s)" % str(e)[:200]})
        try:
            if self.path == "/v1/records":
                return self._reply(*ing.records(serial, doc))
            if self.path == "/v1/live":
                return self._reply(*ing.live(serial, doc, len(body)))
        except (ValueError, TypeError, OverflowError, RecursionError, sqlite3.Error) as e:
            return self._reply(400, {"error": "body: cannot be stored (%s: %s)" % (type(e).__name__, str(e)[:200])})
        return self._reply(404, {"error": "no such endpoint: %s" % self.path})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls = None  # the SSLContext: each connection's handshake runs in its own thread, with a deadline

    def finish_request(self, request, client_address):
        # Accepting stays plain TCP: a client that connects and never says hello holds its own thread
        # for TIMEOUT_S, never the accept loop (a listening socket wrapped in TLS does the handshake
        # inside accept(), for every device at once).
        request.settimeout(TIMEOUT_S)
        conn = self.tls.wrap_socket(request, server_side=True)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()

    def handle_error(self, request, client_address):  # resets and bad handshakes are the clients' business
        pass


def serve(port, db_path, certs, fleet_key_path=None, host="127.0.0.1", fault_file=None, ready=None, verbose=False):
    cert, key = ensure_certs(certs)
    # The server's own fleet key beside its certificates, made quietly as they are, unless given.
    fleet_key, _ = provision.fleet_key_for(certs, fleet_key_path or os.path.join(certs, "fleet.key"),
                                           log=lambda m: None)
    handler = type("BoundHandler", (Handler,), {"ingest": Ingest(db_path, fleet_key, fault_file, verbose)})
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = Server((host, port), handler)
    srv.tls = ctx
    sys.stderr.write("ingest: https://%s:%d/ (CA %s), records in %s\n" % (
        host, srv.server_address[1], os.path.join(certs, "ca.der"), db_path))
    sys.stderr.flush()
    if ready is not None:
        ready(srv)
    srv.serve_forever()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.ingest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, help="TCP port to listen on")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--db", required=True, help="SQLite file for the records")
    ap.add_argument("--certs", help="folder with the CA and server certificate (created on first run)")
    ap.add_argument("--fleet-key", help="the fleet key file (default CERTS/fleet.key, created if missing)")
    ap.add_argument("--fault-file", help="tests only: a file naming a fault mode (see above)")
    ap.add_argument("--verbose", action="store_true", help="say on stderr when records are stored")
    ap.add_argument("--dump", action="store_true", help="print the stored records as JSON lines and exit")
    ap.add_argument("--gaps", action="store_true", help="print per serial how many seqs are stored records, declared "
                                                        "skipped, declared lost, or unexplained (JSON lines) and exit")
    args = ap.parse_args(argv)
    if args.dump:
        dump(args.db)
        return 0
    if args.gaps:
        if not os.path.exists(args.db):
            ap.error("--db %s: no such file" % args.db)
        for line in gaps(args.db):
            print(json.dumps(line))
        return 0
    if args.port is None or not args.certs:
        ap.error("--port and --certs are needed to serve (or --dump to print the records)")
    try:
        serve(args.port, args.db, args.certs, args.fleet_key, args.host, args.fault_file, verbose=args.verbose)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""claim — what one simulator must have to itself: its folders (the device's flash, the ingest
database) and its 127.0.0.1 ports (host side, CPython).

Two simulators on one flash folder would be two devices with one identity: both upload as the
same serial, each with its own energy counters, and the ones stored at the ingest go backwards. So
a simulator holds each folder it writes with an OS lock (fcntl.flock on FOLDER/sim.lock): the
kernel releases it when the last process holding it ends, however it ends, so a crashed or killed
simulator never leaves a stale lock behind. The lock file also says who holds it, for the message.
"""

import fcntl
import json
import os
import socket

from tools.sim.runner import UsageError

LOCK_NAME = "sim.lock"


def hold(folder, shown=None, **about):
    """Hold folder for this simulator alone; returns the lock's file descriptor.

    Keep it open while the folder is in use, and hand it to the child that uses it
    (subprocess.Popen(pass_fds=...)) so the folder stays held as long as the child runs.
    `about` (e.g. port=8080) is written into the lock file for the message another simulator
    gets. UsageError naming the folder and its holder if another simulator holds it.
    """
    shown = shown or folder
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise UsageError("another simulator%s is running on %s: one device's flash and its ingest database serve "
                         "one simulator at a time (two would upload as the same device, and its stored energy "
                         "would go backwards). Stop that one first (Ctrl-C in its terminal), or give this one "
                         "other folders (--ingest, --state-dir) and ports (--port, --dns-port)." % (holder, shown))
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(dict(about, pid=os.getpid())).encode() + b"\n")
    return fd


def _holder(fd):
    """' (process N, setup page on 127.0.0.1:P)' from the lock file, or '' if it does not say."""
    try:
        about = json.loads(os.pread(fd, 512, 0) or b"{}")
        out = "process %d" % about["pid"]
        if about.get("port"):
            out += ", setup page on 127.0.0.1:%d" % about["port"]
        return " (%s)" % out
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def check_ports(port, dns_port):
    """UsageError if 127.0.0.1:port (TCP, the setup page) or dns_port (UDP, the DNS catch-all) is
    taken by another program; 0 means any free port and is not checked."""
    for option, kind, number, what in (("--port", socket.SOCK_STREAM, port, "the setup page"),
                                       ("--dns-port", socket.SOCK_DGRAM, dns_port, "the DNS catch-all")):
        if not 0 <= number <= 65535:
            raise UsageError("%s: must be a port number 1-65535, or 0 for any free one (got %d)" % (option, number))
        if not number:
            continue
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                # As the firmware's server binds: a closed connection's TIME_WAIT does not count.
                # (Not for UDP, where SO_REUSEADDR would let two sockets share the port unseen.)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", number))
        except OSError as e:
            raise UsageError("%s %d: %s cannot listen on 127.0.0.1:%d (%s): another program uses it, perhaps "
                             "another simulator. Stop it, or choose a free port with %s."
                             % (option, number, what, number, e.strerror or e, option)) from None
        finally:
            s.close()

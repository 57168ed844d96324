# stop — Ctrl-C for the simulated device, raised where the board raises it (runs under MicroPython).
#
# On the board a Ctrl-C from the REPL is raised between two bytecodes. The unix port can deliver a
# SIGINT inside the VM's C code instead: caught in the middle of a collection it left the heap locked
# ("heap is locked" on every allocation after it), and once an object overwritten. So `python -m
# tools.sim` keeps the terminal's Ctrl-C to itself and runs MicroPython in a session of its own
# (runner.run_until_stopped). It creates an empty stop file, named in SIM_STOP_FILE, and writes a
# byte into it to ask for a stop; the task below then raises KeyboardInterrupt in the firmware's
# event loop, which leaves asyncio.run() the way a Ctrl-C does on the board. The task also stops
# the device when the host process is gone (killed outright; Linux, where /proc tells), so that no
# simulator is left running on its own. It allocates nothing while it waits: it runs inside the
# heap that `--heapsize` measures.
import asyncio
import os

POLL_MS = 200
HOST_EVERY = 25  # polls between two looks at the host process (5 s): os.stat() allocates


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def watcher():
    """The task for app.main(extra_tasks=...) that SIM_STOP_FILE asks for, or None."""
    stop_file = os.getenv("SIM_STOP_FILE")
    if not stop_file:
        return None
    host_pid = os.getenv("SIM_HOST_PID")
    host = "/proc/" + host_pid if host_pid and _exists("/proc/self") else None
    requests = open(stop_file, "rb")
    byte = bytearray(1)

    async def stop_on_request(device):
        polls = 0
        while True:
            requests.seek(0)
            if requests.readinto(byte):
                break
            polls += 1
            if host is not None and polls % HOST_EVERY == 0 and not _exists(host):
                break
            await asyncio.sleep_ms(POLL_MS)
        raise KeyboardInterrupt  # not an Exception: it ends asyncio.run(), as Ctrl-C does

    return stop_on_request

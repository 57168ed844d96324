# netfwd — the stand-in board's `socket` module: the host's sockets, behind a board-sized network
# (runs under MicroPython; board_main.py installs it as sys.modules["socket"]).
#
# The firmware talks to the world through socket.getaddrinfo() (names, and the addresses it binds and
# connects to) and nothing else, so this one call keeps the stand-in on this machine:
#   - the board's own addresses (127.0.0.1 here, 0.0.0.0) always resolve: numbers need no DNS; the name
#     localhost (the simulator's servers) only while the simulated board has a link (the Ethernet cable
#     in, or WiFi joined: tools/sim/simnet.py's rule); any other name fails with OSError(-202), what the
#     ESP32's lwIP getaddrinfo raises for a name it cannot resolve (the stand-in has no DNS), so no
#     packet leaves this machine;
#   - the board's own ports are forwarded: FORWARD maps a port the firmware binds or connects to on
#     127.0.0.1 or 0.0.0.0 (80 for the setup page, 53 for its DNS) to a free port on 127.0.0.1, as
#     QEMU's hostfwd does for an emulated board, so the page answers on http://127.0.0.1:PORT/.
import sys

from simworld import world

_p, sys.path = sys.path, []
try:
    import socket as _socket
finally:
    sys.path = _p

for _name in dir(_socket):
    if not _name.startswith("__"):
        globals()[_name] = getattr(_socket, _name)
_name = None

FORWARD = {}  # board port -> host port on 127.0.0.1
_LOCAL = ("localhost", "127.0.0.1", "0.0.0.0", "")


def _online():
    sta = world.wlans.get(0)  # network.STA_IF
    return world.lan_link or (sta is not None and sta.isconnected())


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    if host not in _LOCAL:
        raise OSError(-202)
    if host == "localhost" and not _online():
        raise OSError(-202)
    if host in ("localhost", "0.0.0.0", ""):
        host = "127.0.0.1"  # the board's address here (never every interface of this machine)
    port = FORWARD.get(port, port)
    return _socket.getaddrinfo(host, port, af, type, proto, flags)

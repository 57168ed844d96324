# ntptime — the ESP32 image's frozen ntptime (micropython-lib), for the stand-in board (MicroPython).
#
# The unix port does not freeze it; the ESP32 port does (its manifest's bundle-networking). Same API and
# the same steps as micropython-lib's: resolve `host`, one UDP query, set the RTC. Names resolve
# through the stand-in's socket module, where only this machine answers (netfwd.py): with the default
# host the query fails as on a board whose network has no DNS, and the firmware says so and goes on.
import socket
import struct
from time import gmtime

host = "pool.ntp.org"
timeout = 1


def time():
    # seconds between 1900-01-01 and the epoch of this board's time module (1970 or 2000)
    delta = 3155673600 if gmtime(0)[0] == 2000 else 2208988800
    query = bytearray(48)
    query[0] = 0x1B
    addr = socket.getaddrinfo(host, 123)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(query, addr)
        msg = s.recv(48)
    finally:
        s.close()
    return struct.unpack("!I", msg[40:44])[0] - delta


def settime():
    import machine

    tm = gmtime(time())
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))

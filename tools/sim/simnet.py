# simnet — the simulated board's network seams: DNS and NTP answered by the simulation, never the net.
#
# SimBoard is firmware/board.py's Board with resolve() and sync_clock() replaced: names resolve
# from HOSTS (localhost only: the simulator talks to nothing but 127.0.0.1), and "NTP" sets the
# simulated RTC from the host's clock. Used by run_main.py when the simulator uploads.

import simworld
from firmware.board import Board

HOSTS = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1"}


class SimBoard(Board):
    def resolve(self, host, port):
        ip = HOSTS.get(host)
        if ip is None:
            raise OSError(-202)  # what the ESP32's getaddrinfo raises for a name it cannot resolve
        return ip

    def sync_clock(self):
        simworld.world.set_wall_time(int(simworld._host_time.time()))
        return self.clock_ready()

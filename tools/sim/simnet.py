# simnet — the simulated board's network seams: DNS and NTP answered by the simulation, never the net.
#
# SimBoard is firmware/board.py's Board with resolve() and sync_clock() replaced: names resolve
# from HOSTS (localhost only: the simulator talks to nothing but 127.0.0.1) while the simulated
# board has a link (the Ethernet cable in, or WiFi joined), and "NTP" sets the simulated RTC from
# the host's clock (plus whatever the accelerated clock has skipped). Used by run_main.py and
# device_main.py when the simulator uploads.

import simworld
from firmware.board import Board

HOSTS = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1"}


def online():
    """The simulated board has a way onto the network: a LAN link, or WiFi joined."""
    import network

    world = simworld.world
    sta = world.wlans.get(network.STA_IF)
    return world.lan_link or (sta is not None and sta.isconnected())


class SimBoard(Board):
    # Both calls hold the VM on the board (lwIP's getaddrinfo, ntptime's blocking socket) for as long
    # as the radio script says (dns_ms, ntp_ms): world.block_us.
    def resolve(self, host, port):
        world = simworld.world
        if not online():
            raise OSError(-202)  # no link, no DNS: what getaddrinfo raises on the ESP32 then
        world.block_us(world.dns_us)
        ip = HOSTS.get(host)
        if ip is None or not world.dns_answers:
            raise OSError(-202)  # what the ESP32's getaddrinfo raises for a name it cannot resolve
        return ip

    def sync_clock(self):
        world = simworld.world
        world.block_us(world.ntp_us)
        world.set_wall_time(int(simworld._host_time.time()) + world.skipped_us // 1_000_000)
        return self.clock_ready()

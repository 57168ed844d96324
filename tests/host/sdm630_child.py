# sdm630_child — firmware/sdm630.Sdm630Output serving Modbus TCP on 127.0.0.1 under the MicroPython
# unix port, for tests/host/test_modbus_tcp.py (not a test module).
#
#   micropython sdm630_child.py PORT READINGS_JSON STATS_JSON IDLE_MS TIMEOUT_MS
#
# Feeds on_readings() with READINGS_JSON each time the file changes (the test replaces it), and
# writes the server's counters and the live heap to STATS_JSON whenever they change.
import asyncio
import gc
import json
import os
import sys

from firmware.sdm630 import Sdm630Output

port, readings_path, stats_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = Sdm630Output({"enabled": True, "port": port, "unit_id": 1}, "12345678", host="127.0.0.1",
                   idle_ms=int(sys.argv[4]), timeout_ms=int(sys.argv[5]))


async def feed():
    seen = None
    last = None
    while True:
        try:
            st = os.stat(readings_path)
            key = (st[6], st[8], st[1])  # size, mtime, inode: the test renames a new file into place
        except OSError:
            key = None
        if key is not None and key != seen:
            seen = key
            with open(readings_path) as f:
                out.on_readings(json.load(f))
        s = out.server
        gc.collect()
        stats = {"clients": s.clients, "requests": s.requests, "refused": s.refused, "dropped": s.dropped,
                 "heap_alloc": gc.mem_alloc(), "listening": s.server is not None}
        if stats != last:
            last = stats
            with open(stats_path + ".tmp", "w") as f:
                json.dump(stats, f)
            os.rename(stats_path + ".tmp", stats_path)
        await asyncio.sleep_ms(20)


async def main():
    asyncio.create_task(feed())
    await out.run()


asyncio.run(main())

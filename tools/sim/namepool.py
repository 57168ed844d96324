# namepool — the firmware's names get a table of their own in the measured heap, as on the board
# (runs under MicroPython; used by device_main.py and heapmap_main.py).
#
# MicroPython keeps the names its code uses (qstrs) in pools allocated in the heap and never freed;
# each new pool has twice the entries of the last (py/qstr.c, qstr_add: `new_alloc = last_pool->alloc
# * 2`; on this unix port 20, 40, 80... entries, 288, 512, 928... bytes on x64). On the board the
# simulated hardware's names do not exist (machine and network are C modules, their names in flash), so
# the firmware's names (from ROMFS: not frozen, so not in flash) fill the pools from the first one. In
# the simulator, the simulator's own ~840 names have filled the first pools and part of the next
# one before the firmware starts, so the firmware's first few hundred names would go into slots the
# simulator already paid for: the fewer names the firmware had, the more of them the measurement would
# leave out, while the board would pay for every one of them.
#
# So the simulator fills its last pool with names of its own until MicroPython allocates the next
# one, and that pool (the firmware's names go into it) is charged to the firmware: the budget run
# holds a block of that size at the start of the firmware's heap. On the board the firmware's N names
# take the pools of 20..2**k * 20 entries, whose bytes add up to about those of one pool of their total
# (20, 40... 640: 14,160 bytes on x64 for up to 1,260 names; one pool of 1,280: 14,144), so the charge
# is the board's as long as the firmware has about half that pool's entries or more, and more than
# the board's (never less) below that.
import gc

# a new pool; a name's text takes a chunk of at most 128 bytes (MICROPY_ALLOC_QSTR_CHUNK_INIT)
POOL_MIN_BYTES = 256


def fill_and_grow():
    """Intern new names until MicroPython allocates the next name pool; that pool's bytes."""
    gc.collect()
    for k in range(1 << 16):
        name = "~%x" % k  # (a name no code uses)
        before = gc.mem_alloc()
        hasattr(fill_and_grow, name)  # interns it (py/modbuiltins.c, mp_builtin_hasattr)
        grew = gc.mem_alloc() - before
        if grew >= POOL_MIN_BYTES:
            return grew
    raise RuntimeError("namepool: no new name pool after 65,536 names")

# gc_board — the stand-in board's `gc` module: MicroPython's own, with mem_alloc() counting the board's
# code only (runs under MicroPython; board_main.py installs it as sys.modules["gc"]).
#
# The stand-in's own parts (the simulated mains, its REPL, the ROMFS partition's contents, which the
# board maps from flash) live in the same heap, held apart from the heap the board's code gets
# (board_main.py, "the heap"); simworld.world.heap_base_bytes is what they take, left out here, so
# that gc.mem_free() + gc.mem_alloc() is the board's heap, as on the board.
import sys

from simworld import world

_p, sys.path = sys.path, []
try:
    import gc as _gc
finally:
    sys.path = _p

collect = _gc.collect
enable = _gc.enable
disable = _gc.disable
isenabled = _gc.isenabled
mem_free = _gc.mem_free
threshold = _gc.threshold


def mem_alloc():
    return _gc.mem_alloc() - world.heap_base_bytes

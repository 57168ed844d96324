# vfs_rom — the stand-in board's `vfs` module: MicroPython's own, plus rom_ioctl on an image built with
# MICROPY_VFS_ROM (runs under MicroPython; board_main.py installs it as sys.modules["vfs"]).
#
# The unix port's vfs has VfsRom but no rom_ioctl (that needs a port's ROM partitions). The ESP32 port's
# is mp_vfs_rom_ioctl() in ports/esp32/esp32_partition.c, reached as vfs.rom_ioctl (extmod/modvfs.c,
# 1 to 4 arguments): 1 asks how many ROM segments there are (1 if the partition table has a "romfs"
# data partition, else 0), 2 hands out the partition object itself (for any id: the port does not look
# at it) or -EINVAL, anything else -EINVAL. The object is esp32.Partition (tools/simboard/esp32.py):
# ioctl, readblocks, writeblocks and its memory-mapped contents, which is what `mpremote romfs` uses.
# A stock image (py/mpconfig.h: MICROPY_VFS_ROM 0) has no rom_ioctl at all.

import sys

import esp32

from simworld import world

_p, sys.path = sys.path, []
try:
    import vfs as _vfs  # (builtin: the stand-in registers this module as "vfs" only afterwards)
finally:
    sys.path = _p

mount = _vfs.mount
umount = _vfs.umount
VfsPosix = _vfs.VfsPosix
VfsRom = _vfs.VfsRom
VfsFat = getattr(_vfs, "VfsFat", None)
VfsLfs2 = getattr(_vfs, "VfsLfs2", None)
VfsLfs1 = getattr(_vfs, "VfsLfs1", None)

_EINVAL = 22

if world.romfs_file is not None:

    def rom_ioctl(*args):
        if not 1 <= len(args) <= 4:
            raise TypeError("function takes 1 to 4 positional arguments but %d were given" % len(args))
        part = esp32.romfs_partition()
        op = int(args[0])
        if op == 1:  # MP_VFS_ROM_IOCTL_GET_NUMBER_OF_SEGMENTS
            return 0 if part is None else 1
        if op == 2:  # MP_VFS_ROM_IOCTL_GET_SEGMENT
            return -_EINVAL if part is None else part
        return -_EINVAL

# simflash — a NOR flash in RAM for MicroPython's littlefs (vfs.VfsLfs2), with power cuts and wear counts.
#
# RamFlash speaks MicroPython's extended block-device protocol (readblocks/writeblocks with an
# offset, ioctl 6 = erase one block), so the real littlefs2 of the MicroPython build (the same C code
# as on the ESP32, block_cycles=100) runs on it. Programming only clears bits, as on NOR flash.
# With cut_at=N the power fails at the N-th program/erase operation: that one is done halfway if
# torn=True, or not at all, and nothing after it reaches the flash (littlefs carries on, unaware).

import vfs

BLOCK_BYTES = 4096


class RamFlash:
    def __init__(self, blocks, image=None, cut_at=None, torn=False):
        self.blocks = blocks
        self.data = bytearray(image) if image is not None else bytearray(b"\xff" * (blocks * BLOCK_BYTES))
        self.erases = [0] * blocks
        self.ops = 0
        self.cut_at = cut_at
        self.torn = torn

    def _power(self):
        """1.0: the operation happens; 0.5: half of it (torn); 0: the power is gone."""
        k = self.ops
        self.ops += 1
        if self.cut_at is None or k < self.cut_at:
            return 1.0
        return 0.5 if (k == self.cut_at and self.torn) else 0

    def readblocks(self, block, buf, off=0):
        a = block * BLOCK_BYTES + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, block, buf, off=0):
        p = self._power()
        n = len(buf) if p == 1.0 else len(buf) // 2 if p else 0
        a = block * BLOCK_BYTES + off
        for i in range(n):
            self.data[a + i] &= buf[i]

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK_BYTES
        if op == 6:
            p = self._power()
            if p:
                self.erases[arg] += 1
                a = arg * BLOCK_BYTES
                n = BLOCK_BYTES if p == 1.0 else BLOCK_BYTES // 2
                self.data[a:a + n] = b"\xff" * n
            return 0
        return 0


def format_flash(blocks):
    flash = RamFlash(blocks)
    vfs.VfsLfs2.mkfs(flash)
    return flash


def mount(flash, where):
    vfs.mount(vfs.VfsLfs2(flash), where)


def unmount(where):
    vfs.umount(where)

# esp32 — a simulated ESP32 `esp32` module: the ESP-IDF heap regions and the flash partitions.
#
# What a deploy asks a board before choosing how to put the firmware on it (tools/standin): how much
# memory ESP-IDF has and whether there is PSRAM (idf_heap_info), and which partitions the flash holds,
# the ROMFS one among them (Partition; `vfs.rom_ioctl` hands out the same object on an image built with
# MICROPY_VFS_ROM). Read against ports/esp32/modesp32.c and ports/esp32/esp32_partition.c (v1.28.0).
# The board's state is simworld.world's: psram_bytes, flash_bytes, partitions, romfs_file.

import gc
import struct

from simworld import world

# ESP-IDF's MALLOC_CAP_* bits (esp_heap_caps.h); modesp32.c exports two of them.
_EXEC = 1 << 0
_32BIT = 1 << 1
_8BIT = 1 << 2
_DMA = 1 << 3
_SPIRAM = 1 << 10
_INTERNAL = 1 << 11
_DEFAULT = 1 << 12
HEAP_DATA = _8BIT  # modesp32.c: MP_ROM_INT(MALLOC_CAP_8BIT)
HEAP_EXEC = _EXEC  # modesp32.c: MP_ROM_INT(MALLOC_CAP_EXEC)

_DRAM = _8BIT | _32BIT | _DMA | _INTERNAL | _DEFAULT
# The internal heap regions of an ESP32 without PSRAM after booting MicroPython: docs/library/esp32.rst's
# example of idf_heap_info(HEAP_DATA) (total, free, largest free block, minimum free seen), a fixed
# snapshot: the regions do not follow what the program does. The IRAM region (HEAP_EXEC, where the
# port copies native and viper code) is an assumption, not a measurement: the docs show none.
_INTERNAL_REGIONS = (
    (_DRAM, 240, 0, 0, 0),
    (_DRAM, 7288, 0, 0, 0),
    (_DRAM, 16648, 4, 4, 4),
    (_DRAM, 79912, 35712, 35512, 35108),
    (_DRAM, 15072, 15036, 15036, 15036),
    (_DRAM, 113840, 0, 0, 0),
    (_EXEC | _32BIT | _INTERNAL, 32768, 24576, 24576, 24576),
)
_psram_min_free = [None]


def idf_heap_info(capabilities):
    """modesp32.c esp32_idf_heap_info(): one (total, free, largest free block, minimum free) per
    registered ESP-IDF heap whose capabilities include all the bits asked for (heap_caps_match).

    With PSRAM the port adds its heap areas there (gc_get_max_new_split() is the largest free
    MALLOC_CAP_DEFAULT block, the PSRAM's), so the PSRAM region's free bytes are its size less the
    MicroPython heap in use, counted in the board's 32-bit bytes (this host's objects are bigger)."""
    cap = int(capabilities)
    out = [r[1:] for r in _INTERNAL_REGIONS if r[0] & cap == cap]
    if world.psram_bytes and (_SPIRAM | _8BIT | _32BIT | _DEFAULT) & cap == cap:
        used = (gc.mem_alloc() - world.heap_base_bytes) * 4 // struct.calcsize("P")
        free = max(0, world.psram_bytes - used)
        low = _psram_min_free[0]
        _psram_min_free[0] = low = free if low is None or free < low else low
        out.append((world.psram_bytes, free, free, low))
    return out


# Partitions ------------------------------------------------------------------------------------------

BLOCK_BYTES = 4096  # esp32_partition.c NATIVE_BLOCK_SIZE_BYTES: the flash's erase page
TYPE_APP = 0
TYPE_DATA = 1
_SUBTYPE_ANY = 0xFF
_ESP_ERR_INVALID_ARG = 0x102
_ESP_ERR_INVALID_SIZE = 0x104
_ESP_ERR_NOT_FOUND = 0x105


def partition_table(flash_bytes, romfs_bytes=None):
    """The partition table an ESP32 image brings, as (label, type, subtype, offset, size): the stock
    ESP32_GENERIC's ports/esp32/partitions-4MiBplus.csv, or with romfs_bytes one shaped like
    partitions-4MiB-romfs.csv (the app partition shrinks to make room; 0x20000 there). The port adds a
    "vfs" partition (data, fat) from the end of the last one to the end of flash (main.c
    boardctrl_startup()), where the filesystem lives."""
    table = [("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000), ("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000)]
    if romfs_bytes:
        end = 0x200000
        table.append(("factory", TYPE_APP, 0x00, 0x10000, end - romfs_bytes - 0x10000))
        table.append(("romfs", TYPE_DATA, 0x8F, end - romfs_bytes, romfs_bytes))
    else:
        end = 0x200000
        table.append(("factory", TYPE_APP, 0x00, 0x10000, 0x1F0000))
    if flash_bytes > end:
        table.append(("vfs", TYPE_DATA, 0x81, end, flash_bytes - end))
    return table


def _esp_err(code, name):
    # ports/esp32/mphalport.c check_esp_err_(): OSError(-code, the error's name)
    return OSError(-code, name)


class Partition(bytearray):
    """esp32.Partition. The object itself is the partition's memory-mapped contents for the ROMFS
    partition (esp32_partition_get_buffer(): readable in place, so memoryview() and vfs.VfsRom take it);
    other partitions have no buffer here, and only the ROMFS one can be read and written (the
    filesystem's partition is the host folder the stand-in's flash is, not blocks)."""

    BOOT = 0
    RUNNING = 1
    TYPE_APP = TYPE_APP
    TYPE_DATA = TYPE_DATA

    def __init__(self, id, block_size=BLOCK_BYTES, _contents=None):
        super().__init__(b"" if _contents is None else _contents)  # (the native bytearray, as a subclass must)
        if isinstance(id, int):
            if id not in (Partition.BOOT, Partition.RUNNING):
                raise ValueError()
            entry = _find(TYPE_APP, _SUBTYPE_ANY, None)[0]  # the factory app is both here
        else:
            found = _find(TYPE_APP, _SUBTYPE_ANY, id) or _find(TYPE_DATA, _SUBTYPE_ANY, id)
            if not found:
                raise OSError(2)  # esp32_partition_new(NULL): MP_ENOENT
            entry = found[0]
        self._setup(entry, block_size)

    def _setup(self, entry, block_size):
        self._entry = entry
        self._block_size = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=_SUBTYPE_ANY, label=None, block_size=BLOCK_BYTES):
        return [_partition(e, block_size) for e in _find(type, subtype, label)]

    def info(self):
        label, type, subtype, offset, size = self._entry
        return (type, subtype, offset, size, label, False)

    def __repr__(self):
        label, type, subtype, offset, size = self._entry
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=0>" % (
            type, subtype, offset, size, label)

    def __len__(self):
        raise TypeError("object of type 'Partition' has no len()")

    def _size(self):
        return self._entry[4]

    def _store(self):
        """The ROMFS partition's contents (the one object rom_ioctl hands out, whichever Partition
        object reads or writes them)."""
        m = romfs_partition() if self._entry[0] == "romfs" else None
        if m is None:
            raise OSError(95, "the stand-in models the data of the romfs partition only")  # EOPNOTSUPP
        return m

    def readblocks(self, block_num, buf, offset=0):
        start = block_num * self._block_size + offset
        self._check_range(start, len(buf), _ESP_ERR_INVALID_SIZE)
        buf[:] = memoryview(self._store())[start:start + len(buf)]

    def writeblocks(self, block_num, buf, offset=None):
        """esp32_partition_writeblocks(): three arguments erase first (whole blocks, as the buffer
        covers them), four write into what an earlier ioctl(6) erased: NOR flash only clears bits, so
        writing over data that was not erased leaves the AND of both."""
        start = block_num * self._block_size
        if offset is None:
            if self._block_size != BLOCK_BYTES:
                raise OSError(95, "the stand-in erases in %d-byte blocks only" % BLOCK_BYTES)
            self._erase(start, len(buf))
        else:
            start += offset
        self._program(start, bytes(buf))

    def ioctl(self, cmd, arg):
        # esp32_partition_ioctl(): MP_BLOCKDEV_IOCTL_* commands
        if cmd in (1, 2, 3):  # INIT, DEINIT, SYNC
            return 0
        if cmd == 4:  # BLOCK_COUNT
            return self._size() // self._block_size
        if cmd == 5:  # BLOCK_SIZE
            return self._block_size
        if cmd == 6:  # BLOCK_ERASE
            if self._block_size != BLOCK_BYTES:
                return -22  # -MP_EINVAL
            self._erase(arg * BLOCK_BYTES, BLOCK_BYTES)
            return 0
        return None

    def set_boot(self):
        raise OSError(95, "the stand-in does not model OTA")

    def get_next_update(self):
        raise OSError(95, "the stand-in does not model OTA")

    # ESP-IDF's esp_partition_erase_range() / esp_partition_write() argument checks: an offset past the
    # end is INVALID_ARG, a range past the end INVALID_SIZE, an erase not on whole pages INVALID_ARG/SIZE.
    def _check_range(self, start, n, size_err):
        if start > self._size():
            raise _esp_err(_ESP_ERR_INVALID_ARG, "ESP_ERR_INVALID_ARG")
        if n > self._size() - start:
            raise _esp_err(size_err, "ESP_ERR_INVALID_SIZE")

    def _erase(self, start, n):
        self._check_range(start, n, _ESP_ERR_INVALID_SIZE)
        if n % BLOCK_BYTES:
            raise _esp_err(_ESP_ERR_INVALID_SIZE, "ESP_ERR_INVALID_SIZE")
        if start % BLOCK_BYTES:
            raise _esp_err(_ESP_ERR_INVALID_ARG, "ESP_ERR_INVALID_ARG")
        m = self._store()
        blank = b"\xff" * n
        m[start:start + n] = blank
        world.romfs_file.seek(start)
        world.romfs_file.write(blank)
        if log is not None:
            log("romfs erase %d %d" % (start, n))

    def _program(self, start, data):
        n = len(data)
        self._check_range(start, n, _ESP_ERR_INVALID_SIZE)
        m = self._store()
        old = m[start:start + n]
        if old != b"\xff" * n:
            data = bytes(a & b for a, b in zip(old, data))
        m[start:start + n] = data
        world.romfs_file.seek(start)
        world.romfs_file.write(data)
        if log is not None:
            log("romfs write %d %d" % (start, n))


log = None  # the stand-in's flash log: called with one line per erase and write of the ROMFS partition


def _find(type, subtype, label):
    return [e for e in world.partitions or partition_table(world.flash_bytes)
            if e[1] == type and (subtype == _SUBTYPE_ANY or e[2] == subtype) and (label is None or e[0] == label)]


_romfs = [None]  # esp32_partition_romfs_obj: one object, made at the first use


def _partition(entry, block_size):
    # esp32_partition_find(): a new object per partition (not the ROMFS one rom_ioctl hands out, so
    # without its buffer), found again by its label
    return Partition(entry[0], block_size)


def romfs_partition():
    """The ROMFS partition's object (its contents read from world.romfs_file at the first use), or
    None when the partition table has no "romfs" partition."""
    if _romfs[0] is None:
        found = [e for e in world.partitions or () if e[0] == "romfs" and e[1] == TYPE_DATA]
        if not found or world.romfs_file is None:
            return None
        world.romfs_file.seek(0)
        _romfs[0] = Partition("romfs", BLOCK_BYTES, world.romfs_file.read(found[0][4]))
    return _romfs[0]

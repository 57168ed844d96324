// The meter's ESP32 image (docs/IMAGE.md): ESP32_GENERIC's settings with ROMFS on and Bluetooth off.
// (The ROMFS variant names itself in mpconfigvariant_ROMFS.cmake, as ESP32_GENERIC's variants do.)
#ifndef MICROPY_HW_BOARD_NAME
#define MICROPY_HW_BOARD_NAME "Meter ESP32 (4MiB, code frozen)"
#endif
#define MICROPY_HW_MCU_NAME "ESP32"

// ROMFS: vfs.rom_ioctl and a /rom mount of the partition labelled "romfs" (ports/esp32/esp32_partition.c,
// extmod/vfs.c); py/mpconfig.h leaves it off and no stock ESP32 board turns it on.
#define MICROPY_VFS_ROM (1)

// The meter has no use for Bluetooth; sdkconfig.ble is left out in mpconfigboard.cmake to match.
#define MICROPY_PY_BLUETOOTH (0)

// The MicroPython this board definition was written and checked against (docs/IMAGE.md): the .mpy
// format of `make build` (6.3), the port's partition and ROMFS code, ESP-IDF v5.5.1. Another release
// stops here rather than build an image nobody checked. (py/mpconfig.h defines the version before it
// includes this file; anything that includes it without py/mpconfig.h is not stopped.)
#if defined(MICROPY_VERSION_MAJOR) && (MICROPY_VERSION_MAJOR != 1 || MICROPY_VERSION_MINOR != 28)
#error "boards/METER_ESP32 targets MicroPython 1.28 (docs/IMAGE.md)"
#endif

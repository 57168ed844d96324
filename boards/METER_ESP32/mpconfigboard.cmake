# The meter's ESP32 image (docs/IMAGE.md), built out of MicroPython's tree with
#     make -C ports/esp32 BOARD_DIR=<this folder>          (python -m tools.image does it: `make image`)
# ESP32_GENERIC (ports/esp32/boards/ESP32_GENERIC at v1.28.0) without boards/sdkconfig.ble, with this
# folder's partition table, and with the meter's code frozen in (manifest.py).
set(IDF_TARGET esp32)

# ESP-IDF reads the partition table's path relative to ports/esp32 unless it is absolute; this
# folder is outside that tree, so its absolute path goes into an sdkconfig fragment of the build's own.
set(METER_PARTITIONS_SDKCONFIG ${CMAKE_BINARY_DIR}/sdkconfig.meter_partitions)
file(WRITE ${METER_PARTITIONS_SDKCONFIG}
    "CONFIG_PARTITION_TABLE_CUSTOM=y\n"
    "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${MICROPY_BOARD_DIR}/partitions-4MiB-meter.csv\"\n"
)

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${METER_PARTITIONS_SDKCONFIG}
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)

# The ROMFS variant (make image VARIANT=ROMFS): the same image without the meter's code frozen in;
# `make deploy` writes the code to the romfs partition instead. It costs more heap than the frozen
# code (BENCHMARKS.md, "The code's own cost"), but a new build of the code needs no new image.
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest_port.py)

list(APPEND MICROPY_DEF_BOARD
    MICROPY_HW_BOARD_NAME="Meter ESP32 (4MiB, ROMFS, code in ROMFS)"
)

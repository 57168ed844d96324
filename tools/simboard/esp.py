# esp — a simulated ESP32 `esp` module: the flash's size, as ports/esp32/modesp.c reports it.
#
# Only what a deploy asks a board (tools/standin): the rest of the port's esp module (raw flash access,
# the GPIO matrix) is not modelled and is missing here, so code that uses it fails loudly.

from simworld import world

LOG_NONE = 0
LOG_ERROR = 1
LOG_WARNING = 2
LOG_INFO = 3
LOG_DEBUG = 4
LOG_VERBOSE = 5


def flash_size():
    """modesp.c esp_flash_size(): the flash chip's size in bytes (esp_flash_get_size)."""
    return world.flash_bytes


def flash_user_start():
    """modesp.c esp_flash_user_start(): a constant in the port, whatever the partition table says."""
    return 0x200000


def osdebug(uart, level=LOG_ERROR):
    """ESP-IDF's log output: the simulated board has none to turn on or off."""
    return None

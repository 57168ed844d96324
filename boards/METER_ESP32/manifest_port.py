# What the meter's ESP32 image takes from MicroPython and micropython-lib (docs/IMAGE.md): the port's
# own start-up modules and what the firmware imports that is not built in. The ROMFS variant freezes
# only this; manifest.py adds the meter's code.
freeze("$(PORT_DIR)/modules")  # _boot.py (mounts the filesystem), inisetup.py, flashbdev.py, machine.py...
include("$(MPY_DIR)/extmod/asyncio")  # asyncio: firmware/app.py and the rest
require("ntptime")  # firmware/board.py sets the clock from NTP
require("ssl")  # lib/https.py: the ssl module over the built-in tls

# What the meter's ESP32 image freezes (docs/IMAGE.md): what it needs from MicroPython and
# micropython-lib, the meter's code (frozen code keeps the least heap: BENCHMARKS.md, "The code's own
# cost"), and a stamp saying which build of that code it is (written by python -m tools.image).
include("manifest_port.py")
include("manifest_device.py")
module("meter_image.py", base_path="../../build/image")

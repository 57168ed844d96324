# The meter's own code, frozen: what `make build` puts on a stock image as .mpy files (/firmware and
# /lib) or as a ROMFS image. Included by manifest.py (the ESP32 image) and by the unix port's
# measurement build (python -m tools.bench_codecost --write-manifest, docs/IMAGE.md).
# Paths are relative to this file. All of the device's code is in this repository (no third-party packages).
package("firmware", base_path="../..")
freeze("../../lib")

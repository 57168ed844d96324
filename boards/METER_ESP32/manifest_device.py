# The meter's own code, frozen: what `make build` puts on a stock image as .mpy files (/firmware and
# /lib) or as a ROMFS image. Included by manifest.py (the ESP32 image) and by the unix port's
# measurement build (python -m tools.bench_codecost --write-manifest, docs/IMAGE.md).
# Paths are relative to this file; microdot comes from the pinned wheel that `make build` unpacks
# into build/hostlib (requirements/device.txt, tools/build.py DEVICE_MODULES), never from the repo.
package("firmware", base_path="../..")
freeze("../../lib")
package("microdot", files=["__init__.py", "microdot.py", "helpers.py"], base_path="../../build/hostlib")

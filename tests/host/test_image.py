# The meter's own ESP32 image (boards/METER_ESP32, tools/image.py, docs/IMAGE.md), checked as far as a
# machine without an ESP-IDF can: the partition table as ESP-IDF's own parser reads it, the ROMFS image
# in its partition, the manifests against what exists, the .mpy format against the targeted release,
# `make image`'s answer without an ESP-IDF, and what the code costs in heap by where it is loaded from.
import json
import os
import re
import subprocess
import sys
import sysconfig

import pytest
from esp_idf_defs.partitions import InputError, PartitionTable

from tools import bench_codecost, build, image, mp, romfs

ROOT = mp.ROOT
APP_ALIGN, DATA_ALIGN = 0x10000, 0x1000  # ESP-IDF: app partitions on 64 KiB, data on 4 KiB boundaries


# --- the partition table ------------------------------------------------------------------------


def test_partition_table_parses_fits_the_flash_and_nothing_overlaps():
    table = image.partition_table()  # esp-idf-defs parses and verifies it (raises if it does not)
    names = [p.name for p in table]
    assert names == ["nvs", "phy_init", "factory", "romfs", "vfs"]
    rows = sorted(table, key=lambda p: p.offset)
    # Past the partition table's sector, inside the 4 MiB, each ending where the next may begin.
    assert rows[0].offset >= image.PARTITION_TABLE_OFFSET + 0x1000
    for a, b in zip(rows, rows[1:]):
        assert a.offset + a.size <= b.offset, (a, b)
    assert rows[-1].offset + rows[-1].size <= image.FLASH_BYTES
    for p in table:
        assert p.offset % (APP_ALIGN if p.name == "factory" else DATA_ALIGN) == 0, p
        assert len(p.name.encode()) <= 16, p  # ESP-IDF's label field is 16 bytes
    factory, romfs_part, vfs = table["factory"], table["romfs"], table["vfs"]
    assert (factory.type, factory.subtype) == (0x00, 0x00)  # app, factory: the bootloader runs it
    assert romfs_part.type == 0x01  # data, found by its label "romfs" (ports/esp32/esp32_partition.c)
    assert romfs_part.offset % image.MMU_PAGE_BYTES == 0  # mmapped whole for in-place code
    # The filesystem where a stock image puts it on 4 MiB (ports/esp32/main.c: from the end of the
    # last partition, 0x200000 for MicroPython's tables, to the end of flash): the files survive a
    # change between a stock image and this one.
    assert (vfs.type, vfs.subtype, vfs.offset, vfs.offset + vfs.size) == (0x01, 0x81, 0x200000, image.FLASH_BYTES)
    # The binary the build writes at 0x8000 reads back as the same table.
    again = PartitionTable.from_binary(table.to_binary())
    assert [(p.name, p.type, p.subtype, p.offset, p.size) for p in again] == \
           [(p.name, p.type, p.subtype, p.offset, p.size) for p in table]


@pytest.mark.parametrize("line, why", [
    ("romfs, data, 0x8f, 0x1D0000, 0x20000,", "overlap"),  # inside the app partition
    ("romfs, data, 0x8f, 0x1E0800, 0x20000,", "aligned"),  # data off a 4 KiB boundary
    ("romfs, data, 0x8f, 0x1E0000, 0x240000,", "fit"),  # runs past 4 MiB
])
def test_the_parser_refuses_what_esp_idf_refuses(tmp_path, line, why):
    with open(image.PARTITIONS_CSV) as f:
        text = f.read()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(line if row.startswith("romfs,") else row for row in text.splitlines()
                             if not row.startswith("vfs,")) + "\n")
    with pytest.raises(InputError, match=why):
        image.partition_table(str(bad))


def test_app_partition_misaligned_is_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("nvs, data, nvs, 0x9000, 0x6000,\nfactory, app, factory, 0x18000, 0x1C0000,\n")
    with pytest.raises(InputError, match="aligned"):
        image.partition_table(str(bad))


def test_romfs_partition_holds_the_builds_romfs_image_with_room_to_grow():
    size = image.romfs_partition_bytes()
    assert build.ROMFS_PARTITION_BYTES == size  # what `make build` checks build/device.romfs against
    rom = romfs.make_image(build.MARCH)  # build/device.romfs, as `make build` makes it
    assert rom.startswith(b"\xd2\xcd\x31")  # a ROMFS image (mpremote romfs query's test)
    room = size - len(rom)
    # 18 KiB (14 %) at 7b686a9 (docs/IMAGE.md). Code costs about a kilobyte per hundred lines here:
    # below 8 KiB the ROMFS variant is a few changes from not fitting; decide before it gets there.
    assert room >= 8 * 1024, "build/device.romfs is %d bytes: %d bytes left in the %d-byte romfs partition" % (
        len(rom), room, size)


# --- the manifests ------------------------------------------------------------------------------


class _Manifest:
    """Runs a MicroPython manifest.py and records what it names (the calls of MicroPython's
    tools/manifestfile.py). Paths under $(...) belong to MicroPython's tree: recorded, not resolved."""

    def __init__(self):
        self.files = {}  # path as frozen -> source path
        self.external = []  # ("include" | "freeze", "$(...)/path")
        self.requires = []
        self._dirs = []

    def run(self, path):
        path = os.path.abspath(path)
        self._dirs.append(os.path.dirname(path))
        try:
            with open(path) as f:
                exec(f.read(), {"include": self.include, "require": self.require, "package": self.package,
                                "module": self.module, "freeze": self.freeze, "metadata": lambda **kw: None})
        finally:
            self._dirs.pop()

    def _here(self, p):
        return os.path.normpath(os.path.join(self._dirs[-1], p))

    def include(self, path, **kw):
        if path.startswith("$("):
            self.external.append(("include", path))
        else:
            self.run(self._here(path))

    def require(self, name, **kw):
        self.requires.append(name)

    def _add(self, base, rel):
        src = os.path.join(base, rel)
        assert os.path.isfile(src), "the manifest names %s, which does not exist" % src
        self.files[rel.replace(os.sep, "/")] = src

    def package(self, name, files=None, base_path="."):
        base = self._here(base_path)
        assert os.path.isdir(os.path.join(base, name)), "no package %s in %s" % (name, base)
        if files is not None:
            for f in files:
                self._add(base, os.path.join(name, f))
            return
        for folder, _, names in os.walk(os.path.join(base, name)):
            for n in names:
                if n.endswith(".py"):
                    self._add(base, os.path.relpath(os.path.join(folder, n), base))

    def module(self, name, base_path="."):
        self._add(self._here(base_path), name)

    def freeze(self, path, script=None):
        if path.startswith("$("):
            self.external.append(("freeze", path))
            return
        base = self._here(path)
        for folder, _, names in os.walk(base):
            for n in names:
                if n.endswith(".py"):
                    self._add(base, os.path.relpath(os.path.join(folder, n), base))


def _stub_modules():
    """Module names the pinned stubs list: the stock ESP32 image's modules (micropython-esp32-stubs:
    built in, frozen from ports/esp32/modules and from micropython-lib) and MicroPython's stdlib ones."""
    purelib = sysconfig.get_paths()["purelib"]
    names = set()
    for top in (purelib, os.path.join(purelib, "stdlib")):
        for n in os.listdir(top):
            if n.endswith(".pyi"):
                names.add(n[:-4])
            elif os.path.isfile(os.path.join(top, n, "__init__.pyi")):
                names.add(n)
    return names


def test_the_manifest_freezes_exactly_the_code_the_rom_image_holds():
    image.write_stamp()
    m = _Manifest()
    m.run(os.path.join(image.BOARD_DIR, "manifest.py"))
    # firmware/..., lib/... (as /rom holds them, and the modules not yet wired in: romfs.NOT_YET_WIRED)
    want = {rel for rel, _ in romfs.sources(everything=True)}
    frozen = {rel for rel in m.files if rel != "meter_image.py"}
    # On the board /lib is on sys.path; frozen modules sit at the top: lib/x.py is frozen as x.py.
    assert frozen == {rel[len("lib/"):] if rel.startswith("lib/") else rel for rel in want}
    # All of it from this repository: no third-party package is frozen in (the setup page's server is lib/httpd.py).
    assert all(src.startswith(ROOT + os.sep) and not src.startswith(build.BUILD) for rel, src in m.files.items()
               if rel != "meter_image.py"), m.files
    assert "meter_image.py" in m.files  # the build's stamp


def test_the_manifest_asks_only_for_what_micropython_has():
    m = _Manifest()
    m.run(os.path.join(image.BOARD_DIR, "manifest.py"))
    stubs = _stub_modules()
    # micropython-lib packages: each one the stock ESP32 image of the pinned stubs carries frozen.
    assert m.requires
    missing = [r for r in m.requires if r not in stubs]
    assert not missing, missing
    assert ("freeze", "$(PORT_DIR)/modules") in m.external
    assert {"_boot", "flashbdev", "inisetup"} <= stubs  # what ports/esp32/modules holds and boot needs
    assert ("include", "$(MPY_DIR)/extmod/asyncio") in m.external and "asyncio" in stubs
    # And each is what the firmware imports that the ESP32 does not build in (firmware/board.py's
    # ntptime, lib/https.py's ssl): nothing frozen for nothing.
    sources = "".join(open(os.path.join(ROOT, rel)).read() for rel in build.device_sources())
    for name in m.requires:
        assert re.search(r"^\s*import %s\b" % name, sources, re.M), name


def _micropython_tree():
    for path in (os.environ.get("MICROPY_DIR"), os.path.join(build.BUILD, "micropython")):
        if path and image.source_version(path) == image.MICROPYTHON_TAG and \
                os.path.isfile(os.path.join(path, "lib", "micropython-lib", "README.md")):
            return path
    return None


@pytest.mark.skipif(_micropython_tree() is None, reason="no MicroPython %s source with micropython-lib here "
                    "(MICROPY_DIR or build/micropython, as `make image` makes it)" % image.MICROPYTHON_TAG)
def test_micropythons_own_manifest_tool_resolves_every_name():
    tree = _micropython_tree()
    image.write_stamp()
    sys.path.insert(0, os.path.join(tree, "tools"))
    try:
        import manifestfile
    finally:
        sys.path.pop(0)
    m = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, {
        "MPY_DIR": tree, "MPY_LIB_DIR": os.path.join(tree, "lib", "micropython-lib"),
        "PORT_DIR": os.path.join(tree, "ports", "esp32"), "BOARD_DIR": image.BOARD_DIR})
    m.execute(os.path.join(image.BOARD_DIR, "manifest.py"))  # raises on any name it cannot find
    frozen = {f.target_path for f in m.files()}
    assert {"_boot.py", "ntptime.py", "ssl.py", "asyncio/core.py", "firmware/app.py", "httpd.py",
            "meter_image.py"} <= frozen


# --- the MicroPython release --------------------------------------------------------------------


def test_the_builds_mpy_version_is_the_one_the_targeted_release_loads(tmp_path):
    with open(os.path.join(image.BOARD_DIR, "mpconfigboard.h")) as f:
        header = f.read()
    m = re.search(r"MICROPY_VERSION_MAJOR != (\d+) \|\| MICROPY_VERSION_MINOR != (\d+)", header)
    assert m, "mpconfigboard.h no longer says which release it targets"
    assert image.MICROPYTHON_TAG.startswith("v%s.%s." % m.groups())
    dst = tmp_path / "dsp.mpy"
    build.compile_file(os.path.join(ROOT, "firmware", "dsp.py"), "firmware/dsp.py", str(dst))  # as `make build`
    head = dst.read_bytes()[:4]
    assert head[0] == ord("M")
    assert (head[1], head[2] & 3) == image.MPY_VERSIONS[image.MICROPYTHON_TAG]  # 6.3
    assert head[2] >> 2 == 10  # xtensawin
    # The table tells releases apart: 1.22 loads 6.2 and would refuse these files.
    assert image.MPY_VERSIONS["v1.22.0"] != (head[1], head[2] & 3)


def test_a_source_tree_of_another_release_is_refused(tmp_path, monkeypatch):
    def tree(version):
        d = tmp_path / version
        (d / "py").mkdir(parents=True)
        major, minor, micro = version[1:].split(".")
        (d / "py" / "mpconfig.h").write_text("#define MICROPY_VERSION_MAJOR %s\n#define MICROPY_VERSION_MINOR %s\n"
                                             "#define MICROPY_VERSION_MICRO %s\n" % (major, minor, micro))
        return str(d)

    monkeypatch.setenv("MICROPY_DIR", tree("v1.27.0"))
    with pytest.raises(SystemExit, match="holds MicroPython v1.27.0.*targets v1.28.0"):
        image.micropython_source(clone=False)
    monkeypatch.setenv("MICROPY_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match="not a MicroPython source tree"):
        image.micropython_source(clone=False)
    monkeypatch.setenv("MICROPY_DIR", tree("v1.28.0"))
    assert image.micropython_source(clone=False) == str(tmp_path / "v1.28.0")


def test_prepare_writes_the_stamp_of_the_code_it_freezes(tmp_path):
    src = tmp_path / "micropython"
    (src / "py").mkdir(parents=True)
    (src / "py" / "mpconfig.h").write_text("#define MICROPY_VERSION_MAJOR 1\n#define MICROPY_VERSION_MINOR 28\n"
                                           "#define MICROPY_VERSION_MICRO 0\n")
    env = dict(os.environ, MICROPY_DIR=str(src))
    r = subprocess.run([sys.executable, "-m", "tools.image", "--prepare"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    # The container sees only the repository: a source outside it is refused after the stamp, with words.
    assert r.returncode != 0 and "unset MICROPY_DIR" in r.stderr, r.stderr
    stamp = {}
    with open(image.STAMP) as f:
        exec(f.read(), stamp)
    assert stamp["SOURCES_SHA256"] == image.source_digest() and stamp["MICROPYTHON"] == "v1.28.0"


# --- make image without an ESP-IDF --------------------------------------------------------------


def _image(*args, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("IDF_PATH",)}
    e.update(env)
    return subprocess.run([sys.executable, "-m", "tools.image", *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=120)


def test_make_image_without_an_esp_idf_says_what_to_install_and_run():
    r = _image()
    assert r.returncode == 2 and r.stdout == ""
    text = r.stderr
    assert "IDF_PATH is not set" in text
    assert "MicroPython v1.28.0 builds with ESP-IDF v5.5.1" in text  # ports/esp32/README.md at v1.28.0
    assert "git clone -b v5.5.1 --recursive https://github.com/espressif/esp-idf.git" in text
    assert "install.sh esp32" in text and "export.sh" in text
    assert "espressif/idf:v5.5.1" in text
    assert "BOARD_DIR=/meter/boards/METER_ESP32" in text and "submodules all" in text
    e = {k: v for k, v in os.environ.items() if k != "IDF_PATH"}
    r = subprocess.run(["make", "-s", "image", "VARIANT=ROMFS"], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "make image VARIANT=ROMFS" in r.stderr and "BOARD_VARIANT=ROMFS" in r.stderr
    assert "BUILD=/meter/build/image/METER_ESP32-ROMFS" in r.stderr


def test_layout_and_digest_say_what_the_docs_say():
    r = _image("--layout")
    assert r.returncode == 0
    assert re.search(r"romfs\s+0x1e0000\s+128 KiB", r.stdout) and re.search(r"vfs\s+0x200000\s+2048 KiB", r.stdout)
    r = _image("--digest")
    assert r.returncode == 0 and r.stdout.strip() == image.source_digest() and len(r.stdout.strip()) == 64


def test_make_image_names_what_is_wrong_with_an_esp_idf(tmp_path):
    r = _image(IDF_PATH=str(tmp_path))
    assert r.returncode == 2 and "is not an ESP-IDF (no tools/idf.py in it)" in r.stderr
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "idf.py").write_text("")
    r = _image(IDF_PATH=str(tmp_path), PATH=os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin")
    assert r.returncode == 2 and "idf.py is not on PATH: source %s/export.sh" % tmp_path in r.stderr


def test_the_docs_flash_at_the_tables_offsets():
    with open(os.path.join(ROOT, "docs", "IMAGE.md")) as f:
        doc = f.read()
    table = image.partition_table()
    writes = {(int(a, 16), f) for a, f in re.findall(r"write-flash (0x[0-9a-fA-F]+) (\S+)", doc)}
    assert (image.BOOTLOADER_OFFSET, "build/image/METER_ESP32/firmware.bin") in writes
    assert (table["factory"].offset, "build/image/METER_ESP32/micropython.bin") in writes
    assert (table["romfs"].offset, "build/device.romfs") in writes
    layout = image.layout_text()
    assert "0x1e0000  build/device.romfs" in layout and "0x1000    build/image/METER_ESP32/firmware.bin" in layout


# --- what the code costs in heap ----------------------------------------------------------------


def test_code_costs_less_heap_from_romfs_than_from_files():
    r = subprocess.run([sys.executable, "-m", "tools.bench_codecost", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    modules = bench_codecost.device_modules()
    assert out["modules"] == len(modules) and "httpd" in modules and "firmware.app" in modules
    cost = out["bytes"]
    # Files are copied into the heap; ROMFS runs in place (BENCHMARKS.md: 218,272 and 119,808 bytes
    # on this 64-bit port at 7b686a9). The tool itself checks that each module came from where it says.
    assert 0 < cost["romfs"] < cost["lib"]
    assert cost["lib"] - cost["romfs"] > 50_000
    if out["word_bytes"] == 8:  # the recorded figures (which `make deploy` quotes) still hold
        for source in ("lib", "romfs"):
            recorded = bench_codecost.MEASURED_BYTES["x64"][source]
            assert abs(cost[source] - recorded) <= recorded // 4, (
                "%s: %d bytes now, %d recorded: measure again (docs/IMAGE.md) and update "
                "tools/bench_codecost.py MEASURED_BYTES and BENCHMARKS.md" % (source, cost[source], recorded))


def test_frozen_is_measured_only_on_a_binary_with_the_code_frozen_in(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.bench_codecost", "--from", "frozen"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "has no device code frozen in" in r.stderr and "FROZEN_MANIFEST" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tools.bench_codecost", "--from", "rom"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "choose from lib, romfs, frozen" in r.stderr
    manifest = tmp_path / "manifest.py"
    r = subprocess.run([sys.executable, "-m", "tools.bench_codecost", "--write-manifest", str(manifest)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = manifest.read_text()
    assert 'include("$(PORT_DIR)/variants/standard/manifest.py")' in text
    assert os.path.join(image.BOARD_DIR, "manifest_device.py") in text


def test_the_docs_esptool_lines_are_commands_esptool_takes(tmp_path):
    # Each line, run against a serial port that does not exist: a misspelt command or option stops in
    # esptool's parser ("No such command", usage); a right one gets as far as opening the port.
    with open(os.path.join(ROOT, "docs", "IMAGE.md")) as f:
        lines = re.findall(r"^\.venv/bin/esptool (.+)$", f.read(), re.M)
    assert len(lines) == 4, lines
    for rel in ("build/image/METER_ESP32/firmware.bin", "build/image/METER_ESP32/micropython.bin",
                "build/device.romfs"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"\xff" * 4096)
    port = str(tmp_path / "no-such-tty")
    for line in lines:
        args = line.replace("/dev/ttyUSB0", port).split()
        r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "esptool"), *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "Could not open %s" % port in out, (line, out[-1500:])

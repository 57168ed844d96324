# atomicfile — power-safe small files: a reader sees the old content or the new, never a mix.
#
# replace(path, data)   write `path.tmp`, flush, close, then rename it over `path`. littlefs (the
#                       ESP32's filesystem) commits a rename atomically and POSIX rename replaces its
#                       target atomically, so a power cut at any instant leaves the complete old file
#                       or the complete new one (at worst plus a stale .tmp, which the next replace()
#                       overwrites and read() never looks at).
# overwrite(path, data) write in place with no rename: one metadata commit instead of two, for callers
#                       that keep their own redundancy (alternating slots with a checksum).
# read(path, max_bytes) the content as bytes, or None if there is no such file.
# read_lines(path)      the content as a list of lines (bytes, newline removed), or None: each
#                       line is its own small allocation, never the whole file in one block; with
#                       max_line_bytes, longer lines are left out.
#
# data may be bytes, str, or a list of bytes pieces written one after another (as if joined).
#
# Every file access goes through this module's `open` and `os`, so a test can cut the power at any
# byte by substituting them (tests/unit/powercut.py).

import os

TMP_SUFFIX = ".tmp"
_ENOENT = 2


def _open_existing(path):
    """The file opened for reading, or None if it does not exist. Other I/O errors raise OSError."""
    try:
        return open(path, "rb")
    except OSError as e:
        if e.args and e.args[0] == _ENOENT:
            return None
        raise


def read(path, max_bytes=None):
    """The file's bytes, or None if it does not exist. Other I/O errors raise OSError.

    With max_bytes, a longer file raises ValueError instead of filling the heap, and the buffer
    asked for is the file's size, not max_bytes.
    """
    f = _open_existing(path)
    if f is None:
        return None
    try:
        if max_bytes is None:
            data = f.read()
        else:
            # A block the file's size, not max_bytes + 1 whatever the size (16 KB for config.json):
            # read() asks for the whole count at once. One byte more shows a file that grew meanwhile.
            size = f.seek(0, 2)
            f.seek(0)
            data = f.read(min(size, max_bytes) + 1)
    finally:
        f.close()
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError("%s is larger than %d bytes" % (path, max_bytes))
    return data


def read_lines(path, chunk_bytes=512, max_line_bytes=None):
    """The file's lines without their newlines, or None if it does not exist. Read in chunks:
    MicroPython's readline() reads a file one byte per call. With max_line_bytes, a longer line is
    left out (never held whole: a damaged file's endless line must not take the heap)."""
    f = _open_existing(path)
    if f is None:
        return None
    lines, tail, skipping = [], b"", False
    try:
        while True:
            chunk = f.read(chunk_bytes)
            if not chunk:
                break
            tail += chunk
            start = tail.find(b"\n") + 1
            while start:
                if not skipping and (max_line_bytes is None or start - 1 <= max_line_bytes):
                    lines.append(tail[:start - 1])
                skipping = False
                tail = tail[start:]
                start = tail.find(b"\n") + 1
            if max_line_bytes is not None and len(tail) > max_line_bytes:
                tail, skipping = b"", True  # the rest of this line is dropped as it comes
    finally:
        f.close()
    if tail and not skipping:
        lines.append(tail)  # a last line without its newline
    return lines


def replace(path, data):
    """Atomically make `path` hold exactly `data` (bytes, str or a list of bytes pieces)."""
    tmp = path + TMP_SUFFIX
    try:
        _write(tmp, data)
        _sync()
        os.rename(tmp, path)
    except OSError:
        remove(tmp)  # a failed write (flash full...) leaves the old file and no debris
        raise


def overwrite(path, data):
    """Write `data` into `path` in place. A power cut can leave it truncated: callers must detect that."""
    _write(path, data)
    _sync()


def remove(path):
    """Delete `path`; a missing file is not an error."""
    try:
        os.remove(path)
    except OSError as e:
        if not (e.args and e.args[0] == _ENOENT):
            raise


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _write(path, data):
    if isinstance(data, str):
        data = data.encode()
    f = open(path, "wb")
    try:
        for piece in data if isinstance(data, list) else (data,):
            f.write(piece)
        f.flush()
    finally:
        f.close()


def _sync():
    sync = getattr(os, "sync", None)  # flushes FAT; littlefs has already committed on close
    if sync is not None:
        sync()

# flashfs — the stand-in board's filesystem: a folder on the host, mounted at / (runs under MicroPython).
#
# On the ESP32 the port mounts littlefs on the "vfs" partition at / (ports/esp32/modules/_boot.py); here
# FlashFs is mounted there instead and keeps every file in one host folder, the stand-in's flash: / is
# that folder, ".." stops at it, and no path the board's code names reaches outside it. It answers as
# littlefs does (extmod/vfs_lfsx.c) where that shows: stat() gives the type bits only, ilistdir() yields
# (name, type, 0, size), remove() takes empty folders too, opening a folder is EISDIR, statvfs() counts
# 4 KiB blocks of the partition. Each change (a file opened for writing, removed, renamed, a folder made
# or removed) is one line in the flash log, in the order it happened.
#
# vfs.VfsPosix(root) is not used directly: in the unix port it builds both of rename()'s paths in one
# buffer (extmod/vfs_posix.c vfs_posix_get_path_str), so an absolute rename lands on the wrong name.

_BLOCK = 4096
_DIR = 0x4000
_FILE = 0x8000


class FlashFs:
    def __init__(self, posix, folder, fs_bytes, log):
        self._posix = posix  # a vfs.VfsPosix() without a root: the host's paths, used only below folder
        self._folder = folder.rstrip("/")
        self._blocks = fs_bytes // _BLOCK
        self._log = log
        self._cwd = "/"

    # paths
    def _board(self, path):
        """The absolute, normalised board path of path (relative to the current folder)."""
        if not path.startswith("/"):
            path = self._cwd + "/" + path
        parts = []
        for p in path.split("/"):
            if p == "..":
                if parts:
                    parts.pop()
            elif p and p != ".":
                parts.append(p)
        return "/" + "/".join(parts)

    def _host(self, path):
        return self._folder + self._board(path)

    def _is_dir(self, host):
        try:
            return self._posix.stat(host)[0] & _DIR == _DIR
        except OSError:
            return False

    # the VFS protocol (extmod/vfs.c calls these)
    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def chdir(self, path):
        board = self._board(path)
        if not self._is_dir(self._folder + board):
            raise OSError(2)  # ENOENT
        self._cwd = board

    def getcwd(self):
        return self._cwd

    def ilistdir(self, path=""):
        host = self._host(path)
        if not self._is_dir(host):
            raise OSError(2 if not self._exists(host) else 20)  # ENOENT, ENOTDIR
        return self._entries(host)

    def _entries(self, host):
        for entry in self._posix.ilistdir(host):
            name = entry[0]
            st = self._posix.stat(host + "/" + name)
            kind = _DIR if st[0] & _DIR == _DIR else _FILE
            yield (name, kind, 0, 0 if kind == _DIR else st[6])

    def _exists(self, host):
        try:
            self._posix.stat(host)
            return True
        except OSError:
            return False

    def stat(self, path):
        st = self._posix.stat(self._host(path))
        kind = _DIR if st[0] & _DIR == _DIR else _FILE
        return (kind, 0, 0, 0, 0, 0, 0 if kind == _DIR else st[6], st[8], st[8], st[8])

    def statvfs(self, path):
        used = 2 + self._used_blocks(self._folder)  # (littlefs keeps its superblock pair)
        free = max(0, self._blocks - used)
        return (_BLOCK, _BLOCK, self._blocks, free, free, 0, 0, 0, 0, 255)

    def _used_blocks(self, host):
        n = 0
        for entry in self._posix.ilistdir(host):
            st = self._posix.stat(host + "/" + entry[0])
            if st[0] & _DIR == _DIR:
                n += 1 + self._used_blocks(host + "/" + entry[0])
            else:
                n += (st[6] + _BLOCK - 1) // _BLOCK
        return n

    def open(self, path, mode):
        host = self._host(path)
        if self._is_dir(host):
            raise OSError(21)  # EISDIR
        writing = any(c in mode for c in "wax+")
        f = self._posix.open(host, mode)
        if writing:
            self._log("write %s" % self._board(path))
        return f

    def remove(self, path):
        host = self._host(path)
        if self._is_dir(host):
            self._posix.rmdir(host)  # littlefs removes an empty folder here too (lfs_remove)
        else:
            self._posix.remove(host)
        self._log("remove %s" % self._board(path))

    def rename(self, old, new):
        self._posix.rename(self._host(old), self._host(new))
        self._log("rename %s %s" % (self._board(old), self._board(new)))

    def mkdir(self, path):
        self._posix.mkdir(self._host(path))
        self._log("mkdir %s" % self._board(path))

    def rmdir(self, path):
        host = self._host(path)
        if not self._is_dir(host):
            raise OSError(20)  # ENOTDIR
        self._posix.rmdir(host)
        self._log("rmdir %s" % self._board(path))

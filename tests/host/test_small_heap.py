# Reading flash files in a small heap, under the real MicroPython in a fresh process (a heap in one
# piece, so the figures do not depend on what ran before): a bounded read never holds a long line whole.
from tools import mp

SCRIPT = """
import atomicfile
path = %r
try:
    print(atomicfile.read_lines(path, 512, max_line_bytes=2048))
except MemoryError:
    print("MemoryError")
try:
    print(len(atomicfile.read_lines(path, 512)))
except MemoryError:
    print("MemoryError")
"""


def test_a_bounded_read_never_holds_a_long_line_whole(tmp_path):
    (tmp_path / "lines").write_bytes(b"first\n" + b"x" * 400000 + b"\nlast")  # a line 3 times the heap
    script = tmp_path / "read.py"
    script.write_text(SCRIPT % str(tmp_path / "lines"))
    out = mp.run(str(script), heapsize="128K", capture_output=True, text=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["[b'first', b'last']", "MemoryError"], out.stdout + out.stderr

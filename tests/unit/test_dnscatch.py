# The DNS catch-all: every A question gets the access point's address; hostile packets get nothing.
import gc
import time

import dnscatch

from support import MICROPYTHON, skip


def _query(name, qtype=1, qid=0x1234, flags=0x0100, qd=1):
    q = bytes([qid >> 8, qid & 255, flags >> 8, flags & 255, 0, qd, 0, 0, 0, 0, 0, 0])
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + bytes([qtype >> 8, qtype & 255, 0, 1])


def test_an_a_question_for_any_name_is_answered_with_the_ap_address():
    for name in ("connectivitycheck.gstatic.com", "captive.apple.com", "www.msftconnecttest.com", "x"):
        q = _query(name)
        r = dnscatch.answer(q, "192.168.251.1")
        assert r[:2] == q[:2]  # same id
        assert r[2] & 0x80  # a response
        assert r[3] & 0x0F == 0  # NOERROR
        assert r[6:8] == b"\x00\x01"  # one answer
        assert r[12:len(q)] == q[12:]  # the question echoed
        assert r[-4:] == bytes([192, 168, 251, 1])
        assert r[-16:-10] == b"\xc0\x0c\x00\x01\x00\x01"  # name = the question, type A, class IN


def test_other_record_types_get_an_empty_answer_so_phones_fall_back_to_ipv4():
    r = dnscatch.answer(_query("example.com", qtype=28), "192.168.251.1")  # AAAA
    assert r is not None and r[6:8] == b"\x00\x00" and r[3] & 0x0F == 0


def test_responses_malformed_and_oversized_packets_are_dropped():
    ok = _query("example.com")
    assert dnscatch.answer(_query("example.com", flags=0x8180), "192.168.251.1") is None  # a reply: no loop
    assert dnscatch.answer(_query("a", qd=2), "192.168.251.1") is None
    assert dnscatch.answer(ok[:15], "192.168.251.1") is None  # truncated
    assert dnscatch.answer(ok[:-2], "192.168.251.1") is None  # no QCLASS
    assert dnscatch.answer(ok[:12] + b"\xc0\x0c" + ok[-4:], "192.168.251.1") is None  # compression pointer
    assert dnscatch.answer(ok[:12] + b"\x3f" + b"a" * 10, "192.168.251.1") is None  # label past the end
    assert dnscatch.answer(ok + b"\x00" * 600, "192.168.251.1") is None
    assert dnscatch.answer(b"", "192.168.251.1") is None
    assert dnscatch.answer("not bytes", "192.168.251.1") is None


def test_no_byte_string_makes_it_raise():
    seed = 12345
    base = _query("connectivitycheck.gstatic.com")
    for _ in range(3000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        b = bytearray(base)
        for k in range(1 + seed % 6):
            b[(seed >> (k * 3)) % len(b)] = (seed >> k) & 255
        b = bytes(b[:12 + seed % (len(b) - 11)])
        r = dnscatch.answer(b, "192.168.251.1")
        assert r is None or (r[:2] == b[:2] and r[2] & 0x80)


def _catch():
    import socket

    for port in range(18553, 18600):
        try:
            catch = dnscatch.DnsCatch("192.168.251.1", "127.0.0.1", port)
        except OSError:
            continue
        catch.sock_addr = socket.getaddrinfo("127.0.0.1", port)[0][-1]
        return catch
    raise AssertionError("no free UDP port")


def test_idle_polls_allocate_nothing():
    # Polled every 20 ms while the access point is up: each recvfrom() took a fresh 513-byte buffer
    # with nothing waiting, and in a full heap the task died of MemoryError (issue #16).
    if not MICROPYTHON:
        skip("gc.mem_alloc() counts MicroPython's heap")
    catch = _catch()
    try:
        gc.collect()
        before = gc.mem_alloc()
        for _ in range(50):
            assert catch.serve_pending() == 0
        assert gc.mem_alloc() - before < dnscatch.MAX_PACKET  # before: 50 x 513 bytes
    finally:
        catch.close()


def test_a_full_heap_drops_nothing_for_good_and_kills_nothing():
    catch = _catch()
    real = catch.sock
    try:
        class _FullHeap:  # the socket as a full heap sees it: recvfrom cannot get its buffer
            def __getattr__(self, name):
                return getattr(real, name)

            def recvfrom(self, n):
                raise MemoryError("memory allocation failed, allocating 513 bytes")

        catch.sock = _FullHeap()
        import socket

        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.sendto(_query("example.com"), catch.sock_addr)
        time.sleep_ms(20)
        assert catch.serve_pending() == 0 and catch.dropped == 1  # no exception: the task lives on
        catch.sock = real
        for _ in range(100):  # the datagram waited in the socket: answered once memory is back
            if catch.serve_pending():
                break
            time.sleep_ms(1)
        c.settimeout(1)
        reply = c.recv(600)
        c.close()
        assert reply[-4:] == bytes([192, 168, 251, 1]) and catch.answered == 1
    finally:
        catch.sock = real
        catch.close()

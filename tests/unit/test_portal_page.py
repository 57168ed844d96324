# The setup page as HTML: scanned names escaped, installer facts shown, probes redirected while unconfigured.
from firmware import config, links, portal
from firmware.board import Board
from firmware.identity import IdentityStatus
from firmware.schema import Diagnostic
from support import tmpdir


class _Meter:
    readings = None
    settings = {}


def _portal(ident=None):
    store = config.ConfigStore(path=tmpdir() + "/config.json", log=lambda m: None)
    store.load()
    board = Board()
    status = ident or IdentityStatus(None, Diagnostic("IDENTITY_MISSING", "no device identity <here>"))
    net = links.Links(board, store, status, log=lambda m: None)
    return portal.Portal(board, store, status, _Meter(), net, log=lambda m: None)


def _html(response):
    return b"".join(response.body).decode()


def test_scan_list_keeps_the_strongest_of_each_name_and_drops_hidden_and_undecodable_ones():
    raw = [(b"Home", b"", 6, -70, 3, False), (b"Home", b"", 6, -50, 3, False), (b"", b"", 1, -40, 3, True),
           (b"\xff\xfe", b"", 1, -30, 3, False), (b"Cafe", b"", 1, -80, 0, False)]
    assert portal.scan_list(raw) == [("Home", -50, True), ("Cafe", -80, False)]


def test_every_scanned_name_is_escaped_in_the_page():
    p = _portal()
    p.networks = [("<script>alert(1)</script>", -50, True), ('"><img src=x onerror=alert(1)>', -60, False)]
    html = _html(p.page())
    assert "<script>alert" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "no device identity &lt;here&gt;" in html  # the refusal text, escaped


def test_page_needs_no_external_assets():
    html = _html(_portal().page())
    for bad in ("http://", "https://", "src=", "<link"):
        assert bad not in html, bad


def test_the_page_goes_out_in_small_pieces_with_its_length_announced():
    p = _portal()
    p.networks = [("net%d" % i, -50 - i, True) for i in range(portal.MAX_NETWORKS)]  # the longest page
    r = p.page("Saved.", True)
    pieces = list(r.body)
    size = sum(len(b) for b in pieces)
    assert int(r.headers["Content-Length"]) == size > 4000
    # A fragmented heap may lack a 4 KB block but not a 1.5 KB one: no piece is ever the whole page.
    assert max(len(b) for b in pieces) <= 1536

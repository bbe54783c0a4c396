"""Bodies that go wrong on the rewriting path, through a real `edge serve` in front of
a byte-exact test upstream: a page that says gzip and is not (fail open while nothing
is sent, abort once the rewritten page has started), a page without Content-Length
longer than the rewrite limit (whole, the rest passed through), a page whose charset
is no charset. And the pieces underneath: the rewriter and the replay stopping
partway, and a failure inside the rewriter surfacing instead of a quiet truncation."""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import http.client
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.rewrite import Edit, Plan
from edge.rewriting import Rewriting, SlotEdit
from tests._upstream import Received, TestUpstream
from tests.conftest import EdgeProcess, Reply, fetch, start_edge

pytestmark = pytest.mark.slow

LIMIT = 1 << 20
"""The sidecar's personalize_max_bytes in these tests (1 MiB: the pages stay small)."""
SNIPPET = b'<b class="edge-hero">Ciao</b>'
HERO = b'<section data-edge-slot="hero">Original hero</section>\n'
HEAD = b"<!doctype html><html><head><meta charset=utf-8><title>Negozio</title></head><body>\n"
TAIL = b"</body></html>\n"
BROWSER = {"Accept": "text/html", "Accept-Encoding": "gzip"}


def filler(size: int, seed: str = "") -> bytes:
    """*size* bytes (about) of paragraphs that compress poorly (hex digests), so a
    gzip body is as long as the limit needs."""
    lines = []
    n = 0
    i = 0
    while n < size:
        line = b"<p>%d %s</p>\n" % (i, hashlib.sha256(f"{seed}{i}".encode()).hexdigest().encode())
        lines.append(line)
        n += len(line)
        i += 1
    return b"".join(lines)


@functools.lru_cache(maxsize=8)
def long_page(where: str) -> bytes:
    """A page of the limit plus 1 MiB with the hero slot at the top, after the
    limit, or open across it; ``huge``: longer than the decoder's bound too (eight
    times the limit), the hero at the top."""
    if where == "top":
        return HEAD + HERO + filler(LIMIT + (1 << 20)) + TAIL
    if where == "huge":
        return HEAD + HERO + filler(8 * LIMIT + (1 << 20)) + TAIL
    if where == "late":
        return HEAD + filler(LIMIT + (1 << 19)) + HERO + filler(1 << 19, "b") + TAIL
    assert where == "across"
    hero = b'<section data-edge-slot="hero">' + filler(1 << 18, "h") + b"</section>\n"
    return HEAD + filler(LIMIT - (1 << 17)) + hero + filler(1 << 20, "b") + TAIL


SMALL_PAGE = HEAD + HERO + filler(4000) + TAIL
GZIP_PAGE = gzip.compress(SMALL_PAGE, mtime=0)
BROKEN = {
    "garbage": b"this is not gzip at all, whatever the header says\n" * 20,
    "header-only": GZIP_PAGE[:8],  # a valid start, truncated before any content
    "bad-block": GZIP_PAGE[:10] + b"\xff" * 200,  # a gzip header, then no deflate data
}


class BodyUpstream(TestUpstream):
    """The test upstream plus the pages here. ``gate`` holds the broken end of a
    ``/midway`` page until the test has seen the rewritten page start."""

    gate: threading.Event

    async def _respond(self, request: Received, writer: Any) -> bool:
        path, _, query = request.target.partition("?")
        kind = path.rpartition("/")[2]
        html = ("Content-Type", "text/html; charset=utf-8")
        if path.startswith("/broken/"):
            return self._send(writer, [html, ("Content-Encoding", "gzip")], BROKEN[kind])
        if path.startswith("/long/"):
            body = long_page(kind)
            headers = [html]
            if query == "gzip":
                body = gzip.compress(body, mtime=0)
                headers.append(("Content-Encoding", "gzip"))
            await self._chunked(writer, headers, body)
            return True
        if path.startswith("/midway/"):
            return await self._midway(writer, kind)
        if path.startswith("/charset/"):
            label = kind
            if query == "meta":
                page = SMALL_PAGE.replace(
                    b"<meta charset=utf-8>", b"<meta charset=%b>" % label.encode()
                )
                return self._send(writer, [("Content-Type", "text/html")], page)
            return self._send(writer, [("Content-Type", f"text/html; charset={label}")], SMALL_PAGE)
        return await super()._respond(request, writer)

    def _send(self, writer: Any, headers: list[tuple[str, str]], body: bytes) -> bool:
        headers = [*headers, ("ETag", '"shop-1"'), ("Content-Length", str(len(body)))]
        lines = ["HTTP/1.1 200 OK"] + [f"{k}: {v}" for k, v in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return True

    async def _chunked(self, writer: Any, headers: list[tuple[str, str]], body: bytes) -> None:
        lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers)]
        writer.write(("\r\n".join(lines) + "\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        for at in range(0, len(body), 1 << 16):
            piece = body[at : at + (1 << 16)]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async def _midway(self, writer: Any, kind: str) -> bool:
        """A gzip page that breaks after its first half: corrupt data, or the valid
        page followed by garbage (``tail``)."""
        whole = gzip.compress(HEAD + HERO + filler(1 << 19) + TAIL, mtime=0)
        first, rest = whole[: len(whole) // 2], whole[len(whole) // 2 :]
        if kind == "corrupt":
            rest = b"\xff" * 4096 + rest
        else:
            rest += b"garbage after the gzip member"
        lines = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n"
        writer.write(f"{lines}Content-Length: {len(first) + len(rest)}\r\n\r\n".encode() + first)
        await writer.drain()
        await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 10)
        writer.write(rest)
        await writer.drain()
        return False


@pytest.fixture(scope="module")
def upstream() -> Iterator[BodyUpstream]:
    server = BodyUpstream()
    server.gate = threading.Event()
    server.start()
    yield server
    server.stop()


def shop_files(root: Path) -> dict[str, str]:
    """A rule directory and snippets: everyone's hero slot gets SNIPPET."""
    (root / "rules").mkdir()
    (root / "snippets").mkdir()
    (root / "rules" / "theme.toml").write_text(
        '[slots.hero]\nselect = "[data-edge-slot=hero]"\n\n'
        '[[placements]]\nslot = "hero"\nsnippet = "hero.html"\naction = "set_inner_content"\n'
    )
    (root / "snippets" / "hero.html").write_bytes(SNIPPET)
    return {
        "EDGE_RULES": str(root / "rules"),
        "EDGE_SNIPPETS": str(root / "snippets"),
        "EDGE_TRACK": "false",
        "EDGE_STYLESHEET": "",  # no link added to the head: the rest is the shop's bytes
        "EDGE_PERSONALIZE_MAX_BYTES": str(LIMIT),
    }


@pytest.fixture(scope="module")
def edge(upstream: BodyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    proc = start_edge(upstream.url, env=shop_files(tmp_path_factory.mktemp("shop")))
    yield proc
    proc.stop()


def edited(page: bytes) -> bytes:
    """*page* with the hero filled as the placement fills it."""
    assert page.count(HERO) == 1
    return page.replace(HERO, HERO.replace(b"Original hero", SNIPPET))


MARKER = b'<meta name="shop-edge" content="done">'


def marked(page: bytes) -> bytes:
    """*page* as the sidecar sends a page it personalized: the marker that tells the
    browser snippet so starts its head (whether or not a slot was reached)."""
    return page.replace(b"<head>", b"<head>" + MARKER, 1)


def assert_whole(reply: Reply) -> bytes:
    assert reply.status == 200
    length = reply.header("content-length")
    if length is not None:
        assert int(length) == len(reply.body)
    return reply.body


# --- content that says gzip and is not -----------------------------------------------


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_gzip_page_goes_out_as_the_shop_sent_it(edge: EdgeProcess, kind: str) -> None:
    # Nothing of the rewritten page was out when decoding failed: the shop's own
    # response, head and bytes, instead of a cut-off 200.
    reply = fetch(edge.port, f"/broken/{kind}", headers=BROWSER)
    assert assert_whole(reply) == BROKEN[kind]
    assert reply.header("content-encoding") == "gzip"
    assert reply.header("content-length") == str(len(BROKEN[kind]))
    assert reply.header("etag") == '"shop-1"'  # not the personalized page's weak ETag
    assert "cookie" not in (reply.header("vary") or "").lower()
    assert fetch(edge.port, "/page").status == 200  # and the sidecar serves on


@pytest.mark.parametrize("kind", ["corrupt", "tail"])
def test_a_gzip_page_that_breaks_after_it_started_is_aborted(
    edge: EdgeProcess, upstream: BodyUpstream, kind: str
) -> None:
    # The rewritten page has started (its head is out), then the upstream's gzip
    # breaks: the client must see a broken transfer, not a 200 that looks complete.
    upstream.gate.clear()
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.request("GET", f"/midway/{kind}", headers=BROWSER)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("transfer-encoding") == "chunked"
        upstream.gate.set()
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        # what did arrive is the beginning of the personalized page
        assert SNIPPET in zlib.decompressobj(31).decompress(cut.value.partial)
    finally:
        upstream.gate.set()
        conn.close()
    assert fetch(edge.port, "/page").status == 200


# --- pages without Content-Length longer than the limit --------------------------------


def test_a_long_chunked_page_passes_through_whole(edge: EdgeProcess) -> None:
    # Its slot comes after the limit: the rewrite stopped before it, and every byte
    # is the shop's (but the head's marker, written before the limit).
    page = marked(long_page("late"))
    reply = fetch(edge.port, "/long/late", headers=BROWSER)
    assert reply.header("transfer-encoding") == "chunked"
    body = assert_whole(reply)
    assert len(body) == len(page)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(page).hexdigest()


def test_a_long_chunked_page_keeps_the_edits_made_before_the_limit(edge: EdgeProcess) -> None:
    page = marked(long_page("top"))
    body = assert_whole(fetch(edge.port, "/long/top", headers=BROWSER))
    assert hashlib.sha256(body).digest() == hashlib.sha256(edited(page)).digest()


def test_a_chunked_page_longer_than_the_decoders_bound_is_whole(edge: EdgeProcess) -> None:
    # It was cut off at eight times the limit, a 200 that ended midway.
    page = marked(long_page("huge"))
    body = assert_whole(fetch(edge.port, "/long/huge", headers=BROWSER, timeout=30))
    assert len(body) == len(edited(page))
    assert hashlib.sha256(body).digest() == hashlib.sha256(edited(page)).digest()


def test_a_slot_open_across_the_limit_is_left_as_the_shop_made_it(edge: EdgeProcess) -> None:
    page = marked(long_page("across"))
    body = assert_whole(fetch(edge.port, "/long/across", headers=BROWSER))
    assert hashlib.sha256(body).digest() == hashlib.sha256(page).digest()


def test_a_long_chunked_gzip_page_is_whole_once_decoded(edge: EdgeProcess) -> None:
    # A coded body keeps being decoded and encoded again past the limit (the client
    # is decoding our gzip stream): whole, with the edits made before the limit.
    reply = fetch(edge.port, "/long/top?gzip", headers=BROWSER)
    assert reply.header("content-encoding") == "gzip"
    assert gzip.decompress(assert_whole(reply)) == edited(marked(long_page("top")))


# --- charsets nothing can be encoded to -------------------------------------------------


@pytest.mark.parametrize(
    ("label", "where"),
    [("hex", "header"), ("zlib", "header"), ("idna", "meta"), ("undefined", "meta")],
)
def test_a_page_in_no_real_charset_is_personalized_whole(
    edge: EdgeProcess, label: str, where: str
) -> None:
    # A codec name that is no charset (Python knows `hex`, `idna`; no browser does)
    # raised inside the rewriter, after the head had gone out.
    reply = fetch(edge.port, f"/charset/{label}?{where}", headers=BROWSER)
    body = assert_whole(reply)
    assert SNIPPET in body and body.endswith(TAIL)


# --- underneath: stopping partway, failures surfacing -----------------------------------

LIST_PAGE = (
    HEAD
    + HERO
    + b"<ol class=products>"
    + b"".join(b'<li data-id="p%d">Item %d</li>' % (i, i) for i in range(50))
    + b"</ol>\n"
    + filler(200_000)
    + TAIL
)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_rewriter_stop_keeps_the_edits_made_and_passes_the_rest() -> None:
    plan = Plan([Edit("[data-edge-slot=hero]", "set_inner_content", SNIPPET)])
    cut = LIST_PAGE.index(b"<ol")
    rewriter = plan.rewriter()
    out = rewriter.write(LIST_PAGE[:cut]) + rewriter.stop("long") + rewriter.write(LIST_PAGE[cut:])
    assert out == edited(LIST_PAGE) and rewriter.error == "long"
    # stopped inside the slot: the slot's element goes out as it came
    inside = LIST_PAGE.index(b"Original")
    rewriter = plan.rewriter()
    out = rewriter.write(LIST_PAGE[:inside]) + rewriter.stop("long")
    assert out + rewriter.write(LIST_PAGE[inside:]) == LIST_PAGE


def feed_all(rewriting: Rewriting, edits: list[SlotEdit], chunk: int) -> bytes:
    body = rewriting.start(edits, b"text/html", b"", b"/list")
    parts = pieces(LIST_PAGE, chunk)
    return b"".join(body.feed(p, i < len(parts) - 1) for i, p in enumerate(parts))


def hero_edit() -> list[SlotEdit]:
    edit = Edit("[data-edge-slot=hero]", "set_inner_content", SNIPPET.decode())
    return [SlotEdit("hero", "hero", edit)]


def test_a_replayed_page_stops_as_a_rewritten_one_does() -> None:
    # A page replayed from a template, stopped at the limit: the same bytes as a
    # fresh rewrite stopped there.
    fresh = Rewriting(max_bytes=100_000, replay_bytes=0)
    expected = feed_all(fresh, hero_edit(), 8192)
    assert expected == edited(LIST_PAGE)  # the hero is before the limit
    replaying = Rewriting(max_bytes=10 << 20, replay_bytes=32 << 20)
    assert feed_all(replaying, hero_edit(), 8192) == edited(LIST_PAGE)
    assert replaying._plans.replays.recorded == 1  # the next one is a replay
    replaying.max_bytes = 100_000
    assert feed_all(replaying, hero_edit(), 8192) == expected


class _BrokenOrder:
    """A reorder target with a bug: ``order`` raises."""

    def key(self, attrs: dict[str, str]) -> str | None:
        return attrs.get("data-id")

    def order(self, keys: list[str | None]) -> list[str]:
        raise RuntimeError("a bug in ordering")


def test_a_failure_inside_the_rewriter_surfaces_from_feed() -> None:
    # Not swallowed into a short page: the caller fails open or aborts (respond.py).
    rewriting = Rewriting(max_bytes=10 << 20, replay_bytes=0)
    edit = Edit("ol.products", "reorder", key=lambda a: a.get("data-id"), order=sorted)
    body = rewriting.start(
        [SlotEdit("list", "list", edit, order=_BrokenOrder())], b"text/html", b"", b"/list"
    )
    cut = LIST_PAGE.index(b"<ol")
    assert body.feed(LIST_PAGE[:cut], True)  # the page has started
    with pytest.raises(RuntimeError, match="a bug in ordering"):
        body.feed(LIST_PAGE[cut:], False)

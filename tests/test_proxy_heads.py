"""The proxy's header work, made cheaper (issue 19), is the same byte for byte.

The request head built in one pass (:meth:`Proxy._request_head`), the response's
headers (:meth:`Proxy.response_headers`), the private and the personalized head
(:mod:`edge.respond`, with their memoized ``Cache-Control`` and ``Vary``) are checked
against the implementations they replaced, kept here as the specification, on
generated header lists. The upstream client's lazy read timer and its shared read
buffer are checked against a real server.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import respond
from edge.config import load_config
from edge.proxy import _HOP_BY_HOP, _REQUEST_DROP, _VIA, Proxy, _BadRequest, _private_redirect
from edge.request import RequestHead
from edge.upstream import UpstreamPool, UpstreamTimeout
from tests._hypothesis import examples

Headers = list[tuple[bytes, bytes]]

# ----------------------------------------------------------------- the specification


def old_request_headers(proxy: Proxy, head: RequestHead) -> tuple[Headers, bool | None]:
    """edge/proxy.py's ``_request_headers`` before issue 19."""
    out: Headers = []
    host = forwarded_for = via = proto = forwarded_host = b""
    connection_tokens: list[bytes] = []
    length: bytes | None = None
    chunked = False
    for name, value in head.headers:
        if name in _REQUEST_DROP:
            if name == b"connection":
                connection_tokens.extend(t.strip() for t in value.lower().split(b","))
            elif name == b"transfer-encoding":
                chunked = True
            continue
        if name == b"host":
            host = value
            if proxy._rewrite_host:
                continue
        elif name == b"x-forwarded-for":
            forwarded_for = value
            continue
        elif name == b"via":
            via = value
            continue
        elif name == b"x-forwarded-proto":
            proto = value
            continue
        elif name == b"x-forwarded-host":
            forwarded_host = value
            continue
        elif name == b"content-length":
            length = value
        out.append((name, value))
    if chunked and length is not None:
        raise _BadRequest("both Content-Length and Transfer-Encoding")
    if connection_tokens:
        dropped = set(connection_tokens)
        out = [(n, v) for n, v in out if n not in dropped]
    if proxy._rewrite_host or not host:
        out.append((b"host", proxy._upstream_host))
    client_ip = head.client.encode() if head.client else b"unknown"
    out.append(
        (b"x-forwarded-for", forwarded_for + b", " + client_ip if forwarded_for else client_ip)
    )
    if not (proxy._trust_forwarded and proto):
        proto = head.scheme.encode()
    out.append((b"x-forwarded-proto", proto))
    if not (proxy._trust_forwarded and forwarded_host):
        forwarded_host = host
    if forwarded_host:
        out.append((b"x-forwarded-host", forwarded_host))
    out.append((b"via", via + b", " + _VIA if via else _VIA))
    if chunked:
        out.append((b"transfer-encoding", b"chunked"))
        framing: bool | None = True
    elif length is not None and length != b"0":
        framing = False
    else:
        framing = None
    return out, framing


def old_wire(method: bytes, target: bytes, headers: Headers) -> bytes:
    """edge/upstream.py's request head before issue 19."""
    return b"".join(
        [method, b" ", target, b" HTTP/1.1\r\n"]
        + [b"".join((name, b": ", value, b"\r\n")) for name, value in headers]
        + [b"\r\n"]
    )


def old_response_headers(proxy: Proxy, head: RequestHead, headers: Headers) -> Headers:
    """edge/proxy.py's ``response_headers`` before issue 19."""
    out: Headers = []
    connection_tokens: list[bytes] | None = None
    via = b""
    host_named = False
    for name, value in headers:
        name = name.lower()
        if name in _HOP_BY_HOP:
            if name == b"connection":
                connection_tokens = [t.strip() for t in value.lower().split(b",")]
            continue
        if name == b"location" and value.startswith(proxy._upstream_origins):
            value = proxy._public_location(head, value)
            if proxy._public_origin is None and b"://" in value:
                host_named = True
        elif name == b"via":
            via = value
            continue
        elif name == b"x-request-id":
            continue
        out.append((name, value))
    if connection_tokens:
        dropped = set(connection_tokens)
        out = [(n, v) for n, v in out if n not in dropped]
    out.append((b"via", via + b", " + _VIA if via else _VIA))
    return _private_redirect(out) if host_named else out


def old_private(headers: Headers) -> Headers:
    """edge/respond.py's ``_private`` before issue 19."""
    out = []
    found = False
    for name, value in headers:
        if name in respond._CDN_CACHE_HEADERS:
            continue
        if name == b"cache-control":
            found = True
            parts = [
                p.strip()
                for p in value.split(b",")
                if p.strip()
                and p.strip().lower() != b"public"
                and not p.strip().lower().startswith(b"s-maxage")
            ]
            if b"private" not in (p.lower() for p in parts) and b"no-store" not in (
                p.lower() for p in parts
            ):
                parts.insert(0, b"private")
            value = b", ".join(parts)
        out.append((name, value))
    if not found:
        out.append((b"cache-control", b"private"))
    return out


def old_personalized(headers: Headers, decision: SimpleNamespace) -> Headers:
    """edge/respond.py's ``_personalized_headers`` before issue 19."""
    out: Headers = []
    vary: list[bytes] = []
    for name, value in old_private(headers):
        if name in (b"content-length", b"accept-ranges", b"content-md5", b"last-modified"):
            continue
        if name == b"etag":
            inner = value.removeprefix(b"W/").strip(b'"')[:64]
            value = b'W/"' + inner + b"-" + decision.fingerprint.encode() + b'"'
        elif name == b"vary":
            vary.extend(v.strip() for v in value.split(b",") if v.strip())
            continue
        out.append((name, value))
    if not any(v.lower() in (b"cookie", b"*") for v in vary):
        vary.append(b"Cookie")
    out.append((b"vary", b", ".join(vary)))
    out.append(respond._server_timing(decision.seconds))
    return out


# ------------------------------------------------------------------------ generators

NAMES = [
    b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"te",
    b"expect", b"upgrade", b"proxy-authorization", b"via", b"x-forwarded-for",
    b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id", b"cookie", b"accept",
    b"close", b"foo", b"location", b"cache-control", b"etag", b"vary", b"cdn-cache-control",
    b"surrogate-control", b"last-modified", b"accept-ranges", b"content-md5", b"set-cookie",
    b"content-type", b"trailer",
]  # fmt: skip
WORDS = [
    b"", b" ", b",", b"0", b"12", b"public", b"private", b"no-store", b"s-maxage=10",
    b"max-age=60", b"Cookie", b"*", b"accept-language", b"keep-alive", b"foo", b"close",
    b"W/", b'"', b"abc", b"http://127.0.0.1:9", b"http://127.0.0.1:9/x", b"https://o.example/",
    b"/y?z", b"1.0 cdn", b"Public", b"cookie", b"example.com", b"https", b"chunked",
]  # fmt: skip
values = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=5).map(b"".join),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(b", ".join),  # Connection's
)
header_lists = st.lists(st.tuples(st.sampled_from(NAMES), values), max_size=12)


def proxy_for(rewrite: bool, trust: bool, public: str) -> Proxy:
    env = {
        "EDGE_UPSTREAM": "http://127.0.0.1:9",
        "EDGE_UPSTREAM_HOST": "rewrite" if rewrite else "preserve",
        "EDGE_TRUST_FORWARDED": "true" if trust else "false",
        "EDGE_PUBLIC_URL": public,
        "EDGE_CONFIG": "",
    }
    return Proxy(load_config(environ=env))


PROXIES = {
    (rewrite, trust, public): proxy_for(rewrite, trust, public)
    for rewrite in (False, True)
    for trust in (False, True)
    for public in ("", "https://shop.example")
}


# ----------------------------------------------------------------------------- tests


@settings(max_examples=examples(400))
@given(
    headers=header_lists,
    which=st.sampled_from(sorted(PROXIES)),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    client=st.sampled_from(["", "10.0.0.1"]),
)
def test_the_request_head_is_the_old_one_byte_for_byte(
    headers: Headers, which: tuple[bool, bool, str], method: str, client: str
) -> None:
    proxy = PROXIES[which]
    head = RequestHead(
        method, "/p", query=b"a=1", scheme="http", client=client, headers=headers, read=False
    )
    try:
        expected = old_request_headers(proxy, head)
    except _BadRequest:
        with pytest.raises(_BadRequest):
            proxy._request_head(head)
        return
    wire, framing = proxy._request_head(head)
    assert framing == expected[1]
    assert wire == old_wire(method.encode(), head.target, expected[0])


def test_connection_options_take_the_headers_they_name_out() -> None:
    proxy = PROXIES[(False, False, "")]
    headers = [(b"connection", b"Foo, close"), (b"foo", b"1"), (b"close", b"2"), (b"bar", b"3")]
    head = RequestHead("GET", "/", client="10.0.0.1", headers=headers, read=False)
    wire, framing = proxy._request_head(head)
    assert framing is None
    assert wire == (
        b"GET / HTTP/1.1\r\nbar: 3\r\nhost: 127.0.0.1:9\r\nx-forwarded-for: 10.0.0.1\r\n"
        b"x-forwarded-proto: http\r\nvia: 1.1 shop-edge\r\n\r\n"
    )


@settings(max_examples=examples(400))
@given(
    headers=st.lists(
        st.tuples(st.sampled_from([*NAMES, b"Location", b"VIA", b"Connection"]), values),
        max_size=12,
    ),
    which=st.sampled_from(sorted(PROXIES)),
    host=st.sampled_from([b"", b"shop.example", b"bad host/", b"127.0.0.1:8000"]),
)
def test_the_response_headers_are_the_old_ones(
    headers: Headers, which: tuple[bool, bool, str], host: bytes
) -> None:
    proxy = PROXIES[which]
    head = RequestHead("GET", "/", headers=[(b"host", host)] if host else [])
    assert proxy.response_headers(head, list(headers)) == old_response_headers(
        proxy, head, list(headers)
    )


@settings(max_examples=examples(400))
@given(headers=header_lists, fingerprint=st.sampled_from(["", "abc123"]))
def test_the_private_and_personalized_heads_are_the_old_ones(
    headers: Headers, fingerprint: str
) -> None:
    decision = SimpleNamespace(fingerprint=fingerprint, seconds=0.00123)
    assert respond._private(list(headers)) == old_private(list(headers))
    timing = respond._server_timing(decision.seconds)
    assert respond._personalized_headers(list(headers), decision, timing) == old_personalized(  # type: ignore[arg-type]
        list(headers), decision
    )


@settings(max_examples=examples(200))
@given(value=values)
def test_memoized_cache_control_and_vary_equal_the_uncached(value: bytes) -> None:
    for memoized in (respond._private_cache_control, respond._vary_tokens):
        assert memoized(value) == memoized.__wrapped__(value)  # type: ignore[attr-defined]
        assert memoized(value) == memoized.__wrapped__(value)  # type: ignore[attr-defined]


def test_the_memoized_values_are_keyed_by_the_whole_value() -> None:
    memoized = respond._private_cache_control
    memoized.cache_clear()
    assert memoized(b"public, max-age=60") == b"private, max-age=60"
    assert memoized(b"public, max-age=61") == b"private, max-age=61"  # another value: a miss
    assert memoized(b"no-store") == b"no-store"
    assert memoized.cache_info().misses == 3
    assert memoized(b"public, max-age=60") == b"private, max-age=60"
    assert memoized.cache_info().hits == 1
    assert respond._vary_tokens(b"Accept, Cookie") != respond._vary_tokens(b"Accept")
    assert memoized.cache_info().maxsize is not None  # bounded


# ------------------------------------------------------------- the upstream client


class _Shop:
    """A real upstream: each request's answer waits the delay its path names
    (``/wait/<ms>``) and carries a body of that path's own bytes."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                await asyncio.sleep(int(path.rsplit(b"/", 1)[1]) / 1000)
                body = path * (40_000 // len(path))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def _body(pool: UpstreamPool, path: bytes) -> bytes:
    response = await pool.request(b"GET", path, [(b"host", b"shop")])
    chunks = []
    while True:
        chunk, more = await response.read()
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


def test_the_read_timer_follows_each_wait_on_a_kept_connection() -> None:
    """One timer a connection: it must not fail a later wait on the same connection
    by the deadline of an earlier one, and it must still fail a wait past its own."""

    async def main() -> None:
        shop = _Shop()
        server = await asyncio.start_server(shop.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool("127.0.0.1", port, read_timeout=0.4)
        try:
            assert await _body(pool, b"/wait/0") == b"/wait/0" * (40_000 // 7)
            # Set at the first wait, the timer fires at its deadline while this one
            # waits (0.3 s after 0.25 s: past the first deadline, inside its own).
            await asyncio.sleep(0.25)
            assert await _body(pool, b"/wait/300") == b"/wait/300" * (40_000 // 9)
            with pytest.raises(UpstreamTimeout):
                await _body(pool, b"/wait/2000")
            assert await _body(pool, b"/wait/1") == b"/wait/1" * (40_000 // 7)
            assert shop.connections == 2  # the one that timed out was closed, not kept
        finally:
            pool.close()
            server.close()

    asyncio.run(main())


def test_connections_sharing_the_read_buffer_keep_their_own_bytes() -> None:
    async def main() -> None:
        shop = _Shop()
        server = await asyncio.start_server(shop.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool("127.0.0.1", port)
        try:
            paths = [b"/p%d/%d" % (i, i % 5) for i in range(24)]
            for _ in range(2):  # new connections, then kept ones
                bodies = await asyncio.gather(*(_body(pool, p) for p in paths))
                assert bodies == [p * (40_000 // len(p)) for p in paths]
            assert shop.connections == 24
        finally:
            pool.close()
            server.close()

    asyncio.run(main())


def test_a_request_written_first_is_answered_after_the_callers_own_work() -> None:
    """start() writes on a kept connection (None when there is none), finish() waits
    for the response (as send() would), abandon() closes the connection."""

    async def main() -> None:
        shop = _Shop()
        server = await asyncio.start_server(shop.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool("127.0.0.1", port, read_timeout=0.5)
        head = b"GET /a/20 HTTP/1.1\r\nhost: shop\r\n\r\n"
        try:
            assert pool.start(head, False) is None  # nothing kept yet
            assert await _body(pool, b"/a/0") == b"/a/0" * 10_000
            sent = pool.start(head, False)
            assert sent is not None
            await asyncio.sleep(0.05)  # the caller's own work, the upstream answering
            response = await pool.finish(sent)
            assert response.status == 200
            body = []
            while True:
                chunk, more = response.take() if response.ready else await response.read()
                body.append(chunk)
                if not more:
                    break
            assert b"".join(body) == b"/a/20" * 8000
            sent = pool.start(b"GET /slow/2000 HTTP/1.1\r\nhost: shop\r\n\r\n", False)
            assert sent is not None
            with pytest.raises(UpstreamTimeout):
                await pool.finish(sent)
            assert not sent.conn.usable  # closed, not kept
            assert await _body(pool, b"/b/0") == b"/b/0" * 10_000
            sent = pool.start(head, False)
            assert sent is not None
            sent.abandon()
            assert not sent.conn.usable
            assert await _body(pool, b"/c/0") == b"/c/0" * 10_000
            assert shop.connections == 3  # the first, the one after the timeout, after abandon
        finally:
            pool.close()
            server.close()

    asyncio.run(main())

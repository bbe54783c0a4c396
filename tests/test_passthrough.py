"""The passthrough below ASGI (edge/passthrough.py) against the ASGI path, byte for byte.

Two sidecars in this process, the same configuration (tracking off, no rules: the
passthrough's case), one serving through the fast path and one with it off
(``EdgeApp(fast=False)``: every request through the ASGI app, as before), in front of
one real upstream (tests/_upstream.py). Every request of the corpus (the transparency,
smuggling and fault cases of tests/test_proxy.py and tests/test_http1.py) goes to
both, and what the client receives must be the same bytes. Then what only a live
sidecar shows: a reload that turns tracking on leaves the fast path at the next
request; the access log line and the counters are the ASGI path's."""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import metrics
from edge.app import EdgeApp
from edge.config import Config
from edge.server import Limits, bind, make_server
from tests._hypothesis import examples
from tests._upstream import TestUpstream
from tests.test_http1 import CORPUS, _get, exchange

WAIT = 10.0
"""Longest a test waits for a server (a bound, not an assertion)."""
READ_TIMEOUT = 0.5
"""The sidecars' read_timeout: the upstream's /slow (1 s) gets the 504 page."""


@dataclass
class Pair:
    fast: int
    asgi: int
    fast_app: EdgeApp
    asgi_app: EdgeApp
    upstream: TestUpstream
    work: Path


def _config(upstream: str, work: Path, name: str) -> Config:
    (work / "rules").mkdir(exist_ok=True)
    return Config(
        upstream=upstream,
        track=False,
        rules=str(work / "rules"),
        store=f"sqlite:{work / name}.db",
        secret="test-secret",
        read_timeout=READ_TIMEOUT,
        connect_timeout=1.0,
    )


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    import uvloop

    upstream = TestUpstream(slow_seconds=1.0).start()
    work = Path(tempfile.mkdtemp(prefix="edge-passthrough-"))
    fast_app = EdgeApp(_config(upstream.url, work, "fast"))
    asgi_app = EdgeApp(_config(upstream.url, work, "asgi"), fast=False)
    assert fast_app.passthrough is not None and asgi_app.passthrough is None
    socks = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
    servers = [
        make_server(app, port=sock.getsockname()[1], graceful_timeout=1, limits=Limits())
        for app, sock in zip((fast_app, asgi_app), socks, strict=True)
    ]

    async def main() -> None:
        await asyncio.gather(*(s.serve([sock]) for s, sock in zip(servers, socks, strict=True)))

    thread = threading.Thread(target=lambda: uvloop.run(main()), daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not all(s.started for s in servers):
        assert time.monotonic() < deadline, "the sidecars did not start"
        time.sleep(0.02)
    yield Pair(
        socks[0].getsockname()[1], socks[1].getsockname()[1], fast_app, asgi_app, upstream, work
    )
    for server in servers:
        server.should_exit = True
    thread.join(WAIT)
    upstream.stop()


_ID: Final = re.compile(rb"[0-9a-f]{16}")


def _masked(reply: bytes) -> bytes:
    """*reply* with the request ids the sidecar made (16 hex digits) masked: the one
    thing a client can tell apart between two runs of the same request."""
    return _ID.sub(b"<id>", reply)


RID = b"X-Request-Id: corpus-1"

PROXY_CORPUS: dict[str, bytes] = {
    "page": _get("/page", RID, b"Accept: text/html", b"Connection: close"),
    "page-kept-alive": _get("/page", RID)
    + _get("/page", RID)
    + _get("/page", RID, b"Connection: close"),
    "made-request-id": _get("/echo", b"Connection: close"),
    "bad-request-id": _get("/echo", b"X-Request-Id: bad id!", b"Connection: close"),
    "cookies": _get("/cookies", RID, b"Connection: close"),
    "redirect-self": _get("/redirect-self", RID, b"Connection: close"),
    "redirect-away": _get("/redirect-away", RID, b"Connection: close"),
    "redirect-relative": _get("/redirect-relative", RID, b"Connection: close"),
    "chunked": _get("/chunked", RID, b"Connection: close"),
    "gzip": _get("/gzip", RID, b"Accept-Encoding: gzip", b"Connection: close"),
    "large": _get("/large", RID, b"Connection: close"),
    "status-404": _get("/status/404", RID, b"Connection: close"),
    "status-204": _get("/status/204", RID) + _get("/status/304", RID, b"Connection: close"),
    "echo-forwarded": _get(
        "/echo?a=1",
        RID,
        b"X-Forwarded-For: 10.0.0.1",
        b"Via: 1.0 cdn",
        b"Connection: close, X-Drop",
        b"X-Drop: me",
        b"TE: trailers",
        b"Proxy-Authorization: Basic x",
    ),
    "eof-delimited": _get("/eof", RID, b"Connection: close"),
    "hop-by-hop": _get("/hop", RID, b"Connection: close"),
    "head": _get("/page", RID, b"Connection: close", method=b"HEAD"),
    "head-chunked": _get("/chunked", RID, b"Connection: close", method=b"HEAD"),
    "http10": _get("/page", RID, version=b"1.0"),
    "http10-chunked": _get("/chunked", RID, version=b"1.0"),
    "slow-504": _get("/slow", RID, b"Accept: application/json", b"Connection: close"),
    "reset-502": _get("/reset", RID, b"Connection: close"),
    "truncated": _get("/truncated", RID, b"Connection: close"),
    "pipelined": _get("/page", RID)
    + _get("/chunked", RID)
    + _get("/status/204", RID)
    + _get("/echo", RID, b"Connection: close"),
    "edge-space": _get("/_edge/healthz", RID, b"Connection: close"),
    "edge-space-encoded": _get("/%5Fedge/healthz", RID, b"Connection: close"),
    "post": b"POST /echo HTTP/1.1\r\nHost: a\r\nX-Request-Id: c\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nhello",
    "get-with-length-0": b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Request-Id: c\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n",
    "expect-without-body": _get("/echo", RID, b"Expect: 100-continue", b"Connection: close"),
}


KEPT_OPEN: Final = {"app-closes"}
"""tests/test_http1.py's requests that only its app's answer closes (the shop keeps them)."""


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [*PROXY_CORPUS, *(f"http1:{n}" for n in CORPUS if n not in KEPT_OPEN)]
)
def test_the_fast_path_answers_as_the_asgi_path_byte_for_byte(pair: Pair, name: str) -> None:
    request = CORPUS[name[6:]] if name.startswith("http1:") else PROXY_CORPUS[name]
    fast = exchange(pair.fast, request)
    asgi = exchange(pair.asgi, request)
    assert fast, "no answer"
    assert _masked(fast) == _masked(asgi)


@pytest.mark.slow
def test_the_fast_path_serves_and_counts(pair: Pair) -> None:
    """The fast path is the one serving (the ASGI path's app is never called for it),
    and it counts what the ASGI path counts."""
    called = []
    respond = pair.fast_app.respond
    original = type(respond).__call__

    async def spy(self: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["path"])
        await original(self, scope, receive, send)

    type(respond).__call__ = spy  # type: ignore[method-assign]
    try:
        before = metrics.REQUESTS["passthrough"].value
        reply = exchange(pair.fast, _get("/page", RID, b"Connection: close"))
        posted = exchange(
            pair.fast,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        )
    finally:
        type(respond).__call__ = original  # type: ignore[method-assign]
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"x-request-id: corpus-1\r\n" in reply
    assert posted.startswith(b"HTTP/1.1 200 OK\r\n")
    assert called == ["/echo"], "a request with a body goes the ASGI way, a GET does not"
    assert metrics.REQUESTS["passthrough"].value - before == 2


@pytest.mark.slow
def test_a_reload_that_turns_tracking_on_leaves_the_fast_path(pair: Pair) -> None:
    app = pair.fast_app
    assert app.passthrough is not None and app.passthrough.wants("/page")
    loop_config = msgspec.structs.replace(app.config, track=True)
    app.reload(loop_config)
    try:
        assert not app.passthrough.wants("/page")
        reply = exchange(pair.fast, _get("/page", RID, b"Accept: text/html", b"Connection: close"))
        # tracked now: a first visit gets the visitor cookie (the ASGI path's work)
        assert b"\r\nset-cookie: " in reply.lower().split(b"\r\n\r\n")[0] + b"\r\n"
    finally:
        app.reload(msgspec.structs.replace(app.config, track=False))
    assert app.passthrough.wants("/page")
    assert not app.passthrough.wants("/_edge/healthz") and not app.passthrough.wants("/_edge")


@pytest.mark.slow
def test_the_access_log_line_is_the_asgi_paths(pair: Pair, tmp_path: Path) -> None:
    lines = {}
    for name, app, port in (
        ("fast", pair.fast_app, pair.fast),
        ("asgi", pair.asgi_app, pair.asgi),
    ):
        path = tmp_path / f"{name}.log"
        config = msgspec.structs.replace(app.config, access_log="json", access_log_file=str(path))
        app.reload(config)
        try:
            exchange(port, _get("/page", RID, b"Connection: close"))
            exchange(port, _get("/status/404", RID, b"Connection: close"))
            exchange(port, _get("/reset", RID, b"Connection: close"))
        finally:
            app.reload(msgspec.structs.replace(app.config, access_log="off"))
        records = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
        for record in records:
            del record["time"], record["duration_ms"]
            record.pop("upstream_ms", None)
        lines[name] = records
    assert len(lines["fast"]) == 3
    assert lines["fast"] == lines["asgi"]


paths = st.sampled_from(
    ["/page", "/echo", "/chunked", "/status/404", "/status/204", "/eof", "/hop", "/redirect-self"]
)
lines_st = st.lists(
    st.sampled_from(
        [
            RID,
            b"Accept: text/html",
            b"Connection: close",
            b"Connection: keep-alive",
            b"X-Forwarded-For: 1.2.3.4",
            b"X-Forwarded-Proto: https",
            b"Host: other.test",
            b"Via: 1.1 x",
            b"Cookie: a=b",
            b"Expect: 100-continue",
            b"Upgrade: websocket",
            b"Content-Length: 0",
        ]
    ),
    max_size=5,
)


@pytest.mark.slow
@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    requests=st.lists(
        st.tuples(
            paths, lines_st, st.sampled_from([b"GET", b"HEAD"]), st.sampled_from([b"1.1", b"1.0"])
        ),
        min_size=1,
        max_size=4,
    )
)
def test_random_request_runs_answer_alike(pair: Pair, requests: list[Any]) -> None:
    """A run of pipelined requests, their heads drawn from what the proxy acts on."""
    data = b"".join(
        _get(path, *extra, method=method, version=version)
        for path, extra, method, version in requests
    ) + _get("/echo", RID, b"Connection: close")
    assert _masked(exchange(pair.fast, data)) == _masked(exchange(pair.asgi, data))

"""The HTTP/1.1 server protocol (edge/http1.py) on the wire.

Byte for byte against uvicorn's own httptools protocol (the one it replaced), serving
the same ASGI app in this process, for a corpus of requests: well-formed ones of every
framing, pipelined ones, malformed and smuggling ones, and apps that fail. Then what
only ours does (disconnects reaching the app, back-pressure both ways), and a fuzz of
a real ``edge serve`` with arbitrary and mutated request bytes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.http1 import DRAIN_LIMIT, MAX_PIPELINED
from edge.server import Limits, bind, make_server
from tests._hypothesis import examples
from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, start_edge

WAIT = 10.0
"""Longest a test waits for a server to answer or close (a bound, not an assertion)."""


@dataclass
class Seen:
    """What the test app saw: the messages ``receive`` returned, by request path."""

    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    done: dict[str, threading.Event] = field(default_factory=dict)

    def event(self, path: str) -> threading.Event:
        return self.done.setdefault(path, threading.Event())


def _echo_body(scope: dict[str, Any], body: bytes) -> bytes:
    lines = [
        f"{scope['method']} {scope['path']!r} {scope['raw_path']!r} {scope['query_string']!r}",
        f"http/{scope['http_version']} {scope['scheme']} root={scope['root_path']!r}",
        *(f"{n!r}: {v!r}" for n, v in scope["headers"]),
        f"body {len(body)} {body[:64]!r}",
    ]
    return "\n".join(lines).encode()


def shop_app(seen: Seen) -> Any:
    """A plain ASGI app with one path per framing or failure the server must frame."""

    async def read_all(receive: Any) -> bytes:
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return body
            body += message["body"]
            if not message["more_body"]:
                return body

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]

        async def start(status: int, *headers: tuple[bytes, bytes]) -> None:
            await send({"type": "http.response.start", "status": status, "headers": list(headers)})

        async def body(data: bytes, more: bool = False) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        if path == "/chunked":
            await start(200, (b"Content-Type", b"text/plain"))
            for part in (b"first ", b"second ", b"third"):
                await body(part, more=True)
                await asyncio.sleep(0)
            await body(b"")
        elif path in ("/204", "/304"):
            await start(int(path[1:]), (b"ETag", b'"v1"'))
            await body(b"")
        elif path == "/late":  # the body a turn (and more) after the head
            await start(200, (b"Content-Length", b"4"))
            await asyncio.sleep(0.01)
            await body(b"late")
        elif path == "/stream":  # the body only once the test has read the head
            await start(200, (b"Content-Type", b"text/event-stream"))
            await asyncio.get_running_loop().run_in_executor(None, seen.event(path).wait, WAIT)
            await body(b"data: 1\n\n")
        elif path == "/close":
            await start(200, (b"Content-Length", b"2"), (b"Connection", b"Close"))
            await body(b"ok")
        elif path == "/bad-header":
            await start(200, (b"X-Split", b"a\r\nSet-Cookie: evil=1"))
            await body(b"")
        elif path == "/bad-name":
            await start(200, (b"X Split", b"a"))
            await body(b"")
        elif path == "/fail":
            raise RuntimeError("the test app fails before its response")
        elif path == "/fail-late":
            await start(200, (b"Content-Length", b"10"))
            raise RuntimeError("the test app fails after its head")
        elif path == "/nothing":
            return
        elif path == "/incomplete":
            await start(200, (b"Content-Length", b"10"))
            await body(b"12345", more=True)
        elif path == "/short":
            await start(200, (b"Content-Length", b"10"))
            await body(b"12345")
        elif path == "/both":
            await start(200, (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked"))
            await body(b"abc")
        elif path == "/big":  # 16 MB in 256 KB chunks: back-pressure
            await start(200, (b"Content-Length", b"%d" % (64 * 262144)))
            for i in range(64):
                seen.sent[path] = i + 1  # (before: the last is counted before the close)
                await body(b"x" * 262144, more=i < 63)
        elif path == "/wait":  # reads its (empty) body, then waits for the client to leave
            got = seen.messages.setdefault(path, [])
            got.append(await receive())
            got.append(await receive())
            seen.event(path).set()
        elif path == "/read-later":  # reads the body only after a while
            await asyncio.sleep(STRICT * 2)
            data = await read_all(receive)
            await start(200, (b"Content-Length", b"%d" % len(data)))
            await body(data)
        elif path == "/unread":  # answers without reading the body
            await start(200, (b"Content-Length", b"2"))
            await body(b"no")
        elif path == "/slow-reader":  # reads nothing until told
            got = seen.messages.setdefault(path, [])
            await asyncio.get_running_loop().run_in_executor(None, seen.event(path).wait, WAIT)
            data = await read_all(receive)
            got.append({"type": "http.request", "body": data})
            await start(200, (b"Content-Length", b"%d" % len(str(len(data)))))
            await body(str(len(data)).encode())
        else:
            data = await read_all(receive)
            out = _echo_body(scope, data)
            await start(
                200, (b"Content-Type", b"text/plain"), (b"Content-Length", b"%d" % len(out))
            )
            await body(out)

    return app


@dataclass
class Servers:
    ours: int
    theirs: int
    seen: Seen
    strict: int
    """Ours with body_timeout STRICT (seconds)."""


STRICT = 1.0


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """The test app served by edge's server (ours) and by uvicorn's httptools protocol
    (theirs), both on uvloop in one thread of this process, with the same settings."""
    import uvloop

    seen = Seen()
    app = shop_app(seen)
    ours_sock, theirs_sock = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
    ours = make_server(app, port=ours_sock.getsockname()[1], graceful_timeout=1, limits=Limits())
    strict_sock = bind("127.0.0.1", 0)
    strict = make_server(
        app,
        port=strict_sock.getsockname()[1],
        graceful_timeout=1,
        limits=Limits(body_timeout=STRICT),
    )
    theirs = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=theirs_sock.getsockname()[1],
            loop="none",
            http="httptools",
            ws="none",
            lifespan="on",
            server_header=False,
            date_header=False,
            proxy_headers=False,
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=1,
        )
    )
    theirs.capture_signals = ours.capture_signals  # type: ignore[method-assign]

    async def main() -> None:
        await asyncio.gather(
            ours.serve([ours_sock]), theirs.serve([theirs_sock]), strict.serve([strict_sock])
        )

    thread = threading.Thread(target=lambda: uvloop.run(main()), daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not (ours.started and theirs.started and strict.started):
        assert time.monotonic() < deadline, "the servers did not start"
        time.sleep(0.02)
    yield Servers(
        ours_sock.getsockname()[1], theirs_sock.getsockname()[1], seen, strict_sock.getsockname()[1]
    )
    ours.should_exit = theirs.should_exit = strict.should_exit = True
    thread.join(WAIT)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _until_closed(sock: socket.socket) -> bytes:
    """What *sock* receives until the server closes it (bounded by WAIT)."""
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def exchange(port: int, request: bytes) -> bytes:
    """Send *request* and read until the server closes."""
    with _connect(port) as sock:
        sock.sendall(request)
        return _until_closed(sock)


def _get(path: str, *extra: bytes, method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    lines = [method + b" " + path.encode() + b" HTTP/" + version, b"Host: shop.test", *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


CLOSE = b"Connection: close"

CORPUS: dict[str, bytes] = {
    "get": _get("/echo?q=1&r=%C3%A9", b"Accept: */*", CLOSE),
    "percent-path": _get("/caf%C3%A9/a%2Fb", CLOSE),
    "absolute-form": _get("http://shop.test/echo?x=1", CLOSE),
    "fragment": _get("/echo#top", CLOSE),
    "double-slash": _get("//echo//x?a?b", CLOSE),
    "asterisk": _get("*", CLOSE, method=b"OPTIONS"),
    "header-case-and-space": _get(
        "/echo", b"X-Mixed-Case:  padded \t ", b"x-dup: 1", b"X-Dup: 2", CLOSE
    ),
    "head": _get("/echo", CLOSE, method=b"HEAD"),
    "head-chunked": _get("/chunked", CLOSE, method=b"HEAD"),
    "chunked-response": _get("/chunked", CLOSE),
    "204": _get("/204", CLOSE),
    "304": _get("/304", CLOSE),
    "late-body": _get("/late", CLOSE),
    "app-closes": _get("/close"),
    "post-length": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    "post-chunked": (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    ),
    "expect-continue": (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nabc"
    ),
    "unread-body": (
        b"POST /unread HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + _get("/echo", CLOSE)
    ),
    "pipelined": _get("/echo?1")
    + _get("/chunked")
    + _get("/204")
    + _get("/late")
    + _get("/echo?5", CLOSE),
    "pipelined-after-close": _get("/echo", CLOSE) + _get("/echo?never"),
    "http10": _get("/echo", version=b"1.0"),
    "http10-keep-alive": _get("/echo", b"Connection: keep-alive", version=b"1.0"),
    "http10-head": _get("/echo", method=b"HEAD", version=b"1.0"),
    "upgrade-unsupported": _get("/echo", b"Connection: Upgrade, close", b"Upgrade: foo/1"),
    "app-fails": _get("/fail", CLOSE),
    "app-fails-after-head": _get("/fail-late", CLOSE),
    "app-answers-nothing": _get("/nothing", CLOSE),
    "app-leaves-body-incomplete": _get("/incomplete", CLOSE),
    "app-body-short": _get("/short", CLOSE),
    "app-length-and-chunked": _get("/both", CLOSE),
    "app-splits-a-header": _get("/bad-header", CLOSE),
    "app-bad-header-name": _get("/bad-name", CLOSE),
    # malformed and smuggling
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "no-version": b"GET /\r\n\r\n",
    "bad-version": _get("/echo", version=b"2.7"),
    "space-in-name": b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
    "length-and-chunked": (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /status/418 HTTP/1.1\r\nHost: a\r\n\r\n"
    ),
    "two-lengths": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "negative-length": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "bad-chunk-size": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunked-not-last": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "bare-lf": b"GET /echo HTTP/1.1\nHost: a\nConnection: close\n\n",
    "nul-in-target": b"GET /ec\x00ho HTTP/1.1\r\nHost: a\r\n\r\n",
    "non-ascii-target": b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "control-in-value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n",
    "bad-method": b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_server_answers_as_uvicorn_byte_for_byte(servers: Servers, name: str) -> None:
    request = CORPUS[name]
    ours = exchange(servers.ours, request)
    theirs = exchange(servers.theirs, request)
    assert ours == theirs, f"{name}: ours {ours[:600]!r}\n\ntheirs {theirs[:600]!r}"


def test_the_corpus_covers_what_it_names(servers: Servers) -> None:
    """The corpus answers are what its names say (so that agreeing with uvicorn is not
    agreeing on nothing)."""
    replies = {name: exchange(servers.ours, CORPUS[name]) for name in CORPUS}
    for name in ("garbage", "obs-fold", "length-and-chunked", "two-lengths", "bad-chunk-size"):
        assert replies[name].startswith(b"HTTP/1.1 400 Bad Request\r\n"), name
    assert replies["pipelined"].count(b"HTTP/1.1 200 OK") == 4
    assert replies["pipelined"].count(b"HTTP/1.1 204 No Content") == 1
    assert replies["expect-continue"].startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert replies["post-chunked"].endswith(b"body 11 b'hello world'")
    assert b"transfer-encoding: chunked\r\n" in replies["chunked-response"]
    assert replies["head"].endswith(b"\r\n\r\n") and b"content-length: " in replies["head"]
    assert replies["app-fails"].startswith(b"HTTP/1.1 500 ")
    assert replies["app-splits-a-header"] == b""  # refused whole, never split
    assert b"connection: close" in replies["http10"]
    assert replies["pipelined-after-close"].count(b"HTTP/1.1 ") == 1


def test_a_client_leaving_reaches_the_app_as_http_disconnect(servers: Servers) -> None:
    with _connect(servers.ours) as sock:
        sock.sendall(_get("/wait"))
        time.sleep(0.1)
    assert servers.seen.event("/wait").wait(WAIT)
    # (on a loaded machine the app may start after the client left: then both say so)
    got = [m["type"] for m in servers.seen.messages["/wait"]]
    assert got in (["http.request", "http.disconnect"], ["http.disconnect"] * 2), got


def test_a_head_goes_out_without_waiting_for_the_body(servers: Servers) -> None:
    """A head is held for the first body bytes only until the loop's next turn: a stream
    whose first event comes later gets its head at once."""
    with _connect(servers.ours) as sock:
        sock.sendall(_get("/stream", CLOSE))
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            chunk = sock.recv(1)
            assert chunk, head
            head += chunk
        assert not servers.seen.event("/stream").is_set()  # the body had not been sent
        servers.seen.event("/stream").set()
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
    assert rest == b"9\r\ndata: 1\n\n\r\n0\r\n\r\n"


def test_a_client_not_reading_holds_the_app_back(servers: Servers) -> None:
    """Back-pressure on the response: the app's send waits while the client reads
    nothing (the socket buffers fill), and the whole body arrives once it reads."""
    with _connect(servers.ours) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(_get("/big", CLOSE))
        time.sleep(0.5)
        held_at = servers.seen.sent.get("/big", 0)
        assert held_at < 64  # 16 MB do not fit in the buffers: the app waits
        total = 0
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    assert servers.seen.sent["/big"] == 64
    assert total > 64 * 262144  # the head and the whole body


def test_a_client_reading_none_of_a_response_is_dropped_at_body_timeout(
    servers: Servers,
) -> None:
    """Back-pressure holds the app while the client reads nothing; without a bound a
    client that never reads held the connection and the app's task for ever. After
    body_timeout without a byte read it is dropped, and the app's sends end."""
    with _connect(servers.strict) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(_get("/big", CLOSE))
        time.sleep(STRICT * 4)  # (reading nothing meanwhile)
        total = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                total += len(chunk)
    assert total < 64 * 262144  # cut, not held until the client read it all
    deadline = time.monotonic() + WAIT
    while servers.seen.sent.get("/big") != 64:  # the app's sends returned
        assert time.monotonic() < deadline, servers.seen.sent
        time.sleep(0.02)


def test_a_client_waiting_for_100_continue_is_not_timed_out(servers: Servers) -> None:
    """With ``Expect: 100-continue`` the client sends its body once the app asks for it:
    the time before that is the app's, not a stalled body (it got 408)."""
    with _connect(servers.strict) as sock:
        sock.sendall(
            b"POST /read-later HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n"
        )
        got = b""
        while not got.endswith(b"\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        assert got == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        reply = _until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok"), reply


def test_an_app_not_reading_holds_the_client_back(servers: Servers) -> None:
    """Back-pressure on the request: while the app reads nothing, the server stops
    reading (the client's sends block) instead of buffering the body; then it all
    arrives."""
    size = 32 * 1024 * 1024
    with _connect(servers.ours) as sock:
        sock.sendall(b"POST /slow-reader HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        sock.settimeout(0.5)
        piece = b"y" * 65536
        sent = 0
        try:
            while sent < size:
                sent += sock.send(piece)
        except TimeoutError:
            pass
        assert sent < size  # the server stopped reading
        servers.seen.event("/slow-reader").set()
        sock.settimeout(WAIT)
        sock.sendall(piece * ((size - sent) // len(piece)) + piece[: (size - sent) % len(piece)])
        reply = sock.recv(65536)
    assert reply.endswith(b"\r\n\r\n%d" % size)


def _answer_then_more(port: int, first: bytes, then: bytes) -> bytes:
    """Send *first*, read one whole response head, send *then*, read until closed."""
    with _connect(port) as sock:
        sock.sendall(first)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
        with contextlib.suppress(OSError):  # (closed already: refused)
            sock.sendall(then)
        return reply + _until_closed(sock)


def test_an_unread_body_is_dropped_up_to_a_bound_then_the_connection_closes(
    servers: Servers,
) -> None:
    """The app answered without reading the body: the body is read and dropped so the
    connection can serve the next request, up to DRAIN_LIMIT bytes; a longer one closes
    the connection after the answer (a client cannot keep it reading for ever)."""
    for size, kept in ((DRAIN_LIMIT // 2, True), (3 * DRAIN_LIMIT, False)):
        head = b"POST /unread HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size
        try:
            then = b"x" * size + _get("/echo?after", CLOSE)
            reply = _answer_then_more(servers.ours, head, then)
        except ConnectionResetError:  # (closed with the client's bytes unread: a reset)
            reply = b"reset"
        assert (b"/echo" in reply) is kept, (size, reply[-300:])


def test_trailer_fields_never_become_request_headers(servers: Servers) -> None:
    """A chunked body's trailer is not the head: a trailer ``Cookie`` or
    ``X-Forwarded-For`` must not reach the app as a request header (uvicorn appends
    them to the scope's headers, read by an app after the body)."""
    request = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Forwarded-For: 203.0.113.9\r\nCookie: visitor=someone-else\r\n\r\n"
    )
    reply = exchange(servers.ours, request + _get("/echo?next", CLOSE))
    assert reply.count(b"HTTP/1.1 200 OK") == 2, reply
    assert b"body 3 b'abc'" in reply
    assert b"forwarded" not in reply and b"someone-else" not in reply, reply


def test_an_early_answer_to_an_expect_100_continue_request_closes_the_connection(
    servers: Servers,
) -> None:
    """The app answers without reading, so no 100 Continue went out: the client may send
    its body or not, and the server cannot tell a request from body bytes after it. A
    next "request" sent in the body's place must not be served."""
    smuggled = _get("/echo?smuggled")
    head = (
        b"POST /unread HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(smuggled)
    )
    reply = _answer_then_more(servers.ours, head, smuggled)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nconnection: close\r\n" in reply
    assert reply.endswith(b"\r\n\r\nno"), reply  # and nothing after: closed
    # a client that sent its body along keeps its connection
    reply = exchange(servers.ours, head + smuggled + _get("/echo?next", CLOSE))
    assert reply.count(b"HTTP/1.1 200 OK") == 2, reply


def test_an_upgrade_request_with_a_body_is_refused_not_split(servers: Servers) -> None:
    """llhttp stops at an upgrade request's head and leaves its body unread: served as
    a plain request, the body's bytes would be parsed as the next request (a front that
    forwards ``Upgrade`` sees one request, we two). It gets 400 and the connection
    closes; an upgrade without a body is served, then the connection closes."""
    smuggled = _get("/echo?smuggled")
    head = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n"
        b"Content-Length: %d\r\n\r\n" % len(smuggled)
    )
    reply = _answer_then_more(servers.ours, head, smuggled)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    assert b"smuggled" not in reply
    chunked = head.replace(b"Content-Length: 48", b"Transfer-Encoding: chunked")
    assert exchange(servers.ours, chunked + b"0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    plain = _get("/echo", b"Connection: Upgrade", b"Upgrade: foo/1")
    reply = _answer_then_more(servers.ours, plain, _get("/echo?smuggled"))
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nconnection: close\r\n" in reply
    assert b"smuggled" not in reply


def test_a_request_without_one_host_is_refused(servers: Servers) -> None:
    """RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with two Host
    lines (the shop might read the one the sidecar did not), gets 400 and the
    connection closes, with what followed unread; HTTP/1.0 may leave Host out (uvicorn
    serves all of these)."""
    no_host = b"GET /echo HTTP/1.1\r\nAccept: */*\r\n\r\n"
    two_hosts = _get("/echo", b"Host: other.test")
    for request in (no_host, two_hosts, _get("/echo", b"Host: shop.test", version=b"1.0")):
        reply = exchange(servers.ours, request + _get("/echo?smuggled"))
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
        assert b"\r\nconnection: close\r\n" in reply and b"smuggled" not in reply, reply
    body = b"x" * 10
    post = b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n" + body
    assert exchange(servers.ours, post).startswith(b"HTTP/1.1 400 ")
    one_zero = b"GET /echo HTTP/1.0\r\n\r\n"
    assert exchange(servers.ours, one_zero).startswith(b"HTTP/1.1 200 OK\r\n")
    assert exchange(servers.ours, _get("/echo", CLOSE)).startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_malformed_request_behind_one_being_answered_closes_after_its_answer(
    servers: Servers,
) -> None:
    """uvicorn writes its 400 at once, in place of (or inside) the answer to the request
    before: the client reads "400" for a good request. That one is answered whole,
    saying "connection: close", and the connection closes."""
    malformed = b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"
    for path in ("/echo", "/late", "/chunked"):
        reply = exchange(servers.ours, _get(path) + _get("/echo?queued") + malformed)
        assert reply.count(b"HTTP/1.1 ") == 2 and b" 400 " not in reply, reply
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
        last = reply.rsplit(b"HTTP/1.1 ", 1)[1]
        assert b"\r\nconnection: close\r\n" in last and last.endswith(b"body 0 b''"), reply
    # with nothing being answered, it is still 400
    assert exchange(servers.ours, malformed).startswith(b"HTTP/1.1 400 ")


def test_pipelined_requests_queue_up_to_a_bound_then_the_connection_closes(
    servers: Servers,
) -> None:
    """Requests parsed ahead of their answers cost memory (a scope each): one read of
    tiny pipelined requests queued thousands, and each answer let another read in. The
    first MAX_PIPELINED behind the one being answered are answered, the last with
    "connection: close"; what came after them is not read. Fewer are all answered."""
    many = b"".join(_get(f"/echo?{i}") for i in range(3 * MAX_PIPELINED))
    reply = exchange(servers.ours, _get("/late") + many)
    answered = MAX_PIPELINED + 1
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == answered, reply[-300:]
    assert reply.count(b"\r\nconnection: close\r\n") == 1
    assert reply.rsplit(b"HTTP/1.1 200 OK", 1)[1].count(b"connection: close") == 1
    assert b"b'%d'" % (MAX_PIPELINED - 1) in reply and b"b'%d'" % MAX_PIPELINED not in reply
    # as many as the bound, in one packet, are all answered and the connection stays
    with _connect(servers.ours) as sock:
        sock.sendall(_get("/late") + b"".join(_get(f"/echo?{i}") for i in range(MAX_PIPELINED - 1)))
        reader = sock.makefile("rb")
        for _ in range(MAX_PIPELINED):
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = reader.readline()
                assert line, head
                head += line
            assert b"connection: close" not in head
            reader.read(int(re.search(rb"content-length: (\d+)", head)[1]))  # type: ignore[index]
        sock.sendall(_get("/echo?after", CLOSE))
        assert reader.read().startswith(b"HTTP/1.1 200 OK\r\n")


# The fuzz: a real edge serve, arbitrary and mutated request bytes.

FUZZ_TIMEOUT = 0.5
"""header_timeout, body_timeout and keepalive_timeout of the fuzzed sidecar (seconds):
every connection ends soon whatever was sent."""


@pytest.fixture(scope="module")
def fuzzed(upstream: TestUpstream) -> Iterator[EdgeProcess]:
    proc = start_edge(
        upstream.url,
        env={
            "EDGE_TRACK": "false",
            "EDGE_MAX_HEADER_BYTES": "4096",
            "EDGE_HEADER_TIMEOUT": str(FUZZ_TIMEOUT),
            "EDGE_BODY_TIMEOUT": str(FUZZ_TIMEOUT),
            "EDGE_KEEPALIVE_TIMEOUT": str(FUZZ_TIMEOUT),
        },
    )
    yield proc
    proc.stop()
    log = proc.proc.stderr.read().decode() if proc.proc.stderr else ""
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-2000:]


SEEDS = [
    _get("/page"),
    _get("/page", b"Cookie: a=b; c=d", b"Accept: text/html") + _get("/status/404", CLOSE),
    b"POST /echo HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    _get("/chunked", version=b"1.0"),
    _get("/_edge/healthz"),
]

_STATUS = re.compile(rb"HTTP/1\.1 [1-5][0-9][0-9] [^\r\n]*\r\n")


def _mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(seed)
    for where, cut, insert in edits:
        at = where % (len(out) + 1)
        out[at : at + cut] = insert
    return bytes(out)


requests = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _mutate,
        st.sampled_from(SEEDS),
        st.lists(
            st.tuples(
                st.integers(0, 400),
                st.integers(0, 4),
                st.one_of(
                    st.binary(max_size=6),
                    st.sampled_from(
                        [
                            b"\r\n",
                            b"\n",
                            b" ",
                            b":",
                            b"\x00",
                            b"Content-Length: 9\r\n",
                            b"chunked",
                            b"0\r\n\r\n",
                        ]
                    ),
                ),
            ),
            max_size=4,
        ),
    ),
)


def _well_formed(reply: bytes) -> bool:
    """Whether *reply* is a run of whole responses (the last may be cut only where the
    server closed mid-body, which a client sees as a broken response, not a wrong one)."""
    at = 0
    while at < len(reply):
        line = _STATUS.match(reply, at)
        if line is None:
            return False
        end = reply.find(b"\r\n\r\n", at)
        if end < 0:
            return False
        head = reply[at:end].lower()
        at = end + 4
        if head.startswith(b"http/1.1 100 "):
            continue
        length = re.search(rb"\r\ncontent-length: ([0-9]+)", head)
        if length:
            at += int(length.group(1))
        elif b"\r\ntransfer-encoding: chunked" in head:
            while True:
                size_end = reply.find(b"\r\n", at)
                if size_end < 0:
                    return True  # cut mid-body
                size = int(reply[at:size_end].split(b";")[0], 16)
                at = size_end + 2 + size + 2
                if size == 0:
                    break
        elif b"\r\nconnection: close" in head:
            return True
    return True


@pytest.mark.slow
@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(request=requests)
def test_fuzzed_requests_get_a_well_formed_answer_or_a_closed_connection(
    fuzzed: EdgeProcess, request: bytes
) -> None:
    if request.lstrip().upper().startswith(b"HEAD"):
        return  # (a HEAD answer's length names a body that is not there: not checked here)
    reply = b""
    with _connect(fuzzed.port) as sock:
        with contextlib.suppress(OSError):  # closed while sending: refused early
            sock.sendall(request)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
    assert fuzzed.proc.poll() is None, "the sidecar died"
    assert _well_formed(reply), reply[:400]

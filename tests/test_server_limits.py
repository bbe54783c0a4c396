"""The server under attack: request heads bounded in size and in time, idle and dripping
connections closed, a connection cap, HTTP/1.0 framing (issue 15). Through a real
``edge serve`` process, with raw sockets so every byte on the wire is the test's."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from edge.config import ConfigError, load_config
from edge.server import connection_limit
from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, start_edge

LIMIT = 8192
"""max_header_bytes of the sidecar under test."""
TIMEOUT = 2.0
"""header_timeout of the sidecar under test (seconds; a loaded machine can stall a
process for a second, and a fresh connection's first bytes must not look late)."""
KEEPALIVE = 5.0
"""keepalive_timeout of the sidecar under test (seconds)."""
WAIT = 10.0
"""Longest a test waits for the sidecar to answer or close (a bound, not an assertion)."""


@pytest.fixture(scope="module")
def guarded(upstream: TestUpstream) -> Iterator[EdgeProcess]:
    proc = start_edge(
        upstream.url,
        env={
            "EDGE_TRACK": "false",
            "EDGE_MAX_HEADER_BYTES": str(LIMIT),
            "EDGE_HEADER_TIMEOUT": str(TIMEOUT),
            "EDGE_BODY_TIMEOUT": str(TIMEOUT),
            "EDGE_KEEPALIVE_TIMEOUT": str(KEEPALIVE),
        },
    )
    yield proc
    proc.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout
    here fails the test: the server kept the connection open)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def _read_response(reader: BinaryIO) -> bytes:
    """One response with a Content-Length body from *reader* (the socket's buffered
    file: pipelined responses may arrive in one packet), leaving the connection open."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        assert line, f"closed before a whole head: {head!r}"
        head += line
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + reader.read(length)


def _request(path: str, version: str = "1.1", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: shop.test\r\n".encode() + extra + b"\r\n"


@pytest.mark.slow
def test_a_head_within_the_limit_is_served_one_over_it_gets_431_and_the_connection_closes(
    guarded: EdgeProcess,
) -> None:
    for size, expected in ((LIMIT - 500, b"HTTP/1.1 200 "), (LIMIT + 1, b"HTTP/1.1 431 ")):
        cookie = b"Cookie: big=" + b"x" * size + b"\r\nConnection: close\r\n"
        with _connect(guarded.port) as sock:
            sock.sendall(_request("/page", extra=cookie))
            reply = _read_until_closed(sock)
        assert reply.startswith(expected), reply[:200]
    assert b"connection: close" in reply.lower()
    # many small headers add up the same way
    many = b"".join(b"X-Tag-%d: %s\r\n" % (i, b"v" * 40) for i in range(LIMIT // 40))
    with _connect(guarded.port) as sock:
        sock.sendall(_request("/page", extra=many))
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 431 ")


@pytest.mark.slow
def test_a_head_that_never_ends_is_stopped_at_the_limit_not_buffered(
    guarded: EdgeProcess,
) -> None:
    """The 64 MB header of the issue: the sidecar answers 431 and closes while the client
    is still sending, long before the 64 MB are through; on a kept-alive connection too."""
    sent = 0
    with _connect(guarded.port) as sock:
        sock.sendall(_request("/page"))
        assert _read_response(sock.makefile("rb")).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /page HTTP/1.1\r\nHost: shop.test\r\nX-Huge: ")
        piece = b"a" * 65536
        with pytest.raises(OSError):  # broken pipe or reset: the server hung up
            while sent < 64 * 1024 * 1024:
                sock.sendall(piece)
                sent += len(piece)
        reply = _read_until_closed(sock) if sent else b""
    assert sent < 64 * 1024 * 1024
    # When the reset arrives before the 431 is read, the client may not see it; when it
    # does read, it is the 431.
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    # and the sidecar serves on
    with _connect(guarded.port) as sock:
        sock.sendall(_request("/page", extra=b"Connection: close\r\n"))
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


@pytest.mark.slow
def test_a_client_dripping_its_head_is_closed_at_header_timeout_with_408(
    guarded: EdgeProcess,
) -> None:
    head = _request("/page")
    dripped = 0
    with _connect(guarded.port) as sock:
        sock.settimeout(0.25)  # one byte every quarter second
        reply = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                sock.send(head[dripped % len(head) : dripped % len(head) + 1])
                dripped += 1
            except OSError:
                break
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
        else:
            pytest.fail(f"still open after {WAIT}s of dripping ({dripped} bytes)")
    assert dripped < len(head)  # it never got to send a whole head
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408 "), reply


def _post_head(length: int) -> bytes:
    return (
        b"POST /echo HTTP/1.1\r\nHost: shop.test\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


@pytest.mark.slow
def test_a_body_that_stalls_gets_408_at_body_timeout_and_the_connection_closes(
    guarded: EdgeProcess,
) -> None:
    """A client that announced 1,000 bytes and sent 10 holds a connection and an
    upstream request: at body_timeout without a byte, 408 and close."""
    with _connect(guarded.port) as sock:
        sock.sendall(_post_head(1000) + b"x" * 10)
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b"connection: close" in reply.lower()


@pytest.mark.slow
def test_a_body_that_keeps_coming_slowly_is_not_cut(guarded: EdgeProcess) -> None:
    """body_timeout bounds the time between two reads, not the whole upload: 24 bytes
    a quarter of a second apart (three times body_timeout in all) arrive whole."""
    body = b"abcdefghijklmnopqrstuvwx"
    with _connect(guarded.port) as sock:
        sock.sendall(_post_head(len(body)))
        for i in range(len(body)):
            time.sleep(TIMEOUT * 3 / len(body))
            sock.sendall(body[i : i + 1])
        reply = _read_response(sock.makefile("rb"))
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert b'"body_length": %d' % len(body) in reply


@pytest.mark.slow
def test_a_connection_that_sends_nothing_is_closed_silently(guarded: EdgeProcess) -> None:
    with _connect(guarded.port) as sock:
        assert _read_until_closed(sock) == b""  # no 408 to a client that asked nothing


@pytest.mark.slow
def test_a_kept_alive_connection_idles_for_keepalive_timeout_not_header_timeout(
    guarded: EdgeProcess,
) -> None:
    with _connect(guarded.port) as sock:
        sock.sendall(_request("/page"))
        assert _read_response(sock.makefile("rb")).startswith(b"HTTP/1.1 200 ")
        time.sleep(TIMEOUT * 1.5)  # idle past header_timeout, within keepalive_timeout
        sock.sendall(_request("/page"))
        assert _read_response(sock.makefile("rb")).startswith(b"HTTP/1.1 200 ")
        # then, left idle, it is closed (at keepalive_timeout)
        assert _read_until_closed(sock) == b""


@pytest.mark.slow
def test_pipelined_requests_in_one_packet_are_all_answered(guarded: EdgeProcess) -> None:
    with _connect(guarded.port) as sock:
        sock.sendall(_request("/page") + _request("/status/404") + _request("/page"))
        reader = sock.makefile("rb")
        replies = [_read_response(reader) for _ in range(3)]
    assert [r.split(b" ", 2)[1] for r in replies] == [b"200", b"404", b"200"]


@pytest.mark.slow
def test_a_client_leaving_with_pipelined_requests_unanswered_leaves_no_traceback(
    upstream: TestUpstream,
) -> None:
    """uvicorn tells only the newest pipelined request that the client left: the one
    being answered went on writing to the closed connection, a traceback each time."""
    proc = start_edge(upstream.url, env={"EDGE_TRACK": "false"})
    try:
        for _ in range(20):
            with _connect(proc.port) as sock:
                sock.sendall(_request("/page") + _request("/page") + _request("/page"))
                assert sock.recv(64).startswith(b"HTTP/1.1 200 ")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        with _connect(proc.port) as sock:  # and it serves on
            sock.sendall(_request("/page", extra=b"Connection: close\r\n"))
            assert _read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        proc.stop()
    log = proc.proc.stderr.read().decode() if proc.proc.stderr else ""
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-2000:]


@pytest.mark.slow
def test_an_http_1_0_client_gets_the_body_unchunked_and_the_connection_closed(
    guarded: EdgeProcess,
) -> None:
    """The upstream sends /chunked without Content-Length: HTTP/1.0 has no chunked
    coding (RFC 9112 §6.3), so the body is sent as is and ends with the connection."""
    with _connect(guarded.port) as sock:
        sock.sendall(_request("/chunked", version="1.0"))
        reply = _read_until_closed(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"first second third"

    # with Content-Length, unchanged; HTTP/1.1 clients still get chunked
    with _connect(guarded.port) as sock:
        sock.sendall(_request("/status/404", version="1.0"))
        reply = _read_until_closed(sock)
    assert b"content-length: 10" in reply.lower() and reply.endswith(b"\r\n\r\nstatus 404")
    with _connect(guarded.port) as sock:
        sock.sendall(_request("/chunked", extra=b"Connection: close\r\n"))
        reply = _read_until_closed(sock)
    assert b"transfer-encoding: chunked" in reply.lower()
    assert reply.endswith(b"\r\n0\r\n\r\n")


@pytest.mark.slow
def test_connections_over_max_connections_get_503_until_some_close(
    upstream: TestUpstream,
) -> None:
    proc = start_edge(
        upstream.url,
        env={"EDGE_TRACK": "false", "EDGE_MAX_CONNECTIONS": "4", "EDGE_HEADER_TIMEOUT": "2"},
    )
    try:
        idle = [_connect(proc.port) for _ in range(4)]
        try:
            with _connect(proc.port) as sock:
                sock.sendall(_request("/page", extra=b"Connection: close\r\n"))
                assert _read_until_closed(sock).startswith(b"HTTP/1.1 503 ")
            # the idle ones are closed at header_timeout, and requests pass again
            for sock in idle:
                assert _read_until_closed(sock) == b""
            with _connect(proc.port) as sock:
                sock.sendall(_request("/page", extra=b"Connection: close\r\n"))
                assert _read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in idle:
                sock.close()
    finally:
        proc.stop()


def test_the_connection_cap_follows_the_open_file_limit_unless_set() -> None:
    import resource

    assert connection_limit(50) == 50
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    derived = connection_limit(0)
    assert derived >= 32
    if soft != resource.RLIM_INFINITY:
        assert 2 * derived < soft  # two descriptors a connection, and some to spare


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EDGE_MAX_HEADER_BYTES", "100", "max_header_bytes must be at least 1024"),
        ("EDGE_HEADER_TIMEOUT", "0", "header_timeout must be a positive number"),
        ("EDGE_KEEPALIVE_TIMEOUT", "-1", "keepalive_timeout must be a positive number"),
        ("EDGE_MAX_CONNECTIONS", "-1", "max_connections must be 0"),
        ("EDGE_HEADER_TIMEOUT", "soon", "header_timeout (EDGE_HEADER_TIMEOUT)"),
        ("EDGE_BODY_TIMEOUT", "-1", "body_timeout must be a positive number"),
    ],
)
def test_bad_limits_are_refused_naming_the_setting(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(environ={name: value}, config_file=None)


def test_the_limits_have_safe_defaults() -> None:
    config = load_config(environ={})
    assert config.max_header_bytes == 65536
    assert config.header_timeout == 10.0
    assert config.keepalive_timeout == 75.0
    assert config.max_connections == 0

"""The proxy is transparent: through the sidecar, a client sees what the shop sent."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import socket
import threading
import time

import pytest

from tests._upstream import LARGE, PAGE, TestUpstream
from tests.conftest import EdgeProcess, Reply, fetch, free_port, start_edge

# Headers a proxy may add or must drop; everything else must match exactly (the
# request id goes back with every response: tests/test_access_log.py).
_PROXY_HEADERS = {"via", "connection", "keep-alive", "transfer-encoding", "date", "x-request-id"}


def end_to_end(reply: Reply) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in reply.headers if k.lower() not in _PROXY_HEADERS]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/page"),
        ("GET", "/gzip"),
        ("GET", "/cookies"),
        ("GET", "/redirect-away"),
        ("GET", "/redirect-relative"),
        ("GET", "/chunked"),
        ("GET", "/large"),
        ("HEAD", "/page"),
        ("HEAD", "/large"),
        ("HEAD", "/chunked"),
        ("GET", "/status/204"),
        ("GET", "/status/304"),
        ("GET", "/status/404"),
        ("GET", "/status/418"),
        ("GET", "/status/500"),
        ("GET", "/eof"),
        ("DELETE", "/status/204"),
        ("OPTIONS", "/status/404"),
        ("GET", "/nowhere?q=scarpe+donna&page=2"),
    ],
)
def test_response_equals_direct(
    upstream: TestUpstream, edge: EdgeProcess, method: str, path: str
) -> None:
    direct = fetch(upstream.port, path, method)
    proxied = fetch(edge.port, path, method)
    assert proxied.status == direct.status
    # The reason phrase is not compared: ASGI carries no reason, and clients ignore it
    # (RFC 9112 §4); the server sends the standard phrase for the code.
    assert proxied.body == direct.body
    assert end_to_end(proxied) == end_to_end(direct)
    assert proxied.header("via") == "1.1 shop-edge"


def test_bodies_are_the_real_ones(upstream: TestUpstream, edge: EdgeProcess) -> None:
    assert fetch(edge.port, "/page").body == PAGE
    gz = fetch(edge.port, "/gzip", headers={"Accept-Encoding": "gzip"})
    assert gz.header("content-encoding") == "gzip"
    assert gzip.decompress(gz.body) == PAGE  # still compressed: passed through, not re-coded
    assert fetch(edge.port, "/large").body == LARGE
    assert fetch(edge.port, "/chunked").body == b"first second third"
    assert fetch(edge.port, "/eof").body == b"until the end"


def test_several_set_cookie_headers_keep_their_order(edge: EdgeProcess) -> None:
    reply = fetch(edge.port, "/cookies")
    assert reply.all("set-cookie") == [
        "cart=p1:2; Path=/; HttpOnly",
        "session=abc; Path=/; Secure",
        "lang=it; Path=/",
    ]


def test_location_naming_the_upstream_is_made_public(edge: EdgeProcess) -> None:
    reply = fetch(edge.port, "/redirect-self", headers={"Host": "shop.example:8443"})
    assert reply.status == 302
    assert reply.header("location") == "http://shop.example:8443/cart?x=1"
    assert (
        fetch(edge.port, "/redirect-away").header("location") == "https://payments.example/checkout"
    )
    assert fetch(edge.port, "/redirect-relative").header("location") == "/cart"


def test_hop_by_hop_response_headers_are_dropped(edge: EdgeProcess) -> None:
    reply = fetch(edge.port, "/hop")
    names = {k.lower() for k, _ in reply.headers}
    assert "x-secret-hop" not in names  # named by Connection
    assert "keep-alive" not in names
    assert "proxy-authenticate" not in names
    assert reply.header("x-end-to-end") == "keep me"


def test_request_headers_forwarded_and_hop_by_hop_removed(
    upstream: TestUpstream, edge: EdgeProcess
) -> None:
    reply = fetch(
        edge.port,
        "/echo?a=1&b=%C3%A8",
        method="POST",
        headers={
            "Host": "shop.example",
            "Connection": "X-Private-Hop",
            "X-Private-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eA==",
            "X-Forwarded-For": "203.0.113.9",
            "Cookie": "cart=p1:1",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=b"product_id=p1001&qty=2",
    )
    seen = json.loads(reply.body)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert seen["method"] == "POST"
    assert seen["target"] == "/echo?a=1&b=%C3%A8"
    assert headers["host"] == "shop.example"  # preserved by default
    assert headers["cookie"] == "cart=p1:1"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "shop.example"
    assert headers["via"] == "1.1 shop-edge"
    for hop in ("x-private-hop", "keep-alive", "te", "proxy-authorization", "connection"):
        assert hop not in headers, hop
    assert seen["body_length"] == len(b"product_id=p1001&qty=2")


def test_large_upload_streams_through(edge: EdgeProcess) -> None:
    body = os.urandom(5 * 1024 * 1024)
    reply = fetch(
        edge.port,
        "/echo",
        method="PUT",
        body=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    seen = json.loads(reply.body)
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_upload_is_forwarded_chunked(edge: EdgeProcess) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        data = _read_response(sock)
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["body_length"] == 11
    assert body["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()


def test_keep_alive_client_many_requests(edge: EdgeProcess) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=5)
    for _ in range(50):
        conn.request("GET", "/page")
        assert conn.getresponse().read() == PAGE
    conn.close()


def test_rewrite_host_mode_sends_upstream_host(upstream: TestUpstream) -> None:
    proc = start_edge(upstream.url, env={"EDGE_UPSTREAM_HOST": "rewrite"})
    try:
        seen = json.loads(fetch(proc.port, "/echo", headers={"Host": "shop.example"}).body)
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers["host"] == f"127.0.0.1:{upstream.port}"
        assert headers["x-forwarded-host"] == "shop.example"
    finally:
        proc.stop()


def test_smuggling_both_lengths_is_rejected(upstream: TestUpstream, edge: EdgeProcess) -> None:
    before = len(upstream.received)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /status/418 HTTP/1.1\r\nHost: shop\r\n\r\n"
        )
        data = _read_response(sock)
    assert data.startswith(b"HTTP/1.1 400")
    time.sleep(0.2)
    assert len(upstream.received) == before  # nothing was forwarded


def test_edge_space_is_reserved(upstream: TestUpstream, edge: EdgeProcess) -> None:
    before = len(upstream.received)
    assert fetch(edge.port, "/_edge/healthz").status == 200
    ready = fetch(edge.port, "/_edge/readyz")
    assert ready.status == 200
    assert json.loads(ready.body)["checks"]["upstream"] == "ok"
    missing = fetch(edge.port, "/_edge/no-such-thing")
    assert missing.status == 404
    assert fetch(edge.port, "/_edge").status == 404
    assert len(upstream.received) == before
    # only the exact prefix is reserved
    assert fetch(edge.port, "/_edgewise").status == 404
    assert upstream.received[-1].target == "/_edgewise"


# --- failures ---------------------------------------------------------------


def _assert_clean_error_page(reply: Reply, status: int) -> None:
    assert reply.status == status
    text = reply.body.decode()
    assert "Traceback" not in text and "edge." not in text and "upstream" not in text.lower()
    assert reply.header("cache-control") == "no-store"


def test_upstream_refused_gives_502_page() -> None:
    proc = start_edge(f"http://127.0.0.1:{free_port()}")
    try:
        reply = fetch(proc.port, "/", headers={"Accept": "text/html"})
        _assert_clean_error_page(reply, 502)
        assert reply.header("content-type") == "text/html; charset=utf-8"
        assert "<h1>Bad Gateway</h1>" in reply.body.decode()
        as_json = fetch(proc.port, "/", headers={"Accept": "application/json"})
        _assert_clean_error_page(as_json, 502)
        assert json.loads(as_json.body)["error"] == "bad_gateway"
        ready = fetch(proc.port, "/_edge/readyz")
        assert ready.status == 503
        assert fetch(proc.port, "/_edge/healthz").status == 200
    finally:
        proc.stop()


def test_upstream_reset_gives_502(edge: EdgeProcess) -> None:
    _assert_clean_error_page(fetch(edge.port, "/reset"), 502)


def test_upstream_too_slow_gives_504(edge: EdgeProcess) -> None:
    reply = fetch(edge.port, "/slow", headers={"Accept": "text/html,application/xhtml+xml"})
    _assert_clean_error_page(reply, 504)
    assert "Gateway Timeout" in reply.body.decode()


def test_upstream_truncating_body_cuts_the_client_connection(edge: EdgeProcess) -> None:
    import http.client

    with pytest.raises(http.client.IncompleteRead):
        fetch(edge.port, "/truncated")
    assert fetch(edge.port, "/page").body == PAGE  # and the sidecar carries on


def test_upstream_garbage_gives_502() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def serve_garbage() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"this is not http\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=serve_garbage, daemon=True)
    thread.start()
    proc = start_edge(f"http://127.0.0.1:{port}")
    try:
        _assert_clean_error_page(fetch(proc.port, "/"), 502)
    finally:
        proc.stop()
        listener.close()


def test_sigterm_lets_in_flight_requests_finish(upstream: TestUpstream) -> None:
    proc = start_edge(upstream.url)
    result: dict[str, Reply] = {}

    def slow_request() -> None:
        result["reply"] = fetch(proc.port, "/hold")

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 5
    while not any(r.target == "/hold" for r in upstream.received) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.proc.send_signal(signal.SIGTERM)
    thread.join(10)
    assert result["reply"].status == 200
    assert result["reply"].body == b"done"
    assert proc.proc.wait(10) == 0


def test_bad_config_is_a_clear_error(tmp_path: object) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "edge", "serve", "--upstream", "ftp://shop"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "upstream must be an http:// or https:// URL" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "edge", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDGE_")},
        cwd="/",
    )
    assert done.returncode == 2
    assert "no upstream" in done.stderr


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    sock.settimeout(5)
    while True:
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            break
        if not piece:
            break
        data += piece
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:") and len(rest) >= int(
                    line.split(b":")[1]
                ):
                    return data
    return data

"""The access log, the request id and the error lines, through real ``edge serve``
processes in front of the test upstream: JSON Lines to a file, text to stderr; no
query string, cookie or address in a line unless asked; a client's ``X-Request-Id``
to the shop and back, a malformed one replaced; one line per error, repeats held back."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import logs, metrics
from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, fetch, start_edge

SECRETS = ("alice@example.com", "s3cret-query", "topsecret-cookie")
MADE = re.compile(r"[0-9a-f]{16}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[TestUpstream]:
    server = TestUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def json_log(
    upstream: TestUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EdgeProcess, Path]]:
    path = tmp_path_factory.mktemp("logs") / "access.log"
    proc = start_edge(
        upstream.url, env={"EDGE_ACCESS_LOG": "json", "EDGE_ACCESS_LOG_FILE": str(path)}
    )
    yield proc, path
    proc.stop()


def line_of(path: Path, request_id: str) -> dict[str, object]:
    """The request's line, once in the file."""
    deadline = time.monotonic() + 10
    while True:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        for line in text.splitlines():
            entry = json.loads(line)
            if entry["request_id"] == request_id:
                return entry
        assert time.monotonic() < deadline, f"no line for {request_id}: {text}"
        time.sleep(0.05)


@pytest.mark.slow
def test_json_lines_carry_the_request_id_and_nothing_personal(
    json_log: tuple[EdgeProcess, Path],
) -> None:
    edge, path = json_log
    page = fetch(
        edge.port,
        "/page?email=alice@example.com&token=s3cret-query",
        headers={
            "Accept": "text/html",
            "Cookie": "session=topsecret-cookie",
            "X-Request-Id": "client-req-1",
        },
    )
    assert page.status == 200 and page.header("x-request-id") == "client-req-1"
    failed = fetch(edge.port, "/reset?email=alice@example.com")
    assert failed.status == 502
    first = line_of(path, "client-req-1")
    second = line_of(path, failed.header("x-request-id") or "")
    assert first["request_id"] == "client-req-1"
    assert first["method"] == "GET" and first["path"] == "/page"
    assert first["status"] == 200 and first["bytes"] == len(page.body)
    assert first["outcome"] == "passthrough"  # tracked, but no rules place anything
    assert isinstance(first["duration_ms"], float) and isinstance(first["upstream_ms"], float)
    assert first["duration_ms"] >= first["upstream_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["time"]))
    assert second["path"] == "/reset" and second["status"] == 502
    assert second["outcome"] == "error" and "upstream_ms" not in second
    assert MADE.fullmatch(str(second["request_id"]))
    text = path.read_text(encoding="utf-8")
    for secret in (*SECRETS, "?", "127.0.0.1"):
        assert secret not in text
    assert "client" not in first


@pytest.mark.slow
def test_the_sidecars_own_endpoints_have_request_ids_and_lines(
    json_log: tuple[EdgeProcess, Path],
) -> None:
    """``/_edge/*`` (health, the snippet's decide and events, the admin's 404s) get a
    request id and an access log line too, with outcome ``sidecar``; no query string."""
    edge, path = json_log
    health = fetch(
        edge.port, "/_edge/healthz?probe=secret-query", headers={"X-Request-Id": "own-1"}
    )
    assert health.status == 200 and health.header("x-request-id") == "own-1"
    missing = fetch(edge.port, "/_edge/nothing-here")
    assert missing.status == 404 and MADE.fullmatch(missing.header("x-request-id") or "")
    decide = fetch(edge.port, "/_edge/decide?path=/page", headers={"X-Request-Id": "own-2"})
    assert decide.header("x-request-id") == "own-2"
    first, second = line_of(path, "own-1"), line_of(path, missing.header("x-request-id") or "")
    assert (first["path"], first["status"], first["outcome"]) == ("/_edge/healthz", 200, "sidecar")
    assert first["bytes"] == len(health.body) and "upstream_ms" not in first
    assert (second["path"], second["status"]) == ("/_edge/nothing-here", 404)
    assert line_of(path, "own-2")["path"] == "/_edge/decide"
    assert "secret-query" not in path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_clients_request_id_reaches_the_shop_and_comes_back(
    json_log: tuple[EdgeProcess, Path],
) -> None:
    edge, _ = json_log
    reply = fetch(edge.port, "/echo", headers={"X-Request-Id": "4bf92f35-77b3.4a:z_x+y=/w"})
    seen = [v for k, v in json.loads(reply.body)["headers"] if k.lower() == "x-request-id"]
    assert seen == ["4bf92f35-77b3.4a:z_x+y=/w"]
    assert reply.all("x-request-id") == ["4bf92f35-77b3.4a:z_x+y=/w"]


@pytest.mark.slow
@pytest.mark.parametrize("malformed", [None, "has spaces <script>", "x" * 65, "é-accent", ""])
def test_a_missing_or_malformed_request_id_is_replaced(
    json_log: tuple[EdgeProcess, Path], malformed: str | None
) -> None:
    edge, path = json_log
    headers = {} if malformed is None else {"X-Request-Id": malformed}
    reply = fetch(edge.port, "/echo", headers=headers)
    seen = [v for k, v in json.loads(reply.body)["headers"] if k.lower() == "x-request-id"]
    assert len(seen) == 1 and MADE.fullmatch(seen[0]), seen
    # the one the shop saw is the one that comes back (the shop's own is not)
    assert reply.all("x-request-id") == seen
    assert line_of(path, seen[0])["path"] == "/echo"


@pytest.mark.slow
def test_text_lines_errors_on_one_line_and_repeats_held_back(upstream: TestUpstream) -> None:
    edge = start_edge(
        upstream.url,
        "--rules",
        "no-such-dir",
        env={"EDGE_ACCESS_LOG": "text", "EDGE_ACCESS_LOG_CLIENT_IP": "true"},
    )
    try:
        page = fetch(edge.port, "/page?token=s3cret-query", headers={"X-Request-Id": "txt-1"})
        assert page.status == 200
        for n in range(5):
            assert fetch(edge.port, "/reset", headers={"X-Request-Id": f"bad-{n}"}).status == 502
    finally:
        assert edge.stop() == 0
    assert edge.proc.stderr is not None
    err = edge.proc.stderr.read().decode()
    access = [line for line in err.splitlines() if " GET /" in line]
    assert len(access) == 6, err
    _, rid, method, path, status, size, ms, outcome, up, client = access[0].split(" ")
    assert (rid, method, path, status, size) == (
        "txt-1",
        "GET",
        "/page",
        "200",
        str(len(page.body)),
    )
    assert ms.endswith("ms") and outcome == "passthrough" and up.startswith("upstream=")
    assert client == "client=127.0.0.1"
    assert access[1].split(" ")[1:3] == ["bad-0", "GET"] and " 502 " in access[1]
    assert "s3cret-query" not in err
    # five upstream failures: one line (with its request id), the rest counted
    failures = [line for line in err.splitlines() if "upstream failed" in line]
    assert len(failures) == 2, err
    assert failures[0].endswith("request_id=bad-0")
    assert "held back: 4 more like this within 10 s; the last" in failures[1]
    assert "Traceback" not in err


# --- the pieces -----------------------------------------------------------------------


def test_request_ids_kept_made_or_replaced() -> None:
    headers = [(b"host", b"shop"), (b"x-request-id", b"abc-1")]
    assert logs.request_id(headers) == b"abc-1"
    assert headers == [(b"host", b"shop"), (b"x-request-id", b"abc-1")]
    headers = [(b"host", b"shop")]
    made = logs.request_id(headers)
    assert MADE.fullmatch(made.decode()) and headers[-1] == (b"x-request-id", made)
    headers = [(b"x-request-id", b"a\r\nb"), (b"host", b"shop")]
    made = logs.request_id(headers)
    assert headers == [(b"host", b"shop"), (b"x-request-id", made)]
    assert logs.request_id([]) != logs.request_id([])


def _record(
    logger: str, level: int, msg: str, *args: object, exc: bool = False
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            {}["missing"]
        except KeyError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord(logger, level, __file__, 1, msg, args, exc_info)


def test_an_exception_is_one_line_unless_debugging() -> None:
    record = _record("edge.decide", logging.ERROR, "personalization failed:\n%s", "x", exc=True)
    line = logs.OneLineFormatter().format(record)
    assert "\n" not in line
    assert "personalization failed:\\nx (KeyError: 'missing' at " in line
    assert "test_access_log.py:" in line and " in _record)" in line
    debug = logs.OneLineFormatter(tracebacks=True).format(record)
    assert debug.startswith(line) and "\nTraceback (most recent call last):" in debug


def test_repeats_within_the_window_are_counted_not_written() -> None:
    now = [100.0]
    out = io.StringIO()
    handler = logs.RepeatLimitingHandler(out, clock=lambda: now[0])
    handler.setFormatter(logs.OneLineFormatter())
    for n in range(1000):
        handler.handle(_record("edge.proxy", logging.WARNING, "upstream unreachable: %s", n))
    handler.handle(_record("edge.proxy", logging.WARNING, "another thing"))
    handler.handle(_record("edge.proxy", logging.INFO, "upstream unreachable: %s", "info"))
    lines = [line.split(" ", 2)[2] for line in out.getvalue().splitlines()]  # no time
    assert lines == [
        "WARNING edge.proxy: upstream unreachable: 0",
        "WARNING edge.proxy: another thing",
        "INFO    edge.proxy: upstream unreachable: info",  # below warnings: all written
    ]
    now[0] += logs.REPEAT_WINDOW
    handler.handle(_record("edge.proxy", logging.WARNING, "upstream unreachable: %s", "again"))
    lines = [line.split(" ", 2)[2] for line in out.getvalue().splitlines()][3:]
    assert lines == [
        "WARNING edge.proxy: upstream unreachable: 999"
        " [held back: 999 more like this within 10 s; the last]",
        "WARNING edge.proxy: upstream unreachable: again",
    ]
    handler.handle(_record("edge.proxy", logging.WARNING, "upstream unreachable: %s", "more"))
    handler.close()  # what was held back when the process ends is said too
    assert (
        out.getvalue()
        .splitlines()[-1]
        .endswith("upstream unreachable: more [held back: 1 more like this within 10 s; the last]")
    )


def test_a_destination_that_stops_reading_never_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "PENDING_LIMIT", 16 * 1024)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    log = logs.AccessLog("text")
    log.fd = write_end
    sent = logs.Sent(lambda message: None)
    sent.status, sent.body_bytes = 200, 1234
    dropped = metrics.ACCESS_LOG_DROPPED.value
    try:
        for n in range(3000):  # ~270 KB of lines into a 64 KB pipe nobody reads
            log.write(sent, b"r%d" % n, "GET", b"/c/shoes", "", 1.8e9, 0.01, 0.005, "passthrough")
        assert metrics.ACCESS_LOG_DROPPED.value > dropped
        taken = b""
        while chunk := _read_some(read_end):
            taken += chunk
        # the reader is back: what waited goes first, a begun line finished
        log.write(sent, b"last", "GET", b"/c/shoes", "", 1.8e9, 0.01, 0.005, "passthrough")
        while chunk := _read_some(read_end):
            taken += chunk
        assert taken.endswith(b" last GET /c/shoes 200 1234 10.0ms passthrough upstream=5.0ms\n")
        lines = taken.decode().splitlines()
        assert len(lines) > 500
        assert all(line.split(" ")[2:5] == ["GET", "/c/shoes", "200"] for line in lines)
    finally:
        os.close(read_end)
        os.close(write_end)


def _read_some(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


@pytest.mark.slow
def test_serving_goes_on_when_stderr_is_not_read(upstream: TestUpstream) -> None:
    # start_edge's stderr is a pipe this test never reads: 64 KB of lines fill it
    edge = start_edge(upstream.url, env={"EDGE_ACCESS_LOG": "text"})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        for _ in range(900):
            conn.request("GET", "/status/204")
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 204
        conn.close()
        assert fetch(edge.port, "/page").status == 200
    finally:
        assert edge.stop() == 0

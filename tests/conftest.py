from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tests._hypothesis  # noqa: F401 - loads the Hypothesis profile (HYPOTHESIS_PROFILE)
from tests._chromium import browser  # noqa: F401 - pytest fixture: Debian's Chromium, per module
from tests._upstream import TestUpstream
from tests.redis_server import redis_url  # noqa: F401 - pytest fixture: a real redis-server

ROOT = Path(__file__).resolve().parent.parent
EDGE = [sys.executable, "-m", "edge"]


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A small shop of the test's own (static theme pages) on a free port of
    127.0.0.1, in a thread; its base URL. Stopped when the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DemoRun:
    """A running ``edge demo`` (:func:`demo_process`); ``out`` is what it printed,
    once it stopped (what a reader of ``proc.stdout`` took meanwhile is not in it)."""

    proc: subprocess.Popen[bytes]
    out: bytes = b""


@contextmanager
def demo_process(port: int, timeout: float = 15.0) -> Iterator[DemoRun]:
    """``edge demo --port PORT``, as the README runs it, once it listens; stopped after
    with Ctrl-C, which must end it cleanly (exit 0, no traceback)."""
    proc = subprocess.Popen(
        [*EDGE, "demo", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    run = DemoRun(proc)
    try:
        wait_listening(port, timeout=timeout, proc=proc)
        yield run
    finally:
        proc.send_signal(signal.SIGINT)
        run.out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()
        assert "Traceback" not in err.decode()


def wait_listening(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def fetch(
    port: int,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request over a fresh connection; the raw body (no decoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.reason, resp.getheaders(), data)
    finally:
        conn.close()


@dataclass
class EdgeProcess:
    proc: subprocess.Popen[bytes]
    port: int

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_edge(upstream: str, *args: str, env: dict[str, str] | None = None) -> EdgeProcess:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    full_env["EDGE_STORE"] = f"sqlite:{tempfile.mkdtemp(prefix='edge-test-')}/profiles.db"
    full_env["EDGE_SECRET"] = "test-secret"
    full_env.update(env or {})
    proc = subprocess.Popen(
        [*EDGE, "serve", "--upstream", upstream, "--port", str(port), *args],
        cwd=ROOT / "tests",  # no edge.toml there: defaults only
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_listening(port, proc=proc)
    return EdgeProcess(proc, port)


@pytest.fixture(scope="module")
def upstream() -> Iterator[TestUpstream]:
    server = TestUpstream(slow_seconds=3.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge(upstream: TestUpstream) -> Iterator[EdgeProcess]:
    # Tracking off: the transparency battery compares with the shop byte for byte, and
    # a first visit legitimately gains the visitor cookie (tests/test_visitors.py).
    proc = start_edge(
        upstream.url,
        env={"EDGE_READ_TIMEOUT": "1", "EDGE_CONNECT_TIMEOUT": "1", "EDGE_TRACK": "false"},
    )
    yield proc
    proc.stop()

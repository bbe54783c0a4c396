"""A real redis-server for the tests, and the session fixture ``redis_url``.

Register the fixture for every test module by importing it in ``tests/conftest.py``::

    from tests.redis_server import redis_url  # noqa: F401 - pytest fixture

The server runs with ``appendonly yes`` and ``appendfsync always`` so an acknowledged
write survives ``kill -9`` of the server, as the store's durability promise assumes.
Without redis-server the fixture fails with how to install it; set
``EDGE_TESTS_NO_REDIS=1`` to skip the Redis tests instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def find_redis_server() -> str | None:
    if os.access(REDIS_SERVER, os.X_OK):
        return REDIS_SERVER
    return shutil.which("redis-server")


class RedisServer:
    """One redis-server process on 127.0.0.1; :meth:`start` again after :meth:`kill`
    reuses the same port and data directory (to check what survived)."""

    def __init__(self, executable: str, data_dir: Path) -> None:
        self.executable = executable
        self.data_dir = data_dir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = self.data_dir / "redis.log"
        self.proc = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.data_dir),
                "--daemonize",
                "no",
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(self.port):
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}: {stderr}{tail}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer PING within {START_TIMEOUT}s")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what the AOF already holds survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def require_redis_server() -> str:
    """redis-server's path; a clear failure when it is missing (skip only if asked)."""
    if os.environ.get("EDGE_TESTS_NO_REDIS") == "1":
        pytest.skip("EDGE_TESTS_NO_REDIS=1: Redis store tests skipped")
    executable = find_redis_server()
    if executable is None:
        pytest.fail(
            "redis-server not found (looked at /usr/bin/redis-server and PATH); the Redis "
            "store tests need it: apt-get install redis-server (tests/run.sh does this), "
            "or set EDGE_TESTS_NO_REDIS=1 to skip them",
            pytrace=False,
        )
    return executable


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a redis-server started for this test session."""
    executable = require_redis_server()
    with tempfile.TemporaryDirectory(prefix="edge-redis-") as data_dir:
        server = RedisServer(executable, Path(data_dir)).start()
        try:
            yield server.url
        finally:
            server.stop()

"""Running ASGI apps under uvicorn: the settings a proxy needs, and clean signals.

uvicorn is told not to add its own ``Server`` and ``Date`` headers (the upstream's
pass through; adding ours would double them), not to rewrite the client address
from ``X-Forwarded-For`` (the proxy does that itself), and not to write an access
log (request lines can carry personal data in query strings). It runs on uvloop with
the httptools parser: the pure-Python loop and parser cost about 1.5x in the
project's benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, TypeVar

import uvicorn

from edge import logs

log = logging.getLogger("edge")


def configure_logging(level: str = "info") -> None:
    """One line per record, repeats held back, the request id of the request being
    served (edge/logs.py); the full traceback only at ``debug``."""
    logs.configure(level, sys.stderr)
    # uvicorn's own "Started server process", "Waiting for application startup"
    # lines are noise next to ours; keep its warnings and errors.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve`, so several
    servers in one process stop together and Ctrl-C exits cleanly."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(
    app: Any, *, host: str = "127.0.0.1", port: int = 8000, graceful_timeout: float = 30.0
) -> _Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http="httptools",
        ws="none",
        lifespan="on",
        server_header=False,
        date_header=False,
        proxy_headers=False,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=graceful_timeout,
        timeout_keep_alive=75,
    )
    return _Server(config)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve(
    servers: Sequence[tuple[_Server, socket.socket | None]],
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run servers until SIGINT/SIGTERM; in-flight requests then get the graceful
    timeout to finish. A second signal stops at once."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server, _ in servers:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        tasks = [
            asyncio.ensure_future(server.serve(sockets=[sock] if sock else None))
            for server, sock in servers
        ]
        if on_started is not None:
            while not all(server.started for server, _ in servers):
                if any(task.done() for task in tasks):
                    break
                await asyncio.sleep(0.02)
            if all(server.started for server, _ in servers):
                on_started()
        await asyncio.gather(*tasks)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop (falling back to asyncio where uvloop is missing) and
    return its result."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)

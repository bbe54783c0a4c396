"""Running ASGI apps under uvicorn: the settings a proxy needs, and clean signals.

uvicorn is told not to add its own ``Server`` and ``Date`` headers (the upstream's
pass through; adding ours would double them), not to rewrite the client address
from ``X-Forwarded-For`` (the proxy does that itself), and not to write an access
log (request lines can carry personal data in query strings). It runs on uvloop with
the httptools parser: the pure-Python loop and parser cost about 1.5x in the
project's benchmark.

Each connection speaks HTTP/1.1 through :class:`edge.http1.Http1` (httptools
parsing, our framing, the bounds uvicorn lacks: ``max_header_bytes``,
``header_timeout``, ``body_timeout``; figures in its docstring); uvicorn keeps the
sockets, the lifespan, the connection cap's count and the graceful drain. SIGHUP
calls the ``reload`` given to :func:`serve`; SIGINT/SIGTERM drain and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, TypeVar

import uvicorn

from edge import logs
from edge.http1 import Http1, Limits

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

    limits: Limits

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def connection_limit(configured: int) -> int:
    """Connections served at once before new requests get 503: *configured*, or for 0
    what the process's open-file limit allows. Each request being proxied holds two
    descriptors (the visitor's connection and one to the upstream), and the store,
    the upstream's idle pool and the logs need some more."""
    if configured > 0:
        return configured
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(32, (soft - 256) // 2)


def _protocol(limits: Limits) -> type[Http1]:
    """The protocol class for one server, reading *limits* (shared, so a reload
    reaches connections opened after it)."""
    return type("Http1", (Http1,), {"limits": limits})


def make_server(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_timeout: float = 30.0,
    limits: Limits | None = None,
) -> _Server:
    limits = limits if limits is not None else Limits()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http=_protocol(limits),
        ws="none",
        lifespan="on",
        server_header=False,
        date_header=False,
        proxy_headers=False,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=graceful_timeout,
        # Longer than the idle timeout of what usually stands in front (nginx's
        # upstream keepalive_timeout and AWS ALB's are 60 s): the proxy closes an idle
        # connection first, never reusing one the sidecar is closing.
        timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]
        limit_concurrency=connection_limit(limits.max_connections),
    )
    server = _Server(config)
    server.limits = limits
    return server


def apply_limits(server: _Server, new: Limits) -> None:
    """Make *new* the limits of connections *server* opens from now on."""
    limits: Limits = server.limits
    limits.max_header_bytes = new.max_header_bytes
    limits.header_timeout = new.header_timeout
    limits.body_timeout = new.body_timeout
    limits.keepalive_timeout = new.keepalive_timeout
    limits.max_connections = new.max_connections
    server.config.timeout_keep_alive = new.keepalive_timeout  # type: ignore[assignment]
    server.config.limit_concurrency = connection_limit(new.max_connections)


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
    reload: Callable[[], None] | None = None,
) -> None:
    """Run servers until SIGINT/SIGTERM; in-flight requests then get the graceful
    timeout to finish. A second signal stops at once. SIGHUP calls *reload* (the
    configuration and rules read again) and serving goes on."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server, _ in servers:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    def hangup() -> None:
        if reload is None:
            log.warning("SIGHUP: nothing to reload here")
            return
        try:
            reload()
        except Exception as exc:  # one line; the process and its old settings go on
            log.error("reload failed, still serving the previous configuration: %r", exc)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in handled[:2]:
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, hangup)
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
        for sig in handled:
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

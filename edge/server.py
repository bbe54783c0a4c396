"""Running ASGI apps under uvicorn: the settings a proxy needs, and clean signals.

uvicorn is told not to add its own ``Server`` and ``Date`` headers (the upstream's
pass through; adding ours would double them), not to rewrite the client address
from ``X-Forwarded-For`` (the proxy does that itself), and not to write an access
log (request lines can carry personal data in query strings). It runs on uvloop with
the httptools parser: the pure-Python loop and parser cost about 1.5x in the
project's benchmark.

uvicorn bounds neither the size of a request's head nor the time it takes to
arrive, so :class:`_GuardedHttp` does (settings ``max_header_bytes`` and
``header_timeout``), and frames HTTP/1.0 responses without chunking. SIGHUP calls
the ``reload`` given to :func:`serve`; SIGINT/SIGTERM drain and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edge import logs
from edge.config import Config

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


@dataclass
class Limits:
    """What one connection may cost the server (edge.toml's settings of the same names).

    Mutable: a reload changes them for the connections opened after it."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_connections: int = 0
    """0: derived from the open-file limit (:func:`connection_limit`)."""

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(
            max_header_bytes=config.max_header_bytes,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            keepalive_timeout=config.keepalive_timeout,
            max_connections=config.max_connections,
        )


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


class _Throttled:
    """A warning logged at most once a minute, with how many were left out: an attack
    opens connections by the thousand."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._last = -every
        self._left_out = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self._left_out += 1
            return
        if self._left_out:
            message += f" ({self._left_out} more like it in the last minute)"
        log.warning(message, *args)
        self._last = now
        self._left_out = 0


_TOO_LARGE = _Throttled()
_TOO_SLOW = _Throttled()


class _GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds it lacks (issue 15):

    * the head (request line and headers) larger than ``max_header_bytes`` gets 431 and
      the connection closes. Bytes are counted as they arrive, so a head that never
      ends is stopped at the limit (plus one read), not buffered whole;
    * the head must arrive within ``header_timeout`` of the connection's opening, or of
      its first byte on a kept-alive connection (whose idle time is
      ``keepalive_timeout``); otherwise the connection closes (408 when part of a head
      came). A client dripping a byte a second is closed at the timeout;
    * a request body must keep coming: ``body_timeout`` without a byte of it (while
      the sidecar is reading: time paused by flow control does not count) answers 408,
      or cuts the response if it has begun, and closes the connection. A request
      without a body, read whole in one ``data_received``, arms no timer;
    * an HTTP/1.0 client gets its body unchunked, ended by closing the connection
      (RFC 9112 §6.3: chunked is HTTP/1.1), when the response has no Content-Length.

    It relies on uvicorn's ``HttpToolsProtocol`` callbacks and ``RequestResponseCycle``
    attributes (pyproject pins the range; tests/test_server_limits.py checks each)."""

    limits: ClassVar[Limits] = Limits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # bytes received while a head is being read
        self._head_size = 0  # the head's size as parsed so far
        self._in_head = True
        self._head_started = False
        self._too_large = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()  # a connection that never sends a byte is closed too
        self._cycles: list[Any] = []  # this connection's requests not answered yet
        self._in_body = False  # a request's body is being read
        self._body_at = 0.0  # the loop's time of the body's last bytes
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        # uvicorn tells only the newest request that the client left; with pipelined
        # requests the one being answered would write to a closed transport (a
        # traceback per request). Every open one learns it.
        for cycle in self._cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self._cycles = []
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse_head(431)
        elif self._in_body:
            # (set at the head's end, cleared at the message's: a request without a
            # body was both in this call and is never timed)
            self._body_at = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout, self._body_timed_out
                )

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_started = True
        self._head_size = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:
            return  # (an upgrade: no request made)
        self._in_body = True  # until on_message_complete, in this same call without a body
        self._cycles = [c for c in self._cycles if not c.response_complete] + [cycle]
        if self.scope["http_version"] == "1.0":
            # The task just made for the app has not run yet; it reads cycle.send when it does.
            cycle.send = _unchunked(cycle)  # type: ignore[method-assign]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request's head
        self._in_body = False
        self._head_bytes = 0
        self._cancel_body_timer()

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.limits.max_header_bytes:
            self._too_large = True
            # The parser turns any error raised here into a parse error, which uvicorn
            # answers with send_400_response: below, that answers 431.
            raise ValueError("request head too large")

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse_head(431)
        else:
            super().send_400_response(msg)

    # The head's guards
    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is still going out (the late head is pipelined behind it):
            # the connection ends after it.
            self.cycle.keep_alive = False
            return
        _TOO_SLOW.warning(
            "closed a connection whose request head took over header_timeout (%gs)",
            self.limits.header_timeout,
        )
        self._refuse_head(408 if self._head_started else None)

    # The body's guard
    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._in_body:
            return
        timeout = self.limits.body_timeout
        idle = self.loop.time() - self._body_at
        if idle < timeout or self.flow.read_paused:
            # bytes came meanwhile, or the sidecar is the one not reading: wait on
            self._body_timer = self.loop.call_later(
                max(timeout - idle, 0.05) if idle < timeout else timeout, self._body_timed_out
            )
            return
        _TOO_SLOW.warning(
            "closed a connection whose request body stalled over body_timeout (%gs)", timeout
        )
        cycle = self.cycle
        started = cycle is not None and cycle.response_started
        self._refuse_head(None if started else 408, answer_over=cycle)

    def _refuse_head(self, status: int | None, answer_over: Any = None) -> None:
        """Answer *status* (if any and nothing else is being sent) and close."""
        if self.transport.is_closing():
            return
        if status == 431:
            _TOO_LARGE.warning(
                "refused a request head over max_header_bytes (%d bytes): 431",
                self.limits.max_header_bytes,
            )
        self._cancel_head_timer()
        cycle = self.cycle
        if status is not None and (
            cycle is None or cycle.response_complete or cycle is answer_over
        ):
            body = STATUS_LINE[status][13:].strip()  # the reason phrase
            self.transport.write(
                STATUS_LINE[status]
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                + body
            )
        self.transport.close()


def _unchunked(cycle: Any) -> Callable[[dict[str, Any]], Coroutine[Any, Any, None]]:
    """*cycle*'s ``send`` for an HTTP/1.0 request: a response without Content-Length
    goes out as is and the connection closes after it (uvicorn already closes it:
    HTTP/1.0 is not kept alive here)."""
    send = cycle.send
    until_close = False

    async def send_unchunked(message: dict[str, Any]) -> None:
        nonlocal until_close
        if message["type"] == "http.response.start" and not cycle.response_started:
            headers = [
                (n, v) for n, v in message.get("headers", []) if n.lower() != b"transfer-encoding"
            ]
            if not any(n.lower() == b"content-length" for n, _ in headers):
                until_close = True
                cycle.chunked_encoding = False  # uvicorn then neither chunks nor counts
            message = {**message, "headers": headers}
        elif until_close and message["type"] == "http.response.body":
            cycle.expected_content_length = len(message.get("body", b""))
        await send(message)

    return send_unchunked


def _protocol(limits: Limits) -> type[_GuardedHttp]:
    """The protocol class for one server, reading *limits* (shared, so a reload
    reaches connections opened after it)."""
    return type("GuardedHttp", (_GuardedHttp,), {"limits": limits})


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

"""The HTTP/1.1 server protocol under the ASGI app: httptools parses, this frames.

uvicorn keeps the sockets, the lifespan, the signals and the graceful drain
(edge/server.py); each connection speaks through :class:`Http1`, which calls the same
ASGI app (the proxy's raw path and, through it, starlette for ``/_edge/*``) with the
scope uvicorn would make, and writes the same bytes uvicorn would write.

Why our own: the bounds the sidecar needs (issue 15) were a subclass of uvicorn's
``HttpToolsProtocol`` reaching into its internals, and costing on every request (timers
armed and cancelled, lists of cycles, a wrapped ``send``) on top of uvicorn's own (an
``asyncio.Event`` and a cycle object a request, two regular expressions a response
header, the access-log and trace checks). Here:

* a request's state is one slotted :class:`_Exchange`; ``receive`` returns without
  awaiting when the body is already there (a GET's always is), and a future is made only
  when the app must wait;
* the response head is checked with one regular expression over all its fields, and
  goes out with the first body bytes in one write (one ``send`` system call for a
  response that fits, not two); held at most until the loop's next turn;
* the timeouts (``header_timeout``, ``body_timeout``, the keep-alive idle time) are a
  deadline a connection, checked by one sweep a server every quarter second rather
  than a timer armed and cancelled a request.

Measured with callgrind (the whole process, a fixed keep-alive client, 1,000 requests
after 200 of warm-up): a bare ASGI app costs 108k instructions a request under this
protocol, 115k under uvicorn's and 157k under the subclass of it used before; a
passthrough ``edge serve`` request of a 69 KB page ~9% fewer (36-46k less in three
paired runs, e.g. 457k -> 420k). In CPU time (user +
system, pinned, wrk): the bare app 37-43 µs a request, 47-52 under uvicorn's, 58-62
before. Holding the head for the body costs 5k instructions (the ``call_soon``) and
saves 6-8 µs of system time (a ``send``). README "Why these components" has the
figures against nginx.

An app may serve some requests below ASGI (its ``passthrough``, :class:`Passthrough`):
the sidecar's requests it only forwards (edge/passthrough.py) skip the scope, the
messages and the task, and are framed by the same :class:`_Exchange` (``begin``,
``write_body``, ``answer``), so their bytes are the ASGI path's (tests/test_passthrough.py).

Every HTTP/1.1 behaviour the tests pin stays: keep-alive, pipelining (answered in
order, reading paused meanwhile), ``Expect: 100-continue``, HEAD, chunked bodies both
ways, HTTP/1.0 framing (unchunked, closed after), the head's size and time limits, the
body's time limit, the connection cap (503), 400 for malformed heads and the parser's
smuggling refusals (llhttp, strict), back-pressure both ways, ``http.disconnect`` to
every open request when the client leaves, and the graceful drain (uvicorn calls
:meth:`Http1.shutdown`). tests/test_http1.py fuzzes it and compares it with uvicorn.

Where it departs from uvicorn's bytes, on purpose (each has a test): a chunked body's
trailer fields stay out of the scope's headers; an answer given before an
``Expect: 100-continue`` body was asked for closes the connection; an upgrade request
with a body gets 400 and one without closes after its answer (llhttp leaves what
follows unparsed); at most :data:`MAX_PIPELINED` requests wait to be answered, read no
further until they are; a malformed head behind requests being answered closes the
connection after their answers instead of a 400 in their place; and a client that
reads none of a waiting response for ``body_timeout`` is dropped; an HTTP/1.1 request
without Host, or any with two Host lines, gets 400 (RFC 9112 §3.2) and a close; and
a body left unread by an early answer is dropped up to :data:`DRAIN_LIMIT`, then the
connection closes.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import httptools
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl

from edge.config import Config

log = logging.getLogger("edge")


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE: Final = {status: _status_line(status) for status in range(100, 600)}
"""The status lines uvicorn writes (its reason phrases, ``HTTP/1.1`` to every client)."""

_FIELDS: Final = re.compile(
    rb'(?:[^\x00-\x1f\x7f()<>@,;:\[\]={} \t\\"]*: [^\x00-\x08\x0a-\x1f\x7f]*\r\n)*'
)
"""Response header fields as written (``name: value\\r\\n`` each): the names without
separators or controls, the values without controls but tab, so that nothing the app
passes on can split the response (uvicorn's two checks a header, in one pass; with the
count of line ends, which a CR LF inside a value would raise)."""

HIGH_WATER: Final = 65536
"""Request body bytes buffered before reading pauses (until the app reads them)."""

MAX_PIPELINED: Final = 32
"""Requests parsed ahead of their answers on one connection (a scope each): the one
that reaches it is the last answered, the rest of what was read is dropped and the
connection closes (RFC 9112 §9.3.2: a client retries what a close left unanswered).
Reading waits while any are queued, so only a client sending more in one go meets it."""

DRAIN_LIMIT: Final = 1 << 20
"""Request body bytes read and dropped after the app answered without reading them (so
the connection can serve the next request); past this many the connection closes."""

_TICK: Final = 0.25
"""How often a server's connections' deadlines are checked (seconds, at most)."""

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_500_HEADERS: Final = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"21"),
    (b"connection", b"close"),
]
_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}


class Passthrough(Protocol):
    """What an app may offer to serve some requests below ASGI (its ``passthrough``
    attribute; :class:`edge.passthrough.Passthrough`): for a request without a body,
    asked at the end of its head, whether it is one (``wants``, on the decoded path),
    then what serving it needs (``prepare``, None: the ASGI app serves it after all),
    then ``start`` answers it through the :class:`_Exchange`'s framing (``begin``,
    ``write_body``; ``send`` for ASGI messages), from the protocol's and the loop's
    callbacks or in a task of its own (``spawn``)."""

    def wants(self, path: str) -> bool: ...

    def prepare(
        self,
        method: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        scheme: str,
    ) -> Any: ...

    def start(self, exchange: Any, prepared: Any) -> None: ...


@dataclass
class Limits:
    """What one connection may cost the server (edge.toml's settings of the same names).

    Mutable: a reload changes them for the connections opened after it."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_connections: int = 0
    """0: derived from the open-file limit (edge.server.connection_limit)."""

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(
            max_header_bytes=config.max_header_bytes,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            keepalive_timeout=config.keepalive_timeout,
            max_connections=config.max_connections,
        )


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
_MALFORMED = _Throttled()
_UPGRADE = _Throttled()
_TOO_MANY = _Throttled()

# What a connection's deadline means when it passes.
_NONE, _HEAD, _IDLE, _BODY = range(4)
_NEVER: Final = float("inf")


class _Exchange:
    """One request and its response: the ASGI ``receive`` and ``send`` of the app's
    call, the request body as it arrives, the framing of the response."""

    __slots__ = (
        "body",
        "chunked",
        "conn",
        "delivered",
        "disconnected",
        "fast",
        "head_only",
        "held",
        "http10",
        "keep_alive",
        "more_body",
        "response_complete",
        "response_started",
        "scope",
        "task",
        "to_send",
        "until_close",
        "waiter",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        conn: Http1,
        scope: Any,
        keep_alive: bool,
        expect: bool,
        head_only: bool,
        http10: bool,
        fast: bool = False,
    ) -> None:
        self.conn = conn
        self.scope = scope
        """The ASGI scope; for the passthrough (*fast*), what its ``prepare`` made."""
        self.fast = fast
        self.head_only = head_only
        self.http10 = http10
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect
        self.body = b""
        self.more_body = True
        self.delivered = False  # the last http.request message was given to the app
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked: bool | None = None  # None: neither Content-Length nor chunked yet
        self.to_send = 0  # Content-Length bytes still to send
        self.until_close = False  # an HTTP/1.0 body without length: ends with the connection
        self.held: bytes | None = None  # the response head, until the first body bytes
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, app: Any) -> None:
        conn = self.conn
        try:
            if self.fast:
                await app(self, self.scope)
            else:
                await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # (as uvicorn: a cancelled one too)
            log.error("Exception in ASGI application", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.flush()
                conn.transport.close()
        else:
            if not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.flush()
                conn.transport.close()
        finally:
            conn.tasks.discard(self.task)  # type: ignore[arg-type]
            self.task = None  # (no cycle through the task's frame: freed without the GC)

    async def _send_500(self) -> None:
        await self.send({"type": "http.response.start", "status": 500, "headers": _500_HEADERS})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    def spawn(self, app: Any) -> None:
        """Answer in a task of its own: ``app(scope, receive, send)``, or for the
        passthrough ``app(exchange, prepared)``."""
        conn = self.conn
        task = self.task = conn.loop.create_task(self.run(app))
        conn.tasks.add(task)

    def failed(self, exc: BaseException) -> None:
        """The passthrough failed outside a task: as :meth:`run` when the app raises
        (no wait for the client to read: the answer is small)."""
        log.error("Exception in ASGI application", exc_info=exc)
        if not self.response_started:
            if not self.disconnected:
                self.begin(500, _500_HEADERS)
                self.write_body(b"Internal Server Error", False)
        else:
            self.flush()
            self.conn.transport.close()

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.waiting_for_100_continue and not conn.transport.is_closing():
            conn.transport.write(_CONTINUE)
            self.waiting_for_100_continue = False
            if conn.in_body:  # (the client's body_timeout starts now)
                conn._wait(_BODY, conn.limits.body_timeout)
        while not (self.disconnected or self.response_complete):
            if self.body or not (self.more_body or self.delivered):
                body = self.body
                self.body = b""
                self.delivered = not self.more_body
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            if self is conn.current:  # (a request queued behind this one: read on later)
                conn.resume_reading()
            waiter = self.waiter = conn.loop.create_future()
            await waiter
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self.begin(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            self.write_body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already completed."
            )

    def begin(self, status: int, headers: Any) -> None:
        """The response starts (``http.response.start``; the passthrough calls it
        straight, after the same checks as :meth:`send`'s)."""
        self._started(status, headers)
        self.conn.loop.call_soon(self.flush)  # (a no-op when the body went out meanwhile)

    def answer(self, status: int, headers: Any, body: bytes) -> None:
        """The whole response at once (:meth:`begin`, then :meth:`write_body` of the
        whole body): the head goes out with the body, no flush to schedule."""
        self._started(status, headers)
        self.write_body(body, False)

    def _started(self, status: int, headers: Any) -> None:
        self.response_started = True
        if self.waiting_for_100_continue:
            self.waiting_for_100_continue = False
            if self.more_body:
                # Answered before asking for the body: the client may send it or
                # not (RFC 9110 §10.1.1), so what follows is not known to be a
                # request; the connection ends with this response.
                self.keep_alive = False
        self.held = self._head(status, headers)

    def _head(self, status: int, headers: Any) -> bytes:
        """The response's status line and header fields, framed as uvicorn frames them."""
        default = self.conn.default_headers
        if default:
            headers = [*default, *headers]
        fields = []
        closing = False
        http10 = self.http10
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                if self.chunked is None:
                    self.to_send = int(value.decode())
                    self.chunked = False
            elif name == b"transfer-encoding":
                if http10:
                    continue  # HTTP/1.0 has no chunked coding (RFC 9112 §6.3)
                if value.lower() == b"chunked":
                    self.to_send = 0
                    self.chunked = True
            elif name == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                self.keep_alive = False
                closing = True
            fields += (name, b": ", value, b"\r\n")
        head = b"".join(fields)
        # one line a header (a CR LF inside a name or value would make more), each valid
        if head.count(b"\n") * 4 != len(fields) or _FIELDS.fullmatch(head) is None:
            raise RuntimeError("Invalid HTTP header name or value.")
        if not self.keep_alive and not closing:
            head += b"connection: close\r\n"
        if self.chunked is None:
            if http10:  # the body ends with the connection (closed: HTTP/1.0 is not kept alive)
                self.chunked = False
                self.until_close = True
            elif not self.head_only and status not in (204, 304):
                self.chunked = True
                head += b"transfer-encoding: chunked\r\n"
        return STATUS_LINE[status] + head + b"\r\n"

    def write_body(self, body: bytes, more: bool) -> None:
        """Body bytes (``http.response.body``; the passthrough calls it straight)."""
        conn = self.conn
        if self.head_only:
            self.to_send = 0
            out = b""
        elif self.chunked:
            if body:
                out = b"%x\r\n%b\r\n" % (len(body), body)
                if not more:
                    out += b"0\r\n\r\n"
            else:
                out = b"" if more else b"0\r\n\r\n"
        elif self.until_close:
            out = body
        else:
            size = len(body)
            if size > self.to_send:
                raise RuntimeError("Response content longer than Content-Length")
            self.to_send -= size
            out = body
        held = self.held
        if held is not None:
            self.held = None
            if len(out) > 4096:
                conn.transport.writelines((held, out))  # (writev: no copy of the body)
            else:
                conn.transport.write(held + out)
        elif out:
            conn.transport.write(out)
        if not more:
            if self.to_send != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                conn.transport.close()
            conn.response_complete(self)

    def flush(self) -> None:
        """Write the held head now (the app sent no body bytes in the same turn)."""
        held = self.held
        if held is not None:
            self.held = None
            transport = self.conn.transport
            if not (self.disconnected or transport.is_closing()):
                transport.write(held)


class _Watch:
    """The deadlines of one server's connections, checked every :data:`_TICK` seconds
    while there are any (one timer a server instead of one a request)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.timer is None:
            self.timer = self.loop.call_later(_TICK, self._tick)

    def _tick(self) -> None:
        self.timer = None
        now = self.loop.time()
        mine = False
        for conn in list(self.connections):
            mine = True
            if conn.deadline <= now:
                conn.expired(now)
            elif conn.write_paused and conn.write_paused_at + conn.limits.body_timeout <= now:
                conn.send_timed_out()
        if mine:
            self.timer = self.loop.call_later(_TICK, self._tick)


class Http1(asyncio.Protocol):
    """One client connection (see the module's docstring). uvicorn makes one per
    connection with its ``Config``, ``ServerState`` and the lifespan's state."""

    limits: ClassVar[Limits] = Limits()

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.default_headers: list[tuple[bytes, bytes]] = server_state.default_headers
        self.app_state = app_state
        self.root_path: str = config.root_path
        self.limit_concurrency: int | None = config.limit_concurrency
        self.keepalive_timeout: float = config.timeout_keep_alive
        # The app's passthrough below ASGI (see Passthrough), if it has one; not under a
        # root_path (the scope's paths would differ) nor when uvicorn wrapped the app.
        fast = getattr(self.app, "passthrough", None)
        self.fast: Passthrough | None = None if self.root_path else fast
        self.parser = httptools.HttpRequestParser(self)
        # a pipelined request's bytes after a "Connection: close" one are not an error
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.read_paused = False
        self.write_paused = False
        self.write_paused_at = 0.0
        self._drained: asyncio.Future[None] | None = None
        self.pipeline: deque[tuple[_Exchange, Any]] = deque()
        self.current: _Exchange | None = None  # the newest request (the one being read)
        self.answering: _Exchange | None = None  # the one whose app runs
        # per request
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect = False
        self.hosts = 0
        self.dropped = 0
        # the bounds (issue 15): see edge/server.py's Limits and README
        self.deadline = _NEVER
        self.waits_for = _NONE
        self.in_head = True
        self.head_started = False
        self.head_bytes = 0  # bytes received while a head is being read
        self.head_size = 0  # the head's size as parsed so far
        self.too_large = False
        self.stopped = False  # the parser was stopped: what follows is not read
        self.in_body = False

    # The transport's calls
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self.server = get_local_addr(self.transport)
        self.client = get_remote_addr(self.transport)
        self.scheme = "https" if is_ssl(self.transport) else "http"
        self._wait(_HEAD, self.limits.header_timeout)  # silence is closed too
        state = self.server_state
        watch = getattr(state, "edge_watch", None)
        if watch is None:
            watch = state.edge_watch = _Watch(self.loop, self.connections)
        watch.start()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.deadline = _NEVER
        # Every open request learns the client left, the one being answered too (not
        # only the newest, as uvicorn did: the others wrote to a closed transport).
        for exchange in (self.answering, self.current, *(e for e, _ in self.pipeline)):
            if exchange is not None:
                if not exchange.response_complete:
                    exchange.disconnected = True
                exchange.wake()
        self.pipeline.clear()
        self.write_paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        if exc is None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_at = self.loop.time()

    def resume_writing(self) -> None:
        self.write_paused = False
        drained = self._drained
        if drained is not None:
            self._drained = None
            if not drained.done():
                drained.set_result(None)

    async def drain(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()
        await self._drained

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.waits_for == _IDLE:  # a kept-alive connection's next head has begun
            self._wait(_HEAD, self.limits.header_timeout)
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            _UPGRADE.warning("unsupported upgrade request (served as a plain request)")
        except httptools.HttpParserError:
            if self.too_large:
                self.refuse(431)
            elif self.stopped:
                pass  # (what follows the last queued request is not read)
            elif self.in_body or (exchange := self.current) is None or exchange.response_complete:
                _MALFORMED.warning("refused a malformed request: 400")
                self._send_400()
            else:
                # A malformed head behind requests still being answered: a 400 now
                # would land in (or in place of) their answers. They are answered, the
                # last closing the connection; what follows is not read.
                _MALFORMED.warning("a malformed request closed its connection")
                exchange.keep_alive = False
                self.stopped = True
            return
        if self.in_head:
            if self.head_bytes > self.limits.max_header_bytes:
                self.refuse(431)
        elif self.in_body:
            # (set at the head's end, cleared at the message's: a request without a
            # body was both in this call and is never timed)
            self._wait(_BODY, self.limits.body_timeout)

    def _send_400(self) -> None:
        msg = b"Invalid HTTP request received."
        content = [STATUS_LINE[400]]
        for name, value in self.default_headers:
            content += (name, b": ", value, b"\r\n")
        content.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%b" % (len(msg), msg)
        )
        self.transport.write(b"".join(content))
        self.transport.close()

    # The parser's calls
    def on_message_begin(self) -> None:
        self.url = b""
        self.expect = False
        self.hosts = 0
        self.dropped = 0
        if self.headers:  # (the previous message's trailer fields; else already new)
            self.headers = []
        self.in_head = True
        self.head_started = True
        self.head_size = 0
        if self.waits_for != _HEAD:
            self._wait(_HEAD, self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        if self.head_size > self.limits.max_header_bytes:
            self._too_large()
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.limits.max_header_bytes:
            self._too_large()
        name = name.lower()
        # llhttp keeps trailing whitespace, which RFC 9110 §5.5 excludes from the value
        value = value.rstrip(b" \t")
        if name == b"host":
            self.hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect = True
        self.headers.append((name, value))

    def _too_large(self) -> None:
        self.too_large = True
        raise ValueError("request head too large")  # the parser stops: 431 then

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        self.waits_for, self.deadline = _NONE, _NEVER
        parser = self.parser
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        path, raw_path, query = self._target()
        headers = self.headers
        # A chunked body's trailer fields come through on_header too: they go to a list
        # of their own, never into the scope's headers (a trailer "Cookie" or
        # "X-Forwarded-For" is not a request header).
        self.headers = []
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app: Any = _service_unavailable
            _TOO_MANY.warning("over the connection limit (max_connections): 503")
        else:
            app = self.app
        keep_alive = version != "1.0" and parser.should_keep_alive()
        prepared = None
        if self.hosts > 1 or (not self.hosts and version == "1.1"):
            # RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with two
            # Host lines (which one would the shop read?), is answered 400. The body, if
            # any, is not read: the connection closes after the answer.
            _MALFORMED.warning("refused a request with %d Host fields: 400", self.hosts)
            app, keep_alive = _bad_request, False
        elif parser.should_upgrade():
            # llhttp hands back what follows an upgrade's head unparsed, and that is
            # dropped: served as a plain request and closed after (no later bytes read
            # as requests); one with a body is refused (its body was never read).
            keep_alive = False
            if any(
                name == b"transfer-encoding" or (name == b"content-length" and int(value))
                for name, value in headers
            ):
                app = _bad_request
        elif (fast := self.fast) is not None and app is self.app and fast.wants(path):
            prepared = fast.prepare(
                method, path, raw_path, query, headers, self.client, self.scheme
            )
        if prepared is not None:
            app = fast.start  # type: ignore[union-attr]
            exchange = _Exchange(
                self, prepared, keep_alive, self.expect, method == "HEAD", version == "1.0", True
            )
        else:
            scope = self._scope(method, version, path, raw_path, query, headers)
            exchange = _Exchange(
                self, scope, keep_alive, self.expect, method == "HEAD", version == "1.0"
            )
        self.in_body = True  # until on_message_complete, in this same call without a body
        previous = self.current
        self.current = exchange
        if previous is None or previous.response_complete:
            self._start(exchange, app)
        else:  # pipelined: answered in order
            self.pause_reading()
            self.pipeline.appendleft((exchange, app))

    def _target(self) -> tuple[str, bytes, bytes]:
        """The request target's path (decoded), raw path and query, as the scope has
        them (under the root_path when one is set)."""
        url = self.url
        if url[:1] == b"/" and b"#" not in url:
            raw_path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        if root:
            path = root + path
            raw_path = root.encode("ascii") + raw_path
        return path, raw_path, query

    def _scope(
        self,
        method: str,
        version: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> dict[str, Any]:
        root = self.root_path
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": root,
            "headers": headers,
            "state": self.app_state.copy(),
            "method": method,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
        }

    def on_body(self, body: bytes) -> None:
        exchange = self.current
        if exchange is None or exchange.response_complete:
            # Answered without its body read: dropped, up to DRAIN_LIMIT bytes, then the
            # connection closes (its answer written first) rather than read on for ever.
            self.dropped += len(body)
            if self.dropped > DRAIN_LIMIT:
                self.stopped = True
                self.transport.close()
                raise ValueError("unread request body over DRAIN_LIMIT")  # the parser stops
            return
        exchange.body += body
        if len(exchange.body) > HIGH_WATER:
            self.pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        self.in_head = True  # what comes next is the next request's head
        self.in_body = False
        self.head_bytes = 0
        if self.waits_for == _BODY:
            self.waits_for, self.deadline = _NONE, _NEVER
        exchange = self.current
        if exchange is None or exchange.response_complete:
            return
        exchange.more_body = False
        exchange.wake()
        if len(self.pipeline) >= MAX_PIPELINED:
            exchange.keep_alive = False  # answered up to here, then closed
            self.stopped = True
            raise ValueError("too many pipelined requests")  # the parser stops

    # Answering
    def _start(self, exchange: _Exchange, app: Any) -> None:
        self.answering = exchange
        if exchange.fast:  # the passthrough: it starts here, in a task only if it must
            try:
                app(exchange, exchange.scope)
            except BaseException as exc:
                exchange.failed(exc)
            return
        task = exchange.task = self.loop.create_task(exchange.run(app))
        self.tasks.add(task)

    def response_complete(self, exchange: _Exchange) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.pipeline:  # (reading waits until the queue is answered: bounded)
            self._start(*self.pipeline.pop())
            if not self.pipeline:
                self.resume_reading()
            return
        self.resume_reading()
        if self.waits_for == _NONE:  # (a head or a body still coming keeps its deadline)
            self._wait(_IDLE, self.keepalive_timeout)

    def shutdown(self) -> None:
        """uvicorn's graceful stop: close when idle, else after the response going out."""
        exchange = self.current
        if exchange is None or exchange.response_complete:
            self.transport.close()
        else:
            exchange.keep_alive = False

    # The bounds
    def _wait(self, what: int, seconds: float) -> None:
        self.waits_for = what
        self.deadline = self.loop.time() + seconds

    def expired(self, now: float) -> None:
        """The deadline passed (:class:`_Watch`)."""
        what = self.waits_for
        self.waits_for, self.deadline = _NONE, _NEVER
        if self.transport.is_closing():
            return
        if what == _IDLE:
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # (a close would wait for a reader that is not there)
            else:
                self.transport.close()
        elif what == _HEAD:
            self._head_timed_out()
        elif what == _BODY:
            self._body_timed_out(now)

    def send_timed_out(self) -> None:
        """The client has read nothing for body_timeout while a response waits to go out:
        the connection is dropped (its app learns of it as a disconnect)."""
        _TOO_SLOW.warning(
            "dropped a connection whose client read nothing for body_timeout (%gs)",
            self.limits.body_timeout,
        )
        self.transport.abort()

    def _head_timed_out(self) -> None:
        exchange = self.current
        if exchange is not None and not exchange.response_complete:
            # A response is still going out (the late head is pipelined behind it):
            # the connection ends after it.
            exchange.keep_alive = False
            return
        _TOO_SLOW.warning(
            "closed a connection whose request head took over header_timeout (%gs)",
            self.limits.header_timeout,
        )
        self.refuse(408 if self.head_started else None)

    def _body_timed_out(self, now: float) -> None:
        if not self.in_body:
            return
        exchange = self.current
        # the sidecar is the one not reading, or not yet asking for the body (the
        # client rightly waits for its 100 Continue): wait on
        if self.read_paused or (exchange is not None and exchange.waiting_for_100_continue):
            self._wait(_BODY, self.limits.body_timeout)
            return
        _TOO_SLOW.warning(
            "closed a connection whose request body stalled over body_timeout (%gs)",
            self.limits.body_timeout,
        )
        started = exchange is not None and exchange.response_started
        self.refuse(None if started else 408, answer_over=exchange)

    def refuse(self, status: int | None, answer_over: _Exchange | None = None) -> None:
        """Answer *status* (if any and nothing else is being sent) and close."""
        if self.transport.is_closing():
            return
        if status == 431:
            _TOO_LARGE.warning(
                "refused a request head over max_header_bytes (%d bytes): 431",
                self.limits.max_header_bytes,
            )
        self.waits_for, self.deadline = _NONE, _NEVER
        exchange = self.current
        if status is not None and (
            exchange is None or exchange.response_complete or exchange is answer_over
        ):
            body = STATUS_LINE[status][13:].strip()  # the reason phrase
            self.transport.write(
                STATUS_LINE[status]
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                + body
            )
        self.transport.close()


def _refusal(status: int, text: bytes) -> Any:
    """An ASGI app answering *status* with *text* and closing (uvicorn's bytes)."""
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(text)),
        (b"connection", b"close"),
    ]

    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text, "more_body": False})

    return refuse


_service_unavailable: Final = _refusal(503, b"Service Unavailable")
"""The answer over the connection cap."""
_bad_request: Final = _refusal(400, b"Invalid HTTP request received.")
"""The answer to an upgrade request with a body (as to a malformed request)."""

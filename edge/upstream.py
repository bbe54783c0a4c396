"""A pooled HTTP/1.1 client for the one upstream shop, built on httptools.

Why not a general client: the proxy's hot path is "send a request head, stream a
body back", to a single origin, thousands of times a second. Measured on this
project's benchmark (bench/proxy.py, 60 KB page, proxy on one core), httpx's client
spent most of a request in pool bookkeeping and aiohttp's in header objects
(CIMultiDict, str decoding, cookie and tracing hooks). This client keeps headers as
raw ``(bytes, bytes)`` pairs end to end, never decodes them to text, and reuses
keep-alive connections from a plain deque. httptools (llhttp, the parser behind
Node.js and uvicorn) does the actual HTTP parsing; nothing here parses HTTP by hand.

Body chunks are handed over as they arrive; the socket stops being read when more
than ``HIGH_WATER`` bytes wait for the client, so a 200 MB download through a slow
client keeps memory flat.

Two choices keep a request cheap (bench/instructions.py's passthrough of the demo's
32 KB ``/``: 274k instructions a request before, of which they saved 33k and 4.5k):

* the connection is an :class:`asyncio.BufferedProtocol`: the loop reads straight into
  one buffer the pool's connections share (each read is parsed before the next one
  happens), and llhttp's body callback makes the one copy of a body chunk, instead of
  the loop copying each read into a ``bytes`` first;
* the read timeout is one lazy timer per connection rather than a timer per wait:
  each wait moves the deadline forward (a clock read), and the timer, when it fires,
  fails the wait that is past its deadline or sleeps again until the current one.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Final

import httptools

HIGH_WATER: Final = 256 * 1024
READ_BUFFER: Final = 256 * 1024
"""Bytes the loop reads at most at once (uvloop's own read size)."""


class UpstreamError(Exception):
    """The upstream could not be reached, or broke off mid-response."""


class UpstreamConnectError(UpstreamError):
    """Connection refused, unreachable, or the connect timed out."""


class UpstreamTimeout(UpstreamError):
    """The upstream accepted the request but did not answer in time."""


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; carries one request/response at a time."""

    __slots__ = (
        "_body",
        "_body_size",
        "_buffer",
        "_closed",
        "_deadline",
        "_drain_waiter",
        "_error",
        "_loop",
        "_paused",
        "_timer",
        "_waiter",
        "complete",
        "headers",
        "keep_alive",
        "parser",
        "received_any",
        "skip_body",
        "status",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: memoryview) -> None:
        self._loop = loop
        self._buffer = buffer
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self._closed = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._body: collections.deque[bytes] = collections.deque()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.complete = False
        self.received_any = False
        self.skip_body = False
        self._waiter: asyncio.Future[None] | None = None
        """What a wait_head or wait_body waits on (one at a time)."""
        self._body.clear()
        self._body_size = 0
        self._paused = False
        self._error: BaseException | None = None

    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(self._buffer[:nbytes])
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"invalid response from upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stop_timer()
        if self.status and not self.complete and exc is None and self._delimited_by_eof():
            # A response with neither Content-Length nor chunked coding ends at EOF
            # (httptools exposes no llhttp_finish to tell the parser so).
            self.complete = True
            self.keep_alive = False
            self._wake()
        if not self.complete:
            self._fail(UpstreamError("upstream closed the connection mid-response"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(UpstreamError("upstream closed the connection"))

    def pause_writing(self) -> None:
        if self._drain_waiter is None or self._drain_waiter.done():
            self._drain_waiter = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _delimited_by_eof(self) -> bool:
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length":
                return False
            if lname == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.skip_body:
            # A response to HEAD has no body whatever its headers say; llhttp cannot be
            # told so through httptools, so the message ends here and the next response
            # on this connection gets a fresh parser.
            self.complete = True
            self.parser = httptools.HttpResponseParser(self)
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_size += len(body)
        if self._body_size > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200 and self.status != 101:
            # An interim 1xx response: the real one follows on the same connection.
            self.headers = []
            self.status = 0
            return
        self.complete = True
        self._wake()

    # internals

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    @property
    def usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self._closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    async def drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            await waiter

    def _waiting(self, timeout: float) -> asyncio.Future[None]:
        """A future to wait on for at most *timeout* seconds from now. The deadline
        moves; the timer is set only when none is (see :meth:`_expire`)."""
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        deadline = self._deadline = loop.time() + timeout
        timer = self._timer
        if timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        elif timer.when() > deadline:  # a shorter timeout than the last one
            timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)
        return waiter

    def _expire(self) -> None:
        """The timer fired: fail the wait that is past its deadline; sleep again until
        a deadline that moved on since the timer was set; or stop when nothing waits."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._loop.time() < self._deadline - _TIMER_SLACK:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        waiter.set_exception(UpstreamTimeout("upstream did not answer in time"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def send_head(self, head: bytes, is_head: bool, timeout: float) -> asyncio.Future[None]:
        """Write a request without a body; what to await for the response head."""
        self.skip_body = is_head
        assert self.transport is not None
        self.transport.write(head)
        return self._waiting(timeout)

    async def wait_head(self, timeout: float) -> None:
        if self._error is not None:
            raise self._error
        if self.status:
            return
        await self._waiting(timeout)

    def take_body(self) -> bytes:
        """Everything that arrived so far, as one chunk (empty if nothing)."""
        body = self._body
        if not body:
            return b""
        chunk = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._body_size = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    async def wait_body(self, timeout: float) -> None:
        if self._error is not None:
            raise self._error
        if self._body or self.complete:
            return
        await self._waiting(timeout)


_TIMER_SLACK: Final = 0.001
"""A timer may fire up to the loop's clock resolution early (uvloop's is 1 ms): a
deadline this close counts as reached."""


class UpstreamResponse:
    """A response whose head has arrived; iterate ``body()`` for the rest, once."""

    __slots__ = ("_conn", "_pool", "_released", "headers", "status")

    def __init__(self, pool: UpstreamPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._released = False
        self.status: int = conn.status
        self.headers: list[tuple[bytes, bytes]] = conn.headers

    @property
    def ready(self) -> bool:
        """Whether :meth:`take` has something (the next chunk, or the end) now."""
        conn = self._conn
        return conn._error is None and (bool(conn._body) or conn.complete)

    @property
    def whole(self) -> bool:
        """Whether the whole body has come (then :meth:`take` gives it all, and the end)."""
        conn = self._conn
        return conn._error is None and conn.complete

    async def read(self) -> tuple[bytes, bool]:
        """The next body chunk and whether more follows. The last call returns
        ``more=False`` (its chunk possibly empty) and gives the connection back."""
        if not self.ready:
            try:
                await self._conn.wait_body(self._pool.read_timeout)
            except BaseException:
                self.close()
                raise
        return self.take()

    def take(self) -> tuple[bytes, bool]:
        """:meth:`read` when :attr:`ready` (no coroutine: what has come is taken)."""
        conn = self._conn
        chunk = conn.take_body()
        if conn.complete and not conn._body:
            self.release()
            return chunk, False
        return chunk, True

    def release(self) -> None:
        """Give the connection back to the pool if it can carry another request."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.complete and conn.keep_alive and conn.usable:
            self._pool._put(conn)
        else:
            conn.close()

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._conn.close()


class Sent:
    """A request :meth:`UpstreamPool.start` wrote; :meth:`UpstreamPool.finish` waits
    for its response, or :meth:`abandon` closes its connection."""

    __slots__ = ("conn", "head", "is_head", "waiter")

    def __init__(
        self, conn: _Connection, waiter: asyncio.Future[None], head: bytes, is_head: bool
    ) -> None:
        self.conn = conn
        self.waiter = waiter
        self.head = head
        self.is_head = is_head

    def abandon(self) -> None:
        self.waiter.cancel()  # (nobody waits for it: no error to leave unread)
        self.conn.close()


class UpstreamPool:
    """Keep-alive connections to one ``host:port``; at most ``max_idle`` kept idle."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_idle: int = 64,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: collections.deque[_Connection] = collections.deque()
        self._buffer = memoryview(bytearray(READ_BUFFER))
        """What every connection of the pool reads into (see the module's docstring)."""

    def _put(self, conn: _Connection) -> None:
        if len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn._reset()
        self._idle.append(conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, self._buffer),
                    self.host,
                    self.port,
                    ssl=self.ssl or None,
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(f"cannot connect to upstream: {exc}") from None
        return conn

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None = None,
        *,
        chunked: bool = False,
    ) -> UpstreamResponse:
        """Send a request and wait for the response head.

        *headers* are sent as given (the caller has framed them); *body* is streamed
        as it comes, as chunked transfer coding when *chunked*. A request without a
        body that fails on a reused connection before any response byte arrived is
        retried once on a fresh one: the upstream may have closed it while idle.
        """
        parts = [method, b" ", target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        return await self.send(b"".join(parts), method == b"HEAD", body, chunked=chunked)

    async def send(
        self,
        head: bytes,
        is_head: bool,
        body: AsyncIterator[bytes] | None = None,
        *,
        chunked: bool = False,
    ) -> UpstreamResponse:
        """:meth:`request` with the request's head already made (*head*, its bytes up
        to the blank line; *is_head*: a HEAD request, whose response has no body)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.usable:
                continue
            if body is not None:
                return await self._exchange(conn, head, body, chunked, is_head)
            try:  # (the common case, without _exchange's coroutine)
                await conn.send_head(head, is_head, self.read_timeout)
            except UpstreamTimeout:
                conn.close()
                raise
            except UpstreamError:
                conn.close()
                if conn.received_any:
                    raise
                continue
            except BaseException:
                conn.close()
                raise
            return UpstreamResponse(self, conn)
        conn = await self._connect()
        return await self._exchange(conn, head, body, chunked, is_head)

    def start(self, head: bytes, is_head: bool) -> Sent | None:
        """Write a request without a body on a kept connection, now (None when none is
        idle: then :meth:`send`). :meth:`finish` waits for its response: the caller
        may do its own work in between, while the upstream works."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                return Sent(conn, conn.send_head(head, is_head, self.read_timeout), head, is_head)
        return None

    def answered(self, sent: Sent) -> UpstreamResponse | None:
        """The response to a request :meth:`start` wrote, once its waiter is done (from
        the waiter's callback): None when it failed or was cancelled (then
        :meth:`finish` raises, or retries, as :meth:`send` would)."""
        waiter = sent.waiter
        if waiter.cancelled() or waiter.exception() is not None:
            return None
        return UpstreamResponse(self, sent.conn)

    async def finish(self, sent: Sent) -> UpstreamResponse:
        """The response to a request :meth:`start` wrote (as :meth:`send` would have)."""
        conn = sent.conn
        try:
            await sent.waiter
        except UpstreamTimeout:
            conn.close()
            raise
        except UpstreamError:
            conn.close()
            if conn.received_any:
                raise
            return await self.send(sent.head, sent.is_head)  # as send() retries
        except BaseException:
            conn.close()
            raise
        return UpstreamResponse(self, conn)

    async def _exchange(
        self,
        conn: _Connection,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        is_head: bool,
    ) -> UpstreamResponse:
        conn.skip_body = is_head
        transport = conn.transport
        assert transport is not None
        try:
            if body is None:
                transport.write(head)
            else:
                transport.write(head)
                async for chunk in body:
                    if chunk:
                        if chunked:
                            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                        else:
                            transport.write(chunk)
                        await conn.drain()
                    if conn.complete or conn._error is not None:
                        break  # the upstream answered early (e.g. 413): stop sending
                if chunked:
                    transport.write(b"0\r\n\r\n")
            await conn.wait_head(self.read_timeout)
        except BaseException:
            conn.close()
            raise
        return UpstreamResponse(self, conn)

    async def probe(self) -> bool:
        """True when a TCP connection to the upstream can be opened now."""
        try:
            conn = await self._connect()
        except UpstreamError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

"""The passthrough below ASGI: a request the sidecar has nothing to do with, served
straight from the HTTP/1.1 protocol (:mod:`edge.http1`) with the proxy's own parts.

While the sidecar tracks nobody and no rule places anything (``track = false``, no
placements: :class:`edge.respond.Responder`'s first branch), every request outside
``/_edge/`` is forwarded as it is. The protocol asks :meth:`Passthrough.wants` at each
request head (so a reload that turns tracking or a placement on is followed from the
next request), :meth:`Passthrough.prepare` makes what goes upstream, and
:meth:`Passthrough.serve` answers: no ASGI scope, no ``receive``/``send`` messages, no
dispatch through the app and the responder, the response written through the
protocol's own framing (:meth:`edge.http1._Exchange.begin` and ``write_body``).

What the client sees is what the ASGI path sends, byte for byte (tests/test_passthrough.py
runs a corpus through both): the same request head upstream (:meth:`Proxy.forward_head`:
``X-Forwarded-*``, ``Via``, hop-by-hop headers out, the request id), the same pool, the
same response headers (:meth:`Proxy.response_headers`, ``x-request-id``), the same error
pages (502, 504), the same access-log line, ``edge_requests_total`` and
``edge_upstream_seconds``. A request with a body (Content-Length or chunked) goes the
ASGI way: its body's 100-continue, streaming and back-pressure stay where they are.

Why not more: with tracking on, any request may carry a visitor's first cookie or be
recorded (``edge.visitors``), and nothing in the head alone says it will not (an image
request from a new visitor gets the cookie too); a rule set with placements decides on
the head *and* the response.

Measured (``bench/passthrough_ir.py``: a real ``edge serve`` under callgrind, the whole
process, 500 keep-alive requests of a 32 KB page after 100 of warm-up): 234,836
instructions a request through the ASGI app; 227,631 with this module serving in a
task of its own (-3%: the ASGI messages, scope and dispatch were a small part); 210,758
answered from the upstream response's callback without a task (-10%); 204,244 with the
head and body written at once, no flush scheduled (-13%); a 60 KB page 262,029 ->
225,535 (-14%). In CPU time (``bench/goals.py --goal G4``, two pairs of runs on the
busy 2-core machine, the ASGI path then this one) the sidecar over nginx went from
3.46-3.71x / 2.39-3.86x / 1.32-3.32x (``/``, ``/c/scarpe-donna``, 60 KB) to
2.21-2.55x / 2.14-3.19x / 1.19-2.09x; the sidecar's own 95-168 µs a request to
93-120 µs. What is left: one copy of the
body out of the upstream's read buffer (~34k: a 32 KB ``bytes`` for the client's
transport), llhttp both ways, the event loop, and ~50 small Python calls.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from typing import Any, Final

from edge import logs, metrics
from edge.proxy import WATCH_DISCONNECT_AFTER, ClientGone, Headers, Proxy, upstream_failed
from edge.request import RequestHead, sidecar_path
from edge.upstream import Sent, UpstreamError, UpstreamResponse

__all__ = ["Passthrough"]

log = logging.getLogger("edge.proxy")


Prepared = tuple[RequestHead, bytes, bytes, Proxy]
"""What :meth:`Passthrough.prepare` makes: the head, the request as sent upstream, the
request id, the proxy that serves it."""


class Passthrough:
    """The app's passthrough for :class:`edge.http1.Http1` (its ``passthrough``).

    *responder* is the app's :class:`edge.respond.Responder`: its visitors, decider,
    proxy and access log are read at each request (a reload swaps the proxy and the
    log, turns tracking on or off, loads rules)."""

    def __init__(self, responder: Any) -> None:
        self.responder = responder

    def wants(self, path: str) -> bool:
        """Whether a request for *path* (decoded, as the scope's) is one the app only
        forwards: nothing tracked, nothing placed, outside the sidecar's own space."""
        responder = self.responder
        return not (responder.visitors.track or responder.decider.active or sidecar_path(path))

    def prepare(
        self,
        method: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        scheme: str,
    ) -> Prepared | None:
        """What goes upstream for a request without a body (None: one with a body, or
        with both framings; the ASGI path serves it, with the request id put in
        *headers* here, the one it then finds)."""
        head = RequestHead.of(method, path, raw_path, query, scheme, client, headers)
        request_id = logs.request_id(headers)  # sent upstream, and back
        proxy: Proxy = self.responder.proxy
        request = proxy.forward_head(head)
        if request is None:
            return None
        return head, request, request_id, proxy

    def start(self, exchange: Any, prepared: Prepared) -> None:
        """Answer the request: without a task when a kept upstream connection is idle
        and the access log off (the request written upstream now, the answer written
        from the upstream response's callback when the whole of it has come); else
        in a task (:meth:`serve`)."""
        head, request, _, proxy = prepared
        if self.responder.access_log is not None:
            exchange.spawn(self.serve)
            return
        started = time.perf_counter()
        upstream = proxy.pool.start(request, head.method == "HEAD")
        if upstream is None:
            exchange.spawn(self.serve)
            return
        upstream.waiter.add_done_callback(
            lambda _: self._answered(exchange, prepared, upstream, started), context=_CONTEXT
        )

    def _answered(self, exchange: Any, prepared: Prepared, upstream: Sent, started: float) -> None:
        """The upstream's answer to a request :meth:`start` wrote: all of it written to
        the client now when the whole of it has come, else relayed by a task; when the
        upstream failed, :meth:`serve` from there (the pool's retry on a fresh
        connection, or the error page)."""
        head, _, request_id, proxy = prepared
        try:
            response = proxy.pool.answered(upstream)
            if response is None:
                exchange.spawn(
                    lambda exchange, _: self.serve(exchange, prepared, upstream, started)
                )
                return
            seconds = time.perf_counter() - started
            metrics.UPSTREAM.observe(seconds)
            headers = proxy.response_headers(head, response.headers)
            headers.append((b"x-request-id", request_id))
            if not response.whole or exchange.conn.write_paused:
                exchange.spawn(functools.partial(_relay_task, response, headers))
                return
            chunk, _ = response.take()  # (the end: the connection back to the pool)
            if not exchange.disconnected:
                exchange.answer(response.status, headers, chunk)
            metrics.REQUESTS["passthrough"].inc()
        except BaseException as exc:
            metrics.REQUESTS["error"].inc()
            token = logs.REQUEST_ID.set(request_id)  # (in the error's log line)
            try:
                exchange.failed(exc)
            finally:
                logs.REQUEST_ID.reset(token)

    async def serve(
        self, exchange: Any, prepared: Prepared, upstream: Sent | None = None, started: float = 0.0
    ) -> None:
        """Answer the request in its task (:class:`edge.respond.Responder`'s ``__call__``
        and first branch, through the protocol's framing instead of ASGI messages);
        *upstream*: the request was written already (:meth:`start`), and failed."""
        head, request, request_id, proxy = prepared
        logs.REQUEST_ID.set(request_id)  # in this request's log lines (its own task)
        access_log = self.responder.access_log
        outcome = "error"
        if access_log is None:
            try:
                outcome = await _forward(
                    exchange, head, request, request_id, proxy, None, upstream, started
                )
            except ClientGone:
                pass
            finally:
                metrics.REQUESTS[outcome].inc()
            return
        started = time.perf_counter()
        sent = logs.Sent(exchange.send)
        try:
            outcome = await _forward(exchange, head, request, request_id, proxy, sent)
        except ClientGone:
            pass
        finally:
            metrics.REQUESTS[outcome].inc()
            access_log.ended(
                sent, request_id, head.method, head.raw_path, head.client, started, outcome
            )


_CONTEXT: Final = contextvars.Context()
"""The context of the upstream answers' callbacks (empty: they set nothing, and no
copy of the protocol's context is made for each)."""


async def _relay_task(
    response: UpstreamResponse, headers: Headers, exchange: Any, prepared: Prepared
) -> None:
    """The rest of an answer that could not be written at once, in a task."""
    logs.REQUEST_ID.set(prepared[2])
    outcome = "error"
    try:
        outcome = await _relay(exchange, response, headers, None)
    except ClientGone:
        pass
    finally:
        metrics.REQUESTS[outcome].inc()


async def _forward(
    exchange: Any,
    head: RequestHead,
    request: bytes,
    request_id: bytes,
    proxy: Proxy,
    sent: logs.Sent | None,
    upstream: Sent | None = None,
    started: float = 0.0,
) -> str:
    """The exchange with the upstream and the client; its outcome."""
    pool = proxy.pool
    try:
        if upstream is None:
            started = time.perf_counter()
            response = await pool.send(request, head.method == "HEAD")
        else:
            response = await pool.finish(upstream)
    except UpstreamError as exc:
        await upstream_failed(head, exchange.send if sent is None else sent.send, exc)
        return "error"
    seconds = time.perf_counter() - started
    metrics.UPSTREAM.observe(seconds)
    if sent is not None:
        sent.upstream = seconds
    headers = proxy.response_headers(head, response.headers)
    headers.append((b"x-request-id", request_id))
    return await _relay(exchange, response, headers, sent)


async def _relay(
    exchange: Any, response: UpstreamResponse, headers: Headers, sent: logs.Sent | None
) -> str:
    """:func:`edge.proxy.relay`, its messages written straight."""
    conn = exchange.conn
    if conn.write_paused and not exchange.disconnected:
        await conn.drain()
    if not exchange.disconnected:
        exchange.begin(response.status, headers)
    if sent is not None:
        sent.status = response.status
    relayed = 0
    while True:
        try:
            chunk, more = response.take() if response.ready else await response.read()
        except UpstreamError as exc:
            log.warning("upstream broke off mid-response: %s", exc)
            raise ClientGone from None
        if conn.write_paused and not exchange.disconnected:
            await conn.drain()
        if not exchange.disconnected:
            exchange.write_body(chunk, more)
        if sent is not None:
            sent.body_bytes += len(chunk)
        if not more:
            return "passthrough"
        relayed += len(chunk)
        if relayed > WATCH_DISCONNECT_AFTER and exchange.disconnected:
            response.close()
            raise ClientGone

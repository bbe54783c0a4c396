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
recorded (``edge.visitors``), and nothing in the head alone says it will not; a rule
set with placements decides on the head *and* the response. See the figures in
:class:`Passthrough`'s docstring.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from edge import logs, metrics
from edge.proxy import ClientGone, Proxy, upstream_failed
from edge.request import RequestHead
from edge.upstream import UpstreamError

__all__ = ["Passthrough"]

log = logging.getLogger("edge.proxy")

_EDGE_SPACE: Final = "/_edge/"
_EDGE_PREFIX: Final = "/_edge"
_WATCH_DISCONNECT_AFTER: Final = 1 << 20
"""As :func:`edge.proxy.relay`: past this many body bytes, a client that left stops the
upstream's body being pulled."""

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
        return not (
            responder.visitors.track
            or responder.decider.active
            or path.startswith(_EDGE_SPACE)
            or path == _EDGE_PREFIX
        )

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

    async def serve(self, exchange: Any, prepared: Prepared) -> None:
        """Answer the request (:class:`edge.respond.Responder`'s ``__call__`` and first
        branch, through the protocol's framing instead of ASGI messages)."""
        head, request, request_id, proxy = prepared
        logs.REQUEST_ID.set(request_id)  # in this request's log lines (its own task)
        access_log = self.responder.access_log
        outcome = "error"
        if access_log is None:
            try:
                outcome = await _forward(exchange, head, request, request_id, proxy, None)
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
            seconds = time.perf_counter() - started
            access_log.write(
                sent,
                request_id,
                head.method,
                head.raw_path,
                head.client,
                time.time() - seconds,
                seconds,
                sent.upstream,
                outcome,
            )


async def _forward(
    exchange: Any,
    head: RequestHead,
    request: bytes,
    request_id: bytes,
    proxy: Proxy,
    sent: logs.Sent | None,
) -> str:
    """The exchange with the upstream and the client; its outcome."""
    started = time.perf_counter()
    try:
        response = await proxy.pool.send(request, head.method == "HEAD")
    except UpstreamError as exc:
        await upstream_failed(head, exchange.send if sent is None else sent.send, exc)
        return "error"
    seconds = time.perf_counter() - started
    metrics.UPSTREAM.observe(seconds)
    if sent is not None:
        sent.upstream = seconds
    headers = proxy.response_headers(head, response.headers)
    headers.append((b"x-request-id", request_id))
    conn = exchange.conn
    if conn.write_paused and not exchange.disconnected:
        await conn.drain()
    if not exchange.disconnected:
        exchange.begin(response.status, headers)
    if sent is not None:
        sent.status = response.status
    # edge.proxy.relay, its messages written straight
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
        if relayed > _WATCH_DISCONNECT_AFTER and exchange.disconnected:
            response.close()
            raise ClientGone

"""The transparent reverse proxy: a raw ASGI app that forwards to the upstream shop.

Transparent means a client cannot tell the sidecar from the shop except by the
headers a proxy must add: hop-by-hop headers are dropped both ways (RFC 9110 §7.6.1),
``X-Forwarded-*`` and ``Via`` are added, and everything else (status, end-to-end
headers in order, several ``Set-Cookie``, body bytes, content coding) passes as is.
Bodies stream both ways; nothing is buffered whole.

This is raw ASGI on purpose: starlette's Request/Response objects cost about a fifth
of a proxied request's CPU in the project's benchmark, and headers stay bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec

from edge.config import Config
from edge.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from edge.visitors import FORM_LIMIT, Visitors

log = logging.getLogger("edge.proxy")

Scope = dict[str, Any]
Message = dict[str, Any]

# Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus
# Expect: the sidecar answers 100-continue itself before reading the body.
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
_REQUEST_DROP: Final = _HOP_BY_HOP | {b"expect"}
_VIA: Final = b"1.1 shop-edge"
# After this many response bytes a watcher notices a client that went away, so a
# large download stops being pulled from the upstream.
_WATCH_DISCONNECT_AFTER: Final = 1 << 20


class _ClientGone(Exception):
    pass


class Proxy:
    """ASGI app forwarding every request to ``config.upstream``."""

    def __init__(self, config: Config, visitors: Visitors | None = None) -> None:
        scheme, host, port = config.upstream_origin
        self.config = config
        self.visitors = visitors
        self.pool = UpstreamPool(
            host,
            port,
            ssl=scheme == "https",
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_idle=config.pool_size,
        )
        default_port = 443 if scheme == "https" else 80
        netloc = host if port == default_port else f"{host}:{port}"
        self._upstream_host = netloc.encode("ascii")
        # Both spellings of the upstream's own origin, to recognise it in Location.
        self._upstream_origins = tuple(
            {f"{scheme}://{netloc}".encode(), f"{scheme}://{host}:{port}".encode()}
        )
        self._public_origin = config.public_url.rstrip("/").encode() or None
        self._rewrite_host = config.upstream_host == "rewrite"
        self._trust_forwarded = config.trust_forwarded

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1011})
            return
        with contextlib.suppress(_ClientGone):
            await self._forward(scope, receive, send)

    def _upstream_request_headers(
        self, scope: Scope
    ) -> tuple[list[tuple[bytes, bytes]], bytes, bool | None]:
        """Headers to send upstream, the public Host, and how the body is framed:
        ``None`` no body, ``False`` Content-Length, ``True`` chunked."""
        out: list[tuple[bytes, bytes]] = []
        host = b""
        forwarded_for = b""
        via = b""
        proto = b""
        forwarded_host = b""
        connection_tokens: list[bytes] = []
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:  # names are lower-case in ASGI
            if name in _REQUEST_DROP:
                if name == b"connection":
                    connection_tokens.extend(t.strip() for t in value.lower().split(b","))
                elif name == b"transfer-encoding":
                    chunked = True
                continue
            if name == b"host":
                host = value
                if self._rewrite_host:
                    continue
            elif name == b"x-forwarded-for":
                forwarded_for = value
                continue
            elif name == b"via":
                via = value
                continue
            elif name == b"x-forwarded-proto":
                proto = value
                continue
            elif name == b"x-forwarded-host":
                forwarded_host = value
                continue
            elif name == b"content-length":
                length = value
            out.append((name, value))
        if chunked and length is not None:
            raise _BadRequest("both Content-Length and Transfer-Encoding")
        if connection_tokens:
            dropped = set(connection_tokens)
            out = [(n, v) for n, v in out if n not in dropped]

        if self._rewrite_host or not host:
            out.append((b"host", self._upstream_host))
        client = scope.get("client")
        client_ip = client[0].encode() if client else b"unknown"
        out.append(
            (b"x-forwarded-for", forwarded_for + b", " + client_ip if forwarded_for else client_ip)
        )
        if not (self._trust_forwarded and proto):
            proto = scope["scheme"].encode()
        out.append((b"x-forwarded-proto", proto))
        if not (self._trust_forwarded and forwarded_host):
            forwarded_host = host
        if forwarded_host:
            out.append((b"x-forwarded-host", forwarded_host))
        out.append((b"via", via + b", " + _VIA if via else _VIA))
        if chunked:
            out.append((b"transfer-encoding", b"chunked"))
            framing: bool | None = True
        elif length is not None and length != b"0":
            framing = False
        else:
            framing = None
        return out, host, framing

    def _public_origin_for(self, scope: Scope, host: bytes) -> bytes:
        if self._public_origin is not None:
            return self._public_origin
        if self._trust_forwarded:
            for name, value in scope["headers"]:
                if name == b"x-forwarded-proto":
                    return value + b"://" + host
        return scope["scheme"].encode() + b"://" + host

    def response_headers(
        self, scope: Scope, host: bytes, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """The upstream's end-to-end headers, lower-cased names, Location made public."""
        out: list[tuple[bytes, bytes]] = []
        connection_tokens: list[bytes] | None = None
        via = b""
        for name, value in headers:
            name = name.lower()
            if name in _HOP_BY_HOP:
                if name == b"connection":
                    connection_tokens = [t.strip() for t in value.lower().split(b",")]
                continue
            if name == b"location" and value.startswith(self._upstream_origins) and host:
                for origin in self._upstream_origins:
                    if value.startswith(origin) and value[len(origin) : len(origin) + 1] in (
                        b"",
                        b"/",
                        b"?",
                        b"#",
                    ):
                        value = self._public_origin_for(scope, host) + value[len(origin) :]
                        break
            elif name == b"via":
                via = value
                continue
            out.append((name, value))
        if connection_tokens:
            dropped = set(connection_tokens)
            out = [(n, v) for n, v in out if n not in dropped]
        out.append((b"via", via + b", " + _VIA if via else _VIA))
        return out

    async def open_upstream(
        self, scope: Scope, receive: Any, send: Any, form: bytearray | None = None
    ) -> tuple[UpstreamResponse, bytes] | None:
        """Send the request upstream (copying up to ``FORM_LIMIT`` body bytes into
        *form* when given). On failure the error page is sent and None returned."""
        try:
            headers, host, framing = self._upstream_request_headers(scope)
        except _BadRequest as exc:
            await send_error(scope, send, 400, str(exc))
            return None
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target = target + b"?" + scope["query_string"]
        body = None if framing is None else _request_body(receive, form)
        try:
            response = await self.pool.request(
                scope["method"].encode(), target, headers, body, chunked=framing is True
            )
        except UpstreamTimeout:
            log.warning("upstream timed out: %s %s", scope["method"], scope["path"])
            await send_error(scope, send, 504)
            return None
        except UpstreamConnectError as exc:
            log.warning("upstream unreachable: %s", exc)
            await send_error(scope, send, 502)
            return None
        except UpstreamError as exc:
            log.warning("upstream failed: %s", exc)
            await send_error(scope, send, 502)
            return None
        return response, host

    async def _forward(self, scope: Scope, receive: Any, send: Any) -> None:
        visitors = self.visitors if self.visitors is not None and self.visitors.track else None
        visit = visitors.begin(scope) if visitors is not None else None
        form = None
        if visit is not None and visit.visitor_id:
            assert visitors is not None
            if visitors.observer.wants_form(scope["method"], scope["path"]):
                form = bytearray()
        opened = await self.open_upstream(scope, receive, send, form)
        if opened is None:
            return
        response, host = opened
        headers = self.response_headers(scope, host, response.headers)
        content_type = b""
        if visit is not None:
            content_type = next((v for n, v in headers if n == b"content-type"), b"")
            if visit.new:
                # The cookie rides only on pages: an image or a stylesheet fetched
                # without one (a CDN's origin pull, say) stays cacheable and anonymous.
                if content_type.startswith(b"text/html"):
                    headers = _private(headers)
                    headers.append(visitors.cookie_header(visit))  # type: ignore[union-attr]
                else:
                    visit.visitor_id = None
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await stream_body(response, receive, send)
        if visit is not None and visit.visitor_id:
            form_bytes = bytes(form) if form is not None and len(form) <= FORM_LIMIT else None
            visitors.after(visit, scope, response.status, content_type, form_bytes)  # type: ignore[union-attr]


def _private(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Keep a response that sets the visitor cookie out of shared caches: a cached
    copy would hand one visitor's id to everyone."""
    out = []
    found = False
    for name, value in headers:
        if name == b"cache-control":
            found = True
            parts = [
                p.strip()
                for p in value.split(b",")
                if p.strip()
                and p.strip().lower() != b"public"
                and not p.strip().lower().startswith(b"s-maxage")
            ]
            if b"private" not in (p.lower() for p in parts) and b"no-store" not in (
                p.lower() for p in parts
            ):
                parts.insert(0, b"private")
            value = b", ".join(parts)
        out.append((name, value))
    if not found:
        out.append((b"cache-control", b"private"))
    return out


async def stream_body(response: UpstreamResponse, receive: Any, send: Any) -> None:
    """Relay the upstream body chunk by chunk; stop pulling if the client goes away."""
    sent = 0
    watcher: asyncio.Task[Any] | None = None
    try:
        while True:
            try:
                chunk, more = await response.read()
            except UpstreamError as exc:
                # The head is out; all that is left is to cut the client connection so
                # it sees a truncated response rather than a complete wrong one.
                log.warning("upstream broke off mid-response: %s", exc)
                raise _ClientGone from None
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if not more:
                return
            sent += len(chunk)
            if watcher is None:
                if sent > _WATCH_DISCONNECT_AFTER:
                    watcher = asyncio.ensure_future(_wait_disconnect(receive))
            elif watcher.done():
                response.close()
                raise _ClientGone
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()


async def _wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _request_body(receive: Any, copy: bytearray | None = None) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if copy is not None and len(copy) <= FORM_LIMIT:
            copy += chunk
        yield chunk
        if not message.get("more_body", False):
            return


class _BadRequest(Exception):
    pass


_TITLES: Final = {
    400: "Bad Request",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_EXPLANATIONS: Final = {
    400: "The request could not be understood.",
    502: "The shop cannot be reached right now. Please try again in a moment.",
    503: "The shop is not ready yet. Please try again in a moment.",
    504: "The shop took too long to answer. Please try again in a moment.",
}
_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} {title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;color:#222;max-width:32rem;margin:15vh auto;padding:0 1rem}}
h1{{font-size:1.4rem}}p{{color:#555}}</style></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""


def _wants_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept":
            return b"application/json" in value and b"text/html" not in value
    return False


async def send_error(scope: Scope, send: Any, status: int, detail: str | None = None) -> None:
    """A small error page (JSON when the client asks for JSON). Nothing internal leaks:
    *detail* is only used for 400s, where it describes the client's own request."""
    title = _TITLES[status]
    text = detail if status == 400 and detail else _EXPLANATIONS[status]
    if _wants_json(scope):
        body = msgspec.json.encode({"error": title.lower().replace(" ", "_"), "message": text})
        content_type = b"application/json"
    else:
        body = _PAGE.format(status=status, title=title, text=text).encode()
        content_type = b"text/html; charset=utf-8"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if status == 400:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

"""Transparent forwarding to the upstream shop, and the error pages when it fails.

Transparent means a client cannot tell the sidecar from the shop except by the
headers a proxy must add: hop-by-hop headers are dropped both ways (RFC 9110 §7.6.1),
``X-Forwarded-*`` and ``Via`` are added, and everything else (status, end-to-end
headers in order, several ``Set-Cookie``, body bytes, content coding) passes as is.
Bodies stream both ways; nothing is buffered whole. Headers stay raw bytes: the
request path is raw ASGI (starlette's Request/Response objects cost about a fifth of
a proxied request's CPU in the project's benchmark).

This module knows nothing of visitors or personalization: :mod:`edge.respond` asks
it to open the upstream request, to make the response's headers public, and to relay
a body.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec

from edge.config import Config
from edge.request import RequestHead
from edge.upstream import (
    Sent,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)

__all__ = ["ClientGone", "Proxy", "send_error", "upstream_failed"]

log = logging.getLogger("edge.proxy")

Headers = list[tuple[bytes, bytes]]

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
_DROP: Final = "drop"
_HOST_HEADER: Final = "host"
_LENGTH: Final = "length"
_FORWARDED: Final = "forwarded"
_REQUEST_SPECIAL: Final = {
    **dict.fromkeys(_REQUEST_DROP, _DROP),
    b"host": _HOST_HEADER,
    b"content-length": _LENGTH,
    **dict.fromkeys(
        (b"x-forwarded-for", b"via", b"x-forwarded-proto", b"x-forwarded-host"), _FORWARDED
    ),
}
"""The request headers the proxy does something with, and what (any other goes as is)."""
_RESPONSE_SPECIAL: Final = {
    **dict.fromkeys(_HOP_BY_HOP, _DROP),
    **dict.fromkeys((b"location", b"via", b"x-request-id"), _FORWARDED),
}
"""The response headers the proxy does something with (any other goes as is)."""
_VIA: Final = b"1.1 shop-edge"
# After this many response bytes a watcher notices a client that went away, so a
# large download stops being pulled from the upstream.
WATCH_DISCONNECT_AFTER: Final = 1 << 20


class ClientGone(Exception):
    """The exchange cannot go on: the client went away, or the response already
    started cannot be finished (the connection is cut so the client sees a truncated
    response, never a complete wrong one)."""


class _BadRequest(Exception):
    pass


class Proxy:
    """Forwards requests to ``config.upstream`` over a pool of keep-alive connections."""

    def __init__(self, config: Config) -> None:
        scheme, host, port = config.upstream_origin
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
        self._allowed_hosts = tuple(h.strip().lower().encode() for h in config.allowed_hosts)

    def _request_head(self, head: RequestHead) -> tuple[bytes, bool | None]:
        """The request's head as sent upstream (request line, headers, blank line), and
        how the body is framed: ``None`` no body, ``False`` Content-Length, ``True``
        chunked. Each header is looked up once in ``_REQUEST_SPECIAL``; the others go
        out as they came, straight into the head's bytes."""
        parts = [head.method.encode(), b" ", head.target, b" HTTP/1.1\r\n"]
        host = b""
        forwarded_for = b""
        via = b""
        proto = b""
        forwarded_host = b""
        connection_tokens: list[bytes] = []
        length: bytes | None = None
        chunked = False
        special = _REQUEST_SPECIAL.get
        for name, value in head.headers:  # names are lower-case in ASGI
            what = special(name)
            if what is not None:
                if what is _DROP:
                    if name == b"connection":
                        connection_tokens.extend(t.strip() for t in value.lower().split(b","))
                    elif name == b"transfer-encoding":
                        chunked = True
                    continue
                if what is _HOST_HEADER:
                    host = value
                    if self._rewrite_host:
                        continue
                elif what is _LENGTH:
                    length = value
                elif name == b"x-forwarded-for":
                    forwarded_for = value
                    continue
                elif name == b"via":
                    via = value
                    continue
                elif name == b"x-forwarded-proto":
                    proto = value
                    continue
                else:  # x-forwarded-host
                    forwarded_host = value
                    continue
            parts += (name, b": ", value, b"\r\n")
        if chunked and length is not None:
            raise _BadRequest("both Content-Length and Transfer-Encoding")
        if connection_tokens:
            dropped = set(connection_tokens) - _REQUEST_DROP
            if dropped:  # (the hop-by-hop ones are out already)
                parts = _without(parts, dropped)

        if self._rewrite_host or not host:
            parts += (b"host: ", self._upstream_host, b"\r\n")
        client_ip = head.client.encode() if head.client else b"unknown"
        if forwarded_for:
            client_ip = forwarded_for + b", " + client_ip
        parts += (b"x-forwarded-for: ", client_ip, b"\r\nx-forwarded-proto: ")
        if not (self._trust_forwarded and proto):
            proto = head.scheme.encode()
        parts += (proto, b"\r\n")
        if not (self._trust_forwarded and forwarded_host):
            forwarded_host = host
        if forwarded_host:
            parts += (b"x-forwarded-host: ", forwarded_host, b"\r\n")
        parts += (b"via: ", via + b", " + _VIA if via else _VIA, b"\r\n")
        if chunked:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
            framing: bool | None = True
        else:
            parts.append(b"\r\n")
            framing = None if length is None or length == b"0" else False
        return b"".join(parts), framing

    def _public_origin_for(self, head: RequestHead, host: bytes) -> bytes | None:
        """The public origin a redirect names: ``public_url``; else the request's
        ``Host`` when it is a well-formed host[:port] (and one of ``allowed_hosts``
        when they are set), with the request's scheme or a trusted
        ``X-Forwarded-Proto`` of exactly ``http`` or ``https``. None: no origin can be
        trusted, and the redirect names the path alone (the browser stays where it is).
        """
        if self._public_origin is not None:
            return self._public_origin
        if not _valid_host(host) or not self._allowed(host):
            return None
        proto = b""
        if self._trust_forwarded:
            proto = _forwarded_proto(_header(head, b"x-forwarded-proto"))
        return (proto or head.scheme.encode()) + b"://" + host

    def _allowed(self, host: bytes) -> bool:
        """Whether *host* is one of ``allowed_hosts`` (any when none are set): by name,
        port aside, case aside; an entry starting with ``.`` allows its subdomains."""
        if not self._allowed_hosts:
            return True
        name = _host_name(host)
        return any(
            name == entry or (entry.startswith(b".") and name.endswith(entry))
            for entry in self._allowed_hosts
        )

    def response_headers(self, head: RequestHead, headers: Headers) -> Headers:
        """The upstream's end-to-end headers, lower-cased names, Location made public."""
        out: Headers = []
        connection_tokens: list[bytes] | None = None
        via = b""
        host_named = False
        special = _RESPONSE_SPECIAL.get
        for name, value in headers:
            name = name.lower()
            what = special(name)
            if what is not None:
                if what is _DROP:
                    if name == b"connection":
                        connection_tokens = [t.strip() for t in value.lower().split(b",")]
                    continue
                if name == b"location":
                    if value.startswith(self._upstream_origins):
                        value = self._public_location(head, value)
                        if self._public_origin is None and b"://" in value:
                            host_named = True  # the request's Host named it: see _private_redirect
                elif name == b"via":
                    via = value
                    continue
                else:  # x-request-id: the request's own goes back (edge/respond.py)
                    continue
            out.append((name, value))
        if connection_tokens:
            dropped = set(connection_tokens)
            out = [(n, v) for n, v in out if n not in dropped]
        out.append((b"via", via + b", " + _VIA if via else _VIA))
        return _private_redirect(out) if host_named else out

    def _public_location(self, head: RequestHead, location: bytes) -> bytes:
        """A Location naming the upstream's own origin, on the public one instead (or
        as a path alone when the request names no origin that can be trusted)."""
        for origin in self._upstream_origins:
            if location.startswith(origin) and location[len(origin) : len(origin) + 1] in (
                b"",
                b"/",
                b"?",
                b"#",
            ):
                rest = location[len(origin) :]
                public = self._public_origin_for(head, _header(head, b"host"))
                if public is None:
                    return rest if rest.startswith(b"/") else b"/" + rest
                return public + rest
        return location

    async def open(
        self, head: RequestHead, receive: Any, send: Any, form: bytearray | None = None
    ) -> UpstreamResponse | None:
        """Send the request upstream (copying up to ``FORM_LIMIT`` body bytes into
        *form* when given) and wait for the response head. On failure the error page
        is sent and None returned."""
        try:
            request, framing = self._request_head(head)
        except _BadRequest as exc:
            await send_error(head, send, 400, str(exc))
            return None
        body = None if framing is None else _request_body(receive, form)
        try:
            return await self.pool.send(
                request, head.method == "HEAD", body, chunked=framing is True
            )
        except UpstreamError as exc:
            await upstream_failed(head, send, exc)
        return None

    def forward_head(self, head: RequestHead) -> bytes | None:
        """The head sent upstream for a request without a body (:mod:`edge.passthrough`);
        None for one with a body, or with both framings (:meth:`open` answers it)."""
        try:
            request, framing = self._request_head(head)
        except _BadRequest:
            return None
        return request if framing is None else None

    def start(self, head: RequestHead) -> Sent | None:
        """For a request without a body, when a kept connection is idle: the request
        written upstream now, for :meth:`finish` to wait for its response; what comes
        in between runs while the upstream works (the page's decision, in
        :mod:`edge.respond`, without a task of its own). None: use :meth:`open`."""
        try:
            request, framing = self._request_head(head)
        except _BadRequest:
            return None  # open() answers it
        if framing is not None:
            return None
        return self.pool.start(request, head.method == "HEAD")

    async def finish(self, head: RequestHead, sent: Sent, send: Any) -> UpstreamResponse | None:
        """:meth:`open`'s second half, for a request :meth:`start` wrote."""
        try:
            return await self.pool.finish(sent)
        except UpstreamError as exc:
            await upstream_failed(head, send, exc)
        return None


async def upstream_failed(head: RequestHead, send: Any, exc: UpstreamError) -> None:
    """The error page for a request the upstream did not answer, and its log line."""
    if isinstance(exc, UpstreamTimeout):
        log.warning("upstream timed out: %s %s", head.method, head.path)
        await send_error(head, send, 504)
    elif isinstance(exc, UpstreamConnectError):
        log.warning("upstream unreachable: %s", exc)
        await send_error(head, send, 502)
    else:
        log.warning("upstream failed: %s", exc)
        await send_error(head, send, 502)


def _without(parts: list[bytes], names: set[bytes]) -> list[bytes]:
    """The head's *parts* (the request line's four, then four a header) without the
    headers named in *names* (a ``Connection`` header's options)."""
    kept = parts[:4]
    for i in range(4, len(parts), 4):
        if parts[i] not in names:
            kept += parts[i : i + 4]
    return kept


_HOST: Final = re.compile(
    rb"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
    rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?"
    rb"|\[[0-9A-Fa-f:.]{2,45}\]"
)
_PORT: Final = re.compile(rb":[0-9]{1,5}")


def _valid_host(host: bytes) -> bool:
    """Whether a ``Host`` header is a host name, IPv4 or bracketed IPv6 address with
    an optional port (RFC 3986 host[:port], letters, digits, ``-`` ``_`` ``.``):
    nothing that could end an origin early (``/``, ``?``, ``#``, ``@``, ``\\``,
    spaces) or smuggle a second one."""
    if not host or len(host) > 260:
        return False
    name = _host_name(host)
    port = host[len(name) :]
    return _HOST.fullmatch(name) is not None and (not port or _PORT.fullmatch(port) is not None)


def _host_name(host: bytes) -> bytes:
    """*host* without its port, lower-cased."""
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1].lower() if end > 0 else host.lower()
    return host.partition(b":")[0].lower()


def _forwarded_proto(value: bytes) -> bytes:
    """The scheme an ``X-Forwarded-Proto`` names (its first entry, when a chain of
    proxies sent several) when it is exactly ``http`` or ``https``; else b"" (then
    the request's own scheme is used)."""
    first = value.partition(b",")[0].strip().lower()
    return first if first in (b"http", b"https") else b""


def _private_redirect(headers: Headers) -> Headers:
    """A redirect whose origin the request's ``Host`` named (``public_url`` unset) is
    kept out of shared caches (``Cache-Control: private``): a cache that keys on
    something else than the Host it forwards would hand one request's origin to
    everyone. Set ``public_url`` to let a CDN keep it."""
    out: Headers = []
    found = False
    for name, value in headers:
        if name == b"cache-control":
            found = True
            parts = [p.strip() for p in value.split(b",") if p.strip()]
            kept = [
                p for p in parts if p.lower() != b"public" and not p.lower().startswith(b"s-maxage")
            ]
            if not any(p.lower() in (b"private", b"no-store") for p in kept):
                kept.insert(0, b"private")
            value = b", ".join(kept)
        out.append((name, value))
    if not found:
        out.append((b"cache-control", b"private"))
    return out


def _header(head: RequestHead, name: bytes) -> bytes:
    """The first *name* header's value: for what only a redirect or an error page needs
    (a forwarded request's head is not read: see :meth:`RequestHead.read_headers`)."""
    return next((value for n, value in head.headers if n == name), b"")


FORM_LIMIT: Final = 16 * 1024
"""Request bodies copied for the sidecar (cart forms) stop being copied past this."""


async def read(response: UpstreamResponse) -> tuple[bytes, bool]:
    try:
        return await response.read()
    except UpstreamError as exc:
        # The head is out; all that is left is to cut the client connection so it
        # sees a truncated response rather than a complete wrong one.
        log.warning("upstream broke off mid-response: %s", exc)
        raise ClientGone from None


async def relay(response: UpstreamResponse, receive: Any, send: Any) -> None:
    """Relay the upstream body chunk by chunk; stop pulling if the client goes away."""
    sent = 0
    watcher: asyncio.Task[Any] | None = None
    try:
        while True:
            try:  # (read() inlined, and no coroutine at all for a chunk already here)
                chunk, more = response.take() if response.ready else await response.read()
            except UpstreamError as exc:
                log.warning("upstream broke off mid-response: %s", exc)
                raise ClientGone from None
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if not more:
                return
            sent += len(chunk)
            if watcher is None:
                if sent > WATCH_DISCONNECT_AFTER:
                    watcher = asyncio.ensure_future(_wait_disconnect(receive))
            elif watcher.done():
                response.close()
                raise ClientGone
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
            raise ClientGone
        chunk = message.get("body", b"")
        if copy is not None and len(copy) <= FORM_LIMIT:
            copy += chunk
        yield chunk
        if not message.get("more_body", False):
            return


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


async def send_error(head: RequestHead, send: Any, status: int, detail: str | None = None) -> None:
    """A small error page (JSON when the client asks for JSON). Nothing internal leaks:
    *detail* is only used for 400s, where it describes the client's own request."""
    title = _TITLES[status]
    text = detail if status == 400 and detail else _EXPLANATIONS[status]
    accept = _header(head, b"accept")
    if b"application/json" in accept and b"text/html" not in accept:
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
    request_id = _header(head, b"x-request-id")  # the one edge/respond.py kept or made
    if request_id:
        headers.append((b"x-request-id", request_id))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head.method == "HEAD" else body})

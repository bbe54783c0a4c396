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
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import cachetools
import msgspec

from edge.config import Config
from edge.page import Decision, Personalizer
from edge.personalize import codec
from edge.preview import PREVIEW_COOKIE
from edge.rewrite import Edit, Plan
from edge.rewrite.replay import ReplayCache
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

    def __init__(
        self,
        config: Config,
        visitors: Visitors | None = None,
        personalizer: Personalizer | None = None,
    ) -> None:
        scheme, host, port = config.upstream_origin
        self.config = config
        self.visitors = visitors
        self.personalizer = personalizer
        self.max_personalized_bytes = config.personalize_max_bytes
        self._plans = _PlanCache(replay_bytes=config.replay_cache_bytes)
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
        target = _page_of(scope)
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
        personalizer = self.personalizer
        if personalizer is not None and self.visitors is not None and personalizer.wants(scope):
            await self._forward_personalized(scope, receive, send, personalizer, self.visitors)
            return
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

    async def _forward_personalized(
        self, scope: Scope, receive: Any, send: Any, personalizer: Personalizer, visitors: Visitors
    ) -> None:
        """A page view that rules may change: the decision is made while the upstream
        works; an HTML answer with edits goes through the streaming rewriter."""
        preview, preview_cookie = personalizer.preview_of(scope)
        visit = visitors.begin(scope)
        deciding = asyncio.ensure_future(personalizer.decide(scope, visit, preview))
        if_none_match = next((v for n, v in scope["headers"] if n == b"if-none-match"), b"")
        if any(name in _CONDITIONAL for name, _ in scope["headers"]):
            # A revalidation: the browser's copy may predate this visitor's edits, and
            # the shop would confirm it with a 304. When the page is personalized, ask
            # the shop for the page itself.
            early = await deciding
            if early is not None and early.edits:
                scope = scope | {
                    "headers": [(n, v) for n, v in scope["headers"] if n not in _CONDITIONAL]
                }
        try:
            opened = await self.open_upstream(scope, receive, send)
        except BaseException:
            deciding.cancel()
            raise
        if opened is None:
            deciding.cancel()
            return
        response, host = opened
        headers = self.response_headers(scope, host, response.headers)
        content_type = b""
        encoding = b""
        length = -1
        for name, value in headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-encoding":
                encoding = value
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        is_page = response.status == 200 and content_type.startswith(b"text/html")
        decision: Decision | None = None
        if is_page:
            decision = await deciding
        else:
            deciding.cancel()
        track = visit.visitor_id is not None and preview is None
        if visit.new:
            if is_page and track:
                headers = _private(headers)
                headers.append(visitors.cookie_header(visit))
            else:
                visit.visitor_id = None
        codec_ok = codec.supported(encoding.decode("latin-1") or None)
        rewrite = (
            decision is not None
            and bool(decision.edits)
            and codec_ok
            and (length < 0 or length <= self.max_personalized_bytes)
        )
        if preview is not None or preview_cookie == "":
            headers = _preview_headers(headers, preview_cookie, scope)
        if rewrite:
            assert decision is not None
            headers = _personalized_headers(headers, decision)
        elif decision is not None:
            headers.append(_server_timing(decision.seconds))
        if decision is not None and decision.clear_form_error:
            headers.append((b"set-cookie", FORM_ERROR_CLEAR))
        applied: list[str] = []
        if rewrite and preview is None and if_none_match and _matches(if_none_match, headers):
            # The browser holds this very page: same upstream version, same edits.
            response.close()
            kept = [(n, v) for n, v in headers if n in _NOT_MODIFIED_KEEP]
            await send({"type": "http.response.start", "status": 304, "headers": kept})
            await send({"type": "http.response.body", "body": b""})
            assert decision is not None
            applied = [e.placement for e in decision.edits]

        else:
            await self._send_page(
                response,
                receive,
                send,
                headers,
                decision if rewrite else None,
                content_type,
                encoding,
                applied,
                _page_of(scope),
            )
        if track and visit.visitor_id:
            extra = None
            if decision is not None:
                shown = set(applied)
                extra = [
                    e
                    for e in decision.exposures()
                    if e.held_out or e.placement_id in shown  # type: ignore[attr-defined]
                ]
            visitors.after(visit, scope, response.status, content_type, None, extra)

    async def _send_page(
        self,
        response: UpstreamResponse,
        receive: Any,
        send: Any,
        headers: list[tuple[bytes, bytes]],
        decision: Decision | None,
        content_type: bytes,
        encoding: bytes,
        applied: list[str],
        page: bytes = b"",
    ) -> None:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if decision is not None:
            applied.extend(
                await self._rewrite_body(
                    response, receive, send, decision, content_type, encoding, page
                )
            )
        else:
            await stream_body(response, receive, send)

    async def _rewrite_body(
        self,
        response: UpstreamResponse,
        receive: Any,
        send: Any,
        decision: Decision,
        content_type: bytes,
        encoding: bytes,
        page: bytes,
    ) -> list[str]:
        """Decode, rewrite, re-encode, chunk by chunk. Returns the placements whose
        slot was found. A body that cannot be decoded midway is cut off (the head is
        out already); one that the rewriter cannot parse goes on unchanged. *page*
        (the request target) names the page for the replay cache."""
        coding = encoding.decode("latin-1") or None
        decoder = codec.Decoder.for_header(coding, max_output=self.max_personalized_bytes * 8)
        encoder = codec.Encoder.for_header(coding)
        rewriter = None
        slots = None
        started = time.perf_counter()
        while True:
            chunk, more = await _read(response)
            try:
                data = decoder.feed(chunk)
                if not more:
                    data += decoder.flush()
            except codec.CodecError as exc:
                log.warning("cannot decode the page (%s); response cut off", exc)
                response.close()
                raise _ClientGone from None
            if rewriter is None and (data or not more):
                charset = codec.charset_of(content_type.decode("latin-1"), data[:1024])
                rewriter, slots = self._plans.rewriter(decision, charset, page)
            out = b""
            if rewriter is not None:
                out = rewriter.write(data) if data else b""
                if not more:
                    out += rewriter.end()
            body = encoder.feed(out) + (encoder.finish() if not more else encoder.flush())
            if body or not more:
                await send({"type": "http.response.body", "body": body, "more_body": more})
            if not more:
                break
        log.debug("rewrote a page in %.2f ms", (time.perf_counter() - started) * 1000)
        if rewriter is None or slots is None or rewriter.error is not None:
            return []
        return [slots[i] for i, n in enumerate(rewriter.counts) if n]


def _page_of(scope: Scope) -> bytes:
    """The request target: the path as the client sent it, and the query."""
    target: bytes = scope.get("raw_path") or scope["path"].encode()
    if scope["query_string"]:
        target = target + b"?" + scope["query_string"]
    return target


class _Late:
    """Stands in for one request's reorder callbacks inside a shared, cached plan.
    :class:`~edge.rewrite.replay.Replayer` sets :attr:`target` right before feeding
    that request's rewriter (feeding is synchronous, so concurrent requests never
    see each other's target)."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        self.target: Any = None

    def key(self, attrs: dict[str, str]) -> str | None:
        return self.target.key(attrs)

    def order(self, keys: list[str | None]) -> list[str]:
        return self.target.order(keys)


@functools.lru_cache(maxsize=4096)
def _encoded(html: str, charset: str) -> bytes:
    """A snippet's HTML in the page's charset. Remembered: a rendered snippet is most
    often the very same string again (the snippets' render cache), and the same bytes
    object keeps its hash for the plan and replay lookups keyed by it."""
    return codec.encode_text(html, charset)


class _PlanCache:
    """Compiled rewrite plans by their edits' shape and content (compiling selectors
    costs more than rewriting a page, and most visitors of a segment get the same
    snippet), and rewrites to replay by page and edits' shape (see
    :mod:`edge.rewrite.replay`: the same page with the same slots filled costs a
    comparison instead of a parse)."""

    def __init__(self, size: int = 512, replay_bytes: int = 32 << 20) -> None:
        self._plans: cachetools.LRUCache[tuple[Any, ...], tuple[Plan, dict[int, _Late]]] = (
            cachetools.LRUCache(size)
        )
        self.replays = ReplayCache(replay_bytes)

    def rewriter(self, decision: Decision, charset: str, page: bytes) -> tuple[Any, list[str]]:
        shape: list[tuple[Any, ...]] = []
        targets: dict[int, Any] = {}
        for i, slot_edit in enumerate(decision.edits):
            edit = slot_edit.edit
            if edit.action == "reorder":
                shape.append((edit.selector, "reorder"))
                targets[i] = edit.key.__self__  # type: ignore[union-attr]
            else:
                content = edit.content
                if isinstance(content, str):
                    content = _encoded(content, charset)
                shape.append((edit.selector, edit.action, content))
        key = tuple(shape)
        cached = self._plans.get(key)
        if cached is None:
            late: dict[int, _Late] = {}
            edits = []
            for i, item in enumerate(key):
                if item[1] == "reorder":
                    holder = late[i] = _Late()
                    edits.append(Edit(item[0], "reorder", key=holder.key, order=holder.order))
                else:
                    edits.append(Edit(item[0], item[1], item[2]))
            cached = self._plans[key] = (Plan(edits), late)
        plan, late = cached

        def bind(bound: dict[int, Any]) -> None:
            for i, holder in late.items():
                holder.target = bound[i]

        contents = [None if ce.action == "reorder" else ce.content for ce in plan.compiled]
        replay_key = (page, charset, tuple(item[:2] for item in key))
        rewriter = self.replays.rewriter(
            replay_key, contents, targets, lambda _bound: plan.rewriter(), bind
        )
        return rewriter, [e.placement for e in decision.edits]


_VARY_COOKIE: Final = b"Cookie"
_CONDITIONAL: Final = frozenset({b"if-none-match", b"if-modified-since"})
_NOT_MODIFIED_KEEP: Final = frozenset(
    {b"etag", b"cache-control", b"vary", b"server-timing", b"set-cookie", b"via", b"date"}
)


def _matches(if_none_match: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Weak comparison (RFC 9110 13.1.2) of our ETag with the browser's list."""
    etag = next((v for n, v in headers if n == b"etag"), b"")
    if not etag:
        return False
    ours = etag.removeprefix(b"W/")
    return any(t.strip().removeprefix(b"W/") == ours for t in if_none_match.split(b","))


FORM_ERROR_CLEAR: Final = b"edge_form_error=; Path=/; Max-Age=0"


def _server_timing(seconds: float) -> tuple[bytes, bytes]:
    return (b"server-timing", b'edge;dur=%.2f;desc="shop-edge"' % (seconds * 1000))


def _personalized_headers(
    headers: list[tuple[bytes, bytes]], decision: Decision
) -> list[tuple[bytes, bytes]]:
    """Headers made true for the rewritten body: no length (it streams), a weak ETag
    of the upstream's version and this visitor's edits, never in a shared cache."""
    out: list[tuple[bytes, bytes]] = []
    vary: list[bytes] = []
    for name, value in _private(headers):
        if name in (b"content-length", b"accept-ranges", b"content-md5", b"last-modified"):
            continue
        if name == b"etag":
            inner = value.removeprefix(b"W/").strip(b'"')[:64]
            value = b'W/"' + inner + b"-" + decision.fingerprint.encode() + b'"'
        elif name == b"vary":
            vary.extend(v.strip() for v in value.split(b",") if v.strip())
            continue
        out.append((name, value))
    if not any(v.lower() in (b"cookie", b"*") for v in vary):
        vary.append(_VARY_COOKIE)
    out.append((b"vary", b", ".join(vary)))
    out.append(_server_timing(decision.seconds))
    return out


def _preview_headers(
    headers: list[tuple[bytes, bytes]], token: str | None, scope: Scope
) -> list[tuple[bytes, bytes]]:
    """A preview is for one merchant: never stored anywhere; the token moves from
    the link to a session cookie (or is cleared with ``edge_preview=off``)."""
    out = [(n, v) for n, v in headers if n != b"cache-control"]
    out.append((b"cache-control", b"no-store"))
    if token is not None:
        value = f"{PREVIEW_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
        if not token:
            value += "; Max-Age=0"
        out.append((b"set-cookie", value.encode()))
    return out


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


async def _read(response: UpstreamResponse) -> tuple[bytes, bool]:
    try:
        return await response.read()
    except UpstreamError as exc:
        # The head is out; all that is left is to cut the client connection so it
        # sees a truncated response rather than a complete wrong one.
        log.warning("upstream broke off mid-response: %s", exc)
        raise _ClientGone from None


async def stream_body(response: UpstreamResponse, receive: Any, send: Any) -> None:
    """Relay the upstream body chunk by chunk; stop pulling if the client goes away."""
    sent = 0
    watcher: asyncio.Task[Any] | None = None
    try:
        while True:
            chunk, more = await _read(response)
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

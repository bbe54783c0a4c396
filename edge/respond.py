"""One request to the shop, from head to record: the sidecar's request path.

Every request outside ``/_edge/`` comes here (raw ASGI, see :mod:`edge.proxy` for
why), and goes through the same steps:

1. **visit** — the head is parsed once (:class:`~edge.request.RequestHead`), the
   visitor recognised (:mod:`edge.visitors`), the page found in the page map
   (:mod:`edge.pages`) and the campaign it came from (:mod:`edge.observe`);
2. **decide** — for a page view that rules may change, the decision
   (:mod:`edge.decide`) is made while the upstream works; a page type personalized
   in the browser gets none: it goes out as the shop made it, cacheable, with the
   browser snippet's script tag (:mod:`edge.browser`);
3. **headers** — the upstream's headers made public (:mod:`edge.proxy`), then true
   for what is sent: a new visitor's cookie (and ``private``), a personalized page's
   ETag, ``Vary: Cookie``, ``private`` and no length, a preview's ``no-store``; a
   revalidation of a page this visitor already holds gets a 304;
4. **body** — byte for byte (:func:`edge.proxy.relay`), or through the rewriter
   (:mod:`edge.rewriting`);
5. **record** — what the exchange showed, and the placements' exposures, are queued
   (:mod:`edge.recorder`) once the response is out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from edge import logs, metrics
from edge import preview as previews
from edge.codec import CodecError
from edge.decide import Decider, Decision
from edge.forms import ERROR_COOKIE_CLEAR
from edge.headers import script_nonce
from edge.identity import Identity
from edge.observe import Observer
from edge.pages import Page
from edge.preview import Preview
from edge.profiles.model import Touch
from edge.proxy import FORM_LIMIT, ClientGone, Headers, Proxy, read, relay
from edge.reading import PageBody, Reading
from edge.recorder import Recorder
from edge.request import RequestHead
from edge.rewrite.edits import Edit
from edge.rewriting import Rewriting, SlotEdit
from edge.rules import LiveRules
from edge.upstream import UpstreamResponse
from edge.visitors import Visit, Visitors, answers_a_page

__all__ = ["Responder"]

log = logging.getLogger("edge.respond")

_VARY_COOKIE: Final = b"Cookie"
_NOT_MODIFIED_KEEP: Final = frozenset(
    {b"etag", b"cache-control", b"vary", b"server-timing", b"set-cookie", b"via", b"date"}
)


@dataclass(slots=True)
class Exchange:
    """One request and its response, as the steps find them out."""

    head: RequestHead
    visit: Visit
    now: int
    """When the request came (its events and campaign touch are stamped with it)."""
    tracked: bool
    """Whether what the visitor does here is recorded (not without consent, not in a
    preview)."""
    preview: Preview | None = None
    preview_cookie: str | None = None
    """The preview cookie to set (empty: to clear), when the link carried a token."""
    page: Page | None = None
    touch: Touch | None = None
    touch_read: bool = False
    """Whether :attr:`touch` was read from the request already (a decision needs it
    first; the record, only for an answer to a page request)."""
    form: bytearray | None = None
    """The cart form's body, copied as it is forwarded, when it is one."""
    if_none_match: bytes = b""
    decision: Decision | None = None
    status: int = 0
    content_type: bytes = b""
    applied: list[str] = field(default_factory=list)
    """The placements whose slot was found in the page sent."""
    body: PageBody | None = None
    """The page's body, collected for its readers (see :mod:`edge.reading`)."""
    read_events: Sequence[Any] = ()
    """What the page's readers found in it."""
    mini_cart: bool = False
    """Whether the page is read for its mini-cart too (tracked, ``[mini_cart]`` set)."""
    browser_slots: tuple[str, ...] = ()
    """The page is personalized in the browser (``browser_pages``, ``render =
    "browser"``): the selectors of its slots the snippet may change. No decision, the
    shop's caching headers kept, and the snippet's script tag put in its head."""


class Responder:
    """The ASGI app for everything the shop answers."""

    def __init__(
        self,
        proxy: Proxy,
        visitors: Visitors,
        observer: Observer,
        recorder: Recorder,
        decider: Decider,
        rewriting: Rewriting,
        rules: LiveRules,
        identity: Identity,
        reading: Reading | None = None,
    ) -> None:
        self.reading = reading
        self.proxy = proxy
        self.visitors = visitors
        self.observer = observer
        self.recorder = recorder
        self.decider = decider
        self.rewriting = rewriting
        self.rules = rules
        self.identity = identity
        self.access_log: logs.AccessLog | None = None
        """Where each request's access log line goes (None: no access log)."""
        self.snippet_tag: Callable[[tuple[str, ...]], str] | None = None
        """The browser snippet's script tag for a page personalized in the browser,
        given its slots' selectors (None: ``inject_snippet`` off, the theme has it)."""
        self.clock: Callable[[], float] = time.time
        """The time what a request shows is recorded at (``edge demo`` moves it on)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1011})
            return
        head = RequestHead.parse(scope, read=False)
        request_id = logs.request_id(head.headers)  # sent upstream, and back
        logs.REQUEST_ID.set(request_id)  # in this request's log lines (its own task)
        if self.access_log is not None:
            await self._logged(head, receive, send, request_id, self.access_log)
            return
        outcome = "error"
        try:  # (try/except, not contextlib.suppress: three Python calls less a request)
            outcome = await self._respond(head, receive, send, request_id, None)
        except ClientGone:
            pass
        finally:
            metrics.REQUESTS[outcome].inc()

    async def _logged(
        self, head: RequestHead, receive: Any, send: Any, request_id: bytes, log: logs.AccessLog
    ) -> None:
        """The exchange, with its access log line."""
        started = time.perf_counter()
        sent = logs.Sent(send)
        outcome = "error"
        try:
            outcome = await self._respond(head, receive, sent.send, request_id, sent)
        except ClientGone:
            pass
        finally:
            metrics.REQUESTS[outcome].inc()
            log.ended(sent, request_id, head.method, head.raw_path, head.client, started, outcome)

    async def _respond(
        self,
        head: RequestHead,
        receive: Any,
        send: Any,
        request_id: bytes,
        sent: logs.Sent | None,
    ) -> str:
        """The exchange, and its outcome (as ``edge_requests_total`` counts it)."""
        if not (self.visitors.track or self.decider.active):
            # Nothing for the sidecar to do (no visitor to track, no page that rules may
            # change): forwarded as it is, its headers never read.
            started = time.perf_counter()
            response = await self.proxy.open(head, receive, send)
            if response is None:
                return "error"
            _answered(started, sent)
            headers = self.proxy.response_headers(head, response.headers)
            headers.append((b"x-request-id", request_id))
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            await relay(response, receive, send)
            return "passthrough"
        head.read_headers()
        exchange, personalize = self.visit(head)
        deciding: asyncio.Future[Decision | None] | None = None
        if personalize:
            response, deciding, started = await self._open_deciding(exchange, receive, send)
        else:
            started = time.perf_counter()
            response = await self.proxy.open(head, receive, send, exchange.form)
        if response is None:
            if deciding is not None:
                deciding.cancel()
            return "error"
        _answered(started, sent)
        headers = self.proxy.response_headers(head, response.headers)
        headers.append((b"x-request-id", request_id))
        content_type, encoding, length = _body_facts(headers)
        exchange.status = response.status
        exchange.content_type = content_type
        if deciding is not None:  # the decision is needed for a page, and only then
            if response.status == 200 and content_type.startswith(b"text/html"):
                exchange.decision = await deciding
            else:
                deciding.cancel()
        headers, edited = self._headers(exchange, headers, encoding, length)
        bindings = self.visitors.session_headers(exchange.visit, response.status, headers)
        if bindings:
            headers = _private(headers) + bindings
        page = exchange.page
        reading = self.reading
        # A page type with no reader costs a set lookup; any page is read for its
        # mini-cart, for a tracked visitor, while the live rules name one.
        if reading is not None and (
            (page is not None and page.type in reading.page_types)
            or (exchange.tracked and self.rules.ruleset.carts.mini_cart)
        ):
            exchange.mini_cart = exchange.tracked and bool(self.rules.ruleset.carts.mini_cart)
            if reading.wants(
                head.method,
                response.status,
                content_type,
                page,
                head.path,
                mini_cart=exchange.mini_cart,
            ):
                exchange.body = reading.body(encoding, content_type)
        if edited:
            await self._send_edited(exchange, response, headers, encoding, receive, send)
        elif (injected := self._injection(exchange, encoding, length, headers)) is not None:
            heads = ([(n, v) for n, v in headers if n != b"content-length"], headers)
            await self._rewrite(response, receive, send, heads, encoding, exchange, injected)
        else:
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            if exchange.body is None:
                await relay(response, receive, send)
            else:
                await _relay_read(response, receive, send, exchange.body)
        if exchange.body is not None:
            self._read(exchange)
        self.record(exchange)
        return _outcome(exchange, edited)

    def _injection(
        self, exchange: Exchange, encoding: bytes, length: int, headers: list[tuple[bytes, bytes]]
    ) -> list[SlotEdit] | None:
        """The script tag's edit for a page personalized in the browser, when the
        sidecar injects it and the page can be rewritten (else None: as it is). Under
        the shop's nonce-based Content-Security-Policy the tag carries the page's
        nonce (else a strict policy blocks it)."""
        make = self.snippet_tag
        if (
            make is None
            or not exchange.browser_slots
            or exchange.status != 200
            or not exchange.content_type.startswith(b"text/html")
            or not self.rewriting.applies(encoding, length)
        ):
            return None
        tag = make(exchange.browser_slots)
        for name, value in headers:
            if name == b"content-security-policy" and (nonce := script_nonce(value)):
                tag = tag.replace("<script ", f'<script nonce="{nonce}" ', 1)
                break
        return [SlotEdit("", "shop-edge-snippet", Edit("head", "append", tag))]

    def _read(self, exchange: Exchange) -> None:
        """After the response: the page's readers, on the body collected."""
        assert self.reading is not None and exchange.body is not None
        try:
            exchange.read_events = self.reading.read(
                exchange.page,
                exchange.head.path,
                exchange.body,
                self.rules.ruleset,
                mini_cart=exchange.mini_cart,
            )
        except Exception:  # the visitor has the page; what it said is lost, nothing else
            page_type = exchange.page.type if exchange.page is not None else "untyped"
            log.exception("reading a %s page failed", page_type)

    def visit(self, head: RequestHead) -> tuple[Exchange, bool]:
        """Step 1: who asks for which page, coming from where; and whether the page
        may be personalized."""
        wants = self.decider.wants(head)
        preview, preview_cookie = (
            previews.of_request(self.identity, head) if wants else (None, None)
        )
        visit = self.visitors.begin(head)
        tracked = visit.visitor_id is not None and preview is None
        personalize = wants and not visit.crawler
        exchange = Exchange(head, visit, int(self.clock()), tracked, preview, preview_cookie)
        if tracked or personalize:
            exchange.page = self.rules.ruleset.pages.page(head.path)
        if wants and preview is None:
            # (a crawler's copy too: whoever asks first fills a CDN's cache)
            page = exchange.page or self.rules.ruleset.pages.page(head.path)
            browser_slots = self.decider.rendering().slots.get(page.type) if page else None
            if browser_slots is not None:  # the browser personalizes it: no decision
                exchange.browser_slots = browser_slots or ("",)
                personalize = False
        if personalize:
            exchange.touch = self.observer.touch(head, exchange.now)
            exchange.touch_read = True
        if tracked and self.observer.wants_form(head.method, head.path):
            exchange.form = bytearray()
        return exchange, personalize

    async def _open_deciding(
        self, exchange: Exchange, receive: Any, send: Any
    ) -> tuple[UpstreamResponse | None, asyncio.Future[Decision | None], float]:
        """Step 2 and the upstream's response: the decision, made while the upstream
        works; when the response is its time.

        The request is written upstream first (on a kept connection) and the decision
        made in this task meanwhile: no task of its own (a task a request less). With
        no kept connection idle, the decision is a task while one opens. A revalidation
        is decided first: the browser's copy may predate this visitor's edits, and the
        shop would confirm it with a 304; when the page is personalized, the shop is
        asked for the page itself."""
        head = exchange.head
        decided = asyncio.get_running_loop().create_future()
        if head.conditional:
            exchange.if_none_match = head.if_none_match
            early = await self._decide(exchange)
            decided.set_result(early)
            if early is not None and early.edits:
                head.without_conditionals()
            started = time.perf_counter()
            return await self.proxy.open(head, receive, send, exchange.form), decided, started
        started = time.perf_counter()
        written = self.proxy.start(head)
        if written is None:
            deciding = asyncio.ensure_future(self._decide(exchange))
            try:
                response = await self.proxy.open(head, receive, send, exchange.form)
            except BaseException:
                deciding.cancel()
                raise
            return response, deciding, started
        try:
            decided.set_result(await self._decide(exchange))
        except BaseException:
            written.abandon()
            raise
        return await self.proxy.finish(head, written, send), decided, started

    def _decide(self, exchange: Exchange) -> Coroutine[Any, Any, Decision | None]:
        return self.decider.decide(
            exchange.head, exchange.visit, exchange.page, exchange.touch, exchange.preview
        )

    def _headers(
        self, exchange: Exchange, headers: Headers, encoding: bytes, length: int
    ) -> tuple[Headers, bool]:
        """Step 3: the response's headers made true for what is sent, and whether the
        body is rewritten (a rewritten page's are then finished by
        :meth:`_send_edited`, which keeps these to fail open with)."""
        visit = exchange.visit
        decision = exchange.decision
        if visit.new:
            # The cookie rides only on pages, redirects to one included (see
            # answers_a_page): an image fetched without one stays cacheable, anonymous.
            # (Not on a page personalized in the browser, which stays cacheable: the
            # cookie comes with its /_edge/decide.)
            if exchange.tracked and (
                visit.rotated
                or (
                    not exchange.browser_slots
                    and answers_a_page(exchange.head, exchange.status, exchange.content_type)
                )
            ):
                headers = _private(headers)
                headers.append(self.visitors.cookie_header(visit))
            else:
                visit.visitor_id = None
        edited = (
            decision is not None
            and bool(decision.edits)
            and self.rewriting.applies(encoding, length)
        )
        if exchange.preview is not None or exchange.preview_cookie == "":
            headers = previews.response_headers(headers, exchange.preview_cookie)
        if decision is not None:
            if not edited:  # (an edited page's headers are made by _send_edited)
                headers.append(_server_timing(decision.seconds))
            if decision.clear_form_error:
                headers.append((b"set-cookie", ERROR_COOKIE_CLEAR.encode()))
        return headers, edited

    async def _send_edited(
        self,
        exchange: Exchange,
        response: UpstreamResponse,
        headers: Headers,
        encoding: bytes,
        receive: Any,
        send: Any,
    ) -> None:
        """Step 4 for a page with edits: rewritten as it streams; or a 304 when the
        browser holds this very page already (same upstream version, same edits).
        *headers* are the page's as they would go out unchanged; the rewritten page's
        are made from them here."""
        decision = exchange.decision
        assert decision is not None
        timing = _server_timing(decision.seconds)
        original = [*headers, timing]
        headers = _personalized_headers(headers, decision, timing)
        if (
            exchange.preview is None
            and exchange.if_none_match
            and _matches(exchange.if_none_match, headers)
        ):
            response.close()
            kept = [(n, v) for n, v in headers if n in _NOT_MODIFIED_KEEP]
            await send({"type": "http.response.start", "status": 304, "headers": kept})
            await send({"type": "http.response.body", "body": b""})
            exchange.applied = [e.placement for e in decision.edits]
            return
        exchange.applied = await self._rewrite(
            response, receive, send, (headers, original), encoding, exchange, decision.edits
        )

    def record(self, exchange: Exchange) -> None:
        """Step 5, once the response is out: queue what the exchange showed of the
        visitor, and what the page showed them (its placements' exposures)."""
        visit = exchange.visit
        if not (exchange.tracked and visit.visitor_id):
            return
        head = exchange.head
        form = exchange.form
        events = self.observer.exchange_events(
            head,
            exchange.page,
            exchange.status,
            exchange.content_type,
            bytes(form) if form is not None and len(form) <= FORM_LIMIT else None,
        )
        events += exchange.read_events
        if exchange.decision is not None:
            events += exchange.decision.exposures(set(exchange.applied))
        touch = None
        # The landing campaign: on any answer to a page request, a redirect included (a
        # campaign link the shop redirects may lose its utm_* on the way).
        if head.method == "GET" and answers_a_page(head, exchange.status, exchange.content_type):
            if not exchange.touch_read:
                exchange.touch = self.observer.touch(head, exchange.now)
            touch = exchange.touch
        self.recorder.observed(visit, events, touch, exchange.now)

    async def _rewrite(
        self,
        response: UpstreamResponse,
        receive: Any,
        send: Any,
        heads: tuple[Headers, Headers],
        encoding: bytes,
        exchange: Exchange,
        edits: list[SlotEdit],
    ) -> list[str]:
        """Send the body through *edits* (the decision's, or the snippet's script tag);
        the placements whose slot was found. *heads*: the rewritten page's headers, and
        the shop's own.

        The head waits for the first bytes of the rewritten body, and the shop's
        bytes are kept until then. Whatever fails in decoding or rewriting before
        that (a body that is not the gzip it says, a bug) fails open: the shop's own
        head and bytes go out, and the rest of the body after them, untouched. Once a rewritten byte is out the page cannot be
        taken back, and neither the original nor the rewritten page can be finished:
        the response is aborted (the connection closed without the last chunk), so
        the client sees a broken transfer rather than a truncated page that looks
        complete. A rewriter that is not confident never gets here: it bails into
        passing the page through (:mod:`edge.rewrite.rewriter`)."""
        body = self.rewriting.start(edits, exchange.content_type, encoding, exchange.head.target)
        page_body = exchange.body
        held: list[bytes] | None = []  # the shop's bytes while none of ours is out
        while True:
            chunk, more = response.take() if response.ready else await read(response)
            if page_body is not None:
                page_body.feed(chunk)
            try:
                out = body.feed(chunk, more)
            except Exception as exc:
                _log_failure(exc, sent=held is None)
                if held is None:
                    response.close()
                    raise ClientGone from None
                held.append(chunk)
                await _send_original(response, receive, send, heads[1], held, more, page_body)
                return []
            if held is not None:
                if more and not out:
                    held.append(chunk)
                    continue
                held = None
                status = response.status
                await send({"type": "http.response.start", "status": status, "headers": heads[0]})
            if out or not more:
                await send({"type": "http.response.body", "body": out, "more_body": more})
            if not more:
                self.decider.page_seen(exchange.head.path, body.top)
                return body.applied()


def _log_failure(exc: Exception, sent: bool) -> None:
    what = "response cut off" if sent else "the shop's page sent unchanged"
    if isinstance(exc, CodecError):
        log.warning("cannot decode the page (%s); %s", exc, what)
    else:  # a bug: its traceback is what tells where
        log.exception("rewriting the page failed; %s", what)


async def _send_original(
    response: UpstreamResponse,
    receive: Any,
    send: Any,
    headers: Headers,
    held: list[bytes],
    more: bool,
    page_body: PageBody | None,
) -> None:
    """Fail open: the shop's head, the bytes of its body read so far, then the rest."""
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"".join(held), "more_body": more})
    if more:
        if page_body is None:
            await relay(response, receive, send)
        else:
            await _relay_read(response, receive, send, page_body)


def _answered(started: float, sent: logs.Sent | None) -> None:
    """The upstream's response head came: how long it took (``edge_upstream_seconds``,
    the access log)."""
    seconds = time.perf_counter() - started
    metrics.UPSTREAM.observe(seconds)
    if sent is not None:
        sent.upstream = seconds


def _outcome(exchange: Exchange, edited: bool) -> str:
    """How the exchange went, for ``edge_requests_total``; the exposures counted."""
    if exchange.visit.crawler:
        return "bot"
    decision = exchange.decision
    if decision is not None:
        if exchange.preview is not None:
            return "preview"
        for placement in exchange.applied:
            if placement:
                metrics.exposure(placement)
        for placement in decision.held_out:
            metrics.exposure(placement, held_out=True)
    return "personalized" if edited else "passthrough"


async def _relay_read(response: UpstreamResponse, receive: Any, send: Any, body: PageBody) -> None:
    """:func:`edge.proxy.relay`, keeping a copy of the body for its readers while it
    is small enough to be read (then relayed as usual)."""
    while body.whole:
        chunk, more = response.take() if response.ready else await read(response)
        body.feed(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": more})
        if not more:
            return
    await relay(response, receive, send)


def _body_facts(headers: Headers) -> tuple[bytes, bytes, int]:
    """Content-Type, Content-Encoding and Content-Length (-1 when not given)."""
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
    return content_type, encoding, length


def _matches(if_none_match: bytes, headers: Headers) -> bool:
    """Weak comparison (RFC 9110 13.1.2) of our ETag with the browser's list."""
    etag = next((v for n, v in headers if n == b"etag"), b"")
    if not etag:
        return False
    ours = etag.removeprefix(b"W/")
    return any(t.strip().removeprefix(b"W/") == ours for t in if_none_match.split(b","))


def _server_timing(seconds: float) -> tuple[bytes, bytes]:
    return (b"server-timing", b'edge;dur=%.2f;desc="shop-edge"' % (seconds * 1000))


def _personalized_headers(
    headers: Headers, decision: Decision, timing: tuple[bytes, bytes]
) -> Headers:
    """Headers made true for the rewritten body: no length (it streams), a weak ETag
    of the upstream's version and this visitor's edits, never in a shared cache
    (:func:`_private`'s work and this one's in one pass over the headers)."""
    out: Headers = []
    vary: list[bytes] = []
    found = False
    by_cookie = False
    kind_of = _PERSONAL_KIND.get
    for header in headers:
        kind = kind_of(header[0])
        if kind is None:
            out.append(header)
        elif kind is _CACHE_CONTROL:
            found = True
            out.append((b"cache-control", _private_cache_control(header[1])))
        elif kind is _ETAG:
            inner = header[1].removeprefix(b"W/").strip(b'"')[:64]
            out.append((b"etag", b'W/"' + inner + b"-" + decision.fingerprint.encode() + b'"'))
        elif kind is _VARY:
            tokens, cookie = _vary_tokens(header[1])
            vary += tokens
            by_cookie = by_cookie or cookie
        # else: a CDN's caching order, or what a streamed, rewritten body makes untrue
    if not found:
        out.append(_PRIVATE)
    if not by_cookie:
        vary.append(_VARY_COOKIE)
    out.append((b"vary", b", ".join(vary)))
    out.append(timing)
    return out


_CDN_CACHE_HEADERS: Final = frozenset(
    {
        b"cdn-cache-control",
        b"surrogate-control",
        b"x-accel-expires",
        b"cloudflare-cdn-cache-control",
    }
)
"""Caching orders for a CDN or nginx alone, which they obey over ``Cache-Control`` and
often without ``Vary: Cookie``: on a private response they would still share it."""
_PRIVATE: Final = (b"cache-control", b"private")
_CACHE_CONTROL: Final = "cache-control"
_ETAG: Final = "etag"
_VARY: Final = "vary"
_DROPPED: Final = "dropped"
_PERSONAL_KIND: Final = {
    **dict.fromkeys(_CDN_CACHE_HEADERS, _DROPPED),
    **dict.fromkeys(
        (b"content-length", b"accept-ranges", b"content-md5", b"last-modified"), _DROPPED
    ),
    b"cache-control": _CACHE_CONTROL,
    b"etag": _ETAG,
    b"vary": _VARY,
}
"""What :func:`_personalized_headers` does with a header, by name (None: keeps it)."""


def _private(headers: Headers) -> Headers:
    """Keep a response that sets the visitor cookie, or is personalized, out of shared
    caches: a cached copy would hand one visitor's id, name or cart to everyone. The
    CDN's own caching headers go too (``_CDN_CACHE_HEADERS``)."""
    out = []
    found = False
    for header in headers:
        name = header[0]
        if name == b"cache-control":
            found = True
            out.append((name, _private_cache_control(header[1])))
        elif name not in _CDN_CACHE_HEADERS:
            out.append(header)
    if not found:
        out.append(_PRIVATE)
    return out


@functools.lru_cache(maxsize=256)
def _private_cache_control(value: bytes) -> bytes:
    """A ``Cache-Control`` without ``public`` or ``s-maxage``, and ``private`` unless it
    says ``private`` or ``no-store``. Kept by value: a shop sends a handful of them.

    Why by value, not the whole head by its header set: the set holds the request's
    own id and the shop's ``Date``, so such a key misses, or costs its hash and compare
    on every request. With this, :func:`_vary_tokens` and one pass over the headers,
    :func:`_personalized_headers` went from 46.7k to 18.2k instructions a call
    (callgrind, the demo's seven headers)."""
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
    return b", ".join(parts)


@functools.lru_cache(maxsize=256)
def _vary_tokens(value: bytes) -> tuple[tuple[bytes, ...], bool]:
    """A ``Vary`` header's field names, stripped, in order, and whether one of them is
    ``Cookie`` or ``*``; kept by value."""
    tokens = tuple(v.strip() for v in value.split(b",") if v.strip())
    return tokens, any(v.lower() in (b"cookie", b"*") for v in tokens)

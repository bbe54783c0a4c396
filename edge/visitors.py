"""The visitor side of the request path: who is asking, and what they just did.

:meth:`Visitors.begin` reads the signed cookie and the consent cookie (microseconds,
no I/O). After the response has gone out, :meth:`Visitors.after` turns what the
sidecar saw (a page of a given type, a search, a landing campaign, a cart form) into
events and queues them; a background task writes them in batches, off the hot path.
Without consent nothing is queued and no cookie is set.

A profile is stored from a visitor's second request on, when their browser returned
the cookie: what the first request showed (the landing page and its campaign) waits
in a bounded in-memory table until then. Cookieless one-hit clients (crawlers,
scripts, load generators) so cost a table entry, never a database write.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from edge.identity import VISITOR_COOKIE, Identity, parse_cookies
from edge.observe import Observer
from edge.profiles import events as ev
from edge.profiles.model import SESSION_GAP, Profile, Touch, new_profile
from edge.profiles.service import ProfileService
from edge.profiles.store import Expiring

log = logging.getLogger("edge.visitors")

FORM_LIMIT: Final = 16 * 1024
"""Cart forms larger than this are forwarded but not read."""
_FLUSH_EVERY: Final = 0.05
_MAX_PENDING: Final = 100_000
_FIRST_HITS: Final = 200_000


# Search engines and link-preview fetchers: they get the page the merchant published,
# and nothing of theirs is recorded.
# Searched in the lowercased header: with re.IGNORECASE the same search took 8x as long.
_CRAWLER = re.compile(
    rb"bot\b|bot/|crawler|spider|slurp|facebookexternalhit|bingpreview|mediapartners-google"
    rb"|adsbot|lighthouse|pingdom|uptimerobot|embedly|quora link preview|whatsapp|telegrambot"
)


@functools.lru_cache(maxsize=4096)
def is_crawler(user_agent: bytes) -> bool:
    """Kept by User-Agent: a few hundred distinct headers cover nearly every request."""
    return _CRAWLER.search(user_agent.lower()) is not None


@dataclass(slots=True)
class Visit:
    visitor_id: str | None
    """None without consent (or with tracking off): nothing is stored."""
    new: bool
    secure: bool
    consent: bool
    crawler: bool = False


class Visitors:
    def __init__(
        self,
        identity: Identity,
        profiles: ProfileService,
        observer: Observer,
        *,
        track: bool = True,
    ) -> None:
        self.identity = identity
        self.profiles = profiles
        self.observer = observer
        self.track = track
        self._pending: list[tuple[str, list[ev.BaseEvent], list[Touch]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._dropped = 0
        self._unwritten: dict[str, tuple[list[ev.BaseEvent], Touch | None]] = {}
        """New visitors' first events between their second request and the flush."""
        self._first_hits: Expiring[str, tuple[list[ev.BaseEvent], Touch | None]] = Expiring(
            _FIRST_HITS, SESSION_GAP
        )

    def begin(self, scope: dict[str, Any]) -> Visit:
        cookie_header = b""
        secure = scope.get("scheme") == "https"
        user_agent = b""
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie_header = cookie_header + b"; " + value if cookie_header else value
            elif name == b"x-forwarded-proto":
                secure = secure or value == b"https"
            elif name == b"user-agent":
                user_agent = value
        if user_agent and is_crawler(user_agent):
            return Visit(None, False, secure, False, crawler=True)
        cookies = parse_cookies(cookie_header) if cookie_header else {}
        consent = self.identity.has_consent(cookies)
        if not (consent and self.track):
            return Visit(None, False, secure, consent)
        visitor_id = (
            self.identity.verify(cookies[VISITOR_COOKIE]) if VISITOR_COOKIE in cookies else None
        )
        if visitor_id is None:
            return Visit(self.identity.new_visitor_id(), True, secure, consent)
        return Visit(visitor_id, False, secure, consent)

    def cookie_header(self, visit: Visit) -> tuple[bytes, bytes]:
        """The Set-Cookie header giving a new visitor their signed id."""
        assert visit.visitor_id is not None
        return (
            b"set-cookie",
            self.identity.set_cookie_header(visit.visitor_id, secure=visit.secure),
        )

    def after(
        self,
        visit: Visit,
        scope: dict[str, Any],
        status: int,
        content_type: bytes,
        form: bytes | None,
        extra: list[ev.BaseEvent] | None = None,
    ) -> None:
        """Queue the events this exchange shows, and *extra* ones the sidecar made
        (placement exposures), no I/O here."""
        if visit.visitor_id is None:
            return
        method = scope["method"]
        path = scope["path"]
        events: list[ev.BaseEvent] = []
        touch = None
        if form is not None and status < 400:
            fields = dict(parse_qsl(form.decode("utf-8", "replace")))
            events.extend(self.observer.cart_events(method, path, fields))
        if method == "GET" and 200 <= status < 300 and content_type.startswith(b"text/html"):
            query = scope["query_string"].decode("latin-1")
            _, page_events = self.observer.page_events(path, query)
            events.extend(page_events)
            referrer = ""
            for name, value in scope["headers"]:
                if name == b"referer":
                    referrer = value.decode("latin-1")
                    break
            touch = self.observer.touch(query, referrer, int(time.time()))
        if extra:
            events.extend(extra)
        if not events:
            return
        # Stamped now: a first hit is stored only with the visitor's next request, and
        # must count at the time it happened (the visit starts with its landing).
        now = int(time.time())
        for event in events:
            if event.ts is None:
                event.ts = now
        if visit.new:
            self._first_hits[visit.visitor_id] = (events, touch)
            return
        touches = [touch] if touch is not None else []
        first = self._first_hits.pop(visit.visitor_id, None)
        if first is not None:
            events = first[0] + events
            if first[1] is not None:
                touches.insert(0, first[1])
            # Until the flush has written it, the new profile exists only here.
            self._unwritten[visit.visitor_id] = (events, first[1])
        self._queue(visit.visitor_id, events, touches)

    def pending_profile(self, visitor_id: str) -> Profile | None:
        """A new visitor's profile as their first hit made it, not stored yet."""
        first = self._first_hits.get(visitor_id) or self._unwritten.get(visitor_id)
        if first is None:
            return None
        events, touch = first
        profile = new_profile(visitor_id, min((e.ts or 0) for e in events) if events else 0)
        for event in events:
            with contextlib.suppress(ev.NotAllowed):
                ev.apply(profile, event, event.ts or 0, ev.Source.OBSERVED)
        if touch is not None:
            ev.record_touch(profile, touch)
        return profile

    def _queue(self, visitor_id: str, events: list[ev.BaseEvent], touches: list[Touch]) -> None:
        if len(self._pending) >= _MAX_PENDING:
            self._dropped += 1  # the store is far behind: shed load rather than memory
            self._unwritten.pop(visitor_id, None)
            return
        self._pending.append((visitor_id, events, touches))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        # Events queued while a flush is writing find this task still running and do
        # not start another: they are this task's to write before it ends.
        while True:
            await asyncio.sleep(_FLUSH_EVERY)
            await self.flush()
            if not self._pending:
                return

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        grouped: dict[str, tuple[list[ev.BaseEvent], list[Touch]]] = defaultdict(lambda: ([], []))
        for visitor_id, events, touches in pending:
            group = grouped[visitor_id]
            group[0].extend(events)
            group[1].extend(touches)
        writes = [
            self.profiles.record(visitor_id, events, ev.Source.OBSERVED, touches=touches)
            for visitor_id, (events, touches) in grouped.items()
        ]
        for outcome in await asyncio.gather(*writes, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error("recording observed events failed: %s", outcome)
        for visitor_id in grouped:
            self._unwritten.pop(visitor_id, None)

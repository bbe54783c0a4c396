"""Where events are written from: the write-behind queue for what the sidecar saw,
and the awaited writes of events a sender needs acknowledged.

What the sidecar saw (page views, cart forms, campaign touches, placement
exposures) is queued after the response has gone out, no I/O on the request path,
and a background task writes it in batches, one store transaction per visitor.

A new visitor's profile is stored from their second request on, when their browser
returned the cookie: what their first request showed (the landing page and its
campaign) waits in a bounded in-memory table until then. Cookieless one-hit clients
(crawlers, scripts, load generators) so cost a table entry, never a database write;
until it is written, :meth:`Recorder.pending_profile` shows the decision what the
first request showed.

Events from the browser, the shop and the profiling form are written at once with
:meth:`Recorder.write`: it returns once the store committed them, so a sender that
was answered 2xx has its events durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from typing import Final

import msgspec

from edge import metrics
from edge.caches import Expiring
from edge.profiles import events as ev
from edge.profiles.model import SESSION_GAP, Profile, Touch, new_profile
from edge.profiles.service import ProfileService
from edge.visitors import Visit

__all__ = ["Recorder"]

log = logging.getLogger("edge.recorder")

_FLUSH_EVERY: Final = 0.05
_MAX_PENDING: Final = 100_000
_FIRST_HITS: Final = 200_000

_First = tuple[list[ev.BaseEvent], Touch | None]

# A new visitor's first hit waits in memory for their second request (a one-hit visitor,
# often a crawler that keeps no cookie, is never stored): as msgpack bytes, about a
# quarter of the objects' size, since a stream of cookieless requests fills the table.
_encode_first = msgspec.msgpack.Encoder().encode
_decode_first = msgspec.msgpack.Decoder(tuple[list[ev.Event], Touch | None]).decode


def _unpacked(data: bytes | None) -> _First | None:
    if data is None:
        return None
    try:
        events, touch = _decode_first(data)
    except msgspec.ValidationError:  # made by us, so only a value past a field's bound
        log.debug("a first hit did not decode; dropped")
        return None
    return list(events), touch


async def _outcome(write: Awaitable[Profile | None]) -> Profile | Exception | None:
    """What *write* gave, or the exception it raised (as ``gather`` with
    ``return_exceptions`` gives them)."""
    try:
        return await write
    except Exception as exc:
        return exc


class Recorder:
    def __init__(self, profiles: ProfileService) -> None:
        self.profiles = profiles
        self._pending: list[tuple[str, list[ev.BaseEvent], list[Touch]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._unwritten: dict[str, _First] = {}
        """New visitors' first events between their second request and the flush."""
        self._first_hits: Expiring[str, bytes] = Expiring(_FIRST_HITS, SESSION_GAP)
        metrics.queue_depth(self.queued)

    def queued(self) -> int:
        """Observed events waiting for the batch writer (``edge_event_queue_depth``)."""
        return sum(len(events) for _, events, _ in self._pending)

    async def write(
        self, visitor_id: str | None, events: Sequence[ev.BaseEvent], source: ev.Source
    ) -> Profile | None:
        """Apply *events* now and return once they are durable (for the browser's and
        the shop's batches and the profiling form). Raises what the store raises, and
        :class:`~edge.profiles.events.NotAllowed` when *source* may not send them."""
        return await self.profiles.record(visitor_id, events, source)

    def observed(
        self, visit: Visit, events: list[ev.BaseEvent], touch: Touch | None, now: int
    ) -> None:
        """Queue what the sidecar saw of *visit* at *now* (no I/O here): its events and
        the campaign touch it landed with (alone for a redirect, which is no page)."""
        if visit.visitor_id is None or not (events or touch):
            return
        # Stamped with the request's time: a first hit is stored only with the
        # visitor's next request, and must count at the time it happened (the visit
        # starts with its landing, and its touch has the same time).
        for event in events:
            if event.ts is None:
                event.ts = now
        if visit.new:
            self._first_hits[visit.visitor_id] = _encode_first((events, touch))
            return
        touches = [touch] if touch is not None else []
        first = _unpacked(self._first_hits.pop(visit.visitor_id, None))
        if first is not None:
            events = first[0] + events
            if first[1] is not None:
                touches.insert(0, first[1])
            # Until the flush has written it, the new profile exists only here.
            self._unwritten[visit.visitor_id] = (events, first[1])
        self._queue(visit.visitor_id, events, touches)

    async def settle(self, visitor_id: str) -> None:
        """Write now what waits of *visitor_id* (its first hit, its queued events): the
        browser reports on an exposure the sidecar may not have written yet."""
        first = _unpacked(self._first_hits.pop(visitor_id, None))
        if first is not None:
            self._unwritten[visitor_id] = first
            self._queue(visitor_id, first[0], [first[1]] if first[1] is not None else [])
        if any(queued == visitor_id for queued, _, _ in self._pending):
            await self.flush()

    def pending_profile(self, visitor_id: str) -> Profile | None:
        """A new visitor's profile as their first hit made it, not stored yet."""
        first = self._unwritten.get(visitor_id) or _unpacked(self._first_hits.get(visitor_id))
        if first is None:
            return None
        events, touch = first
        stamps = [e.ts or 0 for e in events] + ([touch.ts] if touch is not None else [])
        profile = new_profile(visitor_id, min(stamps, default=0))
        if touch is not None:  # first, as the store applies it: the visit starts with it
            ev.record_touch(profile, touch)
        for event in events:
            with contextlib.suppress(ev.NotAllowed):
                ev.apply(profile, event, event.ts or 0, ev.Source.OBSERVED)
        return profile

    def _queue(self, visitor_id: str, events: list[ev.BaseEvent], touches: list[Touch]) -> None:
        if len(self._pending) >= _MAX_PENDING:
            # The store is far behind: shed load rather than memory.
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
        """Write everything queued so far (one transaction per visitor)."""
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
        if len(writes) == 1:  # (most flushes: a task and a gathering future fewer)
            outcomes = [await _outcome(writes[0])]
        else:
            outcomes = await asyncio.gather(*writes, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                log.error("recording observed events failed: %s", outcome)
        for visitor_id in grouped:
            self._unwritten.pop(visitor_id, None)

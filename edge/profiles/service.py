"""Recording events into profiles: rights, idempotency, stitching, erasure.

Every source goes through :meth:`Profiles.record`: the events are checked for the
source's rights first (a refused batch changes nothing), then applied in one store
transaction together with their idempotency claims, so an order id or event id sent
twice counts once even across replicas. Which profile a shop event goes to, and
which ones it absorbs, are the rules of :mod:`edge.profiles.stitching`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Final

from edge.profiles.events import BaseEvent, Source, apply, check_allowed, record_touch
from edge.profiles.model import Profile, Touch, new_profile
from edge.profiles.outbox import OutMessage
from edge.profiles.stitching import (
    UnknownVisitor,
    absorb_into,
    aliases,
    claim,
    customer_key,
    detach,
    email_key,
    link,
    stitch,
)
from edge.profiles.store import (
    Activation,
    CachedStore,
    Profiles,
    Store,
    StoreUnavailable,
    activating,
)

OBSERVED_RETRY_FOR: Final = 60.0
"""Seconds the sidecar's own observed events are retried while the store is away (a
hung Redis, an open breaker) before they are dropped and logged."""
_RETRY_FIRST: Final = 0.05
_RETRY_MAX: Final = 1.0

# The stitching vocabulary, where the service's callers (ingest, the demo, tests) find it.
__all__ = ["ProfileService", "UnknownVisitor", "customer_key", "email_key"]


class ProfileService:
    def __init__(
        self, store: Store, email_hash: Callable[[str], str], *, cache_ttl: float = 5.0
    ) -> None:
        self.store = store
        self.cache = CachedStore(store, ttl=cache_ttl)
        self._email_hash = email_hash
        self.activation: Activation | None = None
        """Runs on every profile a write produces, in its transaction (segment changes,
        journeys, the due time, messages to enqueue): ``edge.app`` sets it when the
        ``activation`` setting is on."""
        self.clock: Callable[[], float] = time.time
        """The time events are recorded at when their caller names none (``edge demo``
        moves it on with its fake clock)."""

    async def load(self, visitor_id: str) -> Profile | None:
        return await self.cache.load(visitor_id)

    async def record(
        self,
        visitor_id: str | None,
        events: Sequence[BaseEvent],
        source: Source,
        now: int | None = None,
        *,
        touches: Sequence[Touch] = (),
    ) -> Profile | None:
        """Apply *events*. For browser and observed events *visitor_id* is the cookie's
        id; for shop events each event names its subject and *visitor_id* is None.

        A store that is unavailable (:class:`StoreUnavailable`: a deadline passed, the
        breaker open) fails a sender's batch at once: it is not acknowledged and the
        sender retries. What the sidecar observed itself (``Source.OBSERVED``, written
        in the background) is retried here instead, for up to ``OBSERVED_RETRY_FOR``
        seconds, waiting for the breaker to close."""
        now = int(self.clock()) if now is None else now
        for event in events:
            check_allowed(event, source)
        if source is not Source.OBSERVED:
            return await self._record(visitor_id, events, source, now, touches)
        delay = _RETRY_FIRST
        give_up = time.monotonic() + OBSERVED_RETRY_FOR
        while True:
            try:
                return await self._record(visitor_id, events, source, now, touches)
            except StoreUnavailable:
                if time.monotonic() + delay > give_up:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _record(
        self,
        visitor_id: str | None,
        events: Sequence[BaseEvent],
        source: Source,
        now: int,
        touches: Sequence[Touch],
    ) -> Profile | None:
        if source is not Source.SHOP:
            assert visitor_id is not None
            key = await self.cache.resolve(visitor_id) or visitor_id
            created: list[str] = []
            applied = await self._apply(
                key,
                [],
                events,
                source,
                now,
                fresh_id=visitor_id,
                touches=touches,
                created=created,
            )
            if created and key == visitor_id:
                # A new profile under the cookie's own id: unless a merge absorbed that
                # id between our resolve and our commit (a login on another request).
                # Then this profile is an orphan nobody would read: fold it in too.
                try:
                    target = await self.store.resolve(visitor_id)
                except StoreUnavailable:  # written: a retry would count the events twice
                    return applied[key]
                if target is not None and target != key:
                    self.cache.forget_cached(visitor_id)
                    merged = await self._apply(target, [key], [], source, now, fresh_id=target)
                    return merged[target]
            return applied[key]
        last: Profile | None = None
        for event in events:
            last = await self._record_shop_event(event, now)
        return last

    async def _record_shop_event(self, event: BaseEvent, now: int) -> Profile | None:
        email_hash = self._email_hash(event.email) if event.email else ""
        resolved = {alias: await self.cache.resolve(alias) for alias in aliases(event, email_hash)}
        to = stitch(event, email_hash, resolved.get)
        result = await self._apply(
            to.key,
            to.absorb,
            [event],
            Source.SHOP,
            now,
            fresh_id=to.key,
            email_hash=email_hash,
            extra_aliases=to.aliases,
            detached=to.detach,
            moved=to.moved,
        )
        for alias in to.moved:  # (pointing at another customer in this replica's cache)
            self.cache.forget_cached(alias)
        return result[to.key]

    async def _apply(
        self,
        key: str,
        absorb: list[str],
        events: Sequence[BaseEvent],
        source: Source,
        now: int,
        *,
        fresh_id: str,
        email_hash: str = "",
        extra_aliases: Sequence[str] = (),
        touches: Sequence[Touch] = (),
        created: list[str] | None = None,
        detached: Sequence[str] = (),
        moved: Sequence[str] = (),
    ) -> Profiles:
        claims = [claim(e) for e in events]
        wanted = [c for c in claims if c]

        def mutation(current: Profiles, seen: set[str]) -> Profiles:
            profile = current.get(key)
            if profile is None:
                profile = new_profile(fresh_id, now)
                if created is not None:
                    created.append(key)
            out: Profiles = {key: profile}
            if absorb:
                out.update(dict.fromkeys(absorb_into(profile, absorb, current)))
            for other_key in detached:  # another customer's: keeps all but the moved ids
                other = current.get(other_key)
                if other is not None:
                    detach(other, moved)
                    out[other_key] = other
            for touch in touches:  # first: a visit starts with its landing
                record_touch(profile, touch)
            for event, counted in zip(events, claims, strict=True):
                if counted and counted in seen:
                    continue
                apply(profile, event, now, source)
            customer_id = next((e.user_id for e in events if e.user_id), None)
            link(profile, key, customer_id, email_hash, extra_aliases)
            return out

        messages: list[OutMessage] = []
        activated = activating(mutation, self.activation, now, messages)
        return await self.cache.transact([key, *absorb, *detached], wanted, activated)

    async def touch(self, keys: Sequence[str], now: int) -> Profiles:
        """Write profiles *keys* unchanged, in one transaction, so the activation looks
        at them at *now* (the due loop: a segment that changes by time alone, a journey
        step that came due). The profiles written (a key with none is left out)."""

        def unchanged(current: Profiles, seen: set[str]) -> Profiles:
            return {key: profile for key, profile in current.items() if profile is not None}

        messages: list[OutMessage] = []
        return await self.cache.transact(
            keys, [], activating(unchanged, self.activation, now, messages)
        )

    async def erase(self, visitor_or_email: str) -> bool:
        """Erase a profile by visitor id, customer id (``cust:ID``) or email."""
        if "@" in visitor_or_email:
            alias = email_key(self._email_hash(visitor_or_email))
        else:
            alias = visitor_or_email
        key = await self.cache.resolve(alias) or alias
        profile = await self.store.get(key)
        if profile is None:
            return False
        await self.cache.transact([key], [], lambda current, seen: {key: None})
        self.cache.forget_cached(alias)
        # Their messages not sent yet (and those sent: they hold personal data) go too,
        # under every key they may have been enqueued with before a merge.
        for visitor in dict.fromkeys([key, profile.visitor_id, *profile.aliases]):
            await self.store.outbox_forget(visitor)
        return True

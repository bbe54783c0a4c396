"""Recording events into profiles: keys, idempotency, stitching, erasure.

Every source goes through :meth:`Profiles.record`: the events are checked for the
source's rights first (a refused batch changes nothing), then applied in one store
transaction together with their idempotency claims, so an order id or event id sent
twice counts once even across replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from edge.profiles.events import (
    BaseEvent,
    OrderCompleted,
    Source,
    apply,
    check_allowed,
    merge,
    record_touch,
)
from edge.profiles.model import Profile, Touch, new_profile
from edge.profiles.store import CachedStore, Profiles, Store


class UnknownVisitor(Exception):
    """An event from the shop names no visitor, customer or email."""


def customer_key(customer_id: str) -> str:
    return f"cust:{customer_id}"


def email_key(email_hash: str) -> str:
    return f"email:{email_hash}"


class ProfileService:
    def __init__(
        self, store: Store, email_hash: Callable[[str], str], *, cache_ttl: float = 5.0
    ) -> None:
        self.store = store
        self.cache = CachedStore(store, ttl=cache_ttl)
        self._email_hash = email_hash

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
        id; for shop events each event names its subject and *visitor_id* is None."""
        now = int(time.time()) if now is None else now
        for event in events:
            check_allowed(event, source)
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
                target = await self.store.resolve(visitor_id)
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
        if event.user_id:
            key = customer_key(event.user_id)
        elif email_hash:
            key = await self.cache.resolve(email_key(email_hash)) or email_key(email_hash)
        elif event.anonymous_id:
            key = await self.cache.resolve(event.anonymous_id) or event.anonymous_id
        else:
            raise UnknownVisitor("each shop event needs user_id, email or anonymous_id")
        # Profiles that become this one: the visitor's anonymous profile, and a
        # profile known only by email before the customer id arrived.
        absorb: list[str] = []
        for alias in (event.anonymous_id, email_key(email_hash) if email_hash else None):
            if alias:
                other = await self.cache.resolve(alias) or alias
                if other != key and other not in absorb:
                    absorb.append(other)
        result = await self._apply(
            key,
            absorb,
            [event],
            Source.SHOP,
            now,
            fresh_id=key,
            email_hash=email_hash,
            extra_aliases=[
                a for a in (event.anonymous_id, email_key(email_hash) if email_hash else None) if a
            ],
        )
        return result[key]

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
    ) -> Profiles:
        claims = [_claim(e) for e in events]
        wanted = [c for c in claims if c]

        def mutation(current: Profiles, seen: set[str]) -> Profiles:
            profile = current.get(key)
            if profile is None:
                profile = new_profile(fresh_id, now)
                if created is not None:
                    created.append(key)
            out: Profiles = {key: profile}
            for other_key in absorb:
                other = current.get(other_key)
                if other is not None:
                    merge(profile, other)
                    out[other_key] = None
            for event, claim in zip(events, claims, strict=True):
                if claim and claim in seen:
                    continue
                apply(profile, event, now, source)
            for touch in touches:
                record_touch(profile, touch)
            if event_user := next((e.user_id for e in events if e.user_id), None):
                profile.customer_id = event_user
            if email_hash:
                profile.email_hash = email_hash
            aliases = set(profile.aliases) | {a for a in extra_aliases if a != key}
            profile.aliases = sorted(aliases)
            return out

        return await self.cache.transact([key, *absorb], wanted, mutation)

    async def erase(self, visitor_or_email: str) -> bool:
        """Erase a profile by visitor id, customer id (``cust:ID``) or email."""
        if "@" in visitor_or_email:
            alias = email_key(self._email_hash(visitor_or_email))
        else:
            alias = visitor_or_email
        key = await self.cache.resolve(alias) or alias
        if await self.store.get(key) is None:
            return False
        await self.cache.transact([key], [], lambda current, seen: {key: None})
        self.cache.forget_cached(alias)
        return True


def _claim(event: BaseEvent) -> str:
    if isinstance(event, OrderCompleted):
        return f"order:{event.order_id}"
    if event.event_id:
        return f"event:{event.event_id}"
    return ""

"""Where profiles are kept: one interface, an in-memory store, and the local cache.

A store keeps three things: profiles by key, aliases (a visitor id or an email hash
pointing at the profile that absorbed it), and the ids of events already applied
(so an order sent twice counts once). Its one write primitive is :meth:`Store.transact`:
read some profiles and claims, compute their new state, write it all atomically and
durably, and only then return. Acknowledging an event after ``transact`` returns is
what makes "acknowledged means durable" true.

Keys: an anonymous visitor's profile is keyed by their visitor id; a known customer's
by ``cust:<customer id>`` (or ``email:<hash>`` before the shop tells us the id).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import msgspec

from edge.caches import Expiring
from edge.profiles.model import DAY, Profile, decode, encode

CLAIM_TTL: Final = 400 * DAY
"""How long a claim (an order or event id already applied) is kept: as long as the
daily counters look back. An id sent again after that counts again."""

Profiles = dict[str, Profile | None]
Mutation = Callable[[Profiles, set[str]], Profiles]
"""Given the current profiles (None where missing) and the claims already seen, the
profiles to write (None deletes)."""


class Store(abc.ABC):
    """The storage interface every backend implements."""

    @abc.abstractmethod
    async def get(self, key: str) -> Profile | None:
        """The profile stored under *key* itself (no alias resolution)."""

    @abc.abstractmethod
    async def resolve(self, alias: str) -> str | None:
        """The key of the profile that absorbed *alias*, if any."""

    @abc.abstractmethod
    async def transact(
        self, keys: Sequence[str], claims: Iterable[str], mutation: Mutation
    ) -> Profiles:
        """Atomically: load *keys*, find which *claims* were seen, apply *mutation*,
        store the result, record all *claims*, and point each profile's aliases at it.
        Durable when it returns."""

    @abc.abstractmethod
    async def keys(self) -> list[str]:
        """Every profile key (for reports and ``edge segments``)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""

    async def put_products(self, records: list[dict[str, Any]]) -> None:  # noqa: B027
        """Keep the products the sidecar learned from the shop's pages (feed rows,
        see :meth:`edge.personalize.catalog.LearnedCatalog.records`), replacing the
        previous ones. A store that keeps nothing ignores them."""

    async def get_products(self) -> list[dict[str, Any]]:
        """The products kept by :meth:`put_products` (none if never)."""
        return []

    async def claim_once(self, name: str, ttl: int) -> bool:
        """Record *name* for *ttl* seconds; False when it is recorded already (a
        signed ingest request seen before: see ``edge.ingest``). Atomic across the
        store's users. This default keeps them in the process (the in-memory store);
        the shared stores keep them where every replica sees them."""
        now = time.monotonic()
        kept: dict[str, float] = self.__dict__.setdefault("_once", {})
        for old in [k for k, until in kept.items() if until <= now]:
            del kept[old]
        if name in kept:
            return False
        kept[name] = now + ttl
        return True

    async def release_once(self, name: str) -> None:
        """Forget a :meth:`claim_once` whose work was not done (the sender may retry)."""
        self.__dict__.get("_once", {}).pop(name, None)


def encode_products(records: list[dict[str, Any]]) -> bytes:
    """Learned products as the stores keep them: one msgpack blob."""
    return msgspec.msgpack.encode(records)


def decode_products(data: bytes | None) -> list[dict[str, Any]]:
    """The records :func:`encode_products` wrote; none from a blob that does not read
    (the catalog is learned again from the pages)."""
    if not data:
        return []
    try:
        records = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


class MemoryStore(Store):
    """A store in a dict, for unit tests and ``store = "memory"``. Not durable.

    Profiles are kept encoded, as the real stores keep them: every reader gets its own
    copy, so changing a profile that was read changes nothing stored, and a mutation
    that fails midway leaves the store as it was."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self.aliases: dict[str, str] = {}
        self.claims: set[str] = set()

    @property
    def profiles(self) -> dict[str, Profile]:
        """A decoded copy of every stored profile, by key."""
        return {key: decode(data) for key, data in self._data.items()}

    async def get(self, key: str) -> Profile | None:
        data = self._data.get(key)
        return None if data is None else decode(data)

    async def resolve(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    async def transact(
        self, keys: Sequence[str], claims: Iterable[str], mutation: Mutation
    ) -> Profiles:
        claims = list(claims)
        current: Profiles = {
            key: None if (data := self._data.get(key)) is None else decode(data) for key in keys
        }
        seen = {c for c in claims if c in self.claims}
        result = mutation(current, seen)
        encoded = {key: None if p is None else encode(p) for key, p in result.items()}
        for key, data in encoded.items():
            if data is None:
                self._data.pop(key, None)
                for alias in [a for a, k in self.aliases.items() if k == key]:
                    del self.aliases[alias]
            else:
                self._data[key] = data
                for alias in result[key].aliases:  # type: ignore[union-attr]
                    self.aliases[alias] = key
        self.claims.update(claims)
        return result

    async def keys(self) -> list[str]:
        return list(self._data)

    async def put_products(self, records: list[dict[str, Any]]) -> None:
        self._products = encode_products(records)

    async def get_products(self) -> list[dict[str, Any]]:
        return decode_products(getattr(self, "_products", None))


class CachedStore:
    """A short-lived local cache in front of a store: a hit costs a dict lookup.

    Writes through this object update the cache (this process's writes are never
    stale here); other replicas' writes show after ``ttl`` seconds at most.
    """

    def __init__(self, store: Store, *, ttl: float = 5.0, maxsize: int = 50_000) -> None:
        self.store = store
        self._cache: Expiring[str, Profile | None] = Expiring(maxsize, ttl)
        self._aliases: Expiring[str, str | None] = Expiring(maxsize, ttl)
        self._writes = 0
        """Writes through this cache so far: a read that overlapped one is not kept."""

    async def load(self, visitor_or_key: str) -> Profile | None:
        """The profile for a visitor id or key, following an alias if it was merged."""
        cache = self._cache
        try:
            return cache[visitor_or_key]
        except KeyError:
            pass
        writes = self._writes
        profile = await self.store.get(visitor_or_key)
        if profile is None:
            key = await self.resolve(visitor_or_key)
            if key is not None:
                profile = await self.store.get(key)
        if writes == self._writes:  # no write landed while we read: the copy is current
            cache[visitor_or_key] = profile
        return profile

    async def resolve(self, alias: str) -> str | None:
        try:
            return self._aliases[alias]
        except KeyError:
            pass
        key = await self.store.resolve(alias)
        self._aliases[alias] = key
        return key

    async def transact(
        self, keys: Sequence[str], claims: Iterable[str], mutation: Mutation
    ) -> Profiles:
        result = await self.store.transact(keys, claims, mutation)
        self._writes += 1
        # Deletions first: a deleted key is often an alias of a survivor (a merge), and
        # the survivors' aliases below must win over "nothing here any more".
        for key, profile in result.items():
            if profile is None:
                self._cache.pop(key, None)
                self._aliases.pop(key, None)
                for alias, target in list(self._aliases.items()):
                    if target == key:
                        self._aliases[alias] = None
                        self._cache.pop(alias, None)
        for key, profile in result.items():
            if profile is not None:
                self._cache[key] = profile
                for alias in profile.aliases:
                    self._aliases[alias] = key
                    self._cache.pop(alias, None)
        return result

    def forget_cached(self, key: str) -> None:
        self._cache.pop(key, None)
        self._aliases.pop(key, None)

    async def close(self) -> None:
        await self.store.close()

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
import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol, TypeVar

import msgspec

from edge.caches import Expiring
from edge.profiles.model import (
    DAY,
    Profile,
    Tally,
    TallyKey,
    arm_states,
    decode,
    encode,
    segments_text,
    tally_delta,
)
from edge.profiles.outbox import DEAD, DELIVERED, PENDING, OutboxRow, OutMessage

log = logging.getLogger("edge.profiles")

CLAIM_TTL: Final = 400 * DAY
"""How long a claim (an order or event id already applied) is kept: as long as the
daily counters look back. An id sent again after that counts again."""

Profiles = dict[str, Profile | None]
Mutation = Callable[[Profiles, set[str]], Profiles]
"""Given the current profiles (None where missing) and the claims already seen, the
profiles to write (None deletes)."""


class ReportRow(NamedTuple):
    """One row of the daily aggregates: the units first exposed to *placement* in *arm*
    on *day* (unix day number), and what they did (see :data:`TALLY_FIELDS`); with a
    *segment*, those of them that were in it at their first exposure (``""``: all)."""

    day: int
    placement: str
    arm: str
    units: int
    exposures: int
    converters: int
    revenue: float
    revenue_sq: float
    clicks: int
    views: int = 0
    segment: str = ""


def expanded(rows: Iterable[Sequence[Any]]) -> list[ReportRow]:
    """The report's rows from the stored ones: (day, placement, arm, units, exposures,
    converters, revenue, revenue², clicks, views, segments), *segments* a combination
    (:func:`~edge.profiles.model.segments_text`). Each counts in its arm's total row
    (segment ``""``) and in the row of each of its segments; sorted."""
    out: dict[tuple[int, str, str, str], list[Any]] = {}
    for row in rows:
        day, placement, arm = row[0], row[1], row[2]
        values = row[3:10]
        combination = row[10]
        for segment in ("", *combination.split(",")) if combination else ("",):
            key = (day, placement, arm, segment)
            mine = out.get(key)
            if mine is None:
                out[key] = list(values)
            else:
                for i, value in enumerate(values):
                    mine[i] += value
    return [
        ReportRow(day, placement, arm, *values, segment)  # type: ignore[arg-type]
        for (day, placement, arm, segment), values in sorted(out.items())
    ]


def measuring(mutation: Mutation, deltas: dict[TallyKey, Tally]) -> Mutation:
    """*mutation*, also putting into *deltas* what its writes change in the daily
    aggregates (emptied first: a store may run a mutation more than once). The stores
    write *deltas* in the transaction that writes the profiles, so an event counted
    once in a profile counts once in the aggregates."""

    def run(current: Profiles, seen: set[str]) -> Profiles:
        before = {key: arm_states(p) for key, p in current.items() if p is not None and p.arms}
        result = mutation(current, seen)
        deltas.clear()
        for key, profile in result.items():
            tally_delta(deltas, before.get(key, {}), profile)
        return result

    return run


class Activation(Protocol):
    """What runs on every profile a write produces (``edge.activation.activator
    .Activator``; the profiles package knows it by this shape only). One that sets a
    ``reads_before`` attribute to False is given ``before=None`` always: the write then
    keeps no copy of the profiles as they were read (an encode and a decode each)."""

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        """Update *profile*'s segments, journeys and ``due`` in place; the messages to
        enqueue in the same transaction."""
        ...


class Activating:
    """*mutation*, then the activation on each profile it writes (see :func:`activating`).
    The stores find the messages in :attr:`messages` (:func:`outgoing`)."""

    __slots__ = ("activation", "messages", "mutation", "now")

    def __init__(
        self, mutation: Mutation, activation: Activation, now: int, messages: list[OutMessage]
    ) -> None:
        self.mutation = mutation
        self.activation = activation
        self.now = now
        self.messages = messages

    def __call__(self, current: Profiles, seen: set[str]) -> Profiles:
        # The mutation changes the profiles it is given in place: keep what they were,
        # for an activation that reads them.
        before: dict[str, Profile] = {}
        if getattr(self.activation, "reads_before", True):
            before = {key: decode(encode(p)) for key, p in current.items() if p is not None}
        result = self.mutation(current, seen)
        self.messages.clear()
        self.messages += activate(result, before, self.activation, self.now)
        return result


def activating(
    mutation: Mutation, activation: Activation | None, now: int, messages: list[OutMessage]
) -> Mutation:
    """*mutation*, then *activation* on every profile it writes (its segments, journeys,
    ``due``), putting into *messages* what to enqueue (emptied first: a store may run a
    mutation more than once). The stores write *messages* and the due index in the
    transaction that writes the profiles. No activation: *mutation* as it is."""
    if activation is None:
        return mutation
    return Activating(mutation, activation, now, messages)


def activate(
    result: Profiles, before: Mapping[str, Profile | None], activation: Activation, now: int
) -> list[OutMessage]:
    """Run *activation* on each profile of *result* (against *before*, the profiles as
    they were read); the messages of the consenting ones (only visitors with marketing
    consent are activated: the activation still runs, to close their journeys)."""
    out: list[OutMessage] = []
    for key, profile in result.items():
        if profile is None:
            continue
        messages = activation.after(profile, before.get(key), now)
        if profile.consent:
            out += messages
    return out


def outgoing(mutation: Mutation) -> list[OutMessage]:
    """The messages an :func:`activating` mutation produced in its latest run."""
    return mutation.messages if isinstance(mutation, Activating) else []


def bulk_deltas(result: Profiles, before: Mapping[str, bytes | None]) -> dict[TallyKey, Tally]:
    """What a bulk writer's *result* changes in the daily aggregates, against the
    profiles it read (*before*: key -> the encoded profile, None where there was none).
    Only profiles with arm records are decoded again (a history import has few)."""
    deltas: dict[TallyKey, Tally] = {}
    for key, profile in result.items():
        if profile is not None and not profile.arms:
            continue  # (arms are dropped only to make room for others: none before)
        blob = before.get(key)
        if profile is None and blob is None:
            continue
        tally_delta(deltas, arm_states(decode(blob)) if blob else {}, profile)
    return deltas


def add_deltas(into: dict[TallyKey, Tally], deltas: dict[TallyKey, Tally]) -> None:
    for key, row in deltas.items():
        mine = into.get(key)
        if mine is None:
            into[key] = list(row)
        else:
            for i, value in enumerate(row):
                mine[i] += value


def delta_rows(deltas: dict[TallyKey, Tally]) -> list[tuple[Any, ...]]:
    """(day, placement, arm, segments, units, exposures, converters, revenue, revenue²,
    clicks, views) for the deltas that change something, *segments* the combination's
    name (:func:`~edge.profiles.model.segments_text`)."""
    return [
        (day, pid, arm, ",".join(segments) if segments else "", *row)
        for (day, pid, arm, segments), row in deltas.items()
        if any(row)
    ]


class Store(abc.ABC):
    """The storage interface every backend implements."""

    bounds_its_reads = False
    """True for a store whose reads complete without awaiting (SQLite on the caller's
    thread, memory) and keep their own deadline (see :class:`GuardedStore`)."""
    bounds_its_writes = False
    """True for a store whose writes fail past their own deadline (a timer each would
    cost a sixth of a SQLite write)."""
    failures: tuple[type[BaseException], ...] = (OSError, TimeoutError)
    """The exceptions that mean "the store failed" (a connection lost, a locked file),
    as opposed to a caller's mistake a mutation raised: :class:`GuardedStore` counts
    these against the store and turns them into :class:`StoreUnavailable`."""

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

    async def ping(self) -> None:
        """Raise unless the store answers (for ``/_edge/readyz``): one cheap read."""
        await self.resolve("\x00ping")

    async def report_rows(self, since_day: int = 0) -> list[ReportRow]:
        """The daily aggregates of exposures and outcomes, for the units first exposed
        on *since_day* (unix day number) or later."""
        return []

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

    async def put_segment_snapshot(self, day: str, snapshot: dict[str, Any]) -> None:
        """Keep the segment counts of *day* (an ISO date; ``edge.snapshots`` makes
        them), replacing that day's. This default keeps them in the process (the
        in-memory store); the real stores keep them beside the profiles."""
        self.__dict__.setdefault("_snapshots", {})[day] = encode_snapshot(snapshot)

    async def get_segment_snapshots(self, since: str) -> list[dict[str, Any]]:
        """The snapshots kept for *since* (an ISO date) and the days after, oldest first."""
        kept: dict[str, bytes] = self.__dict__.get("_snapshots", {})
        return decode_snapshots((day, data) for day, data in kept.items() if day >= since)

    # the activation: the due index and the outbox (see edge.profiles.outbox)

    async def due_keys(self, until: int, limit: int) -> list[str]:
        """Up to *limit* keys of profiles whose ``due`` is set and at most *until*,
        earliest first (an index: no scan of the profiles)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no due index")

    async def outbox_claim(self, now: int, limit: int, lease: int) -> list[OutboxRow]:
        """Up to *limit* pending messages due at *now*, earliest first, each leased for
        *lease* seconds (its ``next_at`` moved past the lease, its ``attempts`` counted):
        another worker claims it again only if this one neither settles it in time.
        Atomic across the store's users."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def outbox_done(self, id: str) -> None:
        """Message *id* was delivered."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def outbox_failed(self, id: str, retry_at: int, error: str, dead: bool) -> None:
        """Message *id* failed with *error*: try again at *retry_at*, or (*dead*) no more."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def outbox_list(self, state: str, limit: int) -> list[OutboxRow]:
        """Up to *limit* messages in *state* ("" for any), oldest first."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def outbox_retry(self, ids: Sequence[str]) -> int:
        """Make messages *ids* (dead or pending) pending and due now, their attempts
        counted afresh; how many there were."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def outbox_purge(self, state: str, before: int) -> int:
        """Delete the messages in *state* last changed before *before*; how many."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def outbox_forget(self, visitor: str) -> int:
        """Delete every message of *visitor* (erasure), whatever its state; how many."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def coupon_load(self, pool: str, codes: Sequence[str]) -> int:
        """Add *codes* to *pool*; a code loaded before (taken or not) is not added
        again. How many were added."""
        raise NotImplementedError(f"{type(self).__name__} keeps no coupons")

    async def coupon_take(self, pool: str, message_id: str) -> str | None:
        """A code of *pool* for message *message_id*: the one it got before if any,
        else one never given (None: the pool is empty). Atomic across the store's users."""
        raise NotImplementedError(f"{type(self).__name__} keeps no coupons")

    async def coupon_counts(self, pool: str) -> tuple[int, int]:
        """(codes left, codes given) in *pool*."""
        raise NotImplementedError(f"{type(self).__name__} keeps no coupons")


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


def encode_snapshot(snapshot: dict[str, Any]) -> bytes:
    """A day's segment counts as the stores keep them: one msgpack blob per day."""
    return msgspec.msgpack.encode(snapshot)


def decode_snapshots(rows: Iterable[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """The snapshots of (day, blob) rows, oldest first, each with its ``day``; a blob
    that does not read is left out (the next day's snapshot is taken anyway)."""
    out = []
    for day, data in sorted(rows):
        try:
            snapshot = msgspec.msgpack.decode(data)
        except msgspec.DecodeError:
            continue
        if isinstance(snapshot, dict):
            out.append({**snapshot, "day": day})
    return out


class MemoryStore(Store):
    """A store in a dict, for unit tests and ``store = "memory"``. Not durable.

    Profiles are kept encoded, as the real stores keep them: every reader gets its own
    copy, so changing a profile that was read changes nothing stored, and a mutation
    that fails midway leaves the store as it was."""

    bounds_its_reads = True
    bounds_its_writes = True

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self.aliases: dict[str, str] = {}
        self.claims: set[str] = set()
        self._due: dict[str, int] = {}
        self._outbox: dict[str, OutboxRow] = {}
        self._coupons_free: dict[str, list[str]] = {}
        self._coupons_known: dict[str, set[str]] = {}
        self._coupons_given: dict[str, dict[str, str]] = {}

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
        deltas: dict[TallyKey, Tally] = {}
        result = measuring(mutation, deltas)(current, seen)
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
        add_deltas(self.__dict__.setdefault("_tallies", {}), deltas)
        for key, profile in result.items():
            if profile is None or not profile.due:
                self._due.pop(key, None)
            else:
                self._due[key] = profile.due
        for message in outgoing(mutation):
            self._enqueue(message)
        return result

    def _enqueue(self, message: OutMessage) -> None:
        if message.id not in self._outbox:
            now = int(time.time())
            self._outbox[message.id] = OutboxRow(
                message, PENDING, next_at=message.not_before, created=now, updated=now
            )

    async def due_keys(self, until: int, limit: int) -> list[str]:
        due = sorted((when, key) for key, when in self._due.items() if when <= until)
        return [key for _, key in due[:limit]]

    async def outbox_claim(self, now: int, limit: int, lease: int) -> list[OutboxRow]:
        ready = sorted(
            (row.next_at, row.message.id)
            for row in self._outbox.values()
            if row.state == PENDING and row.next_at <= now
        )
        claimed = []
        for _, id in ready[:limit]:
            row = self._outbox[id]
            row = self._outbox[id] = msgspec.structs.replace(
                row, attempts=row.attempts + 1, next_at=now + lease, updated=now
            )
            claimed.append(row)
        return claimed

    def _change(self, id: str, **changes: Any) -> None:
        row = self._outbox.get(id)
        if row is not None:
            self._outbox[id] = msgspec.structs.replace(row, updated=int(time.time()), **changes)

    async def outbox_done(self, id: str) -> None:
        self._change(id, state=DELIVERED, error="")

    async def outbox_failed(self, id: str, retry_at: int, error: str, dead: bool) -> None:
        self._change(id, state=DEAD if dead else PENDING, next_at=retry_at, error=error)

    async def outbox_list(self, state: str, limit: int) -> list[OutboxRow]:
        rows = [r for r in self._outbox.values() if not state or r.state == state]
        return sorted(rows, key=lambda r: (r.created, r.message.id))[:limit]

    async def outbox_retry(self, ids: Sequence[str]) -> int:
        found = [id for id in ids if id in self._outbox and self._outbox[id].state != DELIVERED]
        for id in found:
            self._change(id, state=PENDING, attempts=0, next_at=0, error="")
        return len(found)

    async def outbox_purge(self, state: str, before: int) -> int:
        gone = [id for id, r in self._outbox.items() if r.state == state and r.updated < before]
        for id in gone:
            del self._outbox[id]
        return len(gone)

    async def outbox_forget(self, visitor: str) -> int:
        gone = [id for id, r in self._outbox.items() if r.message.visitor == visitor]
        for id in gone:
            del self._outbox[id]
        return len(gone)

    async def coupon_load(self, pool: str, codes: Sequence[str]) -> int:
        known = self._coupons_known.setdefault(pool, set())
        fresh = [c for c in dict.fromkeys(codes) if c not in known]
        known.update(fresh)
        self._coupons_free.setdefault(pool, []).extend(fresh)
        return len(fresh)

    async def coupon_take(self, pool: str, message_id: str) -> str | None:
        given = self._coupons_given.setdefault(pool, {})
        if message_id in given:
            return given[message_id]
        free = self._coupons_free.get(pool)
        if not free:
            return None
        code = given[message_id] = free.pop(0)
        return code

    async def coupon_counts(self, pool: str) -> tuple[int, int]:
        return len(self._coupons_free.get(pool, [])), len(self._coupons_given.get(pool, {}))

    async def keys(self) -> list[str]:
        return list(self._data)

    async def report_rows(self, since_day: int = 0) -> list[ReportRow]:
        tallies: dict[TallyKey, Tally] = self.__dict__.get("_tallies", {})
        return expanded(
            (day, pid, arm, *row, segments_text(segments))
            for (day, pid, arm, segments), row in tallies.items()
            if day >= since_day
        )

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
        elif writes == self._writes:
            # A profile under this very key: no alias points it elsewhere (a merge
            # deletes the profile it absorbs in the transaction that writes the alias),
            # so the write its request makes needs no alias read (a store read on the
            # loop: 5% of a personalized page on the 500-visitor mix). A merge another
            # replica makes meanwhile is found as with any cached alias: a write under
            # the old key creates a profile, and the service folds it into the survivor.
            self._aliases[visitor_or_key] = None
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


# --- deadlines and the circuit breaker --------------------------------------------

T = TypeVar("T")


class StoreUnavailable(Exception):
    """A store call did not complete: its deadline passed (``timeout``), the store
    failed (``error``) or the circuit breaker is open and nothing was tried (``open``).
    A read that raises it means "no profile": the visitor gets the shop's page."""

    def __init__(self, op: str, reason: str, detail: str = "") -> None:
        super().__init__(f"profile store {op}: {reason}" + (f" ({detail})" if detail else ""))
        self.op = op
        self.reason = reason


class StoreObserver(Protocol):
    """What a store reports, for metrics (``edge/metrics.py`` has these two functions)."""

    def store_call(self, op: str, seconds: float, ok: bool) -> None:
        """One call that was tried: its name (``get``, ``resolve``, ``transact``…),
        how long it took, whether it succeeded (a timeout is not ok)."""

    def store_breaker(self, open: bool) -> None:
        """The breaker opened (True) or closed again (False)."""


class Ticket(enum.Enum):
    REFUSED = 0
    CALL = 1
    PROBE = 2


class Breaker:
    """Consecutive failures open it for ``cooldown`` seconds, during which every call
    is refused without touching the store; then it lets one call through (half-open):
    its success closes the breaker, its failure opens it for another cool-down."""

    def __init__(
        self,
        failures: int = 5,
        cooldown: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.on_change = on_change
        self.failures = 0
        """Consecutive failures so far."""
        self.opened_at: float | None = None
        self._probing = False
        self.last_error = ""
        """The reason of the latest failure (``timeout``, ``error: ConnectionError``)."""

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (the cool-down is over: the next call
        probes the store)."""
        if self.opened_at is None:
            return "closed"
        if self._probing or self.clock() >= self.opened_at + self.cooldown:
            return "half-open"
        return "open"

    def attempt(self) -> Ticket:
        if self.opened_at is None:
            return Ticket.CALL
        if self._probing or self.clock() < self.opened_at + self.cooldown:
            return Ticket.REFUSED
        self._probing = True
        return Ticket.PROBE

    def succeeded(self, ticket: Ticket) -> None:
        if ticket is Ticket.PROBE:
            self._probing = False
            self.opened_at = None
            self.failures = 0
            if self.on_change is not None:
                self.on_change(False)
        elif self.opened_at is None:
            self.failures = 0  # a call begun before the breaker opened changes nothing

    def failed(self, ticket: Ticket, reason: str) -> None:
        self.last_error = reason
        if ticket is Ticket.PROBE:
            self._probing = False
            self.opened_at = self.clock()
            return
        if self.opened_at is not None:
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self.clock()
            if self.on_change is not None:
                self.on_change(True)

    def abandoned(self, ticket: Ticket) -> None:
        """The call was cancelled by its caller (not the deadline): it says nothing
        about the store, but a probe's turn passes to the next call."""
        if ticket is Ticket.PROBE:
            self._probing = False


class GuardedStore(Store):
    """A store whose every call has a deadline and goes through one circuit breaker.

    Reads (``get``, ``resolve``, ``ping``: the page path) get ``read_timeout`` seconds,
    writes (``transact``, ``put_products``) ``write_timeout``. A call that fails in
    the store's way (:attr:`Store.failures`) or runs past its deadline raises
    :class:`StoreUnavailable` and counts against the breaker; while the breaker is
    open calls raise it at once without touching the store. A write that timed out
    may still land (Redis applies what it already received when it wakes up): the
    caller does not acknowledge it, and claims (order and event ids) make a retry
    count once. ``observer`` (a :class:`StoreObserver`, settable later) hears every
    call tried and every change of the breaker."""

    def __init__(
        self,
        store: Store,
        *,
        read_timeout: float = 0.05,
        write_timeout: float = 2.0,
        breaker: Breaker | None = None,
        observer: StoreObserver | None = None,
    ) -> None:
        self.inner = store
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.breaker = breaker if breaker is not None else Breaker()
        self.breaker.on_change = self._breaker_changed
        self.observer = observer
        self.calls = 0
        """Calls tried on the store so far (refused ones are not)."""

    def _breaker_changed(self, is_open: bool) -> None:
        if is_open:
            log.warning(
                "profile store unavailable (%s): circuit breaker open, pages go out "
                "unpersonalized; probing again every %g s",
                self.breaker.last_error,
                self.breaker.cooldown,
            )
        else:
            log.warning("profile store answers again: circuit breaker closed")
        if self.observer is not None:
            self.observer.store_breaker(is_open)

    async def _call(
        self, op: str, timeout: float | None, fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """``await fn(*args)`` within *timeout* seconds (None: the store bounds the call
        itself), through the breaker, told to the observer."""
        breaker = self.breaker
        ticket = breaker.attempt()
        if ticket is Ticket.REFUSED:
            raise StoreUnavailable(op, "open", "circuit breaker open")
        self.calls += 1
        observer = self.observer
        start = time.perf_counter() if observer is not None else 0.0
        ok = False
        try:
            if timeout is None:
                result = await fn(*args)
            else:
                async with asyncio.timeout(timeout):
                    result = await fn(*args)
            ok = True
        except TimeoutError as exc:
            breaker.failed(ticket, "timeout")
            raise StoreUnavailable(op, "timeout", "no answer within the deadline") from exc
        except self.inner.failures as exc:
            reason = f"error: {type(exc).__name__}"
            breaker.failed(ticket, reason)
            raise StoreUnavailable(op, "error", f"{type(exc).__name__}: {exc}") from exc
        except asyncio.CancelledError:
            breaker.abandoned(ticket)
            raise
        except BaseException:
            breaker.succeeded(ticket)  # the store answered; the caller's input was wrong
            ok = True
            raise
        finally:
            if observer is not None:
                observer.store_call(op, time.perf_counter() - start, ok)
        breaker.succeeded(ticket)
        return result

    @property
    def _read_deadline(self) -> float | None:
        # A store that answers reads in place (SQLite, on this thread) keeps its own
        # deadline: there is no await to time out, and a timer would cost about as
        # much as the read itself.
        return None if self.inner.bounds_its_reads else self.read_timeout

    async def get(self, key: str) -> Profile | None:
        return await self._call("get", self._read_deadline, self.inner.get, key)

    async def resolve(self, alias: str) -> str | None:
        return await self._call("resolve", self._read_deadline, self.inner.resolve, alias)

    async def ping(self) -> None:
        await self._call("ping", self._read_deadline, self.inner.ping)

    async def transact(
        self, keys: Sequence[str], claims: Iterable[str], mutation: Mutation
    ) -> Profiles:
        claims = list(claims)
        deadline = None if self.inner.bounds_its_writes else self.write_timeout
        return await self._call("transact", deadline, self.inner.transact, keys, claims, mutation)

    async def claim_once(self, name: str, ttl: int) -> bool:
        return await self._call("claim_once", self.write_timeout, self.inner.claim_once, name, ttl)

    async def release_once(self, name: str) -> None:
        await self._call("release_once", self.write_timeout, self.inner.release_once, name)

    async def keys(self) -> list[str]:
        """Every key, without a deadline (reports, statistics: the time is the size of
        the store), refused while the breaker is open."""
        if self.breaker.state == "open":
            raise StoreUnavailable("keys", "open", "circuit breaker open")
        return await self.inner.keys()

    async def report_rows(self, since_day: int = 0) -> list[ReportRow]:
        """The daily aggregates, with the write deadline (a report, not a page)."""
        return await self._call(
            "report_rows", self.write_timeout, self.inner.report_rows, since_day
        )

    async def put_products(self, records: list[dict[str, Any]]) -> None:
        await self._call("put_products", self.write_timeout, self.inner.put_products, records)

    async def get_products(self) -> list[dict[str, Any]]:
        return await self._call("get_products", self.write_timeout, self.inner.get_products)

    async def put_segment_snapshot(self, day: str, snapshot: dict[str, Any]) -> None:
        await self._call(
            "put_segment_snapshot",
            self.write_timeout,
            self.inner.put_segment_snapshot,
            day,
            snapshot,
        )

    async def get_segment_snapshots(self, since: str) -> list[dict[str, Any]]:
        # Not the page path (the admin page, the snapshot task): the write deadline.
        return await self._call(
            "get_segment_snapshots", self.write_timeout, self.inner.get_segment_snapshots, since
        )

    # the activation's calls: not the page path, the write deadline

    async def due_keys(self, until: int, limit: int) -> list[str]:
        return await self._call("due_keys", self.write_timeout, self.inner.due_keys, until, limit)

    async def outbox_claim(self, now: int, limit: int, lease: int) -> list[OutboxRow]:
        return await self._call(
            "outbox_claim", self.write_timeout, self.inner.outbox_claim, now, limit, lease
        )

    async def outbox_done(self, id: str) -> None:
        await self._call("outbox_done", self.write_timeout, self.inner.outbox_done, id)

    async def outbox_failed(self, id: str, retry_at: int, error: str, dead: bool) -> None:
        await self._call(
            "outbox_failed", self.write_timeout, self.inner.outbox_failed, id, retry_at, error, dead
        )

    async def outbox_list(self, state: str, limit: int) -> list[OutboxRow]:
        return await self._call(
            "outbox_list", self.write_timeout, self.inner.outbox_list, state, limit
        )

    async def outbox_retry(self, ids: Sequence[str]) -> int:
        return await self._call("outbox_retry", self.write_timeout, self.inner.outbox_retry, ids)

    async def outbox_purge(self, state: str, before: int) -> int:
        return await self._call(
            "outbox_purge", self.write_timeout, self.inner.outbox_purge, state, before
        )

    async def outbox_forget(self, visitor: str) -> int:
        return await self._call(
            "outbox_forget", self.write_timeout, self.inner.outbox_forget, visitor
        )

    async def coupon_load(self, pool: str, codes: Sequence[str]) -> int:
        return await self._call(
            "coupon_load", self.write_timeout, self.inner.coupon_load, pool, codes
        )

    async def coupon_take(self, pool: str, message_id: str) -> str | None:
        return await self._call(
            "coupon_take", self.write_timeout, self.inner.coupon_take, pool, message_id
        )

    async def coupon_counts(self, pool: str) -> tuple[int, int]:
        return await self._call("coupon_counts", self.write_timeout, self.inner.coupon_counts, pool)

    async def close(self) -> None:
        await self.inner.close()

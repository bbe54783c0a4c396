"""Applying an import to a store in bulk: SQLite, or Redis shared by the replicas.

Each batch of events is applied as it comes, in file order: what the batch needs from
the store and has not read yet (profiles, aliases, claims) is read in a few ``IN
(...)`` statements, and the events change those profiles in memory by the rules
:class:`~edge.profiles.service.ProfileService` follows (:mod:`edge.profiles.stitching`),
so both give the same profiles. Only when the file is read is anything written.

Writing: the events are grouped (those sharing a customer, email, visitor id, a
profile they resolve to, or an order/event id belong together; groups are
independent), the groups packed in the order of their first profile's key into chunks
of about ``CHUNK`` events, and each chunk is one transaction that writes each of its
changed profiles once, with their aliases and claims. In key order each chunk fills its
own stretch of the table's pages, where file order had every chunk rewrite most of them.

Reading before writing is safe against other writers (a running sidecar): the bulk
session notes SQLite's ``data_version`` when it opens. If no other connection has
committed by the time a chunk's transaction begins, everything read is still what is
stored and the computed profiles are written as they are. Otherwise each group's reads
are compared with what is stored now, and a group whose profiles, aliases or claims
changed is computed again inside the transaction from the stored state (the same code,
reading through the transaction).

The store is reached through a bulk session (:class:`Session`): SQLite's
:class:`~edge.profiles.sqlite.BulkSession` or Redis's
:class:`~edge.profiles.redis.RedisBulkSession`, the same reads and writes, so the same
file gives the same profiles in both. Redis cannot say whether another writer
committed, so each chunk's reads are checked again under ``WATCH`` and its writes go in
one ``MULTI``/``EXEC``: a group that changed meanwhile is computed again from what is
stored, and if a sidecar writes a watched key before ``EXEC``, the chunk starts over.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, Protocol

from edge.importer.progress import Progress
from edge.importer.records import Unit
from edge.profiles import events as ev
from edge.profiles.model import decode, new_profile
from edge.profiles.outbox import OutMessage
from edge.profiles.stitching import (
    absorb_into,
    claim,
    customer_key,
    detach,
    email_key,
    link,
    stitch,
)
from edge.profiles.store import Activation, Profiles, activate

CHUNK: Final = 20_000
"""Orders (or rows of other kinds) per transaction without ``--strict``, about (a group
is not split): the profiles are computed before the transaction begins, so each holds
SQLite's write lock a moment only (~0.2 s), and an interrupted import leaves whole
chunks written."""
SHARED_CHUNK: Final = 500
"""The same for Redis: its ``EXEC`` holds the server for every replica while it runs,
and Redis 7.0 checks each ``WATCH``ed key against those already watched (quadratic in
a transaction's keys: 2,000 orders per chunk took 1.6x the time of 500)."""


class Session(Protocol):
    """A store's bulk session (``store.bulk()``): reads by the hundred, then writes in
    transactions."""

    def blobs(self, keys: Sequence[str]) -> dict[str, bytes]: ...
    def aliases(self, aliases: Sequence[str]) -> dict[str, str]: ...
    def claims(self, claims: Sequence[str]) -> set[str]: ...
    def others_wrote(self) -> bool: ...
    def prepare(
        self,
        result: Profiles,
        new_claims: Sequence[str],
        before: Mapping[str, bytes | None],
        messages: Sequence[OutMessage],
    ) -> object: ...
    def run(self, body: Callable[[], None]) -> None: ...
    def store(self, writes: Any) -> None: ...
    def write(
        self,
        result: Profiles,
        new_claims: Sequence[str],
        before: Mapping[str, bytes | None],
        messages: Sequence[OutMessage],
    ) -> None: ...
    def checkpoint(self) -> None: ...
    def close(self) -> None: ...


class BulkStore(Protocol):
    """A store an import can write to."""

    def bulk(self) -> Session: ...


class Changes:
    """Shop events applied in file order to the profiles they touch. Each profile,
    alias and claim is read once, through *store*, and kept as read (to check it
    later); the profiles change in memory, and which ones changed is kept (to write
    them)."""

    def __init__(self, now: int, email_hash: Callable[[ev.BaseEvent], str], store: Session) -> None:
        self.now = now
        self.email_hash = email_hash
        self._store = store
        self.profiles: Profiles = {}
        self.blobs: dict[str, bytes | None] = {}
        """Each profile as read (None: not stored)."""
        self.stored_aliases: dict[str, str | None] = {}
        """Each alias as read: the key it pointed at."""
        self.stored_claims: dict[str, bool] = {}
        """Each claim as read: whether it had been recorded before."""
        self.overlay: dict[str, str | None] = {}
        """Aliases these events moved (or removed)."""
        self.fresh: set[str] = set()
        """Claims first applied here."""
        self.touched: dict[str, None] = {}
        self.deleted: dict[str, None] = {}
        self.duplicates = bytearray()
        """Per event applied, in order: 1 when it had been applied before (skipped)."""
        self.applied = 0
        self.orders = 0
        self.skipped = 0

    def resolve(self, alias: str) -> str | None:
        if alias in self.overlay:
            return self.overlay[alias]
        return self.stored_aliases.get(alias)

    def load(self, units: Sequence[Unit]) -> None:
        """Read what *units* need that was not read yet: the aliases they name, every
        profile they may change or absorb (a superset of what :func:`stitch` names,
        resolved the same way), and their claims."""
        email_hash = self.email_hash
        aliases: dict[str, None] = {}
        claims: dict[str, None] = {}
        for unit in units:
            event = unit.event
            if event.email:
                aliases[email_key(email_hash(event))] = None
            if event.anonymous_id:
                aliases[event.anonymous_id] = None
            if counted := claim(event):
                claims[counted] = None
        if wanted := [a for a in aliases if a not in self.stored_aliases]:
            found = self._store.aliases(wanted)
            for alias in wanted:
                self.stored_aliases[alias] = found.get(alias)
        if wanted := [c for c in claims if c not in self.stored_claims]:
            recorded = self._store.claims(wanted)
            for counted in wanted:
                self.stored_claims[counted] = counted in recorded
        keys: dict[str, None] = {}
        resolve = self.resolve
        for unit in units:
            event = unit.event
            if event.user_id:
                keys[customer_key(event.user_id)] = None
            if event.email:
                alias = email_key(email_hash(event))
                keys[resolve(alias) or alias] = None
            if event.anonymous_id:
                keys[resolve(event.anonymous_id) or event.anonymous_id] = None
        if wanted := [k for k in keys if k not in self.profiles]:
            found_blobs = self._store.blobs(wanted)
            for key in wanted:
                blob = self.blobs[key] = found_blobs.get(key)
                self.profiles[key] = decode(blob) if blob is not None else None

    def apply(self, units: Sequence[Unit]) -> None:
        """Apply *units* (loaded) in order."""
        profiles = self.profiles
        stored = self.stored_claims
        fresh = self.fresh
        now = self.now
        for unit in units:
            event = unit.event
            counted = claim(event)
            duplicate = bool(counted) and (stored[counted] or counted in fresh)
            self.duplicates.append(duplicate)
            if duplicate:
                self.skipped += 1
            else:
                self.applied += 1
                if type(event) is ev.OrderCompleted:
                    self.orders += 1
                if counted:
                    fresh.add(counted)
            if not (event.user_id and not event.email and not event.anonymous_id):
                self._stitched(event, duplicate)
                continue
            # The common case, short: a customer id only, so nothing to resolve, absorb
            # or alias (what _stitched would do, without the work).
            key = customer_key(event.user_id)
            profile = profiles[key]
            if profile is None:
                profile = profiles[key] = new_profile(key, now)
            if duplicate:
                if profile.customer_id == event.user_id:
                    continue
            else:
                ev.apply(profile, event, now, ev.Source.SHOP)
            profile.customer_id = event.user_id
            self.touched[key] = None
            self.deleted.pop(key, None)

    def _stitched(self, event: ev.BaseEvent, duplicate: bool) -> None:
        """Apply *event* (unless a *duplicate*) where :func:`stitch` says, absorbing and
        linking as ProfileService does, and note what changed."""
        profiles = self.profiles
        email_hash = self.email_hash(event)
        to = stitch(event, email_hash, self.resolve)
        for name in (to.key, *to.absorb, *to.detach):
            if name not in profiles:
                raise RuntimeError(f"import: profile {name!r} was not loaded")
        before = {k: profiles[k] for k in to.absorb}
        profile = profiles[to.key]
        if profile is None:
            old_state = None
            profile = new_profile(to.key, self.now)
        else:
            old_state = (profile.customer_id, profile.email_hash, profile.aliases)
        merged = absorb_into(profile, to.absorb, profiles)
        for gone in merged:
            profiles[gone] = None
        if not duplicate:
            ev.apply(profile, event, self.now, ev.Source.SHOP)
        link(profile, to.key, event.user_id, email_hash, to.aliases)
        profiles[to.key] = profile
        for other_key in to.detach:  # another customer's: keeps all but the moved ids
            other = profiles[other_key]
            if other is not None:
                detach(other, to.moved)
                self.touched[other_key] = None
        for gone in merged:
            self.deleted[gone] = None
            self.touched.pop(gone, None)
            old = before[gone]
            for alias in (gone, *(old.aliases if old else ())):
                self.overlay[alias] = None
        if (
            not duplicate
            or merged
            or old_state != (profile.customer_id, profile.email_hash, profile.aliases)
        ):
            self.touched[to.key] = None  # (a re-imported event changes nothing: no write)
        self.deleted.pop(to.key, None)
        for alias in profile.aliases:
            self.overlay[alias] = to.key

    def recount(self, indexes: Sequence[int], units: Sequence[Unit], duplicates: bytearray) -> None:
        """The events at *indexes* were applied again elsewhere, with these outcomes."""
        for n, unit, duplicate in zip(indexes, units, duplicates, strict=True):
            order = isinstance(unit.event, ev.OrderCompleted)
            if self.duplicates[n] != duplicate:
                self.duplicates[n] = duplicate
                change = -1 if duplicate else 1
                self.applied += change
                self.skipped -= change
                self.orders += change if order else 0

    def result(self) -> Profiles:
        """What to write: removed profiles first (the store deletes a removed profile's
        alias rows, and must not delete the ones just written for the survivor)."""
        out: Profiles = dict.fromkeys(self.deleted)
        for key in self.touched:
            out[key] = self.profiles[key]
        return out

    def new_claims(self) -> list[str]:
        return [counted for counted, recorded in self.stored_claims.items() if not recorded]


class Bulk:
    """The import's events: applied (:class:`Changes`) batch by batch as they are
    read, written at the end in chunks of independent groups."""

    def __init__(
        self,
        store: BulkStore,
        email_hash: Callable[[str], str],
        now: int,
        activation: Activation | None = None,
    ) -> None:
        self.now = now
        self.activation = activation
        """Runs on every profile written, as in the sidecar's transactions (segment
        changes, journeys, ``due``); its messages go in the same transaction."""
        self._messages: dict[str, list[OutMessage]] = {}
        """Profile key -> the activation's messages for it (see :meth:`write`)."""
        self._hash = functools.lru_cache(maxsize=1 << 16)(email_hash)
        self._session = store.bulk()
        self.changes = Changes(now, self.email_hash, self._session)
        self.units: list[Unit] = []
        self._names: list[str] = []
        """Per unit: one name of its group."""
        self._parent: dict[str, str] = {}
        self._sizes: dict[str, int] = {}
        """Group (by its root name) -> events in it."""
        self._firsts: dict[str, int] = {}
        """Group -> its first event."""
        self._claimants: dict[str, int] = {}
        """Claim -> the first unit with it."""
        self._chunk_of: dict[str, int] = {}
        """Group -> the chunk it is written in (once reading is done)."""
        self._reads: dict[int, tuple[list[str], list[str], list[str]]] | None = None
        """Chunk -> what its groups read (see :meth:`_reads_of`)."""
        self._claimant: dict[str, str] = {}
        """Claim -> a name of the group that has it."""

    @property
    def applied(self) -> int:
        return self.changes.applied

    @property
    def orders(self) -> int:
        return self.changes.orders

    @property
    def skipped(self) -> int:
        return self.changes.skipped

    def close(self) -> None:
        self._session.close()

    def email_hash(self, event: ev.BaseEvent) -> str:
        return self._hash(event.email) if event.email else ""

    def add(self, units: list[Unit]) -> None:
        """Apply *units*, the next ones in file order, in memory."""
        if not units:
            return
        self.changes.load(units)
        self._link(units)
        self.changes.apply(units)
        self.units += units

    def _find(self, name: str) -> str:
        parent = self._parent
        root = name
        while (up := parent.get(root, root)) != root:
            root = up
        while name != root:
            parent[name], name = root, parent.get(name, name)
        return root

    def _link(self, units: list[Unit]) -> None:
        """Group the events so each profile is written once per import: events that
        share a customer, email, visitor id, a profile they resolve to in the store, or
        an order/event id belong together (and whatever one group changes, no other
        group reads)."""
        stored = self.changes.stored_aliases
        parent = self._parent
        sizes = self._sizes
        firsts = self._firsts
        find = self._find
        claimants = self._claimants
        index = len(self._names)
        for unit in units:
            event = unit.event
            names: list[str] = []
            if event.user_id:
                names.append(customer_key(event.user_id))
            if event.email:
                alias = email_key(self.email_hash(event))
                names.append(alias)
                if key := stored[alias]:
                    names.append(key)
            if event.anonymous_id:
                names.append(event.anonymous_id)
                if key := stored[event.anonymous_id]:
                    names.append(key)
            if counted := claim(event):
                first = claimants.setdefault(counted, index)
                if first != index:
                    names.append(self._names[first])  # the same order twice: first one wins
            root = find(names[0])
            for name in names[1:]:
                other = find(name)
                if other != root:
                    parent[other] = root
                    if other in sizes:  # two groups become one
                        sizes[root] = sizes.get(root, 0) + sizes.pop(other)
                        earliest = firsts.pop(other)
                        firsts[root] = min(firsts.get(root, earliest), earliest)
            sizes[root] = sizes.get(root, 0) + 1
            firsts.setdefault(root, index)
            self._names.append(names[0])
            index += 1

    def write(self, *, strict: bool, size: int, progress: Progress) -> None:
        """Write what changed: the groups, in the order of their first profile's key,
        packed into chunks of about *size* events, one transaction each (with *strict*:
        one in all)."""
        events = self._pack(size)
        results, claims = self._per_chunk(len(events))
        messages = [self._activate(result) for result in results]
        for some in messages:
            for message in some:
                self._messages.setdefault(message.visitor, []).append(message)

        session = self._session

        def commit(part: Sequence[int], writes: list[object]) -> None:
            def body() -> None:  # (Redis: run again if a sidecar wrote what it read)
                for n, rows in zip(part, writes, strict=True):
                    stale = self._stale(n) if session.others_wrote() else set()
                    if not stale:
                        session.store(rows)
                    else:
                        self._write_around(results[n], claims[n], stale)

            session.run(body)

        # SQLite lets go of the GIL while it works: a transaction is written on one
        # thread while this one encodes the next, and copied into the file on a third.
        parts = [range(len(events))] if strict else [[n] for n in range(len(events))]
        with (
            ThreadPoolExecutor(1, thread_name_prefix="edge-import-writer") as writer,
            ThreadPoolExecutor(1, thread_name_prefix="edge-import-checkpoint") as copier,
        ):
            writing: Future[None] | None = None
            copying: Future[None] | None = None
            in_writing = 0
            for part in parts:
                blobs = self.changes.blobs  # (what was read: the aggregates' changes)
                writes = [session.prepare(results[n], claims[n], blobs, messages[n]) for n in part]
                if writing is not None:
                    writing.result()
                    progress.add(in_writing)
                    if copying is None or copying.done():
                        copying = copier.submit(session.checkpoint)
                writing = writer.submit(commit, part, writes)
                in_writing = sum(events[n] for n in part)
            if writing is not None:
                writing.result()
                progress.add(in_writing)

    def _activate(self, result: Profiles) -> list[OutMessage]:
        """The activation on *result*'s profiles (against what was read); its messages."""
        if self.activation is None:
            return []
        blobs = self.changes.blobs
        before = {key: decode(blob) for key in result if (blob := blobs.get(key)) is not None}
        return activate(result, before, self.activation, self.now)

    def _pack(self, size: int) -> list[int]:
        """Put the groups, in the order of their first profile's key, into chunks of
        about *size* events; returns how many events each chunk has."""
        names = self._names
        firsts = self._firsts
        events: list[int] = []
        current = 0
        for root in sorted(self._sizes, key=lambda root: names[firsts[root]]):
            self._chunk_of[root] = len(events)
            current += self._sizes[root]
            if current >= size:
                events.append(current)
                current = 0
        if current:
            events.append(current)
        return events

    def _per_chunk(self, chunks: int) -> tuple[list[Profiles], list[list[str]]]:
        """What each chunk writes: its profiles (None: removed) and its new claims."""
        changes = self.changes
        chunk = self._chunk
        results: list[Profiles] = [{} for _ in range(chunks)]
        for key in changes.deleted:
            results[chunk(key)][key] = None
        for key in changes.touched:
            results[chunk(key)][key] = changes.profiles[key]
        claims: list[list[str]] = [[] for _ in range(chunks)]
        for counted, recorded in changes.stored_claims.items():
            if not recorded:
                claims[chunk(self._names[self._claimants[counted]])].append(counted)
        for some in claims:
            some.sort()  # the claims' pages filled in turn, not hopping as in file order
        return results, claims

    def _chunk(self, name: str) -> int:
        found = self._chunk_of.get(self._find(name))
        if found is None:
            raise RuntimeError(f"import: {name!r} belongs to no group")
        return found

    def _reads_of(self, n: int) -> tuple[list[str], list[str], list[str]]:
        """The profiles, aliases and claims chunk *n*'s groups read, sorted out for
        every chunk at the first call (one pass each, not one per chunk)."""
        if self._reads is None:
            chunk = self._chunk
            changes = self.changes
            self._claimant = {c: self._names[i] for c, i in self._claimants.items()}
            reads: dict[int, tuple[list[str], list[str], list[str]]] = {}
            for key in changes.blobs:
                reads.setdefault(chunk(key), ([], [], []))[0].append(key)
            for alias in changes.stored_aliases:
                reads.setdefault(chunk(alias), ([], [], []))[1].append(alias)
            for counted in changes.stored_claims:
                reads.setdefault(chunk(self._claimant[counted]), ([], [], []))[2].append(counted)
            self._reads = reads
        return self._reads.get(n, ([], [], []))

    def _stale(self, n: int) -> set[str]:
        """The groups of chunk *n* whose reads another writer has changed since: their
        profiles, aliases or claims are not what is stored now."""
        find = self._find
        changes = self.changes
        stale: set[str] = set()
        keys, aliases, claims = self._reads_of(n)
        stored = self._session.blobs(keys)
        stale.update(find(k) for k in keys if stored.get(k) != changes.blobs[k])
        pointing = self._session.aliases(aliases)
        stale.update(find(a) for a in aliases if pointing.get(a) != changes.stored_aliases[a])
        claimant = self._claimant
        recorded = self._session.claims(claims)
        stale.update(
            find(claimant[c]) for c in claims if (c in recorded) != changes.stored_claims[c]
        )
        return stale

    def _write_around(self, result: Profiles, claims: list[str], stale: set[str]) -> None:
        """Write the chunk's groups as computed, except the *stale* ones: those are
        computed again from what is stored now (in this transaction, so they see it)."""
        find = self._find
        names = self._names
        kept = {k: p for k, p in result.items() if find(k) not in stale}
        self._session.write(
            kept,
            [c for c in claims if find(names[self._claimants[c]]) not in stale],
            self.changes.blobs,
            [m for key in kept for m in self._messages.get(key, [])],
        )
        again = [n for n, name in enumerate(names) if find(name) in stale]
        units = [self.units[n] for n in again]
        redo = Changes(self.now, self.email_hash, self._session)
        redo.load(units)
        redo.apply(units)
        again_result = redo.result()
        before = {k: decode(b) for k in again_result if (b := redo.blobs.get(k)) is not None}
        fresh = activate(again_result, before, self.activation, self.now) if self.activation else []
        self._session.write(again_result, redo.new_claims(), redo.blobs, fresh)
        self.changes.recount(again, units, redo.duplicates)

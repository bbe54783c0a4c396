"""The embedded store: one SQLite file in WAL mode, created on first use.

Reads run on the caller's thread through their own connection (a primary-key read in
WAL mode takes microseconds and never waits for the writer). Writes go to a single
writer thread that commits them in groups: the transactions one event-loop iteration
asked for are handed over together, and every one waiting when the previous commit
finished goes into the next, so a burst of event batches costs one commit, not one
each. A group reads its profiles and claims in a statement per table and writes each
table in one. A write's future resolves only after its commit, which is
what lets ``/_edge/events`` acknowledge durably: WAL with ``synchronous=NORMAL``
survives a killed process (``kill -9``); set ``sync_full`` to also survive power loss.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from edge.profiles.model import Profile, Tally, TallyKey, decode, encode
from edge.profiles.outbox import (
    DEAD,
    DELIVERED,
    PENDING,
    OutboxRow,
    OutMessage,
)
from edge.profiles.store import (
    CLAIM_TTL,
    Mutation,
    Profiles,
    ReportRow,
    Store,
    add_deltas,
    bulk_deltas,
    decode_products,
    decode_snapshots,
    delta_rows,
    encode_products,
    encode_snapshot,
    expanded,
    measuring,
    outgoing,
)

log = logging.getLogger("edge.profiles")

_PROFILES = (
    "CREATE TABLE IF NOT EXISTS profiles "
    "(key TEXT PRIMARY KEY, data BLOB NOT NULL, updated INTEGER NOT NULL, "
    "due INTEGER NOT NULL DEFAULT 0)"
)
_ARM_DAYS = (
    "CREATE TABLE IF NOT EXISTS arm_days (day INTEGER NOT NULL, placement TEXT NOT NULL, "
    "arm TEXT NOT NULL, segments TEXT NOT NULL, units INTEGER NOT NULL, "
    "exposures INTEGER NOT NULL, converters INTEGER NOT NULL, revenue REAL NOT NULL, "
    "revenue_sq REAL NOT NULL, clicks INTEGER NOT NULL, views INTEGER NOT NULL, "
    "PRIMARY KEY (day, placement, arm, segments)) WITHOUT ROWID"
)
"""The daily aggregates: per day of first exposure, placement, arm and combination of
segments the units were in (``vip,mobile_user``; ``""`` for none), the sums of
:data:`~edge.profiles.model.TALLY_FIELDS`. A unit counts in one row: a repeat exposure
updates one row however many segments the unit is in (the report adds each row to
its arm's total and to each of its segments, :func:`~edge.profiles.store.expanded`)."""
_SCHEMA = f"""
{_PROFILES};
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, key TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_by_key ON aliases(key);
CREATE TABLE IF NOT EXISTS claims (claim TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS learned (name TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
{_ARM_DAYS};
CREATE TABLE IF NOT EXISTS segment_snapshots (day TEXT PRIMARY KEY, data BLOB NOT NULL)
  WITHOUT ROWID;
"""
_ACTIVATION_SCHEMA = """
CREATE INDEX IF NOT EXISTS profiles_due ON profiles(due) WHERE due > 0;
CREATE TABLE IF NOT EXISTS outbox (id TEXT PRIMARY KEY, destination TEXT NOT NULL,
  body BLOB NOT NULL, visitor TEXT NOT NULL, not_before INTEGER NOT NULL,
  coupon_pool TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
  next_at INTEGER NOT NULL, error TEXT NOT NULL, created INTEGER NOT NULL,
  updated INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_next ON outbox(state, next_at);
CREATE INDEX IF NOT EXISTS outbox_visitor ON outbox(visitor);
CREATE TABLE IF NOT EXISTS coupons (pool TEXT NOT NULL, code TEXT NOT NULL,
  message TEXT, taken INTEGER, PRIMARY KEY (pool, code)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS coupons_by_message ON coupons(pool, message)
  WHERE message IS NOT NULL;
"""
"""The activation's tables (``edge.profiles.outbox``): the due index is a column of
``profiles`` (written with the profile, ``Profile.due``), the outbox's messages are
inserted in the transaction that writes the profiles they come from."""
_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO outbox (id, destination, body, visitor, not_before, coupon_pool, "
    "state, attempts, next_at, error, created, updated) "
    "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, '', ?, ?)"
)
_OUTBOX_COLUMNS = (
    "id, destination, body, visitor, not_before, coupon_pool, state, attempts, next_at, "
    "error, created, updated"
)
_UPDATE_TALLIES = (
    "UPDATE arm_days SET units = units + ?, exposures = exposures + ?, "
    "converters = converters + ?, revenue = revenue + ?, revenue_sq = revenue_sq + ?, "
    "clicks = clicks + ?, views = views + ? "
    "WHERE day = ? AND placement = ? AND arm = ? AND segments = ?"
)
_INSERT_TALLIES = "INSERT INTO arm_days VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ADD_EXPOSURES = (
    "UPDATE arm_days SET exposures = exposures + ? "
    "WHERE day = ? AND placement = ? AND arm = ? AND segments = ?"
)
"""The most common change: repeat exposures, nothing else."""
_HAS_TALLIES = "SELECT 1 FROM arm_days WHERE day = ? AND placement = ? AND arm = ? AND segments = ?"
_SELECT_TALLIES = (
    "SELECT day, placement, arm, units, exposures, converters, revenue, revenue_sq, "
    "clicks, views, segments FROM arm_days WHERE day >= ?"
)
_SELECT_OLD_TALLIES = (
    "SELECT day, placement, arm, units, exposures, converters, revenue, revenue_sq, "
    "clicks, 0, '' FROM arm_days WHERE day >= ?"
)
"""The aggregates of a store made before segments and views (read-only: not migrated)."""
"""The daily aggregates of exposures and outcomes (:func:`edge.profiles.store.measuring`),
added to in the transaction that writes the profiles they come from."""
_PROFILES_WITHOUT_ROWID = "WITHOUT ROWID"
"""How stores made before 2026-12 kept profiles: in the key's own B-tree. A profile
(0.3-3 KB) is too large for that (SQLite advises rows under a twentieth of a page):
each spilled into an overflow page, so the file was twice the size and a load at
1,000,000 profiles read twice the pages (p50 2x, fill 4x slower, bench/profiles.py
--scale). A table with rowids keeps each profile on one leaf page, and the key's index
is small enough to stay in the page cache."""
_MAX_GROUP = 512
_PROGRESS_STEPS: Final = 1000

_Job = tuple[
    Sequence[str],
    list[str],
    Mutation,
    asyncio.Future[Profiles] | None,
    asyncio.AbstractEventLoop | None,
]
_Settled = list[tuple[asyncio.Future[Profiles], Profiles | BaseException]]


def _connect(path: str, *, sync_full: bool, busy: float = 30.0) -> sqlite3.Connection:
    """A connection in WAL mode that waits *busy* seconds at most for a lock."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy)
    conn.execute(f"PRAGMA busy_timeout={max(1, int(busy * 1000))}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if sync_full else 'NORMAL'}")
    return conn


class SQLiteStore(Store):
    """*read_timeout*: the most a read waits for a lock held by another process or
    runs (a progress handler interrupts it), in seconds; reads run on the caller's
    thread, so this is also the most one can hold up the event loop. *write_timeout*:
    the most the writer thread waits for the file's lock before a group fails."""

    failures = (sqlite3.Error, OSError)
    bounds_its_reads = True  # busy_timeout and the progress handler: read_timeout
    bounds_its_writes = True  # the writer's busy_timeout, and _sweep: write_timeout

    def __init__(
        self,
        path: str | Path,
        *,
        sync_full: bool = False,
        read_timeout: float = 30.0,
        write_timeout: float = 30.0,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Opening waits as long as a command would for another program's lock (an
        # `edge import` committing); the writer's own transactions, write_timeout.
        self._writer = _connect(self.path, sync_full=sync_full, busy=max(write_timeout, 30.0))
        _migrate(self._writer)
        _migrate_tallies(self._writer)
        self._writer.executescript(_SCHEMA)
        _add_due(self._writer)
        self._writer.executescript(_ACTIVATION_SCHEMA)
        self._reader = _connect(self.path, sync_full=sync_full, busy=read_timeout)
        self._read_timeout = read_timeout
        self._read_deadline = float("inf")
        # Checked every _PROGRESS_STEPS virtual machine steps: a primary-key read takes
        # fewer, so it costs nothing there; a read past its deadline is interrupted.
        self._reader.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)
        self._pruned = 0.0
        self._prune()
        # Half the deadline: a file another program keeps locked fails the group
        # cleanly (nothing written, the caller told so) before the caller's deadline
        # passes, which would leave it not knowing whether its write landed.
        self._writer.execute(f"PRAGMA busy_timeout={max(1, int(write_timeout * 500))}")
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._handing: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        self._due: dict[
            asyncio.AbstractEventLoop, collections.deque[tuple[float, asyncio.Future[Profiles]]]
        ] = {}
        """Each loop's writes not answered yet, with their deadlines, oldest first."""
        self._sweeping: set[asyncio.AbstractEventLoop] = set()
        """The loops whose sweep is scheduled (one at a time)."""
        self._write_timeout = write_timeout
        self._sweep_every = min(max(write_timeout / 4, 0.01), 0.25)
        """Jobs from the loop's current iteration, handed to the writer together."""
        self._thread = threading.Thread(
            target=self._write_loop, name="edge-sqlite-writer", daemon=True
        )
        self._thread.start()

    # reads

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self._read_deadline else 0

    def _read_one(self, sql: str, arg: str) -> Any:
        self._read_deadline = time.monotonic() + self._read_timeout
        try:
            row = self._reader.execute(sql, (arg,)).fetchone()
        finally:
            self._read_deadline = float("inf")
        return row[0] if row else None

    async def get(self, key: str) -> Profile | None:
        return self.get_sync(key)

    def get_sync(self, key: str) -> Profile | None:
        data = self._read_one("SELECT data FROM profiles WHERE key = ?", key)
        return None if data is None else decode(data)

    async def resolve(self, alias: str) -> str | None:
        return self._read_one("SELECT key FROM aliases WHERE alias = ?", alias)  # type: ignore[no-any-return]

    async def ping(self) -> None:
        self._read_one("SELECT count(*) FROM learned WHERE name = ?", "products")

    async def keys(self) -> list[str]:
        return [row[0] for row in self._reader.execute("SELECT key FROM profiles")]

    # the products learned from the shop's pages: one row, written now and then on a
    # connection of its own (not the writer thread's, not on the event loop)

    async def report_rows(self, since_day: int = 0) -> list[ReportRow]:
        return expanded(self._reader.execute(_SELECT_TALLIES, (since_day,)))

    async def put_products(self, records: list[dict[str, Any]]) -> None:
        data = encode_products(records)
        await asyncio.get_running_loop().run_in_executor(None, self._put_products, data)

    def _put_products(self, data: bytes) -> None:
        conn = _connect(self.path, sync_full=False)
        try:
            conn.execute(
                "INSERT OR REPLACE INTO learned (name, data) VALUES ('products', ?)", (data,)
            )
        finally:
            conn.close()

    async def get_products(self) -> list[dict[str, Any]]:
        row = self._reader.execute("SELECT data FROM learned WHERE name = 'products'").fetchone()
        return decode_products(row[0] if row else None)

    # the daily segment counts (edge.snapshots): one row a day, written once a day on a
    # connection of its own, like the products

    async def put_segment_snapshot(self, day: str, snapshot: dict[str, Any]) -> None:
        data = encode_snapshot(snapshot)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._put_snapshot, day, data)

    def _put_snapshot(self, day: str, data: bytes) -> None:
        conn = _connect(self.path, sync_full=False)
        try:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO segment_snapshots (day, data) VALUES (?, ?)",
                    (day, data),
                )
        finally:
            conn.close()

    async def get_segment_snapshots(self, since: str) -> list[dict[str, Any]]:
        rows = self._reader.execute(
            "SELECT day, data FROM segment_snapshots WHERE day >= ?", (since,)
        ).fetchall()
        return decode_snapshots(rows)

    # one-time names (signed ingest requests seen), on a connection of their own, off
    # the event loop: rare, and never in the writer thread's group commits

    async def claim_once(self, name: str, ttl: int) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._once, "claim", name, ttl)

    async def release_once(self, name: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._once, "release", name, 0)

    def _once(self, action: str, name: str, ttl: int) -> bool:
        with self.__dict__.setdefault("_once_lock", threading.Lock()):
            conn = self.__dict__.get("_once_conn")
            if conn is None:
                conn = self.__dict__["_once_conn"] = _connect(self.path, sync_full=False)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS once (name TEXT PRIMARY KEY, until INTEGER "
                    "NOT NULL) WITHOUT ROWID"
                )
            if action == "release":
                conn.execute("DELETE FROM once WHERE name = ?", (name,))
                return True
            now = int(time.time())
            conn.execute("DELETE FROM once WHERE until < ?", (now,))
            # One statement, atomic: of two replicas claiming one name, one inserts.
            cursor = conn.execute(
                "INSERT OR IGNORE INTO once (name, until) VALUES (?, ?)", (name, now + ttl)
            )
            return cursor.rowcount == 1

    # the activation: the due index (read on the reader), the outbox and coupons (on a
    # connection of their own, off the event loop, each call one transaction)

    async def due_keys(self, until: int, limit: int) -> list[str]:
        sql = "SELECT key FROM profiles WHERE due > 0 AND due <= ? ORDER BY due LIMIT ?"
        return [row[0] for row in self._reader.execute(sql, (until, limit))]

    async def _side(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self._side_run, fn, args)

    def _side_run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        with self.__dict__.setdefault("_side_lock", threading.Lock()):
            conn = self.__dict__.get("_side_conn")
            if conn is None:
                conn = self.__dict__["_side_conn"] = _connect(self.path, sync_full=False)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    async def outbox_claim(self, now: int, limit: int, lease: int) -> list[OutboxRow]:
        return await self._side(_claim_messages, now, limit, lease)  # type: ignore[no-any-return]

    async def outbox_done(self, id: str) -> None:
        sql = "UPDATE outbox SET state = ?, error = '', updated = ? WHERE id = ?"
        await self._side(_execute, sql, (DELIVERED, int(time.time()), id))

    async def outbox_failed(self, id: str, retry_at: int, error: str, dead: bool) -> None:
        sql = "UPDATE outbox SET state = ?, next_at = ?, error = ?, updated = ? WHERE id = ?"
        state = DEAD if dead else PENDING
        await self._side(_execute, sql, (state, retry_at, error, int(time.time()), id))

    async def outbox_list(self, state: str, limit: int) -> list[OutboxRow]:
        where = "WHERE state = ?" if state else "WHERE ? = ''"
        sql = f"SELECT {_OUTBOX_COLUMNS} FROM outbox {where} ORDER BY created, id LIMIT ?"
        return [_row(r) for r in self._reader.execute(sql, (state, limit))]

    async def outbox_retry(self, ids: Sequence[str]) -> int:
        sql = (
            "UPDATE outbox SET state = 'pending', attempts = 0, next_at = 0, error = '', "
            "updated = ? WHERE id = ? AND state != 'delivered'"
        )
        now = int(time.time())
        return await self._side(_execute_many, sql, [(now, id) for id in ids])  # type: ignore[no-any-return]

    async def outbox_purge(self, state: str, before: int) -> int:
        sql = "DELETE FROM outbox WHERE state = ? AND updated < ?"
        return await self._side(_execute, sql, (state, before))  # type: ignore[no-any-return]

    async def outbox_forget(self, visitor: str) -> int:
        sql = "DELETE FROM outbox WHERE visitor = ?"
        return await self._side(_execute, sql, (visitor,))  # type: ignore[no-any-return]

    async def coupon_load(self, pool: str, codes: Sequence[str]) -> int:
        sql = "INSERT OR IGNORE INTO coupons (pool, code) VALUES (?, ?)"
        return await self._side(_execute_many, sql, [(pool, c) for c in codes])  # type: ignore[no-any-return]

    async def coupon_take(self, pool: str, message_id: str) -> str | None:
        return await self._side(_take_coupon, pool, message_id, int(time.time()))  # type: ignore[no-any-return]

    async def coupon_counts(self, pool: str) -> tuple[int, int]:
        sql = "SELECT count(*) - count(message), count(message) FROM coupons WHERE pool = ?"
        left, given = self._reader.execute(sql, (pool,)).fetchone()
        return left, given

    # writes

    async def transact(
        self, keys: Sequence[str], claims: Iterable[str], mutation: Mutation
    ) -> Profiles:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Profiles] = loop.create_future()
        jobs = self._handing.get(loop)
        if jobs is None:
            # The first job of this loop iteration: the writer gets them all at once,
            # so concurrent requests share one commit (and one wake-up of its thread).
            jobs = self._handing[loop] = []
            loop.call_soon(self._hand_over, loop)
        jobs.append((keys, list(claims), mutation, future, loop))
        # The write's deadline: one timer per loop sweeps them all (they come due in
        # the order they were asked for), cheaper than a timer each.
        due = self._due.get(loop)
        if due is None:
            due = self._due[loop] = collections.deque()
        while due and due[0][1].done():  # answered: let go of them (and their results)
            due.popleft()
        due.append((time.monotonic() + self._write_timeout, future))
        if loop not in self._sweeping:
            self._sweeping.add(loop)
            loop.call_later(self._sweep_every, self._sweep, loop)
        return await future

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the writes of *loop* past their deadline (the writer thread skips a job
        whose caller stopped waiting, if it did not start it yet)."""
        due = self._due[loop]
        now = time.monotonic()
        while due and (due[0][1].done() or due[0][0] <= now):
            _, future = due.popleft()
            if not future.done():
                future.set_exception(
                    TimeoutError(f"profile write not committed within {self._write_timeout:g} s")
                )
        if due:
            loop.call_later(self._sweep_every, self._sweep, loop)
        else:
            self._sweeping.discard(loop)

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._handing.pop(loop, None)
        if jobs:
            self._jobs.put(jobs)

    def bulk(self) -> BulkSession:
        """A connection of its own for a bulk writer (``edge import``)."""
        return BulkSession(self.path)

    def _write_loop(self) -> None:
        while True:
            group = self._jobs.get()
            if group is None:
                return
            while len(group) < _MAX_GROUP:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                group += more
            # A caller that stopped waiting (its deadline passed) gets nothing written:
            # it was not acknowledged, and its retry will come.
            group = [job for job in group if job[3] is None or not job[3].done()]
            if not group:
                continue
            outcomes = self._commit(group)
            # One wake-up per loop for the whole group, not one per job.
            settle: dict[asyncio.AbstractEventLoop, _Settled] = {}
            for (_, _, _, future, loop), outcome in zip(group, outcomes, strict=True):
                if future is not None and loop is not None:
                    settle.setdefault(loop, []).append((future, outcome))
            for loop, settled in settle.items():
                try:
                    loop.call_soon_threadsafe(_settle, settled)
                except RuntimeError:  # that loop is closed: nobody waits for these
                    log.warning(
                        "%d profile writes finished after their event loop closed", len(settled)
                    )
            if time.time() - self._pruned > PRUNE_EVERY:
                self._prune()

    def _commit(self, group: list[_Job]) -> list[Profiles | BaseException]:
        """Apply *group* in one transaction: every job's reads in a statement or two,
        its mutation against what the jobs before it wrote, then all the writes. If a
        write fails, the group is redone job by job (a savepoint each), so one bad job
        does not sink the others."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = _apply_group(conn, group)
            except Exception as exc:
                log.warning("group write failed, retrying job by job: %s", exc)
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                outcomes = []
                for job in group:
                    conn.execute("SAVEPOINT job")
                    try:
                        outcome = _apply_group(conn, [job])[0]
                    except Exception as job_exc:
                        outcome = job_exc
                    if isinstance(outcome, BaseException):
                        conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append(outcome)
            conn.execute("COMMIT")
        except Exception as exc:
            log.error("profile store write failed: %s", exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            outcomes = [exc] * len(group)
        return outcomes

    def _prune(self, now: float | None = None) -> int:
        """Forget claims older than ``CLAIM_TTL`` (as Redis expires them); on the
        writer's connection, at open and then daily. Returns how many went."""
        now = time.time() if now is None else now
        self._pruned = now
        try:
            with self._writer:
                cursor = self._writer.execute(
                    "DELETE FROM claims WHERE ts < ?", (int(now - CLAIM_TTL),)
                )
        except sqlite3.Error as exc:
            log.warning("could not forget old claims: %s", exc)
            return 0
        return cursor.rowcount

    async def close(self) -> None:
        self._hand_over(asyncio.get_running_loop())
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        self._reader.close()
        self._writer.close()
        for name in ("_side_conn", "_once_conn"):
            conn = self.__dict__.pop(name, None)
            if conn is not None:
                conn.close()


_BULK_CACHE_KIB: Final = 65_536
"""Page cache of a bulk session: a chunk's pages stay in memory until its commit
(at the default 2 MB, SQLite spills and rewrites them; measured ~40% more time)."""
_BULK_CHECKPOINT_PAGES: Final = 16_384
"""A bulk session's commits copy the WAL into the database only past this many pages
(64 MB) rather than past 1,000: each copy ends in an fsync (a 100,000-order import's
five commits spent ~0.7 s on them). Its writer copies meanwhile instead, on another
thread (:meth:`BulkSession.checkpoint`), and what is left when it closes."""


class BulkSession:
    """One connection for a bulk writer (``edge import``), which reads what it needs
    first, outside any transaction, computes the new profiles, and then writes them in
    transactions. :meth:`others_wrote` says whether another connection committed since
    the session opened, i.e. whether those early reads may since have gone stale."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._checkpointer: sqlite3.Connection | None = None
        self._conn = _connect(path, sync_full=False)
        self._conn.execute(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")
        self._conn.execute(f"PRAGMA wal_autocheckpoint={_BULK_CHECKPOINT_PAGES}")
        self._version = self._data_version()

    def _data_version(self) -> int:
        # Changes when another connection commits; this connection's own commits don't.
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def others_wrote(self) -> bool:
        return self._data_version() != self._version

    def blobs(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored (encoded) profiles among *keys*."""
        return _blobs(self._conn, keys)

    def aliases(self, aliases: Sequence[str]) -> dict[str, str]:
        """alias -> key for the *aliases* that point at a profile."""
        found: dict[str, str] = {}
        for part in _parts(aliases):
            marks = ",".join("?" * len(part))
            sql = f"SELECT alias, key FROM aliases WHERE alias IN ({marks})"
            found.update(self._conn.execute(sql, part))
        return found

    def claims(self, claims: Sequence[str]) -> set[str]:
        """The *claims* already recorded."""
        return _claims(self._conn, claims)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All the writes inside it, or (if it raises) none."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def run(self, body: Callable[[], None]) -> None:
        """*body* (its reads and :meth:`store`/:meth:`write` calls) in one transaction."""
        with self.transaction():
            body()

    @staticmethod
    def prepare(
        result: Profiles,
        new_claims: Sequence[str],
        before: Mapping[str, bytes | None] = {},
        messages: Sequence[OutMessage] = (),
    ) -> Writes:
        """:func:`prepare`, for the bulk writer (any thread); with the daily aggregates'
        changes against *before* (key -> the profile as read, encoded)."""
        writes = prepare(result, new_claims, messages)
        writes.tallies = delta_rows(bulk_deltas(result, before))
        return writes

    def write(
        self,
        result: Profiles,
        new_claims: Sequence[str],
        before: Mapping[str, bytes | None] = {},
        messages: Sequence[OutMessage] = (),
    ) -> None:
        """Store *result* (None deletes) and record *new_claims*, as a transaction does."""
        _store(self._conn, self.prepare(result, new_claims, before, messages))

    def store(self, writes: Writes) -> None:
        """:meth:`write`, with the profiles already encoded (on another thread)."""
        _store(self._conn, writes)

    def checkpoint(self) -> None:
        """Copy what is committed from the WAL into the database file, without waiting
        for readers or writers; on a connection of its own, so a thread can do it while
        this session writes its next transaction."""
        if self._checkpointer is None:
            self._checkpointer = _connect(self.path, sync_full=False)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # what is left over, the next commit does
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._conn.close()
        if self._checkpointer is not None:
            self._checkpointer.close()


def read_report_rows(path: str, since_day: int = 0) -> list[ReportRow]:
    """The daily aggregates of the store file at *path*, opened read-only (``edge
    report`` changes nothing, not even the schema; a store made before aggregates
    existed has none)."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'arm_days'"
        ).fetchone()
        if not exists:
            return []
        current = _has_column(conn, "arm_days", "segments")
        return expanded(
            conn.execute(_SELECT_TALLIES if current else _SELECT_OLD_TALLIES, (since_day,))
        )
    finally:
        conn.close()


def read_profiles(path: str) -> Iterator[tuple[str, Profile]]:
    """Every (key, profile) of the store file at *path*, opened read-only (``edge
    export`` changes nothing, creates nothing)."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    try:
        for key, data in conn.execute("SELECT key, data FROM profiles ORDER BY key"):
            yield key, decode(data)
    finally:
        conn.close()


def _add_due(conn: sqlite3.Connection) -> None:
    """Give a store made before the due index its column (every profile: never due
    until its next write)."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(profiles)")]
    if "due" not in columns:
        with contextlib.suppress(sqlite3.OperationalError):  # another process just did
            conn.execute("ALTER TABLE profiles ADD COLUMN due INTEGER NOT NULL DEFAULT 0")


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def _migrate_tallies(conn: sqlite3.Connection) -> None:
    """Give the daily aggregates of a store made before segments and views (2026-12)
    their ``segments`` and ``views`` columns: its rows become those of units in no
    segment (``""``, no views), in one transaction."""

    def old_layout() -> bool:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'arm_days'"
        ).fetchone()
        return exists is not None and not _has_column(conn, "arm_days", "segments")

    if not old_layout():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if old_layout():
            conn.execute("ALTER TABLE arm_days RENAME TO arm_days_before")
            conn.execute(_ARM_DAYS)
            conn.execute(
                "INSERT INTO arm_days SELECT day, placement, arm, '', units, exposures, "
                "converters, revenue, revenue_sq, clicks, 0 FROM arm_days_before"
            )
            conn.execute("DROP TABLE arm_days_before")
            log.warning("profile store: the daily aggregates now keep segments and views")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate(conn: sqlite3.Connection) -> None:
    """Move the profiles of a store made with the older layout (see
    ``_PROFILES_WITHOUT_ROWID``) into the current one, in one transaction (if it is
    interrupted, the old table stays as it was and the next start does it again)."""

    def old_layout() -> bool:
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'profiles'"
        ).fetchone()
        return row is not None and _PROFILES_WITHOUT_ROWID in row[0].upper()

    if not old_layout():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if old_layout():  # another process may have moved them while we waited
            count = conn.execute("SELECT count(*) FROM profiles").fetchone()[0]
            log.warning("profile store: moving %d profiles to the current layout", count)
            conn.execute("ALTER TABLE profiles RENAME TO profiles_before")
            conn.execute(_PROFILES)
            conn.execute(
                "INSERT INTO profiles (key, data, updated) "
                "SELECT key, data, updated FROM profiles_before ORDER BY key"
            )
            conn.execute("DROP TABLE profiles_before")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _apply_group(conn: sqlite3.Connection, group: list[_Job]) -> list[Profiles | BaseException]:
    """Run *group*'s mutations in order inside the open transaction and write their
    results. Reads for the whole group take one statement per table; a job sees what
    the jobs before it wrote. A mutation that raises fails its own job only (it wrote
    nothing yet); a failed write raises for the caller to retry job by job."""
    keys = list(dict.fromkeys(key for job in group for key in job[0]))
    claims = list(dict.fromkeys(claim for job in group for claim in job[1]))
    found = _blobs(conn, keys)
    stored: dict[str, bytes | None] = dict(found)
    seen = _claims(conn, claims) if claims else set()
    outcomes: list[Profiles | BaseException] = []
    writes: list[tuple[Writes, list[str]]] = []
    tallies: dict[TallyKey, Tally] = {}
    deltas: dict[TallyKey, Tally] = {}
    for job_keys, job_claims, mutation, _, _ in group:
        # Each job is ~0.1 ms of Python holding the GIL, a group of 25 ~2.6 ms; the
        # request loop, on the same core, would wait for the interpreter's 5 ms switch
        # interval. Yielding the core between jobs (the GIL is released around the
        # call) lets a loop that waits for the GIL in: issue 19's G2, the mix at half
        # load on one core, first body byte added p50 1.03-1.42 -> 0.77-0.96 ms, p99
        # 5-19 -> 1.6-3.9 ms (bench/goals.py --goal G2, runs alternated). A shorter
        # switch interval (1 ms) did not help (p99 +9.8 ms in its run).
        os.sched_yield()
        try:
            current: Profiles = {
                key: None if (data := stored.get(key)) is None else decode(data) for key in job_keys
            }
            job_seen = {c for c in job_claims if c in seen}
            result = measuring(mutation, deltas)(current, job_seen)
            new_claims = [c for c in job_claims if c not in job_seen]
            job_writes = prepare(result, new_claims, outgoing(mutation))
        except Exception as exc:  # this job only: nothing of it was written
            outcomes.append(exc)
            continue
        for (key,) in job_writes.gone:
            stored[key] = None
        for key, data, _, _ in job_writes.kept:
            stored[key] = data
        seen.update(new_claims)
        writes.append((job_writes, new_claims))
        outcomes.append(result)
        if not deltas:
            continue
        if tallies:
            add_deltas(tallies, deltas)
        else:  # (the first job's: taken as they are; the next job gets a new dict)
            tallies, deltas = deltas, {}
    if tallies:
        _add_tallies(conn, delta_rows(tallies))
    if any(w.gone for w, _ in writes):
        for job_writes, _ in writes:  # deletions and links land in the jobs' order
            _store(conn, job_writes)
    elif len(writes) == 1:  # (one job: its rows as they are)
        writes[0][0].stored = found.keys()  # (no deletion: what was read is there)
        _store(conn, writes[0][0])
    elif writes:  # all upserts: one statement per table for the group
        new_claims = [c for _, claims in writes for c in claims]
        _store(
            conn,
            Writes(
                now=writes[-1][0].now,
                gone=[],
                kept=[row for w, _ in writes for row in w.kept],
                links=[row for w, _ in writes for row in w.links],
                claims=msgspec.json.encode(new_claims) if new_claims else b"",
                messages=[row for w, _ in writes for row in w.messages],
                stored=found.keys(),  # (no job deleted one: what was read is there)
            ),
        )
    return outcomes


def _add_tallies(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Add *rows* (:func:`~edge.profiles.store.delta_rows`, one per key) to the
    aggregates: an update for each (the row is there but on the first unit of its
    day, arm and segments), an insert for those it missed; a fifth cheaper than an
    upsert, inside the writer's lock. One ``executemany`` per kind of update: the
    common write (repeat exposures of a page's placements) is one statement, not one
    a placement (with the profile's UPDATE, -48k instructions a write; the rows an
    update missed are found by their key and inserted)."""
    repeats = [row for row in rows if row[4] == 0 and not any(row[6:])]
    others = [row for row in rows if not (row[4] == 0 and not any(row[6:]))]
    updated = 0
    if repeats:  # exposures only (repeats): one column
        updated += _update_many(conn, _ADD_EXPOSURES, [(row[5], *row[:4]) for row in repeats])
    if others:
        updated += _update_many(conn, _UPDATE_TALLIES, [(*row[4:], *row[:4]) for row in others])
    if updated == len(rows):
        return
    for row in rows:
        if conn.execute(_HAS_TALLIES, row[:4]).fetchone() is None:
            conn.execute(_INSERT_TALLIES, row)


def _update_many(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    """Rows changed by *sql* run once per row of *rows* (one ``execute`` for one row:
    cheaper than ``executemany``'s iterator)."""
    if len(rows) == 1:
        return conn.execute(sql, rows[0]).rowcount
    return conn.executemany(sql, rows).rowcount


def _parts(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _blobs(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for part in _parts(keys):
        marks = ",".join("?" * len(part))
        found.update(conn.execute(f"SELECT key, data FROM profiles WHERE key IN ({marks})", part))
    return found


def _claims(conn: sqlite3.Connection, claims: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    for part in _parts(claims):
        marks = ",".join("?" * len(part))
        sql = f"SELECT claim FROM claims WHERE claim IN ({marks})"
        seen.update(claim for (claim,) in conn.execute(sql, part))
    return seen


@dataclass
class Writes:
    """A transaction's writes, encoded: rows for each table."""

    now: int
    gone: list[tuple[str]]
    kept: list[tuple[str, bytes, int, int]]
    """(key, the encoded profile, now, its due time)."""
    links: list[tuple[str, str]]
    claims: bytes
    """The new claims, a JSON array (b"" for none)."""
    tallies: list[tuple[Any, ...]] = field(default_factory=list)
    """Changes to the daily aggregates (a bulk writer's: a transaction's own are
    written by :func:`_apply_group`)."""
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    """The outbox's new messages (rows of :data:`_INSERT_MESSAGE`)."""
    stored: Collection[str] = ()
    """Keys of *kept* known to have a row in this transaction: an ``UPDATE`` in place
    writes them (the key's index untouched), where ``INSERT OR REPLACE`` would delete
    the row and insert it anew."""


def prepare(
    result: Profiles, new_claims: Sequence[str], messages: Sequence[OutMessage] = ()
) -> Writes:
    """The rows that store *result* (None deletes), record *new_claims* and enqueue
    *messages*."""
    now = int(time.time())
    return Writes(
        now=now,
        gone=[(key,) for key, profile in result.items() if profile is None],
        kept=[(key, encode(p), now, p.due) for key, p in result.items() if p is not None],
        links=[(alias, key) for key, p in result.items() if p is not None for alias in p.aliases],
        claims=msgspec.json.encode(new_claims) if new_claims else b"",
        messages=[(*_fields(m), m.not_before, now, now) for m in messages],
    )


def _store(conn: sqlite3.Connection, writes: Writes) -> None:
    if writes.tallies:
        _add_tallies(conn, writes.tallies)
    if writes.gone:
        conn.executemany("DELETE FROM profiles WHERE key = ?", writes.gone)
        conn.executemany("DELETE FROM aliases WHERE key = ?", writes.gone)
    if writes.kept:
        _put_profiles(conn, writes.kept, writes.stored)
    if writes.messages:
        conn.executemany(_INSERT_MESSAGE, writes.messages)
    if writes.links:
        conn.executemany("INSERT OR REPLACE INTO aliases (alias, key) VALUES (?, ?)", writes.links)
    if not writes.claims:
        return
    # One statement rather than a row each: a third of the time for 100,000. (json_each
    # would cut a value at a NUL character.)
    if _JSON and b"\\u0000" not in writes.claims:
        sql = "INSERT OR IGNORE INTO claims (claim, ts) SELECT value, ? FROM json_each(?)"
        conn.execute(sql, (writes.now, writes.claims.decode()))
    else:
        rows = [(claim, writes.now) for claim in msgspec.json.decode(writes.claims)]
        conn.executemany("INSERT OR IGNORE INTO claims (claim, ts) VALUES (?, ?)", rows)


def _put_profiles(
    conn: sqlite3.Connection, kept: list[tuple[str, bytes, int, int]], stored: Collection[str]
) -> None:
    """Write the rows *kept* (key, data, updated, due): an update of those whose key
    *stored* says has a row, an insert (or replace) of the others."""
    if len(kept) == 1:  # (most writes: one visitor's profile)
        key, data, updated, due = kept[0]
        if key in stored:
            conn.execute(_UPDATE_PROFILE, (data, updated, due, key))
        else:
            conn.execute(_PUT_PROFILE, kept[0])
        return
    if stored:
        conn.executemany(
            _UPDATE_PROFILE, [(row[1], row[2], row[3], row[0]) for row in kept if row[0] in stored]
        )
    new = [row for row in kept if row[0] not in stored]
    if new:
        conn.executemany(_PUT_PROFILE, new)


_PUT_PROFILE: Final = (
    "INSERT OR REPLACE INTO profiles (key, data, updated, due) VALUES (?, ?, ?, ?)"
)
_UPDATE_PROFILE: Final = "UPDATE profiles SET data = ?, updated = ?, due = ? WHERE key = ?"


def _fields(m: OutMessage) -> tuple[Any, ...]:
    return (m.id, m.destination, m.body, m.visitor, m.not_before, m.coupon_pool)


def _execute(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    return conn.execute(sql, args).rowcount


def _execute_many(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    return sum(conn.execute(sql, row).rowcount for row in rows)


def _row(r: tuple[Any, ...]) -> OutboxRow:
    message = OutMessage(r[0], r[1], bytes(r[2]), r[3], r[4], r[5])
    return OutboxRow(message, r[6], r[7], r[8], r[9], r[10], r[11])


def _claim_messages(conn: sqlite3.Connection, now: int, limit: int, lease: int) -> list[OutboxRow]:
    """Inside ``BEGIN IMMEDIATE``: of two processes claiming, the second sees the
    first's leases."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM outbox WHERE state = 'pending' AND next_at <= ? "
            "ORDER BY next_at LIMIT ?",
            (now, limit),
        )
    ]
    conn.executemany(
        "UPDATE outbox SET attempts = attempts + 1, next_at = ?, updated = ? WHERE id = ?",
        [(now + lease, now, id) for id in ids],
    )
    rows = []
    for id in ids:
        sql = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?"
        rows.append(_row(conn.execute(sql, (id,)).fetchone()))
    return rows


def _take_coupon(conn: sqlite3.Connection, pool: str, message: str, now: int) -> str | None:
    """Inside ``BEGIN IMMEDIATE``: the message's code if it has one, else a free one."""
    row = conn.execute(
        "SELECT code FROM coupons WHERE pool = ? AND message = ?", (pool, message)
    ).fetchone()
    if row is not None:
        return str(row[0])
    row = conn.execute(
        "SELECT code FROM coupons WHERE pool = ? AND message IS NULL LIMIT 1", (pool,)
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE coupons SET message = ?, taken = ? WHERE pool = ? AND code = ?",
        (message, now, pool, row[0]),
    )
    return str(row[0])


_JSON: Final = sqlite3.sqlite_version_info >= (3, 38)
"""SQLite has JSON functions built in (``json_each``)."""
PRUNE_EVERY: Final = 86_400.0
"""Seconds between two sweeps of expired claims by the writer thread."""


def _settle(settled: _Settled) -> None:
    for future, outcome in settled:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

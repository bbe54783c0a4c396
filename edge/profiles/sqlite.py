"""The embedded store: one SQLite file in WAL mode, created on first use.

Reads run on the caller's thread through their own connection (a primary-key read in
WAL mode takes microseconds and never waits for the writer). Writes go to a single
writer thread that commits them in groups: every transaction waiting when the
previous commit finished goes into the next one, so a burst of event batches costs
one commit, not one each. A write's future resolves only after its commit, which is
what lets ``/_edge/events`` acknowledge durably: WAL with ``synchronous=NORMAL``
survives a killed process (``kill -9``); set ``sync_full`` to also survive power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

from edge.profiles.model import Profile, decode, encode
from edge.profiles.store import Mutation, Profiles, Store

log = logging.getLogger("edge.profiles")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (key TEXT PRIMARY KEY, data BLOB NOT NULL, updated INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, key TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_by_key ON aliases(key);
CREATE TABLE IF NOT EXISTS claims (claim TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID;
"""
_MAX_GROUP = 512

_Job = tuple[
    Sequence[str],
    list[str],
    Mutation,
    asyncio.Future[Profiles] | None,
    asyncio.AbstractEventLoop | None,
]


def _connect(path: str, *, sync_full: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if sync_full else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SQLiteStore(Store):
    def __init__(self, path: str | Path, *, sync_full: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(self.path, sync_full=sync_full)
        self._writer.executescript(_SCHEMA)
        self._reader = _connect(self.path, sync_full=sync_full)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._write_loop, name="edge-sqlite-writer", daemon=True
        )
        self._thread.start()

    # reads

    async def get(self, key: str) -> Profile | None:
        return self.get_sync(key)

    def get_sync(self, key: str) -> Profile | None:
        row = self._reader.execute("SELECT data FROM profiles WHERE key = ?", (key,)).fetchone()
        return decode(row[0]) if row else None

    async def resolve(self, alias: str) -> str | None:
        row = self._reader.execute("SELECT key FROM aliases WHERE alias = ?", (alias,)).fetchone()
        return row[0] if row else None

    async def keys(self) -> list[str]:
        return [row[0] for row in self._reader.execute("SELECT key FROM profiles")]

    def iter_profiles(self) -> Iterable[Profile]:
        for (data,) in self._reader.execute("SELECT data FROM profiles"):
            yield decode(data)

    # writes

    async def transact(
        self, keys: Sequence[str], claims: Iterable[str], mutation: Mutation
    ) -> Profiles:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Profiles] = loop.create_future()
        self._jobs.put((keys, list(claims), mutation, future, loop))
        return await future

    def transact_many(self, jobs: Iterable[tuple[Sequence[str], Iterable[str], Mutation]]) -> None:
        """Apply many mutations in one transaction on the caller's thread (bulk import):
        all of them or, if one raises, none."""
        conn = _connect(self.path, sync_full=False)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for keys, claims, mutation in jobs:
                    self._apply(conn, keys, list(claims), mutation)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _write_loop(self) -> None:
        conn = self._writer
        while True:
            job = self._jobs.get()
            if job is None:
                return
            group = [job]
            while len(group) < _MAX_GROUP:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                group.append(more)
            results: list[tuple[_Job, Profiles | BaseException]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for item in group:
                    conn.execute("SAVEPOINT job")
                    try:
                        results.append((item, self._apply(conn, item[0], item[1], item[2])))
                        conn.execute("RELEASE job")
                    except Exception as exc:  # one bad job must not sink the group
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        results.append((item, exc))
                conn.execute("COMMIT")
            except Exception as exc:
                log.error("profile store write failed: %s", exc)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                results = [(item, exc) for item in group]
            for (_, _, _, future, loop), outcome in results:
                if future is not None and loop is not None:
                    loop.call_soon_threadsafe(_settle, future, outcome)

    @staticmethod
    def _apply(
        conn: sqlite3.Connection, keys: Sequence[str], claims: list[str], mutation: Mutation
    ) -> Profiles:
        current: Profiles = {}
        seen: set[str] = set()
        if len(keys) + len(claims) <= _BULK:
            for key in keys:
                row = conn.execute("SELECT data FROM profiles WHERE key = ?", (key,)).fetchone()
                current[key] = decode(row[0]) if row else None
            for claim in claims:
                if conn.execute("SELECT 1 FROM claims WHERE claim = ?", (claim,)).fetchone():
                    seen.add(claim)
        else:  # a bulk job (import): a few hundred keys per statement
            current = dict.fromkeys(keys)
            for part in _parts(keys):
                marks = ",".join("?" * len(part))
                sql = f"SELECT key, data FROM profiles WHERE key IN ({marks})"
                for key, data in conn.execute(sql, part):
                    current[key] = decode(data)
            for part in _parts(claims):
                marks = ",".join("?" * len(part))
                sql = f"SELECT claim FROM claims WHERE claim IN ({marks})"
                seen.update(claim for (claim,) in conn.execute(sql, part))
        result = mutation(current, seen)
        now = int(time.time())
        gone = [(key,) for key, profile in result.items() if profile is None]
        if gone:
            conn.executemany("DELETE FROM profiles WHERE key = ?", gone)
            conn.executemany("DELETE FROM aliases WHERE key = ?", gone)
        kept = [(key, encode(p), now) for key, p in result.items() if p is not None]
        if kept:
            conn.executemany(
                "INSERT OR REPLACE INTO profiles (key, data, updated) VALUES (?, ?, ?)", kept
            )
            links = [
                (alias, key) for key, p in result.items() if p is not None for alias in p.aliases
            ]
            if links:
                conn.executemany("INSERT OR REPLACE INTO aliases (alias, key) VALUES (?, ?)", links)
        new_claims = [(c, now) for c in claims if c not in seen]
        if new_claims:
            conn.executemany("INSERT OR IGNORE INTO claims (claim, ts) VALUES (?, ?)", new_claims)
        return result

    async def close(self) -> None:
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        self._reader.close()
        self._writer.close()


_BULK: Final = 16
"""Above this many keys and claims, a job reads them with ``IN (...)`` statements."""


def _parts(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _settle(future: asyncio.Future[Profiles], outcome: Profiles | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

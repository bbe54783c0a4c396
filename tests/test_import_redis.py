"""``edge import`` into Redis (the store the replicas share), on a real redis-server:
the same profiles, aliases and claims as the SQLite import of the same file, with
the same report; a second import changes nothing; profiles a sidecar writes while the
import reads are computed again (as SQLite's bulk path does)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from edge.importer import ImportReport, import_file
from edge.importer.bulk import Bulk
from edge.profiles import events as ev
from edge.profiles.redis import RedisStore
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore
from tests.test_import_pipeline import (
    DAY1,
    IDENTITY,
    NOW,
    customers_csv,
    dump,
    events_jsonl,
    orders_csv,
    orders_json,
)

pytestmark = pytest.mark.slow  # a real redis-server

_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    """Each test its own keys on the session's redis-server."""
    return f"imp{next(_prefixes)}:"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def redis_dump(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """What the Redis store holds, in the shape of test_import_pipeline.dump."""

    def scan(kind: str) -> dict[str, bytes]:
        start = len(prefix) + len(kind)
        names = list(client.scan_iter(match=f"{prefix}{kind}*", count=1000))
        values = client.mget(names) if names else []
        return {n[start:].decode(): v for n, v in zip(names, values, strict=True)}

    return {
        "profiles": scan("p:"),
        "aliases": {alias: key.decode() for alias, key in scan("a:").items()},
        "claims": set(scan("c:")),
    }


def same(report: ImportReport) -> ImportReport:
    return dataclasses.replace(report, seconds=0.0, path="")


def run(path: Path, store: Any, **kw: Any) -> ImportReport:
    return import_file(path, store=store, identity=IDENTITY, progress=False, now=NOW, **kw)


def both(
    tmp_path: Path, redis_url: str, prefix: str, steps: Callable[[Any], list[ImportReport]]
) -> tuple[list[ImportReport], list[ImportReport]]:
    """*steps* on a fresh SQLite store and on a fresh Redis store: their reports."""
    sqlite = SQLiteStore(tmp_path / "p.db")
    shared = RedisStore(redis_url, prefix=prefix)
    try:
        return steps(sqlite), steps(shared)
    finally:
        asyncio.run(sqlite.close())
        asyncio.run(shared.close())


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("make", "name"),
    [
        (orders_csv, "orders.csv"),
        (events_jsonl, "events.jsonl"),
        (orders_json, "orders.json"),
    ],
)
def test_redis_import_equals_sqlite_import(
    tmp_path: Path,
    redis_url: str,
    raw: redis.Redis,
    prefix: str,
    make: Any,
    name: str,
    strict: bool,
) -> None:
    """Known customers first (their emails and visitor ids linked), then a file of many
    shapes (merges, duplicates, bad lines), then the same file again: the same reports
    and the very same stored bytes in both stores."""
    known = customers_csv(tmp_path / "customers.csv")
    path = make(tmp_path / name)

    def steps(store: Any) -> list[ImportReport]:
        return [
            run(known, store),
            run(path, store, strict=strict, chunk=97),
            run(path, store, chunk=97),
            run(path, store, chunk=97),  # again: nothing new
        ]

    in_sqlite, in_redis = both(tmp_path, redis_url, prefix, steps)
    assert [same(r) for r in in_redis] == [same(r) for r in in_sqlite]
    if not strict:
        assert in_redis[1].applied_events > 0 and in_redis[1].errors
    assert in_redis[3].applied_events == 0 and in_redis[3].skipped_duplicates > 0
    stored = redis_dump(raw, prefix)
    assert stored == dump(tmp_path / "p.db")
    assert len(stored["profiles"]) > 30 and stored["aliases"] and stored["claims"]
    for claim in list(stored["claims"])[:20]:  # claims expire as the sidecar's do
        assert raw.ttl(f"{prefix}c:{claim}") > 399 * 86_400


def test_redis_import_in_one_chunk_and_in_many_alike(
    tmp_path: Path, redis_url: str, raw: redis.Redis
) -> None:
    """The default chunk (a few thousand events per EXEC) and tiny chunks store the same."""
    path = orders_csv(tmp_path / "orders.csv", orders=3_000)
    stored = []
    for prefix, chunk in (("chunkA:", None), ("chunkB:", 13)):
        store = RedisStore(redis_url, prefix=prefix)
        try:
            report = run(path, store, chunk=chunk)
        finally:
            asyncio.run(store.close())
        assert report.orders > 2_500
        stored.append(redis_dump(raw, prefix))
    assert stored[0] == stored[1]


def test_a_sidecar_writing_meanwhile_is_as_if_it_wrote_before(
    tmp_path: Path, redis_url: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica records a visit and ingests an order (also in the file) for customers
    of the file while the import reads: the same profiles as when those came first;
    only the groups the sidecar touched are computed again."""
    path = events_jsonl(tmp_path / "events.jsonl")
    known = customers_csv(tmp_path / "customers.csv")

    def sidecar(prefix: str) -> None:
        async def record() -> None:
            store = RedisStore(redis_url, prefix=prefix)
            service = ProfileService(store, IDENTITY.email_hash)
            visit = [ev.PageViewed(path="/p/1"), ev.ProductViewed(product_id="p1", category="c1")]
            await service.record("v3", visit, ev.Source.BROWSER, now=NOW)
            order = ev.OrderCompleted(order_id="j7", total=9, user_id="u5", ts=DAY1)
            await service.record(None, [order], ev.Source.SHOP, now=NOW)
            await store.close()

        asyncio.run(record())

    before = RedisStore(redis_url, prefix="before:")
    run(known, before)
    sidecar("before:")
    expected = run(path, before)
    asyncio.run(before.close())

    meanwhile = RedisStore(redis_url, prefix="meanwhile:")
    run(known, meanwhile)
    write = Bulk.write

    def write_after_the_sidecar(self: Bulk, **kw: Any) -> None:
        sidecar("meanwhile:")
        write(self, **kw)

    monkeypatch.setattr(Bulk, "write", write_after_the_sidecar)
    computed_again = []
    write_around = Bulk._write_around

    def counted(self: Bulk, result: Any, claims: Any, stale: set[str]) -> None:
        computed_again.append(len(stale))
        write_around(self, result, claims, stale)

    monkeypatch.setattr(Bulk, "_write_around", counted)
    report = run(path, meanwhile, chunk=300)
    asyncio.run(meanwhile.close())
    assert same(report) == same(expected)
    assert redis_dump(raw, "meanwhile:") == redis_dump(raw, "before:")
    assert 0 < sum(computed_again) < 10

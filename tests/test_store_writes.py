"""The store's cheaper write path (issue 19, G1) against what it replaced: the daily
aggregates updated a statement per kind of change, profiles updated in place, and the
alias a direct load makes known. Each is checked against the plain way of doing it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.identity import Identity
from edge.profiles import events as ev
from edge.profiles.model import Profile, decode, encode
from edge.profiles.service import ProfileService, customer_key
from edge.profiles.sqlite import (
    _INSERT_TALLIES,
    _SCHEMA,
    _UPDATE_TALLIES,
    SQLiteStore,
    _add_tallies,
)
from edge.profiles.store import Profiles

NOW = 1_790_000_000
IDENTITY = Identity(["test-secret"])
Batch = msgspec.json.Decoder(list[ev.Event])


def events(*items: dict[str, object]) -> list[ev.BaseEvent]:
    return Batch.decode(msgspec.json.encode(list(items)))


def _reference_add(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """The aggregates' update as it was: a statement a row, an insert where it missed."""
    for row in rows:
        if conn.execute(_UPDATE_TALLIES, (*row[4:], *row[:4])).rowcount == 0:
            conn.execute(_INSERT_TALLIES, row)


def _fresh() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(_SCHEMA)
    return conn


def _all(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM arm_days ORDER BY day, placement, arm, segments").fetchall()


_keys = st.tuples(
    st.integers(20_000, 20_002),
    st.sampled_from(["hero", "offer", "shelf"]),
    st.sampled_from(["holdout", "a"]),
    st.sampled_from(["", "vip", "vip,new"]),
)
_values = st.one_of(
    # a repeat exposure (the common change: one column), or anything
    st.tuples(st.just(0), st.integers(1, 3), *[st.just(0)] * 5),
    st.tuples(
        st.integers(-1, 1),
        st.integers(-2, 3),
        st.integers(-1, 1),
        st.sampled_from([0.0, 12.5, -3.0]),
        st.sampled_from([0.0, 156.25]),
        st.integers(0, 2),
        st.integers(0, 2),
    ),
)
_batch = st.dictionaries(_keys, _values, max_size=6).map(
    lambda d: [(*key, *values) for key, values in d.items()]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_batch, max_size=5))
def test_aggregates_add_up_as_a_statement_a_row_did(batches: list[list[tuple[Any, ...]]]) -> None:
    mine, reference = _fresh(), _fresh()
    for rows in batches:
        _add_tallies(mine, rows)
        _reference_add(reference, rows)
        assert _all(mine) == _all(reference)


async def _record(service: ProfileService, visitor: str, now: int) -> None:
    page = events({"event": "Page Viewed", "path": "/"})
    await service.record(visitor, page, ev.Source.BROWSER, now=now)


async def test_profiles_updated_in_place_read_back_as_written(tmp_path: Path) -> None:
    """Existing and new profiles in one group commit: each row holds the encoding of
    the profile the write returned, as an insert-or-replace wrote it."""
    import asyncio

    store = SQLiteStore(tmp_path / "p.db")
    service = ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)
    try:
        await _record(service, "old1", NOW)
        await _record(service, "old2", NOW)

        def touched(key: str) -> Any:
            def mutation(current: Profiles, seen: set[str]) -> Profiles:
                profile = current[key] or Profile(visitor_id=key, first_seen=NOW)
                ev.touch(profile, NOW + 60)
                return {key: profile}

            return mutation

        # one loop iteration: one group, with updates and inserts mixed
        results = await asyncio.gather(
            *(store.transact([k], [], touched(k)) for k in ("old1", "new1", "old2", "new2"))
        )
        conn = sqlite3.connect(tmp_path / "p.db")
        rows = dict(conn.execute("SELECT key, data FROM profiles"))
        counts = conn.execute("SELECT count(*), count(DISTINCT key) FROM profiles").fetchone()
        conn.close()
        assert counts == (4, 4)
        for result in results:
            ((key, profile),) = result.items()
            assert profile is not None
            assert rows[key] == encode(profile)
            assert decode(rows[key]).last_seen == NOW + 60
    finally:
        await store.close()


async def test_a_direct_load_knows_the_alias_the_store_would_give(tmp_path: Path) -> None:
    """What the cache answers for a visitor after loading their profile equals what
    the store answers, before and after a merge moved the visitor to a customer."""
    store = SQLiteStore(tmp_path / "p.db")
    service = ProfileService(store, IDENTITY.email_hash)
    try:
        await _record(service, "v1", NOW)
        await _record(service, "v2", NOW)
        service.cache.forget_cached("v1")
        assert await service.load("v1") is not None
        assert await service.cache.resolve("v1") == await store.resolve("v1") is None
        await service.record(
            None,
            events({"event": "Identify", "anonymous_id": "v1", "user_id": "c1"}),
            ev.Source.SHOP,
            now=NOW,
        )
        service.cache.forget_cached("v1")
        merged = await service.load("v1")  # through the alias: nothing assumed
        assert merged is not None and merged.visitor_id == customer_key("c1")
        assert await service.cache.resolve("v1") == await store.resolve("v1") == "cust:c1"
        # and the next page view lands on the customer, as an uncached resolve sends it
        await _record(service, "v1", NOW + 5)
        assert await store.get("v1") is None
        customer = await store.get(customer_key("c1"))
        assert customer is not None and customer.visits == 1 and customer.session_pageviews == 2
    finally:
        await store.close()

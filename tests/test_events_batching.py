"""The /_edge/events path's shared machinery: jobs committed together, the expiring
maps, and cookie verification with its cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge.identity import Identity
from edge.profiles import events as ev
from edge.profiles.model import Profile, new_profile
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import Profiles

NOW = 1_790_000_000


def _bump(key: str, claim: str = "") -> tuple[list[str], list[str], object]:
    def mutation(current: Profiles, seen: set[str]) -> Profiles:
        profile = current[key] or new_profile(key, NOW)
        if not (claim and claim in seen):
            profile.dwell_count += 1
        return {key: profile}

    return [key], [claim] if claim else [], mutation


async def test_jobs_of_one_loop_iteration_share_a_commit_and_see_each_other(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    try:
        jobs = [_bump("v1") for _ in range(5)] + [_bump("v2", "event:e1") for _ in range(3)]
        results = await asyncio.gather(*(store.transact(*job) for job in jobs))  # type: ignore[arg-type]
        assert [r["v1"].dwell_count for r in results[:5]] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
        # The same event id three times in one group counts once.
        assert [r["v2"].dwell_count for r in results[5:]] == [1, 1, 1]  # type: ignore[union-attr]
        assert store.get_sync("v1").dwell_count == 5  # type: ignore[union-attr]
        assert store.get_sync("v2").dwell_count == 1  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_failing_job_sinks_only_itself(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")

    def broken(current: Profiles, seen: set[str]) -> Profiles:
        profile = current["v1"] or new_profile("v1", NOW)
        profile.dwell_count += 100
        raise RuntimeError("failed midway")

    try:
        outcomes = await asyncio.gather(
            store.transact(*_bump("v1")),  # type: ignore[arg-type]
            store.transact(["v1"], [], broken),
            store.transact(*_bump("v1")),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], RuntimeError)
        assert store.get_sync("v1").dwell_count == 2  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_write_that_fails_is_retried_job_by_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A profile the database refuses (here: a key that is not text) fails its own job;
    the others in its group are written."""
    store = SQLiteStore(tmp_path / "p.db")

    def unstorable(current: Profiles, seen: set[str]) -> Profiles:
        return {("not", "text"): Profile(visitor_id="x")}  # type: ignore[dict-item]

    try:
        outcomes = await asyncio.gather(
            store.transact(*_bump("v1")),  # type: ignore[arg-type]
            store.transact(["v9"], [], unstorable),
            store.transact(*_bump("v2")),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], Exception)
        assert "retrying job by job" in caplog.text
        assert store.get_sync("v1").dwell_count == 1  # type: ignore[union-attr]
        assert store.get_sync("v2").dwell_count == 1  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_deletions_in_a_group_land_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")

    def merged(current: Profiles, seen: set[str]) -> Profiles:
        survivor = current["cust:1"] or new_profile("cust:1", NOW)
        survivor.aliases = ["v1"]
        return {"cust:1": survivor, "v1": None}

    try:
        await store.transact(*_bump("v1"))  # type: ignore[arg-type]
        await asyncio.gather(
            store.transact(*_bump("v1")),  # type: ignore[arg-type]
            store.transact(["cust:1", "v1"], [], merged),
        )
        assert store.get_sync("v1") is None
        assert await store.resolve("v1") == "cust:1"
    finally:
        await store.close()


def test_rate_limit_buckets_refill_exactly_as_they_expire() -> None:
    from edge.ingest import _BURST, _REFILL_PER_SECOND

    assert _BURST / _REFILL_PER_SECOND <= 60  # an idle bucket is full before it expires


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),
        lambda c: c[:-2] + "é" + c[-1],
        lambda c: ("x" if c[0] != "x" else "y") + c[1:],  # the id itself changed
        lambda c: c.split(".")[0],
    ],
)
def test_a_verified_cookie_does_not_vouch_for_a_tampered_one(tamper: object) -> None:
    identity = Identity(["s1", "s0"])
    visitor = identity.new_visitor_id()
    cookie = identity.sign(visitor)
    assert identity.verify(cookie) == visitor
    assert identity.verify(cookie) == visitor  # from the cache
    assert identity.verify(tamper(cookie)) is None  # type: ignore[operator]
    assert Identity(["other"]).verify(cookie) is None
    assert Identity(["new", "s1"]).verify(cookie) == visitor  # rotated secret still valid


def test_browser_batches_still_refuse_what_a_browser_may_not_send() -> None:
    order = ev.OrderCompleted(order_id="o1", total=10.0)
    with pytest.raises(ev.NotAllowed):
        ev.check_allowed(order, ev.Source.BROWSER)


async def test_the_writer_outlives_an_event_loop_closed_while_it_wrote(tmp_path: Path) -> None:
    """A write finishing after its loop closed (a worker shut down mid-request) must not
    take the store's writer thread with it."""
    store = SQLiteStore(tmp_path / "p.db")
    try:
        gone = asyncio.new_event_loop()
        orphan = gone.create_future()
        gone.close()

        def put(current: Profiles, seen: set[str]) -> Profiles:
            return {"a": new_profile("a", 1)}

        store._jobs.put([(["a"], [], put, orphan, gone)])
        result = await asyncio.wait_for(store.transact(["b"], [], lambda c, s: {}), 5)
        assert result == {} and store._thread.is_alive()
        assert store.get_sync("a") is not None  # the orphan's write still landed
    finally:
        await store.close()

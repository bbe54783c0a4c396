"""The Redis store: the profile behaviours of every store, plus what sharing one Redis
between sidecar replicas must guarantee (no lost update, an order counted once,
aliases removed with their profile, acknowledged writes surviving ``kill -9``)."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from edge.profiles import events as ev
from edge.profiles.model import DAY, Profile, encode, new_profile, within
from edge.profiles.redis import MAX_ATTEMPTS, RedisStore, TransactionConflict
from edge.profiles.service import ProfileService, customer_key
from edge.profiles.store import Profiles
from tests.redis_server import RedisServer, require_redis_server
from tests.test_profiles import IDENTITY, NOW, events

# The store-independent behaviours run on Redis too, from tests/test_profiles.py's
# `service` fixture; this module holds what is particular to a shared store.

pytestmark = pytest.mark.slow

_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    """Each test its own namespace on the shared server."""
    return f"t{next(_prefixes)}:"


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url, prefix=prefix)
    yield store
    await store.close()


@pytest.fixture
async def service(store: RedisStore) -> AsyncIterator[ProfileService]:
    yield ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)


@pytest.fixture
async def replicas(redis_url: str, prefix: str) -> AsyncIterator[list[ProfileService]]:
    """Two sidecars sharing one Redis, each with its own store and cache."""
    stores = [RedisStore(redis_url, prefix=prefix) for _ in range(2)]
    yield [ProfileService(s, IDENTITY.email_hash, cache_ttl=0.001) for s in stores]
    for s in stores:
        await s.close()


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    """A plain synchronous client: another writer, and a look at the stored keys."""
    return redis.Redis.from_url(redis_url)


async def test_concurrent_writes_on_two_replicas_lose_nothing(
    replicas: list[ProfileService],
) -> None:
    async def page_view(service: ProfileService) -> None:
        await service.record("v1", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW)

    await asyncio.gather(*(page_view(replicas[i % 2]) for i in range(200)))
    p = await replicas[0].store.get("v1")
    assert p is not None and within(p.pageview_days, NOW, DAY) == 200


async def test_an_order_sent_through_both_replicas_counts_once(
    replicas: list[ProfileService],
) -> None:
    order = events({"event": "Order Completed", "user_id": "c1", "order_id": "A-9", "total": 30.0})
    await asyncio.gather(
        *(replicas[i % 2].record(None, order, ev.Source.SHOP, now=NOW) for i in range(20))
    )
    p = await replicas[1].store.get(customer_key("c1"))
    assert p is not None and p.order_count == 1 and p.lifetime_spent == 30.0


async def test_a_visitor_merged_once_still_resolves(service: ProfileService) -> None:
    await service.record("phone", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW)
    await service.record(
        None,
        events({"event": "Identify", "anonymous_id": "phone", "user_id": "c3"}),
        ev.Source.SHOP,
        now=NOW,
    )
    assert await service.store.get("phone") is None
    assert await service.store.resolve("phone") == customer_key("c3")
    await service.record("phone", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW)
    p = await service.store.get(customer_key("c3"))
    assert p is not None and within(p.pageview_days, NOW, DAY) == 2


async def test_delete_removes_aliases(
    service: ProfileService, raw: redis.Redis, prefix: str
) -> None:
    await service.record(
        None,
        events({"event": "Identify", "anonymous_id": "v9", "user_id": "c9", "email": "x@y.it"}),
        ev.Source.SHOP,
        now=NOW,
    )
    assert await service.store.resolve("v9") == customer_key("c9")
    assert await service.erase("v9")
    assert await service.store.resolve("v9") is None
    assert raw.keys(f"{prefix}*") == []


async def test_delete_keeps_aliases_that_moved_elsewhere(store: RedisStore) -> None:
    def put(key: str, aliases: list[str]) -> Callable[[Profiles, set[str]], Profiles]:
        return lambda current, seen: {key: Profile(visitor_id=key, aliases=aliases)}

    await store.transact(["old"], [], put("old", ["shared", "only-old"]))
    await store.transact(["new"], [], put("new", ["shared"]))
    await store.transact(["old"], [], lambda current, seen: {"old": None})
    assert await store.resolve("shared") == "new"
    assert await store.resolve("only-old") is None
    assert await store.keys() == ["new"]


async def test_a_conflicting_write_reruns_the_mutation_on_fresh_profiles(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    await store.transact(["v"], [], lambda current, seen: {"v": new_profile("v", NOW)})
    calls: list[int] = []

    def count_visit(current: Profiles, seen: set[str]) -> Profiles:
        profile = current["v"]
        assert profile is not None
        calls.append(profile.visits)
        profile.visits += 1
        if len(calls) == 1:  # another replica writes between our read and our EXEC
            raw.set(f"{prefix}p:v", encode(Profile(visitor_id="v", visits=10)))
        return {"v": profile}

    result = await store.transact(["v"], [], count_visit)
    assert calls == [0, 10]  # the retry saw the other write, not our first attempt's
    assert result["v"] is not None and result["v"].visits == 11
    assert (await store.get("v")).visits == 11  # type: ignore[union-attr]


async def test_endless_conflicts_raise_and_write_nothing(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    calls = 0

    def always_overtaken(current: Profiles, seen: set[str]) -> Profiles:
        nonlocal calls
        calls += 1
        raw.set(f"{prefix}p:v", encode(Profile(visitor_id="v", visits=calls)))
        return {"v": Profile(visitor_id="v", visits=-1)}

    with pytest.raises(TransactionConflict, match="attempts"):
        await store.transact(["v"], ["order:X"], always_overtaken)
    assert calls == MAX_ATTEMPTS
    assert (await store.get("v")).visits == MAX_ATTEMPTS  # type: ignore[union-attr]
    assert raw.exists(f"{prefix}c:order:X") == 0


async def test_claims_are_kept_with_a_long_ttl(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    seen_by_call: list[set[str]] = []

    def note(current: Profiles, seen: set[str]) -> Profiles:
        seen_by_call.append(seen)
        return {}

    await store.transact([], ["order:1"], note)
    await store.transact(["v"], ["order:1", "event:2"], note)
    assert seen_by_call == [set(), {"order:1"}]
    assert raw.ttl(f"{prefix}c:order:1") > 399 * DAY


async def test_loads_survive_the_server_dropping_idle_connections(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    """The load path keeps its own idle connections; the server closing them (a
    restart, a ``timeout`` setting, a failover) costs a reconnect, not an error."""
    raw.set(f"{prefix}p:k", encode(new_profile("k", NOW)))
    assert (await store.get("k")) is not None
    assert raw.client_kill_filter(_type="normal", skipme=True) >= 1
    for _ in range(3):
        profile = await store.get("k")
        assert profile is not None and profile.visitor_id == "k"
    assert await store.get("missing") is None


async def test_a_load_cancelled_in_flight_never_answers_a_later_one(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    """A ``GET`` cancelled while the server holds it (``CLIENT PAUSE``) must not leave
    its reply on a connection another load would read as its own."""
    raw.set(f"{prefix}p:a", encode(new_profile("a", NOW)))
    raw.set(f"{prefix}p:b", encode(new_profile("b", NOW)))
    assert (await store.get("a")) is not None  # a warm idle connection to cancel on
    raw.client_pause(300)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(store.get("a"), timeout=0.05)
    await asyncio.sleep(0.35)
    for key in ("b", "a", "b"):
        profile = await store.get(key)
        assert profile is not None and profile.visitor_id == key


async def test_a_load_in_flight_at_close_does_not_keep_its_connection(
    redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    """close() disconnects the idle load connections; one busy with a load then is
    disconnected when the load ends, not kept open in a list nobody closes."""
    store = RedisStore(redis_url, prefix=prefix)
    raw.set(f"{prefix}p:a", encode(new_profile("a", NOW)))
    made: list[Any] = []
    make = store._pool.make_connection

    def tracked() -> Any:
        made.append(make())
        return made[-1]

    store._pool.make_connection = tracked  # type: ignore[method-assign]
    raw.client_pause(200)
    load = asyncio.ensure_future(store.get("a"))
    await asyncio.sleep(0.05)  # the GET is sent, the server holds its reply
    await store.close()
    profile = await load
    assert profile is not None and profile.visitor_id == "a"
    assert made and not any(conn.is_connected for conn in made)


async def test_keys_lists_only_this_prefix(redis_url: str, prefix: str) -> None:
    mine = RedisStore(redis_url, prefix=prefix + "[x]*")  # glob characters match literally
    other = RedisStore(redis_url, prefix=prefix + "[x]*other:")
    try:
        for s, key in ((mine, "a"), (mine, "b"), (other, "c")):
            await s.transact([key], [], lambda c, s, k=key: {k: Profile(visitor_id=k)})
        assert sorted(await mine.keys()) == ["a", "b"]
        assert await other.keys() == ["c"]
    finally:
        await mine.close()
        await other.close()


async def test_acknowledged_writes_survive_kill_9() -> None:
    executable = require_redis_server()
    with tempfile.TemporaryDirectory(prefix="edge-redis-") as data_dir:
        server = RedisServer(executable, Path(data_dir)).start()
        try:
            service = ProfileService(RedisStore(server.url), IDENTITY.email_hash)
            for i in range(20):
                await service.record(
                    None,
                    events(
                        {
                            "event": "Order Completed",
                            "user_id": "c1",
                            "order_id": f"o{i}",
                            "total": 1.0,
                        }
                    ),
                    ev.Source.SHOP,
                    now=NOW,
                )
            await service.store.close()
            server.kill()
            server.start()
            store = RedisStore(server.url)
            p = await store.get(customer_key("c1"))
            await store.close()
            assert p is not None and p.order_count == 20
        finally:
            server.stop()

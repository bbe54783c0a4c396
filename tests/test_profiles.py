"""Profiles change by events exactly as the design says, on every store."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from edge.identity import Identity
from edge.profiles import events as ev
from edge.profiles.model import (
    DAY,
    MAX_ENCODED_BYTES,
    MAX_ORDERS,
    Profile,
    encode,
    within,
)
from edge.profiles.service import ProfileService, customer_key
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import MemoryStore, Profiles, Store

NOW = 1_790_000_000
IDENTITY = Identity(["test-secret"])
Batch = msgspec.json.Decoder(list[ev.Event])


def events(*items: dict[str, object]) -> list[ev.BaseEvent]:
    return Batch.decode(msgspec.json.encode(list(items)))


_prefixes = itertools.count()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ProfileService]:
    store: Store
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "p.db")
    else:
        from edge.profiles.redis import RedisStore

        store = RedisStore(request.getfixturevalue("redis_url"), prefix=f"tp{next(_prefixes)}:")
    yield ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)
    await store.close()


async def test_browser_behaviour_changes_own_profile(service: ProfileService) -> None:
    await service.record(
        "v1",
        events(
            {"event": "Page Viewed", "path": "/"},
            {
                "event": "Product Viewed",
                "product_id": "p1",
                "category": "scarpe-donna",
                "brand": "Ferri",
            },
            {"event": "Products Searched", "query": "Donna "},
            {"event": "Product Added", "product_id": "p1", "price": 89.9, "quantity": 2},
            {"event": "Product Clicked", "product_id": "p2", "list_id": "recommendations"},
            {"event": "Product Engaged", "product_id": "p1", "dwell_ms": 42_000},
            {"event": "Profile Form Answered", "question": "shopping_for", "answer": "lei"},
        ),
        ev.Source.BROWSER,
        now=NOW,
    )
    p = await service.load("v1")
    assert p is not None
    assert p.visits == 1 and within(p.pageview_days, NOW, DAY) == 1
    assert within(p.product_view_days, NOW, 30 * DAY) == 1
    assert p.categories.viewed == {"scarpe-donna": 1} and p.brands.viewed == {"Ferri": 1}
    assert [s.query for s in p.searches] == ["donna"]
    assert p.cart.count == 2 and p.cart.value == 179.8
    assert p.recommendation_clicks == 1
    assert (p.dwell_ms, p.dwell_count) == (42_000, 1)
    assert p.answers == {"shopping_for": "lei"}


@pytest.mark.parametrize(
    "forbidden",
    [
        {"event": "Order Completed", "order_id": "A1", "total": 5000},
        {"event": "Coupon Applied", "coupon": "VIP50", "order_id": "A1"},
        {"event": "Email Opened", "campaign": "x"},
        {"event": "Identify", "traits": {"city": "Milano"}},
        {"event": "Page Viewed", "path": "/", "user_id": "someone-else"},
    ],
)
async def test_browser_cannot_claim_orders_traits_or_others(
    service: ProfileService, forbidden: dict[str, object]
) -> None:
    await service.record("v1", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW)
    before = encode(await service.load("v1"))  # type: ignore[arg-type]
    with pytest.raises(ev.NotAllowed):
        await service.record(
            "v1", events({"event": "Page Viewed"}, forbidden), ev.Source.BROWSER, now=NOW
        )
    assert encode(await service.load("v1")) == before  # type: ignore[arg-type]


async def test_shop_orders_count_once(service: ProfileService) -> None:
    order = {
        "event": "Order Completed",
        "user_id": "c42",
        "order_id": "A-1",
        "total": 120.5,
        "coupon": "WELCOME10",
        "products": [
            {"product_id": "p1", "category": "borse", "brand": "Valdarno", "price": 120.5}
        ],
        "ts": NOW - 10 * DAY,
    }
    await service.record(None, events(order), ev.Source.SHOP, now=NOW)
    await service.record(None, events(order), ev.Source.SHOP, now=NOW)
    p = await service.load(customer_key("c42"))
    assert p is not None
    assert p.order_count == 1 and len(p.orders) == 1
    assert p.lifetime_spent == 120.5 and p.coupon_orders == 1
    assert p.categories.bought == {"borse": 1} and p.brands.bought == {"Valdarno": 1}
    assert p.orders[0].ts == NOW - 10 * DAY


async def test_stitching_merges_counts_exactly(service: ProfileService) -> None:
    # an anonymous visitor browses on two devices, then logs in on both
    await service.record(
        "phone",
        events({"event": "Page Viewed"}, {"event": "Page Viewed"}),
        ev.Source.BROWSER,
        now=NOW,
    )
    await service.record("laptop", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW + 5)
    await service.record(
        None,
        events(
            {
                "event": "Order Completed",
                "user_id": "c7",
                "order_id": "B-1",
                "total": 50,
                "ts": NOW - DAY,
            }
        ),
        ev.Source.SHOP,
        now=NOW,
    )
    await service.record(
        None,
        events(
            {
                "event": "Identify",
                "anonymous_id": "phone",
                "user_id": "c7",
                "email": "Anna@Example.it ",
            }
        ),
        ev.Source.SHOP,
        now=NOW,
    )
    await service.record(
        None,
        events({"event": "Identify", "anonymous_id": "laptop", "email": "anna@example.it"}),
        ev.Source.SHOP,
        now=NOW,
    )
    merged = await service.load("phone")
    assert merged is not None and merged.visitor_id == customer_key("c7")
    assert merged is await service.load("phone") or encode(merged) == encode(
        await service.load("laptop")
    )  # type: ignore[arg-type]
    assert within(merged.pageview_days, NOW, DAY) == 3  # 2 + 1: nothing lost, nothing doubled
    assert merged.order_count == 1
    assert merged.email_hash == IDENTITY.email_hash("anna@example.it")
    assert "anna" not in encode(merged).decode("latin-1").lower()  # the email itself is not stored
    assert {"phone", "laptop"} <= set(merged.aliases)
    # events keep arriving on the old cookie and land in the customer's profile
    await service.record("phone", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW + 10)
    assert within((await service.load(customer_key("c7"))).pageview_days, NOW, DAY) == 4  # type: ignore[union-attr]


async def test_erase_by_id_and_email(service: ProfileService) -> None:
    await service.record(
        None,
        events({"event": "Identify", "anonymous_id": "v9", "user_id": "c9", "email": "x@y.it"}),
        ev.Source.SHOP,
        now=NOW,
    )
    assert await service.erase("x@y.it")
    assert await service.load(customer_key("c9")) is None
    assert await service.load("v9") is None
    assert not await service.erase("x@y.it")


def test_encoded_size_is_bounded() -> None:
    p = Profile(visitor_id="v")
    long = "x" * 190  # near the 200-character cap of event fields
    for day in range(600):
        ts = NOW + day * DAY
        for name, payload in (
            ("Page Viewed", {"path": "/" + long * 10}),
            (
                "Product Viewed",
                {"product_id": f"p{day}", "category": f"c{day}" + long, "brand": f"b{day}"},
            ),
            ("Products Searched", {"query": long}),
            ("Product Added", {"product_id": f"p{day}", "price": 1.0}),
            ("Profile Form Answered", {"question": f"q{day % 60}", "answer": long}),
            ("Email Sent", {}),
            ("Email Opened", {}),
            ("Identify", {"traits": {f"custom_{day}": long}}),
            (
                "Placement Shown",
                {
                    "placement_id": f"pl{day}" + "x" * 120,
                    "offer": True,
                    "arm": "a" * 48,
                    "links": list(range(8)),
                    "segments": [f"s{i}" + "x" * 46 for i in range(8)],  # (arm records)
                },
            ),
            (
                "Order Completed",
                {
                    "order_id": f"o{day}",
                    "total": 10.0,
                    "coupon": long,
                    "products": [
                        {"product_id": f"p{i}", "category": f"c{i}", "brand": f"b{i}"}
                        for i in range(50)
                    ],
                },
            ),
        ):
            ev.apply(p, events({"event": name, **payload})[0], ts, ev.Source.SHOP)
    assert len(p.orders) == MAX_ORDERS
    assert len(p.pageview_days) <= 401
    assert len(p.arms) == 50 and all(len(r.segments) == 8 for r in p.arms.values())
    size = len(encode(p))
    assert size <= MAX_ENCODED_BYTES, size


def test_unknown_and_wrong_fields_are_named() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `totl`"):
        events({"event": "Order Completed", "order_id": "A", "totl": 5})
    with pytest.raises(
        msgspec.ValidationError, match=r"Expected `float`, got `str`.*\$\[0\]\.total"
    ):
        events({"event": "Order Completed", "order_id": "A", "total": "lots"})
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'Order Deleted'"):
        events({"event": "Order Deleted"})


def test_session_ends_after_thirty_minutes() -> None:
    p = Profile(visitor_id="v")
    for offset in (0, 60, 29 * 60 + 60, 29 * 60 + 60 + 31 * 60):
        ev.apply(p, events({"event": "Page Viewed"})[0], NOW + offset, ev.Source.OBSERVED)
    assert p.visits == 2


async def test_one_identify_links_the_visitor_for_good(service: ProfileService) -> None:
    await service.record("tablet", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW)
    await service.record(
        None,
        events({"event": "Identify", "anonymous_id": "tablet", "user_id": "c3"}),
        ev.Source.SHOP,
        now=NOW,
    )
    await service.record(
        "tablet", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW + 60
    )
    merged = await service.load(customer_key("c3"))
    assert merged is not None and within(merged.pageview_days, NOW, DAY) == 2
    assert await service.store.get("tablet") is None  # no orphan anonymous profile


def test_merge_keeps_identity_and_fills_traits() -> None:
    from edge.profiles.model import Traits

    into = Profile(
        visitor_id="cust:c1",
        customer_id="c1",
        traits=Traits(city="Milano", custom={"tier": "gold"}),
    )
    other = Profile(
        visitor_id="v-anon",
        email_hash="h1",
        traits=Traits(city="Roma", gender="f", birth_year=1990, custom={"tier": "x", "pet": "cat"}),
    )
    ev.merge(into, other)
    assert into.customer_id == "c1" and into.email_hash == "h1"
    assert into.traits.city == "Milano"  # the surviving profile's own value wins
    assert into.traits.gender == "f" and into.traits.birth_year == 1990
    assert into.traits.custom == {"tier": "gold", "pet": "cat"}
    assert into.aliases == ["v-anon"]


async def test_a_profile_created_while_its_id_is_merged_is_folded_in(
    service: ProfileService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await service.record("v1", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW)
    await service.record(
        None,
        events({"event": "Identify", "anonymous_id": "v1", "user_id": "c1"}),
        ev.Source.SHOP,
        now=NOW,
    )

    # another request of the same visitor resolved its cookie just before that merge
    async def stale_resolve(alias: str) -> None:
        return None

    monkeypatch.setattr(service.cache, "resolve", stale_resolve)
    await service.record("v1", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW + 1)
    monkeypatch.undo()

    assert await service.store.get("v1") is None
    assert await service.store.resolve("v1") == customer_key("c1")
    merged = await service.load("v1")
    assert merged is not None and merged.visitor_id == customer_key("c1")
    assert within(merged.pageview_days, 1, NOW + 1) == 2


def test_placement_exposures_only_from_the_sidecar() -> None:
    p = Profile(visitor_id="v")
    shown = events({"event": "Placement Shown", "placement_id": "offer-24h", "offer": True})[0]
    with pytest.raises(ev.NotAllowed):
        ev.apply(p, shown, NOW, ev.Source.BROWSER)
    ev.apply(p, shown, NOW, ev.Source.OBSERVED)
    ev.apply(p, shown, NOW + 60, ev.Source.OBSERVED)  # a reload does not move the deadline
    assert p.offers == {"offer-24h": NOW}
    assert p.exposures == {"offer-24h": [NOW, NOW + 60]}
    held = events({"event": "Placement Shown", "placement_id": "hero", "held_out": True})[0]
    ev.apply(p, held, NOW, ev.Source.OBSERVED)
    assert "hero" not in p.exposures
    for i in range(30):
        ev.apply(p, shown, NOW + 100 + i, ev.Source.OBSERVED)
    assert len(p.exposures["offer-24h"]) == 20 and p.exposures["offer-24h"][-1] == NOW + 129


async def test_a_read_overlapping_a_write_is_not_cached() -> None:
    import asyncio

    from edge.profiles.store import CachedStore

    class SlowReads(MemoryStore):
        async def get(self, key: str) -> Profile | None:
            found = await super().get(key)
            copy = None if found is None else msgspec.msgpack.decode(encode(found), type=Profile)
            await asyncio.sleep(0.05)  # the write below lands meanwhile
            return copy

    store = SlowReads()
    service = ProfileService(store, IDENTITY.email_hash)
    assert isinstance(service.cache, CachedStore)
    await service.record("v1", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW)
    service.cache.forget_cached("v1")
    reading = asyncio.ensure_future(service.load("v1"))
    await asyncio.sleep(0.01)
    await service.record("v1", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW + 1)
    stale = await reading
    assert stale is not None and stale.session_pageviews == 1  # what was read then
    fresh = await service.load("v1")
    assert fresh is not None and fresh.session_pageviews == 2  # not the stale copy


async def test_what_a_store_hands_out_is_a_copy(service: ProfileService) -> None:
    """Every store: changing a profile that was read changes nothing stored, and a
    mutation that fails midway leaves the store as it was."""
    await service.record(
        "v9", events({"event": "Page Viewed", "path": "/"}), ev.Source.BROWSER, now=NOW
    )
    store = service.store
    read = await store.get("v9")
    assert read is not None and read.visits == 1
    read.visits = 99
    assert (await store.get("v9")).visits == 1  # type: ignore[union-attr]

    def half_done(current: Profiles, seen: set[str]) -> Profiles:
        profile = current["v9"]
        assert profile is not None
        profile.visits += 1000
        raise RuntimeError("failed midway")

    with pytest.raises(RuntimeError):
        await store.transact(["v9"], [], half_done)
    assert (await store.get("v9")).visits == 1  # type: ignore[union-attr]


async def test_sqlite_forgets_claims_as_redis_expires_them(tmp_path: Path) -> None:
    from edge.profiles.store import CLAIM_TTL

    store = SQLiteStore(tmp_path / "p.db")
    try:
        now = 1_800_000_000
        rows = [("order:old", now - CLAIM_TTL - 1), ("order:recent", now - CLAIM_TTL + 60)]
        with store._writer:
            store._writer.executemany("INSERT INTO claims (claim, ts) VALUES (?, ?)", rows)
        assert store._prune(now) == 1
        left = {c for (c,) in store._reader.execute("SELECT claim FROM claims")}
        assert left == {"order:recent"}
    finally:
        await store.close()


async def test_a_second_customer_on_one_browser_takes_the_browser_not_the_first_profile(
    service: ProfileService,
) -> None:
    """Two customers are never merged: c1 logged in on browser v9 and never logged
    out, then c2 logs in there. The browser's id moves to c2; c1 keeps their profile
    (orders and all) and no longer answers to it."""
    await service.record("v9", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW)
    order = {"event": "Order Completed", "order_id": "C1-1", "total": 80, "ts": NOW - DAY}
    first = events({"event": "Identify", "anonymous_id": "v9", "user_id": "c1"})
    await service.record(None, first + events({**order, "user_id": "c1"}), ev.Source.SHOP, now=NOW)
    assert (await service.load("v9")).customer_id == "c1"  # type: ignore[union-attr]
    second = events({"event": "Identify", "anonymous_id": "v9", "user_id": "c2"})
    await service.record(None, second, ev.Source.SHOP, now=NOW + 60)
    now_on_v9 = await service.load("v9")
    assert now_on_v9 is not None and now_on_v9.customer_id == "c2"
    assert now_on_v9.order_count == 0 and "v9" in now_on_v9.aliases
    c1 = await service.load(customer_key("c1"))
    assert c1 is not None and c1.order_count == 1 and "v9" not in c1.aliases
    assert await service.store.resolve("v9") == customer_key("c2")
    # what the browser does next is c2's
    await service.record("v9", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW + 90)
    c2 = await service.load(customer_key("c2"))
    assert c2 is not None and sum(c2.pageview_days.values()) == 1
    assert sum(c1.pageview_days.values()) == 1  # (the page before c1's login stays c1's)


async def test_a_login_mid_visit_keeps_the_visit(service: ProfileService) -> None:
    """The shop tells of the customer (an order) while their anonymous visit goes on:
    the merged profile keeps that visit, its pages so far, and counts no second visit at
    the next page (it had restarted the visit, resetting ``session.pageviews``)."""
    for at in (0, 30):
        await service.record(
            "v5", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW + at
        )
    order = {"event": "Order Completed", "user_id": "c5", "anonymous_id": "v5", "total": 9}
    await service.record(
        None, events({**order, "order_id": "O-5", "ts": NOW - DAY}), ev.Source.SHOP, now=NOW + 40
    )
    merged = await service.load(customer_key("c5"))
    assert merged is not None and (merged.visits, merged.session_pageviews) == (1, 2)
    await service.record("v5", events({"event": "Page Viewed"}), ev.Source.BROWSER, now=NOW + 60)
    after = await service.load(customer_key("c5"))
    assert after is not None and (after.visits, after.session_pageviews) == (1, 3)
    assert after.session_start == NOW

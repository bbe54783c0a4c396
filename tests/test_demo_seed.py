"""The demo's synthetic customers are real histories, built through the event API."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

from edge.demo.seed import ARCHETYPES, seed, shipped_placements
from edge.identity import Identity
from edge.profiles.model import DAY
from edge.profiles.service import ProfileService, customer_key
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import MemoryStore

NOW = 1_790_000_000


def orders_within(p, days: int) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for o in p.orders if o.ts >= NOW - days * DAY)


async def test_every_archetype_has_members() -> None:
    store = MemoryStore()
    service = ProfileService(store, Identity(["s"]).email_hash)
    count = await seed(service, now=NOW, placements=shipped_placements())  # with the history
    assert count == sum(n for _, n, _ in ARCHETYPES) >= 300
    demo = re.compile(r"demo-\d{4}")  # (the measurement history adds units of its own)
    profiles = [p for p in store.profiles.values() if demo.fullmatch(p.customer_id)]
    assert len(profiles) == count
    assert sum(orders_within(p, 30) >= 3 for p in profiles) >= 20
    assert sum(orders_within(p, 180) >= 1 and orders_within(p, 90) == 0 for p in profiles) >= 20
    assert sum(p.order_count > 0 and p.coupon_orders == p.order_count for p in profiles) >= 20
    assert sum(p.order_count == 0 for p in profiles) >= 20  # registered, no order
    assert sum(p.cart.count > 0 for p in profiles) >= 20
    assert sum(p.recommendation_clicks > 0 and p.order_count == 0 for p in profiles) >= 15
    assert sum(p.dwell_count > 0 for p in profiles) >= 15
    assert sum(bool(p.orders) and p.orders[-1].ts < NOW - 365 * DAY for p in profiles) >= 20  # lost
    opens = [
        sum(p.email_open_days.values()) / max(1, sum(p.email_send_days.values())) for p in profiles
    ]
    assert (
        sum(o > 0.9 for o in opens)
        and sum(0.2 < o < 0.6 for o in opens)
        and sum(o == 0 for o in opens)
    )
    assert all(p.traits.birth_year and p.traits.latitude is not None for p in profiles)
    assert all(p.email_hash and "@" not in p.email_hash for p in profiles)


def test_forget_erases_from_the_store() -> None:
    path = tempfile.mkdtemp() + "/p.db"

    async def fill() -> None:
        store = SQLiteStore(path)
        await seed(ProfileService(store, Identity(["s3cret"]).email_hash), now=NOW)
        await store.close()

    import asyncio

    asyncio.run(fill())
    env = {"EDGE_STORE": f"sqlite:{path}", "EDGE_SECRET": "s3cret", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "edge", "forget", customer_key("demo-0001")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert SQLiteStore(path).get_sync(customer_key("demo-0001")) is None
    assert SQLiteStore(path).get_sync(customer_key("demo-0002")) is not None
    again = subprocess.run(
        [sys.executable, "-m", "edge", "forget", customer_key("demo-0001")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 1 and "no profile found" in again.stderr


async def test_every_library_segment_has_members_and_none_has_everyone() -> None:
    from edge.profiles.stats import average_order_value
    from edge.rules import LIBRARY_DIR, RequestInfo, ShopStats, load_rules
    from edge.rules.functions import Context
    from edge.rules_cli import _REQUEST_FIELDS

    store = MemoryStore()
    await seed(
        ProfileService(store, Identity(["s"]).email_hash), now=NOW, placements=shipped_placements()
    )
    ruleset, errors = load_rules(LIBRARY_DIR)
    assert ruleset is not None, errors
    shop = ShopStats(avg_order_value=await average_order_value(store))
    counts = dict.fromkeys(ruleset.segment_names, 0)
    for profile in store.profiles.values():
        result = ruleset.evaluate(Context(profile, RequestInfo(), NOW, shop))
        for name in ruleset.names(result):
            counts[name] += 1
    from_request = {n for n, s in ruleset.segments.items() if _REQUEST_FIELDS.search(s.when)}
    empty = [n for n, c in counts.items() if c == 0 and n not in from_request]
    assert empty == [], f"segments nobody in the demo is in: {empty}"
    assert max(counts.values()) < len(store.profiles)
    # the request-dependent ones have members once a request says so
    mobile = RequestInfo(device="mobile", utm={"medium": "email", "campaign": "black-friday"})
    any_profile = next(iter(store.profiles.values()))
    names = ruleset.names(ruleset.evaluate(Context(any_profile, mobile, NOW, shop)))
    assert {"mobile", "from_newsletter", "black_friday"} <= set(names)
    near = sum(
        "near_store" in ruleset.names(ruleset.evaluate(Context(p, RequestInfo(), NOW, shop)))
        for p in store.profiles.values()
    )
    assert near > 0  # from the customers' latitude/longitude traits

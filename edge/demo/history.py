"""The demo's measurement history: four weeks of two home-hero placements, so the
report (``edge report``, ``/_edge/report.json``, the admin page) has real-looking
numbers from the first minute: the VIP hero with a true lift (the visitors who see
it buy clearly more often than its holdout) and the comeback hero with none (both
arms buy equally often).

Each unit is a real profile that meets its placement's rule when first exposed: the
VIP hero's units have the orders that make a VIP (five in the half year before,
above the shop's average order), the comeback hero's the orders of a lapsed or lost
customer (the last one three to six months before, or over a year). Everything goes
through the real write path: the shop sends each unit's past orders (and links a
customer's cookie, an Identify with ``anonymous_id``); the rules are evaluated on the
stored profile at the first exposure, as the sidecar would, for the segments the
report breaks the placements down by; the sidecar's observed ``Placement Shown``
events carry the arm :func:`edge.placements.assign` gives the unit (the customer,
else the visitor) and those segments; and the orders that follow come from the shop
source with order ids, so the store attributes them and writes its daily aggregates
as it does for live traffic. Deterministic: the same seed gives the same history,
relative to "now".
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from edge.demo.catalog import PRODUCTS, Product
from edge.placements import HOLDOUT_ARM, assign, unit_key
from edge.profiles import events as ev
from edge.profiles.model import DAY, new_profile
from edge.profiles.service import ProfileService
from edge.profiles.stats import average_order_value
from edge.profiles.stitching import claim, customer_key, link
from edge.profiles.store import Profiles
from edge.rules import PlacementRule, RequestInfo, RuleSet, ShopStats
from edge.rules.variants import arms_of

__all__ = [
    "EXPERIMENTS",
    "REPORT_SEGMENTS",
    "Experiment",
    "Unit",
    "plan",
    "record_history",
]


@dataclass(frozen=True, slots=True)
class Experiment:
    """A shipped placement the history exposes *units* units to, the share of each
    arm's units that then buy within the attribution window (``*`` for any variant),
    and who the units are (``vip`` or ``lapsed``: the past orders that put them in
    the placement's segment)."""

    placement: str
    units: int
    conversion: dict[str, float]
    kind: str


EXPERIMENTS: Final = (
    Experiment("hero-vip", 2000, {HOLDOUT_ARM: 0.10, "*": 0.22}, "vip"),  # a true lift
    Experiment("hero-lapsed", 1200, {HOLDOUT_ARM: 0.14, "*": 0.14}, "lapsed"),  # none
)
REPORT_SEGMENTS: Final = (
    "vip",
    "lapsed",
    "lost",
    "big_spender",
    "email_super_active",
    "email_dormant",
    "near_store",
    "mobile",
)
"""The segments ``edge demo`` breaks its placements down by (``report_segments``)."""
_PRICEY: Final = sorted(PRODUCTS, key=lambda p: -p.price)[:4]
"""A VIP unit's orders: two of these each (well above the shop's average order)."""
_CHEAP: Final = sorted(PRODUCTS, key=lambda p: p.price)[:16]
"""A lapsed or lost unit's past orders: one or two of these."""
WEEKS: Final = 4
ANONYMOUS_SHARE: Final = 0.4
"""Of the history's new units, the share of anonymous visitors (guest checkouts);
the rest are customers the shop identifies."""


@dataclass(slots=True)
class Unit:
    visitor_id: str
    customer_id: str
    placement: str
    arm: str = ""
    exposures: tuple[int, ...] = ()
    order: ev.OrderCompleted | None = None
    """The order within the attribution window after the first exposure, if any."""
    past: tuple[ev.OrderCompleted, ...] = ()
    """The orders before the first exposure that put the unit in the segment."""


def _visitor_id(rng: random.Random) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode()


def _arm(unit: Unit, rule: PlacementRule) -> str:
    variants = rule.variants or arms_of(rule.spec)
    key = "cust:" + unit.customer_id if unit.customer_id else unit_key(unit.visitor_id, None)
    return assign(key, rule.id, rule.spec.holdout, variants)


def _order(unit: Unit, ts: int, number: str, products: Sequence[Product]) -> ev.OrderCompleted:
    lines = [
        ev.Product(
            product_id=p.id, category=p.category, brand=p.brand, price=p.price / 100, quantity=1
        )
        for p in products
    ]
    return ev.OrderCompleted(
        user_id=unit.customer_id or None,
        anonymous_id=None if unit.customer_id else unit.visitor_id,
        order_id=f"demo-h{number}",
        ts=ts,
        total=round(sum(line.price for line in lines), 2),
        products=lines,
    )


def _outcome(rng: random.Random, unit: Unit, first: int, now: int, n: int) -> ev.OrderCompleted:
    # within six days of the first exposure (the default attribution window is 7d)
    ts = first + int(rng.uniform(0.02, 1.0) * min(6 * DAY, max(600, now - first - 300)))
    return _order(unit, min(ts, now - 60), f"{n:05d}", rng.sample(PRODUCTS, rng.randint(1, 2)))


def _past(rng: random.Random, unit: Unit, kind: str, first: int, n: int) -> list[ev.OrderCompleted]:
    """The orders before *first* that put *unit* in its placement's segment: a VIP's
    five in the half year before (``frequent_buyer``), each well above the shop's
    average (``big_spender``); a lapsed customer's last order three to six months
    before (``lapsed``), or a lost one's over a year before (``lost``)."""
    if kind == "vip":
        days = sorted(rng.sample(range(3, 171), 5))
        baskets: list[Sequence[Product]] = [rng.sample(_PRICEY, 2) for _ in days]
    elif rng.random() < 0.7:  # lapsed (and some bought long before, too)
        days = sorted(rng.sample(range(95, 176), rng.randint(1, 2)))
        days += sorted(rng.sample(range(200, 600), rng.randint(0, 2)))
        baskets = [rng.sample(_CHEAP, rng.randint(1, 2)) for _ in days]
    else:  # lost
        days = sorted(rng.sample(range(400, 700), rng.randint(1, 3)))
        baskets = [rng.sample(_CHEAP, rng.randint(1, 2)) for _ in days]
    return [
        _order(unit, first - d * DAY - rng.randint(0, 3600), f"{n:05d}-{i}", basket)
        for i, (d, basket) in enumerate(zip(days, baskets, strict=True))
    ]


def plan(placements: Sequence[PlacementRule], now: int, seed: int = 16) -> list[Unit]:
    """The history's units, new customers and anonymous visitors (guest checkouts),
    each with the past orders that put it in its placement's segment, its arm, its
    exposures over the last :data:`WEEKS` weeks, and for the converting ones an order.
    (The demo's own customers keep the histories of their archetypes: they meet the
    placements' rules now, not necessarily weeks ago.)"""
    rng = random.Random(seed)
    rules = {r.id: r for r in placements}
    units: list[Unit] = []
    numbers = itertools.count(1)
    for experiment in (e for e in EXPERIMENTS if e.placement in rules):
        rule = rules[experiment.placement]
        group: list[Unit] = []
        for n in range(experiment.units):
            vid = _visitor_id(rng)
            anonymous = rng.random() < ANONYMOUS_SHARE
            customer = "" if anonymous else f"demo-{experiment.placement}-{n:04d}"
            unit = Unit(vid, customer, experiment.placement)
            unit.arm = _arm(unit, rule)
            first = now - int(rng.uniform(0.5, WEEKS * 7) * DAY)
            later = [first + int(rng.uniform(0, 3 * DAY)) for _ in range(rng.randint(0, 3))]
            unit.exposures = tuple(sorted(t for t in [first, *later] if t < now))
            unit.past = tuple(_past(rng, unit, experiment.kind, first, next(numbers)))
            group.append(unit)
        by_arm: dict[str, list[Unit]] = {}
        for unit in group:
            by_arm.setdefault(unit.arm, []).append(unit)
        for arm, members in sorted(by_arm.items()):
            rate = experiment.conversion.get(arm, experiment.conversion["*"])
            for unit in rng.sample(members, round(rate * len(members))):
                unit.order = _outcome(rng, unit, unit.exposures[0], now, next(numbers))
        units.extend(group)
    return units


async def _record_past(profiles: ProfileService, unit: Unit) -> None:
    """The unit's past orders, as the shop sends them, in one transaction (thousands of
    units: one an order would take seconds more): the profile the shop's events make
    for a new customer (``cust:ID``, the cookie linked to it: a login) or a guest."""
    key = customer_key(unit.customer_id) if unit.customer_id else unit.visitor_id
    events = unit.past
    claims = [claim(e) for e in events]
    now = unit.exposures[0]

    def mutation(current: Profiles, seen: set[str]) -> Profiles:
        profile = current.get(key) or new_profile(key, now)
        for event, counted in zip(events, claims, strict=True):
            if counted not in seen:
                ev.apply(profile, event, now, ev.Source.SHOP)
        aliases = [unit.visitor_id] if unit.customer_id else []
        link(profile, key, unit.customer_id or None, "", aliases)
        return {key: profile}

    await profiles.cache.transact([key], claims, mutation)


async def _segments_at(
    profiles: ProfileService,
    unit: Unit,
    ruleset: RuleSet,
    shop: ShopStats,
    reported: frozenset[str],
) -> list[str]:
    """The reported segments the unit is in at its first exposure (its past only is
    stored yet), evaluated as the sidecar would (no request-dependent ones)."""
    profile = await profiles.load(unit.visitor_id)
    ctx = ruleset.context(profile, RequestInfo(), unit.exposures[0], shop)
    return [n for n in ruleset.names(ruleset.evaluate(ctx)) if n in reported]


async def _record_exposures(
    profiles: ProfileService, unit: Unit, segments: list[str], now: int
) -> None:
    """The unit's exposures as the sidecar observes them and the order that follows (as
    the shop sends it), in one transaction on the unit's profile: the store measures
    what they change as for live traffic."""
    key = customer_key(unit.customer_id) if unit.customer_id else unit.visitor_id
    held_out = unit.arm == HOLDOUT_ARM
    shown = [
        ev.PlacementShown(
            placement_id=unit.placement, held_out=held_out, arm=unit.arm, ts=ts, segments=segments
        )
        for ts in unit.exposures
    ]
    order = unit.order
    claims = [claim(order)] if order is not None else []

    def mutation(current: Profiles, seen: set[str]) -> Profiles:
        profile = current.get(key) or new_profile(key, unit.exposures[0])
        for event in shown:
            ev.apply(profile, event, event.ts or now, ev.Source.OBSERVED)
        if order is not None and claims[0] not in seen:
            ev.apply(profile, order, now, ev.Source.SHOP)
        return {key: profile}

    await profiles.cache.transact([key], claims, mutation)


CHUNK: Final = 256
"""Units written at once: the store's writer commits them together, and none waits
long (a sidecar's writes have a deadline, ``store_write_timeout_ms``)."""


def _parts(units: list[Unit]) -> list[list[Unit]]:
    return [units[i : i + CHUNK] for i in range(0, len(units), CHUNK)]


async def record_history(
    profiles: ProfileService,
    placements: Sequence[PlacementRule],
    now: int,
    ruleset: RuleSet | None = None,
) -> list[Unit]:
    """Record :func:`plan`'s units through *profiles*: their past orders, then (with
    the rules' verdict at each unit's first exposure on the segments of
    :data:`REPORT_SEGMENTS` that *ruleset* has, under the shop's average order as the
    sidecar computes it) their exposures and the orders that follow. Returns them."""
    units = plan(placements, now)
    for part in _parts(units):
        await asyncio.gather(*(_record_past(profiles, unit) for unit in part))
    segments: dict[str, list[str]] = {}
    if ruleset is not None:
        shop = ShopStats(avg_order_value=await average_order_value(profiles.store))
        reported = frozenset(REPORT_SEGMENTS) & frozenset(ruleset.segment_names)
        for unit in units:
            segments[unit.visitor_id] = await _segments_at(profiles, unit, ruleset, shop, reported)
    for part in _parts(units):
        await asyncio.gather(
            *(_record_exposures(profiles, u, segments.get(u.visitor_id, []), now) for u in part)
        )
    return units

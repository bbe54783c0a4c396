"""The demo's measurement history: four weeks of two home-hero placements, so the
report (``edge report``, ``/_edge/report.json``, the admin page) has real-looking
numbers from the first minute: the VIP hero with a true lift (the visitors who see
it buy clearly more often than its holdout) and the comeback hero with none (both
arms buy equally often).

Everything goes through the real write path: the shop links each customer's cookie
(an Identify with ``anonymous_id``), the sidecar's observed ``Placement Shown``
events carry the arm :func:`edge.placements.assign` gives the unit (the customer,
else the visitor), and the orders come from the shop source with order ids, after
the exposures, so the store attributes them and writes its daily aggregates as it
does for live traffic. Deterministic: the same seed gives the same history,
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

from edge.demo.catalog import PRODUCTS
from edge.placements import HOLDOUT_ARM, assign, unit_key
from edge.profiles import events as ev
from edge.profiles.model import DAY
from edge.profiles.service import ProfileService
from edge.rules import PlacementRule
from edge.rules.variants import arms_of

__all__ = ["EXPERIMENTS", "Experiment", "Unit", "plan", "record_history"]


@dataclass(frozen=True, slots=True)
class Experiment:
    """A shipped placement the history exposes *units* units to, and the share of each
    arm's units that then buy within the attribution window (``*`` for any variant)."""

    placement: str
    units: int
    conversion: dict[str, float]


EXPERIMENTS: Final = (
    Experiment("hero-vip", 2000, {HOLDOUT_ARM: 0.10, "*": 0.22}),  # a true lift
    Experiment("hero-lapsed", 1200, {HOLDOUT_ARM: 0.14, "*": 0.14}),  # none
)
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


def _visitor_id(rng: random.Random) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode()


def _arm(unit: Unit, rule: PlacementRule) -> str:
    variants = rule.variants or arms_of(rule.spec)
    key = "cust:" + unit.customer_id if unit.customer_id else unit_key(unit.visitor_id, None)
    return assign(key, rule.id, rule.spec.holdout, variants)


def _order(rng: random.Random, unit: Unit, first: int, now: int, number: int) -> ev.OrderCompleted:
    # within six days of the first exposure (the default attribution window is 7d)
    ts = first + int(rng.uniform(0.02, 1.0) * min(6 * DAY, max(600, now - first - 300)))
    products = rng.sample(PRODUCTS, rng.randint(1, 2))
    lines = [
        ev.Product(
            product_id=p.id, category=p.category, brand=p.brand, price=p.price / 100, quantity=1
        )
        for p in products
    ]
    return ev.OrderCompleted(
        user_id=unit.customer_id or None,
        anonymous_id=None if unit.customer_id else unit.visitor_id,
        order_id=f"demo-h{number:05d}",
        ts=min(ts, now - 60),
        total=round(sum(line.price for line in lines), 2),
        products=lines,
    )


def plan(
    placements: Sequence[PlacementRule],
    customers: Sequence[str],
    now: int,
    seed: int = 16,
) -> list[Unit]:
    """The history's units: the demo's *customers* (ids) shared among the experiments
    (exposed, but their orders stay those of their archetypes), the rest new customers
    and anonymous visitors; each with its arm, its exposures over the last
    :data:`WEEKS` weeks, and for the converting ones an order."""
    rng = random.Random(seed)
    rules = {r.id: r for r in placements}
    experiments = [e for e in EXPERIMENTS if e.placement in rules]
    pool = list(customers)
    existing = set(pool)
    rng.shuffle(pool)
    units: list[Unit] = []
    numbers = itertools.count(1)
    for i, experiment in enumerate(experiments):
        mine = pool[i :: len(experiments)] if experiments else []
        rule = rules[experiment.placement]
        group: list[Unit] = []
        for n in range(experiment.units):
            vid = _visitor_id(rng)
            if n < len(mine):
                customer = mine[n]
            elif rng.random() < ANONYMOUS_SHARE:
                customer = ""
            else:
                customer = f"demo-{experiment.placement}-{n:04d}"
            unit = Unit(vid, customer, experiment.placement)
            unit.arm = _arm(unit, rule)
            first = now - int(rng.uniform(0.5, WEEKS * 7) * DAY)
            later = [first + int(rng.uniform(0, 3 * DAY)) for _ in range(rng.randint(0, 3))]
            unit.exposures = tuple(sorted(t for t in [first, *later] if t < now))
            group.append(unit)
        by_arm: dict[str, list[Unit]] = {}
        for unit in group:
            by_arm.setdefault(unit.arm, []).append(unit)
        for arm, members in sorted(by_arm.items()):
            rate = experiment.conversion.get(arm, experiment.conversion["*"])
            # (the demo's customers keep the order histories their archetypes gave them)
            buyers = [u for u in members if u.customer_id not in existing]
            for unit in rng.sample(buyers, round(rate * len(members))):
                unit.order = _order(rng, unit, unit.exposures[0], now, next(numbers))
        units.extend(group)
    return units


async def _record_unit(profiles: ProfileService, unit: Unit, now: int) -> None:
    first = unit.exposures[0]
    if unit.customer_id:  # the shop links the cookie to the customer (a login)
        link = ev.Identify(user_id=unit.customer_id, anonymous_id=unit.visitor_id, ts=first - 60)
        await profiles.record(None, [link], ev.Source.SHOP, now=now)
    shown = [
        ev.PlacementShown(
            placement_id=unit.placement, held_out=unit.arm == HOLDOUT_ARM, arm=unit.arm, ts=ts
        )
        for ts in unit.exposures
    ]
    await profiles.record(unit.visitor_id, shown, ev.Source.OBSERVED, now=unit.exposures[-1])
    if unit.order is not None:
        await profiles.record(None, [unit.order], ev.Source.SHOP, now=now)


async def record_history(
    profiles: ProfileService,
    placements: Sequence[PlacementRule],
    customers: Sequence[str],
    now: int,
) -> list[Unit]:
    """Record :func:`plan`'s units through *profiles*; returns them."""
    units = plan(placements, customers, now)
    await asyncio.gather(*(_record_unit(profiles, unit, now) for unit in units))
    return units

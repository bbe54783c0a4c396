"""Synthetic customers for the demo: a few hundred realistic histories, built through
the same event API the shop's ingest uses (nothing hand-edited), so every
microsegment of the rule library has members when ``edge demo`` starts.

Deterministic: the same seed gives the same shop, relative to "now".
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

from edge.demo.catalog import PRODUCTS, Product
from edge.demo.history import record_history
from edge.profiles import events as ev
from edge.profiles.model import DAY
from edge.profiles.service import ProfileService
from edge.rules import LIBRARY_DIR, PlacementRule, RuleSet, load_rules

FIRST_NAMES: Final = (
    "Giulia",
    "Marco",
    "Francesca",
    "Luca",
    "Chiara",
    "Alessandro",
    "Sara",
    "Matteo",
    "Elena",
    "Davide",
    "Martina",
    "Andrea",
    "Valentina",
    "Lorenzo",
    "Anna",
    "Simone",
    "Laura",
    "Federico",
    "Emma",
    "James",
    "Sophie",
    "Oliver",
    "Hannah",
    "Paolo",
    "Silvia",
)
CITIES: Final = (
    # (city, latitude, longitude): Milano hosts the demo's store.
    ("Milano", 45.4642, 9.19),
    ("Monza", 45.5845, 9.2744),
    ("Bergamo", 45.6983, 9.6773),
    ("Torino", 45.0703, 7.6869),
    ("Bologna", 44.4949, 11.3426),
    ("Roma", 41.9028, 12.4964),
    ("Napoli", 40.8518, 14.2681),
    ("Firenze", 43.7696, 11.2558),
    ("London", 51.5072, -0.1276),
)
COUPONS: Final = ("BENVENUTO10", "SALDI20", "NEWSLETTER15", "BLACKFRIDAY")


class _Customer:
    def __init__(self, rng: random.Random, n: int, now: int) -> None:
        self.rng = rng
        self.now = now
        self.user_id = f"demo-{n:04d}"
        self.name = rng.choice(FIRST_NAMES)
        self.events: list[ev.BaseEvent] = []
        self._orders = 0

    def days_ago(self, days: float) -> int:
        return int(self.now - days * DAY - self.rng.randint(0, 3600))

    def identify(self, *, registered_days: float, near_store: bool | None = None) -> None:
        rng = self.rng
        if near_store is None:
            near_store = rng.random() < 0.4
        city, lat, lon = CITIES[rng.randint(0, 2)] if near_store else rng.choice(CITIES[3:])
        self.events.append(
            ev.Identify(
                user_id=self.user_id,
                email=f"{self.name.lower()}.{self.user_id}@example.it",
                ts=self.days_ago(registered_days),
                traits={
                    "first_name": self.name,
                    "birth_year": rng.randint(1950, 2006),
                    "gender": rng.choice(("f", "m", "f", "m", "x")),
                    "city": city,
                    "country": "GB" if city == "London" else "IT",
                    "latitude": round(lat + rng.uniform(-0.02, 0.02), 4),
                    "longitude": round(lon + rng.uniform(-0.02, 0.02), 4),
                    "language": "en" if city == "London" else "it",
                    "registered": self.days_ago(registered_days),
                },
            )
        )

    def order(
        self, days: float, products: list[Product] | None = None, *, coupon: str = ""
    ) -> None:
        rng = self.rng
        products = products or rng.sample(PRODUCTS, rng.randint(1, 3))
        self._orders += 1
        lines = [
            ev.Product(
                product_id=p.id, category=p.category, brand=p.brand, price=p.price / 100, quantity=1
            )
            for p in products
        ]
        self.events.append(
            ev.OrderCompleted(
                user_id=self.user_id,
                order_id=f"{self.user_id}-{self._orders}",
                ts=self.days_ago(days),
                total=round(sum(line.price for line in lines), 2),
                coupon=coupon,
                products=lines,
            )
        )

    def browse(self, days: float, pages: int, *, products: list[Product] | None = None) -> None:
        ts = self.days_ago(days)
        for i in range(pages):
            self.events.append(ev.PageViewed(user_id=self.user_id, ts=ts + 40 * i, path="/"))
        for p in products or []:
            self.events.append(
                ev.ProductViewed(
                    user_id=self.user_id,
                    ts=ts + 5,
                    product_id=p.id,
                    category=p.category,
                    brand=p.brand,
                    price=p.price / 100,
                )
            )

    def emails(self, sends: int, opens: int, *, within_days: int = 90) -> None:
        for i in range(sends):
            ts = self.days_ago(within_days * (i + 0.5) / sends)
            self.events.append(ev.EmailSent(user_id=self.user_id, ts=ts, campaign="newsletter"))
            if i < opens:
                self.events.append(
                    ev.EmailOpened(user_id=self.user_id, ts=ts + 3600, campaign="newsletter")
                )


def _frequent_recent(c: _Customer) -> None:
    for d in sorted(c.rng.sample(range(1, 29), c.rng.randint(3, 5))):
        c.order(d)


def _lapsed(c: _Customer) -> None:
    for d in c.rng.sample(range(95, 178), c.rng.randint(1, 3)):
        c.order(d)


def _frequent_half_year(c: _Customer) -> None:
    for d in c.rng.sample(range(5, 175), c.rng.randint(5, 8)):
        c.order(d)


def _coupon_only(c: _Customer) -> None:
    for d in c.rng.sample(range(3, 300), c.rng.randint(2, 5)):
        c.order(d, coupon=c.rng.choice(COUPONS))


def _category_lover(c: _Customer) -> None:
    category = c.rng.choice(sorted({p.category for p in PRODUCTS}))
    mine = [p for p in PRODUCTS if p.category == category]
    for d in c.rng.sample(range(3, 200), 4):
        c.order(d, c.rng.sample(mine, 2))


def _big_spender(c: _Customer) -> None:
    pricey = sorted(PRODUCTS, key=lambda p: -p.price)[:12]
    for d in c.rng.sample(range(5, 200), c.rng.randint(2, 4)):
        c.order(d, c.rng.sample(pricey, 3))


def _vip(c: _Customer) -> None:
    pricey = sorted(PRODUCTS, key=lambda p: -p.price)[:12]
    for d in c.rng.sample(range(2, 170), 6):
        c.order(d, c.rng.sample(pricey, 2))


def _lost(c: _Customer) -> None:
    for d in c.rng.sample(range(400, 700), c.rng.randint(1, 3)):
        c.order(d)


def _one_timer(c: _Customer) -> None:
    c.order(c.rng.randint(10, 200))


def _new_customer(c: _Customer) -> None:
    c.order(c.rng.randint(1, 13))


def _loyal(c: _Customer) -> None:
    for month in range(0, 24, 2):
        c.order(month * 30 + c.rng.randint(1, 20))


def _disengaging(c: _Customer) -> None:
    for month in range(2, 12):
        c.order(month * 30 + c.rng.randint(0, 10))
    for days in (85, 70, 55, 40):  # came by every couple of weeks (oldest first); not lately
        c.browse(days + c.rng.random(), c.rng.randint(2, 6))


def _prospect(c: _Customer) -> None:
    c.browse(c.rng.randint(1, 40), c.rng.randint(2, 8))


def _recommendation_clicker(c: _Customer) -> None:
    c.browse(3, 4)
    for p in c.rng.sample(PRODUCTS, 3):
        c.events.append(
            ev.ProductClicked(
                user_id=c.user_id, ts=c.days_ago(2), product_id=p.id, list_id="recommendations"
            )
        )


def _cart_abandoner(c: _Customer) -> None:
    if c.rng.random() < 0.5:
        c.order(c.rng.randint(60, 300))
    c.browse(2, 3)
    for p in c.rng.sample(PRODUCTS, c.rng.randint(1, 3)):
        c.events.append(
            ev.ProductAdded(
                user_id=c.user_id,
                ts=c.days_ago(c.rng.uniform(0.2, 3)),
                product_id=p.id,
                category=p.category,
                brand=p.brand,
                price=p.price / 100,
            )
        )


def _heavy_browser(c: _Customer) -> None:
    for d in range(1, 28, 3):
        c.browse(d, c.rng.randint(6, 12), products=c.rng.sample(PRODUCTS, 3))


def _dweller(c: _Customer) -> None:
    c.browse(4, 5)
    for p in c.rng.sample(PRODUCTS, 5):
        c.events.append(
            ev.ProductEngaged(
                user_id=c.user_id,
                ts=c.days_ago(3),
                product_id=p.id,
                dwell_ms=c.rng.randint(60_000, 240_000),
            )
        )


ARCHETYPES: Final[tuple[tuple[str, int, Callable[[_Customer], None]], ...]] = (
    ("frequent in the last 30 days", 20, _frequent_recent),
    ("lapsed: 6 months but not 3", 25, _lapsed),
    ("frequent over 6 months", 20, _frequent_half_year),
    ("coupon only", 20, _coupon_only),
    ("one category or brand", 20, _category_lover),
    ("big spender", 20, _big_spender),
    ("VIP", 15, _vip),
    ("lost", 20, _lost),
    ("one-time shopper", 20, _one_timer),
    ("new customer", 15, _new_customer),
    ("loyal", 15, _loyal),
    ("disengaging", 15, _disengaging),
    ("registered, no order", 20, _prospect),
    ("clicks recommendations, never buys", 15, _recommendation_clicker),
    ("abandoned a cart", 20, _cart_abandoner),
    ("browses a lot", 15, _heavy_browser),
    ("long product-page dwell", 15, _dweller),
)


def synthetic_customers(now: int | None = None, seed: int = 7) -> list[list[ev.BaseEvent]]:
    """One event list per customer: traits, email engagement, then their archetype."""
    now = int(time.time()) if now is None else now
    rng = random.Random(seed)
    out: list[list[ev.BaseEvent]] = []
    n = 0
    for _, count, build in ARCHETYPES:
        for _ in range(count):
            n += 1
            c = _Customer(rng, n, now)
            c.identify(registered_days=rng.randint(20, 900))
            engagement = rng.random()
            if engagement < 0.3:
                c.emails(12, 11 + rng.randint(0, 1))  # super-active
            elif engagement < 0.65:
                c.emails(12, rng.randint(3, 6))  # moderate
            else:
                c.emails(12, 0)  # dormant
            build(c)
            out.append(sorted(c.events, key=lambda e: e.ts or 0))
    return out


async def seed(
    profiles: ProfileService,
    now: int | None = None,
    placements: Sequence[PlacementRule] | None = None,
    ruleset: RuleSet | None = None,
) -> int:
    """Record the synthetic customers, then, given the rule set's *placements*, the
    measurement history of those it has (:mod:`edge.demo.history`; ``edge demo``
    passes the rules it serves; with the *ruleset*, its exposures carry the reported
    segments its units were in). Returns how many customers."""
    now = int(time.time()) if now is None else now
    customers = synthetic_customers(now)
    for at in range(0, len(customers), 64):  # (a few commits' worth queued at a time)
        await asyncio.gather(
            *(
                profiles.record(None, events, ev.Source.SHOP, now=now)
                for events in customers[at : at + 64]
            )
        )
    if placements is None:
        return len(customers)
    await record_history(profiles, placements, now, ruleset)
    return len(customers)


def shipped_placements() -> Sequence[PlacementRule]:
    """The placements of the rules shipped with the package."""
    ruleset = shipped_ruleset()
    return ruleset.placements if ruleset is not None else []


def shipped_ruleset() -> RuleSet | None:
    """The rules shipped with the package."""
    ruleset, _ = load_rules(LIBRARY_DIR)
    return ruleset

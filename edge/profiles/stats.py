"""Shop-wide figures over every stored profile (what ``shop.*`` in the rules reads)."""

from __future__ import annotations

import asyncio

from edge.profiles.store import Store

__all__ = ["average_order_value"]


async def average_order_value(store: Store) -> float | None:
    """The shop's average order value over every stored profile, None before the
    first order; yields to the event loop between batches of profiles."""
    spent = 0.0
    orders = 0
    keys = await store.keys()
    for i, key in enumerate(keys):
        profile = await store.get(key)
        if profile is not None:
            spent += profile.lifetime_spent
            orders += profile.order_count
        if i % 500 == 499:
            await asyncio.sleep(0)
    return round(spent / orders, 2) if orders else None

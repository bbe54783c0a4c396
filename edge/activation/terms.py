"""How time moves each term of the rule language, for :mod:`edge.activation.segments`.

Every field and function of ``edge/rules/functions.py`` is classed here: read from the
request (a segment reading it is not activatable), constant until the profile changes,
a duration growing from a stored time, a window that loses what falls out of it, or a
value from a birth year. :data:`UNCLASSED` must stay empty (a test checks): a new field
is classed here when it is added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from edge.profiles.model import Profile
from edge.rules import functions as fn

NEVER: Final = 1 << 62
"""A time that never comes (kept an int, so ``min`` stays cheap)."""

REQUEST_FIELDS: Final = frozenset(
    {
        "hour",
        "weekday",
        "session.pageviews",
        "utm.source",
        "utm.medium",
        "utm.campaign",
        "channel",
        "page.type",
        "page.path",
        "lang",
        "device",
        "geo.country",
        "shop.avg_order_value",
    }
)
"""Fields a request (or the shop's statistics) decides: unknown outside one."""
REQUEST_FUNCTIONS: Final = frozenset({"distance_km"})


def _first_order(p: Profile) -> int:
    return p.orders[0].ts if p.orders else 0


def _last_order(p: Profile) -> int:
    return p.orders[-1].ts if p.orders else 0


LINEAR_FIELDS: Final[dict[str, Callable[[Profile], int]]] = {
    "first_seen": lambda p: p.first_seen,
    "last_seen": lambda p: p.last_seen,
    "first_order": _first_order,
    "last_order": _last_order,
    "registered": lambda p: p.traits.registered or 0,
    "cart.age": lambda p: p.cart.updated,
}
"""Durations since a stored time (0 = none: missing), as ``functions._age`` reads them."""
YEARLY_FIELDS: Final = frozenset({"age", "age_band"})
CONSTANT_FIELDS: Final = frozenset(
    {
        "visits",
        "orders",
        "total_spent",
        "avg_order_value",
        "last_order_value",
        "coupon_orders",
        "rec_clicks",
        "rec_orders",
        "dwell_avg",
        "time_on_site",
        "top_category",
        "top_category_count",
        "top_brand",
        "top_brand_count",
        "customer",
        "email.sends",
        "email.opens",
        "cart.items",
        "cart.value",
        "cart.categories",
        "first_touch.source",
        "first_touch.medium",
        "first_touch.campaign",
    }
)
ORDER_WINDOWS: Final[dict[str, Callable[[Any], bool]]] = {
    "orders_within": lambda o: True,
    "coupon_orders_within": lambda o: bool(o.coupon),
}
COUNTER_WINDOWS: Final = {
    "pageviews_within": "pageview_days",
    "product_views_within": "product_view_days",
    "visits_within": "visit_days",
    "email_sends_within": "email_send_days",
    "email_opens_within": "email_open_days",
}
STEP_FUNCTIONS: Final = frozenset(
    {*ORDER_WINDOWS, *COUNTER_WINDOWS, "spent_within", "checkout_started_within"}
)
CONSTANT_FUNCTIONS: Final = frozenset({"category_share", "brand_share", "category_views"})
UNCLASSED: Final = (
    set(fn.FIELDS) - REQUEST_FIELDS - set(LINEAR_FIELDS) - YEARLY_FIELDS - CONSTANT_FIELDS - {"now"}
) | (set(fn.FUNCTIONS) - REQUEST_FUNCTIONS - STEP_FUNCTIONS - CONSTANT_FUNCTIONS)
"""Fields and functions this module does not know how time moves: a segment reading
one is not activatable (a new field must be classed here)."""

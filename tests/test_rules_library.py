"""Each library segment on a profile just inside and just outside its definition,
profiles built through the event API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edge.profiles import events as ev
from edge.profiles.model import DAY, Profile
from edge.rules import LIBRARY_DIR, RequestInfo, ShopStats, build_context, load_rules

NOW = 1_790_000_000
HOUR = 3600
RULES, _errors = load_rules(LIBRARY_DIR)
assert RULES is not None, _errors
SHOP = ShopStats(avg_order_value=80.0)


def order(
    days_ago: float, total: float = 50.0, coupon: str = "", n: int = 0, **product: Any
) -> ev.BaseEvent:
    products = (
        [ev.Product(product_id=f"p{n}", quantity=product.pop("quantity", 1), **product)]
        if product
        else []
    )
    return ev.OrderCompleted(
        order_id=f"o{n}-{days_ago}",
        total=total,
        coupon=coupon,
        products=products,
        ts=int(NOW - days_ago * DAY),
    )


def orders(*days_ago: float, **kw: Any) -> list[ev.BaseEvent]:
    return [order(d, n=i, **kw) for i, d in enumerate(days_ago)]


def visits(*days_ago: float) -> list[ev.BaseEvent]:
    return [ev.PageViewed(path="/", ts=int(NOW - d * DAY)) for d in days_ago]


def pageviews(n: int, days_ago: float = 1) -> list[ev.BaseEvent]:
    return [ev.PageViewed(path=f"/p{i}", ts=int(NOW - days_ago * DAY) + i) for i in range(n)]


def emails(sent: int, opened: int, days_ago: float = 10) -> list[ev.BaseEvent]:
    ts = int(NOW - days_ago * DAY)
    return [ev.EmailSent(ts=ts) for _ in range(sent)] + [
        ev.EmailOpened(ts=ts) for _ in range(opened)
    ]


def identify(**traits: Any) -> list[ev.BaseEvent]:
    return [ev.Identify(traits=traits, ts=NOW - 100 * DAY)]


def cart(hours_ago: float) -> list[ev.BaseEvent]:
    return [ev.ProductAdded(product_id="p1", price=30.0, ts=int(NOW - hours_ago * HOUR))]


def rec_clicks(n: int) -> list[ev.BaseEvent]:
    return [
        ev.ProductClicked(product_id="p", list_id="recommendations", ts=NOW - 30 * DAY)
        for _ in range(n)
    ]


def dwell(*ms: int) -> list[ev.BaseEvent]:
    return [ev.ProductEngaged(product_id="p", dwell_ms=m, ts=NOW - DAY) for m in ms]


def build(events: list[ev.BaseEvent]) -> Profile:
    p = Profile(visitor_id="v")
    for e in events:
        ev.apply(p, e, NOW, ev.Source.SHOP)
    return p


def req(**kw: Any) -> RequestInfo:
    return RequestInfo(**kw)


Case = tuple[str, list[ev.BaseEvent], list[ev.BaseEvent], RequestInfo | None, RequestInfo | None]

CASES: list[Case] = [
    ("frequent_30d", orders(1, 10, 29), orders(1, 10, 31), None, None),
    ("lapsed", orders(170), orders(170, 80), None, None),
    ("lapsed", orders(91), orders(181), None, None),
    ("frequent_buyer", orders(1, 30, 60, 90, 179), orders(1, 30, 60, 90, 181), None, None),
    (
        "coupon_only",
        orders(5, 50, coupon="WELCOME"),
        [order(5, coupon="W"), order(50, n=1)],
        None,
        None,
    ),
    (
        "category_loyal",
        orders(10, category="shoes", quantity=5),
        orders(10, category="shoes", quantity=4),
        None,
        None,
    ),
    (
        "brand_loyal",
        orders(10, brand="Ferri", quantity=5),
        orders(10, brand="Ferri", quantity=4),
        None,
        None,
    ),
    ("rec_clicker_no_buy", rec_clicks(3), rec_clicks(2), None, None),
    ("rec_clicker_no_buy", rec_clicks(3), [*rec_clicks(3), order(28)], None, None),
    ("cart_abandoner", cart(1), cart(0.9), None, None),
    ("cart_abandoner", cart(2), [*cart(2), order(0.01)], None, None),
    ("heavy_browser", pageviews(50), pageviews(49), None, None),
    ("long_dwell", dwell(90_000, 90_000), dwell(90_000, 89_000), None, None),
    ("one_time_shopper", [*visits(3), order(3)], [*visits(3, 2), order(3)], None, None),
    ("big_spender", orders(5, total=80.01), orders(5, total=80.0), None, None),
    ("vip", orders(1, 2, 3, 4, 5, total=100), orders(1, 2, 3, 4, total=100), None, None),
    ("vip", orders(1, 2, 3, 4, 5, total=100), orders(1, 2, 3, 4, 5, total=70), None, None),
    ("lost", orders(366), orders(364), None, None),
    ("regular_customer", orders(10, 100, 364), orders(10, 100, 366), None, None),
    ("email_super_active", emails(10, 8), emails(10, 7), None, None),
    ("email_moderate", emails(10, 1), emails(10, 8), None, None),
    ("email_moderate", emails(10, 1), emails(10, 0), None, None),
    ("email_dormant", emails(5, 0), emails(5, 1), None, None),
    ("email_dormant", emails(5, 0), emails(4, 0), None, None),
    (
        "prospect",
        identify(registered=NOW - 5 * DAY),
        identify(registered=NOW - 5 * DAY) + orders(1),
        None,
        None,
    ),
    ("new_customer", orders(30), orders(31), None, None),
    ("loyal", orders(10, 60, 120, 180), orders(10, 60, 120, 179), None, None),
    ("disengaging", visits(60, 50, 40) + orders(60), visits(60, 50, 29) + orders(60), None, None),
    ("age_18_24", identify(birth_year=2002), identify(birth_year=2001), None, None),
    ("age_18_24", identify(birth_year=2008), identify(birth_year=2009), None, None),
    ("age_25_34", identify(birth_year=2000), identify(birth_year=1990), None, None),
    ("age_35_54", identify(birth_year=1972), identify(birth_year=1971), None, None),
    ("age_55_plus", identify(birth_year=1971), identify(birth_year=1972), None, None),
    (
        "near_store",
        identify(latitude=45.5, longitude=9.19),
        identify(latitude=45.6, longitude=9.19),
        None,
        None,
    ),
    ("near_store", [], [], req(latitude=45.46, longitude=9.2), req(latitude=46.0, longitude=9.2)),
    ("from_newsletter", [], [], req(utm={"medium": "newsletter"}), req(utm={"medium": "cpc"})),
    ("from_newsletter", [], [], req(channel="email"), req(channel="search")),
    (
        "black_friday",
        [],
        [],
        req(utm={"campaign": "black-friday"}),
        req(utm={"campaign": "summer"}),
    ),
    ("mobile", [], [], req(device="mobile"), req(device="tablet")),
]


@pytest.mark.parametrize(("segment", "inside", "outside", "req_in", "req_out"), CASES)
def test_library_segment_edges(
    segment: str,
    inside: list[ev.BaseEvent],
    outside: list[ev.BaseEvent],
    req_in: RequestInfo | None,
    req_out: RequestInfo | None,
) -> None:
    assert RULES is not None
    yes = build_context(build(inside), req_in, NOW, SHOP)
    no = build_context(build(outside), req_out, NOW, SHOP)
    assert segment in RULES.matching(yes), "\n".join(RULES.explain(yes)[segment].lines())
    assert segment not in RULES.matching(no), "\n".join(RULES.explain(no)[segment].lines())


def test_every_library_segment_has_a_case_and_a_label() -> None:
    assert RULES is not None
    assert {c[0] for c in CASES} == set(RULES.segment_names)
    assert all(s.label for s in RULES.segments.values())


def test_campaign_falls_back_to_the_visit_touch() -> None:
    assert RULES is not None
    p = build(visits(0.01))
    ev.record_touch(p, ev.Touch(ts=NOW - 60, medium="newsletter", channel="email"))
    assert "from_newsletter" in RULES.matching(build_context(p, RequestInfo(), NOW, SHOP))
    p.session_start = NOW  # a new visit: the touch belonged to the previous one
    assert "from_newsletter" not in RULES.matching(build_context(p, RequestInfo(), NOW, SHOP))


_unused: Callable[..., object] = order

"""The compiled evaluator agrees with the reference interpreter on random rules over
random profiles (built through the event API)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.profiles import events as ev
from edge.profiles.model import DAY, Profile
from edge.rules import (
    LIBRARY_DIR,
    RequestInfo,
    ShopStats,
    build_context,
    compile_segments,
    load_rules,
)

NOW = 1_790_000_000

NUMBERS = [
    "orders",
    "visits",
    "orders_within(30d)",
    "spent_within(90d)",
    "age",
    "avg_order_value",
    "traits.points",
    "cart.value",
    "cart.items",
    "category_share('shoes')",
    "distance_km(45.4, 9.2)",
    "email_opens_within(90d)",
    "top_brand_count",
    "0",
    "1",
    "3",
    "2.5",
    "-1",
]
DURATIONS = ["cart.age", "last_order", "first_seen", "dwell_avg", "30d", "2h", "0s"]
STRINGS = ["utm.medium", "geo.country", "traits.tier", "top_category", "'email'", "'IT'", "''"]
ANY = ["traits.points", "traits.tier", "traits.vip"]


def numbers() -> st.SearchStrategy[str]:
    return st.recursive(
        st.sampled_from(NUMBERS),
        lambda inner: (
            st.tuples(inner, st.sampled_from("+-*/"), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            )
            | inner.map(lambda x: f"-{x}")
        ),
        max_leaves=4,
    )


def durations() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(DURATIONS),
        st.tuples(
            st.sampled_from(DURATIONS), st.sampled_from("+-"), st.sampled_from(DURATIONS)
        ).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(DURATIONS), numbers()).map(lambda t: f"({t[0]} * {t[1]})"),
    )


CMP = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])


def atoms() -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(numbers(), CMP, numbers()).map(" ".join),
        st.tuples(durations(), CMP, durations()).map(" ".join),
        st.tuples(
            st.sampled_from(STRINGS), st.sampled_from(["==", "!=", "<"]), st.sampled_from(STRINGS)
        ).map(" ".join),
        st.tuples(st.sampled_from(STRINGS), st.sampled_from(["in", "not in"])).map(
            lambda t: f"{t[0]} {t[1]} ['email', 'IT', 'gold']"
        ),
        st.tuples(st.sampled_from(ANY), CMP, st.sampled_from(["1", "'gold'", "2.5"])).map(" ".join),
        st.tuples(st.sampled_from(ANY), st.sampled_from(["==", "!="])).map(
            lambda t: f"{t[0]} {t[1]} true"
        ),
        st.tuples(st.sampled_from(ANY), st.sampled_from(["in", "not in"])).map(
            lambda t: f"{t[0]} {t[1]} [1, 2.5]"
        ),
        st.sampled_from(
            [
                "customer",
                "traits.vip",
                "has(age)",
                "has(traits.tier)",
                "has(cart.categories)",
                "'shoes' in cart.categories",
                "true",
                "now > 2026-01-01",
            ]
        ),
    )


def conditions() -> st.SearchStrategy[str]:
    return st.recursive(
        atoms(),
        lambda inner: (
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            )
            | inner.map(lambda x: f"not ({x})")
        ),
        max_leaves=5,
    )


TRAIT_VALUES = st.one_of(
    st.sampled_from(["gold", "1", ""]), st.sampled_from([1, 2.5, 0, -3]), st.booleans()
)


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    p = Profile(visitor_id="v", customer_id=draw(st.sampled_from(["", "c1"])))
    evs: list[ev.BaseEvent] = []
    for i in range(draw(st.integers(0, 6))):
        evs.append(
            ev.OrderCompleted(
                order_id=f"o{i}",
                total=draw(st.sampled_from([0.0, 10.0, 80.0, 250.5])),
                coupon=draw(st.sampled_from(["", "C"])),
                products=[
                    ev.Product(
                        product_id="p",
                        category=draw(st.sampled_from(["shoes", "bags", ""])),
                        brand=draw(st.sampled_from(["Ferri", ""])),
                        quantity=draw(st.integers(1, 3)),
                    )
                ],
                ts=NOW - draw(st.integers(0, 400)) * DAY,
            )
        )
    for d in sorted(draw(st.lists(st.integers(0, 100), max_size=5)), reverse=True):
        evs.append(ev.PageViewed(path="/", ts=NOW - d * DAY))
    for _ in range(draw(st.integers(0, 3))):
        evs.append(ev.EmailOpened(ts=NOW - draw(st.integers(0, 100)) * DAY))
    if draw(st.booleans()):
        evs.append(
            ev.ProductAdded(
                product_id="p",
                category=draw(st.sampled_from(["shoes", ""])),
                price=draw(st.sampled_from([0.0, 30.0])),
                ts=NOW - draw(st.integers(0, 10_000)),
            )
        )
    if draw(st.booleans()):
        evs.append(
            ev.ProductEngaged(product_id="p", dwell_ms=draw(st.integers(0, 200_000)), ts=NOW)
        )
    traits: dict[str, Any] = {}
    for name in ("points", "tier", "vip"):
        if draw(st.booleans()):
            traits[name] = draw(TRAIT_VALUES)
    if draw(st.booleans()):
        traits["birth_year"] = draw(st.integers(1940, 2010))
    if draw(st.booleans()):
        traits.update(latitude=45.4, longitude=draw(st.sampled_from([9.2, 9.3, 12.0])))
    if traits:
        evs.append(ev.Identify(traits=traits, ts=NOW))
    for e in evs:
        ev.apply(p, e, NOW, ev.Source.SHOP)
    return p


REQUESTS = st.builds(
    RequestInfo,
    utm=st.sampled_from([{}, {"medium": "email"}, {"medium": "cpc", "campaign": "x"}]),
    country=st.sampled_from(["", "IT", "FR"]),
    device=st.sampled_from(["", "mobile"]),
)
SHOPS = st.sampled_from([ShopStats(), ShopStats(avg_order_value=80.0)])


def agree(rules: Any, profile: Profile, request: RequestInfo, shop: ShopStats) -> None:
    compiled = rules.evaluate(build_context(profile, request, NOW, shop))
    reference = rules.explain(build_context(profile, request, NOW, shop))
    expected = tuple(reference[name].value is True for name in rules.segment_names)
    assert compiled[: len(expected)] == expected, [
        (name, rules.segments[name].when)
        for name, c, r in zip(rules.segment_names, compiled, expected, strict=False)
        if c != r
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(conditions(), min_size=1, max_size=6),
    st.lists(st.tuples(profiles(), REQUESTS, SHOPS), min_size=10, max_size=10),
)
def test_random_rules_agree_with_reference(whens: list[str], cases: list[Any]) -> None:
    # Every third segment also refers to the one before it.
    segments = {}
    for i, when in enumerate(whens):
        segments[f"s{i}"] = f"{when} or s{i - 1}" if i % 3 == 2 else when
    rules = compile_segments(segments)
    for profile, request, shop in cases:
        agree(rules, profile, request, shop)


LIBRARY, _ = load_rules(LIBRARY_DIR)


@settings(max_examples=1000, deadline=None)
@given(profiles(), REQUESTS, SHOPS)
def test_library_agrees_with_reference(
    profile: Profile, request: RequestInfo, shop: ShopStats
) -> None:
    agree(LIBRARY, profile, request, shop)


def test_shared_subexpressions_are_computed_once() -> None:
    rules = compile_segments(
        {
            "a": "orders_within(30d) >= 1",
            "b": "orders_within(30d) >= 3",
            "c": "orders_within(30d) >= 1 and visits > 1",
        }
    )
    source = rules.program.source
    assert source.count("= ctx.") == 1  # orders_within(30d) read once into a local
    assert "t1 = (t0 >= 1)" in source
    calls = []
    from edge.rules import functions as fn

    real = fn.orders_within
    try:
        fn.FUNCTIONS["orders_within"] = fn.Function(
            ("duration",), "number", False, lambda c, s: calls.append(s) or real(c, s)
        )
        rules = compile_segments({"a": "orders_within(33d) >= 1", "b": "orders_within(33d) >= 3"})
        rules.evaluate(build_context(None, None, NOW))
    finally:
        fn.FUNCTIONS["orders_within"] = fn.Function(("duration",), "number", False, real)
    assert calls == [33 * DAY]


def test_generated_code_reaches_only_helpers() -> None:
    rules = compile_segments({"a": "orders >= 1"})
    namespace = rules.program.evaluate.__globals__
    assert namespace["__builtins__"] == {}
    assert all(k.startswith(("_", "K", "evaluate")) for k in namespace)

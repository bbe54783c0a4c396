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
from edge.rules import functions as fn
from tests._hypothesis import examples

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


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=examples(1000), deadline=None)
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
    assert source.count("_window0(ctx, (2592000,))") == 1  # orders_within(30d) read once
    assert source.count("v0 >= 1.0") == 1  # the comparison a and c share, computed once
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


WINDOWS = st.lists(
    st.sampled_from([0, 3600, DAY, 7 * DAY, 30 * DAY, 90 * DAY, 365 * DAY, 1000 * DAY]),
    min_size=1,
    max_size=5,
)


@settings(max_examples=examples(300), deadline=None)
@given(profiles(), WINDOWS, st.integers(0, 400))
def test_window_functions_agree_with_one_window_at_a_time(
    profile: Profile, windows: list[int], busy_days: int
) -> None:
    # What the compiled evaluator calls (every window of a function in one pass) against
    # the reference (one window per call), also on counters long enough to be sorted.
    for day in range(busy_days):
        profile.pageview_days[NOW // DAY - day] = 1 + day % 3
    ctx = build_context(profile, None, NOW)
    for name, spec in fn.FUNCTIONS.items():
        if spec.windows is not None:
            expected = tuple(spec.call(ctx, s) for s in windows)
            assert spec.windows(ctx, tuple(windows)) == expected, name


def test_one_context_serves_two_rule_sets() -> None:
    first = compile_segments({"a": "orders_within(30d) >= 1"})
    second = compile_segments({"b": "orders_within(30d) == 0", "c": "visits >= 0"})
    ctx = build_context(None, None, NOW)
    assert first.evaluate(ctx) == (False,)
    assert second.evaluate(ctx) == (True, True)
    assert first.evaluate(ctx) == (False,)  # the values it keeps on ctx are its own


def test_lists_of_different_types_are_different_constants() -> None:
    rules = compile_segments({"a": "customer in [true]", "b": "visits in [1]"})
    profile = Profile(visitor_id="v", customer_id="c")
    assert rules.evaluate(build_context(profile, None, NOW)) == (True, False)


def test_whole_numbers_are_explained_without_a_decimal_point() -> None:
    # Both evaluators compute with floats; a merchant still reads `orders = 0`.
    rules = compile_segments({"a": "orders * 3 == 0 and visits / 2 < 1.5"})
    ctx = build_context(None, None, NOW)
    assert rules.evaluate(ctx) == (True,)
    text = "\n".join(rules.explain(ctx)["a"].lines())
    assert "orders = 0" in text and "orders * 3 = 0" in text and "1.5 = 1.5" in text
    assert ".0" not in text


@st.composite
def rich_profiles(draw: st.DrawFn) -> Profile:
    """:func:`profiles`, plus what the other fields read: CRM traits, answers, views,
    visits, a campaign touch."""
    p = draw(profiles())
    evs: list[ev.BaseEvent] = []
    traits: dict[str, Any] = {}
    for name, values in (
        ("gender", ["", "f"]),
        ("language", ["", "IT", "en"]),
        ("country", ["", "it"]),
        ("city", ["", "Milano"]),
        ("age_band", ["", "25-34"]),
        ("registered", [NOW - 40 * DAY, NOW + 10]),
    ):
        if draw(st.booleans()):
            traits[name] = draw(st.sampled_from(values))
    if traits:
        evs.append(ev.Identify(traits=traits, ts=NOW))
    if draw(st.booleans()):
        evs.append(
            ev.ProfileFormAnswered(
                question="age_band", answer=draw(st.sampled_from(["-", "35-44"]))
            )
        )
    for d in draw(st.lists(st.integers(0, 30), max_size=3)):
        evs.append(ev.ProductViewed(product_id="p", category="shoes", ts=NOW - d * DAY))
    for e in evs:
        ev.apply(p, e, NOW, ev.Source.SHOP)
    if draw(st.booleans()):
        p.last_seen = NOW - draw(st.integers(-5, 5 * DAY))
    return p


@settings(max_examples=examples(300), deadline=None)
@given(rich_profiles(), REQUESTS, SHOPS, st.sampled_from(["", "it", "EN"]))
def test_inline_reads_equal_their_readers(
    profile: Profile, request: RequestInfo, shop: ShopStats, lang: str
) -> None:
    # What the compiled evaluator reads in place (Field.inline) is what the reader (the
    # interpreter's) computes, value and type, for every field that has one.
    request.lang = lang
    now = NOW
    namespace = {"p": profile, "r": request, "s": shop, "now": now, **fn.INLINE_HELPERS}
    ctx = build_context(profile, request, now, shop)
    paths = [path for path, field in fn.FIELDS.items() if field.inline]
    paths += [f"traits.{name}" for name in ("gender", "language", "birth_year", "registered")]
    paths += ["traits.country", "traits.latitude", "answers.age_band", "answers.colour"]
    assert len(paths) > 30
    for path in paths:
        read, args = fn.field_reader(path)
        expected = read(ctx, *args)
        got = eval(fn.field_inline(path), namespace)
        assert (got, type(got)) == (expected, type(expected)), path
    views = fn.FUNCTIONS["category_views"]
    for name in ("shoes", "bags"):
        got = eval(views.inline.format(repr(name)), namespace)
        assert got == views.call(ctx, name), name


@given(st.one_of(st.floats(allow_nan=False), st.integers(-(10**6), 10**6), st.just(-0.0)))
def test_cents_is_round_to_two_places(value: float) -> None:
    expected = round(value, 2)
    got = fn.cents(value)
    assert (got, type(got), str(got)) == (expected, type(expected), str(expected))

"""Segment transitions outside a request (edge.activation.segments): entries and exits
when a profile changes, the next change by time alone derived from the rules (checked
against evaluating at every hour up to it), the Activator's due time, and the rule
language's fields for activation (last_order_value, first_touch.*,
checkout_started_within, time_on_site)."""

from __future__ import annotations

import calendar
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.activation import Activator, Transition, activatable, next_change, update
from edge.activation.segments import refresh
from edge.activation.terms import UNCLASSED
from edge.profiles import events as ev
from edge.profiles.model import DAY, Cart, Item, Order, Profile, Touch, Traits, decode, encode
from edge.rules import LIBRARY_DIR, LIBRARY_SEGMENTS, LiveRules, compile_segments, load_rules
from tests._hypothesis import examples

NOW = 1_800_000_000 + 12_345  # not on a day's boundary
HOUR = 3600


def library() -> Any:
    ruleset, errors = load_rules(LIBRARY_DIR, LIBRARY_SEGMENTS)
    assert ruleset is not None, errors
    return ruleset


def members(ruleset: Any, profile: Profile, now: int) -> frozenset[str]:
    names = activatable(ruleset)
    return ruleset.matching(ruleset.context(profile, None, now)) & names


def order(i: int, ts: int, total: float = 50.0, coupon: str = "") -> ev.OrderCompleted:
    return ev.OrderCompleted(order_id=f"o{i}", total=total, coupon=coupon, ts=ts)


# --- which segments are activatable ---------------------------------------------------------


def test_every_field_and_function_is_classed_by_how_time_moves_it() -> None:
    assert not UNCLASSED


def test_request_segments_and_those_using_them_are_not_activatable() -> None:
    names = activatable(library())
    assert {"mobile", "from_newsletter", "black_friday", "near_store", "big_spender"}.isdisjoint(
        names
    )
    assert "vip" not in names  # frequent_buyer and big_spender: the latter reads the shop
    assert {"frequent_buyer", "lapsed", "lost", "cart_abandoner", "age_25_34"} <= names


def test_a_product_of_two_growing_durations_is_not_activatable() -> None:
    rules = compile_segments(
        {
            "odd": "last_order * (first_seen / 1d) > 10d",
            "fine": "last_order * 2 > 10d",
            "uses_odd": "odd or orders > 1",
        }
    )
    assert activatable(rules) == {"fine"}


# --- transitions when the profile changes ---------------------------------------------------


def test_an_order_moves_a_visitor_into_frequent_buyer() -> None:
    rules = library()
    p = Profile(visitor_id="v")
    for i in range(4):
        ev.apply(p, order(i, NOW - (40 - i) * DAY), NOW, ev.Source.SHOP)
    first = update(p, rules, NOW - DAY)
    assert Transition("frequent_buyer", True, NOW - DAY) not in first
    assert "frequent_buyer" not in p.segments
    ev.apply(p, order(9, NOW), NOW, ev.Source.SHOP)
    changes = update(p, rules, NOW)
    assert Transition("frequent_buyer", True, NOW) in changes
    assert p.segments["frequent_buyer"] == NOW
    assert update(p, rules, NOW + 60) == []  # nothing new: no transition twice


def test_time_alone_moves_a_customer_into_lapsed_and_out_of_frequent_buyer() -> None:
    rules = library()
    p = Profile(visitor_id="v", customer_id="c")
    for i in range(5):
        ev.apply(p, order(i, NOW - (20 - i) * DAY), NOW, ev.Source.SHOP)
    update(p, rules, NOW)
    assert "frequent_buyer" in p.segments and "lapsed" not in p.segments
    due = next_change(p, rules, NOW)
    assert due is not None and NOW < due <= NOW + 100 * DAY
    later = NOW + 100 * DAY
    changes = update(p, rules, later)
    assert Transition("lapsed", True, later) in changes
    assert p.segments["lapsed"] == later
    # and out again when the last order leaves the 180-day window: an exit, by time
    gone = NOW + 200 * DAY
    assert Transition("lapsed", False, gone) in update(p, rules, gone)
    assert "lapsed" not in p.segments


def test_following_the_due_times_finds_each_change_at_its_second() -> None:
    rules = library()
    p = Profile(visitor_id="v")
    placed = NOW - 10 * DAY
    ev.apply(p, order(1, placed), NOW, ev.Source.SHOP)
    update(p, rules, NOW)
    assert "new_customer" in p.segments
    seen: list[Transition] = []
    due: int | None = NOW
    wakeups = 0
    while (due := next_change(p, rules, due)) is not None and due < NOW + 400 * DAY:
        wakeups += 1
        seen += update(p, rules, due)
    # the order leaves "new" (first_order <= 30d) the second after 30 days, enters
    # lapsed when it leaves the 90-day window, and leaves it with the 180-day one
    assert seen == [
        Transition("new_customer", False, placed + 30 * DAY + 1),
        Transition("lapsed", True, placed + 90 * DAY + 1),
        Transition("lapsed", False, placed + 180 * DAY + 1),
        Transition("lost", True, placed + 365 * DAY + 1),
    ]
    assert wakeups == len(seen)  # no wake-up for nothing


def test_a_customer_disengages_the_day_their_last_visit_leaves_the_30_day_window() -> None:
    # visits_within(30d) == 0 comes true when the newest visited day leaves the window
    rules = library()
    today = NOW // DAY
    p = Profile(visitor_id="v", visit_days={today: 1, today - 1: 2})
    ev.apply(p, order(1, NOW - 40 * DAY), NOW, ev.Source.SHOP)
    update(p, rules, NOW)
    assert "disengaging" not in p.segments
    due = next_change(p, rules, NOW)
    assert due == (today + 1) * DAY + 30 * DAY
    assert Transition("disengaging", True, due) in update(p, rules, due)
    assert "disengaging" not in members(rules, p, due - 1)


def test_an_age_band_changes_on_the_first_of_january_of_the_year_it_changes() -> None:
    rules = library()
    year = time.gmtime(NOW).tm_year
    p = Profile(visitor_id="v", traits=Traits(birth_year=year - 20))  # 20 this year
    update(p, rules, NOW)
    assert "age_18_24" in p.segments
    turns_25 = calendar.timegm((year + 5, 1, 1, 0, 0, 0))
    assert next_change(p, rules, NOW) == turns_25  # not every 1 January before
    changes = update(p, rules, turns_25)
    assert Transition("age_18_24", False, turns_25) in changes
    assert Transition("age_25_34", True, turns_25) in changes


def test_an_order_is_an_exit_from_cart_abandoner_and_a_removed_rule_is_dropped() -> None:
    rules = library()
    p = Profile(visitor_id="v")
    ev.apply(p, ev.ProductAdded(product_id="p", price=20.0, ts=NOW), NOW, ev.Source.SHOP)
    assert update(p, rules, NOW) == []
    assert next_change(p, rules, NOW) == NOW + HOUR  # cart.age >= 1h
    assert Transition("cart_abandoner", True, NOW + HOUR) in update(p, rules, NOW + HOUR)
    ev.apply(p, ev.CartReplaced(products=[], ts=NOW + 2 * HOUR), NOW, ev.Source.SHOP)
    assert Transition("cart_abandoner", False, NOW + 2 * HOUR) in update(p, rules, NOW + 2 * HOUR)
    p.segments["gone_rule"] = NOW
    assert update(p, compile_segments({"x": "orders >= 1"}), NOW) == []
    assert p.segments == {}


def test_the_activator_keeps_segments_and_sets_the_due_time() -> None:
    activator = Activator(LiveRules(LIBRARY_DIR, LIBRARY_SEGMENTS))
    p = Profile(visitor_id="v")
    assert activator.after(p, None, NOW) == []
    assert p.due == 0 and p.segments == {}  # nothing can change by time alone
    ev.apply(p, order(1, NOW - 5 * DAY), NOW, ev.Source.SHOP)
    activator.after(p, None, NOW)
    assert "new_customer" in p.segments  # first_order <= 30d
    assert p.due == NOW - 5 * DAY + 30 * DAY + 1  # when it stops being new


# --- next_change is exact: nothing changes before it -----------------------------------------

DAYS = ["1d", "7d", "30d", "90d", "180d", "365d", "12h", "90m"]
AGES = ["last_order", "first_order", "first_seen", "last_seen", "registered", "cart.age"]
CMP = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])


def _date(offset: int) -> str:
    return time.strftime('date("%Y-%m-%dT%H:%M")', time.gmtime(NOW + offset))


def atoms() -> st.SearchStrategy[str]:
    windows = st.sampled_from(
        ["orders_within", "coupon_orders_within", "visits_within", "pageviews_within"]
    )
    counts = st.sampled_from([0, 1, 2, 3, 4, 0.5, 2.5])  # a fraction: the thresholds round
    return st.one_of(
        st.tuples(windows, st.sampled_from(DAYS), CMP, counts).map(
            lambda t: f"{t[0]}({t[1]}) {t[2]} {t[3]}"
        ),
        st.tuples(st.sampled_from(DAYS), CMP, st.sampled_from([0, 50, 120.5, 300])).map(
            lambda t: f"spent_within({t[0]}) {t[1]} {t[2]}"
        ),
        st.tuples(st.sampled_from(AGES), CMP, st.sampled_from(DAYS)).map(" ".join),
        st.tuples(st.sampled_from(AGES), st.sampled_from(AGES), CMP, st.sampled_from(DAYS)).map(
            lambda t: f"{t[0]} - {t[1]} {t[2]} {t[3]}"
        ),
        st.tuples(st.sampled_from(AGES), st.sampled_from(AGES), CMP, st.sampled_from(DAYS)).map(
            lambda t: f"{t[0]} + {t[1]} {t[2]} {t[3]}"
        ),
        st.tuples(st.sampled_from(AGES), CMP, st.sampled_from(DAYS)).map(
            lambda t: f"{t[0]} / 3 {t[1]} {t[2]}"
        ),
        st.tuples(st.sampled_from(DAYS), st.sampled_from(DAYS)).map(
            lambda t: f"orders_within({t[0]}) * 2 >= orders_within({t[1]})"
        ),
        st.tuples(st.sampled_from(DAYS), CMP, st.integers(0, 3)).map(
            lambda t: f"orders_within({t[0]}) {t[1]} last_order / 30d + {t[2]}"
        ),
        st.tuples(st.sampled_from(DAYS)).map(lambda t: f"checkout_started_within({t[0]})"),
        st.tuples(CMP, st.integers(-3, 200)).map(lambda t: f"now {t[0]} {_date(t[1] * DAY)}"),
        st.tuples(CMP, st.integers(20, 70)).map(lambda t: f"age {t[0]} {t[1]}"),
        st.sampled_from(['age_band == "25-34"', 'age_band in ["35-44", "45-54"]']),
        st.tuples(st.sampled_from(AGES)).map(lambda t: f"{t[0]} in [30d, 90d]"),
        st.tuples(st.sampled_from(AGES)).map(lambda t: f"-{t[0]} > -45d"),
        st.sampled_from(["orders >= 2", "customer", "has(last_order)", "true"]),
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
        max_leaves=4,
    )


def when(draw: st.DrawFn, low: int, high: int) -> int:
    """A time in [NOW - high, NOW - low] seconds, to the second."""
    return NOW - draw(st.integers(low, high))


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    n = draw(st.integers(0, 6))
    times = sorted(when(draw, -2 * DAY, 200 * DAY) for _ in range(n))
    orders = [
        Order(
            f"o{i}",
            ts,
            draw(st.sampled_from([10.0, 80.5, 250.0])),
            draw(st.sampled_from(["", "C"])),
        )
        for i, ts in enumerate(times)
    ]
    visit_days = {
        (NOW - d * DAY) // DAY: 1 + d % 2 for d in draw(st.sets(st.integers(0, 150), max_size=6))
    }
    optional = st.one_of(st.just(0), st.integers(-3 * DAY, 200 * DAY).map(lambda s: NOW - s))
    first_seen = draw(optional)
    return Profile(
        visitor_id="v",
        customer_id=draw(st.sampled_from(["", "c"])),
        first_seen=first_seen,
        last_seen=draw(optional),
        orders=orders,
        order_count=len(orders),
        visit_days=visit_days,
        pageview_days=dict(visit_days),
        cart=Cart(items=[Item("p", price=5.0)], updated=draw(optional)),
        traits=Traits(
            birth_year=draw(st.one_of(st.none(), st.integers(1950, 2005))),
            registered=draw(optional) or None,
        ),
        checkout_started=draw(optional),
    )


def _instants(profile: Profile, due: int, horizon: int, rng: random.Random) -> list[int]:
    """Every hour from NOW up to *due* (or the horizon), the second before *due*, and
    random seconds in between (a change may last less than an hour)."""
    end = min(due, horizon)
    out = list(range(NOW + HOUR, end, HOUR))
    out += [rng.randrange(NOW + 1, end) for _ in range(100)] if end > NOW + 1 else []
    if due <= horizon:
        out.append(due - 1)
    return out


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conditions(), min_size=1, max_size=5), profiles(), st.randoms())
def test_membership_holds_until_next_change(
    whens: list[str], profile: Profile, rng: random.Random
) -> None:
    rules = compile_segments({f"s{i}": w for i, w in enumerate(whens)})
    due = next_change(profile, rules, NOW)
    assert due is None or due > NOW
    horizon = NOW + 210 * DAY
    now_in = members(rules, profile, NOW)
    for t in _instants(profile, due or horizon + 1, horizon, rng):
        assert members(rules, profile, t) == now_in, (t - NOW, whens)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles())
def test_library_membership_holds_until_next_change(profile: Profile) -> None:
    rules = library()
    rng = random.Random(0)
    t = NOW
    for _ in range(4):  # follow the chain of due times a little way
        due = next_change(profile, rules, t)
        assert due is None or due > t
        base = members(rules, profile, t)
        end = min(due or t + 30 * DAY, t + 30 * DAY)
        for u in [*range(t + HOUR, end, HOUR), *(rng.randrange(t, end) for _ in range(30))]:
            assert members(rules, profile, u) == base, (u - NOW, due)
        if due is None:
            break
        t = due


# --- the new fields -------------------------------------------------------------------------


def test_new_fields_read_the_profile() -> None:
    rules = compile_segments(
        {
            "big_last": "last_order_value >= 100",
            "from_google": 'first_touch.source == "google" and first_touch.medium == "cpc"',
            "black_friday_born": 'first_touch.campaign == "bf"',
            "checkout_recent": "checkout_started_within(4h)",
            "lingers": "time_on_site >= 10m",
        }
    )
    p = Profile(visitor_id="v")
    for e in [
        order(1, NOW - DAY, total=150.0),
        order(2, NOW - 10, total=20.0),
    ]:
        ev.apply(p, e, NOW, ev.Source.SHOP)
    assert "big_last" not in members(rules, p, NOW)  # the last one is 20
    ev.record_touch(p, Touch(ts=NOW - 5 * DAY, source="google", medium="cpc", campaign="bf"))
    ev.record_touch(p, Touch(ts=NOW - DAY, source="newsletter", medium="email"))
    ev.apply(p, ev.CheckoutStarted(), NOW, ev.Source.BROWSER)
    for minute in range(0, 12, 3):  # one visit, pages three minutes apart
        ev.apply(p, ev.PageViewed(path="/"), NOW + minute * 60, ev.Source.BROWSER)
    ev.apply(p, ev.PageViewed(path="/"), NOW + 2 * HOUR, ev.Source.BROWSER)  # a new visit
    assert p.time_on_site == 9 * 60 and p.checkout_started == NOW
    got = members(rules, p, NOW + 3 * HOUR)
    assert got == {"from_google", "black_friday_born", "checkout_recent"}
    assert "checkout_recent" not in members(rules, p, NOW + 4 * HOUR + 1)
    assert next_change(p, rules, NOW + 3 * HOUR) == NOW + 4 * HOUR + 1
    p.time_on_site = 600
    assert "lingers" in members(rules, p, NOW)


def test_a_merged_profile_keeps_the_counters_and_the_earlier_entries() -> None:
    into = Profile(visitor_id="a", checkout_started=NOW - 50, time_on_site=30)
    into.segments = {"lapsed": NOW - 10}
    other = Profile(visitor_id="b", checkout_started=NOW - 5, time_on_site=12)
    other.segments = {"lapsed": NOW - 99, "lost": NOW - 3}
    ev.merge(into, other)
    assert into.checkout_started == NOW - 5 and into.time_on_site == 42
    assert into.segments == {"lapsed": NOW - 99, "lost": NOW - 3}


@pytest.mark.parametrize(
    ("when", "message", "help"),
    [
        ("time_on_site > 5", "cannot compare a duration with a number", "5d"),
        ("last_order_value > 30d", "cannot compare a number with a duration", ""),
        ("checkout_started_within(2) ", "takes a duration, not a number", "2d"),
        ("checkout_started_within(1d) >= 1", "cannot compare a bool with a number", ""),
        ("checkout_started_within()", "takes 1 argument, got 0", "checkout_started_within"),
        (
            'first_touch.sorce == "google"',
            "unknown field `first_touch.sorce`",
            "first_touch.source",
        ),
        ("first_touch.medium == 3", "cannot compare a string with a number", ""),
        ("last_order_vale > 10", "unknown name `last_order_vale`", "last_order_value"),
    ],
)
def test_misused_new_fields_are_check_errors(when: str, message: str, help: str) -> None:
    with pytest.raises(ValueError) as caught:
        compile_segments({"s": when})
    text = str(caught.value)
    assert message in text and help in text, text
    assert "<rules>:2:" in text  # file:line:column, as every rule error


def _same_as_update_then_next_change(rules: Any, profile: Profile, times: list[int]) -> None:
    twin = decode(encode(profile))
    for t in times:
        changes, due = refresh(profile, rules, t)
        assert changes == update(twin, rules, t)
        assert profile.segments == twin.segments
        assert due == next_change(twin, rules, t)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conditions(), min_size=1, max_size=5), profiles(), st.integers(0, 400 * DAY))
def test_refresh_is_update_then_next_change(whens: list[str], profile: Profile, later: int) -> None:
    """refresh shares one evaluation between update and next_change: the same
    transitions, the same segments held and the same next change, now and later
    (with segments referring to others, timed or not, and a name no longer a rule)."""
    sources = {f"s{i}": w for i, w in enumerate(whens)}
    sources["ref"] = "s0 and not orders >= 2" if len(whens) < 3 else "not s1 or s2"
    rules = compile_segments(sources)
    profile.segments = {"s0": NOW - DAY, "gone": NOW - DAY}
    _same_as_update_then_next_change(rules, profile, [NOW, NOW + later])


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles(), st.integers(0, 400 * DAY))
def test_refresh_with_the_library(profile: Profile, later: int) -> None:
    _same_as_update_then_next_change(library(), profile, [NOW, NOW + later])

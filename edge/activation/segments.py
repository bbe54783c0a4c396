"""Segment membership outside a request: transitions, and when time alone changes them.

A segment is *activatable* when it can be judged from the stored profile alone: it
reads nothing of a request (page, campaign of this visit, device, language, location,
the hour of the request, the shop's statistics) and no other segment that does, and its
terms that move with time are ones whose next move can be derived (below).
:func:`update` evaluates those segments on a profile and records entries and exits in
``profile.segments``; :func:`next_change` says when the next one can happen with no
event at all, so that the store's due index wakes the profile up then and not before.

How the next change is derived, from the compiled rules' syntax trees (no probing):
every term is a *signal* over future time ``t >= now``: its value now, its slope (a
duration such as ``last_order`` grows by one second per second; ``now`` too), the time
its current piece ends (a breakpoint), and for windowed counts the whole step schedule
(each counted order leaves ``orders_within(30d)`` at its time + 30 days; a day of a
daily counter leaves at the start of the next day + the window). A comparison of a
step schedule with a constant changes when the first step flips it
(``orders_within(30d) >= 3`` turns false when the third-newest order leaves); a
comparison of two straight pieces at their crossing (``last_order > 90d`` at the last
order + 90 days); ``and`` / ``or`` / ``not`` combine the next changes of their parts
(``false and x`` waits for both). The result is a lower bound: membership is the same
at every instant from ``now`` up to (not including) :func:`next_change`; a bound that
comes early costs one needless wake-up, never a missed transition.

Terms classed by time (every field and function is classed; :data:`UNCLASSED` must
stay empty, a test checks):

- constant until the profile changes: counts, totals, traits, answers, affinities...;
- straight lines: ``now`` and the durations since a stored time (``first_seen``,
  ``last_seen``, ``first_order``, ``last_order``, ``registered``, ``cart.age``), 0 until
  that time if it lies ahead;
- steps down: the window functions over orders and daily counters, and
  ``checkout_started_within``;
- yearly steps: ``age`` and ``age_band`` from a birth year (the next 1 January, UTC);
- request terms: not activatable.

A product of two growing durations, or a division by one, has no straight-line form:
a segment holding one is not activatable either (:func:`activatable` leaves it out).
"""

from __future__ import annotations

import calendar
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from edge.profiles.model import DAY, Profile
from edge.rules import RuleSet
from edge.rules import functions as fn
from edge.rules.compiler import _binary, number
from edge.rules.lang import Binary, Call, ListLit, Literal, Name, Node, Unary, parse_date, render

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


@dataclass(frozen=True, slots=True)
class Transition:
    segment: str
    entered: bool
    """False: exited."""
    at: int


# --- signals -----------------------------------------------------------------------------

Steps = Callable[[], Iterator[tuple[int, Any]]]
Sig = tuple[Any, float, int, Steps | None]
"""A term over time from now: (value now, slope per second, when this piece ends, and
for a pure step function the later (time, value) steps in time order)."""


class _State:
    __slots__ = ("ctx", "done", "now", "profile")

    def __init__(self, profile: Profile, ctx: fn.Context, now: int) -> None:
        self.profile = profile
        self.ctx = ctx
        self.now = now
        self.done: dict[str, tuple[bool, int]] = {}


Eval = Callable[[_State], Sig]


def _leave(ts: float, seconds: float) -> int:
    """The first whole second at which something of time *ts* is out of a window of
    *seconds* (in it while ``ts >= t - seconds``)."""
    return math.floor(ts + seconds) + 1


def _order_window(name: str, seconds: float) -> Eval:
    keep = ORDER_WINDOWS[name]

    def signal(st: _State) -> Sig:
        since = st.now - seconds
        times = sorted([o.ts for o in st.profile.orders if o.ts >= since and keep(o)])
        n = len(times)
        if not n:
            return 0.0, 0.0, NEVER, None

        def steps() -> Iterator[tuple[int, Any]]:
            for i, ts in enumerate(times):
                yield _leave(ts, seconds), float(n - i - 1)

        return float(n), 0.0, _leave(times[0], seconds), steps

    return signal


def _spent_window(seconds: float) -> Eval:
    def signal(st: _State) -> Sig:
        profile, now = st.profile, st.now
        value = number(fn.spent_within(st.ctx, seconds))
        leaves = sorted({_leave(o.ts, seconds) for o in profile.orders if o.ts >= now - seconds})
        if not leaves:
            return value, 0.0, NEVER, None

        def steps() -> Iterator[tuple[int, Any]]:
            for t in leaves:  # summed as the rules sum it, for the same float
                yield t, number(fn.spent_within(fn.Context(profile, None, t), seconds))

        return value, 0.0, leaves[0], steps

    return signal


def _counter_window(attr: str, seconds: float) -> Eval:
    def signal(st: _State) -> Sig:
        counts: dict[int, int] = getattr(st.profile, attr)
        first = int((st.now - seconds) // DAY)
        days = sorted([d for d in counts if d >= first])
        if not days:
            return 0.0, 0.0, NEVER, None
        total = sum([counts[d] for d in days])

        def steps() -> Iterator[tuple[int, Any]]:
            left = total
            for d in days:
                left -= counts[d]
                yield math.ceil((d + 1) * DAY + seconds), float(left)

        return float(total), 0.0, math.ceil((days[0] + 1) * DAY + seconds), steps

    return signal


def _checkout_window(seconds: float) -> Eval:
    def signal(st: _State) -> Sig:
        started = st.profile.checkout_started
        if not started or started < st.now - seconds:
            return False, 0.0, NEVER, None
        end = _leave(started, seconds)
        return True, 0.0, end, lambda: iter(((end, False),))

    return signal


def _linear(read: Callable[[Profile], int]) -> Eval:
    def signal(st: _State) -> Sig:
        ts = read(st.profile)
        if not ts:
            return None, 0.0, NEVER, None
        if ts > st.now:
            return 0.0, 0.0, ts, None
        return float(st.now - ts), 1.0, NEVER, None

    return signal


def _now(st: _State) -> Sig:
    return float(st.now), 1.0, NEVER, None


def _next_new_year(now: int) -> int:
    return calendar.timegm((time.gmtime(now).tm_year + 1, 1, 1, 0, 0, 0))


def _constant_leaf(key: str, read: Callable[..., Any], args: tuple[Any, ...]) -> Eval:
    def signal(st: _State) -> Sig:
        return number(st.ctx.value(key, read, args)), 0.0, NEVER, None

    return signal


def _yearly(path: str) -> Eval:
    read, args = fn.field_reader(path)

    def signal(st: _State) -> Sig:
        value = number(st.ctx.value(path, read, args))
        if st.profile.traits.birth_year:
            return value, 0.0, _next_new_year(st.now), None
        return value, 0.0, NEVER, None

    return signal


def _const(value: Any) -> Eval:
    sig: Sig = (value, 0.0, NEVER, None)
    return lambda st: sig


def _is_const(sig: Sig) -> bool:
    return sig[2] == NEVER and not sig[1] and sig[3] is None


def _is_number(v: Any) -> bool:
    return type(v) is float or type(v) is int


# --- combining signals -------------------------------------------------------------------


def _arith(op: str, left: Eval, right: Eval) -> Eval:
    def signal(st: _State) -> Sig:
        a, b = left(st), right(st)
        va, vb = a[0], b[0]
        value = _binary(op, va, vb)
        until = min(a[2], b[2])
        if value is None:
            return None, 0.0, until, None
        sa, sb = a[1], b[1]
        if op == "+":
            slope = sa + sb
        elif op == "-":
            slope = sa - sb
        elif op == "*":
            slope = va * sb + vb * sa
        else:
            slope = sa / vb
        steps = None
        if a[3] is not None and _is_const(b):
            steps = _map_steps(a[3], lambda v: _binary(op, v, vb))
        elif b[3] is not None and _is_const(a):
            steps = _map_steps(b[3], lambda v: _binary(op, va, v))
        return value, slope, until, steps

    return signal


def _map_steps(steps: Steps, f: Callable[[Any], Any]) -> Steps:
    return lambda: ((t, f(v)) for t, v in steps())


def _negate(inner: Eval) -> Eval:
    def signal(st: _State) -> Sig:
        v, s, until, steps = inner(st)
        if not _is_number(v):
            return None, 0.0, until, None
        return -v, -s, until, (_map_steps(steps, lambda x: -x) if steps is not None else None)

    return signal


def _flip(steps: Steps, test: Callable[[Any], bool], now_true: bool) -> int:
    """The first step at which *test* stops giving *now_true*."""
    for t, value in steps():
        if test(value) is not now_true:
            return t
    return NEVER


def _crossing(now: int, gap: float, slope: float, changes_at_equal: bool) -> int:
    """When a comparison of two sides whose difference is ``gap + slope * (t - now)``
    changes, or NEVER if the difference does not reach 0 ahead. Exact for a whole
    second: at it if the comparison of equal sides differs from now's answer
    (*changes_at_equal*: ``>=`` that was false), else the second after; otherwise a
    second early (rounding), and never before ``now + 1``."""
    if not slope:
        return NEVER
    at = now - gap / slope
    if at < now:
        return NEVER
    if slope in (1.0, -1.0) and float(gap).is_integer():
        return max(now + 1, int(at) + (0 if changes_at_equal else 1))
    return max(now + 1, math.floor(at) - 1)


_AT_EQUAL: Final = {
    "==": True,
    "<=": True,
    ">=": True,
    "in": True,
    "!=": False,
    "<": False,
    ">": False,
    "not in": False,
}
"""What a comparison answers when its sides are equal."""


def _compare(op: str, left: Eval, right: Eval) -> Eval:
    def signal(st: _State) -> Sig:
        a, b = left(st), right(st)
        truth = _binary(op, a[0], b[0]) is True
        if _is_const(b) and a[3] is not None:
            vb = b[0]
            return truth, 0.0, _flip(a[3], lambda v: _binary(op, v, vb) is True, truth), None
        if _is_const(a) and b[3] is not None:
            va = a[0]
            return truth, 0.0, _flip(b[3], lambda v: _binary(op, va, v) is True, truth), None
        until = min(a[2], b[2])
        slope = a[1] - b[1]
        if slope and _is_number(a[0]):
            change = _AT_EQUAL[op] is not truth
            if isinstance(b[0], list):  # `in`: each listed number is a crossing
                for x in b[0]:
                    if _is_number(x):
                        until = min(until, _crossing(st.now, a[0] - x, slope, change))
            elif _is_number(b[0]):
                until = min(until, _crossing(st.now, a[0] - b[0], slope, change))
        return truth, 0.0, until, None

    return signal


def _truth(sig: Sig) -> tuple[bool, int]:
    value = sig[0] is True
    if sig[3] is not None:
        return value, _flip(sig[3], lambda v: v is True, value)
    return value, sig[2]


def _and(left: Eval, right: Eval) -> Eval:
    def signal(st: _State) -> Sig:
        a, ta = _truth(left(st))
        if not a and ta == NEVER:
            return False, 0.0, NEVER, None
        b, tb = _truth(right(st))
        if a and b:
            return True, 0.0, min(ta, tb), None
        if a:
            return False, 0.0, tb, None
        return False, 0.0, (ta if b else max(ta, tb)), None

    return signal


def _or(left: Eval, right: Eval) -> Eval:
    def signal(st: _State) -> Sig:
        a, ta = _truth(left(st))
        if a and ta == NEVER:
            return True, 0.0, NEVER, None
        b, tb = _truth(right(st))
        if not a and not b:
            return False, 0.0, min(ta, tb), None
        if not a:
            return True, 0.0, tb, None
        return True, 0.0, (ta if not b else max(ta, tb)), None

    return signal


def _not(inner: Eval) -> Eval:
    def signal(st: _State) -> Sig:
        value, until = _truth(inner(st))
        return not value, 0.0, until, None

    return signal


def _segment(name: str, plans: dict[str, Eval]) -> Eval:
    def signal(st: _State) -> Sig:
        done = st.done.get(name)
        if done is None:
            done = st.done[name] = _truth(plans[name](st))
        return done[0], 0.0, done[1], None

    return signal


# --- plans: the rule set's segments as signals --------------------------------------------

_CONST, _STEP, _LINEAR = 0, 1, 2
"""How a term moves with time: not at all, in steps, or (also) along a line."""


class _NotDerivable(Exception):
    """The term reads the request, or moves with time in a way not derived here."""


class _Planner:
    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.plans: dict[str, Eval] = {}
        self.kinds: dict[str, int] = {}

    def segment(self, name: str) -> None:
        rule = self.ruleset.segments[name]
        if rule.checked is None:
            self.plans[name], self.kinds[name] = _const(False), _CONST
            return
        with contextlib.suppress(_NotDerivable):  # then not activatable
            self.plans[name], self.kinds[name] = self.node(rule.checked.tree)

    def node(self, node: Node) -> tuple[Eval, int]:
        if isinstance(node, Literal):
            return _const(number(node.value)), _CONST
        if isinstance(node, ListLit):
            return _const([number(item.value) for item in node.items]), _CONST
        if isinstance(node, Name):
            return self.name(node.path)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            inner, kind = self.node(node.operand)
            return (_not(inner) if node.op == "not" else _negate(inner)), kind
        assert isinstance(node, Binary)
        (left, lk), (right, rk) = self.node(node.left), self.node(node.right)
        kind = max(lk, rk)
        op = node.op
        if op == "and":
            return _and(left, right), kind
        if op == "or":
            return _or(left, right), kind
        if op in ("+", "-", "*", "/"):
            if (op == "*" and lk == rk == _LINEAR) or (op == "/" and rk == _LINEAR):
                raise _NotDerivable(op)
            return _arith(op, left, right), kind
        return _compare(op, left, right), min(kind, _STEP)

    def name(self, path: str) -> tuple[Eval, int]:
        if path in self.ruleset.segments:
            if path not in self.plans:
                raise _NotDerivable(path)  # not activatable (segments come in order)
            return _segment(path, self.plans), self.kinds[path]
        if path == "now":
            return _now, _LINEAR
        if path in LINEAR_FIELDS:
            return _linear(LINEAR_FIELDS[path]), _LINEAR
        if path in YEARLY_FIELDS:
            return _yearly(path), _STEP
        prefix = path.partition(".")[0]
        if path in CONSTANT_FIELDS or prefix in ("traits", "answers"):
            read, args = fn.field_reader(path)
            return _constant_leaf(path, read, args), _CONST
        raise _NotDerivable(path)

    def call(self, node: Call) -> tuple[Eval, int]:
        name = node.name
        if name == "has":
            return _has(self.node(node.args[0])[0]), _CONST
        if name == "date":
            return _const(parse_date(node.args[0].value)), _CONST  # type: ignore[attr-defined]
        args = tuple(a.value for a in node.args)  # type: ignore[attr-defined]
        if name in ORDER_WINDOWS:
            return _order_window(name, args[0]), _STEP
        if name in COUNTER_WINDOWS:
            return _counter_window(COUNTER_WINDOWS[name], args[0]), _STEP
        if name == "spent_within":
            return _spent_window(args[0]), _STEP
        if name == "checkout_started_within":
            return _checkout_window(args[0]), _STEP
        if name in CONSTANT_FUNCTIONS:
            return _constant_leaf(render(node), fn.FUNCTIONS[name].call, args), _CONST
        raise _NotDerivable(name)


def _has(inner: Eval) -> Eval:
    """``has(field)``: whether a field is missing does not change with time."""

    def signal(st: _State) -> Sig:
        value = inner(st)[0]
        return value is not None and value != [], 0.0, NEVER, None

    return signal


@dataclass(frozen=True, slots=True)
class _Plan:
    names: tuple[str, ...]
    """The activatable segments, in the rule set's order."""
    known: frozenset[str]
    indexes: tuple[int, ...]
    """Their places in ``RuleSet.evaluate``'s result."""
    timed: tuple[tuple[str, Eval], ...]
    """The activatable segments that can change by time alone, with their signals."""


_PLANS: dict[int, tuple[RuleSet, _Plan]] = {}
_MAX_PLANS: Final = 8


def _plan(ruleset: RuleSet) -> _Plan:
    known = _PLANS.get(id(ruleset))
    if known is not None and known[0] is ruleset:
        return known[1]
    planner = _Planner(ruleset)
    for name in ruleset.segment_names:
        planner.segment(name)
    names = tuple(n for n in ruleset.segment_names if n in planner.plans)
    position = {n: i for i, n in enumerate(ruleset.segment_names)}
    plan = _Plan(
        names,
        frozenset(names),
        tuple(position[n] for n in names),
        tuple((n, planner.plans[n]) for n in names if planner.kinds[n] != _CONST),
    )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[id(ruleset)] = (ruleset, plan)
    return plan


# --- the contract --------------------------------------------------------------------------


def activatable(ruleset: RuleSet) -> frozenset[str]:
    """The segments judged from the stored profile alone (see the module's docstring)."""
    return _plan(ruleset).known


def update(profile: Profile, ruleset: RuleSet, now: int) -> list[Transition]:
    """Evaluate the activatable segments on *profile* (no request) at *now*, record
    entries (with their time) and exits in ``profile.segments``, and return them in
    the rule set's order. A name no longer among the activatable segments (the rule
    was removed or now reads the request) is dropped without a transition: nobody left
    it."""
    plan = _plan(ruleset)
    result = ruleset.evaluate(ruleset.context(profile, None, now))
    held = profile.segments
    changes = []
    for name, index in zip(plan.names, plan.indexes, strict=True):
        inside = result[index] is True
        if inside != (name in held):
            changes.append(Transition(name, inside, now))
            if inside:
                held[name] = now
            else:
                del held[name]
    if not plan.known.issuperset(held):
        for name in [n for n in held if n not in plan.known]:
            del held[name]
    return changes


def next_change(profile: Profile, ruleset: RuleSet, now: int) -> int | None:
    """The earliest time after *now* at which an activatable segment of *profile* may
    change by time alone; None if none ever can. Membership is the same at every
    instant before it (it may come early: then nothing changed, and it is asked
    again)."""
    plan = _plan(ruleset)
    if not plan.timed:
        return None
    st = _State(profile, ruleset.context(profile, None, now), now)
    soonest = NEVER
    for name, signal in plan.timed:
        done = st.done.get(name)
        if done is None:
            done = st.done[name] = _truth(signal(st))
        if done[1] < soonest:
            soonest = done[1]
    return None if soonest >= NEVER else soonest

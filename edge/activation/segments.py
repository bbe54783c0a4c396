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

Terms classed by time (in :mod:`edge.activation.terms`; :data:`UNCLASSED` there must
stay empty, a test checks):

- constant until the profile changes: counts, totals, traits, answers, affinities...;
- straight lines: ``now`` and the durations since a stored time (``first_seen``,
  ``last_seen``, ``first_order``, ``last_order``, ``registered``, ``cart.age``), 0 until
  that time if it lies ahead;
- steps down: the window functions over orders and daily counters, and
  ``checkout_started_within``;
- yearly steps: ``age`` and ``age_band`` from a birth year (on the 1 January, UTC, the
  answer changes: found once per birth year and year);
- request terms: not activatable.

A product of two growing durations, or a division by one, has no straight-line form:
a segment holding one is not activatable either (:func:`activatable` leaves it out).
"""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from edge.activation import soonest
from edge.activation.judges import (
    AT_EQUAL,
    OPERATORS,
    Judge,
    State,
    age_judge,
    count_judge,
    counter_judge,
    counter_sums,
    crossing,
    leave,
    next_new_year,
    read_leaf,
    yearly_judge,
)
from edge.activation.terms import (
    CONSTANT_FIELDS,
    CONSTANT_FUNCTIONS,
    COUNTER_WINDOWS,
    LINEAR_FIELDS,
    NEVER,
    ORDER_WINDOWS,
    YEARLY_FIELDS,
)
from edge.profiles.model import DAY, Profile
from edge.rules import RuleSet
from edge.rules import functions as fn
from edge.rules.compiler import Output, _binary, _children, generate, number
from edge.rules.lang import Binary, Call, ListLit, Literal, Name, Node, Unary, parse_date, render


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


Eval = Callable[[State], Sig]


def _order_window(name: str, seconds: float) -> Eval:
    keep = ORDER_WINDOWS[name]

    def signal(st: State) -> Sig:
        every = st.sorted.get(name)
        if every is None:
            every = st.sorted[name] = sorted([o.ts for o in st.profile.orders if keep(o)])
        times = every[bisect_left(every, st.now - seconds) :]
        n = len(times)
        if not n:
            return 0.0, 0.0, NEVER, None

        def steps() -> Iterator[tuple[int, Any]]:
            for i, ts in enumerate(times):
                yield leave(ts, seconds), float(n - i - 1)

        return float(n), 0.0, leave(times[0], seconds), steps

    return signal


def _spent_window(seconds: float) -> Eval:
    def signal(st: State) -> Sig:
        profile, now = st.profile, st.now
        value = number(fn.spent_within(st.ctx, seconds))
        leaves = sorted({leave(o.ts, seconds) for o in profile.orders if o.ts >= now - seconds})
        if not leaves:
            return value, 0.0, NEVER, None

        def steps() -> Iterator[tuple[int, Any]]:
            for t in leaves:  # summed as the rules sum it, for the same float
                yield t, number(fn.spent_within(fn.Context(profile, None, t), seconds))

        return value, 0.0, leaves[0], steps

    return signal


def _counter_window(attr: str, seconds: float) -> Eval:
    def signal(st: State) -> Sig:
        counts: dict[int, int] = getattr(st.profile, attr)
        every = st.sorted.get(attr)
        if every is None:
            every = st.sorted[attr] = sorted(counts)
        days = every[bisect_left(every, int((st.now - seconds) // DAY)) :]
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
    def signal(st: State) -> Sig:
        started = st.profile.checkout_started
        if not started or started < st.now - seconds:
            return False, 0.0, NEVER, None
        end = leave(started, seconds)
        return True, 0.0, end, lambda: iter(((end, False),))

    return signal


def _linear(read: Callable[[Profile], int]) -> Eval:
    def signal(st: State) -> Sig:
        ts = read(st.profile)
        if not ts:
            return None, 0.0, NEVER, None
        if ts > st.now:
            return 0.0, 0.0, ts, None
        return float(st.now - ts), 1.0, NEVER, None

    return signal


def _now(st: State) -> Sig:
    return float(st.now), 1.0, NEVER, None


def _constant_leaf(key: str, read: Callable[..., Any], args: tuple[Any, ...]) -> Eval:
    def signal(st: State) -> Sig:
        return read_leaf(st, key, read, args), 0.0, NEVER, None

    return signal


def _yearly(path: str) -> Eval:
    read, args = fn.field_reader(path)

    def signal(st: State) -> Sig:
        value = read_leaf(st, path, read, args)
        if st.profile.traits.birth_year:
            return value, 0.0, next_new_year(st), None
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
    def signal(st: State) -> Sig:
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
    def signal(st: State) -> Sig:
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


def _tester(op: str, same_types: bool) -> Callable[[Any, Any], bool]:
    """The comparison as the rules make it: plain operators when the checker knows
    both sides have one type (then only a missing side is special)."""
    if op in ("in", "not in") and same_types:
        inside = op == "in"

        def member(a: Any, b: Any) -> bool:
            return a is not None and (a in b) is inside

        return member
    plain = OPERATORS.get(op)
    if plain is not None and same_types:

        def test(a: Any, b: Any) -> bool:
            return a is not None and b is not None and plain(a, b)

        return test
    return lambda a, b: _binary(op, a, b) is True


def _flip_left(steps: Steps, test: Callable[[Any, Any], bool], other: Any, truth: bool) -> int:
    for t, value in steps():
        if test(value, other) is not truth:
            return t
    return NEVER


def _flip_right(steps: Steps, test: Callable[[Any, Any], bool], other: Any, truth: bool) -> int:
    for t, value in steps():
        if test(other, value) is not truth:
            return t
    return NEVER


def _compare(op: str, left: Eval, right: Eval, same_types: bool) -> Eval:
    test = _tester(op, same_types)

    def signal(st: State) -> Sig:
        a, b = left(st), right(st)
        truth = test(a[0], b[0])
        if b[3] is None and b[2] == NEVER and not b[1] and a[3] is not None:
            if b[0] is None:
                return False, 0.0, NEVER, None
            return truth, 0.0, _flip_left(a[3], test, b[0], truth), None
        if a[3] is None and a[2] == NEVER and not a[1] and b[3] is not None:
            if a[0] is None:
                return False, 0.0, NEVER, None
            return truth, 0.0, _flip_right(b[3], test, a[0], truth), None
        until = min(a[2], b[2])
        slope = a[1] - b[1]
        if slope and _is_number(a[0]):
            change = AT_EQUAL[op] is not truth
            if isinstance(b[0], list):  # `in`: each listed number is a crossing
                for x in b[0]:
                    if _is_number(x):
                        until = min(until, crossing(st.now, a[0] - x, slope, change))
            elif _is_number(b[0]):
                until = min(until, crossing(st.now, a[0] - b[0], slope, change))
        return truth, 0.0, until, None

    return signal


def _truth(sig: Sig) -> tuple[bool, int]:
    value = sig[0] is True
    if sig[3] is not None:
        return value, _flip(sig[3], lambda v: v is True, value)
    return value, sig[2]


def _and(left: Judge, right: Judge) -> Judge:
    def judge(st: State) -> tuple[bool, int]:
        a, ta = left(st)
        if not a and ta == NEVER:
            return False, NEVER
        b, tb = right(st)
        if a and b:
            return True, (ta if ta < tb else tb)
        if a:
            return False, tb
        return False, (ta if b else max(ta, tb))

    return judge


def _or(left: Judge, right: Judge) -> Judge:
    def judge(st: State) -> tuple[bool, int]:
        a, ta = left(st)
        if a and ta == NEVER:
            return True, NEVER
        b, tb = right(st)
        if not a and not b:
            return False, (ta if ta < tb else tb)
        if not a:
            return True, tb
        return True, (ta if not b else max(ta, tb))

    return judge


def _not(inner: Judge) -> Judge:
    def judge(st: State) -> tuple[bool, int]:
        value, until = inner(st)
        return not value, until

    return judge


def _segment(name: str, judges: dict[str, Judge]) -> Judge:
    def judge(st: State) -> tuple[bool, int]:
        done = st.done.get(name)
        if done is None:
            done = st.done[name] = judges[name](st)
        return done

    return judge


def _judged(inner: Judge) -> Eval:
    """A condition used as a value (``(a > b) == true``)."""

    def signal(st: State) -> Sig:
        value, until = inner(st)
        return value, 0.0, until, None

    return signal


def _from_signal(inner: Eval) -> Judge:
    return lambda st: _truth(inner(st))


_MIRROR: Final = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _direct(node: Binary) -> Judge | None:
    """A judge for ``term op constant`` (or ``constant op term``) when the term is a
    windowed count of orders or of a daily counter, ``now``, or a duration since a
    stored time; None for anything else."""
    op = node.op
    term, const = node.left, node.right
    yearly = isinstance(term, Name) and term.path in YEARLY_FIELDS
    if op in ("in", "not in") and yearly and isinstance(const, ListLit):
        values = [number(item.value) for item in const.items]
        kind = str if term.path == "age_band" else float  # type: ignore[union-attr]
        same = all(type(v) is kind for v in values)
        return yearly_judge(term.path, _tester(op, same), values)  # type: ignore[union-attr]
    if op not in _MIRROR:
        return None
    if isinstance(term, Literal):
        term, const, op = const, term, _MIRROR[op]
    if isinstance(term, Name) and term.path in YEARLY_FIELDS and isinstance(const, Literal):
        same = (const.type == "string") == (term.path == "age_band")
        return yearly_judge(term.path, _tester(op, same), number(const.value))
    if not isinstance(const, Literal) or const.type not in ("number", "duration", "date"):
        return None
    k = number(const.value)
    if isinstance(term, Call) and len(term.args) == 1:
        seconds = term.args[0].value  # type: ignore[attr-defined]
        if term.name in ORDER_WINDOWS:
            return count_judge(term.name, seconds, op, k)
        if term.name in COUNTER_WINDOWS:
            return counter_judge(COUNTER_WINDOWS[term.name], seconds, op, k)
    if isinstance(term, Name):
        if term.path == "now":
            return age_judge(None, op, k)
        if term.path in LINEAR_FIELDS:
            return age_judge(LINEAR_FIELDS[term.path], op, k)
    return None


# --- plans: the rule set's segments as signals --------------------------------------------

_SIMPLE: Final = frozenset({"number", "duration", "date", "string", "bool"})
"""Types compared with plain operators once both sides have the same one."""
_CONST, _STEP, _LINEAR = 0, 1, 2
"""How a term moves with time: not at all, in steps, or (also) along a line."""


class _NotDerivable(Exception):
    """The term reads the request, or moves with time in a way not derived here."""


class _Planner:
    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.types: dict[Node, Any] = {}
        self.judges: dict[str, Judge] = {}
        self.kinds: dict[str, int] = {}

    def segment(self, name: str) -> None:
        rule = self.ruleset.segments[name]
        if rule.checked is None:
            self.judges[name], self.kinds[name] = (lambda st: (False, NEVER)), _CONST
            return
        self.types = rule.checked.types
        with contextlib.suppress(_NotDerivable):  # then not activatable
            self.judges[name], self.kinds[name] = self.truth(rule.checked.tree)

    def truth(self, node: Node) -> tuple[Judge, int]:
        """A condition (a segment's, or an operand of and / or / not)."""
        if isinstance(node, Binary) and node.op in ("and", "or"):
            (left, lk), (right, rk) = self.truth(node.left), self.truth(node.right)
            return (_and if node.op == "and" else _or)(left, right), max(lk, rk)
        if isinstance(node, Unary) and node.op == "not":
            inner, kind = self.truth(node.operand)
            return _not(inner), kind
        if isinstance(node, Name) and node.path in self.ruleset.segments:
            if node.path not in self.judges:
                raise _NotDerivable(node.path)  # not activatable (segments come in order)
            return _segment(node.path, self.judges), self.kinds[node.path]
        signal, kind = self.node(node)
        if isinstance(node, Binary) and kind != _CONST:
            direct = _direct(node)
            if direct is not None:
                return direct, kind
        return _from_signal(signal), kind

    def node(self, node: Node) -> tuple[Eval, int]:
        if isinstance(node, Literal):
            return _const(number(node.value)), _CONST
        if isinstance(node, ListLit):
            return _const([number(item.value) for item in node.items]), _CONST
        if isinstance(node, Name):
            return self.name(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            if node.op == "not":
                judge, kind = self.truth(node)
                return _judged(judge), kind
            inner, kind = self.node(node.operand)
            return _negate(inner), kind
        assert isinstance(node, Binary)
        op = node.op
        if op in ("and", "or"):
            judge, kind = self.truth(node)
            return _judged(judge), kind
        (left, lk), (right, rk) = self.node(node.left), self.node(node.right)
        kind = max(lk, rk)
        if op in ("+", "-", "*", "/"):
            if (op == "*" and lk == rk == _LINEAR) or (op == "/" and rk == _LINEAR):
                raise _NotDerivable(op)
            return _arith(op, left, right), kind
        lt, rt = self.types[node.left], self.types[node.right]
        same = lt.type == rt.type and lt.type in _SIMPLE
        return _compare(op, left, right, same), min(kind, _STEP)

    def name(self, node: Name) -> tuple[Eval, int]:
        path = node.path
        if path in self.ruleset.segments:
            judge, kind = self.truth(node)
            return _judged(judge), kind
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

    def signal(st: State) -> Sig:
        value = inner(st)[0]
        return value is not None and value != [], 0.0, NEVER, None

    return signal


@dataclass(frozen=True, slots=True)
class _Plan:
    names: tuple[str, ...]
    """The activatable segments, in the rule set's order."""
    known: frozenset[str]
    evaluate: Callable[[fn.Context], tuple[bool, ...]]
    """Those segments alone, compiled (the rule set's evaluator also computes the
    request's segments and the placements' conditions)."""
    timed: tuple[tuple[str, Judge], ...]
    """The activatable segments that can change by time alone, with their signals."""
    soonest: Callable[[State], tuple[int, tuple[bool, ...]]] | None
    """Those judged in one generated function (:mod:`edge.activation.soonest`): the
    first time any of them may change (NEVER: none) and whether each holds now; None
    when there are none."""
    rest: Callable[[fn.Context], tuple[bool, ...]] | None
    """The activatable segments not in *timed*, compiled alone (for :func:`refresh`);
    None when one of them refers to a timed segment (then :func:`refresh` evaluates
    every segment, as :func:`update` does)."""
    merge: tuple[int, ...]
    """For each of *names*: its index in ``timed + rest``."""


_PLANS: dict[int, tuple[RuleSet, _Plan]] = {}
_MAX_PLANS: Final = 8


def _plan(ruleset: RuleSet) -> _Plan:
    known = _PLANS.get(id(ruleset))
    if known is not None and known[0] is ruleset:
        return known[1]
    planner = _Planner(ruleset)
    for name in ruleset.segment_names:
        planner.segment(name)
    names = tuple(n for n in ruleset.segment_names if n in planner.judges)
    program = generate(
        [Output(n, ruleset.segments[n].checked) for n in names],
        {n: i for i, n in enumerate(names)},
    )
    timed = tuple((n, planner.judges[n]) for n in names if planner.kinds[n] != _CONST)
    timed_names = [n for n, _ in timed]
    untimed = [n for n in names if n not in timed_names]
    rest = None
    if not any(_refers(ruleset.segments[n].checked, timed_names) for n in untimed):
        rest = generate(
            [Output(n, ruleset.segments[n].checked) for n in untimed],
            {n: i for i, n in enumerate(untimed)},
        ).evaluate
    order = [*timed_names, *untimed]
    plan = _Plan(
        names,
        frozenset(names),
        program.evaluate,
        timed,
        _soonest(ruleset, timed),
        rest,
        tuple(order.index(n) for n in names),
    )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[id(ruleset)] = (ruleset, plan)
    return plan


def _refers(checked: Any, names: Collection[str]) -> bool:
    """Whether a rule's tree names one of the segments *names*."""
    if checked is None:
        return False
    stack = [checked.tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Name) and node.path in names:
            return True
        stack += _children(node)
    return False


def _soonest(
    ruleset: RuleSet, timed: tuple[tuple[str, Judge], ...]
) -> Callable[[State], tuple[int, tuple[bool, ...]]] | None:
    """The generated judge of all *timed* segments at once (their leaves judged by
    the planner's judges, and / or / not and segment references written out)."""
    if not timed:
        return None
    planner = _Planner(ruleset)
    trees: dict[str, Node | None] = {}
    for name in ruleset.segment_names:
        planner.segment(name)
        if name in planner.judges:
            checked = ruleset.segments[name].checked
            trees[name] = checked.tree if checked is not None else None
    planner.types = {}  # the leaves' types, from every rule (a node has one type)
    for name in trees:
        checked = ruleset.segments[name].checked
        if checked is not None:
            planner.types.update(checked.types)
    helpers = {"counter_sums": counter_sums, "keep": ORDER_WINDOWS}
    leaf = lambda node: planner.truth(node)[0]  # noqa: E731
    return soonest.write([n for n, _ in timed], trees, leaf, helpers)[1]


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
    return _record(profile, plan, plan.evaluate(ruleset.context(profile, None, now)), now)


def _record(profile: Profile, plan: _Plan, result: Sequence[bool], now: int) -> list[Transition]:
    held = profile.segments
    changes = []
    for name, inside in zip(plan.names, result, strict=True):
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
    assert plan.soonest is not None
    first = plan.soonest(State(profile, ruleset.context(profile, None, now), now))[0]
    return None if first >= NEVER else first


def refresh(profile: Profile, ruleset: RuleSet, now: int) -> tuple[list[Transition], int | None]:
    """:func:`update` then :func:`next_change`, sharing one evaluation: the segments
    that change by time are judged once (their membership now comes with their next
    change), the others by their own compiled evaluator. The same answers (a test
    checks), for one pass over the profile instead of two."""
    plan = _plan(ruleset)
    ctx = ruleset.context(profile, None, now)
    if plan.soonest is None or plan.rest is None:
        changes = _record(profile, plan, plan.evaluate(ctx), now)
        return changes, next_change(profile, ruleset, now)
    first, truths = plan.soonest(State(profile, ctx, now))
    every = truths + plan.rest(ctx)
    changes = _record(profile, plan, [every[i] for i in plan.merge], now)
    return changes, (None if first >= NEVER else first)

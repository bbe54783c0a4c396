"""The state of one profile's judgement, and the judges of the most common terms.

Split from :mod:`edge.activation.segments` (see there for what a judge is): a
comparison of one windowed count of orders or of a daily counter, of ``now`` or of a
duration since a stored time, or of ``age`` / ``age_band``, with a constant, judged
directly, without the general signals. The monotone count and counter judges carry an
``inline`` description that :mod:`edge.activation.soonest` writes out as code.
"""

from __future__ import annotations

import calendar
import math
import operator
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any, Final

from edge.activation.terms import NEVER, ORDER_WINDOWS
from edge.profiles.model import DAY, Profile, Traits
from edge.rules import functions as fn
from edge.rules.compiler import number


class State:
    __slots__ = ("ctx", "done", "now", "profile", "sorted", "sums", "values", "year", "year_end")

    def __init__(self, profile: Profile, ctx: fn.Context, now: int) -> None:
        self.profile = profile
        self.ctx = ctx
        self.now = now
        self.done: dict[str, tuple[bool, int]] = {}
        self.sorted: dict[str, list[int]] = {}
        """Order times (by window function) and counter days, sorted once."""
        self.sums: dict[str, tuple[list[int], list[int]]] = {}
        """Daily counters' days and sums, once (:func:`counter_sums`)."""
        self.values: dict[str, Any] = {}
        """Leaves read so far (a field or a call with constant arguments, by its text)."""
        self.year_end = 0
        """The next 1 January (UTC), once asked."""
        self.year = 0
        """This year (UTC), once asked."""


def leave(ts: float, seconds: float) -> int:
    """The first whole second at which something of time *ts* is out of a window of
    *seconds* (in it while ``ts >= t - seconds``)."""
    return math.floor(ts + seconds) + 1


def next_new_year(st: State) -> int:
    if not st.year_end:
        st.year_end = calendar.timegm((time.gmtime(st.now).tm_year + 1, 1, 1, 0, 0, 0))
    return st.year_end


def read_leaf(st: State, key: str, read: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """A leaf's value as the rules read it (each read once per profile)."""
    values = st.values
    if key in values:
        return values[key]
    value = values[key] = number(read(st.ctx, *args))
    return value


def crossing(now: int, gap: float, slope: float, changes_at_equal: bool) -> int:
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


AT_EQUAL: Final = {
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


OPERATORS: Final = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


Judge = Callable[[State], tuple[bool, int]]
"""A condition over time from now: (true now, the first time it may change)."""

# Comparisons of one windowed count or one growing duration with a constant, the most
# common terms, judged directly (the same answers as through signals, without them).


MONOTONE: Final = frozenset({"<", "<=", ">", ">="})


def count_judge(name: str, seconds: float, op: str, k: float) -> Judge:
    keep = ORDER_WINDOWS[name]
    test = OPERATORS[op]
    monotone = op in MONOTONE
    zero = test(0, k)
    least = max(1, math.ceil(k) if op in (">=", "<") else math.floor(k) + 1) if monotone else 0

    def judge(st: State) -> tuple[bool, int]:
        every = st.sorted.get(name)
        if every is None:
            every = st.sorted[name] = sorted([o.ts for o in st.profile.orders if keep(o)])
        first = bisect_left(every, st.now - seconds)
        n = len(every) - first
        truth = test(n, k)
        if monotone:
            # The count only falls, one by one: the answer flips when the last count
            # still giving it is left, if the empty window does not give it too.
            if zero is truth:
                return truth, NEVER
            # the fewest orders still giving the answer (`>=` / `<`: ceil(k), `>` /
            # `<=`: floor(k) + 1): it flips when the one of them that is oldest leaves
            if least > n:
                return truth, NEVER
            return truth, math.floor(every[len(every) - least] + seconds) + 1
        # == and !=: equal now, unequal when the oldest leaves; equal later only if
        # the count comes down to k
        if n == k:
            return truth, (math.floor(every[first] + seconds) + 1 if n else NEVER)
        if n < k or not float(k).is_integer():
            return truth, NEVER
        return truth, math.floor(every[first + n - int(k) - 1] + seconds) + 1

    if monotone:  # written out by the generated next_change (edge.activation.soonest)
        judge.inline = ("count", name, seconds, op, k, zero, least)  # type: ignore[attr-defined]
    return judge


def counter_sums(st: State, attr: str) -> tuple[list[int], list[int]]:
    """A daily counter's days in order, and minus the sum from each day on (a rising
    list, for bisect; one more entry: 0, nothing left), computed once per profile."""
    known = st.sums.get(attr)
    if known is None:
        counts: dict[int, int] = getattr(st.profile, attr)
        days = sorted(counts)
        minus = [0] * (len(days) + 1)
        total = 0
        for i in range(len(days) - 1, -1, -1):
            total -= counts[days[i]]
            minus[i] = total
        known = st.sums[attr] = (days, minus)
    return known


def counter_judge(attr: str, seconds: float, op: str, k: float) -> Judge:
    test = OPERATORS[op]
    monotone = op in MONOTONE
    find = bisect_left if op in (">", "<=") else bisect_right

    def judge(st: State) -> tuple[bool, int]:
        days, minus = counter_sums(st, attr)
        first = bisect_left(days, int((st.now - seconds) // DAY))
        total = -minus[first]
        truth = test(total, k)
        # The sum only falls, a day at a time: from day i on, -minus[i] remains.
        if monotone:
            if test(0, k) is truth:
                return truth, NEVER
            # the last day from which what remains still gives the answer: it flips
            # when that day leaves
            last = find(minus, -k, first) - 1
            return truth, math.ceil((days[last] + 1) * DAY + seconds)
        # == and !=: the sum equal to k now, or from some later day on
        if total == k:
            return truth, (math.ceil((days[first] + 1) * DAY + seconds) if total else NEVER)
        if total < k:
            return truth, NEVER
        i = bisect_right(minus, -k, first) - 1  # the last day from which >= k remains
        if -minus[i] != k:
            return truth, NEVER
        return truth, math.ceil((days[i - 1] + 1) * DAY + seconds)

    if monotone:  # written out by the generated next_change (edge.activation.soonest)
        judge.inline = ("counter", attr, seconds, op, k, test(0, k), find)  # type: ignore[attr-defined]
    return judge


def age_judge(read: Callable[[Profile], int] | None, op: str, c: float) -> Judge:
    """``duration-since-a-time op c`` (*read* None: ``now op c``)."""
    test = OPERATORS[op]
    at_equal = AT_EQUAL[op]

    def judge(st: State) -> tuple[bool, int]:
        now = st.now
        if read is None:
            value = float(now)
        else:
            ts = read(st.profile)
            if not ts:
                return False, NEVER  # missing: no comparison holds
            if ts > now:
                return test(0.0, c), ts  # 0 until then
            value = float(now - ts)
        truth = test(value, c)
        return truth, crossing(now, value - c, 1.0, at_equal is not truth)

    return judge


YEARS_AHEAD: Final = 120


def yearly_judge(path: str, test: Callable[[Any, Any], bool], const: Any) -> Judge:
    """``age`` or ``age_band`` compared with a constant: from a birth year the answer
    can only change on a 1 January, and which one depends on the birth year and this
    year alone (kept: a band changes once a decade, not every year)."""
    read, args = fn.field_reader(path)
    flips: dict[tuple[int, int], int] = {}

    def flip(st: State, truth: bool) -> int:
        this_year = st.year
        if not this_year:
            this_year = st.year = time.gmtime(st.now).tm_year
        key = (st.profile.traits.birth_year or 0, this_year)
        found = flips.get(key)
        if found is None:
            found = NEVER
            probe = Profile(visitor_id="", traits=Traits(birth_year=key[0]))
            for year in range(this_year + 1, this_year + YEARS_AHEAD):
                jan1 = calendar.timegm((year, 1, 1, 0, 0, 0))
                if test(number(read(fn.Context(probe, None, jan1), *args)), const) is not truth:
                    found = jan1
                    break
            if len(flips) > 10_000:
                flips.clear()
            flips[key] = found
        return found

    def judge(st: State) -> tuple[bool, int]:
        truth = test(read_leaf(st, path, read, args), const)
        if not st.profile.traits.birth_year:
            return truth, NEVER
        return truth, flip(st, truth)

    return judge

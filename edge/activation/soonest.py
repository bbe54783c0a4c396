"""One generated function per rule set for :func:`edge.activation.segments.next_change`.

The planner (:mod:`edge.activation.segments`) turns each leaf of a condition (a
windowed count against a constant, a duration since a stored time, a signal...) into a
*judge*: ``judge(state) -> (true now, first time it may change)``. Composing those with
one closure per ``and`` / ``or`` / ``not`` and one look-up per segment reference cost
more than the leaves themselves (~16 time-dependent segments, ~40 Python calls a
profile). Here the composition is written out as straight-line code instead, the way
:mod:`edge.rules.compiler` writes the evaluator: a local pair ``(vN, tN)`` per
condition, ``and`` / ``or`` short-circuiting when the left side settles the answer for
good, a segment reference reading the local of the segment computed before it, and only
the leaf judges called. The rules of combination are those of ``segments._and`` /
``_or`` / ``_not`` (kept there for the reference and the tests).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from edge.activation.terms import NEVER
from edge.profiles.model import DAY
from edge.rules.lang import Binary, Name, Node, Unary

Judge = Callable[[Any], tuple[bool, int]]


class _Writer:
    def __init__(self, leaf: Callable[[Node], Judge], segments: dict[str, Node | None]) -> None:
        self.leaf = leaf
        """The planner's judge for a node that is not and / or / not / a segment."""
        self.segments = segments
        """Segment name -> its condition (None: always false), in the rule set's order."""
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"__builtins__": {}, "NEVER": NEVER}
        self.judges: dict[Any, str] = {}
        self.done: dict[str, tuple[str, str]] = {}
        self.count = 0
        self.head: list[str] = []
        """Statements run first (the order times, the counters' locals)."""
        self.prologue: dict[str, str] = {}
        self.keep: dict[str, Callable[[Any], bool]] = {}

    def fresh(self) -> tuple[str, str]:
        self.count += 1
        return f"v{self.count}", f"t{self.count}"

    def segment(self, name: str, indent: str) -> tuple[str, str]:
        known = self.done.get(name)
        if known is not None:
            return known
        tree = self.segments[name]
        pair = ("False", "NEVER") if tree is None else self.condition(tree, indent)
        self.done[name] = pair
        return pair

    def condition(self, node: Node, indent: str) -> tuple[str, str]:
        """Statements computing *node*'s (truth, time) into two locals, named back."""
        out = self.lines
        if isinstance(node, Binary) and node.op in ("and", "or"):
            a, ta = self.condition(node.left, indent)
            v, t = self.fresh()
            inner = indent + "    "
            if node.op == "and":
                out.append(f"{indent}if not {a} and {ta} == NEVER:")
                out.append(f"{inner}{v} = False; {t} = NEVER")
            else:
                out.append(f"{indent}if {a} and {ta} == NEVER:")
                out.append(f"{inner}{v} = True; {t} = NEVER")
            out.append(f"{indent}else:")
            b, tb = self.condition(node.right, inner)
            least = f"({ta} if {ta} < {tb} else {tb})"
            most = f"({ta} if {ta} > {tb} else {tb})"
            if node.op == "and":
                out.append(f"{inner}{v} = {a} and {b}")
                out.append(
                    f"{inner}{t} = {least} if {v} else ({tb} if {a} else ({ta} if {b} else {most}))"
                )
            else:
                out.append(f"{inner}{v} = {a} or {b}")
                out.append(
                    f"{inner}{t} = {least} if not {v} else ({tb} if not {a} else ({ta} if not {b} else {most}))"
                )
            return v, t
        if isinstance(node, Unary) and node.op == "not":
            a, ta = self.condition(node.operand, indent)
            v, t = self.fresh()
            out.append(f"{indent}{v} = not {a}; {t} = {ta}")
            return v, t
        if isinstance(node, Name) and node.path in self.segments:
            if node.path in self.done:
                return self.done[node.path]
            # a segment first needed inside a branch: computed there, its own locals
            v, t = self.condition_of_segment(node.path, indent)
            return v, t
        judge = self.leaf(node)
        inline = getattr(judge, "inline", None)
        if inline is not None:
            return self.inline(inline, indent)
        name = self.judges.get(id(judge))
        if name is None:
            name = self.judges[id(judge)] = f"J{len(self.judges)}"
            self.namespace[name] = judge
        v, t = self.fresh()
        out.append(f"{indent}{v}, {t} = {name}(st)")
        return v, t

    def constant(self, value: Any) -> str:
        name = f"K{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def inline(self, spec: tuple[Any, ...], indent: str) -> tuple[str, str]:
        """A windowed count of orders or of a daily counter compared with a constant
        by ``<``, ``<=``, ``>``, ``>=``: ``judges.count_judge`` and
        ``counter_judge`` written out (the same expressions, so the same answers)."""
        kind, source, seconds, op, k, zero, extra = spec
        v, t = self.fresh()
        out, i = self.lines, indent
        secs, k_, zero_ = self.constant(seconds), self.constant(k), self.constant(zero)
        if kind == "count":
            every = self.order_times(source)
            out.append(f"{i}n = len({every}) - bisect_left({every}, st.now - {secs})")
            out.append(f"{i}{v} = n {op} {k_}")
            out.append(
                f"{i}{t} = NEVER if {v} is {zero_} or {extra} > n else "
                f"floor({every}[len({every}) - {extra}] + {secs}) + 1"
            )
            return v, t
        sums = self.counter(source, indent)
        find = self.constant(extra)
        out.append(f"{i}first = bisect_left({sums}[0], int((st.now - {secs}) // DAY))")
        out.append(f"{i}{v} = -{sums}[1][first] {op} {k_}")
        out.append(
            f"{i}{t} = NEVER if {v} is {zero_} else "
            f"ceil(({sums}[0][{find}({sums}[1], -{k_}, first) - 1] + 1) * DAY + {secs})"
        )
        return v, t

    def order_times(self, name: str) -> str:
        """The local with the window function's order times, sorted (computed first
        thing, kept in ``st.sorted`` for the judges still called)."""
        local = self.prologue.get(name)
        if local is None:
            local = self.prologue[name] = f"orders{len(self.prologue)}"
            keep = self.constant(self.keep[name])
            self.head.append(
                f"    st.sorted[{name!r}] = {local} = "
                f"sorted([o.ts for o in st.profile.orders if {keep}(o)])"
            )
        return local

    def counter(self, attr: str, indent: str) -> str:
        """A daily counter's days and sums (``judges.counter_sums``), once."""
        local = self.prologue.get(attr)
        if local is None:
            local = self.prologue[attr] = f"sums{len(self.prologue)}"
            self.head.append(f"    {local} = None")
        self.lines.append(f"{indent}if {local} is None:")
        self.lines.append(f"{indent}    {local} = counter_sums(st, {attr!r})")
        return local

    def condition_of_segment(self, name: str, indent: str) -> tuple[str, str]:
        tree = self.segments[name]
        if tree is None:
            return "False", "NEVER"
        return self.condition(tree, indent)


def write(
    timed: list[str],
    segments: dict[str, Node | None],
    leaf: Callable[[Node], Judge],
    helpers: dict[str, Any],
) -> tuple[str, Callable[[Any], tuple[int, tuple[bool, ...]]]]:
    """The source and the function ``soonest(state) -> (first, truths)`` for the
    *timed* segments, each judged as :func:`edge.activation.segments.next_change`
    judges it: the first time one may change (NEVER: none), and whether each is true
    now. Segments referenced are computed first, in the rule set's order.
    *helpers*: ``counter_sums`` and ``keep`` (the order windows' filters) from
    :mod:`edge.activation.segments`."""
    w = _Writer(leaf, segments)
    w.keep = helpers["keep"]
    w.namespace.update(
        counter_sums=helpers["counter_sums"],
        bisect_left=bisect_left,
        floor=math.floor,
        ceil=math.ceil,
        int=int,
        len=len,
        sorted=sorted,
        DAY=DAY,
    )
    needed = set(timed)
    for name in reversed(list(segments)):
        if name in needed and segments[name] is not None:
            needed |= _referenced(segments[name], segments)  # type: ignore[arg-type]
    pairs = {}
    for name in segments:
        if name in needed:
            pairs[name] = w.segment(name, "    ")
    body = w.lines or ["    pass"]
    times = ", ".join(pairs[n][1] for n in timed)
    truths = ", ".join(pairs[n][0] for n in timed)
    result = f"min(({times},)), ({truths},)" if timed else "NEVER, ()"
    w.namespace["min"] = min
    source = "def soonest(st):\n" + "\n".join(w.head + body) + f"\n    return {result}\n"
    exec(compile(source, "<next_change>", "exec"), w.namespace)  # built from checked trees
    return source, w.namespace["soonest"]


def _referenced(node: Node, segments: dict[str, Node | None]) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Name) and n.path in segments:
            found.add(n.path)
        elif isinstance(n, Binary):
            stack += [n.left, n.right]
        elif isinstance(n, Unary):
            stack.append(n.operand)
    return found

"""Type checking, the compiled evaluator, and the reference interpreter.

A rule set compiles to ONE generated Python function, ``evaluate(ctx)``, in straight-line
code: first every profile and request value the rules read (the *leaves*) is bound to a
local, then shared sub-expressions are computed once into locals, then the tuple of
every segment (in dependency order) and placement condition is built. Comparisons whose
operands the checker knows are never missing are plain Python operators. The leaves
are computed by a second generated function, ``_leaves(ctx)``, once per context (the
tuple is kept on the context under the rule set's own key): a field with an inline
form (``Field.inline``: an attribute read, a short expression) is read in place, any
other field reader is called once, and a window function is called once for all the
durations the rules use it with (``Function.windows``: one pass over a daily counter
for every window). The
generated text is built from the checked syntax tree only; the names it can reach are
the helpers in ``_HELPERS`` and ``functions.INLINE_HELPERS``, the field and function
readers, constant sets, and the context it is given.

:func:`explain` is the reference interpreter: a plain tree walk with the same
semantics, written independently of the code generator; the tests compare the two
on random profiles.

Semantics, in one place:

- a *missing* value (a field the profile does not have, ``x / 0``) never satisfies a
  comparison: ``==``, ``!=``, ``<``... ``in`` and ``not in`` with a missing operand
  are false, so ``not (missing > 3)`` is true;
- arithmetic with a missing operand is missing;
- in ``and``, ``or`` and ``not`` a value counts as true only if it is ``true``;
- values of different types are never equal (``traits.x == 1`` is false for "1");
- numbers are 64-bit floats, like JSON's: every number a rule writes or reads is
  converted once (see :func:`number`), which also lets CPython run the comparisons of
  the generated code on its fast float path.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Final

from edge.rules import functions as fn
from edge.rules.lang import Binary, Call, LangError, ListLit, Literal, Name, Node, Unary, render

_ORDERING: Final = frozenset({"<", "<=", ">", ">="})
_EQUALITY: Final = frozenset({"==", "!="})
_ARITH: Final = frozenset({"+", "-", "*", "/"})

# (left, op, right) -> result type, for typed arithmetic.
_ARITH_TYPES: Final = {
    ("number", "+", "number"): "number",
    ("number", "-", "number"): "number",
    ("number", "*", "number"): "number",
    ("number", "/", "number"): "number",
    ("duration", "+", "duration"): "duration",
    ("duration", "-", "duration"): "duration",
    ("duration", "*", "number"): "duration",
    ("number", "*", "duration"): "duration",
    ("duration", "/", "number"): "duration",
    ("duration", "/", "duration"): "number",
    ("date", "+", "duration"): "date",
    ("duration", "+", "date"): "date",
    ("date", "-", "duration"): "date",
    ("date", "-", "date"): "duration",
}


@dataclass(frozen=True, slots=True)
class Typed:
    type: str
    nullable: bool


@dataclass(slots=True)
class Checked:
    """A checked expression: its tree, the type of every node, the segments it uses."""

    source: str
    tree: Node
    types: dict[Node, Typed]  # nodes hash by identity (eq=False); a key held here stays alive
    segments: list[tuple[str, Name]] = field(default_factory=list)


def _all_names(segments: Sequence[str]) -> list[str]:
    return [*fn.FIELDS, *fn.FUNCTIONS, *fn.SPECIAL_FUNCTIONS, *segments]


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


_TYPES: Final = [*fn.TYPES, "error", *(f"list:{t}" for t in fn.TYPES)]
_TYPED: Final = tuple({t: Typed(t, nullable) for t in _TYPES} for nullable in (False, True))
"""One Typed per type, never missing (``[False]``) or maybe missing (``[True]``): the
checker labels every node with one."""
_BOOL: Final = _TYPED[False]["bool"]
_ORDERED: Final = frozenset({"number", "duration", "date", "string"})
"""Types two values of which compare with every comparison operator."""


class _Checker:
    def __init__(self, source: str, segments: Collection[str]) -> None:
        self.source = source
        self.segment_names = (
            segments if isinstance(segments, set | frozenset | dict) else set(segments)
        )
        self.segment_list = segments
        self.types: dict[Node, Typed] = {}
        self.errors: list[LangError] = []
        self.uses: list[tuple[str, Name]] = []

    def error(self, node: Node, message: str, help: str = "") -> Typed:
        self.errors.append(LangError(message, node.start, node.end - node.start, help))
        return self.set(node, "error", False)

    def set(self, node: Node, type: str, nullable: bool) -> Typed:
        typed = _TYPED[nullable].get(type)
        if typed is None:
            typed = _TYPED[nullable][type] = Typed(type, nullable)
        self.types[node] = typed
        return typed

    def text(self, node: Node) -> str:
        return self.source[node.start : node.end]

    def check(self, node: Node) -> Typed:
        kind = type(node)  # the node classes have no subclasses
        if kind is Binary:
            return self.binary(node)  # type: ignore[arg-type]
        if kind is Literal:
            typed = self.types[node] = _TYPED[False][node.type]  # type: ignore[attr-defined]
            return typed
        if kind is Name:
            return self.name(node)  # type: ignore[arg-type]
        if kind is Call:
            return self.call(node)  # type: ignore[arg-type]
        if isinstance(node, ListLit):
            kinds = {item.type for item in node.items}
            for item in node.items:
                self.set(item, item.type, False)
            if len(kinds) > 1:
                return self.error(node, "a list must hold values of one type", "")
            if not kinds:
                return self.error(node, "the list is empty")
            return self.set(node, "list:" + kinds.pop(), False)
        if isinstance(node, Unary):
            inner = self.check(node.operand)
            if inner.type == "error":
                return self.set(node, "error", False)
            if node.op == "not":
                if inner.type not in ("bool", "any"):
                    return self.error(
                        node.operand,
                        f"`not` needs true or false, but `{self.text(node.operand)}` "
                        f"is a {inner.type}",
                    )
                return self.set(node, "bool", False)
            if inner.type == "any":
                return self.set(node, "number", True)
            if inner.type not in ("number", "duration"):
                return self.error(node, f"cannot negate a {inner.type}")
            return self.set(node, inner.type, inner.nullable)
        raise AssertionError(node)

    def name(self, node: Name) -> Typed:
        path = node.path
        if path in self.segment_names:
            self.uses.append((path, node))
            return self.set(node, "bool", False)
        found = fn.field_type(path)
        if found is not None:
            return self.set(node, *found)
        if path in fn.FUNCTIONS or path in fn.SPECIAL_FUNCTIONS:
            return self.error(node, f"`{path}` is a function", f"call it: `{path}(...)`")
        kind = "field" if "." in path else "name"
        help = _suggest(path, _all_names(list(self.segment_list)))
        if not help and path.partition(".")[0] in ("trait", "answer", "profile"):
            help = "custom traits are read as `traits.NAME`, answers as `answers.NAME`"
        if not help and kind == "name":
            help = "a name is a field, a function or a segment defined in the rule files"
        return self.error(node, f"unknown {kind} `{path}`", help)

    def call(self, node: Call) -> Typed:
        name = node.name
        if name == "has":
            if len(node.args) != 1 or not isinstance(node.args[0], Name):
                return self.error(node, "`has` takes one field, like `has(traits.gender)`")
            arg = node.args[0]
            if arg.path in self.segment_names:
                return self.error(arg, "`has` takes a field, not a segment")
            typed = self.check(arg)
            if typed.type == "error":
                return self.set(node, "error", False)
            return self.set(node, "bool", False)
        if name == "date":
            if (
                len(node.args) != 1
                or not isinstance(node.args[0], Literal)
                or (node.args[0].type != "string")
            ):
                return self.error(node, '`date` takes one string, like `date("2026-12-01")`')
            try:
                _date_value(node)
            except (ValueError, TypeError):
                return self.error(
                    node.args[0],
                    f"`{node.args[0].value}` is not a date",
                    'write it like "2026-12-01" or "2026-12-01T10:00"',
                )
            return self.set(node, "date", False)
        spec = fn.FUNCTIONS.get(name)
        if spec is None:
            name_node = Name(node.start, node.name_end, name)
            if name in self.segment_names or fn.field_type(name):
                return self.error(name_node, f"`{name}` is not a function", "drop the `(...)`")
            help = _suggest(name, [*fn.FUNCTIONS, *fn.SPECIAL_FUNCTIONS])
            return self.error(name_node, f"unknown function `{name}`", help)
        types = [self.check(arg) for arg in node.args]
        if len(node.args) != len(spec.params):
            want = len(spec.params)
            sig = f"{name}({', '.join(spec.params)})"
            return self.error(
                node,
                f"`{name}` takes {want} argument{'s' if want != 1 else ''}, got {len(node.args)}",
                f"write `{sig}`",
            )
        ok = True
        for arg, typed, want_type in zip(node.args, types, spec.params, strict=True):
            if typed.type == "error":
                ok = False
                continue
            if not isinstance(arg, Literal):
                ok = False
                self.error(
                    arg,
                    f"the argument of `{name}` must be written as a value",
                    'like 30d, 2.5 or "shoes"',
                )
            elif typed.type != want_type:
                ok = False
                help = ""
                if want_type == "duration" and typed.type == "number":
                    help = f"write a duration such as `{arg.value}d` (days) or `{arg.value}h`"
                self.error(arg, f"`{name}` takes a {want_type}, not a {typed.type}", help)
        if not ok:
            return self.set(node, "error", False)
        return self.set(node, spec.type, spec.nullable)

    def binary(self, node: Binary) -> Typed:
        left, right = self.check(node.left), self.check(node.right)
        if left.type == "error" or right.type == "error":
            return self.set(node, "error", False)
        op = node.op
        lt, rt = left.type, right.type
        if lt == rt and lt in _ORDERED and (op in _ORDERING or op in _EQUALITY):
            self.types[node] = _BOOL  # the common case, in short
            return _BOOL
        if op in ("and", "or"):
            for side, typed in ((node.left, left), (node.right, right)):
                if typed.type not in ("bool", "any"):
                    help = ""
                    if typed.type == "number":
                        help = f"compare it: `{self.text(side)} >= 1`"
                    return self.error(
                        side,
                        f"`{op}` needs true or false, but `{self.text(side)}` is a {typed.type}",
                        help,
                    )
            return self.set(node, "bool", False)
        if op in _EQUALITY or op in _ORDERING:
            if "any" not in (lt, rt) and lt != rt:
                return self.mismatch(node, lt, rt)
            if (op in _ORDERING and (lt in ("bool", "list") or rt in ("bool", "list"))) or (
                lt.startswith("list:") or rt.startswith("list:")
            ):
                return self.error(node, f"`{op}` cannot order a {lt if lt != 'any' else rt}")
            return self.set(node, "bool", False)
        if op in ("in", "not in"):
            if rt == "list":
                elem = "string"
            elif rt.startswith("list:"):
                elem = rt[5:]
            elif rt == "any":
                elem = "any"
            else:
                return self.error(
                    node.right,
                    f'`{op}` needs a list like ["a", "b"], not a {rt}',
                )
            if "any" not in (lt, elem) and lt != elem:
                return self.error(node, f"cannot look for a {lt} in a list of {elem}s")
            return self.set(node, "bool", False)
        assert op in _ARITH
        if lt == "any":
            lt = "number"
        if rt == "any":
            rt = "number"
        result = _ARITH_TYPES.get((lt, op, rt))
        if result is None:
            return self.error(node, f"cannot compute {lt} {op} {rt}")
        nullable = (
            left.nullable
            or right.nullable
            or op == "/"
            or "any"
            in (
                left.type,
                right.type,
            )
        )
        return self.set(node, result, nullable)

    def mismatch(self, node: Binary, lt: str, rt: str) -> Typed:
        help = ""
        pair = {lt, rt}
        if pair == {"duration", "number"}:
            side = node.left if lt == "duration" else node.right
            other = node.right if lt == "duration" else node.left
            value = other.value if isinstance(other, Literal) else None
            example = f"{value}d" if value is not None else "30d"
            help = (
                f"`{self.text(side)}` is a duration: compare it with a duration "
                f"such as `{example}` or `2h`"
            )
        elif pair == {"date", "duration"}:
            help = "a date is a point in time; ages like `last_order` are durations (`> 30d`)"
        elif pair == {"date", "string"}:
            help = 'write dates without quotes, like 2026-12-01, or date("2026-12-01")'
        elif "bool" in pair and "string" in pair:
            help = "write true or false without quotes"
        return self.error(node, f"cannot compare a {lt} with a {rt}", help)


def check(source: str, tree: Node, segments: Collection[str]) -> Checked:
    """Check names, arities and types of a condition. Raises an ExceptionGroup of LangErrors."""
    checker = _Checker(source, segments)
    typed = checker.check(tree)
    if not checker.errors and typed.type not in ("bool", "any"):
        help = ""
        if typed.type == "number":
            help = f"compare it, like `{source.strip()} >= 1`"
        checker.error(tree, f"a condition must be true or false, but this is a {typed.type}", help)
    checked = Checked(source, tree, checker.types, checker.uses)
    if checker.errors:
        raise ExceptionGroup("rule errors", checker.errors)
    return checked


# --- code generation ---------------------------------------------------------------------


_NUMERIC: Final = frozenset({"number", "duration", "date"})


def number(value: Any) -> Any:
    """Numbers are floats (64-bit, like JSON's): an int becomes a float, anything else
    (true and false included) stays as it is. The compiled evaluator and the interpreter
    both apply it to every value they read, so their arithmetic is the same."""
    return float(value) if type(value) is int else value


def _num(x: Any) -> Any:
    return x if type(x) in (int, float) else None


def _neg(x: Any) -> Any:
    return None if x is None else -x


def _add(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a + b


def _sub(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a - b


def _mul(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a * b


def _div(a: Any, b: Any) -> Any:
    return None if a is None or b is None or b == 0 else a / b


def _kind(x: Any) -> type | None:
    t = type(x)
    return float if t is int else t


def _same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and _kind(a) is _kind(b)


def _eq(a: Any, b: Any) -> bool:
    return _same(a, b) and a == b


def _ne(a: Any, b: Any) -> bool:
    return _same(a, b) and a != b


def _lt(a: Any, b: Any) -> bool:
    return _same(a, b) and type(a) is not bool and a < b


def _le(a: Any, b: Any) -> bool:
    return _same(a, b) and type(a) is not bool and a <= b


def _gt(a: Any, b: Any) -> bool:
    return _same(a, b) and type(a) is not bool and a > b


def _ge(a: Any, b: Any) -> bool:
    return _same(a, b) and type(a) is not bool and a >= b


def _in(a: Any, items: Any) -> bool:
    return a is not None and any(_eq(a, i) for i in items)


def _not_in(a: Any, items: Any) -> bool:
    return a is not None and not any(_eq(a, i) for i in items) and all(_same(a, i) for i in items)


_HELPERS: Final[dict[str, Callable[..., Any]]] = {
    f.__name__: f
    for f in (_num, _neg, _add, _sub, _mul, _div, _eq, _ne, _lt, _le, _gt, _ge, _in, _not_in)
} | {"_float": float, "_number": number}
_ANY_CMP: Final = {"==": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
_ARITH_HELPER: Final = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_div"}
_PROGRAMS: Final = count()
"""Numbers the generated evaluators: each keeps its values on a context under its own key."""


@dataclass(slots=True)
class Output:
    """One value the generated function computes: a segment or a placement condition."""

    name: str
    checked: Checked | None
    """None: always true."""


class _Generator:
    """Writes the evaluator: ``_leaves(ctx)`` computes every profile and request value
    the rules read (each window function once, for all its windows), and
    ``evaluate(ctx)`` binds them to locals and decides every output in straight-line
    code. The values are kept on the context, so a second evaluation skips ``_leaves``.

    A leaf is a field or a function call (not ``has`` or ``date``): a value read from
    the profile or the request. Code is built as (text, precedence) pairs (``_Code``),
    so that a part is put in parentheses only where Python needs them: the function is
    the same, its text shorter and quicker for Python to compile."""

    def __init__(self, outputs: Sequence[Output], segment_index: dict[str, int]) -> None:
        self.outputs = outputs
        self.segment_index = segment_index
        self.namespace: dict[str, Any] = {"__builtins__": {}, **_HELPERS, **fn.INLINE_HELPERS}
        self.leaves: dict[Hashable, str] = {}
        """Leaf key (``Node.key``) -> the code computing it in ``_leaves``."""
        self.locals: dict[Hashable, str] = {}
        """Leaf key -> its local in ``evaluate``."""
        self.windows: dict[str, list[float]] = {}
        """Window function -> the durations the rules use, in order."""
        self.statements: list[str] = []
        self.temps: dict[Hashable, str] = {}
        self.constants: dict[tuple[Any, ...], str] = {}
        self.walrus = 0
        self.types: dict[Node, Typed] = {}
        counts: dict[Hashable, int] = {}
        self.referenced: set[int] = set()
        for out in outputs:
            if out.checked is not None:
                self.count(out.checked.tree, counts)
        self.hoist = {k for k, n in counts.items() if n > 1}

    def count(self, node: Node, counts: dict[Hashable, int]) -> None:
        kind = type(node)
        if kind is Binary or kind is Unary or (kind is Call and node.name == "has"):  # type: ignore[attr-defined]
            key = node.key
            seen = counts.get(key, 0)
            counts[key] = seen + 1
            if not seen:  # else its children were counted with its first occurrence
                for child in _children(node):
                    self.count(child, counts)
        elif kind is Name:
            index = self.segment_index.get(node.path)  # type: ignore[attr-defined]
            if index is not None:
                self.referenced.add(index)
        # Constants and leaves are never recomputed anyway.

    def generate(self) -> str:
        results = []
        for i, out in enumerate(self.outputs):
            if out.checked is None:
                code = "True"
            else:
                self.types = out.checked.types
                code = _jumping(self.truth(out.checked.tree))[0]
            if i in self.referenced:
                self.statements.append(f"    o{i} = {code}")
                code = f"o{i}"
            results.append(code)
        lines = ["def evaluate(ctx):"]
        if self.leaves:
            key = f"_rules{next(_PROGRAMS)}"
            self.namespace["_KEY"] = key
            lines += [
                "    cache = ctx.__dict__",
                "    leaves = cache.get(_KEY)",
                "    if leaves is None:",
                "        leaves = cache[_KEY] = _leaves(ctx)",
                f"    {', '.join(self.locals.values())}, = leaves",
            ]
        lines += self.statements
        lines.append(f"    return ({', '.join(results)}{',' if results else ''})")
        return self.leaves_function() + "\n".join(lines) + "\n"

    def leaves_function(self) -> str:
        if not self.leaves:
            return ""
        # The names the inline reads use (``Field.inline``): four loads, once.
        lines = [
            "def _leaves(ctx):",
            "    p, r, s, now = ctx.profile, ctx.request, ctx.shop, ctx.now",
        ]
        for i, (name, seconds) in enumerate(self.windows.items()):
            spec = fn.FUNCTIONS[name]
            if spec.counter:
                lines.append(
                    f"    many{i} = _within_many(p.{spec.counter}, now, {tuple(seconds)!r})"
                )
                continue
            self.namespace[f"_window{i}"] = spec.windows
            lines.append(f"    many{i} = _window{i}(ctx, {tuple(seconds)!r})")
        lines.append(f"    return ({', '.join(self.leaves.values())},)")
        return "\n".join(lines) + "\n\n\n"

    def leaf(self, node: Name | Call) -> str:
        key = node.key
        local = self.locals.get(key)
        if local is not None:
            return local
        local = f"v{len(self.locals)}"
        self.locals[key] = local
        if isinstance(node, Name):
            inline = fn.field_inline(node.path)
            if inline:
                self.leaf_value(key, inline, self.typed(node))
                return local
            read, args = fn.field_reader(node.path)
        else:
            spec = fn.FUNCTIONS[node.name]
            args = tuple(a.value for a in node.args)  # type: ignore[attr-defined]
            if spec.windows is not None:
                seconds = self.windows.setdefault(node.name, [])
                seconds.append(args[0])
                many = f"many{list(self.windows).index(node.name)}"
                self.leaf_value(key, f"{many}[{len(seconds) - 1}]", self.typed(node))
                return local
            if spec.inline:
                self.leaf_value(key, spec.inline.format(*map(repr, args)), self.typed(node))
                return local
            read = spec.call
        reader = f"_read{len(self.leaves)}"
        self.namespace[reader] = read
        self.leaf_value(key, f"{reader}({', '.join(['ctx', *map(repr, args)])})", self.typed(node))
        return local

    def leaf_value(self, key: Hashable, code: str, typed: Typed) -> None:
        """Numbers become floats here (see ``number``), once per request."""
        if typed.type in _NUMERIC:
            if typed.nullable:
                code = f"(None if (x := {code}) is None else _float(x))"
            else:
                code = f"_float({code})"
        elif typed.type == "any":
            code = f"_number({code})"
        self.leaves[key] = code

    def typed(self, node: Node) -> Typed:
        return self.types[node]

    def truth(self, node: Node) -> _Code:
        code = self.expr(node)
        typed = self.types[node]
        if typed is _BOOL or (typed.type == "bool" and not typed.nullable):
            return code
        return f"{_operand(code, _SUM)} is True", _COMPARE

    def fresh(self) -> str:
        self.walrus += 1
        return f"w{self.walrus}"

    def once(self, code: _Code) -> tuple[str, str]:
        """(first use, later uses) of a value that may be read twice, as operands."""
        text = code[0]
        if text.isidentifier() or _is_constant(code):
            return text, text
        name = self.fresh()
        return f"({name} := {text})", name

    def expr(self, node: Node) -> _Code:
        kind = type(node)
        if kind is Name:
            index = self.segment_index.get(node.path)  # type: ignore[attr-defined]
            if index is not None:
                return f"o{index}", _ATOM
            return self.leaf(node), _ATOM  # type: ignore[arg-type]
        if kind is Literal or kind is ListLit:
            return self.build(node)
        if kind is Call and node.name != "has" and node.name != "date":  # type: ignore[attr-defined]
            return self.leaf(node), _ATOM  # type: ignore[arg-type]
        key = node.key
        if key in self.hoist:
            temp = self.temps.get(key)
            if temp is None:
                code = self.build(node)
                if self.typed(node) == _BOOL:
                    code = _jumping(code)
                temp = f"t{len(self.temps)}"
                self.statements.append(f"    {temp} = {code[0]}")
                self.temps[key] = temp
            return temp, _ATOM
        return self.build(node)

    def constant(self, values: tuple[Any, ...]) -> str:
        key = tuple((type(v), v) for v in values)  # so that [1] is not [true]
        name = self.constants.get(key)
        if name is None:
            name = f"K{len(self.constants)}"
            self.constants[key] = name
            self.namespace[name] = frozenset(values)
        return name

    def build(self, node: Node) -> _Code:
        if type(node) is Binary:
            return self.binary(node)  # type: ignore[arg-type]
        if isinstance(node, Literal):
            return _value(number(node.value))
        if isinstance(node, ListLit):
            return self.constant(tuple(number(item.value) for item in node.items)), _ATOM
        if isinstance(node, Call) and node.name == "date":
            return _value(_date_value(node))
        if isinstance(node, Call) and node.name == "has":
            return self.has(node.args[0])
        if isinstance(node, Unary):
            if node.op == "not":
                return f"not {_operand(self.truth(node.operand), _NOT)}", _NOT
            inner = self.expr(node.operand)
            typed = self.typed(node.operand)
            if typed.type == "any":
                return f"_neg(_num({inner[0]}))", _ATOM
            if typed.nullable:
                return f"_neg({inner[0]})", _ATOM
            return f"-{_operand(inner, _MINUS)}", _MINUS
        raise AssertionError(node)

    def binary(self, node: Binary) -> _Code:
        op = node.op
        if op == "and" or op == "or":
            # `(a and b) and c` stays as written: `a and b and c` is another (flat) tree.
            least = _NOT if op == "and" else _AND
            left_code = _operand(self.truth(node.left), least)
            return f"{left_code} {op} {_operand(self.truth(node.right), least)}", _BINDING[op]
        types = self.types
        lt, rt = types[node.left], types[node.right]
        left, right = self.expr(node.left), self.expr(node.right)
        if op in _ARITH:
            if lt.type == "any":
                left = f"_num({left[0]})", _ATOM
            if rt.type == "any":
                right = f"_num({right[0]})", _ATOM
            nullable = lt.nullable or rt.nullable or "any" in (lt.type, rt.type)
            if op == "/" or nullable:
                return f"{_ARITH_HELPER[op]}({left[0]}, {right[0]})", _ATOM
            binding = _BINDING[op]
            return f"{_operand(left, binding)} {op} {_operand(right, binding + 1)}", binding
        if op in ("in", "not in"):
            if lt.type == "any" or rt.type == "any":
                return f"{'_in' if op == 'in' else '_not_in'}({left[0]}, {right[0]})", _ATOM
            if op == "in":
                # a list never holds a missing value
                return f"{_operand(left, _SUM)} in {_operand(right, _SUM)}", _COMPARE
            if not lt.nullable:
                return f"{_operand(left, _SUM)} not in {_operand(right, _SUM)}", _COMPARE
            first, later = self.once(left)
            return f"{first} is not None and {later} not in {_operand(right, _SUM)}", _AND
        if lt.type == "any" or rt.type == "any":
            return f"{_ANY_CMP[op]}({left[0]}, {right[0]})", _ATOM
        checks = []
        if lt.nullable:
            first, later = self.once(left)
            checks.append(f"{first} is not None")
            left = later, _ATOM
        if rt.nullable:
            first, later = self.once(right)
            checks.append(f"{first} is not None")
            right = later, _ATOM
        compare = f"{_operand(left, _SUM)} {op} {_operand(right, _SUM)}"
        if not checks:
            return compare, _COMPARE
        return " and ".join([*checks, compare]), _AND

    def has(self, arg: Node) -> _Code:
        typed = self.typed(arg)
        code = self.expr(arg)
        if typed.type == "list":
            return f"{_operand(code, _SUM)} != []", _COMPARE
        if not typed.nullable:
            return "True", _ATOM
        return f"{_operand(code, _SUM)} is not None", _COMPARE


_Code = tuple[str, int]
"""Python code and how tightly Python binds it (the precedence of its outermost operator)."""
_TERNARY, _OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _MINUS, _ATOM = range(9)
_BINDING: Final = {"or": _OR, "and": _AND, "+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT}


def _operand(code: _Code, least: int) -> str:
    """*code* as an operand where Python wants at least the precedence *least*."""
    return code[0] if code[1] >= least else f"({code[0]})"


def _value(value: Any) -> _Code:
    text = repr(value)
    return text, (_MINUS if text.startswith("-") else _ATOM)


def _jumping(code: _Code) -> _Code:
    """A condition written so that each comparison in it is followed by a jump, the
    form in which CPython 3.11 runs comparisons of two floats (or two strings) fastest."""
    text = code[0]
    if text.isidentifier() or text in ("True", "False"):
        return code
    return f"True if {_operand(code, _OR)} else False", _TERNARY


def _is_constant(code: _Code) -> bool:
    text = code[0]
    return code[1] >= _MINUS and (
        text.lstrip("-")[:1].isdigit() or text[:1] in "'\"" or text.startswith("K")
    )


def _children(node: Node) -> list[Node]:
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, Unary):
        return [node.operand]
    if isinstance(node, Binary):
        return [node.left, node.right]
    return []


def _date_value(node: Call) -> float:
    from edge.rules.lang import parse_date

    return parse_date(node.args[0].value)  # type: ignore[attr-defined]


@dataclass(slots=True)
class Program:
    """The generated evaluator for a list of outputs (segments first, in order)."""

    source: str
    evaluate: Callable[[fn.Context], tuple[bool, ...]]


def generate(outputs: Sequence[Output], segment_index: dict[str, int]) -> Program:
    """Build the one function computing every output; segments must come in dependency
    order (a segment only refers to earlier outputs)."""
    gen = _Generator(outputs, segment_index)
    source = gen.generate()
    code = compile(source, "<rules>", "exec")
    exec(code, gen.namespace)  # the source was built from a checked tree only
    return Program(source, gen.namespace["evaluate"])


# --- the reference interpreter -----------------------------------------------------------


@dataclass(slots=True)
class Explained:
    """A node of an expression with the value it had."""

    text: str
    value: Any
    children: list[Explained] = field(default_factory=list)

    def lines(self, indent: int = 0) -> list[str]:
        out = [f"{'  ' * indent}{self.text} = {show(self.value)}"]
        for child in self.children:
            out.extend(child.lines(indent + 1))
        return out


def show(value: Any) -> str:
    if value is None:
        return "missing"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


class Interpreter:
    """Evaluate checked expressions by walking the tree. Segment references evaluate
    the referenced segment (once per interpreter)."""

    def __init__(self, ctx: fn.Context, segments: dict[str, Checked]) -> None:
        self.ctx = ctx
        self.segments = segments
        self.done: dict[str, bool] = {}

    def segment(self, name: str) -> bool:
        if name not in self.done:
            self.done[name] = self.explain(self.segments[name]).value is True
        return self.done[name]

    def explain(self, checked: Checked) -> Explained:
        return self.node(checked.tree, checked.source)

    def node(self, node: Node, source: str) -> Explained:
        text = source[node.start : node.end]
        if isinstance(node, Literal):
            return Explained(text, number(node.value))
        if isinstance(node, ListLit):
            return Explained(text, [number(item.value) for item in node.items])
        if isinstance(node, Name):
            if node.path in self.segments:
                return Explained(text, self.segment(node.path))
            read, args = fn.field_reader(node.path)
            return Explained(text, number(self.ctx.value(node.path, read, args)))
        if isinstance(node, Call):
            if node.name == "date":
                return Explained(text, _date_value(node))
            if node.name == "has":
                arg = self.node(node.args[0], source)
                value = arg.value
                present = value is not None and not (isinstance(value, list) and not value)
                return Explained(text, present, [arg])
            spec = fn.FUNCTIONS[node.name]
            args = tuple(a.value for a in node.args)  # type: ignore[attr-defined]
            return Explained(text, number(self.ctx.value(render(node), spec.call, args)))
        if isinstance(node, Unary):
            inner = self.node(node.operand, source)
            if node.op == "not":
                return Explained(text, inner.value is not True, [inner])
            v = inner.value
            return Explained(text, -v if _is_number(v) else None, [inner])
        assert isinstance(node, Binary)
        left, right = self.node(node.left, source), self.node(node.right, source)
        return Explained(text, _binary(node.op, left.value, right.value), [left, right])


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _binary(op: str, a: Any, b: Any) -> Any:
    if op == "and":
        return a is True and b is True
    if op == "or":
        return a is True or b is True
    if op in _ARITH:
        if not (_is_number(a) and _is_number(b)):
            return None
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        return None if b == 0 else a / b
    if a is None or b is None:
        return False
    if op in ("in", "not in"):
        same = [x for x in b if _comparable(a, x)]
        if op == "in":
            return any(a == x for x in same)
        return len(same) == len(b) and all(a != x for x in same)
    if not _comparable(a, b):
        return False
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if isinstance(a, bool):
        return False
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _comparable(a: Any, b: Any) -> bool:
    if _is_number(a):
        return _is_number(b)
    return type(a) is type(b)

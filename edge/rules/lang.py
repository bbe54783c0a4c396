"""The rule expression language: tokenizer and parser. Pure; no I/O, no Python eval.

Grammar (lowest precedence first)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                       | "in" sum | "not" "in" sum)?
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | primary
    primary    := NUMBER | STRING | DURATION | DATE | "true" | "false"
                | "[" literal ("," literal)* ","? "]"
                | "(" expr ")" | NAME ("." NAME)* | NAME "(" args ")"

Comparisons do not chain (``1 < x < 3`` is an error: write ``x > 1 and x < 3``).
Limits keep a hostile file harmless: ``MAX_LENGTH`` characters per expression and
``MAX_DEPTH`` levels of nesting; both are errors, never a crash.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

MAX_LENGTH: Final = 4096
MAX_DEPTH: Final = 64
MAX_NUMBER: Final = 1e15

DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}

_PYTHON_WORDS: Final = frozenset(
    [
        "lambda",
        "for",
        "if",
        "else",
        "elif",
        "while",
        "def",
        "class",
        "import",
        "from",
        "return",
        "yield",
        "as",
        "with",
        "is",
        "async",
        "await",
        "global",
        "nonlocal",
        "del",
        "pass",
        "raise",
        "try",
        "except",
        "finally",
        "assert",
        "None",
        "True",
        "False",
        "print",
        "exec",
        "eval",
        "open",
    ]
)


class LangError(Exception):
    """An error at ``offset`` (characters into the expression), ``length`` wide."""

    def __init__(self, message: str, offset: int, length: int = 1, help: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.length = max(1, length)
        self.help = help


# --- syntax tree -------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Node:
    start: int
    end: int
    depth: int = field(default=1, kw_only=True)


@dataclass(eq=False, slots=True)
class Literal(Node):
    value: object
    type: str
    """number, string, bool, duration or date."""


@dataclass(eq=False, slots=True)
class ListLit(Node):
    items: list[Literal]


@dataclass(eq=False, slots=True)
class Name(Node):
    path: str
    """A field path (``cart.items``) or a segment name."""


@dataclass(eq=False, slots=True)
class Call(Node):
    name: str
    args: list[Node]
    name_end: int = 0


@dataclass(eq=False, slots=True)
class Unary(Node):
    op: str
    """``not`` or ``-``."""
    operand: Node


@dataclass(eq=False, slots=True)
class Binary(Node):
    op: str
    """and, or, ==, !=, <, <=, >, >=, in, not in, +, -, *, /."""
    left: Node
    right: Node


# --- tokens ------------------------------------------------------------------------------


Token = tuple[str, str, int, int, object]
"""(kind, text, start, end, value); kind is num, dur, date, str, name, op or end. A plain
tuple: an expression has a dozen tokens and loading a rule set makes thousands."""


_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false"})


def parse_date(text: str) -> float:
    """``2026-12-01`` or ``2026-12-01T10:00[:00]``, UTC, as unix seconds."""
    value = datetime.fromisoformat(text)
    return float(calendar.timegm(value.utctimetuple()))


def parse_duration(text: str) -> float | None:
    """``90s``, ``15m``, ``4h``, ``30d``, ``2w`` (also ``1.5h``) as seconds; None if not one."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match:
        return None
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


_TOKEN = re.compile(
    r"([ \t\r\n]*+)(?:"
    r"([A-Za-z_]\w*)"  # a name
    r"|(\*\*|==|!=|<=|>=|[<>+\-*/()\[\],.])"  # an operator
    r"|(\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2})?)?(?![\w.]))"  # a date
    r"|(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)([A-Za-z_]\w*)?"  # a number; with a unit, a duration
    r"""|("(?:\\[\\'"]|[^"\n])*+"|'(?:\\[\\'"]|[^'\n])*+')"""  # a string
    r"|(.))",  # anything else: an error
    re.ASCII | re.DOTALL,
)
"""One token and the blanks before it. Every character of an expression but trailing
blanks belongs to a match, so the tokens are read with one ``findall``."""
_HINTS: Final = {"=": "compare with `==`", "&": "write `and`", "|": "write `or`", "!": "write `not`"}
_UNESCAPE: Final = re.compile(r"\\([\\'\"])")


def tokenize(source: str) -> list[Token]:
    if len(source) > MAX_LENGTH:
        raise LangError(
            f"expression is {len(source):,} characters long; the limit is {MAX_LENGTH:,}",
            MAX_LENGTH,
            help="split it into several segments that refer to each other by name",
        )
    tokens: list[Token] = []
    append = tokens.append
    end = 0
    for blanks, name, op, date, digits, unit, string, other in _TOKEN.findall(source):
        start = end + len(blanks)
        if name:
            end = start + len(name)
            if name.startswith("_"):
                raise LangError(
                    f"`{name}`: names starting with `_` are not part of the rule language",
                    start,
                    len(name),
                )
            if name in _PYTHON_WORDS:
                raise LangError(
                    f"`{name}` is not part of the rule language",
                    start,
                    len(name),
                    help="a rule is one expression: fields, functions, segments, "
                    "and/or/not, comparisons and arithmetic",
                )
            append(("name", name, start, end, name))
        elif op:
            end = start + len(op)
            if op == "**":
                raise LangError(
                    "`**` (power) is not part of the rule language",
                    start,
                    2,
                    help="use `*` repeatedly",
                )
            append(("op", op, start, end, None))
        elif digits:
            end = start + len(digits) + len(unit)
            append(_number_token(digits, unit, start, end))
        elif string:
            end = start + len(string)
            value = string[1:-1]
            if "\\" in value:
                value = _UNESCAPE.sub(r"\1", value)
            append(("str", string, start, end, value))
        elif date:
            end = start + len(date)
            try:
                append(("date", date, start, end, parse_date(date)))
            except ValueError:
                raise LangError(f"`{date}` is not a valid date", start, end - start) from None
        else:
            if other in "\"'":
                _string_end(source, start)  # raises: the string is not closed
            raise LangError(f"unexpected character `{other}`", start, 1, help=_HINTS.get(other, ""))
    n = len(source)
    append(("end", "", n, n, None))
    return tokens


def _number_token(digits: str, unit: str, start: int, end: int) -> Token:
    number: float = float(digits) if "." in digits or "e" in digits or "E" in digits else int(digits)
    if number > MAX_NUMBER:
        raise LangError(f"number `{digits}` is too large (the limit is 10^15)", start, end - start)
    if not unit:
        return ("num", digits, start, end, number)
    if unit in DURATION_UNITS:
        return ("dur", digits + unit, start, end, number * DURATION_UNITS[unit])
    raise LangError(
        f"unknown duration unit `{unit}` in `{digits + unit}`",
        start + len(digits),
        len(unit),
        help="durations are written 90s, 15m, 4h, 30d or 2w",
    )


def _string_end(source: str, start: int) -> int:
    """One past the closing quote of the string starting at *start* (``\\\\``, ``\\'``
    and ``\\"`` are escapes); an error if it is not closed on its line."""
    quote = source[start]
    j = start + 1
    n = len(source)
    while True:
        if j >= n or source[j] == "\n":
            raise LangError("string is not closed", start, j - start, help=f"end it with {quote}")
        c = source[j]
        if c == "\\" and j + 1 < n and source[j + 1] in "\\'\"":
            j += 2
        elif c == quote:
            return j + 1
        else:
            j += 1


# --- parser ------------------------------------------------------------------------------

_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})
_LITERAL_KINDS: Final = {"num": "number", "dur": "duration", "date": "date", "str": "string"}


class _Parser:
    # Only a name token can read `and`, only an operator `(`: a token's text alone says
    # what it is, so the parser mostly looks at ``self.texts[self.pos]``.

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.texts = [t[1] for t in self.tokens]
        self.pos = 0
        self.nesting = 0

    def advance(self) -> Token:
        t = self.tokens[self.pos]
        self.pos += 1
        return t

    def expect(self, text: str, help: str = "") -> Token:
        if self.texts[self.pos] != text:
            self.fail(f"expected `{text}`", help)
        return self.advance()

    def fail(self, message: str, help: str = "") -> None:
        kind, text, start, end, _ = self.tokens[self.pos]
        if kind == "end":
            raise LangError(f"{message}, but the expression ended", start, 1, help)
        raise LangError(f"{message}, found `{text}`", start, end - start, help)

    @staticmethod
    def deep(node: Node, depth: int) -> Node:
        """*node* with *depth* levels; too deep is an error."""
        node.depth = depth
        if depth > MAX_DEPTH:
            raise LangError(
                f"expression is nested more than {MAX_DEPTH} levels deep",
                node.start,
                node.end - node.start,
                help="split it into several segments that refer to each other by name",
            )
        return node

    def binary(self, op: str, left: Node, right: Node) -> Node:
        depth = 1 + (left.depth if left.depth > right.depth else right.depth)
        return self.deep(Binary(left.start, right.end, op, left, right), depth)

    def parse(self) -> Node:
        if self.tokens[0][0] == "end":
            raise LangError(
                "the expression is empty", 0, 1, help='write a condition such as "orders >= 1"'
            )
        node = self.or_()
        kind, text = self.tokens[self.pos][:2]
        if kind != "end":
            help = ""
            if text == ".":
                help = "fields are read by name only, like `cart.items`"
            elif kind in ("name", "num", "str", "dur", "date"):
                help = "join conditions with `and` or `or`"
            self.fail("expected the end of the expression", help)
        return node

    def or_(self) -> Node:
        left = self.and_()
        while self.texts[self.pos] == "or":
            self.pos += 1
            left = self.binary("or", left, self.and_())
        return left

    def and_(self) -> Node:
        left = self.not_()
        while self.texts[self.pos] == "and":
            self.pos += 1
            left = self.binary("and", left, self.not_())
        return left

    def not_(self) -> Node:
        if self.texts[self.pos] == "not":
            start = self.advance()[2]
            self.guard(start)
            operand = self.not_()
            self.nesting -= 1
            return self.deep(Unary(start, operand.end, "not", operand), operand.depth + 1)
        return self.comparison()

    def guard(self, start: int) -> None:
        # Prefix operators and parentheses recurse; stop before Python's own limit.
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise LangError(
                f"expression is nested more than {MAX_DEPTH} levels deep",
                start,
                1,
                help="split it into several segments that refer to each other by name",
            )

    def comparison(self) -> Node:
        left = self.sum()
        text = self.texts[self.pos]
        if text in _COMPARISONS:
            self.pos += 1
            op = text
        elif text == "in":
            self.pos += 1
            op = "in"
        elif text == "not" and self.texts[self.pos + 1] == "in":
            self.pos += 2
            op = "not in"
        else:
            return left
        node = self.binary(op, left, self.sum())
        text = self.texts[self.pos]
        if text in _COMPARISONS or text == "in":
            self.fail(
                "comparisons do not chain", help="write `x > 1 and x < 3` instead of `1 < x < 3`"
            )
        return node

    def sum(self) -> Node:
        left = self.product()
        while (op := self.texts[self.pos]) == "+" or op == "-":
            self.pos += 1
            left = self.binary(op, left, self.product())
        return left

    def product(self) -> Node:
        left = self.unary()
        while (op := self.texts[self.pos]) == "*" or op == "/":
            self.pos += 1
            left = self.binary(op, left, self.unary())
        return left

    def unary(self) -> Node:
        if self.texts[self.pos] == "-":
            start = self.advance()[2]
            self.guard(start)
            operand = self.unary()
            self.nesting -= 1
            if isinstance(operand, Literal) and operand.type in ("number", "duration"):
                operand.value = -operand.value  # type: ignore[operator]
                operand.start = start
                return operand
            return self.deep(Unary(start, operand.end, "-", operand), operand.depth + 1)
        return self.primary()

    def primary(self) -> Node:
        kind, text, start, end, value = self.advance()
        if kind == "name":
            if text == "true" or text == "false":
                return Literal(start, end, text == "true", "bool")
            if text in _KEYWORDS:
                self.pos -= 1
                self.fail("expected a value")
            if self.texts[self.pos] == "(":
                return self.call(text, start, end)
            path = text
            while self.texts[self.pos] == ".":
                self.pos += 1
                part_kind, part, _, end, _ = self.tokens[self.pos]
                if part_kind != "name" or part in _KEYWORDS:
                    self.fail(
                        "expected a field name after `.`",
                        help="fields are read by name only, like `cart.items`",
                    )
                self.pos += 1
                path = f"{path}.{part}"
                if self.texts[self.pos] == "(":
                    raise LangError(
                        f"`{path}` cannot be called: only the built-in functions can",
                        start,
                        end - start,
                        help="see the list of functions in rules/README.md",
                    )
            return Name(start, end, path)
        literal = _LITERAL_KINDS.get(kind)
        if literal is not None:
            return Literal(start, end, value, literal)
        if text == "(":
            self.guard(start)
            inner = self.or_()
            self.expect(")", help="every `(` needs a matching `)`")
            self.nesting -= 1
            inner.depth += 1
            return inner
        self.pos -= 1
        if text == "[":
            return self.list_()
        self.fail("expected a value")
        raise AssertionError

    def call(self, name: str, start: int, name_end: int) -> Node:
        self.pos += 1  # (
        self.guard(start)
        args: list[Node] = []
        while self.texts[self.pos] != ")":
            args.append(self.or_())
            if len(args) > 8:
                self.fail("too many arguments")
            if self.texts[self.pos] != ",":
                break
            self.pos += 1
        close = self.expect(")", help="separate arguments with `,` and end with `)`")
        self.nesting -= 1
        node = Call(start, close[3], name, args, name_end=name_end)
        return self.deep(node, 1 + max((a.depth for a in args), default=0))

    def list_(self) -> Node:
        open_ = self.advance()
        items: list[Literal] = []
        while self.texts[self.pos] != "]":
            item = self.unary()
            if not isinstance(item, Literal):
                raise LangError(
                    "list items must be plain values (numbers, strings, durations, dates)",
                    item.start,
                    item.end - item.start,
                )
            items.append(item)
            if len(items) > 500:
                self.fail("a list may hold at most 500 values")
            if self.texts[self.pos] != ",":
                break
            self.pos += 1
        close = self.expect("]", help="separate values with `,` and end the list with `]`")
        return ListLit(open_[2], close[3], items)


def parse(source: str) -> Node:
    """Parse one expression. Raises :class:`LangError` with the offset of the problem."""
    return _Parser(source).parse()


def render(node: Node, memo: dict[int, str] | None = None) -> str:
    """Canonical text of an expression (also its structural key). With *memo* (keyed by
    node id) each node is rendered once, however often its parents are."""
    if memo is not None:
        text = memo.get(id(node))
        if text is None:
            text = memo[id(node)] = _render(node, memo)
        return text
    return _render(node, None)


def _render(node: Node, memo: dict[int, str] | None) -> str:
    if isinstance(node, Literal):
        if node.type == "string":
            return '"' + str(node.value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if node.type == "bool":
            return "true" if node.value else "false"
        if node.type == "duration":
            return _duration_text(node.value)  # type: ignore[arg-type]
        if node.type == "date":
            stamp = datetime.fromtimestamp(float(node.value), tz=UTC)  # type: ignore[arg-type]
            return stamp.strftime("%Y-%m-%dT%H:%M:%S").removesuffix("T00:00:00")
        return repr(node.value)
    if isinstance(node, ListLit):
        return "[" + ", ".join(render(i, memo) for i in node.items) + "]"
    if isinstance(node, Name):
        return node.path
    if isinstance(node, Call):
        return f"{node.name}(" + ", ".join(render(a, memo) for a in node.args) + ")"
    if isinstance(node, Unary):
        inner = render(node.operand, memo)
        return f"not ({inner})" if node.op == "not" else f"-({inner})"
    assert isinstance(node, Binary)
    return f"({render(node.left, memo)} {node.op} {render(node.right, memo)})"


def _duration_text(seconds: float) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

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


@dataclass(slots=True)
class Token:
    kind: str
    """num, dur, date, str, name, op, end."""
    text: str
    start: int
    end: int
    value: object = None


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2})?)?(?![\w.])")
_NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)([A-Za-z_]\w*)?")
_NAME = re.compile(r"[A-Za-z_]\w*")
_OPS: Final = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",", ".")
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


def tokenize(source: str) -> list[Token]:
    if len(source) > MAX_LENGTH:
        raise LangError(
            f"expression is {len(source):,} characters long; the limit is {MAX_LENGTH:,}",
            MAX_LENGTH,
            help="split it into several segments that refer to each other by name",
        )
    tokens: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch.isdigit():
            date = _DATE.match(source, i)
            if date:
                try:
                    value: object = parse_date(date.group())
                except ValueError:
                    raise LangError(
                        f"`{date.group()}` is not a valid date", i, date.end() - i
                    ) from None
                tokens.append(Token("date", date.group(), i, date.end(), value))
                i = date.end()
                continue
            num = _NUMBER.match(source, i)
            assert num is not None
            digits, unit = num.group(1), num.group(2)
            end = num.end()
            number = float(digits)
            if number > MAX_NUMBER:
                raise LangError(f"number `{digits}` is too large (the limit is 10^15)", i, end - i)
            if not any(c in digits for c in ".eE"):
                number = int(digits)
            if unit is None:
                tokens.append(Token("num", num.group(), i, end, number))
            elif unit in DURATION_UNITS:
                tokens.append(Token("dur", num.group(), i, end, number * DURATION_UNITS[unit]))
            else:
                raise LangError(
                    f"unknown duration unit `{unit}` in `{num.group()}`",
                    i + len(digits),
                    len(unit),
                    help="durations are written 90s, 15m, 4h, 30d or 2w",
                )
            i = end
            continue
        if ch in "\"'":
            j = i + 1
            chars: list[str] = []
            while True:
                if j >= n or source[j] == "\n":
                    raise LangError("string is not closed", i, j - i, help=f"end it with {ch}")
                c = source[j]
                if c == "\\" and j + 1 < n and source[j + 1] in "\\'\"":
                    chars.append(source[j + 1])
                    j += 2
                    continue
                if c == ch:
                    break
                chars.append(c)
                j += 1
            tokens.append(Token("str", source[i : j + 1], i, j + 1, "".join(chars)))
            i = j + 1
            continue
        if ch.isalpha() or ch == "_":
            name = _NAME.match(source, i)
            assert name is not None
            word = name.group()
            if word.startswith("_"):
                raise LangError(
                    f"`{word}`: names starting with `_` are not part of the rule language",
                    i,
                    len(word),
                )
            if word in _PYTHON_WORDS:
                raise LangError(
                    f"`{word}` is not part of the rule language",
                    i,
                    len(word),
                    help="a rule is one expression: fields, functions, segments, "
                    "and/or/not, comparisons and arithmetic",
                )
            tokens.append(Token("name", word, i, name.end(), word))
            i = name.end()
            continue
        if source.startswith("**", i):
            raise LangError(
                "`**` (power) is not part of the rule language", i, 2, help="use `*` repeatedly"
            )
        for op in _OPS:
            if source.startswith(op, i):
                tokens.append(Token("op", op, i, i + len(op)))
                i += len(op)
                break
        else:
            hint = {
                "=": "compare with `==`",
                "&": "write `and`",
                "|": "write `or`",
                "!": "write `not`",
                "%": "",
                ":": "",
                "{": "",
                "@": "",
            }.get(ch, "")
            raise LangError(f"unexpected character `{ch}`", i, 1, help=hint)
    tokens.append(Token("end", "", n, n))
    return tokens


# --- parser ------------------------------------------------------------------------------

_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0
        self.nesting = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def at_word(self, word: str) -> bool:
        return self.at("name", word)

    def advance(self) -> Token:
        t = self.tokens[self.pos]
        self.pos += 1
        return t

    def expect(self, text: str, help: str = "") -> Token:
        if not self.at("op", text):
            self.fail(f"expected `{text}`", help)
        return self.advance()

    def fail(self, message: str, help: str = "") -> None:
        t = self.tok
        if t.kind == "end":
            raise LangError(f"{message}, but the expression ended", t.start, 1, help)
        raise LangError(f"{message}, found `{t.text}`", t.start, t.end - t.start, help)

    @staticmethod
    def deep(node: Node, *children: Node) -> Node:
        node.depth = 1 + max((c.depth for c in children), default=0)
        if node.depth > MAX_DEPTH:
            raise LangError(
                f"expression is nested more than {MAX_DEPTH} levels deep",
                node.start,
                node.end - node.start,
                help="split it into several segments that refer to each other by name",
            )
        return node

    def parse(self) -> Node:
        if self.at("end"):
            raise LangError(
                "the expression is empty", 0, 1, help='write a condition such as "orders >= 1"'
            )
        node = self.or_()
        if not self.at("end"):
            t = self.tok
            help = ""
            if t.kind == "op" and t.text == ".":
                help = "fields are read by name only, like `cart.items`"
            elif t.kind in ("name", "num", "str", "dur", "date"):
                help = "join conditions with `and` or `or`"
            self.fail("expected the end of the expression", help)
        return node

    def or_(self) -> Node:
        left = self.and_()
        while self.at_word("or"):
            self.advance()
            right = self.and_()
            left = self.deep(Binary(left.start, right.end, "or", left, right), left, right)
        return left

    def and_(self) -> Node:
        left = self.not_()
        while self.at_word("and"):
            self.advance()
            right = self.not_()
            left = self.deep(Binary(left.start, right.end, "and", left, right), left, right)
        return left

    def not_(self) -> Node:
        if self.at_word("not"):
            start = self.advance().start
            self.guard(start)
            operand = self.not_()
            self.nesting -= 1
            return self.deep(Unary(start, operand.end, "not", operand), operand)
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
        op = None
        if self.at("op") and self.tok.text in _COMPARISONS:
            op = self.advance().text
        elif self.at_word("in"):
            self.advance()
            op = "in"
        elif self.at_word("not") and self.tokens[self.pos + 1].text == "in":
            self.advance()
            self.advance()
            op = "not in"
        if op is None:
            return left
        right = self.sum()
        node = self.deep(Binary(left.start, right.end, op, left, right), left, right)
        if (self.at("op") and self.tok.text in _COMPARISONS) or self.at_word("in"):
            self.fail(
                "comparisons do not chain", help="write `x > 1 and x < 3` instead of `1 < x < 3`"
            )
        return node

    def sum(self) -> Node:
        left = self.product()
        while self.at("op") and self.tok.text in ("+", "-"):
            op = self.advance().text
            right = self.product()
            left = self.deep(Binary(left.start, right.end, op, left, right), left, right)
        return left

    def product(self) -> Node:
        left = self.unary()
        while self.at("op") and self.tok.text in ("*", "/"):
            op = self.advance().text
            right = self.unary()
            left = self.deep(Binary(left.start, right.end, op, left, right), left, right)
        return left

    def unary(self) -> Node:
        if self.at("op", "-"):
            start = self.advance().start
            self.guard(start)
            operand = self.unary()
            self.nesting -= 1
            if isinstance(operand, Literal) and operand.type in ("number", "duration"):
                operand.value = -operand.value  # type: ignore[operator]
                operand.start = start
                return operand
            return self.deep(Unary(start, operand.end, "-", operand), operand)
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind in ("num", "dur", "date", "str"):
            self.advance()
            kind = {"num": "number", "dur": "duration", "date": "date", "str": "string"}[t.kind]
            return Literal(t.start, t.end, t.value, kind)
        if t.kind == "op" and t.text == "(":
            self.advance()
            self.guard(t.start)
            inner = self.or_()
            self.expect(")", help="every `(` needs a matching `)`")
            self.nesting -= 1
            inner.depth += 1
            return inner
        if t.kind == "op" and t.text == "[":
            return self.list_()
        if t.kind == "name":
            if t.text in ("true", "false"):
                self.advance()
                return Literal(t.start, t.end, t.text == "true", "bool")
            if t.text in _KEYWORDS:
                self.fail("expected a value")
            self.advance()
            if self.at("op", "("):
                return self.call(t)
            path, end = t.text, t.end
            while self.at("op", "."):
                self.advance()
                part = self.tok
                if part.kind != "name" or part.text in _KEYWORDS:
                    self.fail(
                        "expected a field name after `.`",
                        help="fields are read by name only, like `cart.items`",
                    )
                self.advance()
                path, end = f"{path}.{part.text}", part.end
                if self.at("op", "("):
                    raise LangError(
                        f"`{path}` cannot be called: only the built-in functions can",
                        t.start,
                        end - t.start,
                        help="see the list of functions in rules/README.md",
                    )
            return Name(t.start, end, path)
        self.fail("expected a value")
        raise AssertionError

    def call(self, name: Token) -> Node:
        self.advance()  # (
        self.guard(name.start)
        args: list[Node] = []
        while not self.at("op", ")"):
            args.append(self.or_())
            if len(args) > 8:
                self.fail("too many arguments")
            if not self.at("op", ","):
                break
            self.advance()
        close = self.expect(")", help="separate arguments with `,` and end with `)`")
        self.nesting -= 1
        node = Call(name.start, close.end, name.text, args, name_end=name.end)
        return self.deep(node, *args)

    def list_(self) -> Node:
        open_ = self.advance()
        items: list[Literal] = []
        while not self.at("op", "]"):
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
            if not self.at("op", ","):
                break
            self.advance()
        close = self.expect("]", help="separate values with `,` and end the list with `]`")
        return ListLit(open_.start, close.end, items)


def parse(source: str) -> Node:
    """Parse one expression. Raises :class:`LangError` with the offset of the problem."""
    return _Parser(source).parse()


def render(node: Node) -> str:
    """Canonical text of an expression (also its structural key)."""
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
        return "[" + ", ".join(render(i) for i in node.items) + "]"
    if isinstance(node, Name):
        return node.path
    if isinstance(node, Call):
        return f"{node.name}(" + ", ".join(render(a) for a in node.args) + ")"
    if isinstance(node, Unary):
        return f"not ({render(node.operand)})" if node.op == "not" else f"-({render(node.operand)})"
    assert isinstance(node, Binary)
    return f"({render(node.left)} {node.op} {render(node.right)})"


def _duration_text(seconds: float) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

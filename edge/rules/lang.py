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
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from edge.caches import Memo

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
    key: Hashable = field(init=False, repr=False)
    """Equal for expressions of the same structure however they are written (``30d`` is
    ``720h``; parentheses do not count): what the compiler shares a value by. Built by
    the parser from its operands' keys, so finding every shared sub-expression of a
    rule set costs one dictionary look-up per node."""


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


_NAME: Final = r"[A-Za-z_]\w*"
_OPERATOR: Final = r"\*\*|==|!=|<=|>=|[<>+\-*/()\[\],.]"
_DATE: Final = r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2})?)?(?![\w.])"
_DIGITS: Final = r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"  # a number; with a unit (a name), a duration
_STRING: Final = r""""(?:\\[\\'"]|[^"\n])*+"|'(?:\\[\\'"]|[^'\n])*+'"""
_TOKEN = re.compile(
    rf"([ \t\r\n]*+)(?:({_NAME})|({_OPERATOR})|({_DATE})|({_DIGITS})({_NAME})?|({_STRING})|(.))",
    re.ASCII | re.DOTALL,
)
"""One token and the blanks before it; anything else is one character, an error. Every
character of an expression but trailing blanks belongs to a match, so the tokens
follow each other with no gap."""
_PIECE = re.compile(
    rf"[ \t\r\n]*+(?:{_NAME}|{_OPERATOR}|{_DATE}|{_DIGITS}(?:{_NAME})?|{_STRING}|.)",
    re.ASCII | re.DOTALL,
)
"""``_TOKEN`` without its groups: the pieces are found twice as quickly."""
_HINTS: Final = {
    "=": "compare with `==`",
    "&": "write `and`",
    "|": "write `or`",
    "!": "write `not`",
}
_UNESCAPE: Final = re.compile(r"\\([\\'\"])")
_PIECES_READ: Memo[str, tuple[str, str, int, object]] = Memo(20_000)
"""A piece of text (blanks, then a token) -> (kind, text, blanks, value): most pieces
recur (``orders``, ``>=``, ``30d``) within a rule set and across reloads, so each is
read once, here (bounded, for a process that loads many rule sets)."""


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
    read = _PIECES_READ
    for piece in _PIECE.findall(source):
        known = read.get(piece)
        if known is None:
            token = _token(source, end, piece)  # raises if the piece is not a token
            known = read.put(piece, (token[0], token[1], token[2] - end, token[4]))
        kind, text, blanks, value = known
        start = end + blanks
        end += len(piece)
        append((kind, text, start, end, value))
    n = len(source)
    append(("end", "", n, n, None))
    return tokens


def _token(source: str, at: int, piece: str) -> Token:
    """The token of *piece* (blanks, then a token) found at offset *at* of *source*."""
    blanks, name, op, date, digits, unit, string, other = _TOKEN.match(piece).groups("")  # type: ignore[union-attr]
    start = at + len(blanks)
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
        return ("name", name, start, end, name)
    if op:
        end = start + len(op)
        if op == "**":
            raise LangError(
                "`**` (power) is not part of the rule language",
                start,
                2,
                help="use `*` repeatedly",
            )
        return ("op", op, start, end, None)
    if digits:
        end = start + len(digits) + len(unit)
        return _number_token(digits, unit, start, end)
    if string:
        end = start + len(string)
        value = string[1:-1]
        if "\\" in value:
            value = _UNESCAPE.sub(r"\1", value)
        return ("str", string, start, end, value)
    if date:
        end = start + len(date)
        try:
            return ("date", date, start, end, parse_date(date))
        except ValueError:
            raise LangError(f"`{date}` is not a valid date", start, end - start) from None
    if other in "\"'":
        _string_end(source, start)  # raises: the string is not closed
    raise LangError(f"unexpected character `{other}`", start, 1, help=_HINTS.get(other, ""))


def _number_token(digits: str, unit: str, start: int, end: int) -> Token:
    number: float = (
        float(digits) if "." in digits or "e" in digits or "E" in digits else int(digits)
    )
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

_OR, _AND, _NOT, _COMPARISON, _SUM, _PRODUCT, _UNARY = range(1, 8)
_BINDING: Final = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(["==", "!=", "<", "<=", ">", ">=", "in", "not"], _COMPARISON),
    "+": _SUM,
    "-": _SUM,
    "*": _PRODUCT,
    "/": _PRODUCT,
}
"""How tightly each binary operator binds (``not`` only when ``in`` follows)."""
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
        node = Binary(left.start, right.end, op, left, right)
        node.key = (op, left.key, right.key)  # as an attribute: quicker than as an argument
        return self.deep(node, depth)

    def parse(self) -> Node:
        if self.tokens[0][0] == "end":
            raise LangError(
                "the expression is empty", 0, 1, help='write a condition such as "orders >= 1"'
            )
        node = self.expression()
        kind, text = self.tokens[self.pos][:2]
        if kind != "end":
            help = ""
            if text == ".":
                help = "fields are read by name only, like `cart.items`"
            elif kind in ("name", "num", "str", "dur", "date"):
                help = "join conditions with `and` or `or`"
            self.fail("expected the end of the expression", help)
        return node

    def expression(self, lowest: int = 1) -> Node:
        """An expression of the operators that bind at least as tightly as *lowest*
        (``_BINDING``), read by precedence climbing: one call per operand, where the
        grammar's rules would take one per level. The nodes are made in the same
        order, so the same error comes first."""
        texts = self.texts
        if lowest <= _NOT and texts[self.pos] == "not":
            start = self.advance()[2]
            self.guard(start)
            operand = self.expression(_NOT)
            self.nesting -= 1
            node = Unary(start, operand.end, "not", operand)
            node.key = ("not", operand.key)
            left = self.deep(node, operand.depth + 1)
            made = _NOT
        else:
            left = self.unary() if texts[self.pos] == "-" else self.primary()
            made = _UNARY
        while True:
            op = texts[self.pos]
            binding = _BINDING.get(op)
            if binding is None or binding < lowest:
                return left
            if binding == _COMPARISON:
                if op == "not" and texts[self.pos + 1] != "in":
                    return left
                if made <= _COMPARISON:
                    # The grammar reads one comparison, after arithmetic only.
                    if made == _COMPARISON and op != "not":
                        self.fail(
                            "comparisons do not chain",
                            help="write `x > 1 and x < 3` instead of `1 < x < 3`",
                        )
                    return left
                if op == "not":
                    self.pos += 2
                    op = "not in"
                else:
                    self.pos += 1
                left = self.binary(op, left, self.expression(_SUM))
            else:
                self.pos += 1
                if binding == _PRODUCT:
                    right = self.unary() if texts[self.pos] == "-" else self.primary()
                else:
                    right = self.expression(binding + 1)
                left = self.binary(op, left, right)
            made = binding

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

    def unary(self) -> Node:
        if self.texts[self.pos] == "-":
            start = self.advance()[2]
            self.guard(start)
            operand = self.unary()
            self.nesting -= 1
            if isinstance(operand, Literal) and operand.type in ("number", "duration"):
                operand.value = -operand.value  # type: ignore[operator]
                operand.start = start
                operand.key = (operand.type, operand.value)
                return operand
            node = Unary(start, operand.end, "-", operand)
            node.key = ("-", operand.key)
            return self.deep(node, operand.depth + 1)
        return self.primary()

    def primary(self) -> Node:
        kind, text, start, end, value = self.tokens[self.pos]
        self.pos += 1
        if kind == "name":
            if text == "true" or text == "false":
                node = Literal(start, end, text == "true", "bool")
                node.key = ("bool", node.value)
                return node
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
            node = Name(start, end, path)
            node.key = path
            return node
        literal = _LITERAL_KINDS.get(kind)
        if literal is not None:
            node = Literal(start, end, value, literal)
            node.key = (literal, value)
            return node
        if text == "(":
            self.guard(start)
            inner = self.expression()
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
            args.append(self.expression())
            if len(args) > 8:
                self.fail("too many arguments")
            if self.texts[self.pos] != ",":
                break
            self.pos += 1
        close = self.expect(")", help="separate arguments with `,` and end with `)`")
        self.nesting -= 1
        node = Call(start, close[3], name, args, name_end=name_end)
        node.key = ("(", name, *[a.key for a in args])
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
        node = ListLit(open_[2], close[3], items)
        node.key = ("[", *[i.key for i in items])
        return node


def parse(source: str) -> Node:
    """Parse one expression. Raises :class:`LangError` with the offset of the problem."""
    return _Parser(source).parse()


def render(node: Node) -> str:
    """Canonical text of an expression (the interpreter keeps a leaf's value by it)."""
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
        inner = render(node.operand)
        return f"not ({inner})" if node.op == "not" else f"-({inner})"
    assert isinstance(node, Binary)
    return f"({render(node.left)} {node.op} {render(node.right)})"


def _duration_text(seconds: float) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.15g}s"  # exact for whole seconds: distinct durations, distinct keys

"""CSS selectors for the rewriter: parsing, and matching against start tags.

Supported: type (``div``), universal (``*``), ``#id``, ``.class``, attribute tests
``[a]``, ``[a=v]``, ``[a~=v]``, ``[a|=v]``, ``[a^=v]``, ``[a$=v]``, ``[a*=v]`` (value
quoted or unquoted, optional `` i`` flag for ASCII case-insensitive values),
compounds of those, the descendant (space) and child (``>``) combinators, and
lists (``a, b``).  Tag and attribute names are ASCII case-insensitive; attribute
values (and so ids and classes) are compared case-sensitively, as in standards-
mode HTML.  Values are compared as UTF-8 bytes against attribute values whose
character references have been decoded.

Anything else (pseudo-classes, ``+``/``~`` combinators, namespaces) raises
:class:`SelectorError` naming the position and the problem.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from edge.caches import LRU, Memo

__all__ = [
    "AttrTest",
    "ComplexSelector",
    "Compound",
    "SelectorError",
    "SelectorList",
    "parse_selector",
]

_ASCII_WS = b" \t\n\f\r"


class SelectorError(ValueError):
    """A selector could not be parsed; ``position`` is the 0-based column."""

    def __init__(self, selector: str, position: int, problem: str) -> None:
        self.selector = selector
        self.position = position
        self.problem = problem
        pointer = " " * position + "^"
        super().__init__(
            f"invalid selector {selector!r} at column {position + 1}: {problem}\n"
            f"  {selector}\n  {pointer}"
        )


@dataclass(frozen=True, slots=True)
class AttrTest:
    """``[name op value]``; ``op`` is ``""`` for presence."""

    name: bytes
    op: str = ""
    value: bytes = b""
    ignore_case: bool = False

    def matches(self, attrs: Mapping[bytes, bytes]) -> bool:
        actual = attrs.get(self.name)
        if actual is None:
            return False
        op = self.op
        if not op:
            return True
        want = self.value
        if self.ignore_case:
            actual = actual.lower()
            want = want.lower()
        if op == "=":
            return actual == want
        if op == "~=":
            return bool(want) and not any(c in want for c in _ASCII_WS) and want in actual.split()
        if op == "|=":
            return actual == want or actual.startswith(want + b"-")
        if not want:  # ^= $= *= with an empty value never match (CSS)
            return False
        if op == "^=":
            return actual.startswith(want)
        if op == "$=":
            return actual.endswith(want)
        return want in actual  # *=


@dataclass(frozen=True, slots=True)
class Compound:
    """A compound selector: optional type plus id, class and attribute tests."""

    tag: bytes | None = None  # lowercased; None for "*" or no type
    ids: tuple[bytes, ...] = ()
    classes: tuple[bytes, ...] = ()
    attrs: tuple[AttrTest, ...] = ()

    def matches(self, name: bytes, attrs: Mapping[bytes, bytes]) -> bool:
        """Whether an element named ``name`` (lowercase) with ``attrs`` matches."""
        if self.tag is not None and self.tag != name:
            return False
        if self.ids and any(attrs.get(b"id") != i for i in self.ids):
            return False
        if self.classes:
            cls = attrs.get(b"class")
            if cls is None:
                return False
            have = cls.split()
            if any(c not in have for c in self.classes):
                return False
        return all(t.matches(attrs) for t in self.attrs)

    def prefilter(self) -> tuple[bytes | None, bytes | None]:
        """(type, attribute name) one of which every matching start tag must have.

        Used to skip start tags cheaply; ``(None, None)`` means any tag may match.
        """
        if self.tag is not None:
            return self.tag, None
        if self.ids:
            return None, b"id"
        if self.attrs:
            return None, self.attrs[0].name
        if self.classes:
            return None, b"class"
        return None, None


#: What a plan remembers of start tags: (name, attribute area) -> (compound mask,
#: attributes).
MaskMemo = Memo[tuple[bytes, bytes], tuple[int, Mapping[bytes, bytes]]]
#: Compound masks kept per set of compounds (shared by the plans of one page's
#: selectors, whatever their contents): a start tag's mask is a function of its
#: name and attribute area alone, and checking a page's five compounds costs ~180k
#: instructions a page rewritten from scratch (a lookup, ~1k a tag).
_MASKS: LRU[tuple[Compound, ...], MaskMemo] = LRU(64)
_MASKS_PER_SET = 2048


def masks_for(compounds: tuple[Compound, ...]) -> MaskMemo:
    """The start tags' masks remembered for this set of compounds."""
    masks = _MASKS.get(compounds)
    if masks is None:
        masks = Memo(_MASKS_PER_SET)
        _MASKS[compounds] = masks
    return masks


def compound_mask(
    compounds: tuple[Compound, ...], name: bytes, attrs: Mapping[bytes, bytes]
) -> int:
    """The *compounds* an element named *name* (lowercase) with *attrs* matches, as a
    bit mask by index."""
    mask = 0
    for ci, comp in enumerate(compounds):
        if comp.matches(name, attrs):
            mask |= 1 << ci
    return mask


@dataclass(frozen=True, slots=True)
class ComplexSelector:
    """Compounds joined by combinators, left to right: ``combinators[i]`` joins
    ``compounds[i]`` and ``compounds[i + 1]`` and is ``" "`` or ``">"``."""

    compounds: tuple[Compound, ...]
    combinators: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SelectorList:
    """A parsed selector list (``a, b``): matches when any member matches."""

    text: str
    selectors: tuple[ComplexSelector, ...]


_IDENT = re.compile(
    r"-?(?:[A-Za-z_]|[^\x00-\x7f]|\\[0-9A-Fa-f]{1,6}[ \t\n\r\f]?|\\[^\n\r\f0-9A-Fa-f])"
    r"(?:[A-Za-z0-9_-]|[^\x00-\x7f]|\\[0-9A-Fa-f]{1,6}[ \t\n\r\f]?|\\[^\n\r\f0-9A-Fa-f])*"
    r"|--(?:[A-Za-z0-9_-]|[^\x00-\x7f]|\\[0-9A-Fa-f]{1,6}[ \t\n\r\f]?|\\[^\n\r\f0-9A-Fa-f])*"
)
_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{1,6})[ \t\n\r\f]?|\\(.)", re.S)
_WS = " \t\n\r\f"
_BARE_VALUE = re.compile(r"(?:[^\s\]\[\"'\\]|\\.)+")


def _unescape(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            code = int(m.group(1), 16)
            if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return "\ufffd"
            return chr(code)
        return m.group(2)

    return _ESCAPE.sub(repl, text) if "\\" in text else text


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, problem: str, pos: int | None = None) -> SelectorError:
        return SelectorError(self.text, self.pos if pos is None else pos, problem)

    def skip_ws(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1
        return self.pos > start

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def ident(self, what: str) -> str:
        m = _IDENT.match(self.text, self.pos)
        if m is None:
            got = self.peek()
            raise self.fail(f"expected {what}, found {repr(got) if got else 'end of selector'}")
        self.pos = m.end()
        return _unescape(m.group())

    def parse_list(self) -> tuple[ComplexSelector, ...]:
        selectors = []
        while True:
            self.skip_ws()
            if self.peek() in ("", ","):
                raise self.fail("empty selector in list" if self.text.strip() else "empty selector")
            selectors.append(self.parse_complex())
            if self.peek() == ",":
                self.pos += 1
                continue
            if self.peek():
                raise self.fail(f"unexpected {self.peek()!r}")
            return tuple(selectors)

    def parse_complex(self) -> ComplexSelector:
        compounds = [self.parse_compound()]
        combinators: list[str] = []
        while True:
            had_ws = self.skip_ws()
            c = self.peek()
            if c in ("", ","):
                return ComplexSelector(tuple(compounds), tuple(combinators))
            if c == ">":
                self.pos += 1
                self.skip_ws()
                combinators.append(">")
            elif c in "+~":
                raise self.fail(f"the {c!r} sibling combinator is not supported")
            elif had_ws:
                combinators.append(" ")
            else:
                raise self.fail(f"unexpected {c!r}")
            if self.peek() in ("", ",", ">"):
                raise self.fail("a combinator must be followed by a selector")
            compounds.append(self.parse_compound())

    def parse_compound(self) -> Compound:
        start = self.pos
        tag: bytes | None = None
        ids: list[bytes] = []
        classes: list[bytes] = []
        attrs: list[AttrTest] = []
        c = self.peek()
        if c == "*":
            self.pos += 1
        elif c and (c.isalpha() or c in "_-\\" or ord(c) > 127):
            tag = self.ident("a type name").lower().encode()
        if self.peek() == "|":
            raise self.fail("namespace prefixes are not supported")
        while True:
            c = self.peek()
            if c == "#":
                self.pos += 1
                ids.append(self.ident("an id after '#'").encode())
            elif c == ".":
                self.pos += 1
                classes.append(self.ident("a class name after '.'").encode())
            elif c == "[":
                attrs.append(self.parse_attr())
            elif c == ":":
                raise self.fail("pseudo-classes and pseudo-elements are not supported")
            else:
                break
        if self.pos == start:
            got = self.peek()
            raise self.fail(f"expected a selector, found {repr(got) if got else 'end of selector'}")
        return Compound(tag, tuple(ids), tuple(classes), tuple(attrs))

    def parse_attr(self) -> AttrTest:
        open_pos = self.pos
        self.pos += 1
        self.skip_ws()
        name = self.ident("an attribute name after '['").lower().encode()
        if self.peek() == "|" and self.text[self.pos : self.pos + 2] != "|=":
            raise self.fail("namespace prefixes are not supported")
        self.skip_ws()
        c = self.peek()
        if c == "]":
            self.pos += 1
            return AttrTest(name)
        op = ""
        for candidate in ("~=", "|=", "^=", "$=", "*=", "="):
            if self.text.startswith(candidate, self.pos):
                op = candidate
                break
        if not op:
            if not c:
                raise self.fail("unclosed '['", open_pos)
            raise self.fail(f"expected an operator (=, ~=, |=, ^=, $=, *=) or ']', found {c!r}")
        self.pos += len(op)
        self.skip_ws()
        c = self.peek()
        if c in ("'", '"'):
            end = self.pos + 1
            while True:
                if end >= len(self.text):
                    raise self.fail("unclosed string", self.pos)
                ch = self.text[end]
                if ch == "\\":
                    end += 2
                    continue
                if ch == c:
                    break
                if ch in "\n\r\f":
                    raise self.fail("newline in string", end)
                end += 1
            value = _unescape(self.text[self.pos + 1 : end])
            self.pos = end + 1
        elif not c:
            raise self.fail("expected a value after the operator, found end of selector")
        else:
            # Unquoted values may be any run without spaces, quotes or brackets
            # (more lenient than CSS, which wants an identifier: merchants
            # write [data-product-id=123]).
            m = _BARE_VALUE.match(self.text, self.pos)
            if m is None:
                raise self.fail(f"expected a value after the operator, found {c!r}")
            self.pos = m.end()
            value = _unescape(m.group())
        self.skip_ws()
        ignore_case = False
        c = self.peek()
        if c in ("i", "I", "s", "S"):
            ignore_case = c in "iI"
            self.pos += 1
            self.skip_ws()
        if self.peek() != "]":
            if not self.peek():
                raise self.fail("unclosed '['", open_pos)
            raise self.fail(f"expected ']', found {self.peek()!r}")
        self.pos += 1
        return AttrTest(name, op, value.encode("utf-8"), ignore_case)


def parse_selector(text: str) -> SelectorList:
    """Parse a selector list; raises :class:`SelectorError` if it is invalid."""
    if not isinstance(text, str):
        raise TypeError(f"selector must be str, not {type(text).__name__}")
    return _parsed(text)


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> SelectorList:
    """A slot's selector is asked for on every plan (the result is immutable)."""
    return SelectorList(text, _Parser(text).parse_list())

"""The streaming HTML rewriter.

An :class:`Edit` names elements by CSS selector and says what to do with them,
in lol-html's words: ``before``, ``after``, ``prepend``, ``append``,
``set_inner_content``, ``replace``, ``remove``, plus ``reorder`` (sort the child
elements by key).  A :class:`Plan` compiles a list of edits once; each response
gets a cheap :class:`Rewriter` from it, is fed with :meth:`Rewriter.write` and
closed with :meth:`Rewriter.end`.

How it stays fast: outside elements it has to watch, it does not tokenize the
tags in between.  From the selectors it knows the start tags worth a look (the
tag names and attribute names the compounds require, plus ``<svg>``, ``<math>``,
``<template>``, ``<plaintext>``); it finds the next one with one search over a
lowercased copy of the input, then proves the find is real markup by looking
back: not inside a comment or a raw-text element (``<script>``, ``<style>``,
``<textarea>``, ``<title>``, ...; their ends are searched for), and not inside a
tag (no tag opening or quote since the last ``>``, and no ``="``/``='`` value
still open).  When that proof fails, an exact pattern tokenizes up to the next
interesting token instead, so the result never depends on the shortcut.
Inside a watched element (one with an edit that needs its end, or an ancestor
named in a descendant/child selector) it keeps an element stack with HTML5's
implied end tags, until that element closes; the children of an element being
reordered are moved whole when their markup is simple (see
``_is_simple_markup``), in runs of like items at once; items that each end
with their own plain end tag are cut apart with one ``bytes.split`` and checked
once per shape (see ``Rewriter._split_items``).  An inline ``<svg>``
or ``<math>`` (product art, icons) whose content is simple foreign markup
(every tag properly nested, nothing that switches back to HTML, no comment
or CDATA, nothing a selector may match) is skipped whole, in and out of
list items; its end may be waited for (up to 256 KB).  ``Plan(fast=False)``
tokenizes every tag: the reference the fast path is tested against.

Byte identity: every byte outside an edited region is copied from the input,
so with no matches the output equals the input.

Streaming: output is returned as soon as no later edit can affect it.  Only
the content of an element being replaced, removed, given new inner content or
reordered is held (and an unfinished token at a chunk boundary).

Fail safe: when the rewriter is not confident (an end tag it cannot place
inside an element whose content it changes, an edited element still open at
the end, nesting deeper than ``max_depth``, more than ``max_held_bytes`` held)
it *bails*: with ``on_error="passthrough"`` (the default) the held input is
returned untouched and the rest of the document passes through unchanged, so
the page is the original page from the first edit in progress on; ``error``
says why.  With ``on_error="raise"`` a :class:`RewriteError` is raised instead
and the caller falls back to the original bytes.

Known approximations of HTML5 tree building (they only matter inside watched
elements): the adoption agency for misnested formatting tags (``<b><p></b>``)
and table foster parenting are not modelled; ``<noscript>`` content is parsed
as markup (scripting off, as lexbor does); an element's end is found from what
is open inside it, so an end tag that may belong to an unseen ancestor inside
an element being replaced makes the rewriter bail rather than guess.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape as _escape_text
from itertools import accumulate
from typing import Literal, NamedTuple, Protocol, TypeVar

import msgspec

from . import scanner as sc
from .selectors import Compound, parse_selector

__all__ = [
    "ACTIONS",
    "Edit",
    "Plan",
    "RewriteError",
    "Rewriter",
    "rewrite",
]

Action = Literal[
    "before", "after", "prepend", "append", "set_inner_content", "replace", "remove", "reorder"
]
ACTIONS: tuple[str, ...] = (
    "before",
    "after",
    "prepend",
    "append",
    "set_inner_content",
    "replace",
    "remove",
    "reorder",
)
_CONTENT_ACTIONS = frozenset(("set_inner_content", "replace", "remove", "reorder"))

_T = TypeVar("_T")
KeyFunc = Callable[[dict[str, str]], "str | None"]
OrderFunc = Callable[[list["str | None"]], Sequence[str]]


class RewriteError(Exception):
    """The rewriter could not rewrite this document with confidence."""


class Edit(msgspec.Struct, frozen=True):
    """One edit: elements matching ``selector`` get ``action``.

    ``content`` is HTML (``html=True``, inserted as is) or text (``html=False``,
    escaped), as ``bytes`` (UTF-8 expected) or ``str``.

    For ``reorder``: the matched element's child elements are items.  An item's
    key is its ``key_attr`` attribute value, or ``key(attrs)`` given the item's
    start-tag attributes (``str`` names, decoded values); ``None`` means no key.
    ``order`` is the wanted key order, or a callable given the item keys in
    document order that returns it.  Items whose key is in ``order`` come first,
    in that order (items sharing a key keep their relative order); the others
    (no key, or a key not in ``order``) follow in their original relative order.
    Text, whitespace and comments between items stay where they are, so an
    unchanged order gives byte-identical output.

    An element gets at most one content-changing action (``set_inner_content``,
    ``replace``, ``remove``, ``reorder``): the first matching edit in the list
    wins.  ``before``/``after`` always apply; ``prepend``/``append`` apply unless
    the element is replaced or removed (with ``set_inner_content`` they frame
    the new content).  Void elements (``<img>``) have no content, so only
    ``before``, ``after``, ``replace`` and ``remove`` apply to them.  Elements
    inside an element whose content is discarded are not matched; elements
    inside ``<template>`` are never matched (they are not in the document tree).

    A frozen ``msgspec.Struct`` rather than a dataclass: a page's decision makes
    several, and a frozen dataclass's ``__init__`` cost ~10x as much.
    """

    selector: str
    action: Action
    content: bytes | str = b""
    html: bool = True
    key_attr: str | None = None
    key: KeyFunc | None = None
    order: Sequence[str] | OrderFunc | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(
                f"unknown action {self.action!r}; expected one of {', '.join(ACTIONS)}"
            )
        if self.action == "reorder":
            if self.order is None:
                raise ValueError("a reorder edit needs an order (a list of keys or a callable)")
            if (self.key_attr is None) == (self.key is None):
                raise ValueError("a reorder edit needs exactly one of key_attr and key")

    def content_bytes(self) -> bytes:
        """The content to insert, as HTML bytes."""
        content = self.content
        if self.html:
            return content.encode("utf-8") if isinstance(content, str) else bytes(content)
        text = content.decode("utf-8", "surrogateescape") if isinstance(content, bytes) else content
        return _escape_text(text, quote=False).encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class _CompiledEdit:
    index: int
    edit: Edit
    action: str
    content: bytes
    # Each selector as (compound indexes left to right, combinators between them).
    selectors: list[tuple[tuple[int, ...], tuple[str, ...]]]
    key_attr: bytes | None


_SPECIAL_START = (
    b"script style xmp iframe noembed noframes textarea title plaintext template svg math".split()
)


class Plan:
    """Edits compiled once: selectors parsed, prefilters and the scan patterns built.

    A plan is immutable and shared; :meth:`rewriter` makes the per-document state.
    ``fast=False`` turns the fast path off (every tag is tokenized): same
    output, slower; the reference in tests.
    """

    def __init__(
        self,
        edits: Iterable[Edit],
        *,
        max_held_bytes: int = 8 << 20,
        max_depth: int = 512,
        on_error: Literal["passthrough", "raise"] = "passthrough",
        fast: bool = True,
    ) -> None:
        self.edits: tuple[Edit, ...] = tuple(edits)
        self.fast = fast
        self.max_held_bytes = max_held_bytes
        self.max_depth = max_depth
        self.on_error = on_error
        compounds: list[Compound] = []
        index: dict[Compound, int] = {}

        def cidx(c: Compound) -> int:
            if c not in index:
                index[c] = len(compounds)
                compounds.append(c)
            return index[c]

        compiled: list[_CompiledEdit] = []
        ancestor_mask = 0
        for i, edit in enumerate(self.edits):
            sels: list[tuple[tuple[int, ...], tuple[str, ...]]] = []
            for cs in parse_selector(edit.selector).selectors:
                ids = tuple(cidx(c) for c in cs.compounds)
                for a in ids[:-1]:
                    ancestor_mask |= 1 << a
                sels.append((ids, cs.combinators))
            compiled.append(
                _CompiledEdit(
                    i,
                    edit,
                    edit.action,
                    edit.content_bytes() if edit.action != "reorder" else b"",
                    sels,
                    edit.key_attr.lower().encode() if edit.key_attr else None,
                )
            )
        self.compounds: tuple[Compound, ...] = tuple(compounds)
        self.compiled: tuple[_CompiledEdit, ...] = tuple(compiled)
        self.ancestor_mask = ancestor_mask
        types: set[bytes] = set()
        attr_names: set[bytes] = set()
        self.match_all = False
        for c in compounds:
            t, a = c.prefilter()
            if t is not None:
                types.add(t)
            elif a is not None:
                attr_names.add(a)
            else:
                self.match_all = True
        self.types = frozenset(types)
        self.attr_names = frozenset(attr_names)
        scan = _scan_patterns(self.types, self.attr_names, self.match_all)
        self.attr_probe = scan.attr_probe
        self.skip = scan.skip
        self.candidates = scan.candidates
        self.raw_starts = scan.raw_starts
        self.raw_probe = scan.raw_probe
        self.structural = scan.structural
        self.structural_tags = scan.structural_tags
        self.candidate_span = scan.candidate_span
        self.attr_literals = scan.attr_literals
        self.shape_literals = scan.shape_literals
        self.shape_digit_tags = scan.shape_digit_tags
        self.item_shapes = scan.item_shapes

    def rewriter(self) -> Rewriter:
        """A fresh rewriter for one document."""
        return Rewriter(self)

    def rewrite(self, html: bytes) -> bytes:
        """Rewrite a whole document; the original bytes if the rewriter bails."""
        return rewrite(html, self)


class _ScanPatterns(NamedTuple):
    attr_probe: re.Pattern[bytes] | None
    skip: re.Pattern[bytes]
    candidates: re.Pattern[bytes]
    raw_starts: tuple[tuple[bytes, bytes], ...]
    """Raw-text elements that are no candidates, as ``("<name", name)`` (lowercase)."""
    raw_probe: re.Pattern[bytes] | None
    """Whether any of them opens in a stretch: one pass instead of one per name."""
    structural: re.Pattern[bytes]
    """Tags the reorder fast path follows inside an item (on lowercased text)."""
    structural_tags: re.Pattern[bytes]
    candidate_span: int
    """How far back a candidate cut by the end of the input may start."""
    attr_literals: tuple[bytes, ...]
    shape_literals: tuple[bytes, ...]
    """For list items checked by shape (see Rewriter._split_items): the attribute
    names and the starts of tags with a digit in their name, as they read with every
    digit turned into "0"."""
    shape_digit_tags: tuple[bytes, ...]
    item_shapes: dict[tuple[object, ...], dict[bytes, tuple[int, int, int, int] | None]]
    """Verdicts per item shape (see Rewriter._split_items), keyed by what else they
    depend on; shared by the plans these patterns serve."""


@functools.lru_cache(maxsize=256)
def _scan_patterns(
    types: frozenset[bytes], attr_names: frozenset[bytes], match_all: bool
) -> _ScanPatterns:
    """What a plan scans with, which depends only on the element types and attribute
    names its selectors need: building it (the tries over every structural tag
    name) cost ~2.5 ms, more than rewriting a page, and a plan is made for every
    new snippet content (a visitor's cart, a countdown), so it is made once per
    kind of selector set."""
    attr_probe: re.Pattern[bytes] | None = (
        re.compile(
            rb"[\t\n\f\r /\"'](?i:"
            + b"|".join(re.escape(a) for a in sorted(attr_names))
            + rb")[\t\n\f\r /=>]"
        )
        if attr_names
        else None
    )
    skip = _skip_pattern(set(types), set(attr_names), match_all)
    candidates = _candidate_pattern(set(types), match_all)
    raw_starts: tuple[tuple[bytes, bytes], ...] = (
        () if match_all else tuple((b"<" + n, n) for n in sorted(sc.TEXT_ELEMENTS - types))
    )
    raw_probe: re.Pattern[bytes] | None = (
        re.compile(rb"<" + _trie({lit[1:]: b"" for lit, _n in raw_starts})) if raw_starts else None
    )
    names = _trie({n: rb"(?=[\t\n\f\r />])" for n in _STRUCTURAL | types})
    structural = re.compile(rb"<(/?)(" + names + rb")")
    structural_tags = re.compile(rb"<(/?(?:" + names + rb"))")
    candidate_span = 1 << 62 if match_all else 2 + max(len(n) for n in (*_SPECIAL_START, *types))
    attr_literals: tuple[bytes, ...] = tuple(sorted(attr_names))
    shape_literals = tuple(lit.translate(_DIGITS_TO_ZERO) for lit in attr_literals)
    shape_digit_tags = tuple(
        sorted(
            prefix + n[: i + 1].translate(_DIGITS_TO_ZERO)
            for n in _STRUCTURAL | types
            for i in [next((j for j, c in enumerate(n) if c in _DIGITS), -1)]
            if i >= 0
            for prefix in (b"<", b"</")
        )
    )
    return _ScanPatterns(
        attr_probe,
        skip,
        candidates,
        raw_starts,
        raw_probe,
        structural,
        structural_tags,
        candidate_span,
        attr_literals,
        shape_literals,
        shape_digit_tags,
        {},
    )


def _skip_pattern(types: set[bytes], attr_names: set[bytes], match_all: bool) -> re.Pattern[bytes]:
    """The pattern that consumes everything the fast path may ignore.

    It stops at: a start tag that is special for the tokenizer or may match a
    selector, an unterminated comment, or an unfinished token.
    """
    names = sorted(set(_SPECIAL_START) | types, key=len, reverse=True)
    not_name = rb"(?!(?i:" + b"|".join(re.escape(n) for n in names) + rb")[\t\n\f\r />])"
    if attr_names:
        not_attr = (
            rb"(?!(?i:"
            + b"|".join(re.escape(a) for a in sorted(attr_names, key=len, reverse=True))
            + rb")[\t\n\f\r />=])"
        )
    else:
        not_attr = b""
    start_tag = (
        rb"<"
        + not_name
        + sc.TAG_NAME_SRC
        + rb"(?:[\t\n\f\r /]++|"
        + not_attr
        + sc.ATTR_SRC
        + rb")*+>"
    )
    end_tag = rb"</" + sc.TAG_NAME_SRC + rb"(?:[\t\n\f\r /]++|" + sc.ATTR_SRC + rb")*+>"
    alts = [
        rb"[^<]++",
        rb"<(?=[^A-Za-z/!?])",
        sc.COMMENT_SRC,
        rb"(?:<!(?!--)|<\?|</(?![A-Za-z]))[^>]*+>",
        end_tag,
    ]
    if not match_all:
        alts.append(start_tag)
    return re.compile(rb"(?:" + b"|".join(alts) + rb")*+")


def _candidate_pattern(types: set[bytes], match_all: bool) -> re.Pattern[bytes]:
    """Start tags the fast path hands to the tokenizer, searched in lowercased
    text: those a selector may match, and those after which the tokenizer or
    the tree builder works differently (foreign content, templates).  Comments
    and raw-text elements are no candidates: :meth:`Rewriter._settle` looks
    back for them.  A chunk boundary cannot hide a candidate: a name only
    counts once the byte after it is there.
    """
    if match_all:
        return re.compile(rb"<[a-z][^\t\n\f\r />]*+(?=[\t\n\f\r />])")
    names = (set(_SPECIAL_START) - sc.TEXT_ELEMENTS) | types
    # Alternatives factored by leading byte: the engine rejects most "<x" after
    # one comparison.
    return re.compile(rb"<" + _trie({n: rb"(?=[\t\n\f\r />])" for n in names}))


def _trie(tails: dict[bytes, bytes]) -> bytes:
    groups: dict[int, dict[bytes, bytes]] = {}
    ends = b""
    for name, tail in tails.items():
        if name:
            groups.setdefault(name[0], {})[name[1:]] = tail
        else:
            ends = tail
    alts = [re.escape(bytes([b])) + _trie(sub) for b, sub in sorted(groups.items())]
    if ends:
        alts.append(ends)
    return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"


#: In the stretch between the last ``>`` and a candidate: what could mean the
#: candidate sits inside a tag.
_UNSURE_TAIL = re.compile(rb"[\"']|<[A-Za-z/!?]")
_COMMENT_TOKEN = re.compile(sc.COMMENT_SRC)
_WS_BYTES = frozenset(b"\t\n\f\r ")

_BAD_COMMENT = re.compile(rb"<!--(?!-?>)[^>]*+(?<!--)(?<!--!)>")
_NOT_SKELETON = bytes(b for b in range(256) if b not in b"<>=\"'")
_SKELETON_QUOTED_ANGLE = re.compile(rb"=(?:\"[^\"<>]*+[<>]|'[^'<>]*+[<>])")


def _has_any(low: bytearray, literals: tuple[bytes, ...], a: int, b: int) -> bool:
    return any(low.find(lit, a, b) >= 0 for lit in literals)


def _is_simple_markup(buf: bytes | bytearray, a: int, b: int) -> bool:
    """Whether ``buf[a:b]`` is simple markup, which the reorder fast path moves
    without the element stack: every tag ends at the first ">" after its "<"
    and every "<" + letter is a tag, as the HTML tokenizer reads it.

    Checked with byte-level operations: "<" and ">" alternate (so no tag,
    comment or bogus comment holds "<", and text holds no ">"); a comment ends
    at its first ">"; and no "=" then a quote opens a value holding "<" or ">"
    (tested on the bytes ``<>="'`` alone: dropping the rest can only find more).
    """
    region = bytes(buf[a:b])
    skeleton = region.translate(None, _NOT_SKELETON)
    angles = skeleton.translate(None, b"=\"'")
    if angles.count(b"<>") * 2 != len(angles):
        return False
    if b"<!--" in region and _BAD_COMMENT.search(region) is not None:
        return False
    return _SKELETON_QUOTED_ANGLE.search(skeleton) is None


_DIGITS = frozenset(b"0123456789")
_ITEM_DELIMS = frozenset(b"\t\n\f\r />")
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_BETWEEN_ITEMS = re.compile(rb"(?:[^<]++|<(?=[^A-Za-z/!?])|" + sc.COMMENT_SRC + rb")*+")
#: Elements the fast path leaves to the exact one: they change the tokenizer's
#: state, are inert or foreign, or build tables, selects and the page skeleton.
_NOT_FAST = (
    sc.TEXT_ELEMENTS
    | sc.SCOPE_BOUNDARY
    | frozenset(
        b"template svg math plaintext html head body frameset frame table caption colgroup col "
        b"tbody thead tfoot tr td th select option optgroup".split()
    )
)
#: The open elements a start tag may close implicitly (see ``_close_for_start``).
_MAY_CLOSE: dict[bytes, frozenset[bytes]] = {}
for _n in sc.CLOSES_P:
    _MAY_CLOSE[_n] = frozenset(
        {b"p"}
        | ({b"li"} if _n == b"li" else set())
        | ({b"dd", b"dt"} if _n in (b"dd", b"dt") else set())
        | (sc.HEADINGS if _n in sc.HEADINGS else set())
    )
for _n in (b"a", b"button", b"nobr"):
    _MAY_CLOSE[_n] = frozenset({_n})
_EMPTY: frozenset[bytes] = frozenset()
#: Elements whose start or end tag can close another one (or must not be moved
#: by the fast path at all); tags of other elements cannot reach past a special
#: ancestor, so the fast path need not follow them.
_STRUCTURAL = sc.SCOPED_END | frozenset(_MAY_CLOSE) | _NOT_FAST | sc.SCOPE_BOUNDARY
#: Elements the fast path moves as list items: special (so stray end tags inside
#: stop at them) and closed only by their own end tag or a structural one.
_ITEM_NAMES = (sc.SPECIAL & (sc.SCOPED_END | frozenset(_MAY_CLOSE))) - _NOT_FAST - sc.VOID
_SIMPLE_END: dict[bytes, re.Pattern[bytes]] = {}


_UNKNOWN = object()
_STRUCTURE_MEMO: dict[object, tuple[bytes, ...] | None] = {}


def _follow_structure(
    name: bytes,
    open_names: frozenset[bytes],
    inner: tuple[bytes, ...],
    seq: tuple[tuple[bytes, bytes], ...],
    types: frozenset[bytes],
) -> tuple[bytes, ...] | None:
    """The structural elements open inside item ``name`` after the tags
    ``seq`` ((slash, name) pairs), or None if one of them is not simple: it
    must not be followed fast, or may close an element it did not open."""
    stack = list(inner)
    for slash, nm in seq:
        if nm in _NOT_FAST or nm in types:
            return None
        if slash:
            if not stack or stack[-1] != nm:
                return None
            stack.pop()
            continue
        closes = _MAY_CLOSE.get(nm)
        if closes is not None and (
            closes & open_names or name in closes or any(x in closes for x in stack)
        ):
            return None
        if nm not in sc.VOID:
            stack.append(nm)
    return tuple(stack)


_ITEMS: dict[bytes, tuple[re.Pattern[bytes], re.Pattern[bytes]]] = {}


def _item_patterns(name: bytes) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """In simple lowercased markup: a separator then an item's start tag (group
    2), and a junction between items: end tag, separator (group 1), start tag
    (group 2)."""
    pats = _ITEMS.get(name)
    if pats is None:
        n = re.escape(name)
        sep = rb"((?:[^<]++|<!--[^<>]*-->|<(?![a-z/!?]))*+)"
        start = rb"(<" + n + rb"(?=[\t\n\f\r />])[^>]*+>)"
        pats = (
            re.compile(sep + start),
            re.compile(rb"</" + n + rb"[\t\n\f\r ]*+>" + sep + start),
        )
        _ITEMS[name] = pats
    return pats


def _simple_end_pattern(name: bytes) -> re.Pattern[bytes]:
    pat = _SIMPLE_END.get(name)
    if pat is None:
        pat = re.compile(rb"</(?i:" + re.escape(name) + rb")[\t\n\f\r ]*+>")
        _SIMPLE_END[name] = pat
    return pat


#: Every tag inside foreign content, in lowercased text, read as the tokenizer
#: reads it: (``/`` for an end tag, name, ``/`` for the self-closing flag).
#: A slash that ends an unquoted value belongs to the value, as in the tokenizer.
_FOREIGN_TAG = re.compile(
    rb"<(/?)([a-z][^\t\n\f\r />]*+)(?:[\t\n\f\r ]++|/(?!>)|" + sc.ATTR_SRC + rb")*+(/?)>"
)
#: Where an ``<svg>`` or ``<math>`` starts (lowercased text).
_FOREIGN_START = re.compile(rb"<(svg|math)(?=[\t\n\f\r />])")
_FOREIGN_ENDS = {
    name: (
        re.compile(rb"<" + name + rb"(?=[\t\n\f\r />])"),
        re.compile(rb"</" + name + rb"[\t\n\f\r />]"),
    )
    for name in (b"svg", b"math")
}
#: Where the tree builder leaves foreign content for HTML: these elements'
#: content is HTML (``annotation-xml`` may be), so they must hold no tags.
_INTEGRATION_POINTS = {
    b"svg": sc.SVG_HTML_POINTS,
    b"math": sc.MATH_HTML_POINTS | {b"annotation-xml"},
}
#: Start tags that end foreign content (``<font>`` does with some attributes).
_FOREIGN_BREAKOUT = sc.BREAKOUT | {b"font"}
_FOREIGN_MEMO: dict[object, int | None] = {}
#: At most this many verdicts of foreign elements up to this many bytes (~16 MB).
_FOREIGN_MEMO_SIZE, _FOREIGN_MEMO_BYTES = 2048, 8 << 10
#: How far ahead of an ``<svg>`` its end may be waited for (then: tag by tag).
_FOREIGN_WAIT = 256 << 10
_NOT_SIMPLE, _WAIT = -1, -2


def _foreign_depth(
    root: bytes, tags: tuple[tuple[bytes, bytes, bytes], ...], types: frozenset[bytes]
) -> int | None:
    """How deep the elements inside foreign element ``root`` nest (``root``
    counted), given the tags inside it; None if they are not simple: a tag that
    breaks out to HTML, a tag inside an integration point, an end tag that is
    not the current element's, something a selector may match, or an element
    left open."""
    points = _INTEGRATION_POINTS[root]
    stack = [root]
    deepest = 1
    for slash, name, self_closing in tags:
        top = stack[-1]
        if len(stack) > 1 and top in points and not (slash and name == top):
            return None
        if slash:
            if len(stack) == 1 or name != top:
                return None
            stack.pop()
            continue
        if (
            name in _FOREIGN_BREAKOUT
            or name in types
            or (name in _INTEGRATION_POINTS and name != root)
        ):
            return None
        if not self_closing:
            stack.append(name)
            deepest = max(deepest, len(stack))
    return deepest if len(stack) == 1 else None


_NONE = 1 << 62


class _Recorder(Protocol):
    """What :mod:`edge.rewrite.replay` hooks into a rewriter to keep its output."""

    def take(self, out: list[bytes], marks: list[tuple[int, int, _Sink, int]]) -> bytes:
        """The output in *out* joined (and both lists emptied), noted down."""

    def spoil(self) -> None:
        """This document's output cannot be replayed."""


class _Sink:
    """Where output goes: the response, a reorder's held parts, or nowhere."""

    __slots__ = ("discard", "hold_from", "item_start", "items", "parts")

    def __init__(self, parts: list[bytes], discard: bool = False, hold_from: int = 0) -> None:
        self.parts = parts
        self.discard = discard
        self.hold_from = hold_from
        self.items: list[tuple[int, int, str | None]] = []
        self.item_start = 0


class _Act:
    """Work pending at the end of an open element."""

    __slots__ = ("after", "append", "edit", "item_key", "item_of", "kind", "sink")

    def __init__(self) -> None:
        self.after: list[bytes] = []
        self.append: list[bytes] = []
        self.kind = ""  # "", "drop" (replace/remove), "inner", "reorder"
        self.edit: _CompiledEdit | None = None
        self.sink: _Sink | None = None
        self.item_of: _Sink | None = None  # the reorder sink this element is an item of
        self.item_key: str | None = None


# Stack entries are tuples: (name, namespace, compound mask, act or None).
_HTML, _SVG, _MATH = 0, 1, 2
_DATA, _TEXT, _COMMENT, _CDATA, _PLAINTEXT = 0, 1, 2, 3, 4
_TAG_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/!?")
_LI_STOP = sc.SPECIAL - {b"address", b"div", b"p"}
_NAMES: dict[bytes, bytes] = {}


class Rewriter:
    """Rewrites one document fed in chunks; see the module docstring."""

    def __init__(self, plan: Plan | Iterable[Edit]) -> None:
        if not isinstance(plan, Plan):
            plan = Plan(plan)
        self.plan = plan
        self.error: str | None = None
        self.counts: list[int] = [0] * len(plan.edits)
        self._buf = bytearray()
        # The same bytes lowercased (ASCII): where the fast path searches.
        self._low = bytearray()
        self._fast = plan.fast
        n_attrs = len(plan.attr_literals)
        # Per attribute-name literal: its next occurrence (-1: none up to _attr_seen).
        self._attr_next = [-1] * n_attrs
        self._attr_seen = [0] * n_attrs
        # The next candidate found: (position, tag name or None for a comment);
        # position -1 if none up to _cand_seen.
        self._cand = -1  # the next candidate, or -1 if none up to _cand_seen
        self._cand_seen = 0
        self._attr_min = _NONE
        self._attr_upto = 0
        # Bytes from the current position a list item needs before the fast
        # path looks at it again (so a trickle of tiny chunks stays linear).
        self._items_need = 0
        # The buffer length an <svg> or <math> waiting for its end needs to be
        # looked at again (so a trickle of tiny chunks stays linear).
        self._foreign_need = 0
        self._room = 0
        # The list's first end tag (-1: not known), whether the markup up to it
        # is simple, and whether a run of items was tried there.
        self._list_end = -1
        self._list_act: _Act | None = None
        self._list_simple = False
        self._bulk_tried = False
        self._simple_upto = -1
        self._pos = 0
        self._emitted = 0
        self._out: list[bytes] = []
        self._sink = _Sink(self._out)
        self._sinks: list[_Sink] = [self._sink]
        self._stack: list[tuple[bytes, int, int, _Act | None]] = []
        self._state = _DATA
        self._raw_name = b""
        self._raw_start = 0
        self._resume = 0
        self._inert = 0
        self._discarding = 0
        self._passthrough = False
        self._ended = False
        # Set by :mod:`edge.rewrite.replay` to keep this document's output as a
        # template; ``_marks`` are the reorders resolved into the output so far:
        # (first part, end part, the held sink, edit index).
        self._record: _Recorder | None = None
        self._marks: list[tuple[int, int, _Sink, int]] = []

    # -- public -------------------------------------------------------------

    @property
    def matched(self) -> list[Edit]:
        """The edits applied at least once so far, in edit-list order."""
        return [e for e, n in zip(self.plan.edits, self.counts, strict=True) if n]

    def write(self, chunk: bytes) -> bytes:
        """Feed the next chunk; returns the output that is ready."""
        if self._ended:
            raise RuntimeError("write() after end()")
        if self._passthrough:
            return bytes(chunk)
        self._compact()
        self._buf += chunk
        if self._fast:
            self._low += (
                chunk.lower() if isinstance(chunk, bytes | bytearray) else bytes(chunk).lower()
            )
        return self._step(False)

    def end(self) -> bytes:
        """Finish the document; returns the rest of the output."""
        if self._ended:
            raise RuntimeError("end() called twice")
        self._ended = True
        if self._passthrough:
            return b""
        return self._step(True)

    # -- driving ------------------------------------------------------------

    def _step(self, final: bool) -> bytes:
        try:
            self._run(final)
            if final:
                self._finish()
            else:
                held = len(self._buf) - self._keep_from()
                if held > self.plan.max_held_bytes:
                    raise RewriteError(f"more than {self.plan.max_held_bytes} bytes held")
        except RewriteError as exc:
            if self.plan.on_error == "raise":
                raise
            return self._bail(str(exc))
        if self._record is not None:
            return self._record.take(self._out, self._marks)
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _bail(self, reason: str) -> bytes:
        self.error = reason
        self._passthrough = True
        if self._record is not None:
            self._record.spoil()
            self.stop_recording()
        hold = self._sinks[1].hold_from if len(self._sinks) > 1 else self._emitted
        self._out.append(self._buf[hold:])
        out = b"".join(self._out)
        self._out.clear()
        self._buf = bytearray()
        self._low = bytearray()
        self._stack.clear()
        return out

    def stop_recording(self) -> None:
        """Keep no template of this document from here on (see :mod:`.replay`)."""
        self._record = None
        self._marks.clear()

    def _keep_from(self) -> int:
        keep = min(self._emitted, self._pos)
        if len(self._sinks) > 1:
            keep = min(keep, self._sinks[1].hold_from)
        if self._state == _TEXT:
            keep = min(keep, self._raw_start)
        return keep

    def _compact(self) -> None:
        keep = self._keep_from()
        if keep < 4096 or keep * 2 < len(self._buf):
            return
        del self._buf[:keep]
        if self._fast:
            del self._low[:keep]
            self._attr_next = [p - keep if p >= 0 else -1 for p in self._attr_next]
            self._attr_seen = [max(0, p - keep) for p in self._attr_seen]
            self._cand = -1
            self._cand_seen = 0
            self._attr_min = _NONE
            self._attr_upto = 0
            self._list_end -= keep
        self._pos -= keep
        self._foreign_need -= keep
        self._emitted -= keep
        self._raw_start -= keep
        self._resume -= keep
        for sink in self._sinks:
            sink.hold_from -= keep

    def _finish(self) -> None:
        if self._stack:
            for _name, _ns, _mask, act in self._stack:
                if act is not None and act.sink is not None:
                    raise RewriteError(
                        f"<{_name.decode('latin-1')}> being rewritten is still open at the end"
                    )
            n = len(self._buf)
            self._pop_to(0, n, n)
        self._flush(len(self._buf))

    # -- emission -----------------------------------------------------------

    def _flush(self, upto: int) -> None:
        if upto > self._emitted:
            sink = self._sink
            if not sink.discard:
                sink.parts.append(bytes(self._buf[self._emitted : upto]))
            self._emitted = upto

    def _emit(self, parts: list[bytes]) -> None:
        if not self._sink.discard:
            self._sink.parts.extend(parts)

    def _push_sink(self, sink: _Sink) -> None:
        sink.hold_from = self._emitted
        self._sinks.append(sink)
        self._sink = sink
        if sink.discard:
            self._discarding += 1

    def _pop_sink(self) -> _Sink:
        sink = self._sinks.pop()
        self._sink = self._sinks[-1]
        if sink.discard:
            self._discarding -= 1
        return sink

    # -- the scan loop ------------------------------------------------------

    def _run(self, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        pos = self._pos
        skip = self.plan.skip.match
        token = sc.TOKEN.match
        stack = self._stack
        while True:
            if self._state != _DATA:
                pos = self._text(pos, final)
                if self._state != _DATA:
                    break
                continue
            if not stack:
                pos = self._jump(pos, final) if self._fast else skip(buf, pos).end()
                if pos >= n or buf[pos] != 0x3C:  # "<"
                    break
            else:
                top = stack[-1][3]
                if top is not None and top.kind == "reorder" and self._fast:
                    pos = self._fast_items(pos, final)
                    if pos < 0:  # an item is not all there yet
                        pos = -pos - 1
                        break
                pos = buf.find(b"<", pos)
                if pos < 0:
                    pos = n
                    break
            m = token(buf, pos)
            if m is None:
                if pos + 1 < n and buf[pos + 1] not in _TAG_START:
                    pos += 1
                    continue
                if buf.startswith(b"<!--", pos):
                    self._state = _COMMENT
                    self._raw_start = pos
                    self._resume = pos + 2
                    continue
                if stack and stack[-1][1] != _HTML and buf.startswith(b"<![CDATA[", pos):
                    self._state = _CDATA
                    self._resume = pos + 9
                    self._raw_start = pos
                    continue
                if final:
                    pos = n  # EOF inside a tag: the rest is emitted as is
                break
            kind = m.lastindex
            if kind == 2:
                after = self._start_tag(m.group(1), m.group(2), pos, m.end(), final)
                if after < 0:  # a foreign element's end is not here yet
                    break
                pos = after
            elif kind == 3:
                if stack:
                    self._end_tag(m.group(3), pos, m.end())
                pos = m.end()
            elif (
                kind == 5 and stack and stack[-1][1] != _HTML and buf.startswith(b"<![CDATA[", pos)
            ):
                self._state = _CDATA
                self._resume = pos + 9
                self._raw_start = pos
            else:
                pos = m.end()
        self._pos = pos
        # Everything before the next unread token is final: hand it on.
        safe = pos
        if self._state == _COMMENT or self._state == _PLAINTEXT:
            safe = n
        elif self._state in (_TEXT, _CDATA):
            safe = max(pos, min(self._resume, n))
        self._flush(safe)

    # -- the fast path: outside watched elements ----------------------------

    def _jump(self, pos: int, final: bool) -> int:
        """From data-state ``pos`` with no element watched, the next token that
        needs a look, without tokenizing the tags in between.

        Candidates (a start tag a selector may match or that changes how what
        follows is read) are found in C and settled by :meth:`_settle`; when
        that cannot prove where the candidate stands, the exact skip pattern
        tokenizes up to it.  Returns a data-state position: a ``<`` to hand to
        the tokenizer, or where scanning must wait for more input (everything
        before it is final).
        """
        buf = self._buf
        low = self._low
        n = len(buf)
        plan = self.plan
        attrs = plan.attr_literals
        while True:
            c = self._cand
            if c < pos:
                if c >= 0 or self._cand_seen < n:
                    start = pos if c >= 0 else max(pos, self._cand_seen - plan.candidate_span)
                    m = plan.candidates.search(low, start)
                    self._cand_seen = n
                    self._cand = c = m.start() if m is not None else -1
                if c < 0:
                    c = n
            if attrs:
                a = self._attr_min
                if a < pos or (a == _NONE and self._attr_upto < n):
                    a = self._next_attr(pos)
                if a < c:
                    t = low.rfind(b"<", pos, a)
                    if t < 0:  # in text: no tag starts between pos and it
                        pos = a + 1
                        continue
                    c = t
            if c >= n:
                if final:
                    return n
                c = buf.rfind(b">", pos, n) + 1
                if c <= 0:
                    return pos
            v = self._settle(pos, c)
            return v if v >= 0 else plan.skip.match(buf, pos).end()

    def _settle(self, p: int, c: int) -> int:
        """Given data-state ``p`` and no candidate in ``[p, c)``: ``c`` if it is
        in the data state too; else the start of the comment or raw-text
        element ``c`` may be inside (settled the same way); -1 if unsure."""
        if c == p:
            return c
        low = self._low
        k = low.rfind(b"<!--", p, c)
        if k >= 0:
            # The last comment opened before c closes before c, so do all before it.
            cm = _COMMENT_TOKEN.match(low, k)
            if cm is None or cm.end() > c:
                return self._settle(p, k)
        probe = self.plan.raw_probe
        raw_starts = (
            () if probe is None or probe.search(low, p, c) is None else self.plan.raw_starts
        )
        for lit, name in raw_starts:
            k = low.rfind(lit, p, c)
            while k >= 0 and low[k + len(lit)] not in _WS_BYTES and low[k + len(lit)] not in b"/>":
                k = low.rfind(lit, p, k)
            if k < 0:
                continue
            end = sc.raw_end_pattern(name).search(low, k + len(lit))
            if end is None or end.start() >= c:
                return self._settle(p, k)
            if name == b"script":
                # "<!--" in script data can make a later "</script>" not end it.
                first = low.find(lit, p, c)
                if low.find(b"<!--", first, c) >= 0:
                    return self._settle(p, first)
        return c if self._in_data(p, c) else -1

    def _next_attr(self, pos: int) -> int:
        """The first occurrence at or after ``pos`` of an attribute name a
        selector tests (``_NONE`` if none yet); cached per name."""
        low = self._low
        n = len(low)
        best = _NONE
        nexts = self._attr_next
        seen = self._attr_seen
        for i, lit in enumerate(self.plan.attr_literals):
            at = nexts[i]
            if at < pos:
                if at < 0 and seen[i] >= n:
                    continue
                at = low.find(lit, max(pos, seen[i] - len(lit) + 1) if at < 0 else pos)
                nexts[i] = at
                seen[i] = n
                if at < 0:
                    continue
            if at < best:
                best = at
        self._attr_min = best
        self._attr_upto = n
        return best

    def _fast_items(self, pos: int, final: bool) -> int:
        """Move the items of the list being reordered (the top of the stack)
        into its held output without the element stack, while they are
        simple: the item's own end tag present, its content simple markup
        (see :func:`_is_simple_markup`) in which nothing can match a selector, open or
        close an element implicitly, or change the tokenizer's state.

        Returns the position where the exact path takes over (an item that is
        not simple, or the end tag of the list), or ``-pos - 1`` to wait for
        more input.  What goes into the held output is exactly what the exact
        path puts there, so the two may alternate item by item.
        """
        buf = self._buf
        n = len(buf)
        if n - pos < self._items_need and not final:
            return -pos - 1
        self._items_need = 0
        stack = self._stack
        if len(stack) + 1 >= self.plan.max_depth or any(e[1] != _HTML for e in stack):
            return pos
        plan = self.plan
        types = plan.types
        act = stack[-1][3]
        assert act is not None and act.sink is not None
        sink = act.sink
        parts = sink.parts
        open_names = frozenset(e[0] for e in stack)
        self._room = plan.max_depth - len(stack) - 1
        # Up to the list's first end tag, move the items that split cleanly at
        # their end tags, then check the rest is simple markup in one go (once
        # per list: this runs again after every item the exact path took).
        if self._list_end < pos or self._list_act is not act:
            self._list_act = act
            self._list_end = end = self._end_tag_at(stack[-1][0], pos)
            if end >= 0:
                pos = self._split_items(pos, end, open_names)
                self._list_simple = _is_simple_markup(buf, pos, end)
                self._bulk_tried = False
        self._simple_upto = self._list_end if self._list_end >= pos and self._list_simple else -1
        lits = plan.attr_literals
        low = self._low
        while True:
            q = _BETWEEN_ITEMS.match(buf, pos).end()
            if q >= n:
                return q if final else -q - 1
            tm = sc.START_TAG.match(buf, q)
            if tm is None or plan.match_all:
                return q
            raw = tm.group(1)
            name = _NAMES.get(raw) or raw.lower()
            a = tm.end()
            if (
                name not in _ITEM_NAMES
                or name in types
                or _MAY_CLOSE.get(name, _EMPTY) & open_names
                or (lits and _has_any(low, lits, q, a))
            ):
                return q
            if q < self._simple_upto and not self._bulk_tried:
                self._bulk_tried = True  # once per list: what it leaves goes item by item
                after = self._bulk_items(pos, name, open_names)
                if after > pos:
                    pos = after
                    continue
            end = self._simple_item_end(name, a, open_names)
            if end is None:
                return q
            if end < 0:  # the item's end is not here yet
                if final:
                    return q
                self._items_need = 2 * (n - q)
                return -q - 1
            self._flush(q)
            first = len(parts)
            parts.append(bytes(buf[q:end]))
            self._emitted = end
            sink.items.append((first, len(parts), self._item_key_of(tm.group(2))))
            pos = end

    def _end_tag_at(self, name: bytes, pos: int) -> int:
        """Where the first end tag of ``name`` at or after ``pos`` starts (-1: none
        yet): found with ``bytes.find``, confirmed by the exact pattern."""
        low = self._low
        match = _simple_end_pattern(name).match
        lit = b"</" + name
        at = low.find(lit, pos)
        while at >= 0 and match(self._buf, at) is None:
            at = low.find(lit, at + 1)
        return at

    def _split_items(self, pos: int, end: int, open_names: frozenset[bytes]) -> int:
        """Move the run of list items from ``pos`` (up to ``end``, the list's first
        end tag) that each end with their own plain end tag (``</li>``), cut
        with one ``bytes.split``; returns where the run ends (``pos`` if none).

        Each piece (a separator, then an item) gets the checks
        :meth:`_bulk_items` makes, once per *shape*: the piece lowercased with
        every digit read as ``0``.  A digit never delimits a tag, a value or a
        comment, so pieces of one shape hold the same tags and attributes at
        the same offsets (names with a digit, like ``h2``, are refused), and a
        product list whose items differ in ids and prices is checked a few times,
        not per item.  Only the keys are read per item, at the shape's offsets.
        """
        plan = self.plan
        if plan.match_all:
            return pos
        tm = sc.START_TAG.match(self._buf, _BETWEEN_ITEMS.match(self._buf, pos, end).end(), end)
        if tm is None:
            return pos
        name = tm.group(1).lower()
        act = self._stack[-1][3]
        assert act is not None and act.edit is not None and act.sink is not None
        key_attr = act.edit.key_attr
        if (
            name not in _ITEM_NAMES
            or name in plan.types
            or _MAY_CLOSE.get(name, _EMPTY) & open_names
            or any(c in _DIGITS for c in name)
            or (key_attr is not None and any(c in _DIGITS for c in key_attr))
        ):
            return pos
        close = b"</" + name + b">"
        low = bytes(self._low[pos:end])
        shapes = low.translate(_DIGITS_TO_ZERO).split(close)
        if len(shapes) < 2:
            return pos
        memo_key = (name, open_names, self._room, key_attr)
        memo = plan.item_shapes.get(memo_key)
        if memo is None or len(memo) > 1024:
            if len(plan.item_shapes) > 64:
                plan.item_shapes.clear()
            memo = plan.item_shapes[memo_key] = {}
        self._flush(pos)
        region = bytes(self._buf[pos:end])
        sink = act.sink
        assert self._sink is sink and not sink.discard
        parts = sink.parts
        items = sink.items
        key_of = self._item_key_of
        append = parts.append
        add_item = items.append
        decode = sc.decode_entities
        skip = len(name) + 1
        tail = len(close)
        shapes.pop()  # what follows the last end tag is left to the other paths
        bounds = list(accumulate([len(shape) + tail for shape in shapes], initial=0))
        found = []
        previous: bytes | None = None
        verdict: object = _UNKNOWN
        for shape in shapes:  # a grid's items mostly repeat the one before: compare, not hash
            if shape != previous:
                verdict = memo.get(shape, _UNKNOWN)
                previous = shape if verdict is not _UNKNOWN else None
            found.append(verdict)
        for i, verdict in enumerate(found):
            if verdict is _UNKNOWN:
                at = bounds[i]
                verdict = found[i] = memo[shapes[i]] = self._item_shape(
                    low[at : bounds[i + 1]], shapes[i], name, open_names, key_attr
                )
            if verdict is None:
                del found[i:]
                break
        n = len(found)
        if n and found.count(found[0]) == n:
            # One shape for the whole run (a product grid): cut it with comprehensions.
            sep, start_end, vs, ve = found[0]  # type: ignore[misc]
            starts = bounds[:n]
            ends = bounds[1 : n + 1]
            if vs >= 0:
                keys: list[str | None] = [
                    (decode(v) if b"&" in v else v).decode("utf-8", "replace")
                    for v in [region[at + vs : at + ve] for at in starts]
                ]
            elif key_attr is None:
                keys = [key_of(region[at + sep + skip : at + start_end - 1]) for at in starts]
            else:
                keys = [None] * n
            base = len(parts)
            if sep:
                both: list[bytes] = [b""] * (2 * n)
                both[0::2] = [region[at : at + sep] for at in starts]
                both[1::2] = [region[at + sep : e] for at, e in zip(starts, ends, strict=True)]
                parts.extend(both)
                items.extend(
                    zip(
                        range(base + 1, base + 2 * n, 2),
                        range(base + 2, base + 2 * n + 1, 2),
                        keys,
                        strict=True,
                    )
                )
            else:
                parts.extend([region[at:e] for at, e in zip(starts, ends, strict=True)])
                items.extend(
                    zip(range(base, base + n), range(base + 1, base + n + 1), keys, strict=True)
                )
            found = []
        # Each piece from ``at`` to ``e``: a separator (``sep`` long), then an item.
        for at, e, (sep, start_end, vs, ve) in zip(  # type: ignore[misc]
            bounds, bounds[1:], found, strict=False
        ):
            if sep:
                q = at + sep
                append(region[at:q])  # the separator stays where it is
                append(region[q:e])
            else:
                append(region[at:e])
            if vs >= 0:
                value = region[at + vs : at + ve]
                if b"&" in value:
                    value = decode(value)
                key = value.decode("utf-8", "replace")
            elif key_attr is None:
                key = key_of(region[at + sep + skip : at + start_end - 1])
            else:
                key = None
            k = len(parts)
            add_item((k - 1, k, key))
        at = bounds[n]
        self._emitted = pos + at
        return pos + at

    def _item_shape(
        self,
        piece: bytes,
        shape: bytes,
        name: bytes,
        open_names: frozenset[bytes],
        key_attr: bytes | None,
    ) -> tuple[int, int, int, int] | None:
        """For :meth:`_split_items`, a piece (lowercased, its end tag included)
        that is a separator then one simple item ``name``: the item's offset,
        its start tag's end and its key value's span (-1, -1 if it has none);
        None if it is not such a piece."""
        plan = self.plan
        sep = _BETWEEN_ITEMS.match(piece).end()
        skip = len(name) + 1
        if not piece.startswith(b"<" + name, sep) or piece[sep + skip] not in _ITEM_DELIMS:
            return None
        item = piece[sep:]
        if (
            b"<svg" in item
            or b"<math" in item
            or any(lit in shape for lit in plan.shape_literals)
            or any(tag in shape for tag in plan.shape_digit_tags)
            or item.count(b"<") >= self._room
            or not _is_simple_markup(item, 0, len(item))
        ):
            return None
        # Its structural tags: its own start tag first, its end tag last, and
        # in between tags that nest and close nothing outside.
        words = plan.structural_tags.findall(item)
        if words[0] != name or words.count(name) != 1 or words.index(b"/" + name) != len(words) - 1:
            return None
        tags = tuple((b"/", t[1:]) if t[:1] == b"/" else (b"", t) for t in words[1:-1])
        if _follow_structure(name, open_names, (), tags, plan.types) != ():
            return None
        start_end = item.find(b">") + 1  # simple markup: a tag ends at its first ">"
        if key_attr is not None:
            for m in sc.ATTR.finditer(item, skip, start_end - 1):
                if m.group(1) == key_attr:  # the first of duplicates wins
                    g = next((g for g in (2, 3, 4) if m.start(g) >= 0), 0)
                    at = m.start(g) if g else start_end
                    return sep, sep + start_end, sep + at, sep + (m.end(g) if g else start_end)
        return sep, sep + start_end, -1, -1

    def _bulk_items(self, pos: int, name: bytes, open_names: frozenset[bytes]) -> int:
        """Move a run of list items named ``name`` at once, in the stretch already
        known to be simple markup; returns where the run ends (``pos`` if none).

        Items are found by their junctions (an end tag of their name, a
        separator, a start tag of their name); as many start and end tags of
        that name as items prove none is nested, ended early or missed, and the
        structural tags inside (checked per distinct sequence) prove nothing
        closes outside its item.
        """
        low = self._low
        buf = self._buf
        plan = self.plan
        upto = self._simple_upto
        head, junction = _item_patterns(name)
        m = head.match(low, pos, upto)
        if m is None:
            return pos
        runs = [[m.start(2), m.end(2), 0]]  # start, start tag end, end
        for j in junction.finditer(low, m.end(2), upto):
            runs[-1][2] = j.start(1)
            runs.append([j.start(2), j.end(2), 0])
        last = _simple_end_pattern(name).search(low, runs[-1][1], upto)
        if last is None:
            runs.pop()
            if not runs:
                return pos
        else:
            runs[-1][2] = last.end()
        p = runs[-1][2]
        if plan.attr_literals and _has_any(low, plan.attr_literals, pos, p):
            return pos
        room = self._room
        for q, _a, e in runs:
            if e - q > 3 * room and low.count(b"<", q, e) >= room:
                return pos
        # Every item's structural tags, "name ... /name": one start and one end
        # tag of its name each (none nested, none ended early).
        structure = self._outside_foreign(plan.structural_tags.findall, pos, p)
        if structure is None:
            return pos
        joined = b" " + b" ".join(structure) + b" "
        per_item = joined.split(b" /" + name + b" ")
        if len(per_item) != len(runs) + 1 or per_item[-1].strip():
            return pos
        for seq in set(per_item[:-1]):
            words = seq.split()
            if not words or words[0] != name or words.count(name) != 1:
                return pos
            tags = tuple((b"/", t[1:]) if t[:1] == b"/" else (b"", t) for t in words[1:])
            memo_key = (name, open_names, (), tags, plan.types)
            after = _STRUCTURE_MEMO.get(memo_key, _UNKNOWN)
            if after is _UNKNOWN:
                after = _follow_structure(name, open_names, (), tags, plan.types)
                if len(_STRUCTURE_MEMO) > 4096:
                    _STRUCTURE_MEMO.clear()
                _STRUCTURE_MEMO[memo_key] = after
            if after != ():
                return pos
        act = self._stack[-1][3]
        assert act is not None and act.sink is not None
        sink = act.sink
        parts = sink.parts
        assert self._sink is sink and not sink.discard
        skip = len(name) + 1
        items = sink.items
        key_of = self._item_key_of
        prev = self._emitted
        for q, a, e in runs:
            if q > prev:
                parts.append(bytes(buf[prev:q]))  # the separator stays where it is
            parts.append(bytes(buf[q:e]))
            at = len(parts)
            items.append((at - 1, at, key_of(bytes(buf[q + skip : a - 1]))))
            prev = e
        self._emitted = prev
        return p

    def _outside_foreign(
        self, find: Callable[[bytearray, int, int], list[_T]], a: int, b: int
    ) -> list[_T] | None:
        """``find(low, a, b)`` minus what lies inside ``<svg>``/``<math>``
        elements, each of which must be simple (see :meth:`_foreign_end`) and
        end before ``b``; None if one is not.  From outside, a simple foreign
        element is like a void one: nothing in it can match, close or open
        anything."""
        low = self._low
        m = _FOREIGN_START.search(low, a, b)
        if m is None:
            return find(low, a, b)
        types = self.plan.types
        found: list[_T] = []
        at = a
        while m is not None:
            found += find(low, at, m.start())
            name = m.group(1)
            tm = sc.START_TAG.match(self._buf, m.start(), b)
            if tm is None or name in types:
                return None
            at = tm.end()
            if not sc.is_self_closing(tm.group(2)):
                at = self._foreign_end(name, at, _NONE, True)
                if at < 0 or at > b:
                    return None
            m = _FOREIGN_START.search(low, at, b)
        found += find(low, at, b)
        return found

    def _simple_item_end(self, name: bytes, a: int, open_names: frozenset[bytes]) -> int | None:
        """End of the simple element ``name`` whose content starts at ``a``;
        None if it is not simple, -1 if its end is not in the input yet.

        Simple: the content is simple markup (so every ``<`` + letter in it
        is a real tag) and, among the elements that can close others (see
        ``_STRUCTURAL``), start and end tags nest and close nothing outside.
        ``name`` is special, so an end tag of any other element stops at it.
        """
        buf = self._buf
        end_tag = _simple_end_pattern(name)
        plan = self.plan
        lits = plan.attr_literals
        found = plan.structural.findall
        low = self._low
        inner: tuple[bytes, ...] = ()
        seg = a
        while True:
            em = end_tag.search(buf, seg)
            if em is None:
                return -1
            b = em.start()
            if (
                (b > self._simple_upto and not _is_simple_markup(buf, seg, b))
                or (lits and _has_any(low, lits, seg, b))
                or (b - seg > 3 * self._room and low.count(b"<", seg, b) >= self._room)
            ):
                return None
            found_seq = self._outside_foreign(found, seg, b)
            if found_seq is None:
                return None
            seq = tuple(found_seq)
            memo_key = (name, open_names, inner, seq, plan.types)
            after = _STRUCTURE_MEMO.get(memo_key, _UNKNOWN)
            if after is _UNKNOWN:
                after = _follow_structure(name, open_names, inner, seq, plan.types)
                if len(_STRUCTURE_MEMO) > 4096:
                    _STRUCTURE_MEMO.clear()
                _STRUCTURE_MEMO[memo_key] = after
            if after is None:
                return None
            inner = after
            if not inner:
                return em.end()
            if inner[-1] != name:
                return None
            inner = inner[:-1]  # that end tag closes a nested element of the same name
            seg = em.end()

    def _foreign_end(self, name: bytes, a: int, room: int, final: bool) -> int:
        """The end of the ``<svg>`` or ``<math>`` (``name``) whose content starts
        at ``a``, if it can be skipped whole: its end tag is here, every ``<``
        inside opens a tag (no comment, CDATA or stray ``<``), nothing inside
        breaks out to HTML or may match a selector (see :func:`_foreign_depth`),
        and it nests less than ``room`` deep.  Then the exact path would only
        push and pop foreign elements that nothing watches.  ``_NOT_SIMPLE`` if
        not; ``_WAIT`` if its end may still come in a later chunk.
        """
        low = self._low
        n = len(low)
        if not final and n < self._foreign_need:
            return _WAIT
        opens, closes = _FOREIGN_ENDS[name]
        depth = 1
        at = a
        while True:
            close = closes.search(low, at)
            if close is None:
                break
            depth += len(opens.findall(low, at, close.start())) - 1
            if not depth:
                break
            at = close.end()
        end = sc.TOKEN.match(self._buf, close.start()) if close is not None else None
        if end is None:
            if final or n - a > min(_FOREIGN_WAIT, self.plan.max_held_bytes // 2):
                return _NOT_SIMPLE
            self._foreign_need = 2 * n - a
            return _WAIT
        b = end.start()
        plan = self.plan
        if plan.match_all or (plan.attr_literals and _has_any(low, plan.attr_literals, a, b)):
            return _NOT_SIMPLE
        # The verdict depends on the content's bytes and the selectors' types only.
        # Icons and product art repeat on every page of a shop, and tokenizing an
        # SVG's tags costs ~25 µs per KB, so it is kept by the bytes (a hash of the
        # copy costs ~1 µs per KB); a large one is worked out each time.
        memo = b - a <= _FOREIGN_MEMO_BYTES
        key = (name, bytes(memoryview(low)[a:b]), plan.types) if memo else None
        deepest = _FOREIGN_MEMO.get(key, _UNKNOWN) if memo else _UNKNOWN
        if deepest is _UNKNOWN:
            tags = _FOREIGN_TAG.findall(low, a, b)
            deepest = (
                _foreign_depth(name, tuple(tags), plan.types)
                if len(tags) == low.count(b"<", a, b)
                else None
            )
            if memo:
                if len(_FOREIGN_MEMO) >= _FOREIGN_MEMO_SIZE:
                    _FOREIGN_MEMO.clear()
                _FOREIGN_MEMO[key] = deepest
        if deepest is None or deepest >= room or end.lastindex != 3:
            return _NOT_SIMPLE
        return end.end()

    def _in_data(self, p: int, c: int) -> bool:
        """Whether ``c`` is in the data state, given that ``p`` is and that no
        comment or raw-text element starts in between.

        If ``c`` were inside a construct begun at ``x``: with ``x`` after the
        last ``>`` before ``c``, the stretch from that ``>`` holds a ``<``
        opening a tag; with ``x`` before it, that ``>`` is inside a quoted
        value whose closing quote lies in the stretch or beyond ``c``.  So a
        stretch without quotes or tag openings, and no value opened by ``="``
        or ``='`` still open at ``c``, prove the data state.
        """
        buf = self._buf
        g = buf.rfind(b">", p, c)
        s = g + 1 if g >= 0 else p
        if s < c and _UNSURE_TAIL.search(buf, s, c) is not None:
            return False
        return self._no_open_quote(p, c)

    def _no_open_quote(self, p: int, c: int) -> bool:
        """No quoted attribute value begun in ``[p, c)`` is still open at ``c``:
        the last quote of each kind is not one that opens a value (``=`` then
        optional whitespace before it).  The last ``"`` before a position inside
        a double-quoted value is always its opening quote."""
        buf = self._buf
        for quote in (b'"', b"'"):
            i = buf.rfind(quote, p, c) - 1
            if i < p - 1:
                continue
            while i >= p and buf[i] in _WS_BYTES:
                i -= 1
            if i >= p and buf[i] == 0x3D:  # "="
                return False
        return True

    def _text(self, pos: int, final: bool) -> int:
        """Continue inside raw text, a comment or CDATA; returns the new position."""
        buf = self._buf
        n = len(buf)
        state = self._state
        if state == _PLAINTEXT:
            return n
        if state == _COMMENT:
            m = sc.COMMENT_END.search(buf, self._resume)
            if m is None:
                self._resume = max(self._resume, n - 3)
                return n if final else pos
            self._state = _DATA
            return m.end()
        if state == _CDATA:
            i = buf.find(sc.CDATA_END, self._resume)
            if i < 0:
                self._resume = max(self._resume, n - 2)
                return n if final else pos
            self._state = _DATA
            return i + 3
        # Raw text / RCDATA: find the end tag.
        name = self._raw_name
        m = sc.raw_end_pattern(name).search(buf, self._resume)
        if (
            m is not None
            and name == b"script"
            and buf.find(b"<!--", self._raw_start, m.start()) >= 0
        ):
            end = sc.script_end(buf, self._raw_start)
            m = None if end < 0 else sc.raw_end_pattern(name).match(buf, end)
        if m is None:
            self._resume = max(self._resume, n - len(name) - 2)
            if final:
                return n
            return pos
        s = m.start()
        t = sc.TOKEN.match(buf, s)
        if t is None:
            self._resume = s
            if final:
                return n
            return pos
        self._state = _DATA
        self._end_tag(t.group(3), s, t.end())
        return t.end()

    # -- start tags ---------------------------------------------------------

    def _start_tag(self, raw: bytes, area: bytes, s: int, e: int, final: bool) -> int:
        """Handle the start tag spanning ``s..e``; returns where to go on: ``e``,
        the end of a foreign element skipped whole, or -1 to wait for its end."""
        name = _NAMES.get(raw)
        if name is None:
            name = raw.lower()
            if len(_NAMES) < 4096:
                _NAMES[raw] = name
        stack = self._stack
        plan = self.plan
        ns = _HTML
        self_closing = False
        if stack:
            top = stack[-1]
            if top[1] != _HTML and not (
                (top[1] == _SVG and top[0] in sc.SVG_HTML_POINTS)
                or (top[1] == _MATH and top[0] in sc.MATH_HTML_POINTS)
            ):
                if name in sc.BREAKOUT:
                    i = len(stack) - 1
                    while (
                        i >= 0
                        and stack[i][1] != _HTML
                        and not (
                            (stack[i][1] == _SVG and stack[i][0] in sc.SVG_HTML_POINTS)
                            or (stack[i][1] == _MATH and stack[i][0] in sc.MATH_HTML_POINTS)
                        )
                    ):
                        i -= 1
                    if i + 1 < len(stack):
                        self._pop_to(i + 1, s, s)
                    if stack:
                        self._close_for_start(name, s)
                else:
                    ns = _SVG if name == b"svg" else (_MATH if name == b"math" else top[1])
                    self_closing = area.endswith(b"/") and sc.is_self_closing(area)
            else:
                self._close_for_start(name, s)
        if ns == _HTML and name in (b"svg", b"math"):
            ns = _SVG if name == b"svg" else _MATH
            self_closing = area.endswith(b"/") and sc.is_self_closing(area)
        void = self_closing or (ns == _HTML and name in sc.VOID)

        # Matching.
        mask = 0
        edits: list[_CompiledEdit] | None = None
        if (
            not self._inert
            and not self._discarding
            and (
                plan.match_all
                or name in plan.types
                or (plan.attr_probe is not None and plan.attr_probe.search(self._buf, s, e))
            )
        ):
            attrs = sc.parse_attrs(area)
            for ci, comp in enumerate(plan.compounds):
                if comp.matches(name, attrs):
                    mask |= 1 << ci
            if mask:
                edits = self._matching_edits(mask)
        else:
            attrs = None

        parent_act = stack[-1][3] if stack else None
        item_of = (
            parent_act.sink if parent_act is not None and parent_act.kind == "reorder" else None
        )
        act: _Act | None = None
        if edits or item_of is not None:
            act = self._open_edits(name, area, attrs, edits or [], item_of, s, e, void)
        if void:
            return e
        if not stack and act is None and not (mask & plan.ancestor_mask) and name not in _WATCH:
            return e
        if (
            ns != _HTML
            and not edits
            and item_of is None
            and self._fast
            and (name == b"svg" or name == b"math")
        ):
            end = self._foreign_end(name, e, plan.max_depth - len(stack), final)
            if end != _NOT_SIMPLE:
                return end
        if len(stack) >= plan.max_depth:
            raise RewriteError(f"elements nested deeper than {plan.max_depth}")
        stack.append((name, ns, mask, act))
        if ns == _HTML:
            if name == b"template":
                self._inert += 1
            elif name in sc.TEXT_ELEMENTS:
                self._state = _TEXT
                self._raw_name = name
                self._raw_start = e
                self._resume = e
            elif name == b"plaintext":
                self._state = _PLAINTEXT
        return e

    def _matching_edits(self, mask: int) -> list[_CompiledEdit]:
        found: list[_CompiledEdit] = []
        for ce in self.plan.compiled:
            for ids, combs in ce.selectors:
                if (mask >> ids[-1]) & 1 and (
                    len(ids) == 1
                    or self._ancestors_match(ids, combs, len(ids) - 2, len(self._stack) - 1)
                ):
                    found.append(ce)
                    break
        return found

    def _ancestors_match(
        self, ids: tuple[int, ...], combs: tuple[str, ...], ci: int, ei: int
    ) -> bool:
        stack = self._stack
        bit = ids[ci]
        if combs[ci] == ">":
            if ei < 0 or not (stack[ei][2] >> bit) & 1:
                return False
            return ci == 0 or self._ancestors_match(ids, combs, ci - 1, ei - 1)
        for j in range(ei, -1, -1):
            if (stack[j][2] >> bit) & 1 and (
                ci == 0 or self._ancestors_match(ids, combs, ci - 1, j - 1)
            ):
                return True
        return False

    def _open_edits(
        self,
        name: bytes,
        area: bytes,
        attrs: dict[bytes, bytes] | None,
        edits: list[_CompiledEdit],
        item_of: _Sink | None,
        s: int,
        e: int,
        void: bool,
    ) -> _Act | None:
        """Apply what happens at an element's start; returns its pending work."""
        act = _Act()
        before: list[bytes] = []
        prepend: list[bytes] = []
        content_edit: _CompiledEdit | None = None
        for ce in edits:
            a = ce.action
            if a in _CONTENT_ACTIONS:
                if content_edit is None and not (void and a in ("set_inner_content", "reorder")):
                    content_edit = ce
                continue
            self.counts[ce.index] += 1
            if a == "before":
                before.append(ce.content)
            elif a == "after":
                act.after.append(ce.content)
            elif not void:
                (prepend if a == "prepend" else act.append).append(ce.content)
        self._flush(s)
        if item_of is not None:
            item_of.item_start = len(item_of.parts)
            act.item_of = item_of
            act.item_key = self._item_key(attrs if attrs is not None else sc.parse_attrs(area))
        if before:
            self._emit(before)
        if content_edit is not None and content_edit.action in ("replace", "remove"):
            act.kind = "drop"
            act.edit = content_edit
            if void:
                self._emitted = e
                self._finish_drop(act)
                self._end_item(act)
                return None
            act.sink = _Sink([], discard=True)
            self._push_sink(act.sink)
            return act
        self._flush(e)
        if content_edit is not None and content_edit.action == "set_inner_content":
            act.kind = "inner"
            act.edit = content_edit
            act.append[:0] = [*prepend, content_edit.content]
            act.sink = _Sink([], discard=True)
            self._push_sink(act.sink)
            return act
        if prepend:
            self._emit(prepend)
        if content_edit is not None:  # reorder
            act.kind = "reorder"
            act.edit = content_edit
            act.sink = _Sink([])
            self._push_sink(act.sink)
            return act
        if void:
            if act.after:
                self._emit(act.after)
            self._end_item(act)
            return None
        if not act.after and not act.append and act.item_of is None:
            return None
        return act

    def _item_key_of(self, area: bytes) -> str | None:
        """:meth:`_item_key` from a start tag's attribute area."""
        top = self._stack[-1][3]
        assert top is not None and top.edit is not None
        key = top.edit.key_attr
        if key is None:
            return self._item_key(sc.parse_attrs(area))
        if key not in area.lower():
            return None
        for name, dq, sq, uq, _end in sc.ATTR.findall(area):
            if name.lower() == key:  # the first of duplicates wins, as in parse_attrs
                value = dq or sq or uq
                if b"&" in value:
                    value = sc.decode_entities(value)
                return value.decode("utf-8", "replace")
        return None

    def _item_key(self, attrs: dict[bytes, bytes]) -> str | None:
        top = self._stack[-1][3]
        assert top is not None and top.edit is not None
        ce = top.edit
        if ce.key_attr is not None:
            value = attrs.get(ce.key_attr)
            return None if value is None else value.decode("utf-8", "replace")
        assert ce.edit.key is not None
        return ce.edit.key(
            {k.decode("latin-1"): v.decode("utf-8", "replace") for k, v in attrs.items()}
        )

    def _end_item(self, act: _Act) -> None:
        sink = act.item_of
        if sink is not None:
            sink.items.append((sink.item_start, len(sink.parts), act.item_key))

    def _finish_drop(self, act: _Act) -> None:
        assert act.edit is not None
        self.counts[act.edit.index] += 1
        if act.edit.action == "replace":
            self._emit([act.edit.content])
        if act.after:
            self._emit(act.after)

    # -- closing elements ---------------------------------------------------

    def _pop_to(self, index: int, s: int, e: int) -> None:
        """Close stack[index:] at ``s``; stack[index] by an end tag spanning s..e."""
        stack = self._stack
        while len(stack) > index:
            entry = stack.pop()
            end = e if len(stack) == index else s
            name, ns, _mask, act = entry
            if ns == _HTML and name == b"template":
                self._inert -= 1
            if act is not None:
                self._close(act, s, end)

    def _close(self, act: _Act, s: int, e: int) -> None:
        kind = act.kind
        if kind == "drop":
            self._flush(s)
            self._pop_sink()
            self._emitted = e
            self._finish_drop(act)
        elif kind == "inner":
            self._flush(s)
            self._pop_sink()
            assert act.edit is not None
            self.counts[act.edit.index] += 1
            self._emit(act.append)
            self._flush(e)
            if act.after:
                self._emit(act.after)
        else:
            if kind == "reorder":
                self._flush(s)
                sink = self._pop_sink()
                assert act.edit is not None
                self.counts[act.edit.index] += 1
                if self._record is None:
                    self._emit(_reordered(sink, act.edit.edit))
                elif self._sink is self._sinks[0]:
                    first = len(self._out)
                    self._emit(_reordered(sink, act.edit.edit))
                    self._marks.append((first, len(self._out), sink, act.edit.index))
                else:  # held inside another edit: no template for this document
                    self._record.spoil()
                    self._emit(_reordered(sink, act.edit.edit))
            else:
                self._flush(s)
            if act.append:
                self._emit(act.append)
            self._flush(e)
            if act.after:
                self._emit(act.after)
        self._end_item(act)

    def _close_for_start(self, name: bytes, s: int) -> None:
        """HTML5's implied end tags for a start tag (only within the watched stack)."""
        stack = self._stack
        if name in sc.CLOSES_P:
            if name == b"li" or name == b"dd" or name == b"dt":
                targets = (b"li",) if name == b"li" else (b"dd", b"dt")
                for i in range(len(stack) - 1, -1, -1):
                    nm, ns = stack[i][0], stack[i][1]
                    if ns != _HTML:
                        continue
                    if nm in targets:
                        self._pop_to(i, s, s)
                        break
                    if nm in _LI_STOP:
                        break
            i = self._in_scope(b"p", button=True)
            if i >= 0:
                self._pop_to(i, s, s)
            if (
                name in sc.HEADINGS
                and stack
                and stack[-1][0] in sc.HEADINGS
                and stack[-1][1] == _HTML
            ):
                self._pop_to(len(stack) - 1, s, s)
        elif name == b"option" or name == b"optgroup":
            if stack and stack[-1][0] == b"option":
                self._pop_to(len(stack) - 1, s, s)
            if name == b"optgroup" and stack and stack[-1][0] == b"optgroup":
                self._pop_to(len(stack) - 1, s, s)
        elif name in sc.TABLE_PARTS:
            if name == b"td" or name == b"th":
                closing: frozenset[bytes] = _CELLS
                stops = _CELL_STOPS
            elif name == b"tr":
                closing = _ROWS
                stops = _ROW_STOPS
            else:
                closing = sc.TABLE_PARTS
                stops = _TABLE_STOPS
            j = -1
            for i in range(len(stack) - 1, -1, -1):
                nm = stack[i][0]
                if nm in closing:
                    j = i
                elif nm in stops:
                    break
            if j >= 0:
                self._pop_to(j, s, s)
        elif name == b"a" or name == b"button" or name == b"nobr":
            for i in range(len(stack) - 1, -1, -1):
                nm = stack[i][0]
                if nm == name:
                    self._pop_to(i, s, s)
                    break
                if nm in sc.SCOPE_BOUNDARY or (name == b"a" and nm in sc.SPECIAL):
                    break

    def _in_scope(self, target: bytes, *, button: bool = False, list_item: bool = False) -> int:
        """Index of ``target`` if it is in scope in the watched stack, else -1."""
        stack = self._stack
        for i in range(len(stack) - 1, -1, -1):
            nm, ns = stack[i][0], stack[i][1]
            if ns == _HTML:
                if nm == target:
                    return i
                if nm in sc.SCOPE_BOUNDARY:
                    return -1
                if button and nm == b"button":
                    return -1
                if list_item and (nm == b"ol" or nm == b"ul"):
                    return -1
            elif nm in sc.FOREIGN_SCOPE_BOUNDARY:
                return -1
        return -2  # not in the watched stack and no boundary seen: unknown

    def _end_tag(self, raw: bytes, s: int, e: int) -> None:
        name = _NAMES.get(raw)
        if name is None:
            name = raw.lower()
        stack = self._stack
        if not stack:
            return
        if stack[-1][1] != _HTML:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][1] == _HTML:
                    break
                if stack[i][0] == name:
                    self._pop_to(i, s, e)
                    return
        if name == b"body" or name == b"html" or name == b"br":
            return
        if name in sc.SCOPED_END:
            if name in sc.TABLE_CLOSERS:
                i = -2
                for j in range(len(stack) - 1, -1, -1):
                    nm = stack[j][0]
                    if nm == name:
                        i = j
                        break
                    if nm == b"table" or nm == b"template" or nm == b"html":
                        i = -1
                        break
            else:
                i = self._in_scope(name, button=name == b"p", list_item=name == b"li")
            if i >= 0:
                self._pop_to(i, s, e)
            elif i == -2:
                self._unplaced_end_tag(name, s)
            return
        for i in range(len(stack) - 1, -1, -1):
            nm, ns = stack[i][0], stack[i][1]
            if nm == name:
                self._pop_to(i, s, e)
                return
            if ns == _HTML and nm in sc.SPECIAL:
                return
        self._unplaced_end_tag(name, s)

    def _unplaced_end_tag(self, name: bytes, s: int) -> None:
        """An end tag for no element in the watched stack: it closes an element
        outside (so the watched root too) or it is stray; we cannot see which."""
        root = self._stack[0][0]
        if name in sc.TABLE_CLOSERS and root in sc.OPTIONAL_END:
            self._pop_to(0, s, s)
            return
        if root in sc.SCOPE_BOUNDARY:
            return
        if root in sc.IMPLIED_END and name in sc.SCOPED_END:
            self._pop_to(0, s, s)
            return
        if any(act is not None and act.sink is not None for _n, _ns, _m, act in self._stack):
            raise RewriteError(
                f"cannot tell whether </{name.decode('latin-1')}> at byte {s} closes "
                f"<{root.decode('latin-1')}> or is stray"
            )
        self._pop_to(0, s, s)


_WATCH = frozenset((*sc.TEXT_ELEMENTS, b"template", b"svg", b"math", b"plaintext"))
_CELLS = frozenset((b"td", b"th"))
_CELL_STOPS = frozenset((b"tr", b"table", b"tbody", b"thead", b"tfoot", b"template", b"html"))
_ROWS = frozenset((b"td", b"th", b"tr"))
_ROW_STOPS = frozenset((b"table", b"tbody", b"thead", b"tfoot", b"template", b"html"))
_TABLE_STOPS = frozenset((b"table", b"template", b"html"))


def _reordered(sink: _Sink, edit: Edit) -> list[bytes]:
    """The held parts of a reorder root with its items put in the wanted order."""
    parts = sink.parts
    items = sink.items
    if not items:
        return parts
    keys = [k for _a, _b, k in items]
    order = edit.order
    wanted = list(order(keys)) if callable(order) else list(order or ())
    last = len(wanted)
    # A key's first place in the wanted order (assigned backwards, the first wins).
    rank: dict[str | None, int] = dict(zip(reversed(wanted), range(last - 1, -1, -1), strict=True))
    rank.pop(None, None)  # an item without a key goes last, whatever the order says
    ranks = [rank.get(k, last) for k in keys]
    positions = sorted(range(len(items)), key=ranks.__getitem__)  # stable: ties keep order
    if all(b - a == 1 for a, b, _k in items):
        # Every item is one part (the bulk paths): put each in another's place.
        out = parts.copy()
        moved = [parts[a] for a, _b, _k in items]
        for (a, _b, _k), j in zip(items, positions, strict=True):
            out[a] = moved[j]
        return out
    out: list[bytes] = []
    prev = 0
    for (a, b, _k), j in zip(items, positions, strict=True):
        if prev < a:
            out.extend(parts[prev:a])  # the separator before this slot stays in place
        ja, jb, _jk = items[j]
        if jb == ja + 1:
            out.append(parts[ja])
        else:
            out.extend(parts[ja:jb])
        prev = b
    out.extend(parts[prev:])
    return out


def rewrite(html: bytes, edits: Plan | Iterable[Edit]) -> bytes:
    """Rewrite a whole document at once.

    All or nothing: if the rewriter bails, the original ``html`` is returned.
    """
    rw = Rewriter(edits)
    out = rw.write(html) + rw.end()
    return html if rw.error is not None else out

"""HTML5 tree building, as far as the rewriter follows it: inside watched elements.

The rewriter keeps a stack of the elements open inside the element it watches
(one with an edit that needs its end, or an ancestor a selector names). These
pure functions say what a tag does to that stack, as the HTML5 tree builder
would: which open elements a start tag closes (implied end tags), which one an
end tag closes (scopes), when a start tag leaves foreign content (``<svg>``,
``<math>``) for HTML. They read the stack and return indexes; the rewriter
closes the elements, since closing one finishes its edits.

The stack's entries are ``(name, namespace, compound mask, pending work)``;
only the name (lowercase) and the namespace are read here.

The fast paths skip tags without the stack, so this module also says which
elements they must leave to it (:data:`NOT_FAST`, :data:`STRUCTURAL`,
:func:`follow_structure`) and when a foreign element's content is simple enough
to step over whole (:func:`foreign_depth`).

Known approximations (they only matter inside watched elements): the adoption
agency for misnested formatting tags (``<b><p></b>``) and table foster parenting
are not modelled; ``<noscript>`` content is parsed as markup (scripting off, as
lexbor does); an end tag for no element on the stack may close one outside it
(:func:`closes_root` says when that cannot be told).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from edge.caches import LRU, Memo

from . import scanner as sc

__all__ = [
    "FOREIGN_ENDS",
    "FOREIGN_START",
    "HTML",
    "IGNORED",
    "ITEM_NAMES",
    "KNOWN_FOREIGN",
    "KNOWN_FOREIGN_MAX",
    "MATH",
    "MAY_CLOSE",
    "NAMESPACES",
    "NOT_FAST",
    "STRUCTURAL",
    "SVG",
    "UNSEEN",
    "closes_root",
    "end_tag_closes",
    "follow_structure",
    "foreign_depth",
    "start_tag_place",
]

#: Namespaces of open elements.
HTML, SVG, MATH = 0, 1, 2
#: The elements that start foreign content, and its namespace.
NAMESPACES = {b"svg": SVG, b"math": MATH}
#: :func:`end_tag_closes`: the end tag closes nothing / may close an element
#: open outside the stack.
IGNORED, UNSEEN = -1, -2

Stack = Sequence[tuple[bytes, int, int, object]]

_LI_STOP = sc.SPECIAL - {b"address", b"div", b"p"}
_CELLS = frozenset((b"td", b"th"))
_CELL_STOPS = frozenset((b"tr", b"table", b"tbody", b"thead", b"tfoot", b"template", b"html"))
_ROWS = frozenset((b"td", b"th", b"tr"))
_ROW_STOPS = frozenset((b"table", b"tbody", b"thead", b"tfoot", b"template", b"html"))
_TABLE_STOPS = frozenset((b"table", b"template", b"html"))

#: Elements the fast paths leave to the stack: they change the tokenizer's
#: state, are inert or foreign, or build tables, selects and the page skeleton.
NOT_FAST = (
    sc.TEXT_ELEMENTS
    | sc.SCOPE_BOUNDARY
    | frozenset(
        b"template svg math plaintext html head body frameset frame table caption colgroup col "
        b"tbody thead tfoot tr td th select option optgroup".split()
    )
)
#: The open elements a start tag may close implicitly (see :func:`start_tag_place`).
MAY_CLOSE: dict[bytes, frozenset[bytes]] = {}
for _n in sc.CLOSES_P:
    MAY_CLOSE[_n] = frozenset(
        {b"p"}
        | ({b"li"} if _n == b"li" else set())
        | ({b"dd", b"dt"} if _n in (b"dd", b"dt") else set())
        | (sc.HEADINGS if _n in sc.HEADINGS else set())
    )
for _n in (b"a", b"button", b"nobr"):
    MAY_CLOSE[_n] = frozenset({_n})
#: Elements whose start or end tag can close another one (or must not be moved
#: by the fast path at all); tags of other elements cannot reach past a special
#: ancestor, so the fast path need not follow them.
STRUCTURAL = sc.SCOPED_END | frozenset(MAY_CLOSE) | NOT_FAST | sc.SCOPE_BOUNDARY
#: Elements the fast path moves as list items: special (so stray end tags inside
#: stop at them) and closed only by their own end tag or a structural one.
ITEM_NAMES = (sc.SPECIAL & (sc.SCOPED_END | frozenset(MAY_CLOSE))) - NOT_FAST - sc.VOID


def _html_point(name: bytes, ns: int) -> bool:
    """Whether an element's content is HTML although it is foreign."""
    return (ns == SVG and name in sc.SVG_HTML_POINTS) or (
        ns == MATH and name in sc.MATH_HTML_POINTS
    )


def start_tag_place(stack: Stack, name: bytes) -> tuple[int, int]:
    """For start tag ``name``: the new element's namespace, and how many of the
    open elements stay open (the others close first: HTML5's implied end tags,
    and the end of foreign content an HTML element breaks out of)."""
    ns = NAMESPACES.get(name, HTML)
    n = len(stack)
    if not n:
        return ns, 0
    top = stack[-1]
    if top[1] != HTML and not _html_point(top[0], top[1]):
        if name not in sc.BREAKOUT:
            return (top[1] if ns == HTML else ns), n
        while n and stack[n - 1][1] != HTML and not _html_point(stack[n - 1][0], stack[n - 1][1]):
            n -= 1
    if name in sc.CLOSES_P:
        if name == b"li" or name == b"dd" or name == b"dt":
            targets = (b"li",) if name == b"li" else (b"dd", b"dt")
            for i in range(n - 1, -1, -1):
                nm, nm_ns = stack[i][0], stack[i][1]
                if nm_ns != HTML:
                    continue
                if nm in targets:
                    n = i
                    break
                if nm in _LI_STOP:
                    break
        i = _in_scope(stack, n, b"p", button=True)
        if i >= 0:
            n = i
        if name in sc.HEADINGS and n and stack[n - 1][0] in sc.HEADINGS and stack[n - 1][1] == HTML:
            n -= 1
    elif name == b"option" or name == b"optgroup":
        if n and stack[n - 1][0] == b"option":
            n -= 1
        if name == b"optgroup" and n and stack[n - 1][0] == b"optgroup":
            n -= 1
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
        for i in range(n - 1, -1, -1):
            nm = stack[i][0]
            if nm in closing:
                j = i
            elif nm in stops:
                break
        if j >= 0:
            n = j
    elif name == b"a" or name == b"button" or name == b"nobr":
        for i in range(n - 1, -1, -1):
            nm = stack[i][0]
            if nm == name:
                return ns, i
            if nm in sc.SCOPE_BOUNDARY or (name == b"a" and nm in sc.SPECIAL):
                break
    return ns, n


def _in_scope(
    stack: Stack, n: int, target: bytes, *, button: bool = False, list_item: bool = False
) -> int:
    """Index of ``target`` if it is in scope in ``stack[:n]``; IGNORED if a
    boundary hides it; UNSEEN if neither is on the stack."""
    for i in range(n - 1, -1, -1):
        nm, ns = stack[i][0], stack[i][1]
        if ns == HTML:
            if nm == target:
                return i
            if nm in sc.SCOPE_BOUNDARY:
                return IGNORED
            if button and nm == b"button":
                return IGNORED
            if list_item and (nm == b"ol" or nm == b"ul"):
                return IGNORED
        elif nm in sc.FOREIGN_SCOPE_BOUNDARY:
            return IGNORED
    return UNSEEN


def end_tag_closes(stack: Stack, name: bytes) -> int:
    """The index of the open element end tag ``name`` closes (with those above
    it); IGNORED if it closes none; UNSEEN if it names no element on the stack
    and may close one outside it (see :func:`closes_root`)."""
    n = len(stack)
    top = stack[-1]
    if top[0] == name and top[1] == HTML and name != b"body" and name != b"html":
        return n - 1  # the most common end tag: the current element's own
    if top[1] != HTML:
        for i in range(n - 1, -1, -1):
            if stack[i][1] == HTML:
                break
            if stack[i][0] == name:
                return i
    if name == b"body" or name == b"html" or name == b"br":
        return IGNORED
    if name in sc.SCOPED_END:
        if name not in sc.TABLE_CLOSERS:
            return _in_scope(stack, n, name, button=name == b"p", list_item=name == b"li")
        for j in range(n - 1, -1, -1):
            nm = stack[j][0]
            if nm == name:
                return j
            if nm == b"table" or nm == b"template" or nm == b"html":
                return IGNORED
        return UNSEEN
    for i in range(n - 1, -1, -1):
        nm, ns = stack[i][0], stack[i][1]
        if nm == name:
            return i
        if ns == HTML and nm in sc.SPECIAL:
            return IGNORED
    return UNSEEN


def closes_root(root: bytes, name: bytes) -> bool | None:
    """Whether an end tag ``name`` for no element on the stack closes the
    watched element ``root`` (so it closes an element outside), or is stray
    (False); None if that cannot be told from inside."""
    if name in sc.TABLE_CLOSERS and root in sc.OPTIONAL_END:
        return True
    if root in sc.SCOPE_BOUNDARY:
        return False
    if root in sc.IMPLIED_END and name in sc.SCOPED_END:
        return True
    return None


_UNKNOWN = object()
_STRUCTURE: Memo[object, tuple[bytes, ...] | None] = Memo(4096)


def follow_structure(
    name: bytes,
    open_names: frozenset[bytes],
    inner: tuple[bytes, ...],
    seq: tuple[tuple[bytes, bytes], ...],
    types: frozenset[bytes],
) -> tuple[bytes, ...] | None:
    """The structural elements open inside item ``name`` after the tags
    ``seq`` ((slash, name) pairs), or None if one of them is not simple: it
    must not be followed fast, or may close an element it did not open."""
    key = (name, open_names, inner, seq, types)
    after = _STRUCTURE.get(key, _UNKNOWN)
    if after is not _UNKNOWN:
        return after  # type: ignore[return-value]
    stack = list(inner)
    for slash, nm in seq:
        if nm in NOT_FAST or nm in types:
            return _STRUCTURE.put(key, None)
        if slash:
            if not stack or stack[-1] != nm:
                return _STRUCTURE.put(key, None)
            stack.pop()
            continue
        closes = MAY_CLOSE.get(nm)
        if closes is not None and (
            closes & open_names or name in closes or any(x in closes for x in stack)
        ):
            return _STRUCTURE.put(key, None)
        if nm not in sc.VOID:
            stack.append(nm)
    return _STRUCTURE.put(key, tuple(stack))


# -- foreign content ----------------------------------------------------------

#: Every tag inside foreign content, in lowercased text, read as the tokenizer
#: reads it: (``/`` for an end tag, name, ``/`` for the self-closing flag).
#: A slash that ends an unquoted value belongs to the value, as in the tokenizer.
_FOREIGN_TAG = re.compile(
    rb"<(/?)([a-z][^\t\n\f\r />]*+)(?:[\t\n\f\r ]++|/(?!>)|" + sc.ATTR_SRC + rb")*+(/?)>"
)
#: Where an ``<svg>`` or ``<math>`` starts (lowercased text).
FOREIGN_START = re.compile(rb"<(svg|math)(?=[\t\n\f\r />])")
#: Per foreign root: its start tags and its end tags (lowercased text).
FOREIGN_ENDS = {
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
#: At most this many verdicts of foreign elements up to this many bytes (~16 MB).
_FOREIGN_MEMO_SIZE, _FOREIGN_MEMO_BYTES = 2048, 8 << 10
_FOREIGN: Memo[object, int | None] = Memo(_FOREIGN_MEMO_SIZE)
#: Inline ``<svg>``/``<math>`` elements stepped over whole (outside watched elements,
#: in list items), keyed by ``Rewriter._known_foreign``: how long they are. An icon
#: or a product's art repeats on every page of a shop, also on pages whose other
#: bytes differ per visitor; stepping over one costs ~60-90k instructions of
#: tokenizing, matching and checking, a look-up ~5k. At most KNOWN_FOREIGN_BYTES of
#: them, each up to KNOWN_FOREIGN_MAX bytes.
KNOWN_FOREIGN_BYTES, KNOWN_FOREIGN_MAX = 2 << 20, 16 << 10
KNOWN_FOREIGN: LRU[tuple[bytes, int, int], int] = LRU(KNOWN_FOREIGN_BYTES, weigh=int)


def foreign_depth(
    root: bytes, low: bytes | bytearray, a: int, b: int, types: frozenset[bytes]
) -> int | None:
    """How deep the elements inside foreign element ``root`` nest (``root``
    counted), given its content ``low[a:b]`` (lowercased); None if it is not
    simple: a ``<`` that opens no tag, a tag that breaks out to HTML, a tag
    inside an integration point, an end tag that is not the current element's,
    something a selector may match (``types``), or an element left open.

    The verdict depends on the content's bytes and ``types`` only, and icons
    and product art repeat on every page of a shop: a small one's verdict is
    kept by its bytes; a large one is worked out each time.
    """
    memo = b - a <= _FOREIGN_MEMO_BYTES
    key = (root, bytes(memoryview(low)[a:b]), types) if memo else None
    deepest = _FOREIGN.get(key, _UNKNOWN) if memo else _UNKNOWN
    if deepest is _UNKNOWN:
        tags = _FOREIGN_TAG.findall(low, a, b)
        deepest = _nesting(root, tuple(tags), types) if len(tags) == low.count(b"<", a, b) else None
        if memo:
            _FOREIGN.put(key, deepest)
    return deepest  # type: ignore[return-value]


def _nesting(
    root: bytes, tags: tuple[tuple[bytes, bytes, bytes], ...], types: frozenset[bytes]
) -> int | None:
    """:func:`foreign_depth` from the tags inside ``root``."""
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

"""The edits' vocabulary, and what the rewriter holds while it applies them.

An :class:`Edit` names elements by CSS selector and says what to do with them, in
lol-html's words: ``before``, ``after``, ``prepend``, ``append``,
``set_inner_content``, ``replace``, ``remove``, plus ``reorder`` (sort the child
elements by key). A :class:`~.rewriter.Plan` compiles each into a
:class:`CompiledEdit`.

While an element's edits are under way the rewriter's output goes to a
:class:`Sink`: the response, the held parts of a list being reordered, or nowhere
(content being replaced). A sink's *marks* say which of its parts are an edit's
content and which stretch is a reordered list, so a recorder (see
:mod:`.replay`) can tell them apart from bytes copied from the input without
guessing. :func:`reordered` puts a list's held items in the wanted order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape as _escape_text
from typing import Literal

import msgspec

__all__ = [
    "ACTIONS",
    "CONTENT_ACTIONS",
    "ITEM_LINK",
    "Act",
    "Action",
    "CompiledEdit",
    "Edit",
    "Item",
    "KeyFunc",
    "Mark",
    "OrderFunc",
    "RewriteError",
    "Sink",
    "reordered",
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
#: The actions that change an element's content: an element gets at most one.
CONTENT_ACTIONS = frozenset(("set_inner_content", "replace", "remove", "reorder"))

KeyFunc = Callable[[dict[str, str]], "str | None"]
#: For an edit with ``key_link``: the name under which ``key`` finds the item's first
#: link (its first ``<a href>``) among the attributes; never an attribute's name
#: (a name cannot hold a space).
ITEM_LINK = "first link"
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
    With ``key_link``, ``key`` is called once the item has ended and finds the
    ``href`` of the item's first ``<a>`` among the attributes, as ``ITEM_LINK``
    (for themes whose items say which product they are only by their link).

    An element gets at most one content-changing action (``set_inner_content``,
    ``replace``, ``remove``, ``reorder``): the first matching edit in the list
    wins.  ``before``/``after`` always apply; ``prepend``/``append`` apply unless
    the element is replaced or removed (with ``set_inner_content`` they frame
    the new content).  Void elements (``<img>``) have no content, so only
    ``before``, ``after``, ``replace`` and ``remove`` apply to them.  Elements
    inside an element whose content is discarded are not matched; elements
    inside ``<template>`` are never matched (they are not in the document tree).

    A frozen ``msgspec.Struct`` rather than a dataclass: a page's decision makes
    several, and the Struct is the cheaper to make (see ``bench/README.md``).
    """

    selector: str
    action: Action
    content: bytes | str = b""
    html: bool = True
    key_attr: str | None = None
    key: KeyFunc | None = None
    order: Sequence[str] | OrderFunc | None = None
    key_link: bool = False

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
class CompiledEdit:
    """An edit as a plan applies it: its place in the edit list, its content as
    bytes and its selectors as compound indexes."""

    index: int
    edit: Edit
    action: str
    content: bytes
    # Each selector as (compound indexes left to right, combinators between them).
    selectors: list[tuple[tuple[int, ...], tuple[str, ...]]]
    key_attr: bytes | None


#: A held list item: (its first part, the part after its last, its key).
Item = tuple[int, int, "str | None"]
#: In a sink's parts: (first part, end part, edit index, held list). An edit's
#: content is one part and no held list; a reordered list is the parts from first
#: to end, and the sink that held its items.
Mark = tuple[int, int, int, "Sink | None"]


class Sink:
    """Where output goes: the response, a reorder's held parts, or nowhere."""

    __slots__ = ("discard", "hold_from", "item_start", "items", "marks", "parts")

    def __init__(self, parts: list[bytes], discard: bool = False, hold_from: int = 0) -> None:
        self.parts = parts
        self.discard = discard
        self.hold_from = hold_from
        self.items: list[Item] = []
        self.item_start = 0
        # Kept only while the rewriter is recorded (see Rewriter.record).
        self.marks: list[Mark] = []


class Act:
    """Work pending at the end of an open element."""

    __slots__ = (
        "after",
        "append",
        "edit",
        "fast_tried",
        "item_attrs",
        "item_key",
        "item_of",
        "kind",
        "sink",
    )

    def __init__(self) -> None:
        self.after: list[CompiledEdit] = []
        self.append: list[CompiledEdit] = []
        self.kind = ""  # "", "drop" (replace/remove), "inner", "reorder"
        self.edit: CompiledEdit | None = None
        self.sink: Sink | None = None
        self.item_of: Sink | None = None  # the reorder sink this element is an item of
        self.item_key: str | None = None
        # An item keyed by its link: its attributes, until its end shows the link.
        self.item_attrs: tuple[KeyFunc, dict[str, str]] | None = None
        # Whether the content's end was looked for at once (see ListItems._dropped_end).
        self.fast_tried = False


def reordered(
    parts: list[bytes], items: list[Item], order: Sequence[str] | OrderFunc | None
) -> list[bytes]:
    """The held *parts* of a reorder root with its *items* put in the wanted *order*
    (an edit's ``order``)."""
    if not items:
        return parts
    keys = [k for _a, _b, k in items]
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
    out = []
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

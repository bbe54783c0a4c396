"""The list fast paths: moving a reordered list's items without the element stack.

The children of an element being reordered are items. The exact path follows
each through the element stack (see :mod:`.tree`); these paths move an item
whole when its markup is simple (see :func:`is_simple_markup`) and nothing in
it can match a selector, open or close an element implicitly, or change the
tokenizer's state. Three ways, tried in this order for each list:

- :meth:`ListItems._split_items`: items that each end with their own plain end
  tag (``</li>``), cut apart with one ``bytes.split`` and checked once per
  *shape* (the piece with every digit read as ``0``): a product grid whose items
  differ in ids and prices is checked a few times, not per item.
- :meth:`ListItems._bulk_items`: a run of like items in a stretch already known
  to be simple, found by their junctions and checked per distinct sequence of
  structural tags.
- :meth:`ListItems._simple_item_end`: one item at a time, to its end tag.

What goes into the held output is exactly what the exact path puts there, so
the paths may alternate item by item. An inline ``<svg>`` or ``<math>`` whose
content is simple foreign markup is stepped over whole, in and out of items.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from itertools import accumulate
from typing import Protocol, TypeVar

from edge.caches import LRU, Memo

from . import scanner as sc
from .edits import ITEM_LINK, Act, Sink
from .patterns import DIGITS, DIGITS_TO_ZERO, ItemShape, ScanPatterns, has_any
from .scanner import LOWER_NAMES
from .tree import (
    FOREIGN_START,
    HTML,
    ITEM_NAMES,
    KNOWN_FOREIGN,
    MAY_CLOSE,
    follow_structure,
)

__all__ = ["ItemsPlan", "ListItems", "first_link", "is_simple_markup"]

_T = TypeVar("_T")
_EMPTY: frozenset[bytes] = frozenset()
_UNKNOWN = object()
#: Room for a foreign element nested inside an item: the item's check bounds it.
_ANY_DEPTH = 1 << 62
_ITEM_DELIMS = frozenset(b"\t\n\f\r />")
_BETWEEN_ITEMS = re.compile(rb"(?:[^<]++|<(?=[^A-Za-z/!?])|" + sc.COMMENT_SRC + rb")*+")
_BAD_COMMENT = re.compile(rb"<!--(?!-?>)[^>]*+(?<!--)(?<!--!)>")
_NOT_SKELETON = bytes(b for b in range(256) if b not in b"<>=\"'")
_SKELETON_QUOTED_ANGLE = re.compile(rb"=(?:\"[^\"<>]*+[<>]|'[^'<>]*+[<>])")
#: Verdicts on a list's stretch by its bytes (and what else they depend on), up to
#: this many bytes of stretches: see :meth:`ListItems._fast_items`.
_REGIONS_BYTES = 4 << 20
_REGIONS: LRU[tuple[object, ...], tuple[object, int]] = LRU(_REGIONS_BYTES, weigh=lambda v: v[1])
#: The last stretch whose verdicts were worked out, by its length and what else
#: decides them: a stretch that differs from it only in opaque runs (see
#: :func:`differs_in_opaque_runs`) has its verdicts.
_NEAR: LRU[tuple[object, ...], bytes] = LRU(_REGIONS_BYTES // 2, weigh=len)
#: What a token, a price or a product's name is made of: bytes no list verdict
#: reads outside a tag's name (not a delimiter of a tag, a value, a comment or
#: CDATA, and no "<").
_OPAQUE = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.:%")
_OPAQUE_RUN = re.compile(rb"[0-9A-Za-z_.:%]*+")
#: What may come right before a changed run: a value's quote, "=", or the "+"
#: and "/" of a base64 token ("/" not after "<": then the run is a tag's name).
_BEFORE_RUN = frozenset(b"\"'=+/")
_BLOCK = 1024
_MAX_RUNS = 512


def differs_in_opaque_runs(old: bytes, new: bytes) -> bool:
    """Whether *new* is *old* with only whole runs of :data:`_OPAQUE` bytes changed
    (each to a run of the same length), each run right after a quote, "=", "+" or
    a "/" that does not follow "<": a CSRF token in each product card's form, as
    shops render them (a new one on every response, often one per form).

    The list verdicts read a stretch's structure: where "<", ">", quotes, "=",
    "/", whitespace and comment markers are, how long things are, the names right
    after "<" and "</", and whether a tested attribute name occurs (checked by the
    caller on the real bytes). Such a change moves none of them, and no changed
    run is a tag's name (it would follow "<", "</" or a name's own bytes), so the
    verdicts are equal; ``tests/test_rewrite.py`` checks it against verdicts worked
    out afresh. Costs ~2 slices per 256 bytes and a few thousand instructions a
    changed run, against the ~0.8M instructions of a 26 KB list's verdicts."""
    n = len(old)
    if len(new) != n:
        return False
    blocks = [a for a in range(0, n, _BLOCK) if old[a : a + _BLOCK] != new[a : a + _BLOCK]]
    if len(blocks) > _MAX_RUNS:
        return False
    done = 0  # old[:done] and new[:done] are equal but for checked runs
    runs = 0
    for a in blocks:
        b = min(a + _BLOCK, n)
        at = max(a, done)
        while at < b and old[at:b] != new[at:b]:
            lo, hi = at, b  # the first difference is in lo..hi
            while hi - lo > 16:
                mid = (lo + hi) // 2
                if old[lo:mid] == new[lo:mid]:
                    lo = mid
                else:
                    hi = mid
            while old[lo] == new[lo]:
                lo += 1
            if old[lo] not in _OPAQUE or new[lo] not in _OPAQUE:
                return False
            start = lo  # (before lo, both are equal, and a run ends at a non-opaque byte)
            while start > 0 and old[start - 1] in _OPAQUE:
                start -= 1
            end = _OPAQUE_RUN.match(old, lo).end()
            if start == 0 or _OPAQUE_RUN.match(new, lo).end() != end:
                return False  # (a run that starts a stretch: what is before it is not known)
            before = old[start - 1]
            if before not in _BEFORE_RUN or (
                before == 0x2F and (start < 2 or old[start - 2] == 0x3C)
            ):
                return False
            runs += 1
            if runs > _MAX_RUNS:
                return False
            at = done = end
    return True


def is_simple_markup(buf: bytes | bytearray, a: int, b: int) -> bool:
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
    # Most values hold none of ``<>="'``: when every quote is in such an empty
    # ``=""`` or ``=''``, no value can hold an angle. Counting costs ~70k
    # instructions on a 26 KB product grid, the search ~400k (it tries every "=").
    for empty in (b'=""', b"=''"):
        quotes = skeleton.count(empty[1:2])
        if quotes and quotes != 2 * skeleton.count(empty):
            return _SKELETON_QUOTED_ANGLE.search(skeleton) is None
    return True


_LINK_START = re.compile(rb"<[aA][\t\n\f\r />]")


def first_link(item: bytes) -> str:
    """The ``href`` of the first ``<a>`` in an item's markup ("" if none): how a
    theme whose items carry no id says which product each is."""
    at = 0
    while (m := _LINK_START.search(item, at)) is not None:
        tm = sc.START_TAG.match(item, m.start())
        if tm is None:
            return ""
        href = sc.attrs_of(tm.group(2)).get(b"href")
        if href is not None:
            return href.decode("utf-8", "replace").strip()
        at = tm.end()
    return ""


@functools.lru_cache(maxsize=256)
def _item_patterns(name: bytes) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """In simple lowercased markup: a separator then an item's start tag (group
    2), and a junction between items: end tag, separator (group 1), start tag
    (group 2)."""
    n = re.escape(name)
    sep = rb"((?:[^<]++|<!--[^<>]*-->|<(?![a-z/!?]))*+)"
    start = rb"(<" + n + rb"(?=[\t\n\f\r />])[^>]*+>)"
    return re.compile(sep + start), re.compile(rb"</" + n + rb"[\t\n\f\r ]*+>" + sep + start)


@functools.lru_cache(maxsize=256)
def _simple_end_pattern(name: bytes) -> re.Pattern[bytes]:
    """A plain end tag of ``name`` (any case, no attributes)."""
    return re.compile(rb"</(?i:" + re.escape(name) + rb")[\t\n\f\r ]*+>")


def _near(key: tuple[object, ...], near_key: tuple[object, ...]) -> tuple[object, int] | None:
    """The verdicts kept for the stretch last worked out under *near_key* (its length
    and what else decides them), if the stretch ``key[0]`` differs from it in
    opaque runs alone."""
    old = _NEAR.get(near_key)
    if old is None:
        return None
    new = key[0]
    last = _LAST_NEAR[0]
    if last is None or last[0] is not old or last[1] is not new:  # (one check a pair)
        last = _LAST_NEAR[0] = (old, new, differs_in_opaque_runs(old, new))  # type: ignore[arg-type]
    return _REGIONS.get((old, *key[1:])) if last[2] else None


#: The last pair of stretches :func:`_near` compared (by identity) and the answer:
#: a list's two verdicts ask about the same pair.
_LAST_NEAR: list[tuple[object, object, bool] | None] = [None]
#: The last list stretch copied (see :meth:`ListItems._region_bytes`): one, so
#: bounded by the longest list.
_LAST_REGION: list[bytes] = [b""]


class ItemsPlan(Protocol):
    """What the list fast paths read of the rewriter's :class:`~.rewriter.Plan`."""

    types: frozenset[bytes]
    match_all: bool
    max_depth: int
    scan: ScanPatterns


class ListItems:
    """The list fast paths and the items' keys, mixed into
    :class:`~.rewriter.Rewriter`: they work on its input, element stack and
    output (annotated below) and call its ``_flush`` and ``_foreign_end``."""

    plan: ItemsPlan
    _buf: bytearray
    _low: bytearray
    _stack: list[tuple[bytes, int, int, Act | None]]
    _sink: Sink
    _emitted: int
    _flush: Callable[[int], None]
    _foreign_end: Callable[[bytes, int, int, bool], int]
    _known_foreign: Callable[[int, int], tuple[bytes, int, int] | None]

    def _init_items(self) -> None:
        """A new document: no list seen yet."""
        # Bytes from the current position a list item needs before the fast
        # path looks at it again (so a trickle of tiny chunks stays linear).
        self._items_need = 0
        # How many more elements may open inside an item (plan.max_depth).
        self._room = 0
        # The list's first end tag (-1: not known), whether the markup up to it
        # is simple, and whether a run of items was tried there.
        self._list_end = -1
        self._list_act: Act | None = None
        self._list_simple = False
        self._bulk_tried = False
        self._simple_upto = -1
        # The stretch of the list last copied: (start, end, its bytes).
        self._region: tuple[int, int, bytes] | None = None

    def _fast_items(self, pos: int, final: bool) -> int:
        """Move the items of the list being reordered (the top of the stack)
        into its held output without the element stack, while they are simple.

        Returns the position where the exact path takes over (an item that is
        not simple, or the end tag of the list), or ``-pos - 1`` to wait for
        more input.
        """
        buf = self._buf
        n = len(buf)
        if n - pos < self._items_need and not final:
            return -pos - 1
        self._items_need = 0
        stack = self._stack
        if len(stack) + 1 >= self.plan.max_depth or any(e[1] != HTML for e in stack):
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
                self._list_simple = self._simple_region(pos, end)
                self._bulk_tried = False
        self._simple_upto = self._list_end if self._list_end >= pos and self._list_simple else -1
        lits = plan.scan.attr_literals
        low = self._low
        while True:
            q = _BETWEEN_ITEMS.match(buf, pos).end()
            if q >= n:
                return q if final else -q - 1
            tm = sc.START_TAG.match(buf, q)
            if tm is None or plan.match_all:
                return q
            raw = tm.group(1)
            name = LOWER_NAMES.get(raw) or raw.lower()
            a = tm.end()
            if (
                name not in ITEM_NAMES
                or name in types
                or MAY_CLOSE.get(name, _EMPTY) & open_names
                or (lits and has_any(low, lits, q, a))
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
            sink.items.append((first, len(parts), self._item_key_of(tm.group(2), parts[-1])))
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

    def _simple_region(self, a: int, b: int) -> bool:
        """:func:`is_simple_markup` of the input ``a..b``, remembered by its bytes
        (or those of a stretch it differs from in opaque runs alone)."""
        region = self._region_bytes(a, b)
        # The exact key first: hashing a 26 KB list (~7 us) costs less than
        # differs_in_opaque_runs on it (~10 us even when equal); trying the near
        # stretch first measured +44k/+60k instructions a page (issue 19).
        simple = _REGIONS.get((region,)) or _near((region,), (len(region),))
        if simple is None:
            simple = (is_simple_markup(region, 0, len(region)), len(region))
            _REGIONS[(region,)] = simple
            _NEAR[(len(region),)] = region
        return simple[0]  # type: ignore[return-value]

    # -- items cut apart at their end tags ---------------------------------------

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
        buf = self._buf
        if plan.match_all:
            return pos
        tm = sc.START_TAG.match(buf, _BETWEEN_ITEMS.match(buf, pos, end).end(), end)
        if tm is None:
            return pos
        name = tm.group(1).lower()
        act = self._stack[-1][3]
        assert act is not None and act.edit is not None and act.sink is not None
        key_attr = act.edit.key_attr
        if (
            name not in ITEM_NAMES
            or name in plan.types
            or MAY_CLOSE.get(name, _EMPTY) & open_names
            or any(c in DIGITS for c in name)
            or (key_attr is not None and any(c in DIGITS for c in key_attr))
        ):
            return pos
        close = b"</" + name + b">"
        first = self._low.find(close, pos, end)
        if first < 0:
            return pos
        # The first piece alone first: when it is no simple item (an <svg> in a
        # product card, a heading in a shelf) nothing is moved, and the shapes of
        # the whole list (a translate and a split: ~0.2M instructions for a 26 KB
        # list) are not needed.
        after = first + len(close)
        low = self._low
        q = _BETWEEN_ITEMS.match(low, pos, after).end()
        if low.find(b"<svg", q, after) >= 0 or low.find(b"<math", q, after) >= 0:
            # No simple item (see _item_shape), known without its shape: a product
            # card's art costs its 6 KB shape nothing (~0.1M instructions a page).
            self._flush(pos)
            return pos
        piece = bytes(low[pos:after])
        shape = piece[: -len(close)].translate(DIGITS_TO_ZERO)
        if not self._shape_verdicts(piece, [shape], [0, len(piece)], name, open_names, key_attr):
            self._flush(pos)
            return pos
        low = bytes(self._low[pos:end])
        shapes = low.translate(DIGITS_TO_ZERO).split(close)
        if len(shapes) < 2:
            return pos
        shapes.pop()  # what follows the last end tag is left to the other paths
        bounds = list(accumulate([len(shape) + len(close) for shape in shapes], initial=0))
        found = self._shape_verdicts(low, shapes, bounds, name, open_names, key_attr)
        self._flush(pos)
        assert self._sink is act.sink and not act.sink.discard
        region = bytes(buf[pos:end])
        n = len(found)
        if n and found.count(found[0]) == n:
            self._move_grid(act.sink, region, bounds, found[0], n, len(name) + 1, key_attr)
        else:
            self._move_pieces(act.sink, region, bounds, found, len(name) + 1, key_attr)
        self._emitted = pos + bounds[n]
        return pos + bounds[n]

    def _shape_verdicts(
        self,
        low: bytes,
        shapes: list[bytes],
        bounds: list[int],
        name: bytes,
        open_names: frozenset[bytes],
        key_attr: bytes | None,
    ) -> list[ItemShape]:
        """The verdicts of the pieces ``low[bounds[i]:bounds[i + 1]]`` (of shapes
        ``shapes``), up to the first that is not a simple item."""
        memos = self.plan.scan.item_shapes
        memo_key = (name, open_names, self._room, key_attr)
        memo = memos.get(memo_key)
        if memo is None:
            memo = memos.put(memo_key, Memo(1024))
        found: list[object] = []
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
                verdict = found[i] = memo.put(
                    shapes[i],
                    self._item_shape(
                        low[at : bounds[i + 1]], shapes[i], name, open_names, key_attr
                    ),
                )
            if verdict is None:
                del found[i:]
                break
        return found  # type: ignore[return-value]

    def _move_grid(
        self,
        sink: Sink,
        region: bytes,
        bounds: list[int],
        verdict: ItemShape,
        n: int,
        skip: int,
        key_attr: bytes | None,
    ) -> None:
        """Move the first ``n`` pieces of ``region``, all of one shape (a product
        grid), with comprehensions."""
        sep, start_end, vs, ve = verdict  # type: ignore[misc]
        starts = bounds[:n]
        ends = bounds[1 : n + 1]
        if vs >= 0:
            decode = sc.decode_entities
            keys: list[str | None] = [
                (decode(v) if b"&" in v else v).decode("utf-8", "replace")
                for v in [region[at + vs : at + ve] for at in starts]
            ]
        elif key_attr is None:
            key_of = self._item_key_of
            if self._keyed_by_link():
                keys = [
                    key_of(region[at + sep + skip : at + start_end - 1], region[at + sep : e])
                    for at, e in zip(starts, ends, strict=True)
                ]
            else:
                keys = [key_of(region[at + sep + skip : at + start_end - 1]) for at in starts]
        else:
            keys = [None] * n
        parts = sink.parts
        base = len(parts)
        if sep:
            both: list[bytes] = [b""] * (2 * n)
            both[0::2] = [region[at : at + sep] for at in starts]
            both[1::2] = [region[at + sep : e] for at, e in zip(starts, ends, strict=True)]
            parts.extend(both)
            sink.items.extend(
                zip(
                    range(base + 1, base + 2 * n, 2),
                    range(base + 2, base + 2 * n + 1, 2),
                    keys,
                    strict=True,
                )
            )
        else:
            parts.extend([region[at:e] for at, e in zip(starts, ends, strict=True)])
            sink.items.extend(
                zip(range(base, base + n), range(base + 1, base + n + 1), keys, strict=True)
            )

    def _move_pieces(
        self,
        sink: Sink,
        region: bytes,
        bounds: list[int],
        found: list[ItemShape],
        skip: int,
        key_attr: bytes | None,
    ) -> None:
        """Move the pieces of ``region`` whose verdicts are ``found``, one by one."""
        append = sink.parts.append
        add_item = sink.items.append
        key_of = self._item_key_of
        decode = sc.decode_entities
        parts = sink.parts
        by_link = key_attr is None and self._keyed_by_link()
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
                key = key_of(
                    region[at + sep + skip : at + start_end - 1],
                    region[at + sep : e] if by_link else None,
                )
            else:
                key = None
            k = len(parts)
            add_item((k - 1, k, key))

    def _item_shape(
        self,
        piece: bytes,
        shape: bytes,
        name: bytes,
        open_names: frozenset[bytes],
        key_attr: bytes | None,
    ) -> ItemShape:
        """For :meth:`_split_items`, a piece (lowercased, its end tag included)
        that is a separator then one simple item ``name``: the item's offset,
        its start tag's end and its key value's span (-1, -1 if it has none);
        None if it is not such a piece."""
        plan = self.plan
        scan = plan.scan
        sep = _BETWEEN_ITEMS.match(piece).end()
        skip = len(name) + 1
        if not piece.startswith(b"<" + name, sep) or piece[sep + skip] not in _ITEM_DELIMS:
            return None
        item = piece[sep:]
        if (
            b"<svg" in item
            or b"<math" in item
            or any(lit in shape for lit in scan.shape_literals)
            or any(tag in shape for tag in scan.shape_digit_tags)
            or item.count(b"<") >= self._room
            or not is_simple_markup(item, 0, len(item))
        ):
            return None
        # Its structural tags: its own start tag first, its end tag last, and
        # in between tags that nest and close nothing outside.
        words = scan.structural_tags.findall(item)
        if words[0] != name or words.count(name) != 1 or words.index(b"/" + name) != len(words) - 1:
            return None
        tags = tuple((b"/", t[1:]) if t[:1] == b"/" else (b"", t) for t in words[1:-1])
        if follow_structure(name, open_names, (), tags, plan.types) != ():
            return None
        start_end = item.find(b">") + 1  # simple markup: a tag ends at its first ">"
        if key_attr is not None:
            for m in sc.ATTR.finditer(item, skip, start_end - 1):
                if m.group(1) == key_attr:  # the first of duplicates wins
                    g = next((g for g in (2, 3, 4) if m.start(g) >= 0), 0)
                    at = m.start(g) if g else start_end
                    return sep, sep + start_end, sep + at, sep + (m.end(g) if g else start_end)
        return sep, sep + start_end, -1, -1

    # -- runs of items, and one item at a time ------------------------------------

    def _bulk_items(self, pos: int, name: bytes, open_names: frozenset[bytes]) -> int:
        """Move a run of list items named ``name`` at once, in the stretch already
        known to be simple markup; returns where the run ends (``pos`` if none)."""
        upto = self._simple_upto
        region = self._region_bytes(pos, upto)
        plan = self.plan
        rest = (name, open_names, self._room, plan.types, plan.scan.attr_literals)
        found = _REGIONS.get((region, *rest), _UNKNOWN)
        if found is _UNKNOWN:
            # By a stretch it differs from in opaque runs alone, unless a tested
            # attribute name occurs in it (only such stretches are kept as near).
            lits = plan.scan.attr_literals
            plain = not (lits and has_any(self._low, lits, pos, upto))
            near = _near((region, *rest), (len(region), *rest)) if plain else None
            if near is None:
                near = (self._bulk_runs(pos, upto, name, open_names), len(region))
                _REGIONS[(region, *rest)] = near
                if plain:
                    _NEAR[(len(region), *rest)] = region
            found = near
        found = found[0]  # type: ignore[index]
        if found is None:
            return pos
        runs, p = found  # type: ignore[misc]
        act = self._stack[-1][3]
        assert act is not None and act.sink is not None
        sink = act.sink
        parts = sink.parts
        assert self._sink is sink and not sink.discard
        skip = len(name) + 1
        items = sink.items
        key_of = self._item_key_of
        prev = self._emitted - pos
        for q, a, e in runs:
            if q > prev:  # the separator stays where it is
                parts.append(
                    region[prev:q] if prev >= 0 else bytes(self._buf[pos + prev : pos]) + region[:q]
                )
            parts.append(region[q:e])
            at = len(parts)
            items.append((at - 1, at, key_of(region[q + skip : a - 1], parts[-1])))
            prev = e
        self._emitted = pos + prev
        return pos + p

    def _region_bytes(self, a: int, b: int) -> bytes:
        """The input ``a..b`` as bytes, copied once per list (its key in ``_REGIONS``)."""
        kept = self._region
        if kept is not None and kept[0] == a and kept[1] == b:
            return kept[2]
        last = _LAST_REGION[0]
        if len(last) == b - a and self._buf.startswith(last, a):
            # The same bytes as the last list's (a page served again): that object,
            # whose hash is kept, saves copying and hashing them (~0.1M
            # instructions for a 26 KB list; startswith is one memcmp).
            region = last
        else:
            region = _LAST_REGION[0] = bytes(memoryview(self._buf)[a:b])
        self._region = (a, b, region)
        return region

    def _bulk_runs(
        self, pos: int, upto: int, name: bytes, open_names: frozenset[bytes]
    ) -> tuple[list[tuple[int, int, int]], int] | None:
        """For :meth:`_bulk_items`: the run of items from ``pos`` in the simple
        stretch up to ``upto``, as (start, start tag's end, end) offsets from
        ``pos``, and where the run ends; None if there is none.

        Items are found by their junctions (an end tag of their name, a
        separator, a start tag of their name); as many start and end tags of
        that name as items prove none is nested, ended early or missed, and the
        structural tags inside (checked per distinct sequence) prove nothing
        closes outside its item. What it reads lies in ``pos..upto`` (a foreign
        element's end looked for beyond is refused), so the answer depends on
        those bytes and the arguments alone.
        """
        low = self._low
        plan = self.plan
        head, junction = _item_patterns(name)
        m = head.match(low, pos, upto)
        if m is None:
            return None
        runs = [[m.start(2), m.end(2), 0]]  # start, start tag end, end
        for j in junction.finditer(low, m.end(2), upto):
            runs[-1][2] = j.start(1)
            runs.append([j.start(2), j.end(2), 0])
        last = _simple_end_pattern(name).search(low, runs[-1][1], upto)
        if last is None:
            runs.pop()
            if not runs:
                return None
        else:
            runs[-1][2] = last.end()
        p = runs[-1][2]
        lits = plan.scan.attr_literals
        if lits and has_any(low, lits, pos, p):
            return None
        room = self._room
        for q, _a, e in runs:
            if e - q > 3 * room and low.count(b"<", q, e) >= room:
                return None
        # Every item's structural tags, "name ... /name": one start and one end
        # tag of its name each (none nested, none ended early).
        structure = self._outside_foreign(plan.scan.structural_tags.findall, pos, p)
        if structure is None:
            return None
        joined = b" " + b" ".join(structure) + b" "
        per_item = joined.split(b" /" + name + b" ")
        if len(per_item) != len(runs) + 1 or per_item[-1].strip():
            return None
        for seq in set(per_item[:-1]):
            words = seq.split()
            if not words or words[0] != name or words.count(name) != 1:
                return None
            tags = tuple((b"/", t[1:]) if t[:1] == b"/" else (b"", t) for t in words[1:])
            if follow_structure(name, open_names, (), tags, plan.types) != ():
                return None
        return [(q - pos, a - pos, e - pos) for q, a, e in runs], p - pos

    def _outside_foreign(
        self, find: Callable[[bytearray, int, int], list[_T]], a: int, b: int
    ) -> list[_T] | None:
        """``find(low, a, b)`` minus what lies inside ``<svg>``/``<math>``
        elements, each of which must be simple (see ``Rewriter._foreign_end``)
        and end before ``b``; None if one is not.  From outside, a simple
        foreign element is like a void one: nothing in it can match, close or
        open anything."""
        low = self._low
        m = FOREIGN_START.search(low, a, b)
        if m is None:
            return find(low, a, b)
        types = self.plan.types
        found: list[_T] = []
        at = a
        while m is not None:
            found += find(low, at, m.start())
            name = m.group(1)
            if name in types:
                return None
            s = m.start()
            known = self._known_foreign(s, -1)
            if known is not None and known in KNOWN_FOREIGN:
                at = s + len(known[0])
            else:
                tm = sc.START_TAG.match(self._buf, s, b)
                if tm is None:
                    return None
                at = tm.end()
                if not sc.is_self_closing(tm.group(2)):
                    at = self._foreign_end(name, at, _ANY_DEPTH, True)
                    if at < 0 or at > b:
                        return None
                    if known is not None and at - s == len(known[0]):
                        KNOWN_FOREIGN[known] = at - s
            if at > b:
                return None
            m = FOREIGN_START.search(low, at, b)
        found += find(low, at, b)
        return found

    def _simple_item_end(self, name: bytes, a: int, open_names: frozenset[bytes]) -> int | None:
        """End of the simple element ``name`` whose content starts at ``a``;
        None if it is not simple, -1 if its end is not in the input yet.

        Simple: the content is simple markup (so every ``<`` + letter in it
        is a real tag) and, among the elements that can close others (see
        :data:`.tree.STRUCTURAL`), start and end tags nest and close nothing
        outside.  ``name`` is special, so an end tag of any other element stops
        at it.
        """
        buf = self._buf
        end_tag = _simple_end_pattern(name)
        plan = self.plan
        lits = plan.scan.attr_literals
        found = plan.scan.structural.findall
        low = self._low
        inner: tuple[bytes, ...] = ()
        seg = a
        while (em := end_tag.search(buf, seg)) is not None:
            b = em.start()
            if (
                (b > self._simple_upto and not is_simple_markup(buf, seg, b))
                or (lits and has_any(low, lits, seg, b))
                or (b - seg > 3 * self._room and low.count(b"<", seg, b) >= self._room)
            ):
                return None
            found_seq = self._outside_foreign(found, seg, b)
            if found_seq is None:
                return None
            after = follow_structure(name, open_names, inner, tuple(found_seq), plan.types)
            if after is None:
                return None
            inner = after
            if not inner:
                return em.end()
            if inner[-1] != name:
                return None
            inner = inner[:-1]  # that end tag closes a nested element of the same name
            seg = em.end()
        return -1  # its end is not here yet

    def _dropped_end(self, pos: int, act: Act) -> int:
        """In the content (from ``pos``, right after its start tag) of the element on
        top of the stack, whose content is dropped (replaced, removed or given new
        inner content): where its end tag starts when the content is simple (see
        :meth:`_simple_item_end`), else ``pos``. The exact path would follow each
        tag of the content only to find that end (a hero's ~20 tags: ~0.3M
        instructions). Tried once per element (``act``: its pending work)."""
        if act.fast_tried:
            return pos
        act.fast_tried = True
        stack = self._stack
        name, ns = stack[-1][0], stack[-1][1]
        plan = self.plan
        first = self._buf.find(b"<", pos)
        if (
            first < 0
            or self._buf.startswith(b"</", first)  # no element inside before an end tag
            or ns != HTML
            or name not in ITEM_NAMES
            or plan.match_all
            or any(e[1] != HTML for e in stack)
        ):
            return pos
        room, upto = self._room, self._simple_upto
        self._room, self._simple_upto = plan.max_depth - len(stack), -1
        try:
            end = self._simple_item_end(name, pos, frozenset(e[0] for e in stack[:-1]))
        finally:
            self._room, self._simple_upto = room, upto
        if end is None or end < 0:
            return pos
        return self._buf.rfind(b"</", pos, end)

    # -- items' keys ------------------------------------------------------------

    def _keyed_by_link(self) -> bool:
        """Whether the list on top of the stack keys its items by their first link."""
        top = self._stack[-1][3]
        return top is not None and top.edit is not None and top.edit.edit.key_link

    def _item_key_of(self, area: bytes, item: bytes | None = None) -> str | None:
        """:meth:`_item_key` from a start tag's attribute area (``item``: the whole
        item, for an edit keyed by link)."""
        top = self._stack[-1][3]
        assert top is not None and top.edit is not None
        key = top.edit.key_attr
        if key is None:
            return self._item_key(sc.attrs_of(area), item)
        if key not in area.lower():
            return None
        value = sc.attrs_of(area).get(key)  # (the first of duplicates, decoded)
        return None if value is None else value.decode("utf-8", "replace")

    def _item_key(
        self, attrs: Mapping[bytes, bytes], item: bytes | None = None, act: Act | None = None
    ) -> str | None:
        """The key of an item of the list on top of the stack, given its attributes
        and, for an edit keyed by link, the item's markup; without the markup (the
        exact path, at the item's start) the call waits on ``act`` for its end."""
        top = self._stack[-1][3]
        assert top is not None and top.edit is not None
        ce = top.edit
        if ce.key_attr is not None:
            value = attrs.get(ce.key_attr)
            return None if value is None else value.decode("utf-8", "replace")
        edit = ce.edit
        assert edit.key is not None
        named = {k.decode("latin-1"): v.decode("utf-8", "replace") for k, v in attrs.items()}
        if edit.key_link:
            if item is None:
                assert act is not None
                act.item_attrs = (edit.key, named)
                return None
            named[ITEM_LINK] = first_link(item)
        return edit.key(named)

    def _end_item(self, act: Act) -> None:
        """An element ended: if it is an item of a list, note it among the list's items."""
        sink = act.item_of
        if sink is not None:
            key = act.item_key
            waiting = act.item_attrs
            if waiting is not None:  # keyed by its link: the item is whole now
                key_func, named = waiting
                named[ITEM_LINK] = first_link(b"".join(sink.parts[sink.item_start :]))
                key = key_func(named)
            sink.items.append((sink.item_start, len(sink.parts), key))

"""A placement's arms: what it shows (its snippet or sort, or each of its ``variants``)
and the checks of what it shows, with the place of each mistake.

A placement without ``variants`` has one arm named ``default`` made of its own
``snippet``/``sort``/``action``; with them, one arm per variant (a variant's
``action`` defaults to the placement's). The holdout is not an arm here:
``edge/placements.py`` assigns a visitor to it, or to one of these by weight.

Variants are written inline (``variants = [{ name = "warm", snippet = "a.html" }]``)
or as ``[[placements.variants]]`` tables under their placement; an error inside one
points at its key in either form.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from typing import Final

import msgspec

from edge.rules.errors import Locator
from edge.rules.spec import SORT_KEYS, Placement, Variant

__all__ = ["DEFAULT_ARM", "HOLDOUT_ARM", "arms_of", "check_shows", "variant_key"]

DEFAULT_ARM: Final = "default"
"""The one arm of a placement without variants."""
HOLDOUT_ARM: Final = "holdout"
"""Eligible, held out: saw the shop's original (a name no variant may take)."""

Report = Callable[[tuple[int, int], str, str, int], None]
"""(line, column), message, help, length: one error."""


def arms_of(p: Placement) -> tuple[Variant, ...]:
    """What *p* may show, as variants: its own ``variants`` (with the placement's
    ``action`` where a variant has none), or one ``default`` made of its snippet/sort."""
    if not p.variants:
        return (Variant(name=DEFAULT_ARM, snippet=p.snippet, sort=p.sort, action=p.action),)
    return tuple(
        v
        if v.action is not None or p.action is None
        else msgspec.structs.replace(v, action=p.action)
        for v in p.variants
    )


def _key_at(loc: Locator, header: int, key: str) -> tuple[int, int]:
    return loc.key(header, key) if key else (header or 1, 1)


def check_shows(p: Placement, loc: Locator, header: int, report: Report) -> None:
    """Errors in what *p* shows: one of snippet or sort (or variants, not with them),
    known sort keys, ``pin`` with ``sort = "pin"``; each variant named once (not
    ``holdout``), with a positive weight and one of snippet or sort."""

    def at(key: str, message: str, help: str = "", index: int | None = None) -> None:
        where = _key_at(loc, header, key) if index is None else variant_key(loc, header, index, key)
        report(where, message, help, len(key) or 1)

    sorts: list[str] = list(p.sort_keys)
    if p.variants:
        if p.snippet or p.sort:
            at(
                "snippet" if p.snippet else "sort",
                "a placement has `snippet`/`sort` or `variants`, not both",
                "move it into a variant, e.g. "
                f'{{ name = "a", {"snippet" if p.snippet else "sort"} = ... }}',
            )
        _check_variants(p, at)
        for v in p.variants:
            sorts += v.sort_keys
    elif bool(p.snippet) == bool(p.sort):
        at(
            "snippet" if p.snippet else "",
            "a placement shows a `snippet` or sets a `sort` (one of them)",
            'e.g. snippet = "hero_vip.html" or sort = "price desc", or variants = [...]',
        )
    _check_sorts(p.sort_keys, lambda m, h: at("sort", m, h))
    if "pin" in sorts and not p.pin:
        at(
            "sort",
            '`sort` has "pin" but `pin` lists no products',
            'list the product ids to show first, e.g. pin = ["p1001", "p1002"]',
        )
    if p.pin and "pin" not in sorts:
        at(
            "pin",
            '`pin` lists products but `sort` has no "pin"',
            'add "pin" to sort, e.g. sort = ["pin", "affinity"]',
        )


def _check_sorts(keys: list[str], report: Callable[[str, str], None]) -> None:
    for key in keys:
        if key not in SORT_KEYS:
            close = difflib.get_close_matches(key, SORT_KEYS, n=1)
            report(
                f"unknown sort `{key}`",
                f"did you mean `{close[0]}`?" if close else "one of: " + ", ".join(SORT_KEYS),
            )


def _check_variants(p: Placement, at: Callable[..., None]) -> None:
    seen: set[str] = set()
    for i, v in enumerate(p.variants):
        which = f"variant {i + 1}" + (f" `{v.name}`" if v.name else "")
        if not v.name.strip():
            at("", f"{which} has no `name`", 'name it, e.g. { name = "warm", ... }', i)
        elif v.name == HOLDOUT_ARM:
            at("name", f"`{HOLDOUT_ARM}` is the control group's name", "rename the variant", i)
        elif v.name in seen:
            at(
                "name",
                f"two variants of this placement are named `{v.name}`",
                "give each variant its own name (the report tells them apart by it)",
                i,
            )
        seen.add(v.name)
        if not (v.weight > 0 and math.isfinite(v.weight)):
            at(
                "weight",
                f"{which} has weight {v.weight:g}: a weight is a positive share",
                "write e.g. weight = 1 (remove the variant to stop showing it)",
                i,
            )
        if bool(v.snippet) == bool(v.sort):
            at(
                "snippet" if v.snippet else "",
                f"{which} shows a `snippet` or sets a `sort` (one of them)",
                'e.g. { name = "warm", snippet = "hero_vip.html" } or '
                '{ name = "cheap-first", sort = "price asc" }',
                i,
            )
        _check_sorts(v.sort_keys, lambda m, h, i=i: at("sort", m, h, i))


_INLINE_KEY = r"(?:^|[{{,\s])(?P<key>\"{key}\"|'{key}'|{key})\s*="


def variant_key(loc: Locator, header: int, index: int, key: str) -> tuple[int, int]:
    """(line, column) of *key* in the *index*-th variant of the placement whose
    ``[[placements]]`` header is on line *header*: inline (``variants = [{...}]``) or
    a ``[[placements.variants]]`` table; the variant itself without *key* (or when
    the key is not written), the ``variants`` key when the variant is not found."""
    spans = _inline_spans(loc, header)
    if spans is None:
        table = _variant_table(loc, header, index)
        if not table:
            return _key_at(loc, header, "variants")
        return loc.key(table, key) if key else (table, 1)
    if index >= len(spans):
        return _key_at(loc, header, "variants")
    start, end = spans[index]
    if key:
        pattern = re.compile(_INLINE_KEY.format(key=re.escape(key)))
        match = pattern.search(loc.text, start, end)
        if match:
            return loc.position(match.start("key"))
    return loc.position(start)


def _inline_spans(loc: Locator, header: int) -> list[tuple[int, int]] | None:
    """The (start, end) offsets of each ``{...}`` in the placement's ``variants = [``
    array, or None when it has no such key."""
    line, column = loc.key(header, "variants")
    if (line, column) == (header, 1) or not header:
        return None
    text = loc.text
    pos = text.find("=", loc.starts[line - 1] + column - 1) + 1
    spans: list[tuple[int, int]] = []
    depth, start, quote = 0, 0, ""
    while pos < len(text):
        ch = text[pos]
        if quote:
            if ch == "\\" and quote == '"':
                pos += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            newline = text.find("\n", pos)
            pos = len(text) if newline < 0 else newline
            continue
        elif ch in "[{":
            depth += 1
            if ch == "{" and depth == 2:
                start = pos
        elif ch in "]}":
            depth -= 1
            if ch == "}" and depth == 1:
                spans.append((start, pos + 1))
            if depth <= 0:
                break
        pos += 1
    return spans


def _variant_table(loc: Locator, header: int, index: int) -> int:
    """The header line of the *index*-th ``[[placements.variants]]`` under the
    placement at *header* (0 if none)."""
    following = [
        n
        for n in range(header + 1, len(loc.lines) + 1)
        if re.match(r"^\s*\[\[\s*placements\s*\.\s*variants\s*\]\]", loc.lines[n - 1])
        or re.match(r"^\s*\[\[\s*placements\s*\]\]", loc.lines[n - 1])
    ]
    tables = []
    for n in following:
        if "variants" not in loc.lines[n - 1]:
            break  # the next placement
        tables.append(n)
    return tables[index] if index < len(tables) else 0

"""The patterns a plan scans with, built from what its selectors need.

From the selectors a plan knows the start tags worth a look: the tag names and
attribute names the compounds require, plus those after which the tokenizer or
the tree builder works differently (``<svg>``, ``<math>``, ``<template>``,
``<plaintext>``, raw-text elements). :func:`scan_patterns` turns those into the
regular expressions the fast paths search with (see :mod:`.skim` and
:mod:`.items`) and the exact pattern that tokenizes what they cannot prove.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import NamedTuple

from edge.caches import Memo

from . import scanner as sc
from .tree import STRUCTURAL

__all__ = ["DIGITS", "DIGITS_TO_ZERO", "ItemShape", "ScanPatterns", "has_any", "scan_patterns"]

#: Start tags the tokenizer or the tree builder reads differently.
_SPECIAL_START = (
    b"script style xmp iframe noembed noframes textarea title plaintext template svg math".split()
)
_SERIALS = itertools.count()
DIGITS = frozenset(b"0123456789")
#: Items are checked by shape: their bytes with every digit read as "0".
DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
#: What a list item's shape says (see ``ListItems._item_shape``): the item's offset
#: in its piece, its start tag's end, its key value's span; None if not simple.
ItemShape = tuple[int, int, int, int] | None


def has_any(low: bytes | bytearray, literals: tuple[bytes, ...], a: int, b: int) -> bool:
    """Whether one of *literals* occurs in ``low[a:b]``."""
    return any(low.find(lit, a, b) >= 0 for lit in literals)


class ScanPatterns(NamedTuple):
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
    """For list items checked by shape (see ``ListItems._split_items``): the
    attribute names and the starts of tags with a digit in their name, as they
    read with every digit turned into "0"."""
    shape_digit_tags: tuple[bytes, ...]
    item_shapes: Memo[tuple[object, ...], Memo[bytes, ItemShape]]
    """Verdicts per item shape, keyed by what else they depend on; shared by the
    plans these patterns serve."""
    serial: int
    """Tells these patterns apart in the keys of verdicts kept by bytes (a tuple of
    patterns hashes slowly)."""


@functools.lru_cache(maxsize=256)
def scan_patterns(
    types: frozenset[bytes], attr_names: frozenset[bytes], match_all: bool
) -> ScanPatterns:
    """What a plan scans with, which depends only on the element types and attribute
    names its selectors need. Building it (the tries over every structural tag
    name) costs more than rewriting a page, and a plan is made for every new
    snippet content (a visitor's cart, a countdown), so it is made once per kind
    of selector set."""
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
    names = _trie({n: rb"(?=[\t\n\f\r />])" for n in STRUCTURAL | types})
    structural = re.compile(rb"<(/?)(" + names + rb")")
    structural_tags = re.compile(rb"<(/?(?:" + names + rb"))")
    candidate_span = 1 << 62 if match_all else 2 + max(len(n) for n in (*_SPECIAL_START, *types))
    attr_literals: tuple[bytes, ...] = tuple(sorted(attr_names))
    shape_literals = tuple(lit.translate(DIGITS_TO_ZERO) for lit in attr_literals)
    shape_digit_tags = tuple(
        sorted(
            prefix + n[: i + 1].translate(DIGITS_TO_ZERO)
            for n in STRUCTURAL | types
            for i in [next((j for j, c in enumerate(n) if c in DIGITS), -1)]
            if i >= 0
            for prefix in (b"<", b"</")
        )
    )
    return ScanPatterns(
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
        Memo(64),
        next(_SERIALS),
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
    and raw-text elements are no candidates: the skim looks back for them (see
    :mod:`.skim`).  A chunk boundary cannot hide a candidate: a name only counts
    once the byte after it is there.
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

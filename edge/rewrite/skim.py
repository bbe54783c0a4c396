"""Skimming: outside watched elements, the next tag worth a look, without
tokenizing the tags in between.

A :class:`Skim` finds the next candidate (a start tag a selector may match, or one
after which the tokenizer or the tree builder works differently) with one search
over a lowercased copy of the input, then proves the find is real markup by
looking back: not inside a comment or a raw-text element (``<script>``,
``<style>``, ``<textarea>``, ``<title>``, ...; their ends are searched for), and
not inside a tag (no tag opening or quote since the last ``>``, and no
``="``/``='`` value still open). When that proof fails, the exact skip pattern
tokenizes up to the next interesting token instead, so the result never depends
on the shortcut.
"""

from __future__ import annotations

import re

from . import scanner as sc
from .patterns import ScanPatterns

__all__ = ["Skim"]

#: In the stretch between the last ``>`` and a candidate: what could mean the
#: candidate sits inside a tag.
_UNSURE_TAIL = re.compile(rb"[\"']|<[A-Za-z/!?]")
_COMMENT_TOKEN = re.compile(sc.COMMENT_SRC)
_WS_BYTES = frozenset(b"\t\n\f\r ")
_NONE = 1 << 62


class Skim:
    """Skims one document's input (``buf``, and ``low``: the same bytes lowercased,
    where it searches), both owned and grown by the rewriter.

    What it found is kept between calls (the next candidate, each attribute name's
    next occurrence, and how far each search went), so a document fed in many
    chunks is searched once.
    """

    __slots__ = (
        "_attr_min",
        "_attr_next",
        "_attr_seen",
        "_attr_upto",
        "_buf",
        "_cand",
        "_cand_seen",
        "_low",
        "_scan",
    )

    def __init__(self, scan: ScanPatterns, buf: bytearray, low: bytearray) -> None:
        self._scan = scan
        self._buf = buf
        self._low = low
        n_attrs = len(scan.attr_literals)
        # Per attribute-name literal: its next occurrence (-1: none up to _attr_seen).
        self._attr_next = [-1] * n_attrs
        self._attr_seen = [0] * n_attrs
        # The next candidate, or -1 if none up to _cand_seen.
        self._cand = -1
        self._cand_seen = 0
        self._attr_min = _NONE
        self._attr_upto = 0

    def forget(self, keep: int) -> None:
        """The first *keep* bytes of the input were dropped."""
        self._attr_next = [p - keep if p >= 0 else -1 for p in self._attr_next]
        self._attr_seen = [max(0, p - keep) for p in self._attr_seen]
        self._cand = -1
        self._cand_seen = 0
        self._attr_min = _NONE
        self._attr_upto = 0

    def next(self, pos: int, final: bool) -> int:
        """From data-state ``pos`` with no element watched, the next token that
        needs a look.

        Candidates are found in C and settled by :meth:`_settle`; when that
        cannot prove where the candidate stands, the exact skip pattern tokenizes
        up to it.  Returns a data-state position: a ``<`` to hand to the
        tokenizer, or where scanning must wait for more input (everything before
        it is final).
        """
        buf = self._buf
        low = self._low
        n = len(buf)
        scan = self._scan
        attrs = scan.attr_literals
        while True:
            c = self._cand
            if c < pos:
                if c >= 0 or self._cand_seen < n:
                    start = pos if c >= 0 else max(pos, self._cand_seen - scan.candidate_span)
                    m = scan.candidates.search(low, start)
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
            return v if v >= 0 else scan.skip.match(buf, pos).end()

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
        probe = self._scan.raw_probe
        raw_starts = (
            () if probe is None or probe.search(low, p, c) is None else self._scan.raw_starts
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
        for i, lit in enumerate(self._scan.attr_literals):
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

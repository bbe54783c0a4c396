"""The streaming HTML rewriter: a :class:`Plan` of edits, a :class:`Rewriter` per document.

A :class:`Plan` compiles a list of :class:`~.edits.Edit` once (selectors parsed,
scan patterns built); each response gets a cheap :class:`Rewriter` from it, is
fed with :meth:`Rewriter.write` and closed with :meth:`Rewriter.end`.

How it stays fast: outside elements it has to watch, it does not tokenize the
tags in between: it skims to the next tag worth a look (see :mod:`.skim`).
Inside a watched element (one with an edit that needs its end, or an ancestor
named in a descendant/child selector) it keeps an element stack with HTML5's
implied end tags (see :mod:`.tree`), until that element closes; the children of
an element being reordered are moved whole when their markup is simple (see
:mod:`.items`).  An inline ``<svg>`` or ``<math>`` whose content is simple
foreign markup (every tag properly nested, nothing that switches back to HTML,
no comment or CDATA, nothing a selector may match) is stepped over whole, in
and out of list items; its end may be waited for (up to 256 KB).
``Plan(fast=False)`` tokenizes every tag: the reference the fast paths are
tested against.

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
says why.  With ``on_error="raise"`` a :class:`~.edits.RewriteError` is raised
instead and the caller falls back to the original bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

from . import scanner as sc
from .edits import (
    CONTENT_ACTIONS,
    Act,
    CompiledEdit,
    Edit,
    Mark,
    RewriteError,
    Sink,
    reordered,
)
from .items import ListItems
from .patterns import has_any, scan_patterns
from .scanner import LOWER_NAMES
from .selectors import Compound, compound_mask, masks_for, parse_selector
from .skim import Skim
from .tree import (
    FOREIGN_ENDS,
    HTML,
    KNOWN_FOREIGN,
    KNOWN_FOREIGN_MAX,
    NAMESPACES,
    UNSEEN,
    closes_root,
    end_tag_closes,
    foreign_depth,
    start_tag_place,
)

__all__ = ["Plan", "Recorder", "Rewriter", "rewrite"]


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

        compiled: list[CompiledEdit] = []
        ancestor_mask = 0
        for i, edit in enumerate(self.edits):
            sels: list[tuple[tuple[int, ...], tuple[str, ...]]] = []
            for cs in parse_selector(edit.selector).selectors:
                ids = tuple(cidx(c) for c in cs.compounds)
                for a in ids[:-1]:
                    ancestor_mask |= 1 << a
                sels.append((ids, cs.combinators))
            compiled.append(
                CompiledEdit(
                    i,
                    edit,
                    edit.action,
                    edit.content_bytes() if edit.action != "reorder" else b"",
                    sels,
                    edit.key_attr.lower().encode() if edit.key_attr else None,
                )
            )
        self.compounds: tuple[Compound, ...] = tuple(compounds)
        self.compiled: tuple[CompiledEdit, ...] = tuple(compiled)
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
        self.scan = scan_patterns(self.types, self.attr_names, self.match_all)
        self.masks = masks_for(self.compounds)
        """Start tags' compound masks (and attributes) by (name, attribute area)."""

    def rewriter(self) -> Rewriter:
        """A fresh rewriter for one document."""
        return Rewriter(self)

    def rewrite(self, html: bytes) -> bytes:
        """Rewrite a whole document; the original bytes if the rewriter bails."""
        return rewrite(html, self)


_MASKED_AREA_BYTES = 512
"""Start tags with a longer attribute area are matched afresh each time."""


class Recorder(Protocol):
    """What :mod:`edge.rewrite.replay` hooks into a rewriter to keep its output."""

    def take(self, out: list[bytes], marks: list[Mark]) -> bytes:
        """The output in *out* joined (and both lists emptied), noted down: *marks*
        say which of its parts are edit contents and reordered lists."""

    def spoil(self) -> None:
        """This document's output cannot be replayed."""


# Tokenizer states.
_DATA, _TEXT, _COMMENT, _CDATA, _PLAINTEXT = 0, 1, 2, 3, 4
_TAG_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/!?")
#: Elements followed on the stack even when nothing watches them: they change
#: how what follows is read.
_WATCH = frozenset((*sc.TEXT_ELEMENTS, b"template", b"svg", b"math", b"plaintext"))
#: How far ahead of an ``<svg>`` its end may be waited for (then: tag by tag).
_FOREIGN_WAIT = 256 << 10
#: What ends a tag's name.
_NAME_ENDS = frozenset(b"\t\n\f\r />")
#: :meth:`Rewriter._foreign_end`: not to be stepped over / its end may come later.
_NOT_SIMPLE, _WAIT = -1, -2


class Rewriter(ListItems):
    """Rewrites one document fed in chunks; see the module docstring."""

    def __init__(self, plan: Plan | Iterable[Edit]) -> None:
        if not isinstance(plan, Plan):
            plan = Plan(plan)
        self.plan = plan
        self.error: str | None = None
        self.counts: list[int] = [0] * len(plan.edits)
        self._buf = bytearray()
        # The same bytes lowercased (ASCII): where the fast paths search.
        self._low = bytearray()
        self._fast = plan.fast
        self._skim = Skim(plan.scan, self._buf, self._low)
        self._init_items()
        # The buffer length an <svg> or <math> waiting for its end needs to be
        # looked at again (so a trickle of tiny chunks stays linear).
        self._foreign_need = 0
        self._pos = 0
        self._emitted = 0
        self._out: list[bytes] = []
        self._sink = Sink(self._out)
        self._sinks: list[Sink] = [self._sink]
        # The open elements: (name, namespace, compound mask, pending work).
        self._stack: list[tuple[bytes, int, int, Act | None]] = []
        self._state = _DATA
        self._raw_name = b""
        self._raw_start = 0
        self._resume = 0
        self._inert = 0
        self._discarding = 0
        self._passthrough = False
        self._ended = False
        # Set by :meth:`record`; ``_marks`` are the output's marks so far.
        self._record: Recorder | None = None
        self._marks = self._sink.marks

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
                chunk.lower() if isinstance(chunk, (bytes, bytearray)) else bytes(chunk).lower()
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

    def stop(self, reason: str) -> bytes:
        """Stop rewriting here (a page too long to rewrite, say): returns the input
        held back as it came, and what is written from now on passes through
        unchanged. As when it bails, the output is the rewritten document up to the
        edit in progress and the original from there: edits already made stay
        (:attr:`error` says why the rest was not rewritten)."""
        if self._ended or self._passthrough:
            return b""
        return self._bail(reason)

    def record(self, recorder: Recorder) -> None:
        """Hand this document's output to *recorder*, marked, to keep as a template
        (see :mod:`.replay`); call before the first :meth:`write`."""
        self._record = recorder

    def stop_recording(self) -> None:
        """Keep no template of this document from here on (see :mod:`.replay`)."""
        self._record = None
        self._marks.clear()

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
            self._skim.forget(keep)
            self._list_end -= keep
        self._region = None  # its offsets are gone
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

    def _insert(self, edits: list[CompiledEdit]) -> None:
        """Output the contents of *edits*, each marked with its edit for a recorder."""
        sink = self._sink
        if sink.discard:
            return
        parts = sink.parts
        if self._record is not None:
            at = len(parts)
            sink.marks += [(at + i, at + i + 1, ce.index, None) for i, ce in enumerate(edits)]
        parts += [ce.content for ce in edits]

    def _emit_reordered(self, held: Sink, ce: CompiledEdit) -> None:
        """Output the list *held* for reorder edit *ce*, its items in order."""
        parts = reordered(held.parts, held.items, ce.edit.order)
        record = self._record
        if record is not None and self._sink is self._sinks[0]:
            first = len(self._out)
            self._emit(parts)
            self._marks.append((first, len(self._out), ce.index, held))
            return
        if record is not None:  # held inside another edit: no template for this document
            record.spoil()
        self._emit(parts)

    def _push_sink(self, sink: Sink) -> None:
        sink.hold_from = self._emitted
        self._sinks.append(sink)
        self._sink = sink
        if sink.discard:
            self._discarding += 1

    def _pop_sink(self) -> Sink:
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
        skip = self.plan.scan.skip.match
        token = sc.TOKEN.match
        stack = self._stack
        low = self._low
        while True:
            known: tuple[bytes, int, int] | None = None
            if self._state != _DATA:
                pos = self._text(pos, final)
                if self._state != _DATA:
                    break
                continue
            if not stack:
                pos = self._skim.next(pos, final) if self._fast else skip(buf, pos).end()
                if pos >= n or buf[pos] != 0x3C:  # "<"
                    break
                if self._fast and pos + 1 < n and low[pos + 1] in b"sm":
                    known = self._known_foreign(pos, self.plan.max_depth, final)
                    if known is not None and known in KNOWN_FOREIGN:
                        pos += len(known[0])  # stepped over whole before
                        continue
            else:
                top = stack[-1][3]
                if top is not None and top.kind == "reorder" and self._fast:
                    pos = self._fast_items(pos, final)
                    if pos < 0:  # an item is not all there yet
                        pos = -pos - 1
                        break
                elif top is not None and top.sink is not None and top.sink.discard and self._fast:
                    pos = self._dropped_end(pos, top)
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
                if stack and stack[-1][1] != HTML and buf.startswith(b"<![CDATA[", pos):
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
                if known is not None and not stack and after - pos == len(known[0]):
                    self._remember_foreign(known, m.group(1), pos, m.end())
                pos = after
            elif kind == 3:
                if stack:
                    self._end_tag(m.group(3), pos, m.end())
                pos = m.end()
            elif kind == 5 and stack and stack[-1][1] != HTML and buf.startswith(b"<![CDATA[", pos):
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

    def _remember_foreign(self, key: tuple[bytes, int, int], raw: bytes, s: int, e: int) -> None:
        """The element ``key`` was stepped over whole from its start tag ``raw``
        (``s..e``): remember it, unless a selector of any plan with these scan
        patterns may match that tag (by its name or attribute names)."""
        plan = self.plan
        probe = plan.scan.attr_probe
        if (
            not plan.match_all
            and raw.lower() not in plan.types
            and (probe is None or probe.search(self._buf, s, e) is None)
        ):
            KNOWN_FOREIGN[key] = len(key[0])

    def _known_foreign(
        self, pos: int, room: int, final: bool = True
    ) -> tuple[bytes, int, int] | None:
        """If an ``<svg>`` or ``<math>`` starts at ``pos``, its key in
        :data:`.tree.KNOWN_FOREIGN`: its bytes up to its first end tag, the plan's
        scan patterns, ``room`` (how deep it may nest; -1: any depth); None if it
        has no end tag yet, is too long to keep, or the exact path would wait for
        more input before looking (see :meth:`_foreign_end`). Stepped over whole,
        such an element's end depends on these alone."""
        low = self._low
        if not final and len(low) < self._foreign_need:
            return None
        for name in (b"svg", b"math"):
            after = pos + 1 + len(name)
            if low.startswith(name, pos + 1) and after < len(low) and low[after] in _NAME_ENDS:
                break
        else:
            return None
        close = low.find(b"</" + name, pos)
        end = low.find(b">", close) + 1 if close >= 0 else 0
        if end <= 0 or end - pos > KNOWN_FOREIGN_MAX:
            return None
        return bytes(memoryview(self._buf)[pos:end]), self.plan.scan.serial, room

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
        name = LOWER_NAMES.get(raw)
        if name is None:
            name = LOWER_NAMES.put(raw, raw.lower())
        stack = self._stack
        plan = self.plan
        ns, keep = start_tag_place(stack, name)
        if keep < len(stack):
            self._pop_to(keep, s, s)
        # A foreign element is void when its tag says so ("/>"), an HTML one by its name.
        void = name in sc.VOID if ns == HTML else area.endswith(b"/") and sc.is_self_closing(area)

        # Matching.
        mask = 0
        edits: list[CompiledEdit] | None = None
        attrs: Mapping[bytes, bytes] | None = None
        probe = plan.scan.attr_probe
        if (
            not self._inert
            and not self._discarding
            and (
                plan.match_all
                or name in plan.types
                or (probe is not None and probe.search(self._buf, s, e))
            )
        ):
            key = (name, area)
            known = plan.masks.get(key)
            if known is None:
                attrs = sc.attrs_of(area)
                known = (compound_mask(plan.compounds, name, attrs), attrs)
                if len(area) <= _MASKED_AREA_BYTES:
                    plan.masks.put(key, known)
            mask, attrs = known
            if mask:
                edits = self._matching_edits(mask)

        parent_act = stack[-1][3] if stack else None
        item_of = (
            parent_act.sink if parent_act is not None and parent_act.kind == "reorder" else None
        )
        act: Act | None = None
        if edits or item_of is not None:
            act = self._open_edits(name, area, attrs, edits or [], item_of, s, e, void)
        if void:
            return e
        if not stack and act is None and not (mask & plan.ancestor_mask) and name not in _WATCH:
            return e
        if ns != HTML and not edits and item_of is None and self._fast and name in NAMESPACES:
            end = self._foreign_end(name, e, plan.max_depth - len(stack), final)
            if end != _NOT_SIMPLE:
                return end
        if len(stack) >= plan.max_depth:
            raise RewriteError(f"elements nested deeper than {plan.max_depth}")
        stack.append((name, ns, mask, act))
        if ns == HTML:
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

    def _foreign_end(self, name: bytes, a: int, room: int, final: bool) -> int:
        """The end of the ``<svg>`` or ``<math>`` (``name``) whose content starts
        at ``a``, if it can be stepped over whole: its end tag is here, its
        content is simple (see :func:`.tree.foreign_depth`), nothing in it may
        match a selector, and it nests less than ``room`` deep.  Then the exact
        path would only push and pop foreign elements that nothing watches.
        ``_NOT_SIMPLE`` if not; ``_WAIT`` if its end may still come in a later
        chunk.
        """
        low = self._low
        n = len(low)
        if not final and n < self._foreign_need:
            return _WAIT
        opens, closes = FOREIGN_ENDS[name]
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
        lits = plan.scan.attr_literals
        if plan.match_all or (lits and has_any(low, lits, a, b)):
            return _NOT_SIMPLE
        deepest = foreign_depth(name, low, a, b, plan.types)
        if deepest is None or deepest >= room or end.lastindex != 3:
            return _NOT_SIMPLE
        return end.end()

    def _matching_edits(self, mask: int) -> list[CompiledEdit]:
        found: list[CompiledEdit] = []
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
        attrs: Mapping[bytes, bytes] | None,
        edits: list[CompiledEdit],
        item_of: Sink | None,
        s: int,
        e: int,
        void: bool,
    ) -> Act | None:
        """Apply what happens at an element's start; returns its pending work."""
        act = Act()
        before: list[CompiledEdit] = []
        prepend: list[CompiledEdit] = []
        content_edit: CompiledEdit | None = None
        for ce in edits:
            a = ce.action
            if a in CONTENT_ACTIONS:
                if content_edit is None and not (void and a in ("set_inner_content", "reorder")):
                    content_edit = ce
                continue
            self.counts[ce.index] += 1
            if a == "before":
                before.append(ce)
            elif a == "after":
                act.after.append(ce)
            elif not void:
                (prepend if a == "prepend" else act.append).append(ce)
        self._flush(s)
        if item_of is not None:
            item_of.item_start = len(item_of.parts)
            act.item_of = item_of
            act.item_key = self._item_key(
                attrs if attrs is not None else sc.attrs_of(area), act=act
            )
        if before:
            self._insert(before)
        if content_edit is not None and content_edit.action in ("replace", "remove"):
            act.kind = "drop"
            act.edit = content_edit
            if void:
                self._emitted = e
                self._finish_drop(act)
                self._end_item(act)
                return None
            act.sink = Sink([], discard=True)
            self._push_sink(act.sink)
            return act
        self._flush(e)
        if content_edit is not None and content_edit.action == "set_inner_content":
            act.kind = "inner"
            act.edit = content_edit
            act.append[:0] = [*prepend, content_edit]
            act.sink = Sink([], discard=True)
            self._push_sink(act.sink)
            return act
        if prepend:
            self._insert(prepend)
        if content_edit is not None:  # reorder
            act.kind = "reorder"
            act.edit = content_edit
            act.sink = Sink([])
            self._push_sink(act.sink)
            return act
        if void:
            if act.after:
                self._insert(act.after)
            self._end_item(act)
            return None
        if not act.after and not act.append and act.item_of is None:
            return None
        return act

    def _finish_drop(self, act: Act) -> None:
        assert act.edit is not None
        self.counts[act.edit.index] += 1
        if act.edit.action == "replace":
            self._insert([act.edit])
        if act.after:
            self._insert(act.after)

    # -- closing elements ---------------------------------------------------

    def _pop_to(self, index: int, s: int, e: int) -> None:
        """Close stack[index:] at ``s``; stack[index] by an end tag spanning s..e."""
        stack = self._stack
        while len(stack) > index:
            entry = stack.pop()
            end = e if len(stack) == index else s
            name, ns, _mask, act = entry
            if ns == HTML and name == b"template":
                self._inert -= 1
            if act is not None:
                self._close(act, s, end)

    def _close(self, act: Act, s: int, e: int) -> None:
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
            self._insert(act.append)
            self._flush(e)
            if act.after:
                self._insert(act.after)
        else:
            self._flush(s)
            if kind == "reorder":
                held = self._pop_sink()
                assert act.edit is not None
                self.counts[act.edit.index] += 1
                self._emit_reordered(held, act.edit)
            if act.append:
                self._insert(act.append)
            self._flush(e)
            if act.after:
                self._insert(act.after)
        self._end_item(act)

    def _end_tag(self, raw: bytes, s: int, e: int) -> None:
        stack = self._stack
        if not stack:
            return
        name = LOWER_NAMES.get(raw) or raw.lower()
        i = end_tag_closes(stack, name)
        if i >= 0:
            self._pop_to(i, s, e)
        elif i == UNSEEN:
            self._unplaced_end_tag(name, s)

    def _unplaced_end_tag(self, name: bytes, s: int) -> None:
        """An end tag for no element in the watched stack: it closes an element
        outside (so the watched root too) or it is stray; we cannot always see which."""
        root = self._stack[0][0]
        closes = closes_root(root, name)
        if closes is False:
            return
        if closes is None and any(
            act is not None and act.sink is not None for _n, _ns, _m, act in self._stack
        ):
            raise RewriteError(
                f"cannot tell whether </{name.decode('latin-1')}> at byte {s} closes "
                f"<{root.decode('latin-1')}> or is stray"
            )
        self._pop_to(0, s, s)


def rewrite(html: bytes, edits: Plan | Iterable[Edit]) -> bytes:
    """Rewrite a whole document at once.

    All or nothing: if the rewriter bails, the original ``html`` is returned.
    """
    rw = Rewriter(edits)
    out = rw.write(html) + rw.end()
    return html if rw.error is not None else out

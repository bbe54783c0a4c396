"""Replaying a rewrite: the same page with the same edits costs a comparison, not a parse.

A shop serves the same category page to thousands of visitors, and the visitors of
one segment get the same edits in the same slots; only the snippets' text (a name,
a cart, a deadline) and the order of a list differ. So the first rewrite of a page
is kept as a *template*: the input it read, and its output as copied bytes, edit
contents (by edit) and reordered lists (their held parts and items, by edit). The
next response for the same page and the same edit shape is compared with the kept
input as it streams in (``bytes.startswith`` at an offset: a memcmp) and, while it
matches, gets the template filled with its own contents and list order.

Streaming is kept: the recording run feeds the rewriter in pieces that end at each
multiple of ``RECORD_STEP`` input bytes and notes there how much output was final
(*checkpoints*); a replay emits up to the last checkpoint its verified input
covers, which is what the rewriter itself would have emitted by then. What the
rewriter emits at the end of the document is final only there: a replay sends it
from ``end()``, never because the input so far matched the whole kept input.

Divergence is safe: output the rewriter emits after reading a prefix is final for
every document that starts with that prefix (that is what streaming means, and
what the chunking tests check). So when a response stops matching, a real
rewriter is fed everything received so far, the bytes already sent are skipped
from its output, and it goes on from there; what it produces is then recorded in
place of the old template. A page that differs on every response (a per-visitor
token in the HTML) is marked volatile for a while and simply rewritten.

A request's reorder targets see the calls a fresh rewrite makes, once each: a
replay asks ``key()`` for a list's items (with the attributes kept) and
``order()`` only when it sends that list, and a real rewriter that takes over is
answered from what the replay was told for the items it reads again.

A reordered list whose target says what decides its order (a *memo*: for the
sidecar's ``ListOrder``, its sorts, the visitor's interest fingerprint and the
catalogue, see :mod:`edge.rewriting`) is kept as sent, by (the template's list,
that memo, the contents inside it): the next response of the same page version
with the same memo sends those bytes without asking the target anything (on the
category page of ``bench/instructions.py`` that is the 12 items' keys and their
order, most of a replay's cost). The target is then not asked at all for that
list, as it would not be for a list the page did not have; a real rewriter that
takes over asks it afresh, and its answers, decided by the same memo, are the
same.

The edit contents and reordered lists are told apart from copied bytes by the
rewriter's marks (see :meth:`~.rewriter.Rewriter.record`): it says which edit
each content it outputs belongs to, so any contents can be recorded (empty, one
byte, one object for two edits) and the response's own are filled in by edit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.caches import LRU

from .edits import Mark, Sink, reordered
from .rewriter import Rewriter

__all__ = ["RECORD_STEP", "Recording", "ReplayCache", "Target"]

RECORD_STEP = 8192
"""Input bytes between checkpoints of a recording: a replay emits output at every
multiple of this that the rewriter had emitted output at."""

VOLATILE_SECONDS = 60.0
"""How long a page whose template kept diverging is rewritten without one."""

# A key call: (edit index, the item's attributes, the key returned).
_Call = tuple[int, dict[str, str], "str | None"]


class Target(Protocol):
    """One request's reorder callbacks (``ListOrder`` in the sidecar)."""

    def key(self, attrs: dict[str, str]) -> str | None: ...

    def order(self, keys: list[str | None]) -> Sequence[str]: ...


@dataclass(eq=False)
class _Region:
    """A reordered list in a template: its held parts (bytes, or the index of the
    edit whose content is there) and items, as the rewriter had them, and the key
    calls that made its items' keys."""

    edit: int
    parts: list[bytes | int]
    items: list[tuple[int, int, str | None]]
    calls: list[_Call]
    refs: tuple[int, ...] = ()
    """The edits whose contents are among the parts (a region's memo key holds them)."""

    def __post_init__(self) -> None:
        self.refs = tuple(sorted({p for p in self.parts if isinstance(p, int)}))


@dataclass(eq=False)
class Recording:
    """One document's rewrite, to replay (see the module docstring)."""

    body: bytes = b""
    pieces: list[bytes | int | _Region] = field(default_factory=list)
    # (input bytes read, pieces final) at each multiple of RECORD_STEP read.
    checkpoints: list[tuple[int, int]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    size: int = 0


def _size(recording: Recording) -> int:
    """Roughly the memory *recording* holds."""
    size = 200 + len(recording.body) + 64 * len(recording.checkpoints)
    for piece in recording.pieces:
        if isinstance(piece, bytes):
            size += 40 + len(piece)
        elif isinstance(piece, int):
            size += 8
        else:
            size += 120 + 64 * len(piece.items)
            size += sum(40 + len(p) if isinstance(p, bytes) else 8 for p in piece.parts)
            for _edit, attrs, _key in piece.calls:
                size += 300 + sum(len(k) + len(v) for k, v in attrs.items())
    return size


class _Taker:
    """Hooked into a recording rewriter: turns its marked output into template pieces."""

    def __init__(self, recording: Recording, calls: list[_Call]) -> None:
        self.recording = recording
        self.calls = calls  # the key calls the rewriter made, in order
        self.called = 0  # how many of them belong to the lists taken so far
        self.ok = True
        self._run: list[bytes] = []  # copied bytes not yet made a piece

    def spoil(self) -> None:
        self.ok = False
        self._run.clear()

    def _flush(self) -> None:
        if self._run:
            self.recording.pieces.append(b"".join(self._run))
            self._run.clear()

    def take(self, out: list[bytes], marks: list[Mark]) -> bytes:
        data = b"".join(out)
        if self.ok:
            pieces = self.recording.pieces
            run = self._run
            at = 0
            for first, end, edit, held in marks:
                run += out[at:first]
                self._flush()
                if held is None:  # an edit's content
                    pieces.append(edit)
                else:
                    region = self._region(held, edit)
                    if region is None:
                        self.spoil()
                        break
                    pieces.append(region)
                at = end
            else:
                run += out[at:]
        out.clear()
        marks.clear()
        return data

    def _region(self, held: Sink, edit: int) -> _Region | None:
        """The list *held* for reorder *edit*; None unless its items were keyed by
        this edit's target, once each and in order (the calls a replay will make
        again)."""
        items = held.items
        calls = self.calls[self.called : self.called + len(items)]
        if len(calls) != len(items) or any(
            e != edit or key != item[2] for (e, _attrs, key), item in zip(calls, items, strict=True)
        ):
            return None
        self.called += len(items)
        parts: list[bytes | int] = list(held.parts)
        for first, _end, index, inner in held.marks:
            if inner is not None:  # a list reordered inside another is not kept
                return None
            parts[first] = index
        return _Region(edit, parts, items, calls)

    def checkpoint(self, read: int) -> None:
        if self.ok:
            self._flush()
            self.recording.checkpoints.append((read, len(self.recording.pieces)))

    def finish(self) -> bool:
        """Complete the pieces; False if a key call belongs to no list taken."""
        self._flush()
        return self.ok and self.called == len(self.calls)


class _RequestTarget:
    """A request's reorder target as a real rewriter sees it: the calls a replay
    made for this response before it stopped are answered as the target answered
    them then (the rewriter reads those items again; a fresh rewrite asks once),
    and calls are noted for a recording."""

    __slots__ = ("_edit", "_keys", "_orders", "_target", "log")

    def __init__(
        self,
        target: Target,
        edit: int,
        keys: deque[tuple[dict[str, str], str | None]],
        orders: deque[tuple[list[str | None], Sequence[str]]],
        log: list[_Call] | None,
    ) -> None:
        self._target = target
        self._edit = edit
        self._keys = keys
        self._orders = orders
        self.log = log

    def key(self, attrs: dict[str, str]) -> str | None:
        keys = self._keys
        if keys and keys[0][0] == attrs:
            key = keys.popleft()[1]
        else:
            keys.clear()
            key = self._target.key(attrs)
        if self.log is not None:
            self.log.append((self._edit, attrs, key))
        return key

    def order(self, keys: list[str | None]) -> Sequence[str]:
        orders = self._orders
        if orders and orders[0][0] == keys:
            return orders.popleft()[1]
        orders.clear()
        return self._target.order(keys)


class _Volatile:
    """In the cache instead of a template: this page diverged too often."""

    __slots__ = ("until",)
    size = 1

    def __init__(self, until: float) -> None:
        self.until = until


@dataclass(eq=False)
class _Entry:
    recording: Recording | None = None
    diverged: int = 0
    size: int = 1


def _weight(entry: _Entry | _Volatile) -> int:
    return entry.size


REGIONS_SHARE = 8
"""The reordered lists kept as sent get this fraction (1/8) of the replay budget."""


def _region_weight(out: bytes) -> int:
    return 200 + len(out)


class ReplayCache:
    """Templates by (page, edit shape), within a byte budget (least recently used go)."""

    def __init__(self, max_bytes: int = 32 << 20, max_body: int = 2 << 20) -> None:
        self.max_bytes = max_bytes
        self.max_body = max_body
        self._entries: LRU[Any, _Entry | _Volatile] = LRU(max_bytes, weigh=_weight)
        self._regions: LRU[tuple[Any, ...], bytes] = LRU(
            max_bytes // REGIONS_SHARE, weigh=_region_weight
        )
        """Reordered lists as sent, by (template's region, target's memo, contents in
        it): a share of the budget, since a list is a part of a page it already holds."""
        self.region_hits = 0
        self.hits = 0
        self.misses = 0
        self.recorded = 0

    def rewriter(
        self,
        key: Any,
        contents: Sequence[bytes | None],
        targets: dict[int, Target],
        real: Callable[[dict[int, Target]], Rewriter],
        bind: Callable[[dict[int, Target]], None],
        memos: dict[int, Hashable] | None = None,
    ) -> Replayer:
        """A rewriter-like object for one response. *key* names the page and the
        shape of the edits (not their contents); *contents* are this response's
        edit contents by edit index (None for reorders); *targets* its reorder
        callbacks by edit index (every reorder's items are keyed by a callback);
        ``real(targets)`` makes a real rewriter whose reorders call those targets,
        ``bind(targets)`` points the shared plan's reorders at them before each
        feed. *memos*, by edit index, what decides a reorder target's keys' order
        given its items' attributes (the same memo, the same order; see the module
        docstring): those lists are sent as kept when the memo was seen before."""
        if self.max_bytes <= 0:  # replaying is off: every response is rewritten
            return Replayer(self, None, None, contents, targets, real, bind, record=False)
        entry = self._entries.get(key)
        if isinstance(entry, _Volatile):
            if entry.until > time.monotonic():
                return Replayer(self, None, None, contents, targets, real, bind, record=False)
            entry = None
        if entry is None:
            entry = _Entry()
            self._entries[key] = entry
        replayer = Replayer(self, key, entry, contents, targets, real, bind, record=True)
        if memos:
            replayer._memos = memos
        return replayer

    def _store(self, key: Any, entry: _Entry, recording: Recording) -> None:
        if len(recording.body) > self.max_body:
            return
        current = self._entries.get(key)
        if current is not None and current is not entry:
            return  # taken for volatile, or replaced, while this response ran
        recording.size = size = _size(recording)
        self.recorded += 1
        entry.recording = recording
        entry.size = size
        self._entries[key] = entry  # weighed again (one larger than the budget is dropped)

    def _diverged(self, key: Any, entry: _Entry) -> bool:
        """A response stopped matching *entry*'s template; True if the page is now
        taken for volatile (and is not to be recorded)."""
        entry.diverged += 1
        if entry.diverged < 3:
            return False
        self._entries[key] = _Volatile(time.monotonic() + VOLATILE_SECONDS)
        return True


class Replayer:
    """One response: replays a template while the input matches it, else rewrites
    (recording a new template). Same interface as :class:`Rewriter` for the proxy:
    ``write``, ``end``, ``counts``, ``error``."""

    def __init__(
        self,
        cache: ReplayCache,
        key: Any,
        entry: _Entry | None,
        contents: Sequence[bytes | None],
        targets: dict[int, Target],
        real: Callable[[dict[int, Target]], Rewriter],
        bind: Callable[[dict[int, Target]], None],
        record: bool,
    ) -> None:
        self._cache = cache
        self._key = key
        self._entry = entry
        self._contents = contents
        self._targets = targets
        self._real_factory = real
        self._bind = bind
        self._record = record
        self._replay = entry.recording if entry is not None else None
        self._fed = 0  # input bytes read (and, while replaying, matched)
        self._done = 0  # template pieces sent
        self._checkpoint = 0  # checkpoints passed
        self._sent = 0  # output bytes sent
        # What this request's targets answered the replay, by edit.
        self._keys: dict[int, deque[tuple[dict[str, str], str | None]]] = {}
        self._orders: dict[int, deque[tuple[list[str | None], Sequence[str]]]] = {}
        self._rw: Rewriter | None = None
        self._bound: dict[int, Target] = {}
        self._recording: Recording | None = None
        self._taker: _Taker | None = None
        self._inputs: list[bytes] = []  # what the recording rewriter read
        self._skip = 0  # output bytes of the real rewriter already sent by the replay
        self._counts: list[int] | None = None
        self._pending = b""  # input read before the real rewriter started, to feed it
        self._memos: dict[int, Hashable] | None = None  # by edit (ReplayCache.rewriter)
        self.replayed = False

    # -- the proxy's interface ------------------------------------------------

    @property
    def counts(self) -> list[int]:
        if self._rw is not None:
            return self._rw.counts
        return list(self._counts or ())

    @property
    def error(self) -> str | None:
        return self._rw.error if self._rw is not None else None

    def write(self, data: bytes) -> bytes:
        if self._rw is None and self._replay is not None:
            body = self._replay.body
            if self._fed + len(data) <= len(body) and body.startswith(data, self._fed):
                self._fed += len(data)
                return self._emit_upto(self._fed)
            self._diverge()
            self._start_real(self._replay.body[: self._fed])
        elif self._rw is None:
            self._start_real(b"")
        return self._feed(data)

    def last(self, data: bytes) -> bytes:
        """``write(data) + end()``: the last of the input. A replay that it completes
        sends the rest of the template in one piece (not what the checkpoints cover,
        then the end, copied again to be one)."""
        replay = self._replay
        if self._rw is None and replay is not None:
            body = replay.body
            if self._fed + len(data) == len(body) and body.startswith(data, self._fed):
                self._fed += len(data)
                return self.end()
        out = self.write(data) if data else b""
        return out + self.end()

    def end(self) -> bytes:
        if self._rw is None and self._replay is not None:
            if self._fed == len(self._replay.body):
                out = self._emit_pieces(len(self._replay.pieces))
                if out is not None:
                    self._counts = self._replay.counts
                    self._cache.hits += 1
                    self._entry.diverged = 0  # type: ignore[union-attr]
                    self.replayed = True
                    return out
            else:
                self._diverge()
            if self._rw is None:
                self._start_real(self._replay.body[: self._fed])
        elif self._rw is None:
            self._start_real(b"")
        assert self._rw is not None
        out = self._feed(b"") if self._pending else b""
        self._bind(self._bound)
        out += self._cut(self._rw.end())
        recording, taker = self._recording, self._taker
        if (
            recording is not None
            and taker is not None
            and taker.finish()
            and self._rw.error is None
            and self._entry is not None
        ):
            recording.counts = list(self._rw.counts)
            recording.body = b"".join(self._inputs)
            self._cache._store(self._key, self._entry, recording)
        return out

    def stop(self, reason: str) -> bytes:
        """Stop rewriting here (see :meth:`Rewriter.stop`): a replay hands over to a
        real rewriter given the input read so far, which then stops; no template is
        kept of this response."""
        self._record = False
        if self._rw is None:
            self._start_real(self._replay.body[: self._fed] if self._replay is not None else b"")
        out = self._feed(b"") if self._pending else b""
        self._give_up_recording()
        assert self._rw is not None
        return out + self._cut(self._rw.stop(reason))

    # -- replaying --------------------------------------------------------------

    def _diverge(self) -> None:
        assert self._entry is not None
        if self._cache._diverged(self._key, self._entry):
            self._record = False

    def _emit_upto(self, fed: int) -> bytes:
        rec = self._replay
        assert rec is not None
        checkpoints = rec.checkpoints
        i = self._checkpoint
        upto = self._done
        while i < len(checkpoints) and checkpoints[i][0] <= fed:
            upto = checkpoints[i][1]
            i += 1
        self._checkpoint = i
        out = self._emit_pieces(upto)
        if out is None:  # a list could not be keyed as recorded: rewrite for real
            self._start_real(rec.body[: self._fed])
            return self._feed(b"")
        return out

    def _emit_pieces(self, upto: int) -> bytes | None:
        rec = self._replay
        assert rec is not None
        if upto <= self._done:
            return b""
        parts: list[bytes] = []
        contents = self._contents
        for piece in rec.pieces[self._done : upto]:
            if isinstance(piece, bytes):
                parts.append(piece)
            elif isinstance(piece, int):
                parts.append(contents[piece] or b"")
            else:
                region = self._region(piece)
                if region is None:
                    return None
                parts.extend(region)
        self._done = upto
        out = b"".join(parts)
        self._sent += len(out)
        return out

    def _region(self, region: _Region) -> list[bytes] | None:
        """The list of *region* in this request's order; None if the request's
        target keys its items otherwise than the recording's did. Kept as sent by
        the target's memo, if it has one."""
        target = self._targets.get(region.edit)
        if target is None:
            return None
        memos = self._memos
        memo = memos.get(region.edit) if memos is not None else None
        if memo is None:
            return self._reorder(region, target)
        contents = self._contents
        key = (region, memo, *[contents[i] for i in region.refs])
        regions = self._cache._regions
        kept = regions.get(key)
        if kept is not None:
            self._cache.region_hits += 1
            return [kept]
        out = self._reorder(region, target)
        if out is not None:
            kept = b"".join(out)
            regions[key] = kept
            return [kept]
        return None

    def _reorder(self, region: _Region, target: Target) -> list[bytes] | None:
        """The list of *region* ordered by asking *target*, as a rewriter would."""
        # The items' keys, asked as the rewriter would have (its input up to the
        # list's end is the kept input), and noted for a real rewriter taking over.
        answered = self._keys.setdefault(region.edit, deque())
        for _edit, attrs, key in region.calls:
            got = target.key(dict(attrs))
            answered.append((attrs, got))
            if got != key:
                return None
        orders = self._orders.setdefault(region.edit, deque())

        def order(keys: list[str | None]) -> Sequence[str]:
            wanted = target.order(keys)
            orders.append((list(keys), wanted))
            return wanted

        parts: list[Any] = region.parts  # (only bytes unless contents are among them)
        if region.refs:
            contents = self._contents
            parts = [p if isinstance(p, bytes) else contents[p] or b"" for p in parts]
        return reordered(parts, region.items, order)

    # -- rewriting for real -------------------------------------------------------

    def _start_real(self, prefix: bytes) -> None:
        """A real rewriter for this response, given the input read so far; the
        output already sent by the replay is skipped from what it produces."""
        self._skip = self._sent
        self._cache.misses += 1
        calls: list[_Call] | None = None
        if self._record and self._entry is not None:
            calls = []
            self._recording = Recording()
            self._taker = _Taker(self._recording, calls)
        self._bound = {
            i: _RequestTarget(t, i, self._keys.pop(i, deque()), self._orders.pop(i, deque()), calls)
            if calls is not None or i in self._keys
            else t
            for i, t in self._targets.items()
        }
        self._rw = self._real_factory(self._bound)
        if self._taker is not None:
            self._rw.record(self._taker)
        self._fed = 0
        self._pending = prefix

    def _feed(self, data: bytes) -> bytes:
        rw = self._rw
        assert rw is not None
        if self._pending:
            data = self._pending + data
            self._pending = b""
        self._bind(self._bound)
        if self._taker is None:
            self._fed += len(data)
            return self._cut(rw.write(data))
        # Pieces that end at each multiple of RECORD_STEP, a checkpoint there.
        outs = []
        view = memoryview(data)
        at = 0
        while at < len(data) and self._taker is not None:
            piece = bytes(view[at : at + RECORD_STEP - self._fed % RECORD_STEP])
            self._inputs.append(piece)
            outs.append(rw.write(piece))
            at += len(piece)
            self._fed += len(piece)
            if self._fed % RECORD_STEP == 0:
                self._taker.checkpoint(self._fed)
            if not self._taker.ok or self._fed > self._cache.max_body:
                self._give_up_recording()
        if at < len(data):
            self._fed += len(data) - at
            outs.append(rw.write(view[at:]))
        return self._cut(b"".join(outs))

    def _give_up_recording(self) -> None:
        """Too long to keep, or not replayable: stop holding what a template needs."""
        if self._rw is not None:
            self._rw.stop_recording()
        for target in self._bound.values():
            if isinstance(target, _RequestTarget):
                target.log = None
        self._recording = None
        self._taker = None
        self._inputs = []

    def _cut(self, out: bytes) -> bytes:
        if self._skip:
            n = min(self._skip, len(out))
            self._skip -= n
            out = out[n:]
        return out

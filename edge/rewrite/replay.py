"""Replaying a rewrite: the same page with the same edits costs a comparison, not a parse.

A shop serves the same category page to thousands of visitors, and the visitors of
one segment get the same edits in the same slots; only the snippets' text (a name,
a cart, a deadline) and the order of a list differ. So the first rewrite of a page
is kept as a *template*: the input it read, and its output as copied bytes, edit
contents (by edit) and reordered lists (their held parts and items, by edit). The
next response for the same page and the same edit shape is compared with the kept
input as it streams in (``bytes.startswith`` at an offset: a memcmp) and, while it
matches, gets the template filled with its own contents and list order.

Streaming is kept: the recording run feeds the rewriter in pieces of
``RECORD_STEP`` bytes and notes after each how much output was final
(*checkpoints*); a replay emits up to the last checkpoint its verified input
covers, which is what the rewriter itself would have emitted by then.

Divergence is safe: output the rewriter emits after reading a prefix is final for
every document that starts with that prefix (that is what streaming means, and
what the chunking tests check). So when a response stops matching, a real
rewriter is fed everything received so far, the bytes already sent are skipped
from its output, and it goes on from there; what it produces is then recorded in
place of the old template. A page that differs on every response (a per-visitor
token in the HTML) is marked volatile for a while and simply rewritten.

The edit contents are recognised in the output by identity (the rewriter appends
the compiled edit's own ``bytes`` object); contents shorter than two bytes could
be shared with the input's, so plans with those are not recorded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cachetools

from .rewriter import Rewriter, _reordered, _Sink

__all__ = ["RECORD_STEP", "Recording", "ReplayCache", "Target"]

RECORD_STEP = 8192
"""Bytes fed to the rewriter at a time while recording: a replay can emit output
at every such step that the rewriter emitted output at."""

VOLATILE_SECONDS = 60.0
"""How long a page whose template kept diverging is rewritten without one."""


class Target(Protocol):
    """One request's reorder callbacks (``ListOrder`` in the sidecar)."""

    def key(self, attrs: dict[str, str]) -> str | None: ...

    def order(self, keys: list[str | None]) -> list[str]: ...


@dataclass(eq=False)
class _Region:
    """A reordered list in a template: its held parts (bytes, or the index of the
    edit whose content is there) and items, as the rewriter had them."""

    edit: int
    parts: list[bytes | int]
    items: list[tuple[int, int, str | None]]


@dataclass(eq=False)
class Recording:
    """One document's rewrite, to replay (see the module docstring)."""

    body: bytes = b""
    pieces: list[bytes | int | _Region] = field(default_factory=list)
    # (input bytes read, pieces final) after each write, in input order.
    checkpoints: list[tuple[int, int]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    # Per reorder edit, the key callback's calls in order: (attrs, key returned).
    key_calls: dict[int, list[tuple[dict[str, str], str | None]]] = field(default_factory=dict)
    size: int = 0


class _Taker:
    """Hooked into a recording rewriter: turns its output into template pieces."""

    def __init__(self, contents: dict[int, int], recording: Recording) -> None:
        self.contents = contents  # id(content bytes) -> edit index
        self.recording = recording
        self.ok = True

    def spoil(self) -> None:
        self.ok = False

    def piece(self, part: bytes) -> bytes | int:
        index = self.contents.get(id(part))
        return part if index is None else index

    def take(self, out: list[bytes], marks: list[tuple[int, int, _Sink, int]]) -> bytes:
        data = b"".join(out)
        if self.ok:
            pieces = self.recording.pieces
            run: list[bytes] = []
            at = 0
            for first, end, sink, edit in (*marks, (len(out), len(out), None, -1)):
                for part in out[at:first]:
                    p = self.piece(part)
                    if isinstance(p, bytes):
                        run.append(p)
                    else:
                        if run:
                            pieces.append(b"".join(run))
                            run = []
                        pieces.append(p)
                if sink is not None:
                    if run:
                        pieces.append(b"".join(run))
                        run = []
                    pieces.append(_Region(edit, [self.piece(p) for p in sink.parts], sink.items))
                at = end
            if run:
                pieces.append(b"".join(run))
        out.clear()
        marks.clear()
        return data


class _LoggingTarget:
    """A request's reorder target that notes the key calls for the template."""

    __slots__ = ("_calls", "_target")

    def __init__(self, target: Target, calls: list[tuple[dict[str, str], str | None]]) -> None:
        self._target = target
        self._calls = calls

    def key(self, attrs: dict[str, str]) -> str | None:
        key = self._target.key(attrs)
        self._calls.append((attrs, key))
        return key

    def order(self, keys: list[str | None]) -> list[str]:
        return self._target.order(keys)


class _Order:
    """The one field of an edit that :func:`_reordered` reads."""

    __slots__ = ("order",)

    def __init__(self, order: Callable[[list[str | None]], list[str]]) -> None:
        self.order = order


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


class ReplayCache:
    """Templates by (page, edit shape), within a byte budget (least recently used go)."""

    def __init__(self, max_bytes: int = 32 << 20, max_body: int = 2 << 20) -> None:
        self.max_body = max_body
        self._entries: cachetools.LRUCache[Any, _Entry | _Volatile] = cachetools.LRUCache(
            max_bytes, getsizeof=lambda e: e.size
        )
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
    ) -> Replayer:
        """A rewriter-like object for one response. *key* names the page and the
        shape of the edits (not their contents); *contents* are this response's
        edit contents by edit index (None for reorders); *targets* its reorder
        callbacks by edit index; ``real(targets)`` makes a real rewriter whose
        reorders call those targets, ``bind(targets)`` points the shared plan's
        reorders at them before each feed."""
        entry = self._entries.get(key)
        if isinstance(entry, _Volatile):
            if entry.until > time.monotonic():
                return Replayer(self, None, None, contents, targets, real, bind, record=False)
            entry = None
        if entry is None:
            entry = _Entry()
            self._entries[key] = entry
        return Replayer(self, key, entry, contents, targets, real, bind, record=True)

    def _store(self, key: Any, entry: _Entry, recording: Recording) -> None:
        size = len(recording.body) + sum(
            len(p) if isinstance(p, bytes) else 64 for p in recording.pieces
        )
        if len(recording.body) > self.max_body:
            return
        recording.size = size
        self.recorded += 1
        entry.recording = recording
        entry.size = size
        if self._entries.get(key) is entry:
            del self._entries[key]  # re-insert: its size changed
        with contextlib.suppress(ValueError):  # larger than the whole budget
            self._entries[key] = entry

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
        self._sent = 0  # output bytes sent
        self._keyed = False
        self._rw: Rewriter | None = None
        self._recording: Recording | None = None
        self._taker: _Taker | None = None
        self._skip = 0  # output bytes of the real rewriter already sent by the replay
        self._counts: list[int] | None = None
        self._pending = b""  # input read before the real rewriter started, to feed it
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
            and taker.ok
            and self._rw.error is None
            and self._entry is not None
        ):
            recording.checkpoints.append((self._fed, len(recording.pieces)))
            recording.counts = list(self._rw.counts)
            recording.body = b"".join(self._inputs)
            self._cache._store(self._key, self._entry, recording)
        return out

    # -- replaying --------------------------------------------------------------

    def _diverge(self) -> None:
        assert self._entry is not None
        if self._cache._diverged(self._key, self._entry):
            self._record = False

    def _emit_upto(self, fed: int) -> bytes:
        rec = self._replay
        assert rec is not None
        upto = self._done
        for read, pieces in rec.checkpoints:
            if read > fed:
                break
            upto = pieces
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
        rec = self._replay
        assert rec is not None
        if not self._keyed:
            # The request's targets learn the items as the recording's did.
            for index, calls in rec.key_calls.items():
                target = self._targets.get(index)
                if target is None:
                    return None
                for attrs, key in calls:
                    if target.key(attrs) != key:
                        return None
            self._keyed = True
        target = self._targets.get(region.edit)
        if target is None:
            return None
        contents = self._contents
        sink = _Sink([p if isinstance(p, bytes) else contents[p] or b"" for p in region.parts])
        sink.items = region.items
        return _reordered(sink, _Order(target.order))  # type: ignore[arg-type]

    # -- rewriting for real -------------------------------------------------------

    def _start_real(self, prefix: bytes) -> None:
        """A real rewriter for this response, given the input read so far; the
        output already sent by the replay is skipped from what it produces."""
        self._skip = self._sent
        self._inputs: list[bytes] = []
        self._cache.misses += 1
        if self._record and self._entry is not None:
            recording = Recording()
            calls = recording.key_calls
            self._bound = {
                i: _LoggingTarget(t, calls.setdefault(i, [])) for i, t in self._targets.items()
            }
            self._recording = recording
        else:
            self._bound = dict(self._targets)
        self._rw = self._real_factory(self._bound)
        if self._recording is not None:
            # The contents the rewriter will append, told apart by identity; an
            # empty one adds nothing, a one-byte one may be shared with the input.
            ids: dict[int, int] = {}
            for i, content in enumerate(self._contents):
                if not content:
                    continue
                if len(content) < 2 or id(content) in ids:
                    ids = {}
                    self._recording = None
                    break
                ids[id(content)] = i
            if self._recording is not None:
                self._taker = _Taker(ids, self._recording)
                self._rw._record = self._taker
        self._fed = 0
        self._pending = prefix

    def _feed(self, data: bytes) -> bytes:
        rw = self._rw
        assert rw is not None
        if self._pending:
            data = self._pending + data
            self._pending = b""
        self._bind(self._bound)
        if self._recording is None:
            self._fed += len(data)
            return self._cut(rw.write(data))
        outs = []
        step = RECORD_STEP
        view = memoryview(data)
        for at in range(0, len(data), step):
            piece = bytes(view[at : at + step])
            self._inputs.append(piece)
            outs.append(rw.write(piece))
            self._fed += len(piece)
            self._recording.checkpoints.append((self._fed, len(self._recording.pieces)))
        return self._cut(b"".join(outs))

    def _cut(self, out: bytes) -> bytes:
        if self._skip:
            n = min(self._skip, len(out))
            self._skip -= n
            out = out[n:]
        return out

"""A page's body through the edits of its decision: decoder -> rewriter -> encoder.

:meth:`Rewriting.start` gives one response a :class:`BodyRewrite` that is fed the
upstream's body chunk by chunk and returns what to send: the content coding
(gzip, deflate, br, zstd) is decoded, the HTML rewritten by the decision's edits as
it streams, and the result encoded again with the same coding. No I/O here; the
caller reads and sends.

Rewriting is the expensive part of a personalized page, so two things are kept
across responses (:class:`_Plans`): the compiled plan of each set of edits (parsing
selectors costs more than rewriting a page, and most visitors of a segment get the
same snippet), and, per page and edit shape, the last rewrite to *replay*: the same
page with the same slots filled costs a comparison instead of a parse
(:mod:`edge.rewrite.replay`).
"""

from __future__ import annotations

import codecs
import functools
import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final

from edge import codec
from edge.caches import LRU
from edge.rewrite import Edit, Plan
from edge.rewrite.replay import ReplayCache, Target

__all__ = ["BodyRewrite", "Rewriting", "SlotEdit", "filled"]

log = logging.getLogger("edge.rewriting")

_PLANS_KEPT: Final = 512


@dataclass(slots=True)
class SlotEdit:
    """What one placement does to one slot on this page (made by
    :mod:`edge.activities`, applied here)."""

    placement: str
    """The placement's id; empty for the sidecar's own additions."""
    slot: str
    edit: Edit
    offer: bool = False
    order: Target | None = None
    """A reorder's per-visitor order (a ``ListOrder``: its ``key`` and ``order`` are
    the edit's)."""
    share: bytes = b""
    """What in this edit is particular to the visitor, for the page's fingerprint.
    For a reorder: with its items' facts, all that decides their order (the sorts,
    the visitor's interest fingerprint): a replay sends a list kept by it."""
    fill: tuple[tuple[str, str], ...] = ()
    """The visitor's own values in the edit's content: ``(placeholder, value)``
    pairs. The content keeps the placeholders (the same string for every visitor: its
    render, its encoding, its links are made once); each value takes its
    placeholder's place where the content leaves the sidecar, in the page
    (:meth:`_Plans.rewriter`, after encoding) and in ``/_edge/decide``'s JSON. Only
    inside the content: the shop's own bytes are never searched."""


class _Late:
    """Stands in for one request's reorder callbacks inside a shared, cached plan.
    :class:`~edge.rewrite.replay.Replayer` sets :attr:`target` right before feeding
    that request's rewriter (feeding is synchronous, so concurrent requests never
    see each other's target)."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        self.target: Any = None

    def key(self, attrs: dict[str, str]) -> str | None:
        return self.target.key(attrs)

    def order(self, keys: list[str | None]) -> list[str]:
        return self.target.order(keys)


class _Same(int):
    """An object as part of a key, by identity: its id, holding the object (so no
    other object gets that id while the key lives). An int for C-speed hashing."""

    obj: object

    def __new__(cls, obj: object) -> _Same:
        same = super().__new__(cls, id(obj))
        same.obj = obj
        return same


def _order_memo(slot_edit: SlotEdit) -> Hashable | None:
    """What decides a reorder's order besides the items' attributes: its share (sorts,
    interest) and how items are read (the slot's reader, the catalogue's version);
    None when the target is not a ``ListOrder`` (then it is asked every time)."""
    reader = getattr(slot_edit.order, "reader", None)
    if reader is None or not slot_edit.share:
        return None
    catalog = getattr(reader, "catalog", None)
    version = getattr(catalog, "version", 0)
    return (slot_edit.share, _same(reader), _same(catalog), version)


_SAMES: dict[int, _Same] = {}
_SAMES_KEPT: Final = 256


def _same(obj: object) -> _Same:
    """``_Same(obj)``, the one made before for this object (a slot's reader and the
    catalogue are the same objects page after page: a lookup, not an object with its
    own dict)."""
    found = _SAMES.get(id(obj))
    if found is None or found.obj is not obj:
        if len(_SAMES) >= _SAMES_KEPT:
            _SAMES.clear()
        found = _SAMES[id(obj)] = _Same(obj)
    return found


def filled(text: str, fill: tuple[tuple[str, str], ...]) -> str:
    """*text* with each placeholder of *fill* replaced by its value."""
    for placeholder, value in fill:
        text = text.replace(placeholder, value)
    return text


_TRANSPARENT: Final = frozenset(("utf-8", "ascii", "iso8859-1", "iso8859-15", "cp1252"))
"""Charsets (Python's names) in which ASCII text is its own bytes, one byte a character,
and never part of another character's bytes: there an ASCII value replaces an ASCII
placeholder in the encoded content as it would in the text before encoding."""


def _filled_bytes(
    content: bytes, text: str, fill: tuple[tuple[str, str], ...], charset: str
) -> bytes:
    """*content* (*text* in *charset*) with *fill*'s values in place of its
    placeholders: the bytes of ``filled(text, fill)`` in *charset*, made by replacing
    bytes where that is the same (~1k instructions for a profiling form, against ~30k
    to encode the filled text anew and digest it)."""
    if _codec_name(charset) in _TRANSPARENT and all(p.isascii() and v.isascii() for p, v in fill):
        for placeholder, value in fill:
            content = content.replace(placeholder.encode("ascii"), value.encode("ascii"))
        return content
    return codec.encode_text(filled(text, fill), charset)


@functools.lru_cache(maxsize=64)
def _codec_name(charset: str) -> str:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return ""


@functools.lru_cache(maxsize=4096)
def _encoded(html: str, charset: str) -> bytes:
    """A snippet's HTML in the page's charset. Remembered: a rendered snippet is most
    often the very same string again (the snippets' render cache), and the same bytes
    object keeps its hash for the plan and replay lookups keyed by it."""
    return codec.encode_text(html, charset)


class _Plans:
    """Compiled rewrite plans by their edits' shape and content, and rewrites to
    replay by page and edits' shape."""

    def __init__(self, replay_bytes: int) -> None:
        self._plans: LRU[tuple[Any, ...], tuple[Plan, dict[int, _Late]]] = LRU(_PLANS_KEPT)
        self.replays = ReplayCache(replay_bytes)

    def rewriter(self, edits: list[SlotEdit], charset: str, page: bytes) -> Any:
        """A rewriter (or a replayer) for *edits* on *page* in *charset*. The plan is
        looked up (or compiled) only if the page is rewritten for real: a replay needs
        the edits' contents alone."""
        replay_shape: list[tuple[Any, ...]] = []  # (the plan's shape without the contents)
        contents: list[bytes | None] = []
        targets: dict[int, Target] = {}
        memos: dict[int, Hashable] = {}
        for i, slot_edit in enumerate(edits):
            edit = slot_edit.edit
            if slot_edit.order is not None:
                replay_shape.append((edit.selector, "reorder", edit.key_link))
                contents.append(None)
                targets[i] = slot_edit.order
                memo = _order_memo(slot_edit)
                if memo is not None:
                    memos[i] = memo
            else:
                content = edit.content
                if isinstance(content, str):
                    text = content
                    content = _encoded(content, charset)
                    if slot_edit.fill:
                        content = _filled_bytes(content, text, slot_edit.fill, charset)
                elif type(content) is not bytes:
                    content = bytes(content)
                if edit.action == "reorder":  # (no order: the plan refuses it)
                    replay_shape.append((edit.selector, edit.action, content))
                    contents.append(None)
                else:
                    replay_shape.append((edit.selector, edit.action))
                    contents.append(content)
        shape = tuple(replay_shape)
        lazy = _Lazy(self, shape, contents)
        replay_key = (page, charset, shape)
        return self.replays.rewriter(replay_key, contents, targets, lazy.real, lazy.bind, memos)

    def plan(self, key: tuple[Any, ...]) -> tuple[Plan, dict[int, _Late]]:
        """The compiled plan of the edits' shape and contents *key*, and its
        reorders' stand-ins by edit index."""
        cached = self._plans.get(key)
        if cached is None:
            late: dict[int, _Late] = {}
            compiled = []
            for i, item in enumerate(key):
                if item[1] == "reorder":
                    holder = late[i] = _Late()
                    compiled.append(
                        Edit(
                            item[0], "reorder", key=holder.key, order=holder.order, key_link=item[2]
                        )
                    )
                else:
                    compiled.append(Edit(item[0], item[1], item[2]))
            cached = (Plan(compiled), late)
            self._plans[key] = cached
        return cached


class _Lazy:
    """One response's plan, looked up when a real rewriter is wanted."""

    __slots__ = ("_contents", "_late", "_plans", "_shape")

    def __init__(
        self, plans: _Plans, shape: tuple[tuple[Any, ...], ...], contents: list[bytes | None]
    ) -> None:
        self._plans = plans
        self._shape = shape
        self._contents = contents
        self._late: dict[int, _Late] = {}

    def real(self, _bound: dict[int, Target]) -> Any:
        # The plan's key: the replay's shape with each edit's content (made only here:
        # a replay needs none).
        key = tuple(
            item if content is None else (*item, content)
            for item, content in zip(self._shape, self._contents, strict=True)
        )
        plan, self._late = self._plans.plan(key)
        return plan.rewriter()

    def bind(self, bound: dict[int, Any]) -> None:
        for i, holder in self._late.items():
            holder.target = bound[i]


class BodyRewrite:
    """One response's body on its way through the edits.

    A page whose length is not known ahead (chunked, or delimited by the end of the
    connection) may turn out longer than ``max_bytes`` (by the upstream's bytes, as
    ``Content-Length`` is judged). The rewrite then *stops* there: the rewriter
    hands back what it holds as it came and the rest passes through (see
    :meth:`~edge.rewrite.Rewriter.stop`), so the visitor gets the whole page, with
    the edits made before that point, without the sidecar buffering anything: a
    rewritten prefix followed by the shop's bytes is a correct page as long as the
    switch happens inside the rewriter, where an edit in progress can be given up
    and its element sent as the shop made it (the same cut the rewriter makes when
    it bails). With no content coding, the upstream's chunks go out as they come
    from then on; a coded body keeps being decoded and encoded again (the client's
    decoder is in the middle of our stream), still within the decoder's bound.

    :meth:`feed` returns ``b""`` until there is something to send, so the caller
    can hold the response's head until then and, when decoding or rewriting fails
    before that, send the shop's own response instead.
    """

    def __init__(
        self,
        plans: _Plans,
        edits: list[SlotEdit],
        content_type: bytes,
        encoding: bytes,
        page: bytes,
        max_bytes: int,
    ) -> None:
        self._plans = plans
        self._edits = edits
        self._content_type = content_type
        self._page = page
        self._max_bytes = max_bytes
        coded = codec.header_codings(encoding)
        if coded is None:  # raises UnsupportedCoding, naming the coding
            codec.Decoder.for_header(encoding.decode("latin-1"))
        # None: no content coding, the body is the page (what an identity Decoder
        # and Encoder would do, without their calls: ~3k instructions a response).
        self._decoder: codec.Decoder | None = None
        self._encoder: codec.Encoder | None = None
        if coded:
            self._decoder = codec.Decoder(list(coded), max_output=max_bytes * 8)
            self._encoder = codec.Encoder(list(coded))
        self._rewriter: Any = None
        self._received = 0
        self.stopped = False
        """The page was longer than ``max_bytes``: the rest was not rewritten."""
        self._relaying = False
        self.top = b""
        """The first decoded bytes of the page (where ``<html lang>`` is)."""

    def feed(self, chunk: bytes, more: bool) -> bytes:
        """The bytes to send for *chunk* of the upstream's body (*more*: not the last).
        Raises :class:`~edge.codec.CodecError` when the body cannot be decoded."""
        if self._relaying:
            return chunk
        self._received += len(chunk)
        decoder = self._decoder
        if decoder is not None:
            data = decoder.feed(chunk)
            if not more:
                data += decoder.flush()
        else:
            data = chunk
            if self._received > self._max_bytes * 8:  # as an identity Decoder says it
                raise codec.too_big(self._max_bytes * 8 - self._received + len(chunk))
        rewriter = self._rewriter
        if rewriter is None:
            if not data and more:
                return b""
            charset = codec.page_charset(self._content_type, data)
            self.top = data
            rewriter = self._rewriter = self._plans.rewriter(self._edits, charset, self._page)
        if self.stopped:
            out = data
        elif more and self._received > self._max_bytes:
            out = rewriter.stop(f"page longer than {self._max_bytes} bytes") + data
            self.stopped = True
            self._relaying = decoder is None
        elif more:
            out = rewriter.write(data) if data else b""
        else:  # (one join: a page's last chunk is most often all of it)
            out = rewriter.last(data)
        if more and not out:
            return b""
        encoder = self._encoder
        if encoder is None:
            return out
        return encoder.feed(out) + (encoder.finish() if not more else encoder.flush())

    def applied(self) -> list[str]:
        """The placements whose slot was found in the page (once the body is done);
        none when the rewriter gave up or stopped partway (what it had done is not
        told apart from what it had not)."""
        rewriter = self._rewriter
        if rewriter is None or rewriter.error is not None:
            return []
        return [self._edits[i].placement for i, n in enumerate(rewriter.counts) if n]


class Rewriting:
    """Rewrites personalized pages; keeps compiled plans and rewrites to replay."""

    def __init__(self, *, max_bytes: int, replay_bytes: int) -> None:
        self.max_bytes = max_bytes
        """Pages longer than this (by Content-Length) are not rewritten; one whose
        length is not known ahead is rewritten up to this many bytes and passes
        through after (:class:`BodyRewrite`). A decoded body may grow to eight times
        this before decoding stops (a decompression bomb)."""
        self._plans = _Plans(replay_bytes)

    def applies(self, encoding: bytes, length: int) -> bool:
        """Whether a body with this Content-Encoding and Content-Length (-1: not
        given) can be rewritten."""
        return codec.header_codings(encoding) is not None and (
            length < 0 or length <= self.max_bytes
        )

    def start(
        self, edits: list[SlotEdit], content_type: bytes, encoding: bytes, page: bytes
    ) -> BodyRewrite:
        """A rewrite of one response's body; *page* (the request target) names the
        page for the replay."""
        return BodyRewrite(self._plans, edits, content_type, encoding, page, self.max_bytes)

"""Reading the shop's own pages: what a page the shop sent says, once it is sent.

A tracked ``GET`` answered ``200`` with HTML, whose page type has a reader, has its
body collected as it streams to the visitor (decoded from its content coding,
bounded: a page over ``max_bytes`` is not read). Once the response is out, the
readers registered for the page type are called, ``reader(page, html, ruleset)``,
and the events they return are recorded for the visitor like the others.

These are the shop's own responses, not the browser's claims: what they say is
trusted as the sidecar's own observation (see design.md, "whom to trust").

The facts readers here teach the :class:`~edge.personalize.catalog.LearnedCatalog`:

- a ``product`` page, that product's facts (:func:`edge.personalize.facts.read_page`);
- a ``category`` page, the name its page shows for the URL segment (so category views
  record ``Electronics``, as the product facts say, rather than ``electronics_1``)
  and the products its JSON-LD lists.

Facts are the same for every visitor, so a page read less than a minute ago is not
collected at all (``reread_after``), and one whose body has not changed since it was
last read (its size and CRC-32, per path) is not parsed again; readers registered
with ``facts=False`` (a cart page, an order confirmation: the visitor's own) always
run.

The mini-cart (:meth:`Reading.register_mini_cart`): while the live rules name a
``[mini_cart]``, every HTML page a tracked visitor is sent (of any page type, or
none) is read for it too, but for the types whose own readers say what the cart holds
(the cart and order pages). Without ``[mini_cart]`` a page of a type with no reader
is never collected.
The learned products are written to the store now and then (:meth:`Reading.save`)
and read back at start (:meth:`Reading.load`).
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from edge import codec
from edge.caches import LRU
from edge.pages import Page
from edge.personalize.catalog import LearnedCatalog, link_path
from edge.personalize.facts import read_page
from edge.profiles import events as ev
from edge.rules import RuleSet

__all__ = ["MAX_BYTES", "PageBody", "Reader", "Reading"]

log = logging.getLogger("edge.reading")

MAX_BYTES: Final = 4 << 20
"""The largest decoded page read (larger pages are served, not read)."""
REREAD_AFTER: Final = 60.0
"""Seconds before a page of facts (product, category) is read again."""
_DIGESTS_KEPT: Final = 8192
"""Pages (by path) whose last body's size and CRC-32 are remembered."""

Reader = Callable[[Page, str, RuleSet], list[ev.BaseEvent]]
"""``reader(page, html, ruleset)``: the events a page of its type shows."""

_NO_TYPE: Final = Page("", {})
"""A page the page map does not know (read for its mini-cart only)."""

_CHARSET: Final = re.compile(rb"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.I)


class ProductStore(Protocol):
    """What the reading needs of a profile store to keep the learned products."""

    async def put_products(self, records: list[dict[str, Any]]) -> None: ...

    async def get_products(self) -> list[dict[str, Any]]: ...


class PageBody:
    """One response's body as it streams: its decoded bytes, up to a limit."""

    __slots__ = ("_decoder", "_parts", "content_type", "digest", "limit", "size", "whole")

    def __init__(self, encoding: bytes, content_type: bytes, limit: int = MAX_BYTES) -> None:
        self.content_type = content_type
        self.limit = limit
        self._parts: list[bytes] = []
        self.size = 0
        self.digest = 0
        """CRC-32 of the decoded bytes so far: with the size, whether a page changed."""
        self.whole = True
        """False once the body proved too large or undecodable: it is not read."""
        try:
            coding = encoding.decode("latin-1") or None
            self._decoder: codec.Decoder | None = (
                codec.Decoder.for_header(coding, max_output=limit) if coding else None
            )
        except codec.CodecError:
            self._decoder = None
            self.whole = False

    def feed(self, chunk: bytes) -> None:
        if not self.whole or not chunk:
            return
        try:
            data = self._decoder.feed(chunk) if self._decoder is not None else chunk
        except codec.CodecError:
            self._drop()
            return
        self.size += len(data)
        if self.size > self.limit:
            self._drop()
            return
        self.digest = zlib.crc32(data, self.digest)
        self._parts.append(data)

    def _drop(self) -> None:
        self.whole = False
        self._parts = []

    def text(self) -> str | None:
        """The page as text (its charset from the Content-Type, else a ``<meta>``,
        else UTF-8), or None if it cannot be read."""
        if not self.whole:
            return None
        if self._decoder is not None:
            try:
                self._parts.append(self._decoder.flush())
            except codec.CodecError:
                return None
            self._decoder = None
        raw = b"".join(self._parts)
        m = _CHARSET.search(self.content_type) or _CHARSET.search(raw[:2048])
        charset = m.group(1).decode("ascii") if m else "utf-8"
        try:
            return raw.decode(charset, "replace")
        except LookupError:
            return raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class _Registered:
    reader: Reader
    facts: bool


class Reading:
    """The readers by page type, and the catalog the facts readers teach."""

    def __init__(
        self,
        catalog: LearnedCatalog,
        store: ProductStore | None = None,
        *,
        max_bytes: int = MAX_BYTES,
        reread_after: float = REREAD_AFTER,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.max_bytes = max_bytes
        self._readers: dict[str, list[_Registered]] = {}
        self.page_types = self._readers.keys()
        """The page types read (a live view: readers registered later count)."""
        self._digests: LRU[str, tuple[int, int]] = LRU(_DIGESTS_KEPT)
        self._read_at: LRU[str, float] = LRU(_DIGESTS_KEPT)
        self._personal: set[str] = set()
        """Page types with a reader that is not a facts reader (read every time)."""
        self.reread_after = reread_after
        self._mini_cart: Reader | None = None
        self._mini_cart_besides: frozenset[str] = frozenset()
        self._path = ""
        self._saved = catalog.version
        self.register("product", self.product_facts, facts=True)
        self.register("category", self.category_facts, facts=True)

    def register(self, page_type: str, reader: Reader, *, facts: bool = False) -> None:
        """Call *reader* for every page of *page_type* read. ``facts=True``: what it
        reads is the same for every visitor (skipped when the page is unchanged)."""
        self._readers.setdefault(page_type, []).append(_Registered(reader, facts))
        if not facts:
            self._personal.add(page_type)

    def register_mini_cart(self, reader: Reader, *, besides: Collection[str] = ()) -> None:
        """*reader* on every page of a tracked visitor (of any type, or none) while
        the live rules name a ``[mini_cart]``; not on the page types of *besides* (the
        cart and order pages, whose own readers say what the cart holds)."""
        self._mini_cart = reader
        self._mini_cart_besides = frozenset(besides)

    def _reads_mini_cart(self, page: Page | None, mini_cart: bool) -> bool:
        return (
            mini_cart
            and self._mini_cart is not None
            and (page is None or page.type not in self._mini_cart_besides)
        )

    def wants(
        self,
        method: str,
        status: int,
        content_type: bytes,
        page: Page | None,
        path: str = "",
        *,
        mini_cart: bool = False,
    ) -> bool:
        """Whether this response's body is collected to be read: not when every
        reader of its type reads facts and the page was read less than
        ``reread_after`` seconds ago (a popular page costs nothing most of the time;
        a change shows within that time). *mini_cart*: the rules name a
        ``[mini_cart]`` and the visitor is tracked (then any HTML page is read)."""
        if status != 200 or method != "GET" or not content_type.startswith(b"text/html"):
            return False
        if self._reads_mini_cart(page, mini_cart):
            return True
        if page is None or page.type not in self._readers:
            return False
        read_at = self._read_at.get(path)
        return (
            read_at is None
            or time.monotonic() - read_at >= self.reread_after
            or page.type in self._personal
        )

    def body(self, encoding: bytes, content_type: bytes) -> PageBody:
        return PageBody(encoding, content_type, self.max_bytes)

    def read(
        self,
        page: Page | None,
        path: str,
        body: PageBody,
        ruleset: RuleSet,
        *,
        mini_cart: bool = False,
    ) -> list[ev.BaseEvent]:
        """Run the page type's readers on a body collected whole, and the mini-cart's
        when *mini_cart* (see :meth:`wants`) and the rules name one; their events. A
        reader that fails is logged and skipped (the visitor has the page already)."""
        now = time.monotonic()
        read_at = self._read_at.get(path)
        # Facts read a moment ago are not read again (a page collected for its
        # mini-cart, or a personal reader, comes sooner).
        recent = read_at is not None and now - read_at < self.reread_after
        if not recent:
            self._read_at[path] = now  # (a page too large to read waits too)
        if not body.whole:
            return []
        digest = (body.size, body.digest)
        unchanged = recent or self._digests.get(path) == digest
        registered = self._readers.get(page.type, ()) if page is not None else ()
        readers = [r for r in registered if not (r.facts and unchanged)]
        mini = self._mini_cart
        if mini is not None and ruleset.carts.mini_cart and self._reads_mini_cart(page, mini_cart):
            readers.append(_Registered(mini, False))
        if not readers:  # (a list page seen before: no decoding, no parsing)
            return []
        html = body.text()
        if html is None:
            return []
        if any(r.facts for r in readers):
            self._digests[path] = digest
        self._path = path
        page = page or _NO_TYPE
        events: list[ev.BaseEvent] = []
        for one in readers:
            try:
                events.extend(one.reader(page, html, ruleset))
            except Exception:
                log.exception("reading a %s page failed; skipped", page.type or "untyped")
        return events

    # -- the facts readers ---------------------------------------------------------

    def product_facts(self, page: Page, html: str, ruleset: RuleSet) -> list[ev.BaseEvent]:
        """A product page teaches its product's facts (found by id, by the page's
        URL, and by the path it was asked at)."""
        # The id the page's own markup gives, else the one its URL names (the page
        # type's `{product}`: what the theme's list links and cart paths carry too).
        facts = read_page(
            html, ruleset.products, url=self._path, product_id=page.ref("product")
        ).product
        if facts is not None:
            self.catalog.learn(facts)
            self.catalog.learn_path(self._path, facts.product_id)
        return []

    def category_facts(self, page: Page, html: str, ruleset: RuleSet) -> list[ev.BaseEvent]:
        """A category page teaches its name (for its URL segment) and the products
        its JSON-LD lists."""
        found = read_page(html, ruleset.products)
        slug = page.ref("category")
        if slug and found.category:
            self.catalog.learn_category(slug, found.category)
        for item in found.items:
            if item.price is not None:  # a list that says prices (else: names, links)
                slug = link_path(item.url).rsplit("/", 1)[-1]
                self.catalog.learn(item if item.product_id else replace(item, product_id=slug))
        return []

    # -- persistence -----------------------------------------------------------------

    async def load(self) -> int:
        """The products learned before (from the store); how many."""
        if self.store is None:
            return 0
        try:
            records = await self.store.get_products()
        except Exception as exc:  # the store down at start: learn afresh
            log.warning("learned products not loaded: %s", exc)
            return 0
        taken = self.catalog.restore(records)
        self._saved = self.catalog.version
        return taken

    async def save(self) -> bool:
        """Write the learned products if they changed since the last write."""
        if self.store is None or self.catalog.version == self._saved:
            return False
        version = self.catalog.version
        await self.store.put_products(self.catalog.records())
        self._saved = version
        return True

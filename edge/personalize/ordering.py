"""Category product order: which products of a list a visitor sees first.

Strategies (a placement's ``sort``), combinable (``["bought last", "affinity"]``: the
first decides, the next breaks its ties):

``affinity``
    The visitor's categories and brands first. This visit's interest (its searches,
    and its views once the profile records them: see :class:`Interest`) comes before
    anything from earlier visits (views and purchases, purchases counting
    ``BOUGHT_WEIGHT`` times a view), so a visitor who always bought men's shoes but
    searched "donna" just now sees women's shoes first.
``price asc`` / ``price desc``
    By price.
``pin``
    The given product ids first, in the given order.
``bought last``
    Products the visitor already bought move down.

The result is a permutation: ``order(...)[k]`` is the index in the page's list of the
item to show at position ``k``. Stable: ties keep the page's order. Items lacking the
fact a strategy needs (no category or brand for ``affinity``, no price for ``price``)
go after the others, keeping their relative order; for ``pin`` and ``bought last`` an
item without an id is simply not pinned / not bought, so it stays among the others in
its relative place.
"""

from __future__ import annotations

import logging
import operator
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import msgspec

from edge.caches import Memo
from edge.personalize.catalog import ItemFacts, ItemReader
from edge.profiles.model import SESSION_GAP, Profile
from edge.rewrite.edits import ITEM_LINK

_FINGERPRINT: Final = msgspec.msgpack.Encoder()
log = logging.getLogger("edge.ordering")

__all__ = [
    "BOUGHT_WEIGHT",
    "STRATEGIES",
    "Interest",
    "ListOrder",
    "Sort",
    "order",
    "search_match",
]

STRATEGIES: Final = ("affinity", "price asc", "price desc", "pin", "bought last")
BOUGHT_WEIGHT: Final = 3
"""One item bought says as much about a visitor's taste as three views."""
_view_time: Final = operator.itemgetter(0)
EARLIER_SEARCH_WEIGHT: Final = 0.5
"""A search from an earlier visit, relative to a category or brand fully favoured."""


@dataclass(frozen=True)
class Sort:
    """One strategy; ``pinned`` holds the ids for ``pin``."""

    strategy: str
    pinned: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, pinned: Sequence[str] = ()) -> Sort:
        """``"price desc"``, ``"Affinity"``, ``"pin"`` (ids in *pinned*) …; a ``ValueError``
        names the strategies there are."""
        name = " ".join(text.lower().split())
        if name == "price":
            name = "price asc"
        if name not in STRATEGIES:
            raise ValueError(f"unknown sort {text!r}; expected one of: {', '.join(STRATEGIES)}")
        if name == "pin" and not pinned:
            raise ValueError("sort 'pin' needs the product ids to show first")
        return cls(name, tuple(pinned))


class Interest(msgspec.Struct, frozen=True):
    """What a visitor is into, for ``affinity`` and ``bought last``.

    Weights are any non-negative numbers (they are scaled to the largest). ``visit_*``
    is this visit; the rest is history. Build it from a profile with :meth:`of`.
    """

    categories: Mapping[str, float] = msgspec.field(default_factory=dict)
    brands: Mapping[str, float] = msgspec.field(default_factory=dict)
    searches: tuple[str, ...] = ()
    visit_categories: Mapping[str, float] = msgspec.field(default_factory=dict)
    visit_brands: Mapping[str, float] = msgspec.field(default_factory=dict)
    visit_searches: tuple[str, ...] = ()
    bought: frozenset[str] = frozenset()

    def fingerprint(self) -> bytes:
        """The fields as bytes, for a digest of what a page's order depends on (equal
        interests give equal bytes; ``repr`` took 3-4x as long)."""
        return _FINGERPRINT.encode(
            (
                self.categories,
                self.brands,
                self.searches,
                self.visit_categories,
                self.visit_brands,
                self.visit_searches,
                sorted(self.bought),
            )
        )

    @classmethod
    def of(cls, profile: Profile, now: int, *, bought: bool = True) -> Interest:
        """From a profile snapshot: views and purchases are history; searches and
        the ``recent_views`` (``(ts, category, brand)``, oldest first) since the visit
        began are this visit's. ``bought=False`` leaves out the products bought (only
        ``bought last`` reads them, and a long order history makes them cost)."""
        in_visit = bool(profile.session_start) and now - profile.last_seen <= SESSION_GAP
        start = profile.session_start if in_visit else now + 1
        categories = {
            k: profile.categories.viewed.get(k, 0) + BOUGHT_WEIGHT * n
            for k, n in profile.categories.bought.items()
        }
        for k, n in profile.categories.viewed.items():
            categories.setdefault(k, n)
        brands = {
            k: profile.brands.viewed.get(k, 0) + BOUGHT_WEIGHT * n
            for k, n in profile.brands.bought.items()
        }
        for k, n in profile.brands.viewed.items():
            brands.setdefault(k, n)
        visit_categories: dict[str, float] = {}
        visit_brands: dict[str, float] = {}
        views = profile.recent_views
        # (oldest first, as the profile keeps them: this visit's are a tail, found by
        # bisection; a visitor between visits has none, and no loop over the 30)
        for view in views[bisect_left(views, start, key=_view_time) :]:
            category, brand = view[1], view[2]
            if category:
                visit_categories[category] = visit_categories.get(category, 0) + 1
            if brand:
                visit_brands[brand] = visit_brands.get(brand, 0) + 1
        return cls(
            categories=categories,
            brands=brands,
            searches=tuple(s.query for s in profile.searches if s.ts < start),
            visit_categories=visit_categories,
            visit_brands=visit_brands,
            visit_searches=tuple(s.query for s in profile.searches if s.ts >= start),
            bought=frozenset(
                item.product_id for o in profile.orders for item in o.items if item.product_id
            )
            if bought
            else frozenset(),
        )


# --- search queries matched to categories and brands ------------------------------


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _stem(token: str) -> str:
    # Enough for plural/gender endings ("scarpa"/"scarpe", "borsa"/"borse", "shoes").
    return token[:-1] if len(token) >= 5 else token


@lru_cache(maxsize=4096)
def _tokens(text: str) -> frozenset[str]:
    return frozenset(
        _stem(t) for t in re.split(r"[^0-9a-z]+", _fold(text)) if len(t) >= 3 or t.isdigit()
    )


def search_match(queries: Sequence[str], name: str) -> float:
    """How well searches point at a category or brand *name* (``scarpe-donna``,
    ``Ferri Calzature``): the best share of a query's words found in the name, 0–1."""
    target = _tokens(name)
    if not target:
        return 0.0
    best = 0.0
    for query in queries:
        words = _tokens(query)
        if words:
            best = max(best, len(words & target) / len(words))
    return best


# --- the strategies ----------------------------------------------------------------

Key = Callable[[int, ItemFacts | None], tuple[Any, ...]]
_LAST: Final = (1,)


def _scaled(weights: Mapping[str, float]) -> dict[str, float]:
    top = max(weights.values(), default=0)
    return {k: v / top for k, v in weights.items()} if top > 0 else {}


def _affinity_key(interest: Interest) -> Key:
    cats, brands = _scaled(interest.categories), _scaled(interest.brands)
    vcats, vbrands = _scaled(interest.visit_categories), _scaled(interest.visit_brands)
    cache: dict[tuple[str, str], tuple[float, float]] = {}

    def score(category: str, brand: str) -> tuple[float, float]:
        visit = vcats.get(category, 0.0) + vbrands.get(brand, 0.0)
        history = cats.get(category, 0.0) + brands.get(brand, 0.0)
        if interest.visit_searches:
            visit += max(
                search_match(interest.visit_searches, category),
                search_match(interest.visit_searches, brand),
            )
        if interest.searches:
            history += EARLIER_SEARCH_WEIGHT * max(
                search_match(interest.searches, category), search_match(interest.searches, brand)
            )
        return visit, history

    def key(i: int, facts: ItemFacts | None) -> tuple[Any, ...]:
        if facts is None or not (facts.category or facts.brand):
            return _LAST
        pair = (facts.category, facts.brand)
        if pair not in cache:
            cache[pair] = score(*pair)
        visit, history = cache[pair]
        return (0, -visit, -history)

    return key


def _price_key(descending: bool) -> Key:
    sign = -1 if descending else 1

    def key(i: int, facts: ItemFacts | None) -> tuple[Any, ...]:
        if facts is None or facts.price is None:
            return _LAST
        return (0, sign * facts.price)

    return key


def _pin_key(pinned: Sequence[str]) -> Key:
    rank = {}
    for r, product_id in enumerate(pinned):
        rank.setdefault(product_id, r)
    unpinned = len(rank)

    def key(i: int, facts: ItemFacts | None) -> tuple[Any, ...]:
        return (rank.get(facts.product_id, unpinned) if facts else unpinned,)

    return key


def _bought_key(bought: frozenset[str]) -> Key:
    def key(i: int, facts: ItemFacts | None) -> tuple[Any, ...]:
        return (1 if facts is not None and facts.product_id in bought else 0,)

    return key


def _key(sort: Sort, interest: Interest) -> Key:
    if sort.strategy == "affinity":
        return _affinity_key(interest)
    if sort.strategy in ("price asc", "price desc"):
        return _price_key(sort.strategy == "price desc")
    if sort.strategy == "pin":
        return _pin_key(sort.pinned)
    if sort.strategy == "bought last":
        return _bought_key(interest.bought)
    raise ValueError(f"unknown sort {sort.strategy!r}")


def _sorts(sort: Sort | str | Sequence[Sort | str]) -> list[Sort]:
    items = [sort] if isinstance(sort, (Sort, str)) else list(sort)
    return [s if isinstance(s, Sort) else Sort.parse(s) for s in items]


def order(
    items: Sequence[ItemFacts | None],
    sort: Sort | str | Sequence[Sort | str],
    interest: Interest | None = None,
) -> list[int]:
    """The permutation that shows *items* (the list's items in page order, ``None``
    where nothing is known) by *sort* for a visitor with *interest*."""
    interest = interest or Interest()
    keys = [_key(s, interest) for s in _sorts(sort)]
    # Each strategy's key starts with a group flag, so concatenated keys stay aligned;
    # ties keep page order because the index is the last part of every key.
    decorated = [
        (tuple(part for k in keys for part in k(i, facts)), i) for i, facts in enumerate(items)
    ]
    decorated.sort()
    return [i for _, i in decorated]


class ListOrder:
    """Glue for the rewriter's ``reorder`` edit, one per response::

        lo = ListOrder(reader, "affinity", interest)
        Edit("ol.products", "reorder", key=lo.key, order=lo.order)

    ``key`` reads each item's facts from its start-tag attributes (and its first
    link, for an edit with ``key_link``) and gives the item a unique key; ``order`` turns the keys (page order) into the wanted key order.
    """

    def __init__(
        self,
        reader: ItemReader,
        sort: Sort | str | Sequence[Sort | str],
        interest: Interest | None = None,
        *,
        fingerprint: bytes | None = None,
    ) -> None:
        self.reader = reader
        self.sorts = _sorts(sort)
        self.interest = interest or Interest()
        self.facts: dict[str, tuple[int, ItemFacts | None]] = {}
        """Each item's facts by its key, with their serial number (see ItemReader.read)."""
        self._fingerprint = fingerprint
        """*interest*'s :meth:`Interest.fingerprint`, if the caller has it already."""

    def key(self, attrs: dict[str, str]) -> str:
        key = str(len(self.facts))
        try:
            self.facts[key] = self.reader.read(attrs, attrs.get(ITEM_LINK))
        except Exception:  # fail open: an item whose facts cannot be read is unknown
            log.exception("list order: cannot read an item's facts; it keeps its place")
            self.facts[key] = _UNREAD
        return key

    def order(self, keys: list[str | None]) -> list[str]:
        """The keys in the order to show; the page's own order when sorting fails (a
        bug must not cut the page off midway: the rewriter is streaming it)."""
        try:
            return self._order(keys)
        except Exception:
            log.exception("list order failed; the list keeps the shop's order")
            return [k for k in keys if k is not None]

    def _order(self, keys: list[str | None]) -> list[str]:
        present = [k for k in keys if k is not None]
        read = [self.facts.get(k, _UNREAD) for k in present]
        # The same list for the same interest comes back in the same order: the
        # permutation is remembered by the items' serial numbers (the reader gives
        # the same items the same numbers on every response).
        if self._fingerprint is None:
            self._fingerprint = self.interest.fingerprint()
        memo = (tuple(self.sorts), self._fingerprint, *[serial for serial, _facts in read])
        perm = _PERMUTATIONS.get(memo)
        if perm is None:
            perm = _PERMUTATIONS.put(
                memo, order([facts for _serial, facts in read], self.sorts, self.interest)
            )
        return [present[i] for i in perm]


_UNREAD: Final[tuple[int, ItemFacts | None]] = (-1, None)
_PERMUTATIONS: Final[Memo[tuple[Any, ...], list[int]]] = Memo(4096)
"""Orders found, by sorts, interest and the items' serial numbers."""

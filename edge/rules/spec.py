"""A rule file, declared: :class:`RuleFile` and the types of its entries.

A rule file has up to eleven tables: ``[segments.NAME]``, ``[[placements]]``,
``[slots.NAME]``, ``[page_types]``, ``[products]`` (:mod:`edge.rules.products`), the
cart sections ``[[cart_actions]]``, ``[cart_page]``, ``[mini_cart]`` and ``[order_page]``
(:mod:`edge.rules.carts`), ``[shop]`` and ``[questions.NAME]`` (``shop.py`` and
``questions.py``). A file decodes into :class:`RuleFile` in one
call; a file that does not is decoded again entry by entry, so that each unknown key
or wrong type is an error naming the key, at its place.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final, Literal, get_origin

import msgspec

from edge.rules.carts import CartActionSpec, CartPage, MiniCart, OrderPage

SORT_KEYS: Final = ("affinity", "price asc", "price desc", "pin", "bought last")
"""How a placement may order a slot's items, applied in the order written."""
Action = Literal["set_inner_content", "replace", "before", "after", "prepend", "append"]
"""What a snippet placement does with the slot's element (the rewriter's vocabulary)."""


class Segment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    when: str
    """The condition, in the rule language."""
    label: str = ""
    """What the shop's staff see (reports, ``edge explain``)."""
    description: str = ""


class Cap(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Show a placement at most ``views`` times ``per`` period to one visitor."""

    views: Annotated[int, msgspec.Meta(ge=1)]
    per: str = "1d"


class Variant(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One arm of an A/B/n placement: what it shows (a snippet, or a sort) and its
    share of the placement's eligible visitors outside the holdout."""

    name: str = ""
    """Stable name, reported (renaming it reassigns its visitors)."""
    snippet: str = ""
    sort: str | list[str] = msgspec.field(default_factory=list)
    action: Action | None = None
    """What the snippet does to the slot; default the placement's, then the slot's."""
    weight: float = 1.0
    """Relative share among the variants (``1`` and ``1``: half each)."""

    @property
    def sort_keys(self) -> list[str]:
        return [self.sort] if isinstance(self.sort, str) else list(self.sort)


class Placement(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    slot: str
    id: str = ""
    """Stable name for measurement and offers; default ``SLOT.SEGMENT``."""
    name: str = ""
    segment: str = ""
    when: str = ""
    """A condition written in place of (not with) ``segment``; neither: everyone."""
    snippet: str = ""
    """A template in ``snippets/``; a placement has a snippet or a sort."""
    action: Action | None = None
    """What the snippet does to the slot; default the slot's action."""
    sort: str | list[str] = msgspec.field(default_factory=list)
    pin: list[str] = msgspec.field(default_factory=list)
    """Product ids shown first when ``sort`` has ``pin``."""
    priority: int = 0
    """Higher wins when several placements fit one slot."""
    start: dt.datetime | None = None
    """Shown from, e.g. 2026-11-27T00:00:00: on the shop's clock (``[shop] timezone``,
    default UTC) unless the time has an offset."""
    end: dt.datetime | None = None
    cap: Cap | None = None
    holdout: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    """Share of eligible visitors who keep the original page, to measure lift."""
    offer_ttl: str = ""
    """How long an offer stays valid after the first exposure, e.g. "48h"."""
    variants: list[Variant] = msgspec.field(default_factory=list)
    """A/B/n: several snippets or sorts, each with a weight, in place of (not with)
    ``snippet``/``sort`` (``edge/placements.py`` assigns each visitor one)."""
    render: Literal["server", "browser"] = "server"
    """Where its block is put on the page: ``server`` (the sidecar rewrites the HTML) or
    ``browser`` (the page leaves as the shop made it, cacheable, and the browser
    snippet applies the block from ``/_edge/decide``)."""

    @property
    def sort_keys(self) -> list[str]:
        return [self.sort] if isinstance(self.sort, str) else list(self.sort)


class Slot(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    select: str
    """A CSS selector of the theme: "#hero", "ol.products", "[data-edge-slot=home-hero]"."""
    label: str = ""
    items: str = ""
    """Selector of the items to reorder inside the slot; default its children."""
    item_id: str = ""
    """Attribute on each item that holds the product id (e.g. "data-product-id")."""
    item_link: str = ""
    """Or: a regular expression over the item's first link; group 1 is the id."""
    action: Action = "set_inner_content"
    pages: list[str] = msgspec.field(default_factory=list)
    """Page types the slot is on (``home``, ``category``...); empty: every page. A page
    of another type is never personalized for this slot, and keeps its caching."""


class RuleFile(msgspec.Struct, forbid_unknown_fields=True):
    """The top level of a rule file."""

    segments: dict[str, Segment] = msgspec.field(default_factory=dict)
    placements: list[Placement] = msgspec.field(default_factory=list)
    slots: dict[str, Slot] = msgspec.field(default_factory=dict)
    page_types: dict[str, str | list[str]] = msgspec.field(default_factory=dict)
    """Page type -> its URL patterns (see ``edge/pages.py``), laid over the base ones."""
    cart_actions: list[CartActionSpec] = msgspec.field(default_factory=list)
    """The theme's cart requests (see ``edge/rules/carts.py``)."""
    cart_page: CartPage = msgspec.field(default_factory=CartPage)
    order_page: OrderPage = msgspec.field(default_factory=OrderPage)
    mini_cart: MiniCart = msgspec.field(default_factory=MiniCart)
    shop: dict[str, Any] = msgspec.field(default_factory=dict)
    """The shop's currency, locale, time zone and languages (``edge/rules/shop.py``)."""
    questions: dict[str, Any] = msgspec.field(default_factory=dict)
    """Profiling questions by name (``edge/rules/questions.py``)."""
    products: dict[str, str] = msgspec.field(default_factory=dict)
    """Fact -> a CSS selector (``@attribute`` to read one), see ``edge/rules/products.py``."""


SECTIONS: Final[dict[str, type]] = {
    field.name: get_origin(field.type) or dict for field in msgspec.structs.fields(RuleFile)
}
"""Each table a rule file may have, and its shape (``dict`` or ``list``)."""

"""What the sidecar sees in a request, as events: page types, searches, campaigns,
cart actions. Pure logic over the request's method, path, query and form; no I/O.

Page types come from URL patterns (``/c/{category}``, ``/p/{product}``), cart actions
from method + path + form field, landing campaigns from UTM parameters and the
referrer. The defaults recognise the demo shop; ``edge.toml`` can replace them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from edge.personalize.catalog import Catalog
from edge.profiles import events as ev
from edge.profiles.model import Touch

DEFAULT_PAGE_TYPES: Final[dict[str, list[str]]] = {
    "home": ["/"],
    "category": ["/c/{category}"],
    "product": ["/p/{product}"],
    "search": ["/search"],
    "cart": ["/cart"],
    "checkout": ["/checkout"],
    "order-complete": ["/order/{order_id}"],
}


@dataclass(frozen=True)
class CartAction:
    method: str
    path: str
    action: str  # "add" | "remove"
    product_field: str = "product_id"
    quantity_field: str = "qty"


DEFAULT_CART_ACTIONS: Final = (
    CartAction("POST", "/cart/add", "add"),
    CartAction("POST", "/cart/remove", "remove"),
)

_SEARCH_ENGINES: Final = (
    "google.",
    "bing.",
    "duckduckgo.",
    "yahoo.",
    "ecosia.",
    "qwant.",
    "baidu.",
    "yandex.",
)
_SOCIAL: Final = (
    "facebook.",
    "instagram.",
    "t.co",
    "twitter.",
    "x.com",
    "linkedin.",
    "pinterest.",
    "tiktok.",
    "reddit.",
)
_EMAIL_MEDIUMS: Final = frozenset({"email", "e-mail", "newsletter"})


def _compile(pattern: str) -> re.Pattern[str]:
    """``/p/{product}`` -> a regex with a named group per ``{name}`` (one path segment)."""
    out = []
    for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", pattern):
        out.append(re.escape(literal))
        if name:
            out.append(f"(?P<{name}>[^/]+)")
    return re.compile("".join(out) + "/?$")


@dataclass(frozen=True)
class Page:
    type: str
    params: Mapping[str, str]


@dataclass
class Observer:
    page_types: Mapping[str, Sequence[str]] = field(default_factory=lambda: DEFAULT_PAGE_TYPES)
    cart_actions: Sequence[CartAction] = DEFAULT_CART_ACTIONS
    shop_host: str = ""
    catalog: Catalog | None = None
    """Product facts by id or page slug: observed views and cart adds carry the
    product's category, brand and price when the feed knows them."""

    def __post_init__(self) -> None:
        self._patterns = [
            (name, _compile(p)) for name, patterns in self.page_types.items() for p in patterns
        ]
        self._cart = {(a.method.upper(), a.path): a for a in self.cart_actions}

    def page(self, path: str) -> Page | None:
        for name, pattern in self._patterns:
            match = pattern.match(path)
            if match:
                return Page(name, match.groupdict())
        return None

    def wants_form(self, method: str, path: str) -> bool:
        """Whether this request's form body must be read to see a cart action."""
        return (method, path) in self._cart

    def page_events(self, path: str, query: str) -> tuple[Page | None, list[ev.BaseEvent]]:
        """Events for a page the visitor received (a 2xx HTML response to a GET)."""
        page = self.page(path)
        out: list[ev.BaseEvent] = [
            ev.PageViewed(path=path[:2048], page_type=page.type if page else "")
        ]
        if page is None:
            return None, out
        if page.type == "product" and "product" in page.params:
            ref = page.params["product"][:128]
            facts = self.catalog.lookup(ref) if self.catalog is not None else None
            if facts is None:
                out.append(ev.ProductViewed(product_id=ref))
            else:
                out.append(
                    ev.ProductViewed(
                        product_id=facts.product_id[:128],
                        category=facts.category[:200],
                        brand=facts.brand[:200],
                        price=facts.price or 0.0,
                    )
                )
        elif page.type == "category" and "category" in page.params:
            out.append(ev.ProductListViewed(category=page.params["category"][:200]))
        elif page.type == "search":
            q = dict(parse_qsl(query)).get("q", "").strip()
            if q:
                out.append(ev.ProductsSearched(query=q[:200]))
        elif page.type == "cart":
            out.append(ev.CartViewed())
        elif page.type == "checkout":
            out.append(ev.CheckoutStarted())
        return page, out

    def cart_events(self, method: str, path: str, form: Mapping[str, str]) -> list[ev.BaseEvent]:
        action = self._cart.get((method, path))
        if action is None:
            return []
        product = form.get(action.product_field, "").strip()[:128]
        if not product:
            return []
        try:
            quantity = max(1, min(int(form.get(action.quantity_field, "1") or 1), 10_000))
        except ValueError:
            quantity = 1
        if action.action == "add":
            facts = self.catalog.lookup(product) if self.catalog is not None else None
            if facts is not None:
                return [
                    ev.ProductAdded(
                        product_id=facts.product_id[:128],
                        category=facts.category[:200],
                        brand=facts.brand[:200],
                        price=facts.price or 0.0,
                        quantity=quantity,
                    )
                ]
            return [ev.ProductAdded(product_id=product, quantity=quantity)]
        return [ev.ProductRemoved(product_id=product)]

    def touch(self, query: str, referrer: str, now: int) -> Touch | None:
        """The campaign a visit arrived from, or None for an internal navigation."""
        if not referrer and "utm" not in query and "%" not in query:
            return None  # (most page views: nothing to parse)
        params = dict(parse_qsl(query))
        source = params.get("utm_source", "")[:100]
        medium = params.get("utm_medium", "")[:100]
        campaign = params.get("utm_campaign", "")[:100]
        host = (urlsplit(referrer).hostname or "") if referrer else ""
        if (
            host
            and self.shop_host
            and (host == self.shop_host or host.endswith("." + self.shop_host))
        ):
            host = ""  # moving around the shop is not a new touch
        if not (source or medium or campaign or host):
            return None
        return Touch(
            ts=now,
            source=source,
            medium=medium,
            campaign=campaign,
            channel=channel(medium, host),
            referrer=host[:100],
        )


def channel(medium: str, referrer_host: str) -> str:
    medium = medium.lower()
    if medium in _EMAIL_MEDIUMS:
        return "email"
    if medium in ("cpc", "ppc", "paid", "paidsearch", "display"):
        return "paid"
    if medium in ("social", "paid-social"):
        return "social"
    if referrer_host:
        if any(s in referrer_host for s in _SEARCH_ENGINES):
            return "search"
        if any(s in referrer_host for s in _SOCIAL):
            return "social"
        if "mail" in referrer_host:
            return "email"
        return "referral"
    return medium or "direct"

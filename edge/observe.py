"""What the sidecar sees in a request, as events: page views, searches, campaigns,
cart actions. Pure logic over the request's head, its page and its form; no I/O.

Which page a path is comes from the one page map (:mod:`edge.pages`); cart actions
from the rule files' ``[[cart_actions]]`` (:mod:`edge.carts`: method, path pattern,
query, form or JSON fields; without any, the demo shop's forms); landing campaigns
from UTM parameters and the referrer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from edge.carts import cart_events
from edge.pages import Page
from edge.personalize.catalog import Catalog, LearnedCatalog
from edge.profiles import events as ev
from edge.profiles.model import Touch
from edge.request import RequestHead
from edge.rules.carts import CartRules

__all__ = [
    "Observer",
    "campaign_of",
    "channel",
    "host_of",
    "is_webmail",
]


DEMO_CARTS: Final = CartRules()
"""Without rule files: the demo shop's cart forms."""

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
# Webmail front ends: a link clicked in an email read there. Checked before the search
# engines, which often serve mail from the same domain (mail.google.com, mail.yahoo.com).
_WEBMAIL_LABELS: Final = frozenset({"mail", "webmail", "email", "posta", "outlook"})
_WEBMAIL_HOSTS: Final = (
    "outlook.live.com",
    "outlook.office.com",
    "outlook.office365.com",
    "mail.proton.me",
    "app.tuta.com",
    "navigator.gmx.net",
    "navigator.web.de",
)


def host_of(netloc: bytes | str) -> str:
    """The host name in a ``Host`` header or a URL's authority (no port, lower-case)."""
    text = netloc.decode("latin-1") if isinstance(netloc, bytes) else netloc
    if not text:
        return ""
    try:
        return urlsplit("//" + text).hostname or ""
    except ValueError:  # a malformed header: no host to compare with
        return ""


class Observer:
    """Turns what passed through the sidecar into events about the visitor."""

    def __init__(
        self,
        carts: Callable[[], CartRules] = lambda: DEMO_CARTS,
        *,
        shop_host: str = "",
        catalog: Catalog | None = None,
    ) -> None:
        self.carts = carts
        """The cart actions serving now (the live rule set's; by default the demo's)."""
        self.shop_host = shop_host.lower()
        """The shop's public host (from ``public_url``): links from it are internal,
        like links from the host each request names."""
        self.catalog = catalog
        """Product facts by id or page slug: observed views and cart adds carry the
        product's category, brand and price when the feed knows them."""

    def wants_form(self, method: str, path: str) -> bool:
        """Whether this request's body must be copied to see a cart action."""
        if method == "GET" or method == "HEAD":
            return False
        return any(a.matches(method, path) for a in self.carts().actions)

    def exchange_events(
        self,
        head: RequestHead,
        page: Page | None,
        status: int,
        content_type: bytes,
        form: bytes | None,
    ) -> list[ev.BaseEvent]:
        """The events one request and its response show: a cart form that went
        through, a page (a 2xx HTML answer to a GET) and what kind of page it was."""
        events: list[ev.BaseEvent] = []
        if form is not None and status < 400:  # the shop accepted it (a redirect too)
            content_type = next((v for n, v in head.headers if n == b"content-type"), b"")
            events.extend(
                self.cart_events(
                    head.method, head.path, head.query_text, content_type.decode("latin-1"), form
                )
            )
        elif head.method == "GET" and status < 400 and self.carts().on_get:
            events.extend(self.cart_events("GET", head.path, head.query_text, "", b""))
        if head.method == "GET" and 200 <= status < 300 and content_type.startswith(b"text/html"):
            events.extend(self.page_events(page, head.path, head.query_text))
        return events

    def page_events(self, page: Page | None, path: str, query: str) -> list[ev.BaseEvent]:
        """Events for a page the visitor received."""
        out: list[ev.BaseEvent] = [
            ev.PageViewed(path=path[:2048], page_type=page.type if page else "")
        ]
        if page is None:
            return out
        kind = page.type
        if kind == "product" and (ref := page.ref("product")[:128]):
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
        elif kind == "category" and (slug := page.ref("category")):
            name = (
                self.catalog.category_name(slug)
                if isinstance(self.catalog, LearnedCatalog)
                else slug
            )
            out.append(ev.ProductListViewed(category=name[:200]))
        elif kind == "search":
            q = dict(parse_qsl(query)).get("q", "").strip()
            if q:
                out.append(ev.ProductsSearched(query=q[:200]))
        elif kind == "cart":
            out.append(ev.CartViewed())
        elif kind == "checkout":
            out.append(ev.CheckoutStarted())
        return out

    def cart_events(
        self, method: str, path: str, query: str, content_type: str, body: bytes
    ) -> list[ev.BaseEvent]:
        """The cart events of a request the shop accepted; adds carry the product's
        facts when the catalog knows them."""
        events = cart_events(self.carts().actions, method, path, query, content_type, body)
        if self.catalog is None:
            return events
        out: list[ev.BaseEvent] = []
        for event in events:
            facts = (
                self.catalog.lookup(event.product_id)
                if isinstance(event, ev.ProductAdded)
                else None
            )
            if facts is not None:
                assert isinstance(event, ev.ProductAdded)
                event = ev.ProductAdded(
                    product_id=facts.product_id[:128],
                    category=facts.category[:200],
                    brand=facts.brand[:200],
                    price=facts.price or 0.0,
                    quantity=event.quantity,
                )
            out.append(event)
        return out

    def touch(self, head: RequestHead, now: int) -> Touch | None:
        """The campaign a visit arrived from, or None for a navigation inside the shop
        (a Referer naming the shop's own host is no new touch)."""
        query = head.query
        if not head.referer and b"utm" not in query and b"%" not in query:
            return None  # (most page views: nothing to parse)
        params = dict(parse_qsl(head.query_text))
        source = params.get("utm_source", "")[:100]
        medium = params.get("utm_medium", "")[:100]
        campaign = params.get("utm_campaign", "")[:100]
        host = ""
        if head.referer:
            try:
                host = urlsplit(head.referer.decode("latin-1")).hostname or ""
            except ValueError:  # a malformed Referer names no site
                host = ""
        if host and self._internal(host, head):
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

    def _internal(self, host: str, head: RequestHead) -> bool:
        for site in (self.shop_host, host_of(head.host), host_of(head.forwarded_host)):
            if site and (host == site or host.endswith("." + site)):
                return True
        return False


def campaign_of(touch: Touch | None) -> tuple[dict[str, str], str]:
    """The request's ``utm`` fields and channel for the rules, from its touch."""
    if touch is None:
        return {}, ""
    parts = (("source", touch.source), ("medium", touch.medium), ("campaign", touch.campaign))
    return {k: v for k, v in parts if v}, touch.channel


def channel(medium: str, referrer_host: str) -> str:
    medium = medium.lower()
    if medium in _EMAIL_MEDIUMS:
        return "email"
    if medium in ("cpc", "ppc", "paid", "paidsearch", "display"):
        return "paid"
    if medium in ("social", "paid-social"):
        return "social"
    if referrer_host:
        if is_webmail(referrer_host):
            return "email"
        if any(s in referrer_host for s in _SEARCH_ENGINES):
            return "search"
        if any(s in referrer_host for s in _SOCIAL):
            return "social"
        return "referral"
    return medium or "direct"


def is_webmail(host: str) -> bool:
    """Whether *host* (lower-case) is a webmail front end: a known one, or one whose
    first label says mail (``mail.google.com``, ``webmail.aruba.it``, ``posta.libero.it``)."""
    if any(host == known or host.endswith("." + known) for known in _WEBMAIL_HOSTS):
        return True
    first, dot, _rest = host.partition(".")
    return bool(dot) and first in _WEBMAIL_LABELS

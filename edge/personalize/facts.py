"""Product facts read from a shop's own page: pure functions of its HTML, no I/O.

What themes already publish, strongest first (each fills only the gaps of the one
before), then the merchant's selectors:

1. schema.org JSON-LD (``<script type="application/ld+json">``): ``Product`` (and
   Shopify's ``ProductGroup``) with ``offers`` as an ``Offer``, a list of them, an
   ``AggregateOffer`` or a ``priceSpecification``; ``@graph`` wrappers;
   ``ItemList`` (a category's products in page order) and ``BreadcrumbList``;
2. microdata (``itemscope itemtype=".../Product"`` with ``itemprop``), as Magento's
   Luma and older PrestaShop themes print it;
3. OpenGraph product tags (``og:title``, ``og:url``, ``product:price:amount`` or
   Shopify's ``og:price:amount``, ``product:price:currency``, ``product:brand``...);
4. the merchant's CSS selectors (``[products]`` in the rule files, see
   :class:`ProductSelectors`): where one matches, it wins, because the merchant
   wrote it for a reason (say, the shop's numeric id on the add-to-cart button
   rather than the SKU the JSON-LD gives).

Broken JSON-LD (a trailing comma, a template that printed nothing) is skipped, never
an error: the page is the shop's, not the merchant's rule file.

Why no HTML library: JSON-LD blocks are found by a scan and read with ``json``
(extruct would read them the same way, with lxml and five more dependencies);
microdata and selectors need a tree: :mod:`edge.rewrite.dom`, built with the
rewriter's own tokenizer (one regex match a tag) and tree rules, only when the page
has ``itemscope`` or the merchant gave selectors. It runs after the response, and
only for a page that changed. The selectors are the rewriter's own
(:mod:`edge.rewrite.selectors`), so slots and products speak one CSS.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html import unescape
from typing import Any, Final

from edge.personalize.catalog import ItemFacts, link_path, parse_price
from edge.rewrite.dom import Document, Element, parse
from edge.rules.products import FACT_NAMES, ProductSelectors, Selector

__all__ = [
    "FACT_NAMES",
    "PageFacts",
    "ProductSelectors",
    "Selector",
    "ld_nodes",
    "ld_types",
    "read_page",
]


_LD_BLOCK: Final = re.compile(
    r"<script\b[^>]*?type\s*=\s*[\"']?application/ld\+json[\"']?[^>]*>(.*?)</script\s*>",
    re.I | re.S,
)
_META: Final = re.compile(r"<meta\b[^>]*>", re.I)
_META_ATTR: Final = re.compile(r"""([a-zA-Z:_-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
_H1: Final = re.compile(r"<h1\b[^>]*>(.*?)</h1\s*>", re.I | re.S)
_TAG: Final = re.compile(r"<[^>]*>")
_SPACE: Final = re.compile(r"\s+")
_LIMIT: Final = 200
"""Longest text kept for a fact (names, categories, brands)."""


@dataclass(frozen=True)
class PageFacts:
    """What one page says about products."""

    product: ItemFacts | None = None
    """The page's own product (a product page), its facts merged from every source."""
    sources: tuple[str, ...] = ()
    """Where the product's facts came from: ``json-ld``, ``microdata``, ``opengraph``,
    ``selectors`` (for ``edge map``)."""
    items: tuple[ItemFacts, ...] = ()
    """A list's products in page order (JSON-LD ``ItemList``), with what it says."""
    breadcrumb: tuple[str, ...] = ()
    """The page's breadcrumb names, home first."""
    heading: str = ""
    """The page's first ``<h1>``, as text."""
    title: str = ""
    """Its ``og:title``."""

    @property
    def category(self) -> str:
        """The category a list page shows: its breadcrumb's last name, else its
        ``og:title``, else its heading."""
        return (self.breadcrumb[-1] if self.breadcrumb else "") or self.title or self.heading


def read_page(
    html: str,
    selectors: ProductSelectors | None = None,
    *,
    url: str = "",
    product_id: str = "",
) -> PageFacts:
    """Every fact *html* gives. *url* is the page's own address (a product whose
    facts name no URL is known by it); *product_id* the id the URL names (the page
    type's ``{product}``), for a product whose markup gives none (before the URL's
    last segment)."""
    products: list[ItemFacts] = []
    items: list[ItemFacts] = []
    crumbs: list[str] = []
    for node in ld_nodes(html):
        kind = ld_types(node)
        if kind & {"Product", "ProductGroup"}:
            products.append(_ld_product(node))
        elif "ItemList" in kind:
            items.extend(_ld_item_list(node))
        elif "BreadcrumbList" in kind and not crumbs:
            crumbs = _ld_breadcrumb(node)
    tree = parse(html) if ("itemscope" in html or selectors) else None
    sources: list[str] = []
    if len(products) > 1:
        # One with a price among several is the page's; else they are a list page's
        # products (WooCommerce prints a category's so: names and links only).
        priced = [p for p in products if p.price is not None]
        if len(priced) != 1:
            items = items or products
        products = priced if len(priced) == 1 else []
    product = products[0] if products else None
    if product is not None:
        sources.append("json-ld")
    if tree is not None and "itemscope" in html:
        micro = _microdata_product(tree)
        if micro is not None:
            product = _fill(product, micro, sources, "microdata")
        if not crumbs:
            crumbs = _microdata_breadcrumb(tree)
    og = _opengraph(html)
    title = og.name if og is not None else ""
    if og is not None and (product is not None or og.price is not None):
        product = _fill(product, og, sources, "opengraph")
    if tree is not None and selectors:
        own = _selected(tree, selectors)
        if own is not None:
            product = own.over(product) if product is not None else own
            sources.append("selectors")
    heading = ""
    m = _H1.search(html)
    if m:
        heading = _text(m.group(1))
    if product is not None:
        if not product.url and url:
            product = _replace(product, url=url)
        if not product.product_id and product_id:
            product = _replace(product, product_id=product_id[:128])
        if not product.product_id and product.url:
            slug = link_path(product.url).rsplit("/", 1)[-1]
            product = _replace(product, product_id=slug[:128])
        if not product.category and crumbs:
            named = [c for c in crumbs[1:] if c != product.name]
            if named:
                product = _replace(product, category=named[-1])
        if not product.product_id:
            product = None
    return PageFacts(product, tuple(sources), tuple(items), tuple(crumbs), heading, title)


def _fill(product: ItemFacts | None, more: ItemFacts, sources: list[str], source: str) -> ItemFacts:
    if product is None:
        sources.append(source)
        return more
    merged = product.over(more)
    if merged != product:
        sources.append(source)
    return merged


def _replace(facts: ItemFacts, **changes: Any) -> ItemFacts:
    return dataclasses.replace(facts, **changes)


# -- JSON-LD ---------------------------------------------------------------------


def ld_nodes(html: str) -> Iterator[Mapping[str, Any]]:
    """Every JSON-LD object of the page, ``@graph`` members included."""
    if "ld+json" not in html:
        return
    for m in _LD_BLOCK.finditer(html):
        raw = m.group(1).strip()
        if raw.startswith("<!--"):
            raw = raw.removeprefix("<!--").removesuffix("-->").strip()
        try:
            data = json.loads(raw, strict=False)
        except (ValueError, RecursionError):
            continue  # a broken block says nothing
        yield from _flatten(data, 0)


def _flatten(data: Any, depth: int) -> Iterator[Mapping[str, Any]]:
    if depth > 4:
        return
    if isinstance(data, list):
        for member in data:
            yield from _flatten(member, depth + 1)
    elif isinstance(data, dict):
        graph = data.get("@graph")
        if isinstance(graph, list):
            yield from _flatten(graph, depth + 1)
        if "@type" in data:
            yield data


def ld_types(node: Mapping[str, Any]) -> set[str]:
    """A JSON-LD node's types, without their vocabulary (``https://schema.org/Order``
    is ``Order``)."""
    kind = node.get("@type")
    names = kind if isinstance(kind, list) else [kind]
    return {n.rsplit("/", 1)[-1] for n in names if isinstance(n, str)}


def _str(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, dict):
        value = value.get("name") or value.get("@id") or ""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return _SPACE.sub(" ", str(value)).strip()[:_LIMIT] if isinstance(value, str) else ""


def _price(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str) and value.strip():
        try:
            return parse_price(value)
        except ValueError:
            return None
    return None


def _availability(value: Any) -> str:
    text = _str(value).rsplit("/", 1)[-1]
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text).lower()


def _offer(offers: Any) -> tuple[float | None, str, str]:
    """Price, currency and availability of a product's ``offers``: the first offer
    with a price (an ``AggregateOffer`` gives its lowest)."""
    candidates = offers if isinstance(offers, list) else [offers]
    for offer in candidates:
        if not isinstance(offer, dict):
            continue
        price = _price(offer.get("price"))
        if price is None:
            price = _price(offer.get("lowPrice"))
        currency = _str(offer.get("priceCurrency"))
        spec = offer.get("priceSpecification")
        for s in spec if isinstance(spec, list) else [spec]:
            if isinstance(s, dict):
                if price is None:
                    price = _price(s.get("price"))
                currency = currency or _str(s.get("priceCurrency"))
        if price is not None:
            return price, currency, _availability(offer.get("availability"))
    return None, "", ""


def _ld_product(node: Mapping[str, Any]) -> ItemFacts:
    price, currency, availability = _offer(node.get("offers"))
    variants = node.get("hasVariant")
    if price is None and isinstance(variants, list):  # a ProductGroup's first variant
        for variant in variants:
            if isinstance(variant, dict):
                price, currency, availability = _offer(variant.get("offers"))
                if price is not None:
                    break
    offers = node.get("offers")
    first = offers[0] if isinstance(offers, list) and offers else offers
    url = _str(node.get("url")) or (_str(first.get("url")) if isinstance(first, dict) else "")
    category = _str(node.get("category"))
    if ">" in category:
        category = category.rsplit(">", 1)[-1].strip()
    product_id = (
        _str(node.get("sku"))
        or _str(node.get("productID"))
        or _str(node.get("productGroupID"))
        or (_str(first.get("sku")) if isinstance(first, dict) else "")
    )
    return ItemFacts(
        product_id[:128],
        category,
        _str(node.get("brand")),
        price,
        _str(node.get("name")),
        url,
        currency.upper()[:3],
        availability,
    )


def _ld_item_list(node: Mapping[str, Any]) -> list[ItemFacts]:
    entries = node.get("itemListElement")
    if not isinstance(entries, list):
        return []
    ranked: list[tuple[float, int, ItemFacts]] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        item = entry.get("item")
        if isinstance(item, dict) and ld_types(item) & {"Product", "ProductGroup"}:
            facts = _ld_product(item)
        else:
            url = _str(entry.get("url")) or (item if isinstance(item, str) else _str(item))
            facts = ItemFacts("", name=_str(entry.get("name")), url=url)
        if not facts.url and not facts.product_id:
            continue
        position = entry.get("position")
        rank = float(position) if isinstance(position, int | float) else float(n)
        ranked.append((rank, n, facts))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [facts for _r, _n, facts in ranked]


def _ld_breadcrumb(node: Mapping[str, Any]) -> list[str]:
    entries = node.get("itemListElement")
    if not isinstance(entries, list):
        return []
    ranked = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        item = entry.get("item")
        name = _str(entry.get("name")) or (_str(item) if isinstance(item, dict) else "")
        position = entry.get("position")
        if name:
            ranked.append((float(position) if isinstance(position, int | float) else n, n, name))
    ranked.sort()
    return [name for _p, _n, name in ranked]


# -- OpenGraph ---------------------------------------------------------------------


def _opengraph(html: str) -> ItemFacts | None:
    if "og:" not in html and "product:" not in html:
        return None
    found: dict[str, str] = {}
    for m in _META.finditer(html):
        attrs = {a.lower(): dq or sq or uq for a, dq, sq, uq in _META_ATTR.findall(m.group())}
        key = (attrs.get("property") or attrs.get("name") or "").lower()
        if key.startswith(("og:", "product:")) and key not in found:
            found[key] = _text(attrs.get("content", ""))
    if not found:
        return None
    price = _price(found.get("product:price:amount") or found.get("og:price:amount"))
    return ItemFacts(
        found.get("product:retailer_item_id", "")[:128],
        found.get("product:category", ""),
        found.get("product:brand", ""),
        price,
        found.get("og:title", ""),
        found.get("og:url", ""),
        (found.get("product:price:currency") or found.get("og:price:currency", "")).upper()[:3],
        _availability(found.get("product:availability", "")),
    )


# -- microdata and selectors, read from the page's element tree ---------------------


def _node_text(node: Element) -> str:
    return node.text()[:_LIMIT]


def _prop_value(node: Element) -> str:
    attrs = node.attrs
    for name in (b"content", b"href", b"src", b"value", b"datetime"):
        if name in attrs and (name != b"value" or node.name in (b"data", b"meter")):
            return attrs[name].decode("utf-8", "replace").strip()[:_LIMIT]
    return _node_text(node)


def _props(scope: Element) -> dict[str, tuple[Element, str]]:
    """A microdata item's properties (the first of each name), nested items'
    properties not included (an ``offers`` or ``brand`` item is a value)."""
    found: dict[str, tuple[Element, str]] = {}
    stack = list(reversed(scope.children))
    while stack:
        node = stack.pop()
        prop = node.attrs.get(b"itemprop")
        if prop is not None:
            for name in prop.decode("utf-8", "replace").split():
                found.setdefault(name, (node, _prop_value(node)))
        if b"itemscope" not in node.attrs:
            stack.extend(reversed(node.children))
    return found


def _scoped(props: dict[str, tuple[Element, str]], name: str) -> dict[str, str]:
    hit = props.get(name)
    if hit is None:
        return {}
    node, value = hit
    if b"itemscope" not in node.attrs:
        return {"name": value}
    return {k: v for k, (_n, v) in _props(node).items()}


def _microdata_product(tree: Document) -> ItemFacts | None:
    for node in tree.elements:
        kind = node.attrs.get(b"itemtype", b"")
        if b"itemscope" in node.attrs and kind.rstrip(b"/").endswith(
            (b"/Product", b"/ProductGroup")
        ):
            props = _props(node)
            offer = _scoped(props, "offers")
            plain = {k: v for k, (_n, v) in props.items()}
            price = _price(offer.get("price") or offer.get("lowPrice") or plain.get("price"))
            price_node = props.get("price") or None
            if price is None and price_node is not None:
                amount = price_node[0].attrs.get(b"data-price-amount")  # Magento's
                price = _price(amount.decode()) if amount else None
            return ItemFacts(
                (plain.get("sku") or plain.get("productID") or "")[:128],
                plain.get("category", ""),
                _scoped(props, "brand").get("name", ""),
                price,
                plain.get("name", ""),
                plain.get("url", ""),
                (offer.get("priceCurrency") or plain.get("priceCurrency", "")).upper()[:3],
                _availability(offer.get("availability") or plain.get("availability", "")),
            )
    return None


def _microdata_breadcrumb(tree: Document) -> list[str]:
    for node in tree.elements:
        if node.attrs.get(b"itemtype", b"").rstrip(b"/").endswith(b"/BreadcrumbList"):
            names = []
            stack = list(reversed(node.children))
            while stack:
                child = stack.pop()
                if child.attrs.get(b"itemtype", b"").endswith(b"/ListItem"):
                    name = _props(child).get("name")
                    if name is not None and name[1]:
                        names.append(name[1])
                else:
                    stack.extend(reversed(child.children))
            return names
    return []


def _selected(tree: Document, selectors: ProductSelectors) -> ItemFacts | None:
    found: dict[str, str] = {}
    for fact, sel in selectors.by_fact.items():
        for node in tree.select(sel.selector):
            if sel.attribute:
                raw = node.attrs.get(sel.attribute.encode())
                value = "" if raw is None else raw.decode("utf-8", "replace").strip()[:_LIMIT]
            else:
                value = _node_text(node)
            if value:
                found[fact] = value
                break
    if not found:
        return None
    return ItemFacts(
        found.get("id", "")[:128],
        found.get("category", ""),
        found.get("brand", ""),
        _price(found.get("price")),
        found.get("name", ""),
        found.get("url", ""),
        found.get("currency", "").upper()[:3],
        _availability(found.get("availability", "")),
    )


def _text(html: str) -> str:
    return _SPACE.sub(" ", unescape(_TAG.sub(" ", html))).strip()[:_LIMIT]

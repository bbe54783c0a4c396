"""Fitting a theme: what the sidecar sees on one of the shop's pages, and what is missing.

``fit_page(path, html, ruleset)`` is the pure half of ``edge map`` (the command,
which fetches the pages, is :mod:`edge.map_cli`). For one page it reports:

- the page type, from the rule set's one page map (``ruleset.pages``);
- each slot: whether it is for this type of page, and how many elements its ``select``
  matches, counted by the sidecar's own streaming rewriter running the slot's own
  action (so a page the rewriter would give up on says so, with the reason);
- for list slots (``item_id``, ``item_link``, ``items`` or a placement that sorts),
  the items with their ids and facts as :class:`~edge.personalize.catalog.ItemReader`
  reads them (the same reader the list ordering uses);
- the product facts the page publishes (:func:`_product_facts`);
- the forms that look like cart forms, and whether a cart action recognises them
  (:func:`_cart_action_for`, the rule files' ``[[cart_actions]]``);
- what is missing, each with a suggestion: a slot that matches nothing (with elements
  of the theme that look like the place), list items without an id (an ``item_id``
  attribute that tells them apart, or an ``item_link`` pattern derived from their
  links), a product page without facts, a cart form nothing recognises, a page no
  page type names.

The details (items, links, forms) come from the page's element tree
(:mod:`edge.rewrite.dom`: the rewriter's own tokenizer, HTML5 tree rules and
selectors): no second HTML parser or CSS engine, so a selector means here what it
means when serving. Pure logic, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from edge.carts import action_for
from edge.personalize.catalog import Catalog, ItemFacts, ItemReader
from edge.personalize.facts import read_page
from edge.rewrite import Edit, Plan, Rewriter
from edge.rewrite import scanner as sc
from edge.rewrite.dom import Element, parse
from edge.rewrite.selectors import SelectorError
from edge.rules.carts import CartAction
from edge.rules.ruleset import RuleSet
from edge.rules.spec import Slot

__all__ = [
    "CartForm",
    "Item",
    "Missing",
    "PageFit",
    "ProductFacts",
    "SlotFit",
    "fit_page",
]

ITEMS_SHOWN: Final = 200
"""Items kept per list (a category page of a few hundred products stays readable)."""
_MARKER: Final = b"<!-- edge map -->"
_NAME_LIMIT: Final = 60


# --- the report ---------------------------------------------------------------------------


@dataclass(slots=True)
class Item:
    """One item of a list slot, as the sidecar reads it."""

    id: str
    """The product id (empty: none found, the item cannot be ordered by its facts)."""
    link: str
    """The item's first link."""
    name: str
    """Its heading or link text, shortened."""
    category: str = ""
    brand: str = ""
    price: float | None = None


@dataclass(slots=True)
class SlotFit:
    name: str
    select: str
    on_page: bool
    """The slot is for this page type (its ``pages`` name it, or it has none)."""
    elements: int = 0
    """Elements the rewriter matched with the slot's action."""
    is_list: bool = False
    items: list[Item] = field(default_factory=list)
    item_count: int = 0
    """Items in the list (``items`` shows at most :data:`ITEMS_SHOWN`)."""
    reader: str = ""
    """How the ids are read: ``attribute data-product-id``, ``link /p/([^/?#]+)``."""
    error: str = ""
    """Why the rewriter would give up on this page for this slot, if it would."""
    pages: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ProductFacts:
    """A product page's facts; empty strings and None are unknown."""

    source: str
    """Where they were read: ``JSON-LD``, ``microdata``, ``OpenGraph``, ``catalog feed``."""
    id: str = ""
    name: str = ""
    price: float | None = None
    currency: str = ""
    brand: str = ""
    category: str = ""
    availability: str = ""


@dataclass(slots=True)
class CartForm:
    method: str
    action: str
    """The path the form posts to."""
    fields: dict[str, str]
    """Field names, with the values of hidden fields and buttons."""
    recognised: str = ""
    """The cart action that matches (``add``, ``remove``), empty when none does."""
    product_field: str = ""
    """Where the matching action finds the product: a field, or ``{product}`` (the path)."""
    count: int = 1
    """Forms like this one on the page (a list has one per item)."""


@dataclass(slots=True)
class Missing:
    what: str
    suggestion: str
    slot: str = ""


@dataclass(slots=True)
class PageFit:
    path: str
    page_type: str
    params: dict[str, str]
    slots: list[SlotFit]
    product: ProductFacts | None
    cart_forms: list[CartForm]
    missing: list[Missing]

    @property
    def complete(self) -> bool:
        """Every slot for this page matched, and nothing else is missing."""
        return not self.missing


def fit_page(
    path: str,
    html: str,
    ruleset: RuleSet,
    *,
    catalog: Catalog | None = None,
    cart_actions: Sequence[CartAction] | None = None,
) -> PageFit:
    """What the sidecar sees on the page at *path* whose HTML is *html*, and what is
    missing for the rule set's slots, with suggestions."""
    doc = parse(html)
    page = ruleset.pages.page(path)
    page_type = page.type if page is not None else ""
    params = dict(page.params) if page is not None else {}
    missing: list[Missing] = []
    if page is None:
        missing.append(_no_page_type(path, ruleset))
    data = html.encode("utf-8", "surrogateescape")
    sorted_slots = {
        p.spec.slot
        for p in ruleset.placements
        if p.spec.sort_keys or any(v.sort_keys for v in p.spec.variants)
    }
    slots = []
    for name, slot in ruleset.slots.items():
        fit = _fit_slot(name, slot, page_type, data, doc, catalog, name in sorted_slots)
        slots.append(fit)
        if fit.on_page:
            missing.extend(_slot_missing(fit, slot, doc))
    product = None
    if page_type == "product":
        product = _product_facts(html, ruleset, page.ref("product") if page else "")
        if product is None and catalog is not None:
            product = _catalog_facts(params, catalog)
        if product is None:
            missing.append(_no_product_facts(doc))
    known = ruleset.carts.actions if cart_actions is None else cart_actions
    forms = _cart_forms(doc, path, ruleset, known)
    missing.extend(_form_missing(form, params) for form in forms if not form.recognised)
    return PageFit(path, page_type, params, slots, product, forms, missing)


# --- slots ----------------------------------------------------------------------------------


def _fit_slot(
    name: str,
    slot: Slot,
    page_type: str,
    data: bytes,
    doc: Element,
    catalog: Catalog | None,
    sorted_by_placement: bool,
) -> SlotFit:
    on_page = not slot.pages or page_type in slot.pages
    is_list = bool(slot.item_id or slot.item_link or slot.items or sorted_by_placement)
    fit = SlotFit(name, slot.select, on_page, is_list=is_list, pages=list(slot.pages))
    if not on_page:
        return fit
    fit.elements, fit.error = _rewriter_count(data, slot, is_list)
    if not is_list:
        return fit
    reader = ItemReader(
        id_attr=slot.item_id or "data-product-id",
        link_pattern=slot.item_link or None,
        catalog=catalog,
    )
    fit.reader = f"attribute {reader.id_attr}" + (
        f", else link {slot.item_link}" if slot.item_link else ""
    )
    items = _items(doc, slot)
    fit.item_count = len(items)
    fit.items = [_item(el, reader) for el in items[:ITEMS_SHOWN]]
    return fit


def _rewriter_count(data: bytes, slot: Slot, is_list: bool) -> tuple[int, str]:
    """How many elements the sidecar's rewriter edits for *slot* on this page, and why
    it would give up, if it would."""
    if is_list:
        edit = Edit(slot.select, "reorder", key=lambda attrs: "", order=list)
    else:
        edit = Edit(slot.select, slot.action, _MARKER)
    try:
        rewriter = Rewriter(Plan([edit]))
    except SelectorError as e:  # load_rules accepted it, but say so rather than fail
        return 0, str(e)
    rewriter.write(data)
    rewriter.end()
    return rewriter.counts[0], rewriter.error or ""


def _items(doc: Element, slot: Slot) -> list[Element]:
    """The list's items: its ``items`` inside the slot's elements, else their children."""
    found: list[Element] = []
    for el in doc.select(slot.select):
        if slot.items:
            found.extend(el.select(slot.items))  # its descendants, as querySelectorAll
        else:
            found.extend(el.children)
    return found


def _item(el: Element, reader: ItemReader) -> Item:
    attrs = {k.decode("latin-1"): v.decode("utf-8", "replace") for k, v in el.attrs.items()}
    link = _first_link(el)
    facts = reader.facts(attrs, link or None)
    heading = next((e for e in el.walk() if e.name in sc.HEADINGS), None)
    anchor = el if el.name == b"a" else next((e for e in el.walk() if e.name == b"a"), None)
    name = (heading or anchor or el).text() or (anchor.attr("title") if anchor else "")
    if len(name) > _NAME_LIMIT:
        name = name[: _NAME_LIMIT - 1] + "…"
    if facts is None:
        return Item("", link, name)
    return Item(facts.product_id, link, name, facts.category, facts.brand, facts.price)


def _first_link(el: Element) -> str:
    if el.name == b"a" and b"href" in el.attrs:
        return el.attr("href")
    for inner in el.walk():
        if inner.name == b"a" and b"href" in inner.attrs:
            return inner.attr("href")
    return ""


# --- product facts ---------------------------------------------------------------------------


def _product_facts(html: str, ruleset: RuleSet, product_id: str = "") -> ProductFacts | None:
    """The product facts a product page gives, read as the sidecar reads them
    (:func:`edge.personalize.facts.read_page`: JSON-LD, microdata, OpenGraph, then the
    rule files' ``[products]`` selectors); *product_id* is the page type's
    ``{product}``, for a page whose markup names no id."""
    found = read_page(html, ruleset.products, product_id=product_id)
    facts = found.product
    if facts is None:
        return None
    return ProductFacts(
        " + ".join(_SOURCES.get(s, s) for s in found.sources) or "the page's URL",
        id=facts.product_id,
        name=facts.name,
        price=facts.price,
        currency=facts.currency,
        brand=facts.brand,
        category=facts.category,
        availability=facts.availability,
    )


_SOURCES: Final = {
    "json-ld": "JSON-LD",
    "microdata": "microdata",
    "opengraph": "OpenGraph",
    "selectors": "[products] selectors",
}


def _catalog_facts(params: Mapping[str, str], catalog: Catalog) -> ProductFacts | None:
    """The feed's facts for the product the URL names (as the sidecar's product views
    are recorded today: by id, else by the slug of the feed's ``url``)."""
    for value in params.values():
        facts: ItemFacts | None = catalog.lookup(value)
        if facts is not None:
            return ProductFacts(
                "catalog feed (by the URL)",
                id=facts.product_id,
                name=facts.name,
                price=facts.price,
                brand=facts.brand,
                category=facts.category,
            )
    return None


# --- cart forms ------------------------------------------------------------------------------

_CART_WORDS: Final = re.compile(
    r"cart|basket|bag\b|carrello|warenkorb|panier|cesta|winkelwagen|add-to-cart|add_to_cart", re.I
)
_PRODUCT_FIELDS: Final = (
    "product_id",
    "product",
    "id_product",
    "add-to-cart",
    "add_to_cart",
    "product-id",
    "productid",
    "variant_id",
    "sku",
    "id",
)
_QUANTITY_FIELDS: Final = ("qty", "quantity", "quantita", "qta", "menge", "quantite")


def _cart_forms(
    doc: Element, page_path: str, ruleset: RuleSet, cart_actions: Sequence[CartAction]
) -> list[CartForm]:
    """The page's forms that look like cart forms, alike ones counted once (the same
    fields, posting to the same path or to paths that differ by a number)."""
    found: dict[tuple[str, str, tuple[str, ...]], CartForm] = {}
    for form in doc.select("form"):
        method = (form.attr("method").strip() or "GET").upper()
        action = urlsplit(form.attr("action").strip()).path or page_path
        fields = _form_fields(form)
        if not _looks_like_cart(form, action, fields):
            continue
        # one entry for a list's forms that differ only by the product's number
        shape = "/".join("#" if part.isdigit() else part for part in action.split("/"))
        key = (method, shape, tuple(fields))
        if key in found:
            found[key].count += 1
            continue
        matched = _cart_action_for(method, action, fields, ruleset, cart_actions)
        found[key] = CartForm(
            method,
            action,
            fields,
            matched.action if matched else "",
            (matched.product or "{product}") if matched else "",
        )
    return list(found.values())


def _form_fields(form: Element) -> dict[str, str]:
    fields: dict[str, str] = {}
    for el in form.walk():
        name = el.attr("name")
        if not name or el.name not in (b"input", b"select", b"textarea", b"button"):
            continue
        kind = el.attr("type").lower()
        shown = kind in ("hidden", "submit") or el.name == b"button"
        fields.setdefault(name, el.attr("value") if shown else "")
    return fields


def _looks_like_cart(form: Element, action: str, fields: Mapping[str, str]) -> bool:
    if _CART_WORDS.search(action) or _CART_WORDS.search(form.attr("class") + form.attr("id")):
        return True
    return any(name.lower() in ("add-to-cart", "add_to_cart") for name in fields)


def _cart_action_for(
    method: str,
    path: str,
    fields: Mapping[str, str],
    ruleset: RuleSet,
    known: Sequence[CartAction] | None = None,
) -> CartAction | None:
    """The cart action that recognises a form posting *fields* to *path*: the rule
    files' ``[[cart_actions]]`` (else the demo shop's), matched as the Observer
    matches a request (:func:`edge.carts.action_for`)."""
    return action_for(ruleset.carts.actions if known is None else known, method, path, fields)


# --- what is missing, and suggestions -----------------------------------------------------

_PLACE_WORDS: Final = ("hero", "banner", "products", "product-list", "promo", "grid")
_ID_ATTRS: Final = re.compile(r"^data-.*(id|sku)|^data-product|^data-item", re.I)


def _no_page_type(path: str, ruleset: RuleSet) -> Missing:
    parts = [p for p in path.split("/") if p]
    if parts:
        pattern = "/" + "/".join([*parts[:-1], "{slug}"]) + ("/" if path.endswith("/") else "")
    else:
        pattern = "/"
    types = ", ".join(ruleset.pages.page_types) or "home, category, product"
    return Missing(
        f"no page type matches {path}",
        f'name it in [page_types], e.g. TYPE = "{pattern}" (types: {types}); '
        "{name} matches one path segment, * the rest",
    )


def _slot_missing(fit: SlotFit, slot: Slot, doc: Element) -> list[Missing]:
    if fit.error:
        return [
            Missing(
                f"slot `{fit.name}`: the rewriter would leave this page untouched: {fit.error}",
                "pick an element whose markup closes cleanly (a container of the slot)",
                fit.name,
            )
        ]
    if fit.elements == 0:
        return [_nothing_matched(fit, slot, doc)]
    if not fit.is_list:
        return []
    if fit.item_count == 0:
        return [
            Missing(
                f"slot `{fit.name}` ({fit.select}) has no items",
                "select the element whose children are the products (or set `items`)",
                fit.name,
            )
        ]
    without = [item for item in fit.items if not item.id]
    if not without:
        return []
    return [
        Missing(
            f"slot `{fit.name}`: {len(without)} of {fit.item_count} items have no product id",
            _id_suggestion(_items(doc, slot)[:ITEMS_SHOWN]),
            fit.name,
        )
    ]


def _nothing_matched(fit: SlotFit, slot: Slot, doc: Element) -> Missing:
    words = [w for w in re.split(r"[-_\s]+", fit.name.lower()) if len(w) > 2]
    words += [w for w in _PLACE_WORDS if w not in words]
    candidates = _candidates(doc, words)
    if candidates:
        shown = ", ".join(f"{sel} ({n})" for sel, n in candidates[:5])
        suggestion = f"elements of this theme that may be the place: {shown}"
    else:
        suggestion = "no element named like it: add the slot's selector to one of the theme's"
    if "data-edge-slot" in fit.select:
        suggestion += " (`data-edge-slot` is the demo shop's own markup)"
    return Missing(f"slot `{fit.name}` ({fit.select}) matches nothing", suggestion, fit.name)


def _candidates(doc: Element, words: Sequence[str]) -> list[tuple[str, int]]:
    """Selectors of elements whose id or a class contains one of *words* (those words
    first), with how many elements each matches."""
    seen: dict[str, int] = {}
    for word in words:
        for el in doc.walk():
            ident = el.attr("id")
            name = el.name.decode()
            if word in ident.lower() and _plain(ident):
                seen.setdefault(f"{name}#{ident}", 0)
                continue
            for cls in el.attr("class").split():
                if word in cls.lower() and _plain(cls):
                    seen.setdefault(f"{name}.{cls}", 0)
                    break
    counted = [(sel, len(doc.select(sel))) for sel in seen]
    return [(sel, n) for sel, n in counted if n]


def _plain(name: str) -> bool:
    return re.fullmatch(r"-?[A-Za-z_][\w-]*", name) is not None


def _id_suggestion(items: Sequence[Element]) -> str:
    """An ``item_id`` attribute whose values tell the items apart, else an
    ``item_link`` pattern derived from the items' first links."""
    values: dict[str, list[str]] = {}
    for el in items:
        for name, value in el.attrs.items():
            values.setdefault(name.decode("latin-1"), []).append(value.decode("utf-8", "replace"))
    for name, seen in values.items():
        if _ID_ATTRS.search(name) and len(seen) == len(items) and len(set(seen)) == len(seen):
            return f'item_id = "{name}" (e.g. {", ".join(seen[:3])})'
    links = [_first_link(el) for el in items]
    pattern = _link_pattern([urlsplit(link).path for link in links if link])
    if pattern is None:
        return "give each item an attribute with the product id, or a link to its product page"
    reader = ItemReader(link_pattern=pattern)
    ids = [reader.product_id({}, link) for link in links]
    found = [i for i in ids if i]
    return (
        f"item_link = '{pattern}' (ids for {len(found)} of {len(items)} items: "
        f"{', '.join(found[:3])}{', …' if len(found) > 3 else ''})"
    )


def _link_pattern(paths: Sequence[str]) -> str | None:
    """A pattern over links whose group 1 is the path segment that tells them apart:
    ``/product/([^/?#]+)`` for ``/product/beanie/`` and ``/product/cap/``; only the
    number when every such segment ends in one (``/catalogue/[^/?#]*?_(\\d+)`` for
    ``/catalogue/cap_12/``), as shops whose slugs end in the id have it."""
    split = [[part for part in p.split("/") if part] for p in paths]
    split = [parts for parts in split if parts]
    if not split:
        return None
    shortest = min(len(parts) for parts in split)
    index = shortest - 1  # one link, or all alike: its last segment
    for i in range(shortest):
        if len({parts[i] for parts in split}) > 1:
            index = i
            break
    head = "".join("/" + re.escape(part) for part in split[0][:index])
    values = [parts[index] for parts in split]
    numbered = [re.fullmatch(r".*?_(\d+)", v) for v in values]
    if all(numbered) and len({m.group(1) for m in numbered if m}) == len(set(values)):
        return f"{head}/[^/?#]*?_(\\d+)(?:[/?#]|$)"
    return f"{head}/([^/?#]+)"


def _no_product_facts(doc: Element) -> Missing:
    hints = []
    if doc.select("h1"):
        hints.append('name = "h1"')
    prices = _candidates(doc, ["price"])
    if prices:
        hints.append(f'price = "{prices[0][0]}"')
    example = ", ".join(hints) or 'name = "h1", price = ".price"'
    return Missing(
        "product page without product facts (no JSON-LD Product, microdata or OpenGraph "
        "product tags)",
        f"map them by selector in [products] ({example}), or give the sidecar a catalog feed",
    )


def _form_missing(form: CartForm, params: Mapping[str, str]) -> Missing:
    """A cart action for a form nothing recognises: its path with the product's place
    named (a number, or what the page's own pattern captured: WooCommerce posts to the
    product page itself)."""
    product = next((f for f in _PRODUCT_FIELDS if f in form.fields), "")
    quantity = next((f for f in _QUANTITY_FIELDS if f in form.fields), "")
    # The product's place: a field of the form, else a number in the path. What the
    # page's own pattern captured (a slug: WooCommerce posts to the product page
    # itself) is a part that changes, `*`.
    captured = set(params.values())
    parts = form.action.split("/")
    named = False
    for i, part in enumerate(parts):
        if part in captured:
            parts[i] = "*"
        elif part.isdigit() and not product and not named:
            parts[i], named = "{product}", True
    toml = f'[[cart_actions]]\naction = "add"\npath = "{"/".join(parts)}"'
    if form.method != "POST":
        toml += f'\nmethod = "{form.method}"'
    if product:
        toml += f'\nproduct = "{product}"'
    if quantity:
        toml += f'\nquantity = "{quantity}"'
    return Missing(
        f"cart form {form.method} {form.action} ({', '.join(form.fields) or 'no fields'}) "
        "is not recognised by any cart action",
        toml,
    )

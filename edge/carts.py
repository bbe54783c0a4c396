"""Carts and purchases seen without any shop integration.

Two sides, both pure (no I/O):

- **requests**: :func:`cart_events` recognises the theme's own cart requests (the rule
  files' ``[[cart_actions]]``: method, path pattern, fields of the query, the form —
  urlencoded or multipart — or a JSON body) and turns them into cart events;
- **pages**: :func:`read_cart` reads the lines of the shop's cart page into an event
  that replaces the visitor's cart, :func:`read_order` reads the order-confirmation
  page's order number and total into an observed purchase (and empties the cart).
  Both have the page readers' signature ``(page, html, ruleset) -> events``.

What the pages show is trusted: they are the shop's own responses, not the browser's
claims. The selectors of ``[cart_page]``/``[order_page]`` come first, then the markup
of the common themes (WooCommerce, Shopify Dawn, PrestaShop classic, Magento Luma),
JSON-LD ``Order`` and data-layer ``purchase`` events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from edge.pages import Page
from edge.personalize.facts import ld_nodes, ld_types
from edge.profiles import events as ev
from edge.rewrite.dom import Document, Element, parse
from edge.rewrite.selectors import SelectorList, parse_selector
from edge.rules.carts import CartAction, Pick
from edge.rules.ruleset import RuleSet

__all__ = [
    "READERS",
    "action_for",
    "cart_events",
    "parse_body",
    "parse_money",
    "read_cart",
    "read_mini_cart",
    "read_order",
]

MAX_LINES: Final = 50
_MAX_QUANTITY: Final = 10_000

Line = Mapping[str, Any]


# --- requests --------------------------------------------------------------------------


def parse_body(content_type: str, body: bytes) -> tuple[dict[str, Any], list[Line]]:
    """The fields of a request body, and its lines: one, or for a JSON body with an
    ``items`` list each item (over the body's other fields)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        if kind == "application/json" or (not kind and body.lstrip()[:1] in (b"{", b"[")):
            data = json.loads(body)
            if not isinstance(data, dict):
                return {}, []
            items = data.get("items")
            if isinstance(items, list) and items:
                rest = {k: v for k, v in data.items() if k != "items"}
                return rest, [{**rest, **i} for i in items[:MAX_LINES] if isinstance(i, dict)]
            return data, [data]
        if kind == "multipart/form-data":
            fields = _multipart(content_type, body)
        else:
            fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    except (ValueError, UnicodeDecodeError):
        return {}, []
    return fields, [fields]


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart form (the stdlib's MIME parser; files skipped)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields = {}
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str) and part.get_filename() is None:
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    fields[name] = payload.decode("utf-8", "replace")
    return fields


def _field(line: Line, name: str) -> str:
    """A field of a line by name, or by a dotted path into a JSON object."""
    value: Any = line.get(name)
    if value is None and "." in name:
        value = line
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _quantity(text: str) -> int | None:
    """A quantity: the first whole number of the text ("2", "2.0", "2 × $45.00")."""
    found = re.search(r"\d+", text)
    return min(int(found.group()), _MAX_QUANTITY) if found else None


def cart_events(
    actions: Sequence[CartAction],
    method: str,
    path: str,
    query: str,
    content_type: str,
    body: bytes | None,
) -> list[ev.BaseEvent]:
    """The cart events of a request the shop accepted: the first action whose method,
    path and ``match`` fit and that names a product (or clears the cart)."""
    parsed: tuple[dict[str, Any], list[Line]] | None = None
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    for action in actions:
        found = action.matches(method, path)
        if found is None:
            continue
        if parsed is None:
            parsed = parse_body(content_type, body) if body else ({}, [{}])
        fields, lines = parsed
        lines = [{**params, **line} for line in lines or [{}]]
        if not all(_matched(params, fields, name, want) for name, want in action.match):
            continue
        events = _action_events(action, found.groupdict().get("product", ""), lines)
        if events:
            return events
    return []


def action_for(
    actions: Sequence[CartAction], method: str, path: str, fields: Mapping[str, str]
) -> CartAction | None:
    """The action that would recognise a request with these form or query *fields*
    (for ``edge map``: does a form found on a page count?)."""
    for action in actions:
        found = action.matches(method, path)
        if found is None:
            continue
        if not all(_matched(fields, {}, name, want) for name, want in action.match):
            continue
        if _action_events(action, found.groupdict().get("product", ""), [fields]):
            return action
    return None


def _matched(params: Mapping[str, Any], fields: Mapping[str, Any], name: str, want: str) -> bool:
    value = _field(params, name) or _field(fields, name)
    return bool(value) if want == "*" else value == want


def _action_events(action: CartAction, in_path: str, lines: list[Line]) -> list[ev.BaseEvent]:
    if action.action == "clear":
        return [ev.CartReplaced()]
    events: list[ev.BaseEvent] = []
    for line in lines:
        product = (in_path or _field(line, action.product))[:128]
        if not product:
            continue
        quantity = _quantity(_field(line, action.quantity)) if action.quantity else None
        if action.action == "add":
            events.append(ev.ProductAdded(product_id=product, quantity=max(1, quantity or 1)))
        elif action.action == "remove":
            events.append(ev.ProductRemoved(product_id=product, quantity=quantity or None))
        elif quantity is not None:  # "set": the line's new quantity
            events.append(ev.ProductRemoved(product_id=product))
            if quantity:
                events.append(ev.ProductAdded(product_id=product, quantity=quantity))
    return events


def _pick(doc: Document, pick: Pick | None, within: Element | None = None) -> list[str]:
    """The values a ``selector@attribute`` finds (attribute, else text), non-empty."""
    if pick is None:
        return []
    found = (within or doc).select(pick.selector)
    if within is not None and not found and within.matches(pick.selector):
        found = [within]  # the item itself carries it (item = "tr", product = "tr@data-id")
    values = (e.attr(pick.attribute) if pick.attribute else e.text() for e in found)
    return [v.strip() for v in values if v.strip()]


# --- money -----------------------------------------------------------------------------

_NUMBER: Final = re.compile(r"\d[\d.,'’\u00a0\u202f ]*")


def parse_money(text: str) -> float | None:
    """An amount as shops print it: ``€ 1.234,50``, ``$1,234.50``, ``12,90 €``,
    ``CHF 1’234.50``; None when the text has no number."""
    found = _NUMBER.search(text)
    if found is None:
        return None
    digits = re.sub(r"['’\u00a0\u202f ]", "", found.group().rstrip(".,' "))
    last_dot, last_comma = digits.rfind("."), digits.rfind(",")
    decimal = max(last_dot, last_comma)
    if decimal >= 0 and (last_dot >= 0) == (last_comma >= 0):
        pass  # both: the last one is the decimal mark
    elif decimal >= 0 and (len(digits) - decimal - 1 == 3 or digits.count(digits[decimal]) > 1):
        decimal = -1  # "1.234" or "1,234,567": thousands
    whole = re.sub(r"[.,]", "", digits[:decimal] if decimal >= 0 else digits)
    cents = digits[decimal + 1 :] if decimal >= 0 else ""
    try:
        value = float(f"{whole or 0}.{cents or 0}")
    except ValueError:
        return None
    return round(value, 2) if 0 <= value <= 1e9 else None


# --- pages: the cart -------------------------------------------------------------------

_selector = parse_selector


def _in_order(text: str) -> tuple[SelectorList, ...]:
    """Selectors tried one after the other (a selector list matches in page order)."""
    return tuple(parse_selector(part) for part in text.split(", "))


def _texts(
    doc: Document, selectors: tuple[SelectorList, ...], within: Element | None = None
) -> Iterator[str]:
    for selector in selectors:
        for element in (within or doc).select(selector):
            yield element.text()


_ITEMS: Final = _selector(
    ".woocommerce-cart-form__cart-item, tr.cart_item, tr.cart-item, li.cart-item, "
    "tbody.cart.item, .basket_summary .basket-items, .cart-line, [data-cart-item]"
)
"""A line of the cart in the common themes (Storefront, Dawn, classic, Luma, Oscar's
default templates, the demo)."""
_ID_ATTRIBUTES: Final = ("data-product-id", "data-product_id", "data-id-product")
_QUANTITY_INPUTS: Final = _selector(
    "input.qty, input.quantity__input, input.js-cart-line-product-quantity, "
    "input[name*=qty], input[name*=quantity]"
)
_QUANTITY_TEXT: Final = _selector(".qty, .quantity")
_NAMES: Final = _in_order(
    ".product-name a, a.cart-item__name, .product-item-name a, .product-line-info a.label, "
    "h3 a, .product-name, .cart-item__name, .product-item-name"
)
_PRICES: Final = _in_order(
    ".product-price .amount, .cart-item__prices .price, .price, .amount, .price_color"
)
_LINKS: Final = _selector("a[href]")
_LINK_PRODUCT_ID: Final = re.compile(r"/product_id/(\d+)")


def read_cart(page: Page, html: str, ruleset: RuleSet) -> list[ev.BaseEvent]:
    """The cart page's lines, as the visitor's whole cart."""
    doc = parse(html)
    picks = ruleset.carts.cart_page
    items = doc.select(picks["item"].selector) if "item" in picks else doc.select(_ITEMS)
    return [ev.CartReplaced(products=_lines(doc, items, picks, ruleset))]


def read_mini_cart(page: Page, html: str, ruleset: RuleSet) -> list[ev.BaseEvent]:
    """The ``[mini_cart]`` of any page, as the visitor's whole cart; nothing when the
    rules name no mini-cart or the page does not show it (a theme that fills it by
    script shows an empty container: then it says nothing either)."""
    picks = ruleset.carts.mini_cart
    if not picks:
        return []
    doc = parse(html)
    containers = doc.select(picks["select"].selector)
    if not containers or not any(e.text() for e in containers):
        return []
    items = [i for c in containers for i in c.select(picks["item"].selector)]
    return [ev.CartReplaced(products=_lines(doc, items, picks, ruleset))]


def _lines(
    doc: Document, items: list[Element], picks: Mapping[str, Pick], ruleset: RuleSet
) -> list[ev.Product]:
    """A cart's lines: each item's product, name, quantity and unit price."""
    items = [i for i in items if not any(a in items for a in i.ancestors())]
    products = []
    for item in items[:MAX_LINES]:
        product_id = _first(_pick(doc, picks.get("product"), item)) or _item_id(doc, item, ruleset)
        if not product_id:
            continue
        name = _first(_pick(doc, picks.get("name"), item)) or _first(_texts(doc, _NAMES, item))
        quantity = _quantity(
            _first(_pick(doc, picks.get("quantity"), item)) or _item_qty(doc, item)
        )
        price_texts = _pick(doc, picks.get("price"), item) or _texts(doc, _PRICES, item)
        price = next((p for p in map(parse_money, price_texts) if p is not None), 0.0)
        products.append(
            ev.Product(
                product_id=product_id[:128],
                name=name[:200],
                price=price,
                quantity=max(1, quantity or 1),
            )
        )
    return products


def _first(values: Any) -> str:
    return next((v for v in values if v), "")


def _item_id(doc: Document, item: Element, ruleset: RuleSet) -> str:
    """A line's product: an id attribute, else its first link to a product page (by
    the page map), else a ``product_id/N`` in a link (Magento's edit link)."""
    for element in (item, *item.walk()):
        for name in _ID_ATTRIBUTES:
            value = element.attr(name).strip()
            if value:
                return value
    links = [e.attr("href") for e in item.select(_LINKS)]
    for href in links:
        page = ruleset.pages.page(urlsplit(href).path or "/")
        if page is not None and page.type == "product" and page.params:
            return page.ref("product") or next(iter(page.params.values()))
    for href in links:
        found = _LINK_PRODUCT_ID.search(href)
        if found:
            return found.group(1)
    return ""


def _item_qty(doc: Document, item: Element) -> str:
    for element in item.select(_QUANTITY_INPUTS):
        if element.attr("type").lower() != "hidden" or element.attr("value"):
            return element.attr("value")
    return _first(e.text() for e in item.select(_QUANTITY_TEXT))


# --- pages: the order confirmation -----------------------------------------------------

_ORDER_IDS: Final = _in_order(
    ".woocommerce-order-overview__order strong, #order-reference-value, "
    ".checkout-success .order-number strong, .checkout-success p span, p.lead strong, .order-id"
)
_ORDER_TOTALS: Final = _in_order(
    ".woocommerce-order-overview__total .amount, .order-confirmation-table tr.font-weight-bold td, "
    "#basket_totals h3.price_color, .order-total .amount, .order-total"
)
_PUSH: Final = re.compile(r"(?:dataLayer\.push|gtag)\s*\(")


def read_order(page: Page, html: str, ruleset: RuleSet) -> list[ev.BaseEvent]:
    """The purchase the order-confirmation page shows (when it names its order), then
    the cart emptied: the order came from it."""
    doc = parse(html)
    picks = ruleset.carts.order_page
    found = _page_order(doc, html)
    order_id = (
        _first(_pick(doc, picks.get("order_id")))
        or page.params.get("order_id", "")
        or found[0]
        or _first(map(_last_word, _texts(doc, _ORDER_IDS)))
    )
    totals = [parse_money(t) for t in _pick(doc, picks.get("total"))]
    if found[1] is not None:
        totals.append(found[1])
    totals += [parse_money(text) for text in _texts(doc, _ORDER_TOTALS)]
    total = next((t for t in totals if t is not None), None)
    events: list[ev.BaseEvent] = []
    order_id = order_id.strip().lstrip("#")[:128]
    if order_id:
        events.append(ev.OrderObserved(order_id=order_id, total=total))
    events.append(ev.CartReplaced())
    return events


def _last_word(text: str) -> str:
    """An order number printed after its label ("Order reference: XKBKNABJK")."""
    words = text.rsplit(":", 1)[-1].split()
    return words[-1] if words else ""


def _page_order(doc: Document, html: str) -> tuple[str, float | None]:
    """(order id, total) from JSON-LD ``Order`` (read as product facts are:
    :func:`edge.personalize.facts.ld_nodes`), else a data-layer or gtag ``purchase``,
    else Shopify's ``Shopify.checkout``."""
    for node in ld_nodes(html):
        if "Order" in ld_types(node):
            total = _money(node.get("totalPaymentDue")) or _money(node.get("price"))
            if total is None:
                offers = node.get("acceptedOffer")
                offers = offers if isinstance(offers, list) else [offers]
                prices = [_money(o) for o in offers if isinstance(o, dict)]
                total = sum(p for p in prices if p) if any(prices) else None
            return str(node.get("orderNumber") or ""), total
    for kind, text in doc.scripts:
        if kind == "application/ld+json" or not ("purchase" in text or "Shopify.checkout" in text):
            continue
        for data in _pushed(text):
            found = _purchase(data)
            if found is not None:
                return found
    return "", None


def _purchase(data: Any) -> tuple[str, float | None] | None:
    if not isinstance(data, dict):
        return None
    ecommerce = data.get("ecommerce") if isinstance(data.get("ecommerce"), dict) else data
    if data.get("event") == "purchase" or "transaction_id" in ecommerce:
        return str(ecommerce.get("transaction_id") or ""), _money(ecommerce.get("value"))
    legacy = ecommerce.get("purchase")
    if isinstance(legacy, dict) and isinstance(legacy.get("actionField"), dict):
        field = legacy["actionField"]
        return str(field.get("id") or ""), _money(field.get("revenue"))
    if "order_id" in data and "total_price" in data:  # Shopify.checkout
        return str(data["order_id"]), _money(data.get("total_price"))
    return None


def _pushed(script: str) -> Iterator[Any]:
    """The object literals a script pushes to the data layer or gtag, or assigns to
    ``Shopify.checkout``."""
    starts = [m.end() for m in _PUSH.finditer(script)]
    at = script.find("Shopify.checkout")
    if at >= 0:
        starts.append(at)
    for start in starts:
        brace = script.find("{", start)
        if brace < 0:
            continue
        end = _balanced(script, brace)
        if end > brace:
            yield _loads(_js_to_json(script[brace : end + 1]))


def _balanced(text: str, start: int) -> int:
    depth = 0
    quote = ""
    for i in range(start, min(len(text), start + 20_000)):
        c = text[i]
        if quote:
            if c == "\\":
                continue
            if c == quote and text[i - 1] != "\\":
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _js_to_json(literal: str) -> str:
    """A JavaScript object literal as JSON: single quotes, bare keys, trailing commas."""
    text = re.sub(r"'((?:[^'\\]|\\.)*)'", lambda m: json.dumps(m.group(1)), literal)
    text = re.sub(r"([{,]\s*)([A-Za-z_$][\w$]*)\s*:", r'\1"\2":', text)
    return re.sub(r",\s*([}\]])", r"\1", text)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _money(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("price", value.get("value"))
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return round(float(value), 2) if 0 <= value <= 1e9 else None
    return parse_money(str(value))


READERS: Final = {"cart": read_cart, "order-complete": read_order}
"""Page type -> its reader, for :mod:`edge.reading` to register. :func:`read_mini_cart`
reads any page type, and only when ``ruleset.carts.mini_cart`` is set."""

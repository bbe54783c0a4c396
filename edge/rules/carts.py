"""The cart sections of a rule file: ``[[cart_actions]]``, ``[cart_page]``,
``[mini_cart]``, ``[order_page]``.

A cart action is a request of the shop's own theme that changes the cart: its method,
a path in the page map's pattern language (``{product}`` one segment that is the
product id, ``*`` anything), the fields it must carry, and where the product and the
quantity are (a field of the query, the form or the JSON body). ``[cart_page]`` and
``[order_page]`` name the theme's elements where common markup does not find the
cart's lines or the order's number and total. Each is checked here when the rules
load; errors name the file, line and column. Pure logic, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from edge.pages import PatternError, compile_pattern
from edge.rewrite.selectors import SelectorError, SelectorList, parse_selector
from edge.rules.errors import Locator, RuleError

__all__ = [
    "DEFAULT_CART_ACTIONS",
    "CartAction",
    "CartActionSpec",
    "CartPage",
    "CartRules",
    "MiniCart",
    "OrderPage",
    "Pick",
    "parse_carts",
]

METHODS: Final = ("POST", "GET", "PUT", "PATCH", "DELETE")


class CartActionSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One ``[[cart_actions]]`` entry as written."""

    action: Literal["add", "remove", "set", "clear"]
    path: str | list[str]
    """Where the theme sends it: ``/basket/add/{product}/``, ``/cart/add*``..."""
    method: str = "POST"
    product: str = ""
    """The field holding the product id, when the path does not name ``{product}``."""
    quantity: str = ""
    """The field holding the quantity; none: one (add), all of it (remove)."""
    match: dict[str, str] = msgspec.field(default_factory=dict)
    """Fields the request must carry, with their value (``"*"``: any value)."""


class CartPage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[cart_page]``: the cart's lines in the theme (``selector`` or ``selector@attr``)."""

    item: str = ""
    product: str = ""
    name: str = ""
    quantity: str = ""
    price: str = ""


class MiniCart(CartPage, forbid_unknown_fields=True, kw_only=True):
    """``[mini_cart]``: the cart summary the theme shows on every page (its container
    ``select``; a page without it says nothing about the cart)."""

    select: str = ""


class OrderPage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[order_page]``: the order's number and total on the confirmation page."""

    order_id: str = ""
    total: str = ""


@dataclass(frozen=True, slots=True)
class CartAction:
    """A cart action, checked and compiled."""

    action: str
    method: str
    patterns: tuple[re.Pattern[str], ...]
    product: str = ""
    quantity: str = ""
    match: tuple[tuple[str, str], ...] = ()

    def matches(self, method: str, path: str) -> re.Match[str] | None:
        if method != self.method:
            return None
        for pattern in self.patterns:
            found = pattern.fullmatch(path)
            if found is not None:
                return found
        return None


def _demo(action: str, path: str, quantity: str = "") -> CartAction:
    return CartAction(action, "POST", (compile_pattern(path),), "product_id", quantity)


DEFAULT_CART_ACTIONS: Final = (
    _demo("add", "/cart/add", "qty"),
    _demo("remove", "/cart/remove"),
)
"""The demo shop's forms: what is recognised when no rule file declares any."""


@dataclass(frozen=True, slots=True)
class Pick:
    """A ``selector@attribute`` of ``[cart_page]``/``[order_page]``: the elements the
    selector finds, and their attribute (or, without one, their text)."""

    selector: SelectorList
    attribute: str = ""


@dataclass(frozen=True, slots=True)
class CartRules:
    """What the rule files say about carts, for the observer and the page readers."""

    actions: tuple[CartAction, ...] = DEFAULT_CART_ACTIONS
    cart_page: dict[str, Pick] = field(default_factory=dict)
    order_page: dict[str, Pick] = field(default_factory=dict)
    mini_cart: dict[str, Pick] = field(default_factory=dict)
    on_get: bool = False
    """Whether an action is a ``GET`` (``/?add-to-cart=ID`` links): then page requests
    are looked at too."""


@dataclass(slots=True)
class CartSections:
    """The cart sections of all files, while they load."""

    actions: list[CartAction] = field(default_factory=list)
    cart_page: dict[str, Pick] = field(default_factory=dict)
    order_page: dict[str, Pick] = field(default_factory=dict)
    mini_cart: dict[str, Pick] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    """``cart_page``/``order_page`` -> the file that declared it (once in all files)."""

    def rules(self) -> CartRules:
        actions = tuple(self.actions) or DEFAULT_CART_ACTIONS
        on_get = any(a.method == "GET" for a in actions)
        return CartRules(actions, self.cart_page, self.order_page, self.mini_cart, on_get)


Convert = Callable[[Any, type[Any], str, Locator, int, list[RuleError]], Any]


def parse_carts(
    loc: Locator,
    data: dict[str, Any],
    declared: Any,
    into: CartSections,
    errors: list[RuleError],
    convert: Convert,
) -> None:
    """The cart sections of one file (*declared*: the file decoded whole, or None when
    it did not decode and each entry is converted on its own by *convert*)."""
    for index, raw in enumerate(data.get("cart_actions", [])):
        header = loc.table("cart_actions", index=index)
        if declared is not None:
            spec = declared.cart_actions[index]
        else:
            spec = convert(raw, CartActionSpec, "cart action", loc, header, errors)
        if spec is not None:
            action = _action(spec, loc, header, errors)
            if action is not None:
                into.actions.append(action)
    for section, kind in (
        ("cart_page", CartPage),
        ("order_page", OrderPage),
        ("mini_cart", MiniCart),
    ):
        if section not in data:
            continue
        header = loc.table(section)
        if section in into.seen:
            errors.append(
                loc.error(
                    header or 1,
                    1,
                    f"[{section}] is declared twice: here and in {into.seen[section]}",
                    help="keep one (the theme's file)",
                )
            )
            continue
        into.seen[section] = loc.file
        spec = getattr(declared, section) if declared is not None else None
        if spec is None:
            spec = convert(data[section], kind, f"[{section}]", loc, header, errors)
        if spec is not None:
            picks = _picks(spec, section, loc, header, errors)
            getattr(into, section).update(picks)


def _action(
    spec: CartActionSpec, loc: Locator, header: int, errors: list[RuleError]
) -> CartAction | None:
    bad = len(errors)

    def err(key: str, message: str, help: str = "") -> None:
        line, col = loc.key(header, key) if key else (header or 1, 1)
        errors.append(loc.error(line, col, message, len(key) or 1, help))

    method = spec.method.upper()
    if method not in METHODS:
        err("method", f"unknown method `{spec.method}`", "one of: " + ", ".join(METHODS))
    paths = [spec.path] if isinstance(spec.path, str) else spec.path
    if not paths:
        err("path", "a cart action needs a `path`", 'e.g. path = "/basket/add/{product}/"')
    patterns = []
    named = []
    placeholders_bad = False
    for path in paths:
        try:
            pattern = compile_pattern(path)
        except PatternError as e:
            err("path", f"cart action: {e}", "{product} is one path segment, * anything")
            continue
        unknown = [n for n in pattern.groupindex if n != "product"]
        if unknown:
            err(
                "path",
                f"unknown placeholder `{{{unknown[0]}}}` in `{path}`",
                "a cart action's path names only `{product}`; write `*` for a part that changes",
            )
            placeholders_bad = True
        patterns.append(pattern)
        named.append("product" in pattern.groupindex)
    wants_product = spec.action != "clear"
    if not wants_product:
        for key, value in (("product", spec.product), ("quantity", spec.quantity)):
            if value:
                err(key, f"`{key}` is never read: a `clear` action empties the whole cart")
        if any(named):
            err("path", "`{product}` is never read: a `clear` action empties the whole cart")
    elif spec.product and named and all(named):
        err(
            "product",
            "`product` is never read: the path names `{product}`",
            "remove `product`, or write the path without `{product}`",
        )
    elif not spec.product and not all(named) and not placeholders_bad:
        err(
            "path" if named else "action",
            "this cart action cannot name the product: its path has no `{product}` "
            "and it has no `product` field",
            'write e.g. path = "/basket/add/{product}/", or product = "product_id"',
        )
    if spec.action == "set" and not spec.quantity:
        err("action", "a `set` action needs `quantity`: the field with the new quantity")
    for name, value in spec.match.items():
        if not name or not value:
            err("match", "`match` names each field and its value", 'e.g. match = { add = "1" }')
    if len(errors) > bad:
        return None
    return CartAction(
        spec.action,
        method,
        tuple(patterns),
        spec.product,
        spec.quantity,
        tuple(spec.match.items()),
    )


def _picks(
    spec: CartPage | OrderPage | MiniCart,
    section: str,
    loc: Locator,
    header: int,
    errors: list[RuleError],
) -> dict[str, Pick]:
    picks = {}
    for key in spec.__struct_fields__:
        text = getattr(spec, key)
        if not text:
            continue
        selector, _, attribute = text.partition("@")
        try:
            picks[key] = Pick(parse_selector(selector.strip()), attribute.strip().lower())
        except SelectorError as e:
            line, col = loc.key(header, key)
            errors.append(
                loc.error(
                    line,
                    col,
                    f"[{section}] `{key}`: {e.problem} in `{selector.strip()}`",
                    len(key),
                    'a CSS selector, optionally @attribute: "input.qty@value"',
                )
            )
    needed = {"cart_page": ("item",), "mini_cart": ("select", "item")}.get(section, ())
    for key in needed:
        if picks and key not in picks:
            line, col = loc.key(header, next(iter(picks)))
            what = "the cart's container" if key == "select" else "one line of the cart"
            example = "div.widget_shopping_cart_content" if key == "select" else "tr.cart_item"
            errors.append(
                loc.error(
                    line,
                    col,
                    f"[{section}] needs `{key}`: the selector of {what}",
                    help=f'e.g. {key} = "{example}"',
                )
            )
    return picks

"""Webhook payloads: the JSON a scenario's step sends, from a template of ``snippets/webhooks/``.

A template is Jinja2 with autoescape off, and every value goes into it through the
``tojson`` filter (``{{ cart.items | tojson }}``): a bare ``{{ value }}`` is an error,
so a name or a product title can never break out of its JSON string. What a template
can read (:func:`payload_context`)::

    scenario, step, message_id, at (unix time), discount (a percentage, 0 for none),
    coupon ("__EDGE_COUPON__" where the step names a coupon pool, else ""),
    visitor.id, visitor.customer_id, visitor.email_hash, visitor.traits (only the
    traits edge.toml's ``export_traits`` allows, under its names: ``city``,
    ``custom.tier``; never anything else, such as a raw e-mail address a CRM sent as a
    custom trait),
    cart.products (product_id, name, category, brand, price, quantity), cart.value,
    cart.count, orders.count, orders.total_spent, orders.last_value, orders.last_at,
    shop.currency

``edge check`` renders every template with a sample (with and without a cart, a
discount and a coupon) and reports one that does not give valid JSON.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final

import jinja2
import msgspec
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge.profiles.model import Cart, Item, Order, Profile, Traits
from edge.profiles.outbox import COUPON_PLACEHOLDER
from edge.rules import RuleError
from edge.shipped import SNIPPETS

__all__ = ["LIBRARY", "PayloadError", "Payloads", "payload_context"]

LIBRARY: Final = SNIPPETS / "webhooks"
"""The shipped payload templates (a merchant's own, of the same name, win)."""
COUPON: Final = COUPON_PLACEHOLDER.decode()


class PayloadError(ValueError):
    """A template that is missing, does not render, or does not render JSON."""


class Json(str):
    """A value already written as JSON (what ``tojson`` gives)."""


_JSON: Final = msgspec.json.Encoder()


def _tojson(value: Any) -> Json:
    try:
        return Json(_JSON.encode(value).decode())
    except TypeError:  # a Jinja value msgspec does not know (a loop's cycler...)
        return Json(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def _only_json(value: Any) -> Any:
    if isinstance(value, Json):
        return value
    raise PayloadError(
        "a value goes into the JSON through tojson: write {{ … | tojson }}, "
        f"not a bare {{{{ … }}}} (it gave {str(value)[:40]!r})"
    )


def _traits(traits: Traits, allowed: Collection[str]) -> dict[str, Any]:
    """The traits *allowed* names (``export_traits``: ``city``, ``custom.tier``), under
    those names; nothing else."""
    out: dict[str, Any] = {}
    for name in allowed:
        if name.startswith("custom."):
            value = traits.custom.get(name.removeprefix("custom."))
        elif name in Traits.__struct_fields__ and name != "custom":
            value = getattr(traits, name)
        else:
            continue
        if value not in (None, ""):
            out[name] = value
    return out


Names = Callable[[str], str]
"""A product's name by its id (the catalogue's: the feed's, or what the shop's product
pages showed), "" when unknown."""


def _item(item: Item, names: Names | None) -> dict[str, Any]:
    return {
        "product_id": item.product_id,
        # (a cart line seen in a cart request has no name; the catalogue knows it)
        "name": item.name or (names(item.product_id) if names is not None else ""),
        "category": item.category,
        "brand": item.brand,
        "price": item.price,
        "quantity": item.quantity,
    }


def payload_context(
    profile: Profile,
    *,
    scenario: str,
    step: str,
    message_id: str,
    at: int,
    discount: float = 0.0,
    coupon_pool: str = "",
    traits: Collection[str] = (),
    currency: str = "",
    names: Names | None = None,
) -> dict[str, Any]:
    """What a payload template reads (see the module's docstring)."""
    last = profile.orders[-1] if profile.orders else None
    return {
        "scenario": scenario,
        "step": step,
        "message_id": message_id,
        "at": at,
        "discount": int(discount) if float(discount).is_integer() else discount,
        "coupon": COUPON if coupon_pool else "",
        "visitor": {
            "id": profile.visitor_id,
            "customer_id": profile.customer_id,
            "email_hash": profile.email_hash,
            "traits": _traits(profile.traits, traits),
        },
        "cart": {
            "products": [_item(i, names) for i in profile.cart.items],
            "value": profile.cart.value,
            "count": profile.cart.count,
        },
        "orders": {
            "count": profile.order_count,
            "total_spent": round(profile.lifetime_spent, 2),
            "last_value": last.total if last else None,
            "last_at": last.ts if last else None,
        },
        "shop": {"currency": currency},
    }


def _samples() -> list[dict[str, Any]]:
    """Contexts every template must turn into JSON: a shopper with a cart, a discount
    and a coupon, and a visitor with nothing at all."""
    full = Profile(
        visitor_id="v-sample",
        customer_id="c-1",
        email_hash="e3b0c442",
        order_count=3,
        lifetime_spent=420.5,
        orders=[Order("o-1", 1_700_000_000, 180.0)],
        cart=Cart([Item("sku-1", "shoes", "Acme", 59.9, 2, 'Runner "Pro" <b>')], 1_700_000_000),
        traits=Traits(city="Milano", custom={"tier": "gold"}),
    )
    common = {"scenario": "sample", "step": "step1", "message_id": "0" * 32, "at": 1_700_000_000}
    return [
        payload_context(
            full,
            **common,
            discount=10,
            coupon_pool="pool",
            traits=("city", "custom.tier"),
            currency="EUR",
        ),
        payload_context(Profile(visitor_id="v-empty"), **common),
    ]


class Payloads:
    """The payload templates: the merchant's ``snippets/webhooks/``, then the library."""

    def __init__(
        self, directory: str | Path | None = None, *, library: str | Path | None = LIBRARY
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.search_path = [p for p in (self.directory, library) if p is not None]
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(p) for p in self.search_path]),
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            finalize=_only_json,
            auto_reload=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["tojson"] = _tojson

    def names(self) -> list[str]:
        try:
            return sorted(n for n in self.env.list_templates() if n.endswith(".json"))
        except OSError:
            return []

    def render(self, name: str, context: Mapping[str, Any]) -> bytes:
        """The payload *name* renders for *context*, checked to be one JSON value."""
        try:
            text = self.env.get_template(name).render(context)
        except jinja2.TemplateNotFound:
            raise PayloadError(f"no payload template {name!r} in {self._where()}") from None
        except PayloadError:
            raise
        except Exception as exc:  # a template error of any kind: the merchant's to fix
            raise PayloadError(f"{name}: {type(exc).__name__}: {exc}") from None
        body = text.strip().encode()
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"{name} does not render valid JSON: {exc}") from None
        return body

    def _where(self) -> str:
        return " or ".join(str(p) for p in self.search_path) or "no directory"

    def check(
        self, used: Mapping[str, list[tuple[str, int, int]]] | None = None
    ) -> list[RuleError]:
        """Every template rendered with the samples; every template *used* (name ->
        the (file, line, column) places naming it) must exist."""
        errors = []
        names = self.names()
        for name in names:
            shown = self._path(name)
            try:
                self.env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                errors.append(
                    RuleError(shown, exc.lineno or 0, 1, f"template syntax: {exc.message}")
                )
                continue
            for context in _samples():
                try:
                    self.render(name, context)
                except PayloadError as exc:
                    help = "build the JSON with {{ value | tojson }}, e.g. {{ cart.products | tojson }}"
                    errors.append(RuleError(shown, 0, 0, str(exc), help=help))
                    break
        for name, places in (used or {}).items():
            if name in names:
                continue
            for file, line, column in places:
                errors.append(
                    RuleError(
                        file,
                        line,
                        column,
                        f"no payload template `{name}` in {self._where()}",
                        help=_suggest(name, names),
                    )
                )
        return errors

    def _path(self, name: str) -> str:
        for directory in self.search_path:
            if (directory / name).is_file():
                return str(directory / name)
        return name


def _suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    return "templates: " + (", ".join(names) or "none: write one in snippets/webhooks/")

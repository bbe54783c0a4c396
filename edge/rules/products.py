"""``[products]``: where the merchant's theme shows a product's facts, by selector.

One key per fact (``id``, ``name``, ``price``, ``currency``, ``brand``, ``category``,
``availability``, ``url``), each a CSS selector in the slots' language, optionally
followed by ``@attribute`` to read that attribute rather than the element's text::

    [products]
    id = "button[name=add-to-cart]@value"
    price = "p.price .amount"

Checked when the rules load: an unknown fact, a value that is not a string, or a
selector that does not parse is an error naming the file, line and column. A page's
structured data (JSON-LD, microdata, OpenGraph) is read without any of this; where a
selector matches, it wins (see :mod:`edge.personalize.facts`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edge.rewrite.selectors import SelectorError, SelectorList, parse_selector
from edge.rules.errors import Locator, RuleError

__all__ = ["FACT_NAMES", "ProductSelectors", "Selector", "parse_products", "product_selectors"]

FACT_NAMES: Final = (
    "id",
    "name",
    "price",
    "currency",
    "brand",
    "category",
    "availability",
    "url",
)
"""The facts a page can give, as ``[products]`` names them."""

_ATTR_NAME: Final = re.compile(r"[A-Za-z_:][-A-Za-z0-9_:.]*")


@dataclass(frozen=True)
class Selector:
    """One ``[products]`` entry: a CSS selector, and the attribute to read (else
    the element's text)."""

    selector: SelectorList
    attribute: str = ""

    @classmethod
    def parse(cls, text: str) -> Selector:
        """``"h1.product_title"`` or ``"[data-product-id]@data-product-id"``; a
        ``ValueError`` (a :class:`~edge.rewrite.selectors.SelectorError` for the
        selector, with its column) says what is wrong."""
        head, at, tail = text.rpartition("@")
        if at and _ATTR_NAME.fullmatch(tail.strip()) and "]" not in tail:
            if not head.strip():
                raise ValueError(f"{text!r}: a selector is needed before '@{tail}'")
            return cls(parse_selector(head.strip()), tail.strip().lower())
        return cls(parse_selector(text.strip()))


@dataclass(frozen=True)
class ProductSelectors:
    """The merchant's selectors by fact name (``id``, ``price``...)."""

    by_fact: Mapping[str, Selector] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_fact)


def parse_products(
    loc: Locator,
    data: dict[str, Any],
    found: dict[str, tuple[Selector, str]],
    errors: list[RuleError],
) -> None:
    """Check one file's ``[products]`` into *found* (fact → selector, where)."""
    table = data.get("products")
    if not table:
        return
    header = loc.table("products")
    if not isinstance(table, dict):
        errors.append(loc.error(header or 1, 1, "`products` must be a table"))
        return
    for fact, raw in table.items():
        line, col = loc.key(header, fact)
        if fact not in FACT_NAMES:
            close = difflib.get_close_matches(fact, FACT_NAMES, n=1)
            errors.append(
                loc.error(
                    line,
                    col,
                    f"unknown product fact `{fact}`",
                    len(fact),
                    f"did you mean `{close[0]}`?"
                    if close
                    else "known facts: " + ", ".join(f"`{f}`" for f in FACT_NAMES),
                )
            )
            continue
        if not isinstance(raw, str) or not raw.strip():
            errors.append(
                loc.error(
                    line,
                    col,
                    f"`{fact}` needs a CSS selector as a string",
                    len(fact),
                    help=f'e.g. {fact} = "h1.product_title" or "[data-id]@data-id"',
                )
            )
            continue
        try:
            selector = Selector.parse(raw)
        except SelectorError as e:
            offsets = loc.string_offsets(line, col)
            at = col
            if offsets is not None and e.position < len(offsets):
                at = offsets[e.position] - loc.starts[line - 1] + 1
            errors.append(
                loc.error(
                    line,
                    at,
                    f"`{fact}`: {e.problem}",
                    help="selectors as in [slots]: tag, #id, .class, [attr=value], "
                    "descendant and child; add @attribute to read an attribute",
                )
            )
            continue
        except ValueError as e:
            errors.append(loc.error(line, col, f"`{fact}`: {e}", len(fact)))
            continue
        where = f"{loc.file}:{line}"
        if fact in found:
            errors.append(
                loc.error(
                    line, col, f"product fact `{fact}` is set twice: here and at {found[fact][1]}"
                )
            )
            continue
        found[fact] = (selector, where)


def product_selectors(found: dict[str, tuple[Selector, str]]) -> ProductSelectors:
    return ProductSelectors({fact: selector for fact, (selector, _where) in found.items()})

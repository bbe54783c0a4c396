"""The test shop's catalogue: three categories, ten products with a brand and a price.
Plain data (no Django), read by the loader and by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final


@dataclass(frozen=True)
class Item:
    title: str
    category: str
    brand: str
    price: Decimal
    upc: str


CATEGORIES: Final = ("Shoes", "Bags", "Scarves")

ITEMS: Final = (
    Item("Ferri Leather Boot", "Shoes", "Ferri", Decimal("189.00"), "SH-001"),
    Item("Lumo Canvas Sneaker", "Shoes", "Lumo", Decimal("59.00"), "SH-002"),
    Item("Ferri Suede Loafer", "Shoes", "Ferri", Decimal("149.00"), "SH-003"),
    Item("Lumo Trail Runner", "Shoes", "Lumo", Decimal("99.00"), "SH-004"),
    Item("Serra Summer Sandal", "Shoes", "Serra", Decimal("45.00"), "SH-005"),
    Item("Ferri Weekend Bag", "Bags", "Ferri", Decimal("240.00"), "BG-001"),
    Item("Lumo Tote", "Bags", "Lumo", Decimal("35.00"), "BG-002"),
    Item("Serra Crossbody Bag", "Bags", "Serra", Decimal("120.00"), "BG-003"),
    Item("Serra Silk Scarf", "Scarves", "Serra", Decimal("80.00"), "SC-001"),
    Item("Lumo Wool Scarf", "Scarves", "Lumo", Decimal("30.00"), "SC-002"),
)
"""In the order they are created: Oscar gives them the ids 1, 2, 3..."""

BY_TITLE: Final = {item.title: item for item in ITEMS}

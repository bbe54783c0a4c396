"""The theme fixtures (tests/themes/*, written from the public templates of
WooCommerce Storefront, Shopify Dawn, PrestaShop classic and Magento Luma): the
product page's facts read, the category list's items identified, and the list
reordered by price once the catalog knows its products."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edge.personalize.catalog import ItemFacts, ItemReader, LearnedCatalog
from edge.personalize.facts import read_page
from edge.personalize.ordering import Interest, ListOrder
from edge.rewrite import Edit, dom
from edge.rewrite.rewriter import Plan
from edge.rules.ruleset import compile_text

THEMES = Path(__file__).parent / "themes"


@dataclass(frozen=True)
class Theme:
    name: str
    product: ItemFacts
    """What its product page says."""
    slot: str
    """The list's selector, as a merchant maps it."""
    link: str
    """A slot's ``item_link``, or "" (items found by the learned pages' paths)."""
    list_ids: list[str]
    """The items' ids in page order, as the reader identifies them."""
    prices: list[float]
    """The prices the catalog learns for them (from their product pages)."""
    category: str
    """The category name its list page shows."""


THEME_CASES = [
    Theme(
        "woocommerce-storefront",
        ItemFacts(
            "woo-hoodie-with-logo",
            "Hoodies",
            "",
            45.0,
            "Hoodie with Logo",
            "https://shop.example/product/hoodie-with-logo/",
            "USD",
            "in stock",
        ),
        "ul.products",
        "",
        [
            "woo-hoodie-with-logo",
            "woo-beanie",
            "woo-cap",
            "woo-hoodie-with-zipper",
            "woo-belt",
        ],
        [45.0, 18.0, 16.0, 45.0, 55.0],
        "Clothing",
    ),
    Theme(
        "shopify-dawn",
        ItemFacts(
            "8012345601",
            "Shirts",
            "Ocean Co",
            50.0,
            "Ocean Blue Shirt",
            "https://shop.example/products/ocean-blue-shirt",
            "USD",
            "in stock",
        ),
        "#product-grid",
        "",
        ["8012345601", "8012345602", "8012345603", "8012345604", "8012345605"],
        [50.0, 80.0, 60.0, 75.0, 40.0],
        "Tops",
    ),
    Theme(
        "prestashop-classic",
        ItemFacts(
            "demo_1",
            "Men",
            "Studio Design",
            23.9,
            "Hummingbird printed t-shirt",
            "https://shop.example/en/men/1-hummingbird-printed-t-shirt.html",
            "EUR",
            "in stock",
        ),
        "div.products",
        r"/(\d+)-[^/]*\.html",
        ["1", "2", "6", "7"],
        [23.9, 35.9, 11.9, 12.9],
        "Clothes",
    ),
    Theme(
        "magento-luma",
        ItemFacts(
            "24-MB01",
            "",
            "",
            34.0,
            "Joust Duffle Bag",
            "https://shop.example/joust-duffle-bag.html",
            "USD",
            "",
        ),
        "ol.product-items",
        r"/([\w-]+)\.html",
        ["24-MB01", "24-MB04", "24-MB02", "24-MB06"],
        [34.0, 32.0, 59.0, 45.0],
        "Bags",
    ),
]


def page(theme: str, kind: str) -> str:
    return (THEMES / theme / f"{kind}.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("theme", THEME_CASES, ids=lambda t: t.name)
def test_the_product_pages_facts_are_read(theme: Theme) -> None:
    found = read_page(page(theme.name, "product"))
    assert found.product == theme.product


@pytest.mark.parametrize("theme", THEME_CASES, ids=lambda t: t.name)
def test_the_category_pages_name_is_read(theme: Theme) -> None:
    found = read_page(page(theme.name, "category"))
    assert found.product is None
    assert found.category == theme.category


def test_merchant_selectors_win_over_structured_data() -> None:
    rules = compile_text('[products]\nid = "#product_page_product_id@value"\nbrand = "h1.h1"\n')
    found = read_page(page("prestashop-classic", "product"), rules.products)
    assert found.product is not None
    assert found.product.product_id == "1"  # what the cart form posts, not the reference
    assert found.product.brand == "Hummingbird printed t-shirt"
    assert found.product.price == 23.9  # the JSON-LD still fills the rest
    assert found.sources == ("json-ld", "selectors")  # OpenGraph said nothing new


def _catalog(theme: Theme, html: str) -> tuple[LearnedCatalog, list[str]]:
    """A catalog that saw the list's product pages: ids and prices as the theme
    says, each at the link the list has for it."""
    catalog = LearnedCatalog()
    hrefs = _item_links(theme, html)
    assert len(hrefs) == len(theme.list_ids)
    for href, product_id, price in zip(hrefs, theme.list_ids, theme.prices, strict=True):
        catalog.learn(ItemFacts(product_id, theme.category, "", price, url=href))
    return catalog, hrefs


def _item_links(theme: Theme, html: str) -> list[str]:
    """The product links of the list (the slot's element only), in page order."""
    (found,) = dom.parse(html).select(theme.slot)
    seen: list[str] = []
    for a in found.select("a[href]"):
        href = a.attr("href")
        if (
            href.startswith("#")
            or "add-to-cart" in href
            or href.rstrip("/").endswith("shop.example")
        ):
            continue
        path = href.split("?")[0]
        if path not in seen and ("/product" in path or path.endswith(".html")):
            seen.append(path)
    return seen


def reorder(theme: Theme, catalog: LearnedCatalog | None, sort: str) -> tuple[bytes, ListOrder]:
    reader = ItemReader(link_pattern=theme.link or None, catalog=catalog)
    lo = ListOrder(reader, sort, Interest())
    edit = Edit(theme.slot, "reorder", key=lo.key, order=lo.order, key_link=True)
    rewriter = Plan([edit]).rewriter()
    html = page(theme.name, "category").encode()
    return rewriter.write(html) + rewriter.end(), lo


@pytest.mark.parametrize("theme", THEME_CASES, ids=lambda t: t.name)
def test_the_list_items_are_identified(theme: Theme) -> None:
    html = page(theme.name, "category")
    catalog, _hrefs = _catalog(theme, html)
    _out, lo = reorder(theme, catalog, "price asc")
    ids = [facts.product_id for _serial, facts in lo.facts.values() if facts is not None]
    assert ids == theme.list_ids


@pytest.mark.parametrize("theme", THEME_CASES, ids=lambda t: t.name)
def test_the_list_is_reordered_by_price(theme: Theme) -> None:
    html = page(theme.name, "category")
    catalog, hrefs = _catalog(theme, html)
    out, _lo = reorder(theme, catalog, "price asc")
    wanted = [h for _p, _i, h in sorted(zip(theme.prices, range(len(hrefs)), hrefs, strict=True))]
    assert _item_links(theme, out.decode()) == wanted
    # everything outside the list is byte for byte the page
    before, after = html.split(">", 1)[0], html[-200:]
    assert out.decode().startswith(before) and out.decode().endswith(after)
    # and the same list without the catalog keeps the shop's order
    same, _ = reorder(theme, None, "price asc")
    assert same.decode() == html


def test_a_woocommerce_list_is_learned_from_its_product_pages() -> None:
    """The whole way for Storefront: the one product page there is teaches its
    product; the list finds it by its link."""
    catalog = LearnedCatalog()
    facts = read_page(page("woocommerce-storefront", "product")).product
    assert facts is not None
    catalog.learn(facts)
    catalog.learn(
        replace(facts, product_id="woo-belt", price=1.0, url="https://shop.example/product/belt/")
    )
    theme = THEME_CASES[0]
    out, lo = reorder(theme, catalog, "price asc")
    known = [f.product_id for _s, f in lo.facts.values() if f is not None]
    assert known == ["woo-hoodie-with-logo", "woo-belt"]
    assert _item_links(theme, out.decode())[:2] == [
        "https://shop.example/product/belt/",
        "https://shop.example/product/hoodie-with-logo/",
    ]

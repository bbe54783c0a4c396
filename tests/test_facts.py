"""edge/personalize/facts.py on HTML strings: JSON-LD in its shapes, microdata,
OpenGraph, the merchant's selectors, and pages that say nothing or say it badly."""

from __future__ import annotations

import json

import pytest

from edge.personalize.catalog import ItemFacts
from edge.personalize.facts import ProductSelectors, Selector, read_page
from edge.rewrite.selectors import SelectorError


def ld(*blocks: object) -> str:
    return "".join(
        f'<script type="application/ld+json">{b if isinstance(b, str) else json.dumps(b)}</script>'
        for b in blocks
    )


def test_a_product_with_one_offer() -> None:
    html = ld(
        {
            "@context": "https://schema.org",
            "@type": "Product",
            "name": "Borsa  Tote",
            "sku": "BT-1",
            "brand": {"@type": "Brand", "name": "Valdarno"},
            "category": "Donna > Borse",
            "offers": {
                "@type": "Offer",
                "price": "1.249,90",
                "priceCurrency": "eur",
                "availability": "https://schema.org/OutOfStock",
                "url": "https://s/p/borsa-tote",
            },
        }
    )
    assert read_page(html).product == ItemFacts(
        "BT-1",
        "Borse",
        "Valdarno",
        1249.9,
        "Borsa Tote",
        "https://s/p/borsa-tote",
        "EUR",
        "out of stock",
    )


def test_aggregate_offers_give_the_lowest_price_and_graphs_are_searched() -> None:
    html = ld(
        {
            "@graph": [
                {"@type": "WebPage", "name": "x"},
                {
                    "@type": ["Product", "Thing"],
                    "productID": "p9",
                    "name": "Anello",
                    "offers": {"@type": "AggregateOffer", "lowPrice": 10, "highPrice": 30},
                },
            ]
        }
    )
    facts = read_page(html).product
    assert facts is not None and (facts.product_id, facts.price) == ("p9", 10.0)


def test_a_price_in_a_price_specification() -> None:
    offer = {"@type": "Offer", "priceSpecification": [{"price": "9.5", "priceCurrency": "GBP"}]}
    facts = read_page(ld({"@type": "Product", "sku": "a", "offers": [offer]})).product
    assert facts is not None and (facts.price, facts.currency) == (9.5, "GBP")


def test_broken_json_ld_is_skipped_and_the_rest_read() -> None:
    html = (
        ld('{"@type": "Product", "sku": "bad",}', "", "{{ product | json }}")
        + ld([{"@type": "Product", "sku": "good", "offers": {"price": 3}}])
        + ld('{"@type": "Product", "offers": {"price": true}, "sku": ["x"], "name": {"a": 1}}')
    )
    facts = read_page(html).product
    assert facts is not None and facts.product_id == "good" and facts.price == 3.0


def test_item_list_in_position_order_and_breadcrumbs() -> None:
    html = ld(
        {
            "@type": "ItemList",
            "itemListElement": [
                {"@type": "ListItem", "position": 2, "url": "/p/b"},
                {
                    "@type": "ListItem",
                    "position": 1,
                    "item": {
                        "@type": "Product",
                        "sku": "a",
                        "url": "/p/a",
                        "offers": {"price": "5"},
                    },
                },
                {"@type": "ListItem", "position": 3},
            ],
        },
        {
            "@type": "BreadcrumbList",
            "itemListElement": [
                {"@type": "ListItem", "position": 2, "name": "Scarpe"},
                {"@type": "ListItem", "position": 1, "item": {"@id": "/", "name": "Home"}},
            ],
        },
    )
    found = read_page(html + "<h1>Ignored</h1>")
    assert [(i.product_id, i.url, i.price) for i in found.items] == [
        ("a", "/p/a", 5.0),
        ("", "/p/b", None),
    ]
    assert found.breadcrumb == ("Home", "Scarpe")
    assert found.category == "Scarpe"
    assert found.product is None


MICRODATA = """
<div itemscope itemtype="https://schema.org/Product">
  <h1 itemprop="name">Sciarpa <b>lana</b></h1>
  <span itemprop="sku">SC-2</span>
  <a itemprop="url" href="/p/sciarpa">link</a>
  <div itemprop="brand" itemscope itemtype="https://schema.org/Brand"><span itemprop="name">Gres</span></div>
  <div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
    <span itemprop="price" content="39.00">€ 39</span>
    <meta itemprop="priceCurrency" content="EUR">
    <link itemprop="availability" href="https://schema.org/InStock">
  </div>
  <div itemscope itemtype="https://schema.org/Review"><span itemprop="name">Not the name</span></div>
</div>
<ol itemscope itemtype="https://schema.org/BreadcrumbList">
  <li itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><a itemprop="item" href="/"><span itemprop="name">Home</span></a></li>
  <li itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><span itemprop="name">Accessori</span></li>
</ol>
"""


def test_microdata() -> None:
    found = read_page(MICRODATA)
    assert found.product == ItemFacts(
        "SC-2", "Accessori", "Gres", 39.0, "Sciarpa lana", "/p/sciarpa", "EUR", "in stock"
    )
    assert found.sources == ("microdata",)


def test_opengraph_fills_gaps_and_alone_is_enough() -> None:
    og = (
        '<meta property="og:title" content="Tazza &amp; piattino">'
        '<meta property="og:url" content="https://s/p/tazza">'
        '<meta property="product:price:amount" content="12,50">'
        '<meta content="EUR" property="product:price:currency">'
        '<meta property="product:brand" content="Gres">'
    )
    alone = read_page(og).product
    assert alone == ItemFacts(
        "tazza", "", "Gres", 12.5, "Tazza & piattino", "https://s/p/tazza", "EUR"
    )
    with_ld = read_page(og + ld({"@type": "Product", "sku": "T1", "name": "Tazza"})).product
    assert with_ld is not None
    assert (with_ld.product_id, with_ld.name, with_ld.price) == ("T1", "Tazza", 12.5)


def test_og_without_a_price_is_not_a_product() -> None:
    assert read_page('<meta property="og:title" content="Chi siamo">').product is None


def test_selectors_fill_and_win() -> None:
    html = (
        ld({"@type": "Product", "sku": "SKU-1", "name": "Json name"})
        + '<main><h1 class="t">Page <i>name</i></h1><p class="price"><span class="amount">€ 7,00</span></p>'
        + '<form><button name="add-to-cart" value="42">Add</button></form></main>'
    )
    selectors = ProductSelectors(
        {
            "id": Selector.parse("button[name=add-to-cart]@value"),
            "price": Selector.parse("p.price .amount"),
            "brand": Selector.parse("main > .nothing"),
        }
    )
    facts = read_page(html, selectors).product
    assert facts == ItemFacts("42", "", "", 7.0, "Json name")
    without = read_page(html).product
    assert without is not None and without.product_id == "SKU-1"


def test_selector_syntax() -> None:
    assert Selector.parse("[data-product-id]@data-product-id").attribute == "data-product-id"
    assert Selector.parse('a[href$="@x"]').attribute == ""
    with pytest.raises(SelectorError):
        Selector.parse("h1:first-child")
    with pytest.raises(ValueError):
        Selector.parse("@value")


def test_a_page_with_nothing_says_nothing() -> None:
    found = read_page("<html><body><p>Hello</p></body></html>")
    assert found.product is None and found.items == () and found.category == ""
    assert read_page("").product is None
    assert read_page("<div itemscope itemtype=x><p itemprop=name>").product is None


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ('[products]\nprise = "p"\n', "<rules>:2:1", "did you mean `price`?"),
        ('[products]\nname = "h1:first"\n', "<rules>:2:11", "pseudo-classes"),
        ("[products]\nname = 3\n", "<rules>:2:1", "needs a CSS selector"),
        ('[products]\nid = "@value"\n', "<rules>:2:1", "a selector is needed"),
    ],
)
def test_products_section_errors_name_file_line_and_column(
    text: str, where: str, says: str
) -> None:
    from edge.rules.ruleset import compile_text

    with pytest.raises(ValueError) as raised:
        compile_text(text)
    assert where in str(raised.value) and says in str(raised.value)


def test_products_section_twice_across_files(tmp_path) -> None:
    from edge.rules.ruleset import load_rules

    (tmp_path / "a.toml").write_text('[products]\nprice = ".price"\n')
    (tmp_path / "b.toml").write_text('\n[products]\nprice = ".amount"\n')
    ruleset, errors = load_rules(tmp_path)
    assert ruleset is None
    assert (
        "b.toml:3:1" in str(errors[0])
        and "set twice" in str(errors[0])
        and "a.toml:2" in str(errors[0])
    )

from __future__ import annotations

from pathlib import Path

import pytest

from edge.personalize.catalog import Catalog, CatalogError, ItemFacts, ItemReader, parse_price


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_feed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "feed.csv",
        "id,category,brand,price,name,url,stock\n"
        "p1,scarpe-donna,Lunaria,89.90,Décolleté,/p/decollete,3\n"
        '\n"p2",borse,"Valdarno, Firenze","€ 1.249,90",,,\n'
        "p3,casa,,,,,\n",
    )
    catalog = Catalog.load(path)
    assert len(catalog) == 3
    assert catalog.get("p1") == ItemFacts(
        "p1", "scarpe-donna", "Lunaria", 89.9, "Décolleté", "/p/decollete"
    )
    assert catalog.get("p2").brand == "Valdarno, Firenze"
    assert catalog.get("p2").price == 1249.9
    assert catalog.get("p3").price is None
    assert catalog.get("nope") is None and catalog.get(None) is None
    assert catalog.categories == {"scarpe-donna", "borse", "casa"}


def test_csv_semicolons(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.csv", "id;category;brand;price\np1;a;b;12,50\np2;a;c;3\n")
    assert Catalog.load(path).get("p1").price == 12.5


def test_csv_errors_name_file_line_and_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "feed.csv",
        "id,category,brand,price\np1,a,b,10\n,a,b,10\np3,a,b,dieci\np1,a,b,12\n",
    )
    with pytest.raises(CatalogError) as info:
        Catalog.load(path)
    problems = info.value.problems
    assert problems == [
        f"{path}:3: missing id (every product needs an 'id')",
        f"{path}:4: price 'dieci' is not a number",
        f"{path}:5: product 'p1' already listed on line 2; keep one row per product",
    ]
    assert str(path) in str(info.value)


def test_csv_multiline_cell_keeps_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path, "feed.csv", 'id,category,brand,price,name\np1,a,b,1,"two\nlines"\np2,a,b,x,n\n'
    )
    with pytest.raises(CatalogError, match=r"feed.csv:4: price 'x'"):
        Catalog.load(path)


def test_csv_without_id_column(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.csv", "sku,category\n1,a\n")
    with pytest.raises(CatalogError, match=r"feed.csv:1: no 'id' column"):
        Catalog.load(path)


def test_json_array_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "feed.json",
        '[\n  {"id": "p1", "category": "a", "price": 10},\n'
        '  {"id": "p2", "category": "b", "price": -1},\n'
        '  {"id": "p3", "price": true}\n]\n',
    )
    with pytest.raises(CatalogError) as info:
        Catalog.load(path)
    assert info.value.problems == [
        f"{path}:3: price -1 is negative",
        f"{path}:4: price must be a number, got true/false",
    ]


def test_json_products_object_and_syntax_error(tmp_path: Path) -> None:
    ok = write(tmp_path, "ok.json", '{"products": [{"id": "p1", "brand": "X", "price": "9.5"}]}')
    assert Catalog.load(ok).get("p1") == ItemFacts("p1", "", "X", 9.5)
    bad = write(tmp_path, "bad.json", '[\n{"id": "p1"},\n{"id": "p2",,}\n]')
    with pytest.raises(CatalogError, match=r"bad.json:3: invalid JSON"):
        Catalog.load(bad)


def test_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.jsonl", '{"id": "p1", "price": 5}\n\n{"id": 7}\n[1]\n')
    with pytest.raises(CatalogError) as info:
        Catalog.load(path)
    assert info.value.problems == [f"{path}:4: expected an object with id, category, brand, price"]
    good = write(tmp_path, "good.ndjson", '{"id": "p1", "price": 5}\n{"id": 7}\n')
    assert Catalog.load(good).get("7") == ItemFacts("7")


def test_unreadable_and_unknown_feeds(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        Catalog.load(tmp_path / "missing.csv")
    with pytest.raises(CatalogError, match="unknown feed type"):
        Catalog.load(write(tmp_path, "feed.xml", "<x/>"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"id,name\np1,caf\xe9\n")
    with pytest.raises(CatalogError, match=r"latin.csv:2: not UTF-8"):
        Catalog.load(latin)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("89.90", 89.9),
        ("89,90", 89.9),
        ("€ 1.249,90", 1249.9),
        ("1,249.90 EUR", 1249.9),
        ("1.249", 1249.0),
        ("12", 12.0),
        ("  7,5 ", 7.5),
    ],
)
def test_parse_price(text: str, value: float) -> None:
    assert parse_price(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-5", "1 2", "€"])
def test_parse_price_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_price(text)


def test_item_facts_from_demo_markup() -> None:
    attrs = {
        "class": "product",
        "data-product-id": "p7",
        "data-category": "scarpe-uomo",
        "data-brand": "Ferri",
        "data-price": "129.00",
    }
    assert ItemReader().facts(attrs) == ItemFacts("p7", "scarpe-uomo", "Ferri", 129.0)


def test_item_attributes_win_over_feed_and_feed_fills_gaps() -> None:
    catalog = Catalog({"p7": ItemFacts("p7", "old-cat", "Feed Brand", 99.0, "Name", "/p/x")})
    reader = ItemReader(catalog=catalog)
    facts = reader.facts({"data-product-id": "p7", "data-category": "new-cat"})
    assert facts == ItemFacts("p7", "new-cat", "Feed Brand", 99.0, "Name", "/p/x")
    # An unreadable price on the page falls back to the feed's.
    assert reader.facts({"data-product-id": "p7", "data-price": "call us"}).price == 99.0


def test_item_id_from_link_pattern_and_custom_attributes() -> None:
    catalog = Catalog({"scarpa-blu": ItemFacts("scarpa-blu", "scarpe", "B", 10.0)})
    reader = ItemReader(
        id_attr="data-sku",
        price_attr="data-cost",
        link_pattern=r"/p/(?P<id>[^/?#]+)",
        catalog=catalog,
    )
    assert reader.facts({}, "/p/scarpa-blu?ref=home") == catalog.get("scarpa-blu")
    assert reader.facts({"data-sku": "x1", "data-cost": "5"}, "/p/other") == ItemFacts(
        "x1", price=5.0
    )
    assert reader.facts({}, "/about") is None
    assert reader.facts({}) is None
    assert ItemReader(link_pattern=r"/prod/(\d+)").product_id({}, "/prod/42/") == "42"
    with pytest.raises(ValueError, match="needs a group"):
        ItemReader(link_pattern=r"/p/\w+")

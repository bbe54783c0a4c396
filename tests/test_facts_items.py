"""List items known by their first link (``item_link``, or a learned product page's
path), reordered by every strategy, on the rewriter's fast paths and its exact path,
whole and byte by byte."""

from __future__ import annotations

import re

import pytest

from edge.personalize.catalog import Catalog, ItemFacts, ItemReader, LearnedCatalog
from edge.personalize.ordering import Interest, ListOrder
from edge.rewrite import Edit
from edge.rewrite.items import first_link
from edge.rewrite.rewriter import Plan

FEED = Catalog(
    {
        "shoe-1": ItemFacts("shoe-1", "Shoes", "Ferri", 120.0),
        "bag-2": ItemFacts("bag-2", "Bags", "Valdarno", 150.0),
        "shoe-3": ItemFacts("shoe-3", "Shoes", "Lunaria", 60.0),
        "mug-4": ItemFacts("mug-4", "Kitchen", "Gres", 30.0),
    }
)
SLUGS = ["shoe-1", "bag-2", "shoe-3", "mug-4"]


def simple_list() -> bytes:
    """Items with no id attribute: what Storefront and Dawn print (the fast paths)."""
    items = "".join(
        f'<li class="product"><a href="/product/{s}/?ref=list" class="link">'
        f'<img src="/i/{s}.jpg" alt=""><h2>{s}</h2></a><span class="price">x</span></li>\n'
        for s in SLUGS
    )
    return f'<html><body><ul class="products">\n{items}</ul><a href="/x">after</a></body></html>'.encode()


def awkward_list() -> bytes:
    """The same items in markup the fast paths refuse (a ">" in a quoted value, an
    implied end tag): the exact path keys them once they end."""
    items = "".join(
        f'<li class="product"><div title="a > b"><p>{s}<a href="/product/{s}/">see</a></div>'
        f"<p>more</li>"
        for s in SLUGS
    )
    return f'<ul class="products">{items}</ul>'.encode()


def texts(out: bytes) -> list[str]:
    return re.findall(r'href="/product/([^/]+)/', out.decode())


def run(html: bytes, lo: ListOrder, step: int = 0) -> bytes:
    edit = Edit("ul.products", "reorder", key=lo.key, order=lo.order, key_link=True)
    rewriter = Plan([edit]).rewriter()
    if not step:
        return rewriter.write(html) + rewriter.end()
    out = b"".join(rewriter.write(html[i : i + step]) for i in range(0, len(html), step))
    return out + rewriter.end()


CASES = [
    ("price asc", Interest(), ["mug-4", "shoe-3", "shoe-1", "bag-2"]),
    ("price desc", Interest(), ["bag-2", "shoe-1", "shoe-3", "mug-4"]),
    ("affinity", Interest(visit_categories={"Kitchen": 2, "Bags": 1}), ["mug-4", "bag-2"]),
    ("bought last", Interest(bought=frozenset({"shoe-1", "bag-2"})), ["shoe-3", "mug-4"]),
]


@pytest.mark.parametrize("make", [simple_list, awkward_list])
@pytest.mark.parametrize("step", [0, 1, 7])
@pytest.mark.parametrize(("sort", "interest", "first"), CASES)
def test_items_known_by_link_pattern_are_reordered(make, step, sort, interest, first) -> None:
    reader = ItemReader(link_pattern=r"/product/([^/?#]+)", catalog=FEED)
    out = run(make(), ListOrder(reader, sort, interest), step)
    got = texts(out)
    assert sorted(got) == sorted(SLUGS)
    assert got[: len(first)] == first
    if step:
        assert out == run(make(), ListOrder(reader, sort, interest))


@pytest.mark.parametrize("make", [simple_list, awkward_list])
def test_pin_by_link_ids(make) -> None:
    reader = ItemReader(link_pattern=r"/product/(?P<id>[^/?#]+)")
    lo = ListOrder(reader, [_pin("mug-4", "shoe-3")])
    assert texts(run(make(), lo)) == ["mug-4", "shoe-3", "shoe-1", "bag-2"]


def _pin(*ids: str):
    from edge.personalize.ordering import Sort

    return Sort.parse("pin", pinned=ids)


def test_without_key_link_the_items_keep_their_order() -> None:
    reader = ItemReader(link_pattern=r"/product/([^/?#]+)", catalog=FEED)
    lo = ListOrder(reader, "price asc")
    edit = Edit("ul.products", "reorder", key=lo.key, order=lo.order)
    rewriter = Plan([edit]).rewriter()
    out = rewriter.write(simple_list()) + rewriter.end()
    assert texts(out) == SLUGS  # the old behaviour: no link, no id, no order


def test_items_found_by_a_learned_product_pages_path() -> None:
    """No pattern, no id: the link's path is a product page the shop taught the
    catalog; its id (not the slug) is what pins and orders use."""
    learned = LearnedCatalog()
    for n, slug in enumerate(SLUGS):
        learned.learn(
            ItemFacts(f"sku{n}", "", "", float(10 * (4 - n)), url=f"https://s/product/{slug}/")
        )
    reader = ItemReader(catalog=learned)
    assert texts(run(simple_list(), ListOrder(reader, "price asc"))) == list(reversed(SLUGS))
    assert texts(run(simple_list(), ListOrder(reader, [_pin("sku2")])))[0] == "shoe-3"
    # a price learned later changes the order (the reader's memory follows the catalog)
    learned.learn(ItemFacts("sku0", price=1.0, url="https://s/product/shoe-1/"))
    assert texts(run(simple_list(), ListOrder(reader, "price asc")))[0] == "shoe-1"


def test_first_link() -> None:
    assert first_link(b'<li><span>x</span><a class=a href="/p/1?x=1&amp;y=2">') == "/p/1?x=1&y=2"
    assert first_link(b"<li><abbr>x</abbr><a name=top><a href='/q'>") == "/q"
    assert first_link(b"<li>no link</li>") == ""


def test_a_list_keyed_by_link_is_replayed_in_each_visitors_order() -> None:
    """The page's second response replays the first's template (a hit), and each
    visitor still gets their own order, keys asked with the links kept."""
    from edge.rewriting import Rewriting, SlotEdit

    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    reader = ItemReader(link_pattern=r"/product/([^/?#]+)", catalog=FEED)
    html = simple_list()
    outs = []
    for sort in ("price asc", "price desc", "price asc"):
        lo = ListOrder(reader, sort)
        edit = Edit("ul.products", "reorder", key=lo.key, order=lo.order, key_link=True)
        body = rewriting.start([SlotEdit("p", "s", edit, order=lo)], b"text/html", b"", b"/c/x")
        outs.append(body.feed(html[:100], True) + body.feed(html[100:], False))
    replays = rewriting._plans.replays
    assert replays.hits >= 1
    assert texts(outs[0]) == ["mug-4", "shoe-3", "shoe-1", "bag-2"]
    assert texts(outs[1]) == ["bag-2", "shoe-1", "shoe-3", "mug-4"]
    assert outs[2] == outs[0]

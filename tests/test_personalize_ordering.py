from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.personalize.catalog import ItemFacts, ItemReader
from edge.personalize.ordering import Interest, ListOrder, Sort, order, search_match
from edge.profiles.events import (
    OrderCompleted,
    Product,
    ProductsSearched,
    ProductViewed,
    Source,
    apply,
    touch,
)
from edge.profiles.model import DAY, Profile, new_profile
from edge.rewrite import Edit, rewrite
from tests._hypothesis import examples

NOW = 1_750_000_000

ITEMS = [
    ItemFacts("u1", "scarpe-uomo", "Ferri", 120.0),
    ItemFacts("d1", "scarpe-donna", "Lunaria", 95.0),
    ItemFacts("b1", "borse-accessori", "Valdarno", 150.0),
    ItemFacts("u2", "scarpe-uomo", "Ferri", 80.0),
    ItemFacts("d2", "scarpe-donna", "Marta Ricci", 60.0),
    ItemFacts("c1", "casa-cucina", "Gres", 30.0),
]


def ids(items: list[ItemFacts | None], perm: list[int]) -> list[str | None]:
    return [items[i].product_id if items[i] else None for i in perm]


def test_price_orders_are_stable_and_put_unknown_prices_last() -> None:
    items = [*ITEMS, ItemFacts("x", "casa-cucina"), None, ItemFacts("y", price=60.0)]
    assert ids(items, order(items, "price asc")) == [
        "c1",
        "d2",
        "y",
        "u2",
        "d1",
        "u1",
        "b1",
        "x",
        None,
    ]
    assert ids(items, order(items, "price desc")) == [
        "b1",
        "u1",
        "d1",
        "u2",
        "d2",
        "y",
        "c1",
        "x",
        None,
    ]


def test_pin_puts_given_ids_first_in_given_order() -> None:
    perm = order(ITEMS, Sort.parse("pin", ["c1", "missing", "d1"]))
    assert ids(ITEMS, perm) == ["c1", "d1", "u1", "b1", "u2", "d2"]
    items = [None, *ITEMS]
    assert ids(items, order(items, Sort("pin", ("b1",)))) == [
        "b1",
        None,
        "u1",
        "d1",
        "u2",
        "d2",
        "c1",
    ]


def test_bought_last_keeps_the_rest_in_place() -> None:
    interest = Interest(bought=frozenset({"u1", "d2"}))
    assert ids(ITEMS, order(ITEMS, "bought last", interest)) == ["d1", "b1", "u2", "c1", "u1", "d2"]


def test_sorts_combine_first_decides() -> None:
    interest = Interest(bought=frozenset({"c1"}))
    perm = order(ITEMS, ["bought last", "price asc"], interest)
    assert ids(ITEMS, perm) == ["d2", "u2", "d1", "u1", "b1", "c1"]


def test_affinity_from_history() -> None:
    interest = Interest(categories={"scarpe-uomo": 10, "borse-accessori": 2}, brands={"Gres": 5})
    assert ids(ITEMS, order(ITEMS, "affinity", interest)) == ["u1", "u2", "c1", "b1", "d1", "d2"]


def test_affinity_without_interest_keeps_page_order() -> None:
    assert order(ITEMS, "affinity") == list(range(len(ITEMS)))
    items = [None, *ITEMS, ItemFacts("z", price=3.0)]
    # Items with no category or brand go after the others, in their own order.
    assert ids(items, order(items, "affinity")) == ["u1", "d1", "b1", "u2", "d2", "c1", None, "z"]


def test_searched_donna_now_beats_a_history_of_mens_shoes() -> None:
    p = new_profile("v1", NOW - 400 * DAY)
    for k in range(6):  # years of men's shoes
        ts = NOW - (300 - k * 40) * DAY
        apply(
            p,
            OrderCompleted(
                order_id=f"o{k}",
                total=120,
                ts=ts,
                products=[
                    Product(product_id=f"u{k}", category="scarpe-uomo", brand="Ferri", price=120)
                ],
            ),
            ts,
            Source.SHOP,
        )
        apply(
            p,
            ProductViewed(product_id="u1", category="scarpe-uomo", brand="Ferri"),
            ts,
            Source.OBSERVED,
        )
    before = Interest.of(p, NOW)
    assert ids(ITEMS, order(ITEMS, "affinity", before))[:2] == ["u1", "u2"]

    touch(p, NOW)  # a new visit today
    apply(p, ProductsSearched(query="Donna"), NOW + 5, Source.BROWSER)
    now = Interest.of(p, NOW + 10)
    assert now.visit_searches == ("donna",)
    assert ids(ITEMS, order(ITEMS, "affinity", now)) == ["d1", "d2", "u1", "u2", "b1", "c1"]
    assert "u0" in now.bought

    # Next visit: the search is history now, and history says men's shoes.
    later = Interest.of(p, NOW + 3 * DAY)
    assert later.visit_searches == () and later.searches == ("donna",)
    assert ids(ITEMS, order(ITEMS, "affinity", later))[:2] == ["u1", "u2"]


def test_visit_views_weigh_most() -> None:
    interest = Interest(categories={"scarpe-uomo": 50}, visit_brands={"Valdarno": 1})
    assert ids(ITEMS, order(ITEMS, "affinity", interest))[:3] == ["b1", "u1", "u2"]


def test_search_matches_brands_and_word_forms() -> None:
    assert search_match(["scarpa donna"], "scarpe-donna") == 1.0
    assert search_match(["scarpe"], "scarpe-uomo") == 1.0
    assert search_match(["scarpe donna"], "scarpe-uomo") == 0.5
    assert search_match(["borsa"], "borse-accessori") == 1.0
    assert search_match(["marta ricci"], "Marta Ricci") == 1.0
    assert search_match(["décolleté"], "decollete") == 1.0
    assert search_match(["a"], "scarpe-donna") == 0.0
    interest = Interest(visit_searches=("marta ricci sandali",))
    assert ids(ITEMS, order(ITEMS, "affinity", interest))[0] == "d2"


def test_sort_parse() -> None:
    assert Sort.parse("Price  DESC") == Sort("price desc")
    assert Sort.parse("price") == Sort("price asc")
    with pytest.raises(ValueError, match="expected one of: affinity, price asc"):
        Sort.parse("popularity")
    with pytest.raises(ValueError, match="needs the product ids"):
        Sort.parse("pin")


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.builds(
                ItemFacts,
                st.sampled_from(["a", "b", "c", "d", ""]),
                st.sampled_from(["x", "y", ""]),
                st.sampled_from(["k", ""]),
                st.one_of(st.none(), st.sampled_from([1.0, 2.0, 3.0])),
            ),
        ),
        max_size=30,
    ),
    st.lists(
        st.sampled_from(["affinity", "price asc", "price desc", "bought last"]),
        min_size=1,
        max_size=3,
    ),
)
def test_always_a_stable_permutation(items: list[ItemFacts | None], sorts: list[str]) -> None:
    interest = Interest(categories={"x": 2, "y": 1}, bought=frozenset({"a"}))
    perm = order(items, sorts, interest)
    assert sorted(perm) == list(range(len(items)))
    # Stable: among items with identical facts, page order is kept.
    for a, b in itertools.pairwise(perm):
        if items[a] == items[b]:
            assert a < b


def test_list_order_drives_the_rewriters_reorder() -> None:
    html = (
        b'<ol class="products">'
        b'<li data-product-id="u1" data-category="scarpe-uomo" data-price="120">U1</li>'
        b'<li data-product-id="d1" data-category="scarpe-donna" data-price="95">D1</li>'
        b"<li>no facts</li>"
        b'<li data-product-id="d2" data-category="scarpe-donna" data-price="60">D2</li>'
        b"</ol>"
    )
    lo = ListOrder(ItemReader(), "affinity", Interest(visit_searches=("donna",)))
    out = rewrite(html, [Edit("ol.products", "reorder", key=lo.key, order=lo.order)])
    texts = [part.split(b">")[1].split(b"<")[0] for part in out.split(b"<li")[1:]]
    assert texts == [b"D1", b"D2", b"U1", b"no facts"]

    lo = ListOrder(ItemReader(), "price asc")
    out = rewrite(html, [Edit("ol.products", "reorder", key=lo.key, order=lo.order)])
    texts = [part.split(b">")[1].split(b"<")[0] for part in out.split(b"<li")[1:]]
    assert texts == [b"D2", b"D1", b"U1", b"no facts"]


class _BrokenCatalog:
    """A catalog whose lookups fail, as a bug or a corrupted learned entry would."""

    version = 0

    def get(self, product_id: str | None) -> ItemFacts | None:
        raise RuntimeError("boom")

    def lookup(self, ref: str) -> ItemFacts | None:
        raise RuntimeError("boom")


def test_a_failing_list_order_keeps_the_shops_order_and_the_whole_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    html = (
        b'<main><ol class="products">'
        b'<li data-product-id="u1" data-price="120">U1</li>'
        b'<li data-product-id="d1" data-price="95">D1</li>'
        b"</ol><footer>end</footer></main>"
    )
    lo = ListOrder(ItemReader(catalog=_BrokenCatalog()), "price asc")  # type: ignore[arg-type]
    assert rewrite(html, [Edit("ol.products", "reorder", key=lo.key, order=lo.order)]) == html
    assert "cannot read an item's facts" in caplog.text

    def broken_sort(keys: list[str | None]) -> list[str]:
        raise RuntimeError("boom")

    lo = ListOrder(ItemReader(), "price asc")
    lo._order = broken_sort  # type: ignore[method-assign]
    assert rewrite(html, [Edit("ol.products", "reorder", key=lo.key, order=lo.order)]) == html
    assert "the list keeps the shop's order" in caplog.text


@settings(max_examples=examples(200), deadline=None)
@given(
    views=st.lists(
        st.tuples(
            st.integers(NOW - 4 * 3600, NOW + 60),
            st.sampled_from(["", "shoes", "bags"]),
            st.sampled_from(["", "aurora", "lunaria"]),
        ),
        max_size=30,
    ),
    session_start=st.integers(0, NOW),
    last_seen=st.integers(NOW - 4 * 3600, NOW),
)
def test_this_visits_views_are_the_tail_the_profile_keeps(
    views: list[tuple[int, str, str]], session_start: int, last_seen: int
) -> None:
    """(The views since the visit began are found by bisection in the profile's
    views, oldest first as it keeps them: the counts and their order are those of a
    filter over all of them.)"""
    from edge.profiles.model import SESSION_GAP

    p = Profile(visitor_id="v")
    p.recent_views = sorted(views, key=lambda v: v[0])
    p.session_start, p.last_seen = session_start, last_seen
    start = session_start if session_start and NOW - last_seen <= SESSION_GAP else NOW + 1
    categories: dict[str, float] = {}
    brands: dict[str, float] = {}
    for ts, category, brand in p.recent_views:
        if ts >= start:
            if category:
                categories[category] = categories.get(category, 0) + 1
            if brand:
                brands[brand] = brands.get(brand, 0) + 1
    interest = Interest.of(p, NOW)
    assert list(interest.visit_categories.items()) == list(categories.items())
    assert list(interest.visit_brands.items()) == list(brands.items())

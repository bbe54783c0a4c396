"""What the replayed page keeps across responses (issue 19): reordered lists by the
page version and what decides their order, codings and charsets by header. Each
kept answer equals the one computed afresh, and a change of any part of its key
(page bytes, order, contents, catalogue, charset, coding) is a miss."""

from __future__ import annotations

import gzip

from hypothesis import given, settings
from hypothesis import strategies as st

from edge import codec
from edge.personalize.catalog import Catalog, ItemFacts, ItemReader, LearnedCatalog
from edge.personalize.ordering import Interest, ListOrder
from edge.rewrite import Edit
from edge.rewriting import Rewriting, SlotEdit
from tests._hypothesis import examples

CATEGORIES = ["Shoes", "Bags", "Kitchen", "Hats"]
FEED = Catalog(
    {
        f"p{i}": ItemFacts(f"p{i}", CATEGORIES[i % 4], f"Brand{i % 3}", float(10 + (i * 37) % 90))
        for i in range(12)
    }
)


def page(n_items: int = 12, tag: str = "", hero: str = "Welcome") -> bytes:
    items = "".join(
        f'<li class="product" data-product-id="p{i}"><a href="/p/{i}">Product {i}</a></li>\n'
        for i in range(n_items)
    )
    return (
        "<!doctype html><html><head><title>Shop</title></head><body>"
        f'<header>Shop {tag}</header><div id="hero"><p>{hero}</p></div>'
        f'<ul class="products">\n{items}</ul><footer>(c)</footer></body></html>'
    ).encode()


class Counting(ListOrder):
    """The sidecar's ListOrder, counting the calls it is asked."""

    asked = 0

    def key(self, attrs: dict[str, str]) -> str:
        Counting.asked += 1
        return super().key(attrs)


def interest(categories: dict[str, float]) -> Interest:
    return Interest(categories=categories)


def edits(
    reader: ItemReader, sort: str, weights: dict[str, float], hero: str, cls: type = Counting
) -> list[SlotEdit]:
    """The sidecar's edits for a category page: a snippet and the list by interest
    (``share`` as ``edge.activities`` makes it: the sorts' share, then the interest's
    fingerprint)."""
    the_interest = interest(weights)
    fingerprint = the_interest.fingerprint()
    lo = cls(reader, sort, the_interest, fingerprint=fingerprint)
    order = Edit("ul.products", "reorder", key=lo.key, order=lo.order)
    return [
        SlotEdit("hero", "hero", Edit("#hero", "set_inner_content", hero), share=hero.encode()),
        SlotEdit("list", "list", order, order=lo, share=sort.encode() + b"|" + fingerprint),
    ]


def respond(rewriting: Rewriting, slot_edits: list[SlotEdit], html: bytes, cut: int = 0) -> bytes:
    body = rewriting.start(slot_edits, b"text/html; charset=utf-8", b"", b"/c/x")
    if cut:
        return body.feed(html[:cut], True) + body.feed(html[cut:], False)
    return body.feed(html, False)


def fresh(slot_edits: list[SlotEdit], html: bytes) -> bytes:
    """The same response from a sidecar that replays nothing."""
    return respond(Rewriting(max_bytes=1 << 20, replay_bytes=0), slot_edits, html)


def weights_of(draw: list[int]) -> dict[str, float]:
    return {c: float(w) for c, w in zip(CATEGORIES, draw, strict=False) if w}


def test_a_kept_list_is_sent_without_asking_the_target_and_equals_a_fresh_one() -> None:
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    reader = ItemReader(catalog=FEED)
    html = page()
    weights = {"Bags": 3.0, "Hats": 1.0}
    first = respond(rewriting, edits(reader, "affinity", weights, "<b>a</b>"), html)
    second = respond(rewriting, edits(reader, "affinity", weights, "<b>a</b>"), html)  # kept
    replays = rewriting._plans.replays
    assert replays.hits >= 1 and replays.region_hits == 0
    Counting.asked = 0
    third = respond(rewriting, edits(reader, "affinity", weights, "<b>a</b>"), html)
    assert replays.region_hits == 1 and Counting.asked == 0  # the list as kept
    assert first == second == third == fresh(edits(reader, "affinity", weights, "<b>a</b>"), html)
    # other snippet contents outside the list: the list is still the kept one
    Counting.asked = 0
    other = respond(rewriting, edits(reader, "affinity", weights, "<i>b</i>"), html)
    assert replays.region_hits == 2 and Counting.asked == 0
    assert other == fresh(edits(reader, "affinity", weights, "<i>b</i>"), html)


@settings(max_examples=examples(60), deadline=None)
@given(
    visitors=st.lists(st.lists(st.integers(0, 3), min_size=4, max_size=4), min_size=1, max_size=6),
    sorts=st.lists(st.sampled_from(["affinity", "price asc", "price desc"]), min_size=1),
    cut=st.integers(0, 900),
)
def test_any_visitors_in_any_order_get_what_a_fresh_rewrite_gives(
    visitors: list[list[int]], sorts: list[str], cut: int
) -> None:
    """Kept lists or not, every response is the fresh rewrite's, byte for byte: a
    change of the order's sort or of the visitor's interest is a miss."""
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    reader = ItemReader(catalog=FEED)
    html = page()
    for round_ in range(2):
        for draw in visitors:
            for sort in sorts:
                weights = weights_of(draw)
                out = respond(rewriting, edits(reader, sort, weights, "<p>x</p>"), html, cut)
                assert out == fresh(edits(reader, sort, weights, "<p>x</p>"), html), round_


def test_a_new_page_version_is_a_miss() -> None:
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    reader = ItemReader(catalog=FEED)
    weights = {"Shoes": 2.0}
    for html in (page(tag="v1"), page(tag="v1"), page(tag="v2"), page(n_items=11, tag="v2")):
        for _ in range(3):
            out = respond(rewriting, edits(reader, "affinity", weights, "<p>x</p>"), html)
            assert out == fresh(edits(reader, "affinity", weights, "<p>x</p>"), html)
    replays = rewriting._plans.replays
    assert replays.region_hits >= 3
    # the page changed in the list's items: a new template, its list asked again
    Counting.asked = 0
    html = page(tag="v2").replace(b'data-product-id="p3"', b'data-product-id="p9"')
    for _ in range(2):
        out = respond(rewriting, edits(reader, "affinity", weights, "<p>x</p>"), html)
        assert out == fresh(edits(reader, "affinity", weights, "<p>x</p>"), html)
    assert Counting.asked > 0


def test_a_catalogue_change_is_a_miss() -> None:
    """The facts behind the order change with the catalogue (its version), and with
    another reader or catalogue object."""
    learned = LearnedCatalog()
    for i in range(12):
        learned.learn(ItemFacts(f"p{i}", "Shoes", "B", float(i), url=f"https://s/p/{i}/"))
    reader = ItemReader(catalog=learned)
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    html = page()
    before = [respond(rewriting, edits(reader, "price asc", {}, "x"), html) for _ in range(3)]
    assert before[2] == fresh(edits(reader, "price asc", {}, "x"), html)
    learned.learn(ItemFacts("p11", price=-1.0, url="https://s/p/11/"))
    after = respond(rewriting, edits(reader, "price asc", {}, "x"), html)
    assert after == fresh(edits(reader, "price asc", {}, "x"), html) != before[2]
    other = ItemReader(catalog=Catalog({"p0": ItemFacts("p0", price=1000.0)}))
    out = respond(rewriting, edits(other, "price asc", {}, "x"), html)
    assert out == fresh(edits(other, "price asc", {}, "x"), html)


def test_a_target_that_is_not_a_list_order_is_asked_every_time() -> None:
    class Plain:
        asked = 0

        def __init__(self) -> None:
            self.inner = ListOrder(ItemReader(catalog=FEED), "price desc")

        def key(self, attrs: dict[str, str]) -> str:
            Plain.asked += 1
            return self.inner.key(attrs)

        def order(self, keys: list[str | None]) -> list[str]:
            return self.inner.order(keys)

    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    html = page()
    for _ in range(3):
        target, other = Plain(), Plain()
        edit = Edit("ul.products", "reorder", key=target.key, order=target.order)
        Plain.asked = 0
        out = respond(rewriting, [SlotEdit("l", "l", edit, order=target, share=b"s")], html)
        assert Plain.asked == 12  # every response asks for its 12 items
        edit = Edit("ul.products", "reorder", key=other.key, order=other.order)
        assert out == fresh([SlotEdit("l", "l", edit, order=other)], html)
    assert rewriting._plans.replays.region_hits == 0


def test_a_list_holding_an_edits_content_is_kept_by_that_content() -> None:
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    reader = ItemReader(catalog=FEED)
    html = page()
    weights = {"Kitchen": 1.0}
    for badge in ("<em>1</em>", "<em>1</em>", "<em>2</em>", "<em>1</em>", "<em>22</em>"):
        slot_edits = edits(reader, "affinity", weights, "h")
        slot_edits.append(
            SlotEdit("b", "b", Edit('li[data-product-id="p2"] a', "append", badge), share=b"b")
        )
        out = respond(rewriting, slot_edits, html)
        assert badge.encode() in out
        assert out == fresh(slot_edits, html)


# --- codings and charsets ---------------------------------------------------------


@given(st.sampled_from(["", "gzip", "x-gzip", "br", "identity", "gzip, br", "compress", "GZIP "]))
def test_header_codings_are_codings(header: str) -> None:
    try:
        want: tuple[str, ...] | None = tuple(codec.codings(header or None))
    except codec.UnsupportedCoding:
        want = None
    assert codec.header_codings(header.encode("latin-1")) == want
    assert codec.header_codings(header.encode("latin-1")) == want  # remembered: the same


@settings(max_examples=examples(200), deadline=None)
@given(
    content_type=st.sampled_from(
        [
            "",
            "text/html",
            "text/html; charset=utf-8",
            "text/html; charset=ISO-8859-1",
            'text/html; charset="koi8-r"',
            "text/html; charset=nonsense",
            "text/html;charset=shift_jis",
        ]
    ),
    start=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]),
    meta=st.sampled_from(
        [
            b"",
            b'<meta charset="windows-1251">',
            b"<META CHARSET=latin1>",
            b'<meta http-equiv="content-type" content="text/html; charset=euc-jp">',
            b'<meta charset="utf-16">',
        ]
    ),
    pad=st.integers(0, 1100),
)
def test_page_charset_is_charset_of(content_type: str, start: bytes, meta: bytes, pad: int) -> None:
    first = start + b"<html><head>" + b" " * pad + meta + b"</head>"
    want = codec.charset_of(content_type, first[:1024])
    assert codec.page_charset(content_type.encode("latin-1"), first) == want
    assert codec.page_charset(content_type.encode("latin-1"), first) == want


def test_an_identity_body_over_the_limit_fails_as_the_decoder_said() -> None:
    rewriting = Rewriting(max_bytes=100, replay_bytes=1 << 20)
    reader = ItemReader(catalog=FEED)
    html = page()
    decoder = codec.Decoder([], max_output=800)
    try:
        decoder.feed(html)
    except codec.CodecError as exc:
        want = str(exc)
    body = rewriting.start(edits(reader, "affinity", {}, "x"), b"text/html", b"", b"/c/x")
    try:
        body.feed(html, False)
    except codec.CodecError as exc:
        assert str(exc) == want
    else:
        raise AssertionError("no CodecError")


def test_a_coded_and_an_uncoded_response_rewrite_alike() -> None:
    """The uncoded path (no decoder, no encoder) gives what the coded one decodes to."""
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    reader = ItemReader(catalog=FEED)
    html = page()
    for _ in range(2):
        plain = respond(rewriting, edits(reader, "affinity", {"Bags": 1.0}, "x"), html)
        body = rewriting.start(
            edits(reader, "affinity", {"Bags": 1.0}, "x"), b"text/html", b"gzip", b"/c/x"
        )
        zipped = gzip.compress(html)
        coded = body.feed(zipped[:50], True) + body.feed(zipped[50:], False)
        assert (
            gzip.decompress(coded)
            == plain
            == fresh(edits(reader, "affinity", {"Bags": 1.0}, "x"), html)
        )
    try:
        rewriting.start([], b"text/html", b"compress", b"/c/x")
    except codec.UnsupportedCoding as exc:
        assert "compress" in str(exc)
    else:
        raise AssertionError("no UnsupportedCoding")
    assert not rewriting.applies(b"compress", 10) and rewriting.applies(b"gzip, br", 10)


def test_a_page_that_differs_after_a_kept_list_is_rewritten_from_there() -> None:
    """The kept list went out, then the page stops matching: the real rewriter that
    takes over asks the target afresh and gives the same list, so the response is
    the fresh rewrite's."""
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    reader = ItemReader(catalog=FEED)
    weights = {"Hats": 2.0, "Shoes": 1.0}
    html = page() + b" " * 20_000  # (a checkpoint after the list)
    for _ in range(3):
        respond(rewriting, edits(reader, "affinity", weights, "x"), html)
    hits = rewriting._plans.replays.region_hits
    changed = html[:-100] + b"<p>changed</p>" + html[-86:]
    out = respond(rewriting, edits(reader, "affinity", weights, "x"), changed, cut=len(html) - 200)
    assert rewriting._plans.replays.region_hits == hits + 1
    assert out == fresh(edits(reader, "affinity", weights, "x"), changed)


def test_a_replay_compiles_no_plan_for_new_contents() -> None:
    """Contents particular to each visitor (a name, a form's token): a replayed
    response needs no plan of its own, and is what a fresh rewrite gives."""
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    reader = ItemReader(catalog=FEED)
    html = page()
    respond(rewriting, edits(reader, "affinity", {}, "<p>first</p>"), html)
    plans = rewriting._plans._plans
    compiled = len(plans)
    for name in ("Anna", "Bruno", "Carla", "Dario", "<b>Ève</b>"):
        out = respond(rewriting, edits(reader, "affinity", {}, f"<p>Ciao {name}</p>"), html)
        assert out == fresh(edits(reader, "affinity", {}, f"<p>Ciao {name}</p>"), html)
    assert len(plans) == compiled
    # the page changes: a real rewrite, with its contents' plan
    changed = page(tag="new")
    out = respond(rewriting, edits(reader, "affinity", {}, "<p>Ciao Fede</p>"), changed)
    assert out == fresh(edits(reader, "affinity", {}, "<p>Ciao Fede</p>"), changed)
    assert len(plans) == compiled + 1


def test_an_object_in_a_memo_is_itself_by_identity() -> None:
    """(``_same``: the key part of an object is made once per object, and another
    object, even an equal one, is another key part.)"""
    from edge.rewriting import _same

    one, equal = ItemReader(catalog=FEED), ItemReader(catalog=FEED)
    assert one == equal
    assert _same(one) is _same(one) and _same(one) == id(one) and _same(one).obj is one
    assert _same(equal) != _same(one) and _same(equal).obj is equal

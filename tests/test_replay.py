"""Replaying a kept rewrite (edge.rewrite.replay): byte for byte what a fresh rewrite
gives, for other contents and list orders, whatever the chunking, and when the page
changes midway."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.rewrite import Edit, Plan, Rewriter, rewrite
from edge.rewrite.replay import RECORD_STEP, ReplayCache
from tests._hypothesis import examples


class ByPrice:
    """A reorder target like the sidecar's ListOrder: keys are call numbers."""

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.prices: dict[str, float] = {}

    def key(self, attrs: dict[str, str]) -> str:
        key = str(len(self.prices))
        try:
            self.prices[key] = float(attrs.get("data-price", "0"))
        except ValueError:  # a page changed inside the attribute
            self.prices[key] = -1.0
        return key

    def order(self, keys: list[str | None]) -> list[str]:
        present = [k for k in keys if k is not None]
        return sorted(present, key=lambda k: self.prices[k], reverse=self.descending)


class Late:
    def __init__(self) -> None:
        self.target: ByPrice | None = None

    def key(self, attrs: dict[str, str]) -> str:
        assert self.target is not None
        return self.target.key(attrs)

    def order(self, keys: list[str | None]) -> list[str]:
        assert self.target is not None
        return self.target.order(keys)


def edits(hero: str, banner: str, key: object, order: object) -> list[Edit]:
    return [
        Edit("#hero", "set_inner_content", hero),
        Edit("ul.products", "reorder", key=key, order=order),  # type: ignore[arg-type]
        Edit("header", "append", banner),
    ]


class Sidecar:
    """The proxy's use of the cache: one shared plan per content, a replayer per response."""

    def __init__(self, cache_bytes: int = 32 << 20) -> None:
        self.cache = ReplayCache(cache_bytes)
        self.plans: dict[tuple[str, str], tuple[Plan, Late]] = {}

    def response(self, page: str, hero: str, banner: str, descending: bool):  # type: ignore[no-untyped-def]
        if (hero, banner) not in self.plans:
            late = Late()
            self.plans[hero, banner] = (Plan(edits(hero, banner, late.key, late.order)), late)
        plan, late = self.plans[hero, banner]
        contents = [None if ce.action == "reorder" else ce.content for ce in plan.compiled]

        def bind(bound: dict[int, ByPrice]) -> None:
            late.target = bound[1]

        return self.cache.rewriter(
            (page, "shape"), contents, {1: ByPrice(descending)}, lambda _b: plan.rewriter(), bind
        )


def expected(html: bytes, hero: str, banner: str, descending: bool) -> bytes:
    target = ByPrice(descending)
    return rewrite(html, edits(hero, banner, target.key, target.order))


def streamed(html: bytes, hero: str, banner: str, descending: bool) -> bytes:
    """What a fresh streaming rewriter sends: :func:`expected`, except for a page it
    gives up on midway (a stray end tag it cannot place, say), where what it sent
    before stays sent and the rest goes out as it came."""
    target = ByPrice(descending)
    rw = Plan(edits(hero, banner, target.key, target.order)).rewriter()
    return rw.write(html) + rw.end()


def page(n_items: int = 12, pad: int = 0, tag: str = "") -> bytes:
    items = "".join(
        f'<li data-price="{(i * 37) % 101}"><a href="/p/{i}">Product {i}</a>'
        f'<svg viewBox="0 0 4 4"><rect width="4" height="4"/></svg></li>\n'
        for i in range(n_items)
    )
    return (
        "<!doctype html><html><head><title>Shop</title></head><body>"
        f"<header>Shop {tag}</header><p>{'<i>x</i> ' * (pad // 9)}</p>"
        '<div id="hero"><p>Welcome</p></div>'
        f'<ul class="products">\n{items}</ul>'
        "<footer>(c)</footer></body></html>"
    ).encode()


def feed(rw, html: bytes, sizes: list[int]) -> bytes:  # type: ignore[no-untyped-def]
    out, at, i = [], 0, 0
    while at < len(html):
        size = sizes[i % len(sizes)] if sizes else len(html)
        out.append(rw.write(html[at : at + size]))
        at += size
        i += 1
    out.append(rw.end())
    return b"".join(out)


def test_replaying_can_be_turned_off() -> None:
    side = Sidecar(cache_bytes=0)
    html = page()
    for hero in ("<b>a</b>", "<b>a</b>", "<b>c</b>"):
        rw = side.response("/", hero, "<i>b</i>", False)
        assert feed(rw, html, [4096]) == expected(html, hero, "<i>b</i>", False)
        assert not rw.replayed
    assert side.cache.recorded == 0 and side.cache.hits == 0


def test_second_response_is_replayed_with_its_own_contents_and_order() -> None:
    side = Sidecar()
    html = page(pad=20_000)
    first = side.response("/", "<b>VIP</b>", "<i>free shipping</i>", False)
    assert feed(first, html, []) == expected(html, "<b>VIP</b>", "<i>free shipping</i>", False)
    assert not first.replayed
    assert first.counts == [1, 1, 1]

    second = side.response("/", "<b>Welcome back, Ada</b>", "<i>your cart</i>", True)
    out = feed(second, html, [7000])
    assert second.replayed
    assert out == expected(html, "<b>Welcome back, Ada</b>", "<i>your cart</i>", True)
    assert second.counts == [1, 1, 1] and second.error is None
    assert side.cache.hits == 1


def test_replay_streams_as_the_rewriter_did() -> None:
    side = Sidecar()
    html = page(pad=3 * RECORD_STEP)
    feed(side.response("/", "<b>a</b>", "<i>b</i>", False), html, [])
    replay = side.response("/", "<b>a</b>", "<i>b</i>", False)
    first = replay.write(html[: 2 * RECORD_STEP + 100])
    # The header's edit and the page up to the second step are out before the rest arrives.
    assert first.startswith(b"<!doctype html>") and b"<i>b</i></header>" in first
    assert len(first) >= 2 * RECORD_STEP
    rest = replay.write(html[2 * RECORD_STEP + 100 :]) + replay.end()
    assert replay.replayed
    assert first + rest == expected(html, "<b>a</b>", "<i>b</i>", False)


def test_a_page_that_changes_midway_is_rewritten_from_where_it_differs() -> None:
    side = Sidecar()
    html = page(pad=3 * RECORD_STEP)
    feed(side.response("/", "<b>a</b>", "<i>b</i>", False), html, [])
    changed = html.replace(b'data-price="37"', b'data-price="99"')
    assert changed != html
    replay = side.response("/", "<b>a</b>", "<i>b</i>", True)
    out = feed(replay, changed, [RECORD_STEP])
    assert not replay.replayed
    assert out == expected(changed, "<b>a</b>", "<i>b</i>", True)
    # The changed page is now the template.
    again = side.response("/", "<b>c</b>", "<i>d</i>", False)
    assert feed(again, changed, [999]) == expected(changed, "<b>c</b>", "<i>d</i>", False)
    assert again.replayed


def test_a_page_different_on_every_response_is_left_alone_for_a_while() -> None:
    side = Sidecar()
    for i in range(6):
        html = page(tag=f"token {i}")
        rw = side.response("/", "<b>a</b>", "<i>b</i>", False)
        assert feed(rw, html, [4096]) == expected(html, "<b>a</b>", "<i>b</i>", False)
        assert not rw.replayed
    assert side.cache.recorded == 3  # recorded, diverged three times, then volatile
    assert side.cache.misses == 6 and side.cache.hits == 0


def test_a_shorter_or_longer_page_is_not_replayed() -> None:
    side = Sidecar()
    html = page()
    feed(side.response("/", "<b>a</b>", "<i>b</i>", False), html, [])
    for other in (html[:-10], html + b"<!-- more -->"):
        rw = side.response("/", "<b>a</b>", "<i>b</i>", False)
        assert feed(rw, other, [100]) == expected(other, "<b>a</b>", "<i>b</i>", False)
        assert not rw.replayed


def test_one_byte_contents_are_recorded_and_replayed() -> None:
    # A one-byte bytes object is the very object a one-byte slice of the page is, so
    # the rewriter's marks, not identity, must tell the content from the page.
    side = Sidecar()
    html = page().replace(b"<title>Shop</title>", b"<title>x</title>")
    for i, (hero, banner) in enumerate([("x", "<"), ("y", ">"), ("x", "x"), ("", "")]):
        rw = side.response("/", hero, banner, False)
        assert feed(rw, html, [1, 7]) == expected(html, hero, banner, False)
        assert rw.replayed == (i > 0)
    assert side.cache.recorded == 1


@settings(max_examples=examples(80), deadline=None)
@given(
    st.integers(0, 3),
    st.lists(st.integers(1, 20_000), min_size=1, max_size=5),
    st.lists(st.integers(1, 20_000), min_size=1, max_size=5),
    st.integers(0, 10**9),
    st.booleans(),
)
def test_replay_or_not_the_output_is_a_fresh_rewrite(
    change: int, record_sizes: list[int], sizes: list[int], seed: int, descending: bool
) -> None:
    rng = random.Random(seed)
    side = Sidecar()
    html = page(n_items=rng.randint(0, 30), pad=rng.randint(0, 12_000))
    assert feed(side.response("/", "<b>a</b>", "<i>b</i>", False), html, record_sizes) == (
        expected(html, "<b>a</b>", "<i>b</i>", False)
    )
    other = html
    if change:
        at = rng.randrange(len(html))
        edit = [b"", b"<", b"<li>x</li>", b"&amp;", b"</ul>"][rng.randrange(5)]
        other = html[:at] + edit + html[at + (change - 1) :]
    hero, banner = ("<b>c</b>", "<i>d</i>") if rng.random() < 0.5 else ("<b>a</b>", "<i>b</i>")
    rw = side.response("/", hero, banner, descending)
    assert feed(rw, other, sizes) == streamed(other, hero, banner, descending)
    assert rw.replayed == (other == html)


# -- any edits, any targets: the proxy's use of the cache, and a fresh rewrite ---------


class ById:
    """Keys are the items' ids; one that came before gets no key (so asking twice
    for an item would show), and a salt stands for a catalog that changed."""

    def __init__(self, descending: bool = False, salt: str = "") -> None:
        self.descending = descending
        self.salt = salt
        self.seen: set[str] = set()
        self.keys = 0
        self.orders = 0

    def key(self, attrs: dict[str, str]) -> str | None:
        self.keys += 1
        key = attrs.get("data-id")
        if key is None or key in self.seen:
            return None
        self.seen.add(key)
        return key + self.salt

    def order(self, keys: list[str | None]) -> list[str]:
        self.orders += 1
        return sorted((k for k in keys if k is not None), reverse=self.descending)


Spec = list[tuple[str, str]]


class Shop:
    """The proxy's use of the cache for any edits: one shared plan per contents,
    reorders through late-bound targets, a replayer per response."""

    def __init__(self, cache: ReplayCache | None = None) -> None:
        self.cache = cache or ReplayCache()
        self.plans: dict[object, tuple[Plan, dict[int, Late]]] = {}

    def response(
        self, spec: Spec, contents: list[bytes], targets: dict[int, object], page: str = "/"
    ):  # type: ignore[no-untyped-def]
        plan_key = (tuple(spec), tuple(contents))
        if plan_key not in self.plans:
            late = {i: Late() for i, (_s, action) in enumerate(spec) if action == "reorder"}
            self.plans[plan_key] = (Plan(shop_edits(spec, contents, late)), late)
        plan, late = self.plans[plan_key]

        def bind(bound: dict[int, ByPrice]) -> None:
            for i, holder in late.items():
                holder.target = bound[i]

        return self.cache.rewriter(
            (page, tuple(spec)),  # the edits' shape, as the proxy keys it: not their contents
            [None if ce.action == "reorder" else ce.content for ce in plan.compiled],
            targets,  # type: ignore[arg-type]
            lambda _bound: plan.rewriter(),
            bind,
        )


def shop_edits(spec: Spec, contents: list[bytes], targets: dict[int, object]) -> list[Edit]:
    return [
        Edit(s, "reorder", key=targets[i].key, order=targets[i].order)  # type: ignore[attr-defined]
        if a == "reorder"
        else Edit(s, a, contents[i])  # type: ignore[arg-type]
        for i, (s, a) in enumerate(spec)
    ]


def fresh(html: bytes, spec: Spec, contents: list[bytes], targets: dict[int, object]):  # type: ignore[no-untyped-def]
    """What a fresh streaming rewriter gives: output, whether it bailed, counts."""
    rw = Rewriter(shop_edits(spec, contents, targets))
    return rw.write(html) + rw.end(), rw.error is not None, rw.counts


def pieces(html: bytes, sizes: list[int], split: int = 0) -> list[bytes]:
    """*html* in chunks of *sizes* (cycled), one of them ending at *split*."""
    out, at, i = [], 0, 0
    while at < len(html):
        end = at + sizes[i % len(sizes)]
        end = split if at < split < end else end
        out.append(html[at:end])
        at = end
        i += 1
    return out


def two_lists(first: str = "", between: int = 2 * RECORD_STEP, tail: str = "") -> bytes:
    def items(ids: str) -> str:
        return "".join(f'<li data-id="{c}"><a href="/p/{c}">{c}</a></li>\n' for c in ids)

    return (
        f'<body><header>Shop</header><ul class="a">\n{items("cadb" + first)}</ul>'
        f"<p>{'x' * between}</p>{tail}"
        f'<ul class="b">\n{items("gfhe")}</ul><footer>(c)</footer></body>'
    ).encode()


def test_what_the_end_of_the_kept_input_flushes_waits_for_end() -> None:
    # The kept page stops inside <header>: its end closes the header (the banner
    # goes there). A longer page that reads the same up to there goes on inside it.
    spec = [("header", "append"), ("#hero", "prepend")]
    kept = b"<body><div id=hero>Hi</div><header>Shop"
    shop = Shop()
    assert (
        feed(shop.response(spec, [b"<i>b</i>", b"<b>h</b>"], {}), kept, [])
        == (fresh(kept, spec, [b"<i>b</i>", b"<b>h</b>"], {})[0])
    )
    for longer in (kept + b" and more</header><p>x</p>", kept + b"<!-- c -->", kept + b"<"):
        rw = shop.response(spec, [b"<i>c</i>", b"<b>g</b>"], {})
        out = rw.write(kept) + rw.write(longer[len(kept) :]) + rw.end()
        assert out == fresh(longer, spec, [b"<i>c</i>", b"<b>g</b>"], {})[0]
    rw = shop.response(spec, [b"<i>c</i>", b"<b>g</b>"], {})
    assert rw.write(kept) + rw.end() == fresh(kept, spec, [b"<i>c</i>", b"<b>g</b>"], {})[0]


def test_a_replay_that_stops_midway_asks_the_target_once_per_item() -> None:
    spec = [("ul.a, ul.b", "reorder"), ("header", "append")]
    html = two_lists()
    shop = Shop()
    feed(shop.response(spec, [b"", b"<i>b</i>"], {0: ById()}), html, [])
    # The same up to after the first list, then another second list.
    changed = two_lists(tail="<p>new</p>")
    for sizes in ([len(changed)], [RECORD_STEP], [3 * RECORD_STEP], [1000, 7]):
        target, oracle = ById(descending=True), ById(descending=True)
        rw = shop.response(spec, [b"", b"<i>c</i>"], {0: target})
        out = feed(rw, changed, sizes)
        assert out == fresh(changed, spec, [b"", b"<i>c</i>"], {0: oracle})[0]
        assert not rw.replayed
        assert (target.keys, target.orders) == (oracle.keys, oracle.orders) == (8, 2)
        feed(shop.response(spec, [b"", b"<i>b</i>"], {0: ById()}), html, [])  # kept again


def test_a_target_keying_otherwise_on_replay_is_asked_once_per_item() -> None:
    spec = [("ul.a, ul.b", "reorder"), ("header", "append")]
    html = two_lists()
    shop = Shop()
    feed(shop.response(spec, [b"", b"<i>b</i>"], {0: ById()}), html, [])
    for sizes in ([len(html)], [RECORD_STEP], [5000, 1]):
        target, oracle = ById(salt="-2"), ById(salt="-2")  # the catalog changed
        rw = shop.response(spec, [b"", b"<i>c</i>"], {0: target})
        assert feed(rw, html, sizes) == fresh(html, spec, [b"", b"<i>c</i>"], {0: oracle})[0]
        assert (target.keys, target.orders) == (oracle.keys, oracle.orders)
        # Recorded again with this target's keys: the next one is replayed.
        target, oracle = ById(True, salt="-2"), ById(True, salt="-2")
        rw = shop.response(spec, [b"", b"<i>d</i>"], {0: target})
        assert feed(rw, html, sizes) == fresh(html, spec, [b"", b"<i>d</i>"], {0: oracle})[0]
        assert rw.replayed and (target.keys, target.orders) == (oracle.keys, oracle.orders)
        feed(shop.response(spec, [b"", b"<i>b</i>"], {0: ById()}), html, [])  # old keys


def test_lists_keyed_by_one_shared_target_are_replayed_in_the_order_of_the_page() -> None:
    # The second edit's list comes first on the page; one target keys both.
    spec = [("ul.b", "reorder"), ("ul.a", "reorder")]
    html = two_lists(between=100)
    shop = Shop()
    first = ByPrice(False)
    feed(shop.response(spec, [b"", b""], {0: first, 1: first}), html, [])
    shared, oracle = ByPrice(True), ByPrice(True)
    rw = shop.response(spec, [b"", b""], {0: shared, 1: shared})
    assert feed(rw, html, [50]) == fresh(html, spec, [b"", b""], {0: oracle, 1: oracle})[0]
    assert rw.replayed and shared.prices == oracle.prices


def test_small_writes_make_few_checkpoints_and_replay_in_any_chunks() -> None:
    html = page(n_items=40, pad=5 * RECORD_STEP)
    side = Sidecar()
    assert feed(side.response("/", "<b>a</b>", "<i>b</i>", False), html, [1, 2, 3]) == (
        expected(html, "<b>a</b>", "<i>b</i>", False)
    )
    entry = side.cache._entries.get(("/", "shape"))
    recording = entry.recording  # type: ignore[union-attr]
    assert len(recording.checkpoints) <= len(html) // RECORD_STEP
    assert len(recording.pieces) <= 2 * len(recording.checkpoints) + 10
    for sizes in ([1], [1, 5000], [RECORD_STEP - 1], [65536]):
        rw = side.response("/", "<b>c</b>", "<i>d</i>", True)
        assert feed(rw, html, sizes) == expected(html, "<b>c</b>", "<i>d</i>", True)
        assert rw.replayed


def test_a_body_too_long_to_keep_is_not_held_while_rewritten() -> None:
    side = Sidecar()
    side.cache = ReplayCache(max_body=3 * RECORD_STEP)
    html = page(pad=8 * RECORD_STEP)
    rw = side.response("/", "<b>a</b>", "<i>b</i>", False)
    out = rw.write(html[: 6 * RECORD_STEP])
    assert sum(map(len, rw._inputs)) <= 4 * RECORD_STEP
    assert rw._recording is None or len(rw._recording.pieces) < 10
    out += rw.write(html[6 * RECORD_STEP :]) + rw.end()
    assert out == expected(html, "<b>a</b>", "<i>b</i>", False)
    assert side.cache.recorded == 0


def test_a_kept_template_is_counted_with_the_lists_it_holds() -> None:
    html = page(n_items=300)
    side = Sidecar()
    feed(side.response("/", "<b>a</b>", "<i>b</i>", False), html, [])
    entry = side.cache._entries.get(("/", "shape"))
    assert entry.size >= 2 * len(html) * 0.9  # the page, and the list's items again


def test_a_page_taken_for_volatile_stays_so_when_a_slower_response_ends() -> None:
    side = Sidecar()
    html = page(pad=RECORD_STEP)
    feed(side.response("/", "<b>a</b>", "<i>b</i>", False), html, [])
    slow = side.response("/", "<b>a</b>", "<i>b</i>", False)
    changed = page(pad=RECORD_STEP, tag="slow")
    out = slow.write(changed[:100])  # diverges, records
    for i in range(2):
        other = page(pad=RECORD_STEP, tag=str(i))
        feed(side.response("/", "<b>a</b>", "<i>b</i>", False), other, [])
    out += slow.write(changed[100:]) + slow.end()
    assert out == expected(changed, "<b>a</b>", "<i>b</i>", False)
    recorded = side.cache.recorded
    again = side.response("/", "<b>a</b>", "<i>b</i>", False)
    assert feed(again, changed, []) == expected(changed, "<b>a</b>", "<i>b</i>", False)
    assert not again.replayed and side.cache.recorded == recorded


def test_contents_empty_where_the_template_had_none_are_not_lost() -> None:
    # The caller's key does not tell empty contents apart: the cache must (a template
    # has no place for a content that was empty when it was recorded).
    html = page()
    shop = Shop()
    spec = [("header", "append"), ("#hero", "before")]
    for contents in ([b"", b"<b>h</b>"], [b"<i>b</i>", b"<b>h</b>"], [b"", b"<b>g</b>"]):
        rw = shop.cache.rewriter(
            "/",
            contents,
            {},
            lambda _b, c=contents: Rewriter(shop_edits(spec, c, {})),
            lambda _b: None,
        )
        assert feed(rw, html, [300]) == fresh(html, spec, contents, {})[0]
    assert rw.replayed


def test_a_recording_that_bails_is_not_kept_and_a_replay_that_comes_to_a_bail_bails() -> None:
    spec = [("#hero", "set_inner_content"), ("header", "append")]
    html = page(pad=2 * RECORD_STEP)
    broken = html.replace(b"<p>Welcome</p>", b"<p>Welcome</td>", 1)  # ambiguous: bails
    shop = Shop()
    for _ in range(2):
        rw = shop.response(spec, [b"<b>a</b>", b"<i>b</i>"], {})
        assert feed(rw, broken, [RECORD_STEP // 3]) == broken.replace(b"Shop ", b"Shop <i>b</i>")
        assert rw.error is not None and not rw.replayed
    assert shop.cache.recorded == 0
    feed(shop.response(spec, [b"<b>a</b>", b"<i>b</i>"], {}), html, [])
    rw = shop.response(spec, [b"<b>c</b>", b"<i>d</i>"], {})
    out, bailed, _counts = fresh(broken, spec, [b"<b>c</b>", b"<i>d</i>"], {})
    assert feed(rw, broken, [RECORD_STEP + 1]) == out
    assert bailed and rw.error is not None


def test_shared_and_short_contents_are_filled_in_right() -> None:
    spec = [("header", "append"), ("#hero", "prepend"), ("li", "append"), ("footer", "after")]
    html = page(n_items=5)
    shared = b"<b>shared</b>"
    shop = Shop()
    runs = [
        [shared, shared, b"<s>1</s>", b""],  # one object in two edits: kept
        [b"x", b"<u>h</u>", b"<s>1</s>", b""],  # one byte
        [b"<i>b</i>", b"<u>h</u>", b"<s>1</s>", b""],
        [shared, shared, b"y", b""],
        [b"z", b"<u>h</u>", bytes(bytearray(b"<s>1</s>")), b"<p>f</p>"],  # a copy; empty no more
    ]
    for i, contents in enumerate(runs):
        rw = shop.response(spec, contents, {})
        assert feed(rw, html, [77]) == fresh(html, spec, contents, {})[0]
        assert rw.counts == fresh(html, spec, contents, {})[2]
        assert rw.replayed == (i > 0)
    assert shop.cache.recorded == 1


def test_contents_are_told_by_the_rewriters_marks_not_by_identity() -> None:
    # The cache is handed equal copies of the plan's contents, not the plan's objects.
    html = page()
    spec = [("header", "append"), ("#hero", "set_inner_content")]
    cache = ReplayCache()
    for contents in ([b"<i>b</i>", b"<b>h</b>"], [b"<i>c</i>", b"<b>g</b>"]):
        plan = Plan(shop_edits(spec, contents, {}))
        copies = [bytes(bytearray(ce.content)) for ce in plan.compiled]
        rw = cache.rewriter("/", copies, {}, lambda _b, p=plan: p.rewriter(), lambda _b: None)
        assert feed(rw, html, [300]) == fresh(html, spec, contents, {})[0]
    assert rw.replayed


def test_the_rewriter_marks_each_content_and_reordered_list_with_its_edit() -> None:
    seen: list[tuple[bytes, int, bool]] = []

    class Recorder:
        def take(self, out: list[bytes], marks: list) -> bytes:  # type: ignore[type-arg]
            seen.extend((b"".join(out[a:b]), edit, held is not None) for a, b, edit, held in marks)
            data = b"".join(out)
            out.clear()
            marks.clear()
            return data

        def spoil(self) -> None:
            raise AssertionError("spoiled")

    x = b"x"  # one byte: the very object a one-byte slice of the page is
    plan = Plan(
        [
            Edit("p", "append", x),
            Edit("b", "before", x),
            Edit("ul", "reorder", key_attr="id", order=["2", "1"]),
            Edit("li", "prepend", b""),
        ]
    )
    rw = plan.rewriter()
    rw.record(Recorder())
    html = b"<p>x<b>x</b></p><ul><li id=1>x</li><li id=2>x</li></ul>"
    out = rw.write(html[:9]) + rw.write(html[9:]) + rw.end()
    assert out == b"<p>xx<b>x</b>x</p><ul><li id=2>x</li><li id=1>x</li></ul>"
    assert seen == [
        (b"x", 1, False),
        (b"x", 0, False),
        (b"<li id=2>x</li><li id=1>x</li>", 2, True),
    ]


def card(i: int, inside: str = "", end: str = "</li>", cls: str = "") -> str:
    return f'<li data-id="p{i % 7}" data-price="{i * 37 % 101}"{cls}>{inside}{end}\n'


FRAGMENTS = [
    "<header>Shop</header>",
    "<header>Shop",
    "<div id=hero><p>Welcome</p></div>",
    "<div id=hero>",
    "<p>text",
    "</p>",
    "</div>",
    "<!-- c -->",
    "<script>var s = '<li>';</script>",
    "<svg viewBox='0 0 4 4'><rect/></svg>",
    "<footer>(c)</footer>",
    "<b>bold</b>",
    "&amp; ",
    "<",
    "x" * (RECORD_STEP - 5),
    "<ul class=products>" + "".join(card(i) for i in range(6)) + "</ul>",
    "<ul class=products>" + "".join(card(i, "<a class=buy href=/p>buy</a>") for i in range(4)),
    "<ul class=products>" + card(1, end="") + card(2, cls=" class=hot") + card(3, "<p>x") + "</ul>",
    "<ul class=products>" + card(4, "<ul class=products>" + card(5) + card(6) + "</ul>") + "</ul>",
    "<div id=hero><ul class=products>" + card(8) + card(9) + "</ul></div>",
    "<ol class=more>" + "".join(card(i) for i in range(9, 14)) + "</ol>",
]
EDIT_SPECS: list[Spec] = [
    [("ul.products", "reorder"), ("header", "append"), ("#hero", "set_inner_content")],
    [("ul.products", "reorder"), ("a.buy", "append"), ("li.hot", "replace")],
    [("ul.products, ol.more", "reorder"), ("li.hot", "remove"), ("ul.products", "before")],
    [("ol.more", "reorder"), ("ul.products", "reorder"), ("li", "prepend"), ("footer", "after")],
    [("#hero", "replace"), ("ul.products", "reorder"), ("ul.products", "after"), ("p", "before")],
    [("header", "prepend"), ("#hero", "remove"), ("b", "after"), ("li", "append")],
    [("#hero", "prepend"), ("#hero", "append"), ("ul.products", "reorder"), ("li", "before")],
]
CONTENTS = [b"", b"!", b"<i>one</i>", b"<b>two</b>", b"<u>three</u>"]


@st.composite
def visits(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    """Edits, and responses for one page: (body, contents, chunks, descending, salt)."""
    spec = draw(st.sampled_from(EDIT_SPECS))
    html = "".join(draw(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=10))).encode()
    sizes = st.lists(
        st.one_of(st.integers(1, 300), st.sampled_from([RECORD_STEP, RECORD_STEP + 1, 1 << 16])),
        min_size=1,
        max_size=4,
    )
    first = [draw(st.sampled_from(CONTENTS)) for _ in spec]
    out = []
    for i in range(draw(st.integers(2, 4))):
        body = html
        change = draw(st.sampled_from(["same", "same", "cut", "longer", "insert"])) if i else ""
        at = draw(st.integers(0, len(html)))
        if change == "cut":
            body = html[:at]
        elif change == "longer":
            at = len(html)  # a chunk ends where the kept page did
            body = html + draw(st.sampled_from(FRAGMENTS)).encode()
        elif change == "insert":
            body = html[:at] + draw(st.sampled_from(FRAGMENTS)).encode() + html[at:]
        # The first response's contents or others (empty or not, one byte or more).
        contents = [c if draw(st.booleans()) else draw(st.sampled_from(CONTENTS)) for c in first]
        if draw(st.integers(0, 9)) == 0 and contents[1] and contents[2]:
            contents[2] = contents[1]  # one object for two edits
        chunks = pieces(body, draw(sizes), at)
        salt = draw(st.sampled_from(["", "", "-2"]))  # "-2": the catalog changed
        contents = [bytes(bytearray(c)) for c in contents]
        out.append((body, contents, chunks, draw(st.booleans()), salt))
    return spec, out


@settings(max_examples=examples(150), deadline=None)
@given(visits(), st.booleans(), st.booleans(), st.randoms(use_true_random=False))
def test_any_edits_any_chunks_any_changes_give_a_fresh_rewrite(
    visit, by_id: bool, shared: bool, rng: random.Random
) -> None:  # type: ignore[no-untyped-def]
    spec, responses = visit
    lists = [i for i, (_s, a) in enumerate(spec) if a == "reorder"]

    def targets(descending: bool, salt: str) -> dict[int, object]:
        if shared:
            return dict.fromkeys(lists, ById(descending, salt) if by_id else ByPrice(descending))
        return {i: ById(descending, salt) if by_id else ByPrice(descending) for i in lists}

    shop = Shop()
    # The first alone (it records), then the others two at a time, writes interleaved.
    groups = [responses[:1], *(responses[i : i + 2] for i in range(1, len(responses), 2))]
    for group in groups:
        runs = []
        for body, contents, chunks, descending, salt in group:
            mine, oracle = targets(descending, salt), targets(descending, salt)
            rw = shop.response(spec, contents, mine)
            runs.append((rw, list(chunks), [], mine, oracle, fresh(body, spec, contents, oracle)))
        while any(run[1] for run in runs):
            rw, chunks, out, *_ = rng.choice([run for run in runs if run[1]])
            out.append(rw.write(chunks.pop(0)))
        for rw, _chunks, out, mine, oracle, (expect, bailed, counts) in runs:
            assert b"".join(out) + rw.end() == expect
            assert (rw.error is not None) == bailed
            if not bailed:
                assert rw.counts == counts
            if by_id:  # the request's targets were asked what a fresh rewrite asks
                for i in lists:
                    assert (mine[i].keys, mine[i].orders) == (oracle[i].keys, oracle[i].orders)

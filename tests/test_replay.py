"""Replaying a kept rewrite (edge.rewrite.replay): byte for byte what a fresh rewrite
gives, for other contents and list orders, whatever the chunking, and when the page
changes midway."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.rewrite import Edit, Plan, rewrite
from edge.rewrite.replay import RECORD_STEP, ReplayCache


class ByPrice:
    """A reorder target like the sidecar's ListOrder: keys are call numbers."""

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.prices: dict[str, float] = {}

    def key(self, attrs: dict[str, str]) -> str:
        key = str(len(self.prices))
        self.prices[key] = float(attrs.get("data-price", "0"))
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

    def __init__(self) -> None:
        self.cache = ReplayCache()
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


def test_one_byte_contents_are_not_recorded() -> None:
    side = Sidecar()
    html = page()
    for _ in range(3):
        rw = side.response("/", "x", "<i>b</i>", False)
        assert feed(rw, html, []) == expected(html, "x", "<i>b</i>", False)
        assert not rw.replayed


@settings(max_examples=80, deadline=None)
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
    assert feed(rw, other, sizes) == expected(other, hero, banner, descending)
    assert rw.replayed == (other == html)

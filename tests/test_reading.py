"""edge/reading.py through the real app: a WooCommerce Storefront-shaped shop (the
theme fixtures, served by a real HTTP server on 127.0.0.1) behind the sidecar,
configured only with a page map, a slot and a sort. Product pages teach the learned
catalog as they pass; the category list (items with no id) is then sorted by price;
category views record the name the page shows; the learned products are kept in the
store (memory, SQLite, and a real redis-server)."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from edge.app import EdgeApp
from edge.config import Config
from edge.pages import Page
from edge.personalize.catalog import ItemFacts, LearnedCatalog
from edge.profiles.store import MemoryStore
from edge.reading import PageBody, Reading
from edge.rules.ruleset import compile_text
from tests.conftest import serving

THEME = Path(__file__).parent / "themes" / "woocommerce-storefront"
ROOT = Path(__file__).resolve().parent.parent
BROWSER = {
    "Accept": "text/html,application/xhtml+xml",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
}
PRODUCTS = {  # slug: (name, price) as the shop's product pages say
    "hoodie-with-logo": ("Hoodie with Logo", "45.00"),
    "beanie": ("Beanie", "18.00"),
    "cap": ("Cap", "16.00"),
    "hoodie-with-zipper": ("Hoodie with Zipper", "47.00"),
    "belt": ("Belt", "55.00"),
}
RULES = """
[page_types]
product = "/product/{product}/"
category = "/product-category/{category}/"

[slots.category-products]
select = "ul.products"
pages = ["category"]

[[placements]]
slot = "category-products"
sort = "price asc"
"""


def product_page(slug: str) -> str:
    """The Storefront product fixture as the shop renders it for *slug*."""
    name, price = PRODUCTS[slug]
    html = (THEME / "product.html").read_text(encoding="utf-8")
    return (
        html.replace("hoodie-with-logo", slug)
        .replace("Hoodie with Logo", name)
        .replace("45.00", price)
    )


class Shop(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        m = re.fullmatch(r"/product/([a-z-]+)/", path)
        if path == "/product-category/clothing/":
            body = (THEME / "category.html").read_bytes()
        elif m and m.group(1) in PRODUCTS:
            body = product_page(m.group(1)).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=UTF-8")
        if "gz=1" in query:
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def shop() -> Iterator[str]:
    with serving(Shop) as base:
        yield base


@pytest.fixture
async def app(shop: str, tmp_path: Path) -> AsyncIterator[EdgeApp]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "theme.toml").write_text(RULES)
    config = Config(
        upstream=shop,
        rules=str(rules),
        snippets=str(ROOT / "snippets"),
        store=f"sqlite:{tmp_path / 'profiles.db'}",
        secret="reading-tests",
        languages=["en"],
    )
    edge = EdgeApp(config)
    yield edge
    edge.proxy.pool.close()
    await edge.store.close()


def client(app: EdgeApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://shop.test",
        headers=BROWSER,
        timeout=10,
    )


def order(html: str) -> list[str]:
    """The list's products in the order the visitor sees them."""
    listed = html[html.rindex('<ul class="products') :]
    return list(
        dict.fromkeys(re.findall(r'href="https://shop\.example/product/([a-z-]+)/"', listed))
    )


async def test_product_pages_teach_and_the_list_is_sorted_by_price(app: EdgeApp) -> None:
    async with client(app) as browser:
        first = await browser.get("/product-category/clothing/")
        assert first.status_code == 200
        assert order(first.text) == list(PRODUCTS)  # nothing known yet: the shop's order
        for slug in PRODUCTS:
            page = await browser.get(f"/product/{slug}/")
            assert page.status_code == 200 and page.text == product_page(slug)  # untouched
        learned = app.reading.catalog
        assert learned.by_link("https://shop.example/product/cap/") == ItemFacts(
            "woo-cap",
            "Hoodies",
            "",
            16.0,
            "Cap",
            "https://shop.example/product/cap/",
            "USD",
            "in stock",
        )
        again = await browser.get("/product-category/clothing/")
        assert order(again.text) == [
            "cap",
            "beanie",
            "hoodie-with-logo",
            "hoodie-with-zipper",
            "belt",
        ]
        await browser.get("/product/cap/")
    await app.recorder.flush()
    (key,) = await app.store.keys()
    profile = await app.store.get(key)
    assert profile is not None
    # the category view records the name the page shows (its BreadcrumbList), not the
    # URL segment; product views carry the learned facts
    assert profile.categories.viewed.get("Clothing") == 2
    assert "clothing" not in profile.categories.viewed
    assert profile.categories.viewed.get("Hoodies") == len(PRODUCTS) + 1


async def test_an_unchanged_page_is_not_read_again_and_a_changed_one_is(app: EdgeApp) -> None:
    learned = app.reading.catalog
    async with client(app) as browser:
        await browser.get("/product/belt/")
        version = learned.version
        PRODUCTS["belt"] = ("Belt", "51.00")
        try:  # read a moment ago: not read again (a minute by default)
            await browser.get("/product/belt/")
        finally:
            PRODUCTS["belt"] = ("Belt", "55.00")
        assert learned.version == version
        app.reading.reread_after = 0
        await browser.get("/product/belt/")  # read again, unchanged: not parsed
        assert learned.version == version
        PRODUCTS["belt"] = ("Belt", "50.00")
        try:
            await browser.get("/product/belt/?gz=1")  # and a gzip body is read decoded
        finally:
            PRODUCTS["belt"] = ("Belt", "55.00")
        assert learned.version > version
        facts = learned.lookup("belt")
        assert facts is not None and facts.price == 50.0


async def test_learned_products_survive_a_restart(app: EdgeApp, shop: str, tmp_path: Path) -> None:
    async with client(app) as browser:
        await browser.get("/product/beanie/")
    assert await app.reading.save()
    assert not await app.reading.save()  # nothing new: nothing written
    again = EdgeApp(app.config, store=app.store)
    assert await again.reading.load() == 1
    assert again.reading.catalog.by_link("/product/beanie") is not None
    again.proxy.pool.close()


async def test_the_bare_proxy_reads_nothing(app: EdgeApp) -> None:
    """A page of a type nobody reads is relayed, not collected."""
    body = app.reading.body(b"", b"text/html")
    assert not app.reading.wants("GET", 200, b"text/html", Page("home", {}))
    assert not app.reading.wants("POST", 200, b"text/html", Page("product", {}))
    assert not app.reading.wants("GET", 200, b"image/png", Page("product", {}))
    assert app.reading.wants("GET", 200, b"text/html; charset=utf-8", Page("product", {}))
    body.feed(b"x" * 10)
    assert body.text() == "x" * 10


def test_a_body_too_large_or_undecodable_is_not_read() -> None:
    big = PageBody(b"", b"text/html", limit=100)
    big.feed(b"a" * 60)
    big.feed(b"a" * 60)
    assert big.text() is None and not big.whole
    broken = PageBody(b"gzip", b"text/html")
    broken.feed(b"not gzip at all")
    assert broken.text() is None
    latin = PageBody(b"", b"text/html; charset=ISO-8859-1")
    latin.feed("€ caffè".encode("cp1252", "replace")[2:])
    assert latin.text() == "caffè"


def test_readers_registered_for_a_page_type_run_and_a_failing_one_is_skipped() -> None:
    reading = Reading(LearnedCatalog(), MemoryStore())
    rules = compile_text(RULES)
    seen: list[str] = []

    def fails(page: Page, html: str, ruleset: object) -> list:
        raise RuntimeError("a reader's bug")

    def cart(page: Page, html: str, ruleset: object) -> list:
        seen.append(html)
        return []

    reading.register("cart", fails)
    reading.register("cart", cart)
    for _ in range(2):  # a visitor's own page: read every time, unchanged or not
        body = reading.body(b"", b"text/html")
        body.feed(b"<p>cart</p>")
        assert reading.read(Page("cart", {}), "/cart", body, rules) == []
    assert seen == ["<p>cart</p>", "<p>cart</p>"]


@pytest.mark.slow
async def test_learned_products_in_redis(redis_url: str) -> None:
    from edge.profiles.redis import RedisStore

    store = RedisStore(redis_url, prefix="reading-test:")
    try:
        reading = Reading(LearnedCatalog(), store)
        reading.catalog.learn(ItemFacts("sku-1", "Bags", "Gres", 9.5, "Tote", "/p/tote"))
        assert await reading.save()
        other = Reading(LearnedCatalog(), RedisStore(redis_url, prefix="reading-test:"))
        assert await other.load() == 1
        assert other.catalog.by_link("https://x/p/tote/") == reading.catalog.get("sku-1")
        assert await store.keys() == []  # not a profile
        await other.store.close()  # type: ignore[union-attr]
    finally:
        await store.close()


def test_a_feed_that_names_categories_by_their_slugs_keeps_them() -> None:
    """The demo's feed says `scarpe-donna`, as its URLs do: its category views stay
    so (its items' `data-category` match them); a shop whose URL says `clothing-16`
    and whose products say `Clothing` records the name its page shows."""
    from edge.personalize.catalog import Catalog

    feed = Catalog({"d1": ItemFacts("d1", "scarpe-donna")})
    slugs = LearnedCatalog(feed)
    slugs.learn_category("scarpe-donna", "Scarpe donna")
    assert slugs.category_name("scarpe-donna") == "scarpe-donna"
    names = LearnedCatalog()
    names.learn_category("clothing-16", "Clothing")
    assert names.category_name("clothing-16") == "Clothing"
    assert names.category_name("unknown") == "unknown"


def test_a_category_pages_item_list_with_prices_teaches_its_products() -> None:
    reading = Reading(LearnedCatalog())
    rules = compile_text(RULES)
    entries = [
        {
            "@type": "ListItem",
            "position": n,
            "item": {"@type": "Product", "sku": sku, "url": url, "offers": {"price": price}},
        }
        for n, (sku, url, price) in enumerate([("a1", "/p/a", "9"), ("b2", "/p/b", "3")], 1)
    ]
    listed = json.dumps({"@type": "ItemList", "itemListElement": entries})
    html = f'<script type="application/ld+json">{listed}</script><h1>Borse</h1>'
    body = reading.body(b"", b"text/html")
    body.feed(html.encode())
    reading.read(Page("category", {"category": "borse-12"}), "/c/borse-12", body, rules)
    assert reading.catalog.by_link("https://shop/p/b/") == ItemFacts("b2", price=3.0, url="/p/b")
    assert reading.catalog.category_name("borse-12") == "Borse"


async def test_reading_that_fails_leaves_the_page_and_its_record_alone(
    app: EdgeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> list:
        raise RuntimeError("a bug in reading")

    monkeypatch.setattr(app.reading, "read", broken)
    async with client(app) as browser:
        for _ in range(2):
            page = await browser.get("/product/cap/")
            assert page.status_code == 200 and page.text == product_page("cap")
    await app.recorder.flush()
    (key,) = await app.store.keys()
    profile = await app.store.get(key)
    assert profile is not None
    assert profile.session_pageviews == 2  # both views recorded
    assert sum(profile.categories.viewed.values()) == 0  # the product was never learned

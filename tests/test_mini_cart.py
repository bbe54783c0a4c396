"""The mini-cart (`[mini_cart]` in the rule files) read on every page that passes:
a WooCommerce Storefront-shaped shop (the theme fixtures, with the header's mini-cart
widget as woocommerce/templates/cart/mini-cart.php renders it) served by a real HTTP
server on 127.0.0.1 behind the sidecar. The lines a page's mini-cart shows replace the
visitor's cart, whatever the page's type; a page without the mini-cart says nothing;
one that shows it empty empties the cart; without `[mini_cart]` (the rules reload
live) no page of a type without a reader is even collected."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from edge.app import EdgeApp
from edge.carts import READERS, read_mini_cart
from edge.config import Config
from edge.pages import Page
from edge.personalize.catalog import LearnedCatalog
from edge.profiles import events as ev
from edge.profiles.model import Profile
from edge.reading import PageBody, Reading
from edge.rules.ruleset import compile_text
from tests.conftest import serving

THEME = Path(__file__).parent / "themes" / "woocommerce-storefront"
ROOT = Path(__file__).resolve().parent.parent
BROWSER = {
    "Accept": "text/html,application/xhtml+xml",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
}
THEME_RULES = """
[page_types]
home = "/"
product = "/product/{product}/"
category = "/product-category/{category}/"
cart = "/cart/"
"""
MINI_CART_RULES = """
[mini_cart]
select = "div.widget_shopping_cart_content"
item = "ul.woocommerce-mini-cart li.woocommerce-mini-cart-item"
name = 'a[href*="/product/"]'
quantity = ".quantity"
price = ".quantity .amount"
"""
PRODUCTS = {  # WooCommerce post id: (slug, name, price)
    "27": ("hoodie-with-logo", "Hoodie with Logo", "45.00"),
    "31": ("beanie", "Beanie", "18.00"),
}

STATE: dict[str, object] = {"lines": None}
"""What the shop's mini-cart shows: None (no mini-cart on the page), "script" (the
empty placeholder that a script fills), or the lines [(post id, quantity)]."""


def mini_cart(lines: object) -> str:
    """Storefront's header cart (storefront_header_cart) with WooCommerce's mini-cart."""
    if lines is None:
        return ""
    if lines == "script":
        content = ""
    elif not lines:
        content = '<p class="woocommerce-mini-cart__empty-message">No products in the cart.</p>'
    else:
        items = []
        for post_id, quantity in lines:  # type: ignore[attr-defined]
            slug, name, price = PRODUCTS[post_id]
            items.append(
                '<li class="woocommerce-mini-cart-item mini_cart_item">'
                f'<a href="https://shop.example/cart/?remove_item=k{post_id}&#038;_wpnonce=6f" '
                f'class="remove remove_from_cart_button" aria-label="Remove {html.escape(name)} '
                f'from cart" data-product_id="{post_id}" data-cart_item_key="k{post_id}" '
                f'data-product_sku="woo-{slug}">&times;</a>'
                f'<a href="https://shop.example/product/{slug}/"><img width="324" height="324" '
                f'src="https://shop.example/wp-content/uploads/{slug}.jpg" alt="" />{name}</a>'
                f'<span class="quantity">{quantity} &times; <span class="woocommerce-Price-amount '
                'amount"><bdi><span class="woocommerce-Price-currencySymbol">&#36;</span>'
                f"{price}</bdi></span></span></li>"
            )
        content = (
            '<ul class="woocommerce-mini-cart cart_list product_list_widget ">'
            + "".join(items)
            + '</ul><p class="woocommerce-mini-cart__total total"><strong>Subtotal:</strong> '
            '<span class="woocommerce-Price-amount amount">…</span></p>'
            '<p class="woocommerce-mini-cart__buttons buttons"><a href="https://shop.example/cart/" '
            'class="button wc-forward">View cart</a></p>'
        )
    return (
        '<ul id="site-header-cart" class="site-header-cart menu"><li class="">'
        '<a class="cart-contents" href="https://shop.example/cart/" title="View your shopping cart">'
        '<span class="count">…</span></a></li><li><div class="widget woocommerce '
        f'widget_shopping_cart"><div class="widget_shopping_cart_content">{content}</div></div>'
        "</li></ul>"
    )


def page(name: str) -> bytes:
    """A theme fixture with the header's mini-cart as the shop shows it now."""
    text = (THEME / name).read_text(encoding="utf-8")
    body_at = text.index(">", text.index("<body")) + 1
    return (text[:body_at] + mini_cart(STATE["lines"]) + text[body_at:]).encode()


class Shop(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        files = {
            "/": "category.html",
            "/product-category/clothing/": "category.html",
            "/product/hoodie-with-logo/": "product.html",
            "/about/": "order.html",  # a page no page type names
        }
        if self.path == "/cart/":
            body = (THEME / "cart.html").read_bytes()  # its own reader: the cart page
        elif self.path in files:
            body = page(files[self.path])
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=UTF-8")
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
    (rules / "theme.toml").write_text(THEME_RULES + MINI_CART_RULES)
    config = Config(
        upstream=shop,
        rules=str(rules),
        snippets=str(ROOT / "snippets"),
        store=f"sqlite:{tmp_path / 'profiles.db'}",
        secret="mini-cart-tests",
        languages=["en"],
    )
    edge = EdgeApp(config)
    STATE["lines"] = None
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


async def visitor(app: EdgeApp) -> Profile:
    await app.recorder.flush()
    (key,) = await app.store.keys()
    profile = await app.store.get(key)
    assert profile is not None
    return profile


def cart(profile: Profile) -> list[tuple[str, str, int, float]]:
    return [(i.product_id, i.name, i.quantity, i.price) for i in profile.cart.items]


async def test_the_mini_cart_of_every_page_replaces_the_visitors_cart(app: EdgeApp) -> None:
    async with client(app) as browser:
        await browser.get("/")  # a new visitor's first page is kept until their second
        STATE["lines"] = [("27", 2)]
        assert (await browser.get("/")).status_code == 200  # home: a type with no reader
        assert cart(await visitor(app)) == [("27", "Hoodie with Logo", 2, 45.0)]

        STATE["lines"] = None  # a page without the mini-cart says nothing about the cart
        await browser.get("/product-category/clothing/")
        STATE["lines"] = "script"  # nor does a placeholder a script fills later
        await browser.get("/product-category/clothing/")
        assert cart(await visitor(app)) == [("27", "Hoodie with Logo", 2, 45.0)]

        STATE["lines"] = [("27", 1), ("31", 3)]  # a product page: its facts and the cart
        product = await browser.get("/product/hoodie-with-logo/")
        assert product.text == page("product.html").decode()  # served untouched
        assert cart(await visitor(app)) == [
            ("27", "Hoodie with Logo", 1, 45.0),
            ("31", "Beanie", 3, 18.0),
        ]
        assert app.reading.catalog.by_link("/product/hoodie-with-logo/") is not None

        STATE["lines"] = [("31", 1)]  # a page the page map does not know
        await browser.get("/about/")
        assert cart(await visitor(app)) == [("31", "Beanie", 1, 18.0)]

        await browser.get("/cart/")  # the cart page: its own reader, not the mini-cart
        assert cart(await visitor(app)) == [  # (the page's cart has no mini-cart)
            ("27", "Hoodie with Logo", 2, 45.0),
            ("31", "Beanie", 1, 18.0),
        ]

        STATE["lines"] = []  # shown empty: the cart is empty
        await browser.get("/")
        assert cart(await visitor(app)) == []


async def test_without_mini_cart_pages_of_no_reader_are_not_collected(
    app: EdgeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules reload live: without `[mini_cart]` a home page is relayed as it
    streams, never copied; with it again, it is read."""
    collected: list[str] = []
    body = app.reading.body

    def counted(encoding: bytes, content_type: bytes) -> PageBody:
        collected.append(content_type.decode())
        return body(encoding, content_type)

    monkeypatch.setattr(app.reading, "body", counted)
    theme = Path(app.config.rules) / "theme.toml"
    theme.write_text(THEME_RULES + "\n# no mini-cart here\n")
    assert app.rules.reload() and not app.rules.ruleset.carts.mini_cart
    STATE["lines"] = [("27", 2)]
    async with client(app) as browser:
        for path in ("/", "/about/", "/"):
            await browser.get(path)
        assert collected == []
        assert cart(await visitor(app)) == []
        theme.write_text(THEME_RULES + MINI_CART_RULES)
        assert app.rules.reload() and app.rules.ruleset.carts.mini_cart
        await browser.get("/")
        assert len(collected) == 1
        assert cart(await visitor(app)) == [("27", "Hoodie with Logo", 2, 45.0)]


def read(reading: Reading, page: Page | None, text: str, rules: str, tracked: bool = True) -> list:
    body = reading.body(b"", b"text/html")
    body.feed(text.encode())
    return reading.read(page, "/somewhere", body, compile_text(rules), mini_cart=tracked)


def test_a_page_without_the_mini_cart_leaves_the_cart_alone() -> None:
    reading = Reading(LearnedCatalog())
    for page_type, reader in READERS.items():
        reading.register(page_type, reader)
    reading.register_mini_cart(read_mini_cart, besides=READERS)
    rules = THEME_RULES + MINI_CART_RULES
    home = Page("home", {})
    assert read(reading, home, "<header>no cart here</header><main>…</main>", rules) == []
    shown = "<header>" + mini_cart([("31", 2)]) + "</header>"
    [replaced] = read(reading, home, shown, rules)
    assert isinstance(replaced, ev.CartReplaced)
    assert [(p.product_id, p.quantity, p.price) for p in replaced.products] == [("31", 2, 18.0)]
    assert read(reading, None, shown, rules) == [replaced]  # a page of no type too
    assert read(reading, home, shown, THEME_RULES) == []  # no [mini_cart]: nothing
    assert read(reading, home, shown, rules, tracked=False) == []  # an untracked visitor
    # the cart page: its own reader only (its lines are not the mini-cart's), once
    assert read(reading, Page("cart", {}), shown, rules) == [ev.CartReplaced()]
    # collected: any tracked HTML page while [mini_cart] is set; else a type with a reader
    assert reading.wants("GET", 200, b"text/html", home, "/", mini_cart=True)
    assert reading.wants("GET", 200, b"text/html", None, "/x", mini_cart=True)
    assert not reading.wants("GET", 200, b"text/html", home, "/", mini_cart=False)
    assert not reading.wants("GET", 200, b"image/png", home, "/", mini_cart=True)
    assert not reading.wants("POST", 200, b"text/html", home, "/", mini_cart=True)

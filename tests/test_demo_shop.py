"""The bundled demo shop behaves like a real storefront and carries the slot markup."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx
import pytest
from starlette.testclient import TestClient

from edge.demo.catalog import (
    CATEGORIES,
    PRODUCTS,
    PRODUCTS_BY_ID,
    Category,
    Product,
    format_euro,
    products_in,
    search_products,
)
from edge.demo.shop import create_app, read_cart

# --- a small HTML tree, strict enough to catch unbalanced markup ------------------

_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "wbr",
}
# Opening one of these inside <p> silently closes the <p> in a browser.
_BLOCKS = {
    "address",
    "article",
    "aside",
    "div",
    "dl",
    "fieldset",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "main",
    "nav",
    "ol",
    "p",
    "section",
    "table",
    "ul",
}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    children: list[Element] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = [*self.text_parts, *(child.text for child in self.children)]
        return " ".join(" ".join(parts).split())

    def iter(self) -> Iterator[Element]:
        for child in self.children:
            yield child
            yield from child.iter()

    def find_all(self, tag: str, **attrs: str) -> list[Element]:
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [
            e
            for e in self.iter()
            if e.tag == tag and all(e.attrs.get(k) == v for k, v in wanted.items())
        ]

    def find(self, tag: str, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = self.root
        self.errors: list[str] = []
        self.ids: set[str] = set()

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> Element:
        element = Element(tag, {k: v or "" for k, v in attrs}, parent=self.open)
        self.open.children.append(element)
        if "id" in element.attrs:
            if element.attrs["id"] in self.ids:
                self.errors.append(f"duplicate id {element.attrs['id']!r}")
            self.ids.add(element.attrs["id"])
        return element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS and self.open.tag == "p":
            self.errors.append(f"<{tag}> inside <p> at {self.getpos()}")
        element = self._element(tag, attrs)
        if tag not in _VOID:
            self.open = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag != self.open.tag:
            self.errors.append(f"</{tag}> closes <{self.open.tag}> at {self.getpos()}")
            return
        assert self.open.parent is not None
        self.open = self.open.parent

    def handle_data(self, data: str) -> None:
        self.open.text_parts.append(data)


def parse(html: str) -> Element:
    """The page as a tree, after checking that it is a well-formed HTML5 document."""
    assert html.startswith("<!doctype html>\n")
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.errors == []
    assert builder.open is builder.root, f"<{builder.open.tag}> never closed"
    head = builder.root.find("head")
    assert head.find_all("meta", charset="utf-8")
    assert head.find("meta", name="viewport").attrs["content"].startswith("width=device-width")
    assert "Bottega Aurora" in head.find("title").text
    return builder.root


def assert_html(response: httpx.Response, status: int = 200) -> Element:
    assert response.status_code == status
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = parse(response.text)
    # The banner place sits right after the header, empty, on every page.
    body = page.find("body")
    header = body.find("header", **{"class": "site-header"})
    after_header = body.children[body.children.index(header) + 1]
    assert (after_header.tag, after_header.attrs) == (
        "div",
        {"class": "edge-banner", "data-edge-slot": "top-banner"},
    )
    assert after_header.children == [] and after_header.text == ""
    return page


def page_type(page: Element) -> str:
    return page.find("body").attrs["data-page-type"]


def cart_count(page: Element) -> int:
    return int(page.find("span", **{"class": "cart-count"}).text)


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app())


def add_to_cart(client: TestClient, product_id: str, qty: str | None = None) -> httpx.Response:
    form = {"product_id": product_id} if qty is None else {"product_id": product_id, "qty": qty}
    return client.post("/cart/add", data=form, follow_redirects=False)


def cart_lines(client: TestClient, headers: dict[str, bytes] | None = None) -> dict[str, int]:
    page = assert_html(client.get("/cart", headers=headers))
    return {
        row.attrs["data-product-id"]: int(row.find("td", **{"class": "qty"}).text)
        for row in page.find_all("tr", **{"class": "cart-line"})
    }


def products_listed(page: Element) -> list[Element]:
    return page.find("ol", data_edge_slot="category-products").children


def text_of(page: Element, tag: str, css_class: str) -> str:
    return page.find(tag, **{"class": css_class}).text


# --- catalogue --------------------------------------------------------------------


def test_catalogue_has_four_categories_of_twelve_products() -> None:
    assert len(CATEGORIES) == 4 and len(PRODUCTS) == 48
    assert all(isinstance(c, Category) for c in CATEGORIES)
    assert all(isinstance(p, Product) for p in PRODUCTS)
    assert [len(products_in(c.slug)) for c in CATEGORIES] == [12, 12, 12, 12]
    assert all(re.fullmatch(r"p\d{4}", p.id) for p in PRODUCTS)
    assert len({p.slug for p in PRODUCTS}) == 48
    assert all(p.price > 0 and p.price % 10 == 0 for p in PRODUCTS)


@pytest.mark.parametrize(
    ("cents", "shown"),
    [(8990, "€ 89,90"), (5, "€ 0,05"), (100, "€ 1,00"), (124990, "€ 1.249,90"), (0, "€ 0,00")],
)
def test_prices_are_shown_in_italian_format(cents: int, shown: str) -> None:
    assert format_euro(cents) == shown


# --- catalogue pages --------------------------------------------------------------


def test_home_page_has_the_slots_the_sidecar_fills(client: TestClient) -> None:
    response = client.get("/")
    page = assert_html(response)
    assert page_type(page) == "home"
    assert response.headers["cache-control"] == "public, max-age=60"
    assert 20_000 <= len(response.content) <= 60_000

    html = response.text
    assert '<section class="hero" data-edge-slot="home-hero">' in html
    assert '<section data-edge-slot="home-featured">' in html
    assert '<aside data-edge-slot="profile-form"></aside>' in html
    hero = page.find("section", data_edge_slot="home-hero")
    assert hero.find_all("h1") and hero.find_all("a")
    featured = page.find("section", data_edge_slot="home-featured")
    blocks = featured.find_all("article", **{"class": "block"})
    assert len(blocks) == 3
    assert all(block.find_all("h2") and block.find_all("a") for block in blocks)

    # A few products from every category, with their prices and links.
    shown = page.find_all("li", **{"class": "product"})
    assert {p.attrs["data-category"] for p in shown} == {c.slug for c in CATEGORIES}
    first = PRODUCTS[0]
    assert f'href="/p/{first.slug}"' in html and format_euro(first.price) in html
    assert cart_count(page) == 0
    assert page.find("a", **{"class": "account-link"}).attrs["href"] == "/login"


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.slug)
def test_category_page_lists_twelve_products_with_data_attributes(
    client: TestClient, category: Category
) -> None:
    response = client.get(f"/c/{category.slug}")
    page = assert_html(response)
    assert page_type(page) == "category"
    assert response.headers["cache-control"] == "public, max-age=60"
    assert 20_000 <= len(response.content) <= 60_000
    assert page.find("h1").text == category.name

    assert '<ol class="products" data-edge-slot="category-products">' in response.text
    listing = page.find("ol", data_edge_slot="category-products")
    items = listing.children
    assert len(items) == 12
    assert [i.attrs["data-product-id"] for i in items] == [p.id for p in products_in(category.slug)]
    for item in items:
        product = PRODUCTS_BY_ID[item.attrs["data-product-id"]]
        assert item.tag == "li"
        assert item.attrs == {
            "class": "product",
            "data-product-id": product.id,
            "data-category": category.slug,
            "data-brand": product.brand,
            "data-price": f"{product.price / 100:.2f}",
        }
        first_link = item.children[0]
        assert (first_link.tag, first_link.attrs) == ("a", {"href": f"/p/{product.slug}"})
        assert format_euro(product.price) in item.text
        assert item.find("input", name="product_id").attrs["value"] == product.id


def test_category_item_markup_is_exact(client: TestClient) -> None:
    html = client.get("/c/casa-cucina").text
    assert (
        '<li class="product" data-product-id="p1040" data-category="casa-cucina" '
        'data-brand="Lino &amp; Co" data-price="69.00"><a href="/p/tovaglia-mezzadro">'
    ) in html


def test_category_can_be_sorted_by_price(client: TestClient) -> None:
    page = assert_html(client.get("/c/scarpe-uomo?ordina=prezzo-asc"))
    prices = [float(li.attrs["data-price"]) for li in products_listed(page)]
    assert prices == sorted(prices) and len(prices) == 12
    page = assert_html(client.get("/c/scarpe-uomo?ordina=prezzo-desc"))
    prices = [float(li.attrs["data-price"]) for li in products_listed(page)]
    assert prices == sorted(prices, reverse=True)
    # An unknown order falls back to the shop's own order instead of failing.
    page = assert_html(client.get("/c/scarpe-uomo?ordina=%3Cx%3E"))
    ids = [li.attrs["data-product-id"] for li in products_listed(page)]
    assert ids == [p.id for p in products_in("scarpe-uomo")]


def test_product_page(client: TestClient) -> None:
    product = PRODUCTS_BY_ID["p1025"]
    response = client.get(f"/p/{product.slug}")
    page = assert_html(response)
    assert page_type(page) == "product"
    assert response.headers["cache-control"] == "public, max-age=60"
    assert f'<main data-page-type="product" data-product-id="{product.id}">' in response.text
    main = page.find("main", data_product_id=product.id)
    assert main.find("h1").text == product.name
    assert format_euro(product.price) == "€ 249,00"
    assert "€ 249,00" in main.find("p", **{"class": "product-detail-price"}).text
    assert product.description in main.text
    form = main.find("form", **{"class": "add-to-cart"})
    assert (form.attrs["action"], form.attrs["method"]) == ("/cart/add", "post")
    assert form.find("input", name="product_id").attrs["value"] == product.id
    assert form.find("input", name="qty").attrs["value"] == "1"
    assert '<aside data-edge-slot="profile-form"></aside>' in response.text
    related = main.find_all("li", **{"class": "product"})
    assert len(related) == 4
    assert product.id not in {li.attrs["data-product-id"] for li in related}
    assert {li.attrs["data-category"] for li in related} == {product.category}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Valdarno", ["p1025", "p1028", "p1029", "p1030"]),  # a brand
        ("moka", ["p1037"]),  # a word of the name
        ("decollete", ["p1001"]),  # without the accents
        ("SNEAKER nordpass", ["p1016", "p1021"]),  # every word must match
        ("lino & co", ["p1040", "p1047"]),
    ],
)
def test_search_finds_products_by_brand_and_name(
    client: TestClient, query: str, expected: list[str]
) -> None:
    response = client.get("/search", params={"q": query})
    page = assert_html(response)
    assert page_type(page) == "search"
    found = [li.attrs["data-product-id"] for li in page.find_all("li", **{"class": "product"})]
    assert sorted(found) == expected
    assert page.find("input", id="q").attrs["value"] == query


def test_search_without_results_or_query(client: TestClient) -> None:
    for query in ("", "zzzz", "a"):
        page = assert_html(client.get("/search", params={"q": query}))
        assert page.find_all("li", **{"class": "product"}) == []
        assert len(page.find("ul", **{"class": "category-tiles"}).children) == 4
    assert search_products("  ") == ()


def test_search_query_is_escaped(client: TestClient) -> None:
    response = client.get("/search", params={"q": '<script>alert("x")</script>'})
    assert "<script>" not in response.text
    assert "&lt;script&gt;" in response.text
    assert_html(response)


# --- cart -----------------------------------------------------------------------------


def test_add_to_cart_shows_the_line_and_the_total(client: TestClient) -> None:
    response = add_to_cart(client, "p1001", "2")
    assert response.status_code == 303
    assert response.headers["location"] == "/cart"
    assert response.headers["cache-control"] == "private, no-store"
    assert "cart=p1001:2" in response.headers["set-cookie"]
    add_to_cart(client, "p1041")  # qty defaults to 1

    response = client.get("/cart")
    page = assert_html(response)
    assert page_type(page) == "cart"
    assert response.headers["cache-control"] == "private, no-store"
    assert cart_lines(client) == {"p1001": 2, "p1041": 1}
    assert cart_count(page) == 3
    # 2 × 129,90 + 24,90, above the free-shipping threshold
    assert text_of(page, "dd", "subtotal") == "€ 284,70"
    assert text_of(page, "dd", "shipping") == "Gratuita"
    assert text_of(page, "dd", "cart-total") == "€ 284,70"
    row = page.find("tr", data_product_id="p1001")
    assert "Décolleté Lucia" in row.text and "€ 259,80" in row.text


def test_small_cart_pays_shipping(client: TestClient) -> None:
    add_to_cart(client, "p1041")
    page = assert_html(client.get("/cart"))
    assert text_of(page, "dd", "subtotal") == "€ 24,90"
    assert text_of(page, "dd", "shipping") == "€ 4,90"
    assert text_of(page, "dd", "cart-total") == "€ 29,80"


def test_adding_again_accumulates_and_bad_quantities_are_tamed(client: TestClient) -> None:
    add_to_cart(client, "p1002", "2")
    add_to_cart(client, "p1002", "3")
    add_to_cart(client, "p1003", "many")  # not a number: one
    add_to_cart(client, "p1004", "-4")  # at least one
    add_to_cart(client, "p1005", "1000")  # at most 99
    assert cart_lines(client) == {"p1002": 5, "p1003": 1, "p1004": 1, "p1005": 99}


def test_adding_an_unknown_product_is_a_404_and_leaves_the_cart(client: TestClient) -> None:
    add_to_cart(client, "p1001")
    assert_html(add_to_cart(client, "p9999"), 404)
    assert cart_lines(client) == {"p1001": 1}


def test_remove_from_cart(client: TestClient) -> None:
    add_to_cart(client, "p1001")
    add_to_cart(client, "p1013", "2")
    response = client.post("/cart/remove", data={"product_id": "p1001"}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/cart")
    assert cart_lines(client) == {"p1013": 2}
    client.post("/cart/remove", data={"product_id": "p1013"})
    page = assert_html(client.get("/cart"))
    assert page.find_all("tr", **{"class": "cart-line"}) == []
    assert cart_count(page) == 0
    assert "cart" not in client.cookies


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("garbage", {}),
        ("p1001:abc,p9999:2,:,,p1002:-1,p1003", {}),
        ("p1001:2,p1001:3", {"p1001": 5}),
        ("p1001:1,<script>:1, p1002:4 ", {"p1001": 1, "p1002": 4}),
        ("p1001:99999999999999999999", {}),
        ("p1001:0", {}),
        ("p1001:60,p1001:60", {"p1001": 99}),
        ('"\\054\\054"', {}),
        ("p1001:\u00b2", {}),  # "²" is a digit to str.isdigit(), not to int()
    ],
)
def test_garbage_cart_cookie_is_ignored(
    client: TestClient, cookie: str, expected: dict[str, int]
) -> None:
    assert read_cart(cookie) == expected
    # Sent as raw bytes, the way a browser sends whatever it holds.
    raw = {"cookie": f"cart={cookie}".encode()}
    assert cart_lines(client, raw) == expected
    for url in ("/", "/checkout", "/p/sneaker-aria"):
        page = assert_html(client.get(url, headers=raw))
        assert cart_count(page) == sum(expected.values())


# --- checkout and orders ------------------------------------------------------------------


def test_checkout_creates_an_order_and_clears_the_cart(client: TestClient) -> None:
    add_to_cart(client, "p1013")
    add_to_cart(client, "p1037", "2")
    form_page = client.get("/checkout")
    page = assert_html(form_page)
    assert page_type(page) == "checkout"
    assert form_page.headers["cache-control"] == "private, no-store"
    form = page.find("form", **{"class": "checkout-form"})
    assert {i.attrs["name"] for i in form.find_all("input")} == {"name", "email"}
    assert form.find("textarea", name="address").text == ""
    assert all(i.attrs["value"] == "" for i in form.find_all("input"))

    response = client.post(
        "/checkout",
        data={"name": "Anna Rossi", "email": "anna@example.it", "address": "Via Roma 1\nFirenze"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    order_url = response.headers["location"]
    assert re.fullmatch(r"/order/A-1\d{5}", order_url)
    assert "cart" not in client.cookies

    response = client.get(order_url)
    page = assert_html(response)
    assert page_type(page) == "order"
    assert response.headers["cache-control"] == "private, no-store"
    assert text_of(page, "span", "order-id") == order_url.removeprefix("/order/")
    # 189,00 + 2 × 34,90
    assert text_of(page, "dd", "order-total") == "€ 258,80"
    assert "Anna Rossi" in page.text and "anna@example.it" in page.text
    assert cart_lines(client) == {}


def test_order_numbers_increase_and_orders_belong_to_one_app() -> None:
    first, second = TestClient(create_app()), TestClient(create_app())
    order_urls = []
    for _ in range(2):
        add_to_cart(first, "p1001")
        response = first.post(
            "/checkout",
            data={"name": "Luca", "email": "luca@example.it", "address": "Via Po 3"},
            follow_redirects=False,
        )
        order_urls.append(response.headers["location"])
    assert order_urls[0] < order_urls[1]
    assert first.get(order_urls[0]).status_code == 200
    assert_html(second.get(order_urls[0]), 404)


def test_checkout_with_missing_fields_keeps_the_cart(client: TestClient) -> None:
    add_to_cart(client, "p1001")
    response = client.post("/checkout", data={"name": "", "email": "not-an-email", "address": " "})
    page = assert_html(response, 400)
    assert len(page.find("div", **{"class": "form-errors"}).find_all("li")) == 3
    assert page.find("input", name="email").attrs["value"] == "not-an-email"
    assert cart_lines(client) == {"p1001": 1}


def test_checkout_with_an_empty_cart(client: TestClient) -> None:
    page = assert_html(client.get("/checkout"))
    assert page.find_all("form", **{"class": "checkout-form"}) == []
    response = client.post(
        "/checkout",
        data={"name": "Anna", "email": "anna@example.it", "address": "Via Roma 1"},
        follow_redirects=False,
    )
    assert (response.status_code, response.headers["location"]) == (303, "/cart")


def test_unknown_order_is_a_404(client: TestClient) -> None:
    assert_html(client.get("/order/A-999999"), 404)


# --- login and account ------------------------------------------------------------------


def test_login_sets_the_cookie_and_account_shows_the_email_and_orders(
    client: TestClient,
) -> None:
    assert page_type(assert_html(client.get("/login"))) == "login"
    response = client.get("/account", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/login")

    response = client.post(
        "/login", data={"email": "giulia@example.it", "password": "x"}, follow_redirects=False
    )
    assert (response.status_code, response.headers["location"]) == (303, "/account")
    assert "demo_customer=" in response.headers["set-cookie"]
    assert "HttpOnly" in response.headers["set-cookie"]
    assert client.cookies["demo_customer"].strip('"') == "giulia@example.it"

    response = client.get("/account")
    page = assert_html(response)
    assert page_type(page) == "account"
    assert response.headers["cache-control"] == "private, no-store"
    assert text_of(page, "strong", "customer-email") == "giulia@example.it"
    assert "Non hai ancora effettuato ordini" in page.text
    assert "giulia@example.it" in page.find("a", **{"class": "account-link"}).text

    add_to_cart(client, "p1046")
    order_url = client.post(
        "/checkout",
        data={"name": "Giulia", "email": "Giulia@Example.it", "address": "Via Po 3, Torino"},
        follow_redirects=False,
    ).headers["location"]
    page = assert_html(client.get("/account"))
    links = [a.attrs["href"] for a in page.find("table").find_all("a")]
    assert links == [order_url]
    assert "€ 129,00" in page.find("table").text

    response = client.post("/logout", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/")
    assert "demo_customer" not in client.cookies
    assert client.get("/account", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    "form",
    [
        {"email": "giulia@example.it", "password": ""},
        {"email": "giulia@example.it"},
        {"email": "", "password": "secret"},
        {"email": "not an email", "password": "secret"},
    ],
)
def test_login_needs_an_email_and_a_password(client: TestClient, form: dict[str, str]) -> None:
    response = client.post("/login", data=form, follow_redirects=False)
    page = assert_html(response, 400)
    assert page.find_all("div", **{"class": "form-errors"})
    assert "set-cookie" not in response.headers


def test_a_forged_customer_cookie_is_not_a_login(client: TestClient) -> None:
    client.cookies.set("demo_customer", "<b>nobody</b>")
    assert client.get("/account", follow_redirects=False).status_code == 303


# --- errors, robots, static ------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/p/no-such-product", "/c/no-such-category", "/no/such/page", "/static/nope.css"]
)
def test_unknown_pages_get_the_shop_404(client: TestClient, url: str) -> None:
    response = client.get(url)
    page = assert_html(response, 404)
    assert page_type(page) == "error"
    assert page.find("h1").text == "Pagina non trovata"
    assert page.find("a", **{"class": "logo"}).attrs["href"] == "/"
    assert len(page.find("nav", **{"class": "category-nav"}).find_all("a")) == 4


def test_wrong_method_is_a_shop_page_with_allow(client: TestClient) -> None:
    response = client.get("/cart/add")
    assert_html(response, 405)
    assert "POST" in response.headers["allow"]


def test_robots_txt(client: TestClient) -> None:
    response = client.get("/robots.txt")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "User-agent: *" in response.text
    assert "Disallow: /cart" in response.text and "Disallow: /checkout" in response.text


def test_stylesheet_is_linked_with_a_version_and_cached_long(client: TestClient) -> None:
    page = assert_html(client.get("/"))
    href = page.find("link", rel="stylesheet").attrs["href"]
    assert re.fullmatch(r"/static/shop\.css\?v=[0-9a-f]{10}", href)
    response = client.get(href)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert "max-age=31536000" in response.headers["cache-control"]
    assert ".edge-banner" in response.text
    assert "@import" not in response.text and "url(http" not in response.text
    assert client.get("/static/favicon.svg").status_code == 200


def test_every_page_type_renders(client: TestClient) -> None:
    add_to_cart(client, "p1001")
    client.post("/login", data={"email": "a@example.it", "password": "x"})
    pages: dict[str, Callable[[], httpx.Response]] = {
        "home": lambda: client.get("/"),
        "category": lambda: client.get("/c/borse-accessori"),
        "product": lambda: client.get("/p/moka-classica-6-tazze"),
        "search": lambda: client.get("/search?q=moka"),
        "cart": lambda: client.get("/cart"),
        "checkout": lambda: client.get("/checkout"),
        "login": lambda: client.get("/login"),
        "account": lambda: client.get("/account"),
        "order": lambda: client.post(
            "/checkout", data={"name": "A", "email": "a@example.it", "address": "Via 1"}
        ),
    }
    for expected, fetch in pages.items():
        page = assert_html(fetch())
        assert page_type(page) == expected

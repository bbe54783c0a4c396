"""`edge map`: on the demo shop and on pages shaped like a real theme (WooCommerce's
Storefront), it names the page type, the slots that match, the list items with their
ids and facts, the product facts and the cart forms, and says what is missing."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from edge.cli import main
from edge.demo.catalog import PRODUCTS, PRODUCTS_BY_ID, write_feed
from edge.demo.shop import serve_argv
from edge.fitting import _link_pattern, fit_page
from edge.map_cli import USER_AGENT
from edge.request import is_crawler
from edge.rules import compile_text
from tests.conftest import EDGE, ROOT, free_port, serving, start_edge, wait_listening

# --- a Storefront-shaped theme (WooCommerce's default theme), as its templates render ----

STOREFRONT_PRODUCTS = [("15", "hoodie", "Hoodie", "45.00"), ("16", "beanie", "Beanie", "18.00")]
STOREFRONT_PRODUCTS += [("17", "cap", "Cap", "16.00"), ("18", "t-shirt", "T-Shirt", "18.00")]


def _storefront_page(title: str, main: str, head: str = "") -> str:
    return f"""<!doctype html>
<html lang="en-US"><head><meta charset="UTF-8"><title>{title} – Shop</title>{head}</head>
<body class="woocommerce-page">
<div id="page" class="hfeed site">
<header id="masthead" class="site-header" role="banner"><div class="col-full">
<div class="site-branding"><a href="/" class="site-title">Shop</a></div>
<form role="search" method="get" class="woocommerce-product-search" action="/">
<input type="search" name="s"><input type="hidden" name="post_type" value="product"></form>
<div class="site-header-cart"><a class="cart-contents" href="/cart/">$0.00</a></div>
</div></header>
<div id="content" class="site-content" tabindex="-1"><div class="col-full">
<div id="primary" class="content-area"><main id="main" class="site-main" role="main">
{main}
</main></div></div></div></div></body></html>"""


def _storefront_card(pid: str, slug: str, name: str, price: str) -> str:
    return f"""<li class="product type-product post-{pid} status-publish instock product_cat-clothing has-post-thumbnail purchasable product-type-simple">
	<a href="/product/{slug}/" class="woocommerce-LoopProduct-link woocommerce-loop-product__link"><img width="324" height="324" src="/wp-content/uploads/{slug}.jpg" class="attachment-woocommerce_thumbnail size-woocommerce_thumbnail" alt="" loading="lazy"><h2 class="woocommerce-loop-product__title">{name}</h2>
	<span class="price"><span class="woocommerce-Price-amount amount"><bdi><span class="woocommerce-Price-currencySymbol">&#36;</span>{price}</bdi></span></span>
</a><a href="?add-to-cart={pid}" data-quantity="1" class="button product_type_simple add_to_cart_button ajax_add_to_cart" data-product_id="{pid}" data-product_sku="woo-{slug}" aria-label="Add &ldquo;{name}&rdquo; to your cart" rel="nofollow">Add to cart</a></li>"""


STOREFRONT_CATEGORY = _storefront_page(
    "Clothing",
    """<nav class="woocommerce-breadcrumb"><a href="/">Home</a>&nbsp;&#47;&nbsp;Clothing</nav>
<header class="woocommerce-products-header"><h1 class="woocommerce-products-header__title page-title">Clothing</h1></header>
<div class="storefront-sorting"><p class="woocommerce-result-count">Showing all 4 results</p></div>
<ul class="products columns-3">
"""
    + "\n".join(_storefront_card(*p) for p in STOREFRONT_PRODUCTS)
    + "\n</ul>",
)

STOREFRONT_HOME = _storefront_page(
    "Home",
    """<div id="post-7" class="post-7 page type-page status-publish hentry"><div class="entry-content"><p>Welcome</p></div></div>
<section class="storefront-product-section storefront-recent-products" aria-label="Recent Products">
<h2 class="section-title">New In</h2><div class="woocommerce columns-4"><ul class="products columns-4">
"""
    + "\n".join(_storefront_card(*p) for p in STOREFRONT_PRODUCTS)
    + "\n</ul></div></section>",
)

_JSON_LD = {
    "@context": "https://schema.org/",
    "@graph": [
        {"@type": "BreadcrumbList", "itemListElement": [{"@type": "ListItem", "position": 1}]},
        {
            "@type": "Product",
            "@id": "http://shop.example/product/hoodie/#product",
            "name": "Hoodie",
            "sku": "woo-hoodie",
            "offers": [
                {
                    "@type": "Offer",
                    "price": "45.00",
                    "priceCurrency": "USD",
                    "availability": "http://schema.org/InStock",
                }
            ],
        },
    ],
}

STOREFRONT_PRODUCT = _storefront_page(
    "Hoodie",
    """<div id="product-15" class="product type-product post-15 instock">
<div class="summary entry-summary"><h1 class="product_title entry-title">Hoodie</h1>
<p class="price"><span class="woocommerce-Price-amount amount"><bdi>$45.00</bdi></span></p>
<form class="cart" action="http://shop.example/product/hoodie/" method="post" enctype="multipart/form-data">
<div class="quantity"><label class="screen-reader-text" for="quantity_1">Hoodie quantity</label>
<input type="number" id="quantity_1" class="input-text qty text" name="quantity" value="1" min="1" step="1"></div>
<button type="submit" name="add-to-cart" value="15" class="single_add_to_cart_button button alt">Add to cart</button>
</form></div></div>""",
    head=f'<script type="application/ld+json">{json.dumps(_JSON_LD)}</script>',
)

STOREFRONT_RULES = """
[slots.home-hero]
select = "[data-edge-slot=home-hero]"
pages = ["home"]

[slots.category-products]
select = "ul.products"
pages = ["category"]
{item_link}

[[placements]]
slot = "category-products"
sort = "price desc"

[page_types]
home = "/"
category = "/product-category/{{category}}/"
product = "/product/{{product}}/"
cart = "/cart/"
"""

STOREFRONT_PRODUCT_WITHOUT_FACTS = STOREFRONT_PRODUCT.replace(
    STOREFRONT_PRODUCT[
        STOREFRONT_PRODUCT.index("<script") : STOREFRONT_PRODUCT.index("</script>") + 9
    ],
    "",
)

PAGES = {
    "/": ("200 OK", "text/html; charset=UTF-8", STOREFRONT_HOME),
    "/product-category/clothing/": ("200 OK", "text/html; charset=UTF-8", STOREFRONT_CATEGORY),
    "/product/hoodie/": ("200 OK", "text/html; charset=UTF-8", STOREFRONT_PRODUCT),
    "/product/beanie/": ("200 OK", "text/html", STOREFRONT_PRODUCT_WITHOUT_FACTS),
    "/wp-json/": ("200 OK", "application/json", "{}"),
}


class _Theme(BaseHTTPRequestHandler):
    """A static shop: the pages above, a redirect to the category, 404 for the rest."""

    def do_GET(self) -> None:
        if self.path == "/shop/clothing":
            self.send_response(301)
            self.send_header("Location", "/product-category/clothing/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, kind, body = PAGES.get(self.path, ("404 Not Found", "text/html", "<h1>404</h1>"))
        data = body.encode()
        code = int(status.split()[0])
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def theme() -> Iterator[str]:
    with serving(_Theme) as base:
        yield base


@pytest.fixture(scope="module")
def demo_shop() -> Iterator[str]:
    """The demo shop alone (beside the sidecar, as `edge map` may read it)."""
    port = free_port()
    proc = subprocess.Popen(serve_argv(port), cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def edge_map(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``edge map ARGS`` run in this process (the command's own entry point, its output
    captured), from *cwd* and without EDGE_* settings; ``edge_map_process`` runs the
    installed command."""
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("EDGE_")}
    here = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["map", *args])
    finally:
        os.chdir(here)
        os.environ.update(saved)
    return subprocess.CompletedProcess(["edge", "map", *args], code, out.getvalue(), err.getvalue())


def edge_map_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return subprocess.run(
        [*EDGE, "map", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def _rules_dir(tmp_path: Path, item_link: str = "") -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    link = f"item_link = '{item_link}'" if item_link else ""
    (rules / "theme.toml").write_text(STOREFRONT_RULES.format(item_link=link), encoding="utf-8")
    return rules


# --- the demo shop -------------------------------------------------------------------------


def test_map_on_the_demo_names_slots_items_and_facts(demo_shop: str, tmp_path: Path) -> None:
    feed = write_feed(str(tmp_path / "catalog.csv"))
    product = PRODUCTS[0]
    done = edge_map_process(
        "--rules",
        str(ROOT / "rules"),
        "--catalog",
        str(feed),
        "--json",
        f"{demo_shop}/",
        f"{demo_shop}/c/scarpe-donna",
        f"{demo_shop}/p/{product.slug}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pages = json.loads(done.stdout)["pages"]
    assert [p["complete"] for p in pages] == [True, True, True]
    home, category, page = (p["fit"] for p in pages)

    assert home["page_type"] == "home"
    matched = {s["name"]: s["elements"] for s in home["slots"] if s["on_page"]}
    assert matched == {"home-hero": 1, "top-banner": 1, "home-shelves": 1, "profile-form": 1}
    shelves = next(s for s in home["slots"] if s["name"] == "home-shelves")
    assert [i["id"] for i in shelves["items"]][:2] == ["scarpe-donna", "scarpe-uomo"]

    assert category["page_type"] == "category"
    assert category["params"] == {"category": "scarpe-donna"}
    products = next(s for s in category["slots"] if s["name"] == "category-products")
    assert products["elements"] == 1 and products["item_count"] == 12
    for item in products["items"]:
        known = PRODUCTS_BY_ID[item["id"]]
        assert (item["category"], item["brand"], item["name"]) == (
            known.category,
            known.brand,
            known.name,
        )
        assert item["price"] == pytest.approx(float(known.price_euro))
        assert item["link"] == f"/p/{known.slug}"
    assert {s["name"] for s in category["slots"] if s["on_page"]} == {
        "top-banner",
        "category-products",
    }
    assert category["cart_forms"][0]["recognised"] == "add"
    assert category["cart_forms"][0]["count"] == 12
    assert category["missing"] == []

    assert page["page_type"] == "product"
    assert page["product"]["id"] == product.id
    assert page["product"]["price"] == pytest.approx(float(product.price_euro))
    assert page["product"]["name"] == product.name


def test_map_reads_the_demo_as_a_merchant_sees_it(demo_shop: str, tmp_path: Path) -> None:
    done = edge_map(
        "--rules", str(ROOT / "rules"), "--base", demo_shop, "/c/scarpe-donna", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "page type   category  (category=scarpe-donna)" in text
    assert "ok  category-products  ol.products" in text
    assert "1 element, 12 items" in text
    assert "not for category pages: home-hero, home-shelves, profile-form" in text
    first = PRODUCTS_BY_ID["p1001"]
    line = next(line for line in text.splitlines() if line.strip().startswith("p1001"))
    assert first.name in line and first.brand in line and f"/p/{first.slug}" in line
    assert "POST /cart/add" in text and "-> add" in text
    assert "missing     nothing" in text


def test_map_through_the_sidecar_reads_the_shop_s_own_page(demo_shop: str, tmp_path: Path) -> None:
    # the sidecar serves a crawler the original page and records nothing: edge map is one
    assert is_crawler(USER_AGENT.encode())
    sidecar = start_edge(demo_shop, "--rules", str(ROOT / "rules"))
    try:
        through = edge_map(
            "--rules",
            str(ROOT / "rules"),
            "--json",
            f"http://127.0.0.1:{sidecar.port}/c/scarpe-donna",
            cwd=tmp_path,
        )
    finally:
        sidecar.stop()
    beside = edge_map(
        "--rules", str(ROOT / "rules"), "--json", f"{demo_shop}/c/scarpe-donna", cwd=tmp_path
    )
    assert through.returncode == beside.returncode == 0, through.stdout
    [seen_through] = json.loads(through.stdout)["pages"]
    [seen_beside] = json.loads(beside.stdout)["pages"]
    assert seen_through["fit"] == seen_beside["fit"]


def test_a_product_page_without_facts_is_missing_them(theme: str, tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path, "/product/([^/?#]+)")
    done = edge_map("--rules", str(rules), "--json", f"{theme}/product/beanie/", cwd=tmp_path)
    assert done.returncode == 1
    fit = json.loads(done.stdout)["pages"][0]["fit"]
    assert fit["page_type"] == "product" and fit["product"] is None
    missing = next(m for m in fit["missing"] if "product facts" in m["what"])
    assert missing["what"].startswith("product page without product facts")
    assert missing["suggestion"].startswith('map them by selector in [products] (name = "h1"')
    assert 'price = "p.price"' in missing["suggestion"]


# --- a Storefront-shaped theme ----------------------------------------------------------------


def test_a_list_without_ids_gets_an_item_link_suggestion(theme: str, tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path)
    done = edge_map(
        "--rules", str(rules), "--json", f"{theme}/product-category/clothing/", cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    fit = json.loads(done.stdout)["pages"][0]["fit"]
    assert fit["page_type"] == "category"
    products = next(s for s in fit["slots"] if s["name"] == "category-products")
    assert products["elements"] == 1 and products["item_count"] == 4
    assert [i["name"] for i in products["items"]] == ["Hoodie", "Beanie", "Cap", "T-Shirt"]
    assert all(i["id"] == "" for i in products["items"])
    [missing] = fit["missing"]
    assert missing["slot"] == "category-products"
    assert missing["what"] == "slot `category-products`: 4 of 4 items have no product id"
    assert "item_link = '/product/([^/?#]+)'" in missing["suggestion"]
    assert "ids for 4 of 4 items: hoodie, beanie, cap" in missing["suggestion"]

    # the suggestion taken: every item has its id, nothing is missing
    rules = _rules_dir(tmp_path, "/product/([^/?#]+)")
    done = edge_map(
        "--rules", str(rules), "--json", f"{theme}/product-category/clothing/", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout
    fit = json.loads(done.stdout)["pages"][0]["fit"]
    products = next(s for s in fit["slots"] if s["name"] == "category-products")
    assert [i["id"] for i in products["items"]] == ["hoodie", "beanie", "cap", "t-shirt"]


def test_a_slot_that_matches_nothing_is_missing_with_candidates(theme: str, tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path, "/product/([^/?#]+)")
    done = edge_map("--rules", str(rules), "--base", theme, "/", cwd=tmp_path)
    assert done.returncode == 1
    text = done.stdout
    assert "!!  home-hero" in text and "0 elements" in text
    assert "- slot `home-hero` ([data-edge-slot=home-hero]) matches nothing" in text
    hint = next(line for line in text.splitlines() if "may be the place" in line)
    assert "section.storefront-recent-products (1)" in hint
    assert "ul.products (1)" in hint
    assert "`data-edge-slot` is the demo shop's own markup" in hint


def test_product_facts_and_cart_form_of_a_theme(theme: str, tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path, "/product/([^/?#]+)")
    done = edge_map("--rules", str(rules), "--json", f"{theme}/product/hoodie/", cwd=tmp_path)
    assert done.returncode == 1
    fit = json.loads(done.stdout)["pages"][0]["fit"]
    assert fit["product"] == {
        "source": "JSON-LD",
        "id": "woo-hoodie",
        "name": "Hoodie",
        "price": 45.0,
        "currency": "USD",
        "brand": "",
        "category": "",
        "availability": "in stock",
    }
    [form] = fit["cart_forms"]
    assert (form["method"], form["action"], form["recognised"]) == ("POST", "/product/hoodie/", "")
    assert form["fields"] == {"quantity": "", "add-to-cart": "15"}
    [missing] = fit["missing"]
    assert "cart form POST /product/hoodie/" in missing["what"]
    # the product is the form's field; the page's own capture (the slug) is a part
    # that changes
    assert missing["suggestion"].splitlines() == [
        "[[cart_actions]]",
        'action = "add"',
        'path = "/product/*/"',
        'product = "add-to-cart"',
        'quantity = "quantity"',
    ]

    # the suggestion, written into the theme's rule file, recognises the form
    theme_rules = (rules / "theme.toml").read_text() + "\n" + missing["suggestion"] + "\n"
    again = fit_page("/product/hoodie/", STOREFRONT_PRODUCT, compile_text(theme_rules))
    assert again.cart_forms[0].recognised == "add" and again.complete
    assert again.cart_forms[0].product_field == "add-to-cart"


def test_redirects_are_followed_and_shown(theme: str, tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path, "/product/([^/?#]+)")
    done = edge_map("--rules", str(rules), "--json", f"{theme}/shop/clothing", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    [page] = json.loads(done.stdout)["pages"]
    assert page["redirects"] == [
        {"status": 301, "from": f"{theme}/shop/clothing", "to": "/product-category/clothing/"}
    ]
    assert page["url"] == f"{theme}/product-category/clothing/"
    assert page["fit"]["page_type"] == "category"
    text = edge_map("--rules", str(rules), f"{theme}/shop/clothing", cwd=tmp_path).stdout
    assert f"redirected  301 {theme}/shop/clothing -> /product-category/clothing/" in text


def test_pages_that_cannot_be_read_are_errors(theme: str, tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path)
    closed = free_port()
    done = edge_map(
        "--rules",
        str(rules),
        f"{theme}/nowhere/",
        f"{theme}/wp-json/",
        f"http://127.0.0.1:{closed}/",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    errors = [line.strip() for line in done.stdout.splitlines() if "error" in line]
    assert errors == [
        "error       HTTP 404 Not Found",
        "error       not HTML (application/json)",
        f"error       connection refused by 127.0.0.1:{closed}: is the shop (or the sidecar) "
        "running there?",
    ]
    pages = json.loads(
        edge_map("--rules", str(rules), "--json", f"{theme}/nowhere/", cwd=tmp_path).stdout
    )["pages"]
    assert pages[0]["status"] == 404 and pages[0]["fit"] is None


def test_bad_rules_or_no_base_are_errors(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "theme.toml").write_text('[slots.hero]\nselect = "#hero"\nitem_link = "("\n')
    done = edge_map("--rules", str(rules), "http://127.0.0.1:1/", cwd=tmp_path)
    assert done.returncode == 2
    assert "theme.toml:3" in done.stderr and "edge check" in done.stderr
    good = _rules_dir(tmp_path / "other")
    done = edge_map("--rules", str(good), "/c/x", cwd=tmp_path)
    assert done.returncode == 2
    assert "/c/x: not a full URL" in done.stderr and "--base" in done.stderr


# --- the pure pieces -----------------------------------------------------------------------


def test_link_patterns_take_the_segment_that_differs() -> None:
    assert _link_pattern(["/product/hoodie/", "/product/cap/"]) == "/product/([^/?#]+)"
    # django-oscar's product URLs end in the product's number: that is the id
    pattern = _link_pattern(["/catalogue/hoodie_12/", "/catalogue/cap_7/"])
    assert pattern == r"/catalogue/[^/?#]*?_(\d+)(?:[/?#]|$)"
    assert _link_pattern(["/p/one"]) == "/p/([^/?#]+)"
    assert _link_pattern([]) is None


def _oscar_card(pk: int, slug: str, title: str) -> str:
    """A product of django-oscar's default templates (catalogue/partials/product.html
    with add_to_basket_form_compact.html), as a category page lists it."""
    url = f"/catalogue/{slug}_{pk}/"
    return f"""<li class="col-sm-6 col-md-4 col-lg-3"><article class="product_pod">
<div class="image_container w-100"><a href="{url}"><img src="/media/cache/{pk}.jpg" alt="{title}" class="img-thumbnail w-auto mx-auto my-0"></a></div>
<h3 class="mt-3"><a href="{url}" title="{title}">{title}</a></h3>
<div class="product_price w-100"><p class="price_color">£9.99</p><p class="instock availability">In stock</p>
<form action="/basket/add/{pk}/" method="post"><input type="hidden" name="csrfmiddlewaretoken" value="t0k3n">
<p><input type="hidden" name="quantity" value="1" id="id_quantity"></p>
<button type="submit" class="btn btn-primary btn-block" data-loading-text="Adding...">Add to basket</button></form>
</div></article></li>"""


def test_an_oscar_shaped_category_page() -> None:
    ruleset = compile_text(
        '[slots.category-products]\nselect = "ol.row"\nitem_id = "data-id"\n'
        'pages = ["category"]\n[page_types]\ncategory = "/catalogue/category/{category}/"\n'
    )
    page = f"""<div class="container-fluid page"><div class="page_inner"><section>
<ol class="row list-unstyled ml-0 pl-0">{_oscar_card(209, "the-shellcoders-handbook", "The shellcoder's handbook")}
{_oscar_card(12, "hackers", "Hackers")}</ol></section></div></div>"""
    fit = fit_page("/catalogue/category/books_2/", page, ruleset)
    [slot] = fit.slots
    assert (slot.elements, slot.item_count) == (1, 2)
    assert [i.name for i in slot.items] == ["The shellcoder's handbook", "Hackers"]
    ids, cart = fit.missing
    assert ids.suggestion.startswith(r"item_link = '/catalogue/[^/?#]*?_(\d+)(?:[/?#]|$)'")
    assert "ids for 2 of 2 items: 209, 12" in ids.suggestion
    [form] = fit.cart_forms
    assert (form.action, form.count, form.recognised) == ("/basket/add/209/", 2, "")
    assert cart.suggestion.splitlines() == [
        "[[cart_actions]]",
        'action = "add"',
        'path = "/basket/add/{product}/"',
        'quantity = "quantity"',
    ]
    # written into the rules, it recognises Oscar's forms (the product in the path)
    fixed = compile_text(f'{cart.suggestion}\n[page_types]\ncategory = "/catalogue/category/*"\n')
    [form] = fit_page("/catalogue/category/books_2/", page, fixed).cart_forms
    assert (form.recognised, form.product_field) == ("add", "{product}")


def test_page_without_type_and_other_fact_sources() -> None:
    ruleset = compile_text('[page_types]\nproduct = "/item/{product}"\n')
    fit = fit_page("/somewhere/else", "<p>hi</p>", ruleset)
    assert fit.page_type == ""
    assert "no page type matches /somewhere/else" in fit.missing[0].what
    assert '"/somewhere/{slug}"' in fit.missing[0].suggestion

    micro = """<div itemscope itemtype="https://schema.org/Product"><h1 itemprop="name">Cap</h1>
    <meta itemprop="sku" content="C-1"><div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
    <span itemprop="price" content="16.50">€16,50</span><meta itemprop="priceCurrency" content="EUR"></div></div>"""
    product = fit_page("/item/cap", micro, ruleset).product
    assert product is not None
    assert (product.source, product.id, product.name, product.price, product.currency) == (
        "microdata",
        "C-1",
        "Cap",
        16.5,
        "EUR",
    )
    og = """<head><meta property="og:type" content="product"><meta property="og:title" content="Mug">
    <meta property="product:price:amount" content="9.90"><meta property="product:price:currency" content="EUR">
    </head>"""
    product = fit_page("/item/mug", og, ruleset).product
    assert product is not None
    assert (product.source, product.name, product.price) == ("OpenGraph", "Mug", 9.9)


def test_edge_map_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "fit the theme: what the sidecar sees on live pages" in capsys.readouterr().out


def test_a_page_the_rewriter_would_give_up_on_is_said() -> None:
    ruleset = compile_text('[page_types]\nhome = "/"\n[slots.hero]\nselect = "#hero"\n')
    fit = fit_page("/", "<main><div id=hero><p>Welcome", ruleset)
    assert fit.slots[0].error == "<div> being rewritten is still open at the end"
    [missing] = fit.missing
    assert missing.what.startswith("slot `hero`: the rewriter would leave this page untouched")
    assert fit_page("/", "<main><div id=hero><p>Welcome</div></main>", ruleset).complete


def test_items_selected_inside_the_slot() -> None:
    ruleset = compile_text(
        '[slots.grid]\nselect = "#grid"\nitems = "article.card"\nitem_id = "data-sku"\n'
    )
    page = """<article class="card" data-sku="outside"></article><div id="grid"><div class="row">
    <article class="card" data-sku="A1"><h3>One</h3></article>
    <article class="card" data-sku="B2"><h3>Two</h3></article></div></div>"""
    [slot] = fit_page("/", page, ruleset).slots
    assert [(i.id, i.name) for i in slot.items] == [("A1", "One"), ("B2", "Two")]

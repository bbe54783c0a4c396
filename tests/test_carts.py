"""Carts and purchases without shop integration (edge/carts.py, edge/rules/carts.py):
the five platforms' cart requests recognised from one short rule each, the checks
when rules load, the cart and order pages read, and observed orders counted once
with ingested ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from edge.carts import action_for, cart_events, parse_money, read_cart, read_mini_cart, read_order
from edge.config import ConfigError, load_config
from edge.demo.catalog import PRODUCTS_BY_ID
from edge.demo.shop import create_app
from edge.identity import Identity
from edge.observe import Observer
from edge.pages import Page
from edge.profiles import events as ev
from edge.profiles.model import Item, new_profile
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore
from edge.request import RequestHead
from edge.rules.ruleset import RuleSet, compile_text, load_rules

THEMES = Path(__file__).resolve().parent / "themes"
FORM = "application/x-www-form-urlencoded"

PLATFORMS = """
# django-oscar
[[cart_actions]]
action = "add"
path = "/basket/add/{product}/"
quantity = "quantity"

# WooCommerce: the product page's form (any path) and the AJAX endpoint
[[cart_actions]]
action = "add"
path = "/*"
product = "add-to-cart"
quantity = "quantity"

[[cart_actions]]
action = "add"
path = "/"
match = { "wc-ajax" = "add_to_cart" }
product = "product_id"
quantity = "quantity"

# Shopify: /cart/add (form or multipart) and /cart/add.js (JSON)
[[cart_actions]]
action = "add"
path = "/cart/add*"
product = "id"
quantity = "quantity"

[[cart_actions]]
action = "set"
path = "/cart/change*"
product = "id"
quantity = "quantity"

[[cart_actions]]
action = "clear"
path = "/cart/clear*"

# PrestaShop
[[cart_actions]]
action = "add"
path = "/cart"
match = { add = "1" }
product = "id_product"
quantity = "qty"

[[cart_actions]]
action = "remove"
path = "/cart"
match = { delete = "1" }
product = "id_product"

# Magento
[[cart_actions]]
action = "add"
path = "/checkout/cart/add/*"
product = "product"
quantity = "qty"
"""


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return compile_text(PLATFORMS, "rules/theme.toml")


def seen(rules: RuleSet, path: str, body: bytes = b"", kind: str = FORM, query: str = "") -> list:
    events = cart_events(rules.carts.actions, "POST", path, query, kind, body)
    return [(type(e).__name__, e.product_id, e.quantity) for e in events]  # type: ignore[attr-defined]


# --- requests --------------------------------------------------------------------------


def test_oscar_posts_the_product_in_the_path(rules: RuleSet) -> None:
    assert seen(rules, "/basket/add/17/", b"quantity=3&csrfmiddlewaretoken=x") == [
        ("ProductAdded", "17", 3)
    ]
    assert seen(rules, "/basket/add/17/") == [("ProductAdded", "17", 1)]  # one by default


def test_woocommerce_form_query_and_ajax(rules: RuleSet) -> None:
    assert seen(rules, "/product/hoodie/", b"quantity=2&add-to-cart=42") == [
        ("ProductAdded", "42", 2)
    ]
    assert seen(rules, "/", b"", query="add-to-cart=42") == [("ProductAdded", "42", 1)]
    ajax = b"product_sku=&product_id=42&quantity=1"
    assert seen(rules, "/", ajax, query="wc-ajax=add_to_cart") == [("ProductAdded", "42", 1)]
    # a checkout post to some page names no product: nothing
    assert seen(rules, "/checkout/", b"billing_email=a%40b.c") == []


def test_shopify_form_multipart_and_json(rules: RuleSet) -> None:
    assert seen(rules, "/cart/add", b"id=4470&quantity=2") == [("ProductAdded", "4470", 2)]
    boundary = "----WebKitFormBoundary7MA4YWxk"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="form_type"\r\n\r\nproduct\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="id"\r\n\r\n4470\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="quantity"\r\n\r\n5\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    kind = f"multipart/form-data; boundary={boundary}"
    assert seen(rules, "/cart/add", multipart, kind) == [("ProductAdded", "4470", 5)]
    body = json.dumps({"items": [{"id": 4470, "quantity": 2}, {"id": 4471}]}).encode()
    assert seen(rules, "/cart/add.js", body, "application/json") == [
        ("ProductAdded", "4470", 2),
        ("ProductAdded", "4471", 1),
    ]
    change = json.dumps({"id": "4470", "quantity": 0}).encode()
    assert seen(rules, "/cart/change.js", change, "application/json") == [
        ("ProductRemoved", "4470", None)
    ]
    change = json.dumps({"id": "4470", "quantity": 4}).encode()
    assert seen(rules, "/cart/change.js", change, "application/json") == [
        ("ProductRemoved", "4470", None),
        ("ProductAdded", "4470", 4),
    ]
    cleared = cart_events(rules.carts.actions, "POST", "/cart/clear.js", "", "", b"")
    assert cleared == [ev.CartReplaced()]


def test_prestashop_add_and_delete_on_one_path(rules: RuleSet) -> None:
    add = b"token=abc&id_product=7&id_customization=0&qty=2&add=1&action=update"
    assert seen(rules, "/cart", add) == [("ProductAdded", "7", 2)]
    delete = "delete=1&id_product=7&id_product_attribute=0&token=abc"
    assert seen(rules, "/cart", b"", query=delete) == [("ProductRemoved", "7", None)]
    assert seen(rules, "/cart", b"id_product=7&update=1") == []  # neither add nor delete


def test_magento_posts_under_a_path_with_the_id_and_a_field(rules: RuleSet) -> None:
    path = "/checkout/cart/add/uenc/aHR0cHM6Ly9zaG9wLw,,/product/1284/"
    assert seen(rules, path, b"product=1284&selected_configurable_option=&qty=2&form_key=x") == [
        ("ProductAdded", "1284", 2)
    ]


def test_a_get_link_adds_too_when_an_action_says_get() -> None:
    woo = compile_text(
        '[[cart_actions]]\naction = "add"\nmethod = "GET"\npath = "/*"\nproduct = "add-to-cart"\n'
    )
    assert woo.carts.on_get and not compile_text(PLATFORMS).carts.on_get
    observer = Observer(lambda: woo.carts)
    link = RequestHead("GET", "/shop/", query=b"add-to-cart=42", headers=[])
    events = observer.exchange_events(link, None, 302, b"text/html", None)
    assert [(e.product_id, e.quantity) for e in events if isinstance(e, ev.ProductAdded)] == [
        ("42", 1)
    ]
    plain = RequestHead("GET", "/shop/", query=b"orderby=price", headers=[])
    assert not any(
        isinstance(e, ev.ProductAdded)
        for e in observer.exchange_events(plain, None, 200, b"text/html", None)
    )


def test_edge_map_can_ask_which_action_recognises_a_form(rules: RuleSet) -> None:
    found = action_for(rules.carts.actions, "POST", "/cart", {"id_product": "7", "add": "1"})
    assert found is not None and found.action == "add"
    assert action_for(rules.carts.actions, "POST", "/cart", {"id_product": "7"}) is None
    oscar = action_for(rules.carts.actions, "POST", "/basket/add/3/", {"quantity": "1"})
    assert oscar is not None and oscar.patterns[0].pattern.startswith("/basket")


def test_a_method_or_path_that_does_not_match_is_nothing(rules: RuleSet) -> None:
    assert cart_events(rules.carts.actions, "GET", "/basket/add/1/", "", FORM, b"") == []
    assert seen(rules, "/basket/remove/1/") == []
    assert seen(rules, "/cart/add", b"quantity=2") == []  # no product named


def head(method: str, path: str, query: bytes = b"", kind: bytes = FORM.encode()) -> RequestHead:
    return RequestHead(method, path, query=query, headers=[(b"content-type", kind)])


def test_a_cart_action_counts_only_when_the_shop_accepted_it(rules: RuleSet) -> None:
    observer = Observer(lambda: rules.carts)
    request = head("POST", "/basket/add/9/")
    assert observer.wants_form("POST", "/basket/add/9/")
    assert not observer.wants_form("GET", "/basket/add/9/")
    for status in (200, 302, 303):  # a redirect after the post is the usual success
        events = observer.exchange_events(request, None, status, b"text/html", b"quantity=2")
        assert [(e.product_id, e.quantity) for e in events] == [("9", 2)]  # type: ignore[attr-defined]
    for status in (400, 403, 404, 500):
        assert observer.exchange_events(request, None, status, b"text/html", b"quantity=2") == []


def test_without_cart_actions_the_demo_shop_s_forms_are_recognised() -> None:
    default = compile_text('[segments.x]\nwhen = "visits > 1"\n')
    assert seen(default, "/cart/add", b"product_id=p1001&qty=2") == [("ProductAdded", "p1001", 2)]
    assert seen(default, "/cart/remove", b"product_id=p1001") == [("ProductRemoved", "p1001", None)]


# --- checks when the rules load --------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "where", "message", "fix"),
    [
        (
            'action = "add"\npath = "/basket/add/{id}/"',
            "3:1",
            "unknown placeholder `{id}`",
            "names only `{product}`",
        ),
        ('action = "add"\npath = "/cart/add"', "3:1", "cannot name the product", "product ="),
        (
            'action = "add"\npath = "/basket/add/{product}/"\nproduct = "product_id"',
            "4:1",
            "`product` is never read",
            "remove `product`",
        ),
        ('action = "clear"\npath = "/cart/clear"\nquantity = "qty"', "4:1", "never read", ""),
        ('action = "set"\npath = "/cart/{product}"', "2:1", "needs `quantity`", ""),
        ('action = "add"\npath = "cart/{product}"', "3:1", "must start with `/`", ""),
        (
            'action = "add"\npath = "/c/{product}"\nmethod = "FETCH"',
            "4:1",
            "unknown method",
            "POST",
        ),
        (
            'action = "add"\npath = "/c/{product}"\nqty = "q"',
            "4:1",
            "unknown key `qty`",
            "quantity",
        ),
        ('action = "buy"\npath = "/c/{product}"', "2:1", "action", ""),
    ],
)
def test_a_wrong_cart_action_is_an_error_at_its_place(
    entry: str, where: str, message: str, fix: str
) -> None:
    text = f"[[cart_actions]]\n{entry}\n"
    with pytest.raises(ValueError) as raised:
        compile_text(text, "rules/theme.toml")
    report = str(raised.value)
    assert f"rules/theme.toml:{where}: error:" in report, report
    assert message in report, report
    assert fix in report, report


def test_cart_and_order_page_selectors_are_checked() -> None:
    with pytest.raises(ValueError) as raised:
        compile_text('[cart_page]\nitem = "tr.item"\nprice = "td:nth-child(2)"\n', "t.toml")
    assert "t.toml:3:1: error: [cart_page] `price`" in str(raised.value)
    with pytest.raises(ValueError) as raised:
        compile_text('[cart_page]\nprice = ".price"\n', "t.toml")
    assert "[cart_page] needs `item`" in str(raised.value)
    ruleset = compile_text('[order_page]\norder_id = "#number"\ntotal = ".sum@data-value"\n')
    assert ruleset.carts.order_page["total"].attribute == "data-value"


def test_cart_actions_in_edge_toml_say_where_they_moved(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('upstream = "http://x"\n[[cart_actions]]\npath = "/a"\naction = "add"\n')
    with pytest.raises(
        ConfigError, match=r"edge.toml: `cart_actions`: .*\[\[cart_actions\]\] in rules/theme.toml"
    ):
        load_config(config_file=config, environ={})
    with pytest.raises(ConfigError, match="EDGE_CART_ACTIONS: cart actions moved"):
        load_config(environ={"EDGE_CART_ACTIONS": "x", "EDGE_CONFIG": ""})


# --- the cart page ---------------------------------------------------------------------

THEME_RULES = """
[page_types]
product = ["/product/{product}/", "/products/{product}", "/p/{product}"]
"""


@pytest.mark.parametrize(
    ("theme", "expected"),
    [
        (
            "woocommerce-storefront",
            [("27", "Hoodie with Logo", 2, 45.0), ("31", "Beanie", 1, 18.0)],
        ),
        (
            "shopify-dawn",
            [
                ("classic-leather-jacket", "Classic Leather Jacket", 1, 1250.0),
                ("wool-scarf", "Wool Scarf", 3, 35.5),
            ],
        ),
        (
            "prestashop-classic",
            [("1", "Hummingbird printed t-shirt", 2, 23.9), ("19", "Customizable mug", 1, 13.9)],
        ),
        (
            "magento-luma",
            [("1812", "Olivia 1/4 Zip Light Jacket", 1, 77.0), ("398", "Hero Hoodie", 2, 54.0)],
        ),
    ],
)
def test_the_cart_page_of_each_theme_is_read(theme: str, expected: list) -> None:
    ruleset = compile_text(THEME_RULES)
    html = (THEMES / theme / "cart.html").read_text(encoding="utf-8")
    [event] = read_cart(Page("cart", {}), html, ruleset)
    assert isinstance(event, ev.CartReplaced)
    got = [(p.product_id, p.name, p.quantity, p.price) for p in event.products]
    assert got == expected


OSCAR_BASKET = """
<form method="post" class="basket_summary" id="basket_formset">
  <div class="basket-items"><div class="row">
    <div class="col-md-2"><input type="hidden" name="form-0-id" value="11" id="id_form-0-id">
      <a href="/catalogue/the-shellcoders-handbook_209/"><img class="img-thumbnail" src="/m/1.jpg" alt=""/></a></div>
    <div class="col-md-4"><h3><a href="/catalogue/the-shellcoders-handbook_209/">The shellcoder's handbook</a></h3>
      <p class="availability instock">In stock (12 available)</p></div>
    <div class="col-md-3"><div class="checkout-quantity"><div class="input-group">
      <input type="number" name="form-0-quantity" value="2" min="0" class="form-control" id="id_form-0-quantity">
    </div></div></div>
    <div class="col-md-1"><p class="price_color text-right"><span class="price-title d-md-none">Price:</span> £9.99</p></div>
    <div class="col-md-2"><p class="price_color text-right">£19.98</p></div>
  </div></div>
</form>
<form action="/basket/saved/" method="post" class="form-stacked later_summary">
  <div class="basket-items"><div class="row"><h3><a href="/catalogue/later_5/">Later</a></h3></div></div>
</form>
<div id="basket_totals"><table><tr><td class="total"><h3>Order total</h3></td>
<td class="total align-right"><h3 class="price_color">£24.98</h3></td></tr></table></div>
"""


def test_oscar_s_basket_and_thank_you_pages_are_read() -> None:
    # Written from django-oscar src/oscar/templates/oscar/basket/partials/basket_content.html
    # and checkout/thank_you.html; the page map takes the id out of the product's slug.
    ruleset = compile_text('[page_types]\nproduct = "/catalogue/{slug}_{product}/"\n')
    [event] = read_cart(Page("cart", {}), OSCAR_BASKET, ruleset)
    got = [(p.product_id, p.name, p.quantity, p.price) for p in event.products]  # type: ignore[attr-defined]
    assert got == [("209", "The shellcoder's handbook", 2, 9.99)]  # not the saved-for-later one
    thanks = (
        '<p class="lead">Your order has been placed and a confirmation email has been sent -'
        " your order number is <strong>100023</strong>. Please make a note of this reference</p>"
        + OSCAR_BASKET.split("</form>")[-1]
    )
    events = read_order(Page("order-complete", {}), thanks, ruleset)
    assert events[0] == ev.OrderObserved(order_id="100023", total=24.98)


def test_merchant_selectors_read_a_cart_nothing_else_knows() -> None:
    ruleset = compile_text(
        '[cart_page]\nitem = "div.riga"\nproduct = "div.riga@data-sku"\n'
        'quantity = ".pezzi"\nprice = ".costo"\nname = "h3"\n'
    )
    html = (
        '<div class="riga" data-sku="A-1"><h3>Borsa</h3><span class="costo">€ 1.234,50</span>'
        '<b class="pezzi">2</b></div><div class="riga" data-sku="B-2"><h3>Sciarpa</h3></div>'
    )
    [event] = read_cart(Page("cart", {}), html, ruleset)
    assert [(p.product_id, p.name, p.quantity, p.price) for p in event.products] == [  # type: ignore[attr-defined]
        ("A-1", "Borsa", 2, 1234.5),
        ("B-2", "Sciarpa", 1, 0.0),
    ]


MINI_CART = """
<div class="widget woocommerce widget_shopping_cart"><div class="widget_shopping_cart_content">
<ul class="woocommerce-mini-cart cart_list product_list_widget ">
  <li class="woocommerce-mini-cart-item mini_cart_item">
    <a href="https://shop.example/cart/?remove_item=c16a&#038;_wpnonce=6f" class="remove remove_from_cart_button"
       aria-label="Remove Hoodie with Logo from cart" data-product_id="27" data-cart_item_key="c16a"
       data-product_sku="woo-hoodie-with-logo">&times;</a>
    <a href="https://shop.example/product/hoodie-with-logo/"><img src="/h.jpg" alt="" />Hoodie with Logo</a>
    <span class="quantity">2 &times; <span class="woocommerce-Price-amount amount"><bdi>
      <span class="woocommerce-Price-currencySymbol">&#36;</span>45.00</bdi></span></span>
  </li>
</ul>
<p class="woocommerce-mini-cart__total total"><strong>Subtotal:</strong> $90.00</p>
</div></div>
"""
MINI_RULES = """
[mini_cart]
select = "div.widget_shopping_cart_content"
item = "li.mini_cart_item"
name = 'a[href*="/product/"]'
quantity = ".quantity"
price = ".quantity .amount"
"""


def test_the_mini_cart_is_read_where_the_rules_name_it() -> None:
    # Written from woocommerce/woocommerce templates/cart/mini-cart.php (Storefront's header).
    ruleset = compile_text(MINI_RULES)
    page = Page("home", {})
    [event] = read_mini_cart(page, f"<header>{MINI_CART}</header><main>…</main>", ruleset)
    got = [(p.product_id, p.name, p.quantity, p.price) for p in event.products]  # type: ignore[attr-defined]
    assert got == [("27", "Hoodie with Logo", 2, 45.0)]
    # filled by a script later (an empty container), or not on the page: nothing said
    empty = '<div class="widget_shopping_cart_content"></div>'
    assert read_mini_cart(page, empty, ruleset) == []
    assert read_mini_cart(page, "<main>no header</main>", ruleset) == []
    # an empty cart the page shows is an empty cart
    shown_empty = '<div class="widget_shopping_cart_content"><p>No products in the cart.</p></div>'
    assert read_mini_cart(page, shown_empty, ruleset) == [ev.CartReplaced()]
    assert read_mini_cart(page, MINI_CART, compile_text("")) == []  # no [mini_cart]: nothing
    with pytest.raises(ValueError, match=r"\[mini_cart\] needs `select`"):
        compile_text('[mini_cart]\nitem = "li"\n')


def test_an_empty_cart_page_empties_the_cart() -> None:
    [event] = read_cart(
        Page("cart", {}), "<main><p>Your cart is empty.</p></main>", compile_text("")
    )
    assert event == ev.CartReplaced()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("€ 1.234,50", 1234.5),
        ("$1,234.50", 1234.5),
        ("12,90 €", 12.9),
        ("CHF 1’234.50", 1234.5),
        ("1.234 €", 1234.0),
        ("45.00", 45.0),
        ("Total (tax incl.)", None),
    ],
)
def test_money_as_shops_print_it(text: str, value: float | None) -> None:
    assert parse_money(text) == value


# --- the order confirmation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("theme", "page", "order_id", "total"),
    [
        ("woocommerce-storefront", Page("order-complete", {"order_id": "1187"}), "1187", 108.0),
        ("prestashop-classic", Page("order-complete", {}), "XKBKNABJK", 61.7),
        ("magento-luma", Page("order-complete", {}), "000000042", None),
    ],
)
def test_the_order_page_of_each_theme_is_read(
    theme: str, page: Page, order_id: str, total: float | None
) -> None:
    html = (THEMES / theme / "order.html").read_text(encoding="utf-8")
    events = read_order(page, html, compile_text(""))
    assert events == [ev.OrderObserved(order_id=order_id, total=total), ev.CartReplaced()]


@pytest.mark.parametrize(
    "script",
    [
        '<script type="application/ld+json">{"@context": "https://schema.org", "@type": "Order",'
        ' "orderNumber": "W-77", "totalPaymentDue": {"@type": "PriceSpecification",'
        ' "price": "99.90", "priceCurrency": "EUR"}}</script>',
        "<script>window.dataLayer = window.dataLayer || [];\ndataLayer.push({ event: 'purchase',"
        " ecommerce: { transaction_id: 'W-77', value: 99.90, currency: 'EUR', items: [], } });"
        "</script>",
        "<script>dataLayer.push({'ecommerce': {'purchase': {'actionField': {'id': 'W-77',"
        " 'revenue': '99.90'}}}});</script>",
        '<script>gtag(\'event\', \'purchase\', {"transaction_id": "W-77", "value": 99.9});'
        "</script>",
        '<script>Shopify.checkout = {"order_id": "W-77", "total_price": "99.90"};</script>',
    ],
)
def test_the_order_is_read_from_json_ld_or_the_data_layer(script: str) -> None:
    html = f"<html><head>{script}</head><body><h1>Thank you</h1></body></html>"
    events = read_order(Page("order-complete", {}), html, compile_text(""))
    assert events[0] == ev.OrderObserved(order_id="W-77", total=99.9)


def test_broken_scripts_are_skipped_and_no_id_records_no_purchase() -> None:
    html = (
        '<script type="application/ld+json">{"@type": "Order", </script>'
        "<script>dataLayer.push({event: 'purchase', ecommerce: {</script><p>Grazie!</p>"
    )
    assert read_order(Page("order-complete", {}), html, compile_text("")) == [ev.CartReplaced()]


def test_merchant_selectors_name_the_order() -> None:
    ruleset = compile_text(
        '[order_page]\norder_id = "#numero"\ntotal = "[data-total]@data-total"\n'
    )
    html = '<p>Ordine <b id="numero">#A-9</b></p><p data-total="70.5">Totale 70,50 €</p>'
    events = read_order(Page("order-complete", {"order_id": "ignored"}), html, ruleset)
    assert events[0] == ev.OrderObserved(order_id="A-9", total=70.5)


# --- the profile -----------------------------------------------------------------------

NOW = 1_790_000_000


def test_the_cart_page_replaces_the_cart_and_keeps_known_facts() -> None:
    profile = new_profile("v", NOW)
    ev.apply(
        profile,
        ev.ProductAdded(product_id="p1", category="Bags", price=30.0),
        NOW,
        ev.Source.OBSERVED,
    )
    ev.apply(profile, ev.ProductAdded(product_id="p2"), NOW, ev.Source.OBSERVED)
    page = ev.CartReplaced(products=[ev.Product("p1", quantity=3), ev.Product("p3", price=5.0)])
    ev.apply(profile, page, NOW + 60, ev.Source.OBSERVED)
    assert profile.cart.items == [Item("p1", "Bags", "", 30.0, 3), Item("p3", "", "", 5.0, 1)]
    named = ev.CartReplaced(products=[ev.Product("p1", quantity=3, name="Borsa Arno")])
    ev.apply(profile, named, NOW + 90, ev.Source.OBSERVED)
    assert profile.cart.items == [Item("p1", "Bags", "", 30.0, 3, "Borsa Arno")]
    ev.apply(profile, page, NOW + 120, ev.Source.OBSERVED)  # a page without the name keeps it
    assert profile.cart.items[0].name == "Borsa Arno"
    ev.apply(profile, page, NOW + 3600, ev.Source.OBSERVED)  # seen again, unchanged
    assert profile.cart.updated == NOW + 120
    # the same lines with a price the page shows now: learned, and the cart's age goes on
    priced = ev.CartReplaced(products=[ev.Product("p1", quantity=3), ev.Product("p3", price=6.0)])
    ev.apply(profile, priced, NOW + 7200, ev.Source.OBSERVED)
    assert profile.cart.items[1].price == 6.0 and profile.cart.updated == NOW + 120


def test_a_browser_may_not_replace_the_cart_or_claim_an_order() -> None:
    profile = new_profile("v", NOW)
    for event in (ev.CartReplaced(), ev.OrderObserved(order_id="1", total=1e6)):
        with pytest.raises(ev.NotAllowed):
            ev.apply(profile, event, NOW, ev.Source.BROWSER)
    assert profile.order_count == 0


def test_a_checkout_page_alone_never_clears_the_cart() -> None:
    profile = new_profile("v", NOW)
    ev.apply(profile, ev.ProductAdded(product_id="p1", price=10.0), NOW, ev.Source.OBSERVED)
    ev.apply(profile, ev.CheckoutStarted(), NOW + 5, ev.Source.OBSERVED)
    assert [i.product_id for i in profile.cart.items] == ["p1"]


@pytest.fixture
async def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SQLiteStore(tmp_path / "p.db")
    yield ProfileService(store, Identity(["s"]).email_hash, cache_ttl=0.001)
    await store.close()


async def test_an_observed_order_counts_once_with_the_same_order_ingested(
    service: ProfileService,
) -> None:
    added = ev.ProductAdded(product_id="p1", price=40.0, quantity=2)
    await service.record("v1", [added], ev.Source.OBSERVED, NOW)
    seen_order = [ev.OrderObserved(order_id="A-1"), ev.CartReplaced()]
    profile = await service.record("v1", seen_order, ev.Source.OBSERVED, NOW + 60)
    assert profile is not None
    assert (profile.order_count, profile.lifetime_spent, profile.cart.items) == (1, 80.0, [])
    assert profile.orders[0].items == [Item("p1", "", "", 40.0, 2)]  # the cart's lines
    # the shop sends the same order afterwards, naming its customer: still one order
    ingested = ev.OrderCompleted(order_id="A-1", total=80.0, anonymous_id="v1", user_id="c1")
    customer = await service.record(None, [ingested], ev.Source.SHOP, NOW + 120)
    assert customer is not None and (customer.order_count, customer.lifetime_spent) == (1, 80.0)
    # and the page seen again (a reload) changes nothing
    again = await service.record("v1", seen_order, ev.Source.OBSERVED, NOW + 180)
    assert again is not None and again.order_count == 1


async def test_an_ingested_order_then_its_page_counts_once_and_empties_the_cart(
    service: ProfileService,
) -> None:
    await service.record("v2", [ev.ProductAdded(product_id="p1")], ev.Source.OBSERVED, NOW)
    ingested = ev.OrderCompleted(order_id="B-1", total=25.0, user_id="c2", products=[])
    await service.record(None, [ingested], ev.Source.SHOP, NOW + 10)  # another profile
    seen_order = [ev.OrderObserved(order_id="B-1", total=25.0), ev.CartReplaced()]
    profile = await service.record("v2", seen_order, ev.Source.OBSERVED, NOW + 20)
    assert profile is not None and profile.order_count == 0 and profile.cart.items == []
    customer = await service.record(
        None, [ev.Identify(user_id="c2", anonymous_id="v2")], ev.Source.SHOP, NOW + 30
    )
    assert customer is not None and customer.order_count == 1


def test_the_demo_shop_s_cart_and_order_pages_are_read() -> None:
    ruleset, errors = load_rules(Path(__file__).resolve().parent.parent / "rules")
    assert ruleset is not None, errors
    with TestClient(create_app()) as shop:
        assert (
            shop.post("/cart/add/p1001", data={"qty": "2"}, follow_redirects=False).status_code
            == 303
        )
        shop.post("/cart/add", data={"product_id": "p1002"}, follow_redirects=False)
        cart = shop.get("/cart").text
        placed = shop.post(
            "/checkout",
            data={"name": "Anna", "email": "anna@example.com", "address": "Via Roma 1"},
            follow_redirects=False,
        )
        location = placed.headers["location"]
        order = shop.get(location).text
    [replaced] = read_cart(ruleset.pages.page("/cart"), cart, ruleset)  # type: ignore[arg-type]
    assert [(p.product_id, p.quantity) for p in replaced.products] == [("p1001", 2), ("p1002", 1)]  # type: ignore[attr-defined]
    page = ruleset.pages.page(location)
    assert page is not None and page.type == "order-complete"
    observed, emptied = read_order(page, order, ruleset)
    total = PRODUCTS_BY_ID["p1001"].price * 2 + PRODUCTS_BY_ID["p1002"].price
    assert (
        isinstance(observed, ev.OrderObserved) and observed.order_id == location.rsplit("/", 1)[1]
    )
    assert observed.total is not None and observed.total >= total / 100  # shipping on top, or free
    assert emptied == ev.CartReplaced()

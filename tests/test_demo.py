"""`edge demo` starts the demo shop behind the sidecar and serves it, as the README says."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator

import pytest

from edge.demo.catalog import PRODUCTS_BY_ID
from tests.conftest import demo_process, fetch, free_port


@pytest.fixture(scope="module")
def demo() -> Iterator[int]:
    port = free_port()
    with demo_process(port) as run:
        yield port
    text = run.out.decode()
    assert f"http://127.0.0.1:{port}/" in text  # it told the user where to go
    assert "demo stopped" in text


def test_demo_serves_the_shop_through_the_sidecar(demo: int) -> None:
    # The first page waits for the demo's history to be seeded (in chunks, behind the
    # store's writer): 10-17 s were seen with both cores busy.
    home = fetch(demo, "/", timeout=60.0)
    assert home.status == 200
    assert home.header("via") == "1.1 shop-edge"
    html = home.body.decode()
    assert 'data-edge-slot="home-hero"' in html
    assert "Bottega Aurora" in html

    category = fetch(demo, "/c/scarpe-donna")
    assert category.status == 200
    items = re.findall(r'<li class="product"[^>]*data-product-id="(p\d+)"', category.body.decode())
    assert len(items) == 12

    product_link = re.search(r'href="(/p/[^"]+)"', category.body.decode())
    assert product_link is not None
    product = fetch(demo, product_link.group(1))
    assert product.status == 200
    assert 'data-page-type="product"' in product.body.decode()

    assert fetch(demo, "/_edge/healthz").status == 200
    assert fetch(demo, "/_edge/readyz").status == 200


def test_demo_cart_round_trip_through_the_sidecar(demo: int) -> None:
    added = fetch(
        demo,
        "/cart/add",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urllib.parse.urlencode({"product_id": "p1001", "qty": "2"}).encode(),
    )
    assert added.status == 303
    cookie = next(v for v in added.all("set-cookie") if v.startswith("cart="))
    cart = fetch(demo, "/cart", headers={"Cookie": cookie.split(";")[0]})
    assert cart.status == 200
    page = cart.body.decode()
    assert PRODUCTS_BY_ID["p1001"].name in page
    assert 'value="p1001"' in page  # its remove form

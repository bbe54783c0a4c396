"""Carts end to end: the demo shop in a subprocess, a real `edge serve` in front of it
with the repository's rules (its `[[cart_actions]]` name the product in the path), and
a browser that keeps the shop's cookies. An add posted to `/cart/add/{product}` fills
the sidecar's cart and brings the reminder; a request the shop refused does not; the
order-confirmation page empties the cart and records the purchase, which the same
order ingested afterwards does not count twice."""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from edge.demo.catalog import PRODUCTS_BY_ID, write_feed
from tests.conftest import ROOT, EdgeProcess, Reply, fetch, start_edge
from tests.test_activities import (
    BROWSER,
    TOKEN,
    banner,
    edge_env,
    start_shop,
    stop,
    stop_edge,
    wait_for,
)
from tests.test_activities import ingest as ingest_events

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    shop, url = start_shop()
    root = tmp_path_factory.mktemp("carts")
    rules = root / "rules"
    shutil.copytree(ROOT / "rules", rules)
    # A cart counts as abandoned at once here (the shipped rule waits an hour): what
    # is tested is where the cart comes from, not the hour.
    segments = rules / "segments.toml"
    text = segments.read_text(encoding="utf-8")
    assert "cart.age >= 1h" in text
    segments.write_text(text.replace("cart.age >= 1h", "cart.age >= 0s"), encoding="utf-8")
    env = edge_env(write_feed(root / "catalog.csv"))
    env["EDGE_RULES"] = str(rules)
    proc = start_edge(url, env=env)
    yield proc
    stop_edge(proc)
    stop(shop)


class Browser:
    """Keeps every cookie it is given (the sidecar's and the shop's cart)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    @property
    def id(self) -> str:
        return self.cookies.get("edge_vid", "").split(".")[0]

    def request(self, path: str, method: str = "GET", form: dict[str, str] | None = None) -> Reply:
        headers = dict(BROWSER)
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            headers["Content-Type"] = FORM
            body = urlencode(form).encode()
        reply = fetch(self.port, path, method, headers, body)
        for value in reply.all("set-cookie"):
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";")[0]
        return reply

    def page(self, path: str) -> str:
        reply = self.request(path)
        assert reply.status == 200, (path, reply.status)
        return reply.body.decode()

    def profile(self) -> dict[str, Any]:
        reply = fetch(
            self.port,
            "/_edge/profile",
            headers={  # the shop's token: a customer's profile shows only to the shop
                "Cookie": f"edge_vid={self.cookies['edge_vid']}",
                "Authorization": f"Bearer {TOKEN}",
            },
        )
        return json.loads(reply.body).get("profile") or {}

    def cart(self) -> list[tuple[str, int]]:
        return [(i[0], i[4]) for i in self.profile().get("cart", {}).get("items", [])]


def arrived(port: int) -> Browser:
    browser = Browser(port)
    browser.page("/")
    browser.page("/")  # the cookie came back: the profile is stored from here on
    wait_for(lambda: browser.profile().get("visitor_id") == browser.id)
    return browser


def test_an_add_posted_to_a_path_with_the_id_brings_the_reminder(edge: EdgeProcess) -> None:
    browser = arrived(edge.port)
    assert "edge-cart-reminder" not in banner(browser.page("/c/borse-accessori"))
    reply = browser.request("/cart/add/p1001", "POST", {"qty": "2"})
    assert reply.status == 303  # the shop's redirect after the post: accepted
    wait_for(lambda: browser.cart() == [("p1001", 2)])
    reminder = banner(browser.page("/c/borse-accessori"))
    assert "edge-cart-reminder" in reminder
    assert html.escape(PRODUCTS_BY_ID["p1001"].name) in reminder

    # the form field way still counts too, and a product the shop refuses does not
    assert browser.request("/cart/add", "POST", {"product_id": "p1002"}).status == 303
    assert browser.request("/cart/add/p9999", "POST", {"qty": "1"}).status == 404
    wait_for(lambda: browser.cart() == [("p1001", 2), ("p1002", 1)])
    assert browser.request("/cart/remove", "POST", {"product_id": "p1002"}).status == 303
    wait_for(lambda: browser.cart() == [("p1001", 2)])


def test_a_checkout_page_view_keeps_the_cart(edge: EdgeProcess) -> None:
    browser = arrived(edge.port)
    browser.request("/cart/add/p1003", "POST", {"qty": "1"})
    wait_for(lambda: browser.cart() == [("p1003", 1)])
    browser.page("/checkout")
    wait_for(lambda: browser.profile().get("session_pageviews", 0) >= 3)
    assert browser.cart() == [("p1003", 1)]


def test_the_order_page_empties_the_cart_and_the_order_counts_once(edge: EdgeProcess) -> None:
    browser = arrived(edge.port)
    browser.request("/cart/add/p1001", "POST", {"qty": "1"})
    browser.request("/cart/add/p1002", "POST", {"qty": "2"})
    wait_for(lambda: browser.cart() == [("p1001", 1), ("p1002", 2)])
    # the shop's cart page is the truth: it has what the shop's cookie says
    browser.page("/cart")
    reply = browser.request(
        "/checkout",
        "POST",
        {"name": "Anna Rossi", "email": "anna@example.com", "address": "Via Roma 1, Milano"},
    )
    assert reply.status == 303
    location = reply.header("location") or ""
    order_id = location.rsplit("/", 1)[-1]
    assert re.fullmatch(r"A-\d+", order_id), location
    assert "edge-cart-reminder" in banner(browser.page("/c/borse-accessori"))
    browser.page(location)
    wait_for(lambda: browser.profile().get("order_count") == 1)
    profile = browser.profile()
    assert profile["cart"].get("items", []) == []
    expected = (PRODUCTS_BY_ID["p1001"].price + 2 * PRODUCTS_BY_ID["p1002"].price) / 100
    assert abs(profile["lifetime_spent"] - expected) < 10  # the page's total (shipping too)
    assert "edge-cart-reminder" not in banner(browser.page("/c/borse-accessori"))

    # the shop sends the same order afterwards: one order still
    ingest_events(
        edge.port,
        {
            "event": "Order Completed",
            "anonymous_id": browser.id,
            "user_id": f"customer-{browser.id}",
            "order_id": order_id,
            "total": profile["lifetime_spent"],
        },
    )
    wait_for(lambda: browser.profile().get("customer_id") == f"customer-{browser.id}")
    assert browser.profile()["order_count"] == 1

"""`edge demo` shows a scenario fire: a real `edge demo` process, a visitor who fills a
cart, the demo's fake clock moved from the admin page (+1 h: nothing yet; +4 h more: the
cart-recovery reminder reaches the demo's receiver, signed, and the page lists it). The
clock control refuses without the admin token, and `edge serve` has none."""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.demo.catalog import PRODUCTS_BY_ID
from tests._chromium import CHROMIUM, launched
from tests.conftest import demo_process, fetch, free_port
from tests.test_activities import wait_for
from tests.test_carts_e2e import Browser

pytestmark = pytest.mark.slow
CLOCK = "/_edge/admin/demo/clock"
FORM = "application/x-www-form-urlencoded"


class Demo:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token

    def data(self) -> dict[str, Any]:
        reply = fetch(
            self.port, "/_edge/admin/data.json", headers={"Authorization": f"Bearer {self.token}"}
        )
        assert reply.status == 200, reply.body
        return json.loads(reply.body)["demo"]

    def move(self, by: str, token: str | None = None) -> Any:
        headers = {"Content-Type": FORM, "Authorization": f"Bearer {token or self.token}"}
        body = urllib.parse.urlencode({"by": by}).encode()
        return fetch(self.port, CLOCK, "POST", headers, body)

    def received(self, visitor: str) -> list[dict[str, Any]]:
        return [m for m in self.data()["messages"] if m["visitor"] == visitor]


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    port = free_port()
    with demo_process(port, timeout=60) as run:
        lines: list[str] = []
        stdout = run.proc.stdout or ()
        reader = threading.Thread(
            target=lambda: lines.extend(line.decode() for line in stdout), daemon=True
        )
        reader.start()
        banner = wait_for(lambda: "Press Ctrl-C" in "".join(lines) and "".join(lines), 30)
        token = re.search(r"admin token: (\S+)", banner)
        assert token is not None, banner
        # the banner tells a newcomer how to watch a cart recovery
        assert "put something in the cart" in banner and "+4 h" in banner
        assert f"http://127.0.0.1:{port}/_edge/admin#demo" in banner
        yield Demo(port, token.group(1))


class Visitor(Browser):
    def profile(self) -> dict[str, Any]:
        reply = fetch(
            self.port, "/_edge/profile", headers={"Cookie": f"edge_vid={self.cookies['edge_vid']}"}
        )
        return json.loads(reply.body).get("profile") or {}


def test_a_left_cart_is_recovered_after_four_hours_on_the_demo_clock(demo: Demo) -> None:
    visitor = Visitor(demo.port)
    visitor.page("/")
    visitor.page("/")
    wait_for(lambda: visitor.profile().get("visitor_id") == visitor.id)
    assert visitor.request("/cart/add", "POST", {"product_id": "p1001", "qty": "2"}).status == 303
    wait_for(lambda: visitor.cart() == [("p1001", 2)])

    assert demo.received(visitor.id) == []
    assert demo.move("1h").status == 200
    assert demo.received(visitor.id) == []  # an hour later: not yet
    moved = demo.move("4h")
    assert moved.status == 200
    assert json.loads(moved.body)["offset"] == 5 * 3600

    messages = wait_for(lambda: demo.received(visitor.id), 10)
    assert len(messages) == 1
    message = messages[0]
    assert (message["scenario"], message["step"]) == ("cart_recovery", "reminder")
    assert message["destination"] == "esp"
    assert message["verified"] is True  # the README's receiver check passed
    payload = json.loads(message["payload"])
    assert payload["type"] == "cart_recovery"
    assert payload["visitor"]["id"] == visitor.id
    assert [(i["product_id"], i["quantity"]) for i in payload["items"]] == [("p1001", 2)]
    assert payload["items"][0]["price"] * 100 == pytest.approx(PRODUCTS_BY_ID["p1001"].price)
    assert payload["cart_value"] == pytest.approx(2 * payload["items"][0]["price"])
    delivered = demo.data()["outbox"]["delivered"]
    assert message["message_id"] in [row["id"] for row in delivered]


def test_the_admin_page_shows_the_demo_section_and_moves_the_clock_from_its_form(
    demo: Demo,
) -> None:
    cookies: dict[str, str] = {}

    def keep(reply: Any) -> Any:
        for value in reply.all("set-cookie"):
            name, _, rest = value.partition("=")
            cookies[name] = rest.split(";")[0]
        return reply

    def cookie() -> str:
        return "; ".join(f"{k}={v}" for k, v in cookies.items())

    login = keep(fetch(demo.port, "/_edge/admin"))
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.body.decode())
    assert csrf is not None
    form = urllib.parse.urlencode({"token": demo.token, "csrf": csrf.group(1)}).encode()
    site = {"Content-Type": FORM, "Sec-Fetch-Site": "same-origin"}
    keep(fetch(demo.port, "/_edge/admin/login", "POST", {**site, "Cookie": cookie()}, form))
    page = fetch(demo.port, "/_edge/admin", headers={"Cookie": cookie()}).body.decode()
    assert 'id="demo"' in page and "Messages the demo receiver got" in page
    for label in ("+1 h", "+4 h", "+1 day"):
        assert f">{label}</button>" in page
    clock = re.search(r'action="/_edge/admin/demo/clock".*?name="csrf" value="([^"]+)"', page, re.S)
    assert clock is not None
    before = demo.data()["offset"]

    forged = urllib.parse.urlencode({"by": "1d", "csrf": "not-the-form-token"}).encode()
    refused = fetch(demo.port, CLOCK, "POST", {**site, "Cookie": cookie()}, forged)
    assert refused.status == 403
    cross = {**site, "Sec-Fetch-Site": "cross-site", "Cookie": cookie()}
    good = urllib.parse.urlencode({"by": "1d", "csrf": clock.group(1)}).encode()
    assert fetch(demo.port, CLOCK, "POST", cross, good).status == 403
    assert demo.data()["offset"] == before

    moved = fetch(demo.port, CLOCK, "POST", {**site, "Cookie": cookie()}, good)
    assert moved.status == 303
    assert moved.header("location") == "/_edge/admin#demo"
    assert demo.data()["offset"] == before + 86_400


def test_the_clock_refuses_without_the_admin_token(demo: Demo) -> None:
    before = demo.data()["offset"]
    body = urllib.parse.urlencode({"by": "4h"}).encode()
    anonymous = fetch(demo.port, CLOCK, "POST", {"Content-Type": FORM}, body)
    assert anonymous.status == 401
    assert demo.move("4h", token="not-the-token").status == 401
    assert demo.move("2h").status == 400  # only the page's moves
    assert demo.data()["offset"] == before


def test_edge_serve_has_no_demo_clock(tmp_path: Any) -> None:
    """Outside `edge demo` the clock control does not exist, even with the token."""
    from starlette.testclient import TestClient

    from edge.app import create_app
    from edge.config import load_config

    config = load_config(
        {
            "upstream": "http://127.0.0.1:9",
            "store": f"sqlite:{tmp_path}/profiles.db",
            "secret": "s" * 32,
            "admin_token": "t" * 24,
        },
        environ={},
    )
    app = create_app(config)
    with TestClient(app) as client:
        headers = {"Authorization": "Bearer " + "t" * 24}
        reply = client.post(CLOCK, data={"by": "4h"}, headers=headers)
        assert reply.status_code == 404
        data = client.get("/_edge/admin/data.json", headers=headers)
        assert data.status_code == 200 and "demo" not in data.json()
        page = client.get("/_edge/admin", headers=headers).text
        assert 'id="demo"' not in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_a_newcomer_watches_the_cart_recovery_in_chromium(demo: Demo, tmp_path: Path) -> None:
    """What the banner says, in a browser: a cart on the shop, the admin page's "+4 h",
    the signed reminder listed on the page; no console error (the CSP holds), a
    screenshot kept (DEMO_SCREENSHOT names where)."""
    base = f"http://127.0.0.1:{demo.port}"
    slug = PRODUCTS_BY_ID["p1002"].slug
    with launched() as chromium:
        context = chromium.new_context(locale="en-GB", viewport={"width": 1366, "height": 900})
        context.set_default_timeout(10_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        page.goto(base + "/", wait_until="load")
        page.goto(base + f"/p/{slug}", wait_until="load")
        with page.expect_navigation():
            page.click("form.add-to-cart button[type=submit]")
        visitor = Visitor(demo.port)
        visitor.cookies["edge_vid"] = {c["name"]: c["value"] for c in context.cookies()}["edge_vid"]
        vid = visitor.id
        wait_for(lambda: [p for p, _ in visitor.cart()] == ["p1002"])

        page.goto(base + "/_edge/admin#demo", wait_until="load")
        page.fill("input[name=token]", demo.token)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.locator("#demo-title").text_content() == "Demo: scenarios firing"
        assert page.locator(f"ol.received li[data-visitor='{vid}']").count() == 0
        with page.expect_navigation():
            page.click("form.clock button[value='4h']")
        mine = page.locator(f"ol.received li[data-visitor='{vid}']")
        assert mine.count() == 1
        assert mine.locator(".badge.good").text_content() == "signature verified"
        assert "cart_recovery" in (mine.text_content() or "")
        assert '"product_id": "p1002"' in (mine.locator("pre").text_content() or "")
        assert page.locator("table.outbox[data-state=delivered] tr").count() >= 2
        assert errors == [
            "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        ]
        shot = Path(os.environ.get("DEMO_SCREENSHOT", tmp_path / "demo.png"))
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        print(f"demo section screenshot: {shot}")

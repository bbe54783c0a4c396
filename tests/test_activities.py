"""The four on-site activities end to end: the demo shop in a subprocess, a real
`edge serve` in front of it with the repository's rules/, snippets/ and a catalog feed;
visitor histories given through /_edge/ingest as the shop would send them. Then the
sidecar as a good citizen of the web: caching headers, crawlers, content codings,
failing snippets and preview links, through a byte-exact test upstream."""

from __future__ import annotations

import gzip
import html
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import brotli
import pytest

from edge.demo.catalog import CATEGORIES, PRODUCTS_BY_ID, products_in, write_feed
from edge.demo.shop import serve_argv
from edge.placements import in_holdout
from tests._upstream import Received, TestUpstream
from tests.conftest import (
    EDGE,
    ROOT,
    EdgeProcess,
    Reply,
    fetch,
    free_port,
    start_edge,
    wait_listening,
)

TOKEN = "activities-ingest-token"
AVG_ORDER_VALUE = "100"
DAY = 86_400
BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
}
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
ORIGINAL_HERO = "Fatto a mano, fatto per durare."

T = TypeVar("T")


# --- servers --------------------------------------------------------------------------


def start_shop() -> tuple[subprocess.Popen[bytes], str]:
    """The demo shop under uvicorn in its own process, on 127.0.0.1."""
    port = free_port()
    proc = subprocess.Popen(
        serve_argv(port),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_listening(port, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def shop() -> Iterator[str]:
    proc, url = start_shop()
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_feed(tmp_path_factory.mktemp("feed") / "catalog.csv")


def edge_env(catalog: Path, snippets: Path | None = None) -> dict[str, str]:
    return {
        "EDGE_RULES": str(ROOT / "rules"),
        "EDGE_SNIPPETS": str(snippets or ROOT / "snippets"),
        "EDGE_CATALOG": str(catalog),
        "EDGE_INGEST_TOKEN": TOKEN,
        "EDGE_AVG_ORDER_VALUE": AVG_ORDER_VALUE,
    }


def stop_edge(proc: EdgeProcess) -> None:
    """Stop it, and say so if it had died under the tests."""
    died = proc.proc.poll()
    proc.stop()
    if died is not None:
        log = proc.proc.stderr.read().decode() if proc.proc.stderr else ""
        pytest.fail(f"the sidecar exited ({died}) during the tests:\n{log[-4000:]}")


@pytest.fixture(scope="module")
def edge(shop: str, catalog: Path) -> Iterator[EdgeProcess]:
    proc = start_edge(shop, env=edge_env(catalog))
    yield proc
    stop_edge(proc)


# --- visitors -------------------------------------------------------------------------


def wait_for(probe: Callable[[], T], timeout: float = 20.0) -> T:
    """Poll *probe* until it returns something truthy (events are flushed every 50 ms;
    the deadline is generous for a loaded machine, a pass takes milliseconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s (last: {value!r})")
        time.sleep(0.05)


class Visitor:
    """A browser without JavaScript: keeps the sidecar's cookie, sends a browser's Accept."""

    def __init__(self, port: int, **headers: str) -> None:
        self.port = port
        self.cookie = ""
        self.headers = {**BROWSER, **headers}

    @property
    def id(self) -> str:
        return self.cookie.removeprefix("edge_vid=").split(".")[0]

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        sent = {**self.headers, **(headers or {})}
        if self.cookie:
            sent["Cookie"] = "; ".join(c for c in (self.cookie, sent.get("Cookie", "")) if c)
        reply = fetch(self.port, path, headers=sent)
        for value in reply.all("set-cookie"):
            if value.startswith("edge_vid=") and not self.cookie:
                self.cookie = value.split(";")[0]
        return reply

    def page(self, path: str, headers: dict[str, str] | None = None) -> str:
        reply = self.get(path, headers)
        assert reply.status == 200, (path, reply.status, reply.body[:300])
        return reply.body.decode()

    def profile(self) -> dict[str, Any]:
        # the shop's token: a profile linked to a customer shows only to the shop (or
        # with the shop's session, tests/test_hardening_identity.py)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        reply = fetch(self.port, "/_edge/profile", headers={"Cookie": self.cookie, **auth})
        return json.loads(reply.body).get("profile") or {}

    def arrive(self, path: str = "/") -> str:
        """The first page (the cookie is issued), then a second one: the profile exists."""
        self.page(path)
        assert self.cookie, "no visitor cookie on the first page"
        body = self.page(path)
        wait_for(lambda: self.profile().get("visitor_id") == self.id)
        return body


def ingest(port: int, *events: dict[str, Any]) -> None:
    body = json.dumps({"events": list(events)}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    reply = fetch(port, "/_edge/ingest", "POST", headers, body)
    assert reply.status == 200, reply.body


def order(
    visitor: Visitor, number: int, days_ago: float, total: float, *products: str
) -> dict[str, Any]:
    """An "Order Completed" from the shop for *visitor*, with the catalogue's facts."""
    return {
        "event": "Order Completed",
        "anonymous_id": visitor.id,
        "user_id": f"customer-{visitor.id}",
        "order_id": f"{visitor.id}-{number}",
        "total": total,
        "ts": int(time.time() - days_ago * DAY),
        "products": [
            {
                "product_id": p,
                "category": PRODUCTS_BY_ID[p].category,
                "brand": PRODUCTS_BY_ID[p].brand,
                "price": PRODUCTS_BY_ID[p].price / 100,
            }
            for p in products
        ],
    }


def give_orders(visitor: Visitor, orders: list[dict[str, Any]]) -> None:
    ingest(visitor.port, *orders)
    wait_for(lambda: visitor.profile().get("order_count") == len(orders))


# --- reading the page ---------------------------------------------------------------


def hero(page: str) -> str:
    m = re.search(r'data-edge-slot="home-hero">(.*?)</section>', page, re.S)
    assert m is not None, "no hero slot on the page"
    return m.group(1)


def banner(page: str) -> str:
    m = re.search(r'data-edge-slot="top-banner">(.*?)\n<main', page, re.S)
    assert m is not None, "no banner slot on the page"
    return m.group(1)


def product_ids(page: str) -> list[str]:
    m = re.search(r'<ol class="products"[^>]*>(.*?)</ol>', page, re.S)
    assert m is not None, "no product list on the page"
    return re.findall(r'<li class="product" data-product-id="(p\d+)"', m.group(1))


def shelves(page: str) -> list[str]:
    return re.findall(r'<section class="shelf" data-category="([^"]+)"', page)


def profile_form(page: str) -> dict[str, str] | None:
    """The profiling form's action and fields, as a browser without JS would post them."""
    m = re.search(r'<form class="edge-profile-form" action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
    if m is None:
        return None
    hidden = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', m.group(2))
    fields = {name: html.unescape(value) for name, value in hidden}
    fields["_action"] = html.unescape(m.group(1))
    options = re.findall(r'<option value="([^"]+)"', m.group(2))
    fields["_options"] = " ".join(options)
    return fields


def deadline(page: str) -> int:
    m = re.search(r'data-edge-countdown data-deadline="(\d+)"', page)
    assert m is not None, "no countdown on the page"
    return int(m.group(1))


# --- 1. content blocks by campaign and by segment -----------------------------------


def test_campaign_arrival_is_remembered_for_the_visit(edge: EdgeProcess) -> None:
    visitor = Visitor(edge.port)
    landing = visitor.page("/?utm_source=google&utm_medium=cpc&utm_campaign=black-friday")
    assert "edge-hero--campaign" in hero(landing)
    assert "Black friday" in hero(landing)
    assert ORIGINAL_HERO not in hero(landing)
    # the next page, no UTM: still the campaign's hero (the landing is not stored yet)
    second = visitor.page("/")
    assert "edge-hero--campaign" in hero(second)
    # and once the landing is in the profile, it still holds for the visit
    wait_for(lambda: visitor.profile().get("last_touch", {}).get("campaign") == "black-friday")
    assert "edge-hero--campaign" in hero(visitor.page("/"))

    # another visitor, no campaign: the shop's own hero
    assert ORIGINAL_HERO in hero(Visitor(edge.port).page("/"))


def test_moving_around_the_shop_keeps_the_landing_campaign(edge: EdgeProcess) -> None:
    # A browser sends the page it came from as Referer: the shop's own pages are no
    # new arrival ("referral"), so the visit keeps the campaign it landed with.
    visitor = Visitor(edge.port)
    inside = {"Referer": f"http://127.0.0.1:{edge.port}/?utm_campaign=black-friday"}
    assert "edge-hero--campaign" in hero(
        visitor.page("/?utm_source=google&utm_medium=cpc&utm_campaign=black-friday")
    )
    assert "edge-hero--campaign" in hero(visitor.page("/", inside))
    wait_for(lambda: visitor.profile().get("last_touch", {}).get("campaign") == "black-friday")
    assert "edge-hero--campaign" in hero(visitor.page("/", inside))
    time.sleep(0.3)  # the third page's events are written too
    touch = visitor.profile()["last_touch"]
    assert (touch["campaign"], touch["channel"]) == ("black-friday", "paid")


def test_newsletter_arrival_sees_the_newsletter_hero(edge: EdgeProcess) -> None:
    visitor = Visitor(edge.port)
    page = visitor.page("/?utm_source=newsletter&utm_medium=email&utm_campaign=june")
    assert "edge-hero--newsletter" in hero(page)
    assert "From our newsletter" in hero(page)
    assert "edge-hero--newsletter" in hero(visitor.page("/"))
    # in Italian for an Italian browser
    italian = Visitor(edge.port, **{"Accept-Language": "it-IT,it;q=0.9"})
    assert "Dalla nostra newsletter" in hero(italian.page("/?utm_medium=email"))


def vip_orders(visitor: Visitor) -> list[dict[str, Any]]:
    """Five orders in the last months, each well above the shop's average: a VIP."""
    return [order(visitor, n, 10 + 20 * n, 320.0, "p1001", "p1002") for n in range(5)]


def test_vip_sees_the_vip_hero_unless_held_out(edge: EdgeProcess) -> None:
    # Find one visitor in the placement's 10% holdout and one outside it.
    found: dict[bool, Visitor] = {}
    for _ in range(300):
        candidate = Visitor(edge.port)
        candidate.page("/")
        # (their orders make them a customer: the unit assigned is then the customer)
        unit = f"cust:customer-{candidate.id}"
        found.setdefault(in_holdout(unit, "hero-vip", 0.1), candidate)
        if len(found) == 2:
            break
    assert len(found) == 2, "no held-out visitor among 300 (the holdout share is 10%)"
    for visitor in found.values():
        visitor.page("/")  # the first hit is stored now
        give_orders(visitor, vip_orders(visitor))

    shown = found[False].page("/")
    assert "edge-hero--vip" in hero(shown) and "Welcome back." in hero(shown)
    assert ORIGINAL_HERO not in hero(shown)
    italian = found[False].page("/", {"Accept-Language": "it"})
    assert "Per i nostri clienti migliori" in hero(italian)

    reply = found[True].get("/")
    assert ORIGINAL_HERO in hero(reply.body.decode())  # the control group
    assert "edge-hero" not in hero(reply.body.decode())
    assert "private" in (reply.header("cache-control") or "")
    assert "cookie" in (reply.header("vary") or "").lower()

    # an exposure counts for the one who saw it (caps), not for the control group
    wait_for(lambda: "hero-vip" in found[False].profile().get("exposures", {}))
    wait_for(lambda: found[True].profile().get("session_pageviews", 0) >= 3)
    assert "hero-vip" not in found[True].profile().get("exposures", {})


def lapsed_customer(port: int) -> Visitor:
    visitor = Visitor(port)
    visitor.arrive("/")
    while in_holdout(f"cust:customer-{visitor.id}", "hero-lapsed", 0.1):  # (10% see the usual)
        visitor = Visitor(port)
        visitor.arrive("/")
    give_orders(visitor, [order(visitor, 1, 120, 60.0, "p1002")])  # four months ago
    return visitor


def test_lapsed_customer_sees_the_comeback_hero_and_a_timed_offer(edge: EdgeProcess) -> None:
    visitor = lapsed_customer(edge.port)
    page = visitor.page("/")
    assert "edge-hero--lapsed" in hero(page) and "We missed you." in hero(page)
    offer = banner(page)
    assert "data-edge-offer" in offer and "AURORA10" in offer
    left = deadline(page) - time.time()
    assert 24 * 3600 - 120 < left <= 24 * 3600 + 1


# --- 2. category product order ------------------------------------------------------


def test_big_spender_sees_the_category_by_price_descending(edge: EdgeProcess) -> None:
    visitor = Visitor(edge.port)
    visitor.arrive("/c/scarpe-donna")
    give_orders(visitor, [order(visitor, 1, 3, 450.0, "p1001")])
    shown = product_ids(visitor.page("/c/scarpe-donna"))
    shop_order = [p.id for p in products_in("scarpe-donna")]
    assert sorted(shown) == sorted(shop_order)  # the same products, none lost
    expected = sorted(shop_order, key=lambda p: -PRODUCTS_BY_ID[p].price)
    assert shown == expected
    assert shown != shop_order

    # someone who is not a big spender gets the shop's order with what they bought last
    modest = Visitor(edge.port)
    modest.arrive("/c/scarpe-donna")
    bought = shop_order[0]
    give_orders(modest, [order(modest, 1, 3, 20.0, bought)])
    listed = product_ids(modest.page("/c/scarpe-donna"))
    assert sorted(listed) == sorted(shop_order)
    assert listed[-1] == bought  # "bought last"
    # then "affinity" breaks the ties: the brand they bought first, else the shop's order
    brand = PRODUCTS_BY_ID[bought].brand
    rest = [p for p in shop_order if p != bought]
    assert listed[:-1] == [p for p in rest if PRODUCTS_BY_ID[p].brand == brand] + [
        p for p in rest if PRODUCTS_BY_ID[p].brand != brand
    ]


def test_affinity_follows_this_visits_search_over_past_purchases(edge: EdgeProcess) -> None:
    visitor = Visitor(edge.port)
    visitor.arrive("/")
    men = [p.id for p in products_in("scarpe-uomo")[:3]]
    give_orders(visitor, [order(visitor, n, 40 + n, 70.0, men[n]) for n in range(3)])
    # history: men's shoes come first on the home page's shelves
    before = shelves(visitor.page("/"))
    assert sorted(before) == sorted(c.slug for c in CATEGORIES)
    assert before[0] == "scarpe-uomo"

    assert visitor.get("/search?q=donna").status == 200
    wait_for(lambda: any(s.get("query") == "donna" for s in visitor.profile().get("searches", [])))
    after = shelves(visitor.page("/"))
    assert after[0] == "scarpe-donna"  # this visit's search weighs most
    assert after[1] == "scarpe-uomo"  # then the history
    assert sorted(after) == sorted(before)

    # with no history and no search: the shop's own shelf order
    assert shelves(Visitor(edge.port).page("/")) == [c.slug for c in CATEGORIES]


# --- 3. cart reminder and timed offers ----------------------------------------------


def test_abandoned_cart_gets_a_reminder_naming_the_items(edge: EdgeProcess) -> None:
    visitor = Visitor(edge.port)
    visitor.arrive("/")
    two_hours_ago = int(time.time()) - 2 * 3600
    ingest(
        edge.port,
        *(
            {
                "event": "Product Added",
                "anonymous_id": visitor.id,
                "product_id": p,
                "price": PRODUCTS_BY_ID[p].price / 100,
                "ts": two_hours_ago,
            }
            for p in ("p1001", "p1002")
        ),
    )
    wait_for(lambda: len(visitor.profile().get("cart", {}).get("items", [])) == 2)
    page = visitor.page("/c/borse-accessori")
    reminder = banner(page)
    assert "edge-cart-reminder" in reminder
    assert "left 2 items in your cart" in reminder
    for product in ("p1001", "p1002"):
        assert html.escape(PRODUCTS_BY_ID[product].name) in reminder
    assert 'href="/cart"' in reminder
    # not on the cart page itself (the slot's pages)
    cart = visitor.page("/cart")
    assert "edge-cart-reminder" not in cart

    # a cart touched a minute ago is not abandoned
    fresh = Visitor(edge.port)
    fresh.arrive("/")
    ingest(edge.port, {"event": "Product Added", "anonymous_id": fresh.id, "product_id": "p1001"})
    wait_for(lambda: len(fresh.profile().get("cart", {}).get("items", [])) == 1)
    assert "edge-cart-reminder" not in fresh.page("/c/borse-accessori")


def test_timed_offer_deadline_is_fixed_at_first_exposure(edge: EdgeProcess) -> None:
    visitor = lapsed_customer(edge.port)
    first = deadline(visitor.page("/"))
    wait_for(lambda: "comeback-offer" in visitor.profile().get("offers", {}))
    assert visitor.profile()["offers"]["comeback-offer"] == first - 24 * 3600
    time.sleep(1.5)  # a reset would move the deadline by at least a second
    assert deadline(visitor.page("/")) == first
    assert deadline(visitor.page("/c/scarpe-uomo")) == first  # on every page

    other = lapsed_customer(edge.port)
    theirs = deadline(other.page("/"))
    assert theirs > first  # their own clock, from their own first exposure


def test_the_countdown_script_comes_with_the_offer(edge: EdgeProcess) -> None:
    script = '<script src="/_edge/static/edge.js" defer></script>'
    offer_page = lapsed_customer(edge.port).page("/")
    assert offer_page.count(script) == 1
    assert offer_page.index(script) > offer_page.index("data-edge-countdown")
    assert script not in Visitor(edge.port).page("/")  # no offer, no script

    for name, media_type in (("edge.js", "javascript"), ("edge.css", "text/css")):
        served = fetch(edge.port, f"/_edge/static/{name}")
        assert served.status == 200
        assert media_type in (served.header("content-type") or "")
        assert served.body == (ROOT / "static" / name).read_bytes()
        assert not served.all("set-cookie")
    assert fetch(edge.port, "/_edge/static/nothing.js").status == 404
    assert fetch(edge.port, "/_edge/static/../app.py").status == 404


# --- 4. the profiling form, without JavaScript --------------------------------------


def test_profiling_form_asks_one_question_at_a_time(edge: EdgeProcess) -> None:
    visitor = Visitor(edge.port)
    first = profile_form(visitor.page("/"))
    assert first is not None, "an unknown visitor sees the profiling form"
    assert first["_action"] == "/_edge/profile-form"
    assert first["question"] == "gender"
    assert first["return_to"] == "/"
    assert first["csrf"]

    answer = first["_options"].split()[0]
    fields = {k: v for k, v in first.items() if not k.startswith("_")}
    fields["answer"] = answer
    reply = fetch(
        edge.port,
        first["_action"],
        "POST",
        {**BROWSER, "Content-Type": "application/x-www-form-urlencoded", "Cookie": visitor.cookie},
        urlencode(fields).encode(),
    )
    assert reply.status == 303
    assert reply.header("location") == "/"
    wait_for(lambda: visitor.profile().get("answers", {}).get("gender") == answer)

    second = profile_form(visitor.page(reply.header("location") or "/"))
    assert second is not None
    assert second["question"] not in ("", "gender")  # the next missing trait

    # the form keeps where the visitor was, query included
    product = PRODUCTS_BY_ID["p1001"]
    on_product = profile_form(visitor.page(f"/p/{product.slug}?ref=home"))
    assert on_product is not None and on_product["return_to"] == f"/p/{product.slug}?ref=home"

    # a customer the shop knows is not asked
    known = Visitor(edge.port)
    known.arrive("/")
    give_orders(known, [order(known, 1, 2, 30.0, "p1002")])
    assert profile_form(known.page("/")) is None


# --- 5. a good citizen: caching, crawlers, codings, failures, previews --------------

SHOP_PAGE = (
    "<!doctype html>\n<html lang=it><head><meta charset=utf-8><title>Negozio</title></head>\n"
    "<body>\n<header>Caffè & scarpe</header>\n"
    '<section class="hero" data-edge-slot="home-hero"><h1>Original hero</h1></section>\n'
    + "".join(f'<p class="filler">Riga {i}: caffè — € {i},90</p>\n' for i in range(400))
    + "</body></html>\n"
).encode()


class CachingUpstream(TestUpstream):
    """The test upstream plus a home page, a cart page and an asset with the caching
    headers a shop or its CDN would send; ``/?enc=gzip|br`` encodes the home page."""

    async def _respond(self, request: Received, writer: Any) -> bool:
        path, _, query = request.target.partition("?")
        if path not in ("/", "/cart", "/static/app.css"):
            return await super()._respond(request, writer)
        if path == "/static/app.css":
            body = b"body{color:#222}"
            headers = [
                ("Content-Type", "text/css"),
                ("Cache-Control", "public, max-age=31536000, immutable"),
                ("ETag", '"css-1"'),
            ]
        elif path == "/cart":
            body = SHOP_PAGE.replace(b"Original hero", b"Your cart")
            headers = [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Cache-Control", "public, max-age=60"),
                ("ETag", '"cart-1"'),
                ("Last-Modified", "Mon, 01 Jun 2026 10:00:00 GMT"),
            ]
        else:
            body = SHOP_PAGE
            headers = [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Cache-Control", "public, max-age=300, s-maxage=600"),
                ("ETag", '"home-1"'),
                ("Last-Modified", "Mon, 01 Jun 2026 10:00:00 GMT"),
                ("Vary", "Accept-Encoding"),
                # what a CDN or nginx obeys over Cache-Control (and without Vary)
                ("CDN-Cache-Control", "max-age=600"),
                ("Surrogate-Control", "max-age=600"),
                ("X-Accel-Expires", "600"),
                ("Cloudflare-CDN-Cache-Control", "max-age=600"),
            ]
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            coding = params.get("enc", "")
            if coding == "gzip":
                body = gzip.compress(body, mtime=0)
            elif coding == "br":
                body = brotli.compress(body)
            if coding:
                headers.append(("Content-Encoding", coding))
        etag = dict(headers).get("ETag")
        if etag and request.header("if-none-match") == etag:  # the copy is current
            lines = ["HTTP/1.1 304 Not Modified"] + [f"{k}: {v}" for k, v in headers]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            return True
        headers.append(("Content-Length", str(len(body))))
        lines = ["HTTP/1.1 200 OK"] + [f"{k}: {v}" for k, v in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if request.method != "HEAD":
            writer.write(body)
        return True


@pytest.fixture(scope="module")
def caching_upstream() -> Iterator[CachingUpstream]:
    server = CachingUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def citizen(caching_upstream: CachingUpstream, catalog: Path) -> Iterator[EdgeProcess]:
    proc = start_edge(caching_upstream.url, env=edge_env(catalog))
    yield proc
    stop_edge(proc)


CAMPAIGN = "utm_source=ads&utm_campaign=black-friday"


def assert_complete(reply: Reply) -> bytes:
    """The body is whole and any Content-Length tells its true length."""
    length = reply.header("content-length")
    if length is not None:
        assert int(length) == len(reply.body)
    else:
        assert (reply.header("transfer-encoding") or "").lower() == "chunked"
    return reply.body


def test_personalized_page_is_private_and_tells_the_truth(citizen: EdgeProcess) -> None:
    visitor = Visitor(citizen.port)
    reply = visitor.get(f"/?{CAMPAIGN}")
    body = assert_complete(reply)
    assert b"edge-hero--campaign" in body and b"Original hero" not in body
    assert body.endswith(b"</body></html>\n")
    # the blocks' stylesheet joins the head, and the marker that tells the browser
    # snippet the page is done starts it; everything else outside the slot is the
    # shop's, byte for byte
    link = b'<link rel="stylesheet" href="/_edge/static/edge.css"></head>'
    marker = b'<head><meta name="shop-edge" content="done">'
    assert link in body and marker in body
    outside = body.replace(link, b"</head>", 1).replace(marker, b"<head>", 1)
    before, _, rest = SHOP_PAGE.partition(b'data-edge-slot="home-hero">')
    after = rest.partition(b"</section>")[2]
    assert outside.startswith(before) and outside.endswith(after)

    cache_control = [p.strip().lower() for p in (reply.header("cache-control") or "").split(",")]
    assert "private" in cache_control
    assert "public" not in cache_control
    assert not any(p.startswith("s-maxage") for p in cache_control)
    for cdn in ("cdn-cache-control", "surrogate-control", "x-accel-expires"):
        assert reply.header(cdn) is None, cdn  # a CDN would share the page otherwise
    assert reply.header("cloudflare-cdn-cache-control") is None
    vary = [v.strip().lower() for v in ",".join(reply.all("vary")).split(",")]
    assert "cookie" in vary and "accept-encoding" in vary
    etag = reply.header("etag") or ""
    assert etag.startswith('W/"') and etag != '"home-1"'
    assert reply.header("last-modified") is None
    timing = reply.header("server-timing") or ""
    assert re.match(r"edge;dur=\d+(\.\d+)?", timing), timing

    # a returning visitor with the same edits: same body, same ETag
    again = visitor.get(f"/?{CAMPAIGN}")
    assert again.header("etag") == etag and again.body == body
    assert "private" in (again.header("cache-control") or "")


def test_a_copy_from_before_personalization_is_not_revalidated(citizen: EdgeProcess) -> None:
    visitor = Visitor(citizen.port)
    visitor.get(f"/?{CAMPAIGN}")
    # the browser still holds the shop's own copy of the home page (from before)
    reply = visitor.get("/", headers={"If-None-Match": '"home-1"'})
    assert reply.status == 200
    assert b"edge-hero--campaign" in reply.body
    # a page nothing changes still revalidates with the shop
    cart = visitor.get("/cart", headers={"If-None-Match": '"cart-1"'})
    assert cart.status == 304
    # and the personalized copy the browser now holds is confirmed by the sidecar
    etag = visitor.get("/").header("etag") or ""
    again = visitor.get("/", headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    assert again.header("etag") == etag and "private" in (again.header("cache-control") or "")
    # once the shop's page changes (another ETag upstream) or the edits do, a full page
    other = visitor.get("/", headers={"If-None-Match": 'W/"home-0-0123"'})
    assert other.status == 200 and b"edge-hero--campaign" in other.body


def test_nothing_personalized_keeps_the_shops_caching_headers(
    citizen: EdgeProcess, caching_upstream: CachingUpstream
) -> None:
    visitor = Visitor(citizen.port)
    visitor.get("/")
    assert visitor.cookie
    cart = visitor.get(f"/cart?{CAMPAIGN}")  # no slot on the cart page
    assert cart.body == SHOP_PAGE.replace(b"Original hero", b"Your cart")
    assert cart.header("cache-control") == "public, max-age=60"
    assert cart.header("etag") == '"cart-1"'
    assert cart.header("last-modified") == "Mon, 01 Jun 2026 10:00:00 GMT"
    assert cart.header("content-length") == str(len(cart.body))
    assert cart.header("vary") is None

    for cookie in (visitor.cookie, ""):
        css = fetch(
            citizen.port,
            "/static/app.css",
            headers={"Accept": "text/css,*/*;q=0.1", "Cookie": cookie},
        )
        assert css.body == b"body{color:#222}"
        assert css.header("cache-control") == "public, max-age=31536000, immutable"
        assert css.header("etag") == '"css-1"'
        assert css.header("content-length") == str(len(css.body))
        assert not css.all("set-cookie")


@pytest.mark.parametrize(
    ("coding", "decode"), [("gzip", gzip.decompress), ("br", brotli.decompress)]
)
def test_encoded_pages_are_decoded_rewritten_and_encoded_again(
    citizen: EdgeProcess, coding: str, decode: Callable[[bytes], bytes]
) -> None:
    reply = Visitor(citizen.port).get(
        f"/?enc={coding}&{CAMPAIGN}", {"Accept-Encoding": "gzip, deflate, br"}
    )
    assert reply.status == 200
    assert reply.header("content-encoding") == coding
    raw = assert_complete(reply)
    page = decode(raw)
    assert b"edge-hero--campaign" in page and b"Original hero" not in page
    assert page.endswith(b"</body></html>\n")
    assert "Caffè & scarpe".encode() in page  # the charset survived
    assert "private" in (reply.header("cache-control") or "")


def test_crawlers_get_the_shops_page_untouched(edge: EdgeProcess, shop: str) -> None:
    shop_port = int(shop.rsplit(":", 1)[1])
    for path in (f"/?{CAMPAIGN}", "/c/scarpe-donna"):
        headers = {**BROWSER, "User-Agent": GOOGLEBOT}
        original = fetch(shop_port, path, headers=headers)
        crawled = fetch(edge.port, path, headers=headers)
        assert crawled.status == original.status == 200
        assert crawled.body == original.body
        assert not any(c.startswith("edge_vid=") for c in crawled.all("set-cookie"))
        assert crawled.header("cache-control") == original.header("cache-control")
    # while a person arriving the same way gets the campaign
    assert "edge-hero--campaign" in hero(Visitor(edge.port).page(f"/?{CAMPAIGN}"))


def test_a_failing_snippet_leaves_the_slot_as_the_shop_made_it(
    shop: str, catalog: Path, tmp_path: Path
) -> None:
    snippets = tmp_path / "snippets"
    snippets.mkdir()
    # a misspelt variable: compiles, fails when rendered
    (snippets / "hero_vip.html").write_text("<div class=edge-hero>{{ frist_name.upper() }}</div>")
    (snippets / "hero_lapsed.html").write_text("<div class=edge-hero>{% if %}</div>")  # syntax
    proc = start_edge(shop, env=edge_env(catalog, snippets))
    try:
        vip = Visitor(proc.port)
        while True:  # someone outside the VIP hero's holdout
            vip.cookie = ""
            vip.page("/")
            if not in_holdout(f"cust:customer-{vip.id}", "hero-vip", 0.1):  # (the customer's)
                break
        vip.page("/")
        give_orders(vip, vip_orders(vip))
        reply = vip.get("/")
        assert reply.status == 200
        page = assert_complete(reply).decode()
        assert ORIGINAL_HERO in hero(page)
        assert "edge-hero" not in page
        assert page.rstrip().endswith("</html>")

        lapsed = lapsed_customer(proc.port)
        page = lapsed.page("/")
        assert ORIGINAL_HERO in hero(page)
        assert "AURORA10" in banner(page)  # the other slot still works
    finally:
        proc.stop()
    log = proc.proc.stderr.read().decode() if proc.proc.stderr else ""
    assert "hero_vip.html" in log


def test_preview_link_shows_the_segment_and_records_nothing(edge: EdgeProcess) -> None:
    link = subprocess.run(
        [*EDGE, "preview-link", "--segment", "vip", "/"],
        cwd=ROOT / "tests",
        env={"EDGE_SECRET": "test-secret", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    target = urlsplit(link)
    assert target.path == "/" and "edge_preview=" in target.query

    reply = fetch(edge.port, f"/?{target.query}", headers=BROWSER)
    assert reply.status == 200
    page = reply.body.decode()
    assert "edge-hero--vip" in hero(page)
    assert "Preview: segments vip" in page and "not tracked" in page
    assert reply.header("cache-control") == "no-store"
    cookies = reply.all("set-cookie")
    assert not any(c.startswith("edge_vid=") for c in cookies)
    preview_cookie = next(c for c in cookies if c.startswith("edge_preview="))
    assert "HttpOnly" in preview_cookie

    # the merchant clicks on: the preview cookie carries it, nothing is recorded
    browse = fetch(edge.port, "/", headers={**BROWSER, "Cookie": preview_cookie.split(";")[0]})
    assert "edge-hero--vip" in hero(browse.body.decode())
    assert browse.header("cache-control") == "no-store"
    assert not any(c.startswith("edge_vid=") for c in browse.all("set-cookie"))
    # a forged token is just a visitor
    forged = fetch(edge.port, "/?edge_preview=W1sidmlwIl0sOTk5OTk5OTk5OV0.forged", headers=BROWSER)
    assert "edge-hero--vip" not in forged.body.decode()
    assert "Preview:" not in forged.body.decode()

    # a visitor previewing keeps their profile untouched
    visitor = Visitor(edge.port)
    visitor.arrive("/")
    views = wait_for(lambda: visitor.profile().get("session_pageviews"))
    previewed = visitor.get(f"/?{target.query}")
    assert "edge-hero--vip" in hero(previewed.body.decode())
    visitor.get("/_edge/healthz")
    time.sleep(0.3)  # give a wrongly recorded view the time to be flushed
    after = visitor.profile()
    assert after.get("session_pageviews") == views
    assert "hero-vip" not in after.get("exposures", {})

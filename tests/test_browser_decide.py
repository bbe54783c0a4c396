"""The browser's half on the server: ``GET /_edge/decide``, exposure tokens, the
``Placement Viewed``/``Placement Clicked`` beacons, pages rendered in the browser and
the snippet asset.

The sidecar runs in process (the ASGI app over httpx's transport) on a real SQLite
store with the repository's rules and snippets (the demo shop's theme) and the demo
catalog feed; visitor histories arrive through ``/_edge/ingest`` as the shop would
send them. Pages come from a small shop of the test's own (tests/conftest.py
``serving``)."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import brotli
import httpx
import msgspec
import pytest

from edge import browser
from edge.app import EdgeApp, create_app
from edge.browser import BadToken, check_token, token
from edge.config import Config
from edge.demo.catalog import PRODUCTS, write_feed
from edge.placements import in_holdout
from edge.profiles.model import ArmRecord
from tests.conftest import ROOT, serving

TOKEN = "browser-decide-ingest"
DAY = 86_400
CHROME = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Accept": "*/*",
}
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HERO = "[data-edge-slot=home-hero]"
_customers = itertools.count()


# --- a small shop: the demo theme's markup, cacheable ------------------------------------

SHOP_PAGE = b"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title></head>
<body><div data-edge-slot="top-banner"></div>
<section class="hero" data-edge-slot="home-hero"><h1>Handmade, made to last.</h1></section>
<ol class="products"><li class="product" data-product-id="p1001">A</li><li class="product" data-product-id="p1002">B</li></ol>
<div data-edge-slot="profile-form"></div></body></html>"""
SHOP_CACHE = "public, max-age=300, s-maxage=600"
STRICT_SCRIPTS = "script-src 'nonce-Zm9v+YmFy/0=' 'strict-dynamic'; object-src 'none'"


class Shop(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(SHOP_PAGE)))
        self.send_header("Cache-Control", SHOP_CACHE)
        self.send_header("ETag", '"shop-v1"')
        if "csp=" in self.path:  # a strict, nonce-based policy
            self.send_header("Content-Security-Policy", f"default-src 'self'; {STRICT_SCRIPTS}")
        self.end_headers()
        self.wfile.write(SHOP_PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def shop() -> Iterator[str]:
    with serving(Shop) as url:
        yield url


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_feed(tmp_path_factory.mktemp("feed") / "catalog.csv")


def make_app(tmp: Path, upstream: str, feed: Path, **settings: Any) -> EdgeApp:
    config = Config(
        upstream=upstream,
        rules=str(ROOT / "rules"),
        snippets=str(ROOT / "snippets"),
        catalog=str(feed),
        store=f"sqlite:{tmp / 'profiles.db'}",
        secret="browser-decide-secret",
        ingest_token=TOKEN,
        avg_order_value=100.0,
        **settings,
    )
    app = create_app(config)
    assert app.rules.ok, app.rules.errors
    return app


@pytest.fixture
async def app(tmp_path: Path, shop: str, feed: Path) -> AsyncIterator[EdgeApp]:
    made = make_app(tmp_path, shop, feed)
    yield made
    await made.recorder.flush()
    await made.store.close()


class Browser:
    """A browser's requests to the sidecar, in process: keeps its cookies."""

    def __init__(self, app: EdgeApp, **headers: str) -> None:
        self.app = app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://shop.test",
            headers={**CHROME, **headers},
        )

    @property
    def id(self) -> str:
        return (self.client.cookies.get("edge_vid") or "").split(".")[0]

    async def decide(self, path: str = "/", **params: str) -> dict[str, Any]:
        reply = await self.client.get("/_edge/decide", params={"path": path, **params})
        assert reply.status_code == 200, reply.text
        assert reply.headers["cache-control"] == "private, no-store"
        assert reply.headers["vary"] == "Cookie"
        assert reply.headers["content-type"] == "application/json"
        return reply.json()

    async def arrive(self) -> None:
        """The first request gives the cookie; the second stores the profile."""
        await self.decide("/")
        assert self.id, "no visitor cookie from /_edge/decide"
        await self.decide("/")
        await self.app.recorder.flush()

    async def beacons(self, *events: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.client.post(
            "/_edge/events", json={"events": list(events)}, headers=headers
        )

    async def profile(self) -> dict[str, Any]:
        await self.app.recorder.flush()
        reply = await self.client.get(
            "/_edge/profile", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        return reply.json().get("profile") or {}

    async def close(self) -> None:
        await self.client.aclose()


async def ingest(app: EdgeApp, *events: dict[str, Any]) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://shop.test"
    ) as client:
        reply = await client.post(
            "/_edge/ingest",
            json={"events": list(events)},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert reply.status_code == 200, reply.text


def customer(placement: str, held_out: bool) -> str:
    """A customer id whose unit is (or is not) in *placement*'s 10% holdout."""
    for n in _customers:
        name = f"customer-{n}"
        if in_holdout(f"cust:{name}", placement, 0.1) == held_out:
            return name
    raise AssertionError("unreachable")


def order(visitor: Browser, user_id: str, n: int, days_ago: float, total: float) -> dict[str, Any]:
    return {
        "event": "Order Completed",
        "anonymous_id": visitor.id,
        "user_id": user_id,
        "order_id": f"{user_id}-{n}",
        "total": total,
        "ts": int(time.time() - days_ago * DAY),
        "products": [{"product_id": "p1001", "category": "shoes", "price": total}],
    }


async def vip(app: EdgeApp, held_out: bool = False, **cookies: str) -> Browser:
    visitor = Browser(app)
    for name, value in cookies.items():
        visitor.client.cookies.set(name, value)
    await visitor.arrive()
    user = customer("hero-vip", held_out)
    await ingest(app, *[order(visitor, user, n, 10 + 20 * n, 320.0) for n in range(5)])
    return visitor


async def lapsed(app: EdgeApp) -> Browser:
    visitor = Browser(app)
    await visitor.arrive()
    await ingest(app, order(visitor, customer("hero-lapsed", False), 0, 120, 80.0))
    return visitor


def by_placement(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["placement"]: e for e in answer["edits"]}


# --- GET /_edge/decide -------------------------------------------------------------------


async def test_a_vip_gets_the_vip_hero_with_a_token(app: EdgeApp) -> None:
    visitor = await vip(app)
    answer = await visitor.decide("/")
    assert answer["v"] == 1 and answer["consent"] is True
    assert abs(answer["now"] - time.time()) < 60
    assert answer["css"] == "/_edge/static/edge.css"
    hero = by_placement(answer)["hero-vip"]
    assert hero["slot"] == "home-hero" and hero["selector"] == HERO
    assert hero["arm"] == "default" and hero["action"] == "set_inner_content"
    assert "edge-hero--vip" in hero["html"] and "Welcome back." in hero["html"]
    exposure = check_token(app.identity, hero["token"], visitor.id, int(time.time()))
    assert (exposure.placement, exposure.arm) == ("hero-vip", "default")
    # the same decision as the server path's: the exposure is recorded (arm, caps)
    arms = (await visitor.profile())["arms"]
    assert arms["hero-vip"][0] == "default"
    await visitor.close()


async def test_a_lapsed_customer_gets_the_comeback_hero_and_the_timed_offer(app: EdgeApp) -> None:
    visitor = await lapsed(app)
    answer = await visitor.decide("/")
    edits = by_placement(answer)
    assert "edge-hero--lapsed" in edits["hero-lapsed"]["html"]
    offer = edits["comeback-offer"]
    assert offer["selector"] == "[data-edge-slot=top-banner]"
    assert "data-edge-countdown" in offer["html"]
    assert "hero-vip" not in edits
    profile = await visitor.profile()
    assert "comeback-offer" in profile["offers"]  # the deadline runs from this exposure
    await visitor.close()


async def test_a_held_out_vip_gets_a_holdout_entry_and_no_block(app: EdgeApp) -> None:
    visitor = await vip(app, held_out=True)
    answer = await visitor.decide("/")
    assert "hero-vip" not in by_placement(answer)
    [held] = [h for h in answer["holdouts"] if h["placement"] == "hero-vip"]
    assert held["slot"] == "home-hero" and held["selector"] == HERO
    exposure = check_token(app.identity, held["token"], visitor.id, int(time.time()))
    assert exposure.arm == "holdout"
    assert (await visitor.profile())["arms"]["hero-vip"][0] == "holdout"
    await visitor.close()


async def test_a_crawler_gets_nothing_and_no_cookie(app: EdgeApp) -> None:
    bot = Browser(app, **{"User-Agent": GOOGLEBOT})
    reply = await bot.client.get("/_edge/decide", params={"path": "/"})
    assert reply.status_code == 200 and "set-cookie" not in reply.headers
    answer = reply.json()
    assert answer["edits"] == [] and answer["holdouts"] == []
    await bot.close()


async def test_a_new_visitor_gets_the_cookie_and_the_anonymous_decision(app: EdgeApp) -> None:
    visitor = Browser(app)
    reply = await visitor.client.get("/_edge/decide", params={"path": "/"})
    assert reply.headers["set-cookie"].startswith("edge_vid=")
    edits = by_placement(reply.json())
    # not a customer: the profiling form, the shelves in the shop's order, no hero
    assert set(edits) == {"profiling-form", "shelves-by-interest"}
    assert edits["shelves-by-interest"]["order"] == []
    assert 'name="csrf"' in edits["profiling-form"]["html"]
    await visitor.close()


async def test_a_category_list_is_reordered_by_the_server_paths_ordering(app: EdgeApp) -> None:
    visitor = await vip(app)  # a big spender: the most expensive first
    category = PRODUCTS[0].category
    answer = await visitor.decide(f"/c/{category}")
    reorder = by_placement(answer)["order-big-spenders"]
    assert reorder["action"] == "reorder" and reorder["selector"] == "ol.products"
    assert reorder["items"] == ":scope > *" and reorder["key"] == "data-product-id"
    assert "html" not in reorder
    prices = {p.id: p.price for p in PRODUCTS}
    in_category = [p.id for p in PRODUCTS if p.category == category]
    assert sorted(reorder["order"]) == sorted(in_category)
    shown = [prices[i] for i in reorder["order"]]
    assert shown == sorted(shown, reverse=True)
    # the page's own items when the snippet names them
    page = [p.id for p in PRODUCTS[:4]]
    answer = await visitor.decide(f"/c/{category}", items=",".join(page))
    named = by_placement(answer)["order-big-spenders"]["order"]
    assert sorted(named) == sorted(page)
    assert [prices[i] for i in named] == sorted((prices[i] for i in page), reverse=True)
    await visitor.close()


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "path: give the page's path"),
        ("https://elsewhere.example/", "single `/`"),
        ("//elsewhere.example/", "single `/`"),
        ("/a\x01b", "control characters"),
    ],
)
async def test_a_bad_path_is_a_400_naming_it(app: EdgeApp, path: str, problem: str) -> None:
    visitor = Browser(app)
    reply = await visitor.client.get("/_edge/decide", params={"path": path})
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"] == "bad_path" and problem in body["message"]
    await visitor.close()


# --- tokens --------------------------------------------------------------------------


def test_tokens_are_checked_forged_expired_and_for_their_visitor_only(app: EdgeApp) -> None:
    now = int(time.time())
    good = token(app.identity, "visitor-a", "hero-vip", "default", now)
    assert check_token(app.identity, good, "visitor-a", now).placement == "hero-vip"
    payload, tag = good.split(".")
    forged = token(app.identity, "visitor-a", "hero-vip", "holdout", now).split(".")[0] + "." + tag
    for text, why in [
        (forged, "signature does not verify"),
        (payload + "." + tag[:-2] + ("AA" if tag[-2:] != "AA" else "BB"), "signature"),
        ("nonsense", "not an exposure token"),
        (token(app.identity, "visitor-b", "hero-vip", "default", now), "another visitor"),
        (token(app.identity, "visitor-a", "hero-vip", "default", now - 2 * DAY), "expired"),
    ]:
        with pytest.raises(BadToken, match=why):
            check_token(app.identity, text, "visitor-a", now)


# --- beacons ---------------------------------------------------------------------------


def arm(profile: dict[str, Any], placement: str) -> dict[str, Any]:
    """An arm record of ``/_edge/profile`` by its fields' names."""
    names = ArmRecord.__struct_fields__  # (the store's array: fields in declared order)
    return dict(zip(names, profile["arms"][placement], strict=False))


async def test_view_and_click_beacons_count_on_the_arm(app: EdgeApp) -> None:
    visitor = await vip(app)
    hero = by_placement(await visitor.decide("/"))["hero-vip"]
    link = next(iter(re.findall(r'href="(/[^"]*)"', hero["html"])))
    viewed = {"event": "Placement Viewed", "token": hero["token"]}
    reply = await visitor.beacons(viewed, viewed)
    assert reply.status_code == 202, reply.text
    clicked = {"event": "Placement Clicked", "token": hero["token"], "href": link}
    assert (await visitor.beacons(clicked)).status_code == 202
    record = arm(await visitor.profile(), "hero-vip")
    assert (record["views"], record["clicks"]) == (2, 1)
    # the click is counted once: the page view of the link that follows adds nothing
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://shop.test",
        headers={**CHROME, "Accept": "text/html"},
        cookies=visitor.client.cookies,
    ) as page:
        assert (await page.get(link)).status_code == 200
    await app.recorder.flush()
    assert arm(await visitor.profile(), "hero-vip")["clicks"] == 1
    await visitor.close()


async def test_a_held_out_visitor_reports_the_original_slot_seen(app: EdgeApp) -> None:
    visitor = await vip(app, held_out=True)
    [held] = (await visitor.decide("/"))["holdouts"]
    reply = await visitor.beacons({"event": "Placement Viewed", "token": held["token"]})
    assert reply.status_code == 202
    record = arm(await visitor.profile(), "hero-vip")
    assert (record["arm"], record["views"], record["clicks"]) == ("holdout", 1, 0)
    await visitor.close()


async def test_a_new_visitors_first_beacon_finds_its_exposure(app: EdgeApp) -> None:
    visitor = Browser(app)
    form = by_placement(await visitor.decide("/"))["profiling-form"]  # the first request
    reply = await visitor.beacons({"type": "Placement Viewed", "token": form["token"]})
    assert reply.status_code == 202, reply.text  # ("type" is read as "event")
    assert arm(await visitor.profile(), "profiling-form")["views"] == 1
    await visitor.close()


async def test_beacons_with_a_bad_token_are_refused_and_change_nothing(app: EdgeApp) -> None:
    visitor = await vip(app)
    other = await vip(app)
    hero = by_placement(await visitor.decide("/"))["hero-vip"]
    theirs = by_placement(await other.decide("/"))["hero-vip"]
    now = int(time.time())
    old = token(app.identity, visitor.id, "hero-vip", "default", now - 2 * DAY)
    tag = hero["token"].split(".")[1]
    forged = token(app.identity, visitor.id, "cart-reminder", "default", now).split(".")[0]
    for bad, why in [
        (theirs["token"], "another visitor"),
        (old, "expired"),
        (forged + "." + tag, "signature does not verify"),
        ("", "needs the token"),
    ]:
        good = {"event": "Placement Viewed", "token": hero["token"]}
        reply = await visitor.beacons(good, {"event": "Placement Viewed", "token": bad})
        assert reply.status_code == 422, reply.text
        assert why in reply.json()["message"] and "events[1]" in reply.json()["message"]
    # a placement named by the browser itself is not believed: the token's counts
    named = {"event": "Placement Viewed", "token": hero["token"], "placement_id": "cart-reminder"}
    assert (await visitor.beacons(named)).status_code == 202
    profile = await visitor.profile()
    assert arm(profile, "hero-vip")["views"] == 1 and "cart-reminder" not in profile["arms"]
    await visitor.close()
    await other.close()


async def test_gpc_and_no_consent_record_nothing(tmp_path: Path, shop: str, feed: Path) -> None:
    app = make_app(tmp_path, shop, feed, consent_cookie="cookie_consent")
    visitor = Browser(app)
    visitor.client.cookies.set("cookie_consent", "yes")
    await visitor.arrive()
    form = by_placement(await visitor.decide("/"))["profiling-form"]
    viewed = {"event": "Placement Viewed", "token": form["token"]}
    engaged = {"event": "Product Engaged", "product_id": "p1001", "dwell_ms": 4000}
    gpc = await visitor.beacons(viewed, engaged, **{"Sec-GPC": "1"})
    assert (gpc.status_code, gpc.content) == (204, b"")
    visitor.client.cookies.set("cookie_consent", "no")
    refused = await visitor.beacons(viewed, engaged)
    assert (refused.status_code, refused.content) == (204, b"")
    visitor.client.cookies.set("cookie_consent", "yes")
    profile = await visitor.profile()
    assert arm(profile, "profiling-form")["views"] == 0 and profile.get("dwell_count", 0) == 0
    # with consent (and no GPC) the same batch counts
    assert (await visitor.beacons(viewed, engaged)).status_code == 202
    profile = await visitor.profile()
    assert arm(profile, "profiling-form")["views"] == 1 and profile["dwell_count"] == 1
    await visitor.close()
    await app.recorder.flush()
    await app.store.close()


# --- pages personalized in the browser ---------------------------------------------------


async def page(
    app: EdgeApp, path: str = "/", client: httpx.AsyncClient | None = None
) -> httpx.Response:
    headers = {**CHROME, "Accept": "text/html,*/*;q=0.8", "Accept-Encoding": "identity"}
    if client is not None:
        return await client.get(path, headers=headers)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://shop.test"
    ) as fresh:
        return await fresh.get(path, headers=headers)


HOME_SLOTS = (
    "[data-edge-slot=home-hero],[data-edge-slot=top-banner],"
    "[data-edge-slot=profile-form],[data-edge-slot=home-shelves]"
)


async def test_a_browser_page_keeps_the_shops_caching_and_carries_the_script_tag(
    tmp_path: Path, shop: str, feed: Path
) -> None:
    app = make_app(tmp_path, shop, feed, browser_pages=["home"], consent_cookie="ok")
    visitor = await vip(app, ok="1")
    reply = await page(app, "/", visitor.client)
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == SHOP_CACHE  # s-maxage and public kept
    assert reply.headers["etag"] == '"shop-v1"'
    assert "set-cookie" not in reply.headers and "vary" not in reply.headers
    tag = reply.text[reply.text.index("<script") : reply.text.index("</head>")]
    assert tag == (
        f'<script src="{browser.SNIPPET_URL}" data-edge-slots="{HOME_SLOTS}" '
        'data-consent-cookie="ok" data-consent-values="1,yes,true,all"></script>'
    )
    # the shop's page, byte for byte, but for the tag: no block, no marker
    assert reply.content.replace(tag.encode(), b"") == SHOP_PAGE
    # the snippet's /_edge/decide has what the server would have shown
    assert "hero-vip" in by_placement(await visitor.decide("/"))
    # a new visitor gets no cookie with the page (it comes with /_edge/decide)
    first = await page(app, "/")
    assert "set-cookie" not in first.headers and first.headers["cache-control"] == SHOP_CACHE
    # a crawler gets the same page: a CDN keeps whichever copy it was asked for first
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://shop.test"
    ) as bot:
        crawled = await bot.get("/", headers={"User-Agent": GOOGLEBOT, "Accept": "text/html"})
    assert crawled.content == reply.content
    # under the shop's nonce-based policy the tag carries the page's nonce
    strict = await page(app, "/?csp=1", visitor.client)
    assert strict.text.count("<script") == 1
    assert '<script nonce="Zm9v+YmFy/0=" src="/_edge/edge.' in strict.text
    # without injection the page is the shop's own (the theme includes the snippet)
    app.reload(msgspec.structs.replace(app.config, inject_snippet=False))
    assert (await page(app, "/", visitor.client)).content == SHOP_PAGE
    await visitor.close()
    await app.recorder.flush()
    await app.store.close()


async def test_render_browser_on_a_placement_moves_its_page_types_to_the_browser(
    tmp_path: Path, shop: str, feed: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    placements = (rules / "placements.toml").read_text()
    marked = placements.replace('id = "hero-vip"\n', 'id = "hero-vip"\nrender = "browser"\n')
    assert marked != placements
    (rules / "placements.toml").write_text(marked)
    app = make_app(tmp_path, shop, feed)
    app.reload(msgspec.structs.replace(app.config, rules=str(rules)))
    assert app.rules.ok, app.rules.errors
    visitor = await vip(app)
    home = await page(app, "/", visitor.client)
    assert home.headers["cache-control"] == SHOP_CACHE and 'data-edge-slots="' in home.text
    assert "edge-hero" not in home.text and "shop-edge" not in home.text
    # a category page is still the sidecar's: personalized, private, with the marker
    category = await page(app, f"/c/{PRODUCTS[0].category}", visitor.client)
    assert category.headers["cache-control"].startswith("private")
    head = category.text[category.text.index("<head>") + len("<head>") :]
    assert head.startswith('<meta name="shop-edge" content="done">')
    assert "<script" not in category.text
    await visitor.close()
    await app.recorder.flush()
    await app.store.close()


async def test_a_server_personalized_page_starts_its_head_with_the_marker(app: EdgeApp) -> None:
    visitor = await vip(app)
    reply = await page(app, "/", visitor.client)
    assert "edge-hero--vip" in reply.text and reply.headers["cache-control"].startswith("private")
    head = reply.text[reply.text.index("<head>") + len("<head>") :]
    assert head.startswith('<meta name="shop-edge" content="done"><meta charset="utf-8">')
    assert reply.text.count('name="shop-edge"') == 1
    await visitor.close()


# --- the snippet asset -------------------------------------------------------------------


async def test_the_snippet_is_versioned_minified_precompressed_and_immutable(
    app: EdgeApp,
) -> None:
    source = (ROOT / "static" / "edge.js").read_bytes()
    asset = browser.ASSET
    assert f"/_edge/edge.{hashlib.sha256(asset.body).hexdigest()[:10]}.js" == browser.SNIPPET_URL
    assert len(asset.body) < len(source)  # minified
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://shop.test"
    ) as client:
        for coding, decode in (
            ("br", brotli.decompress),
            ("gzip", gzip.decompress),
            ("identity", bytes),
        ):
            reply = await client.get(browser.SNIPPET_URL, headers={"Accept-Encoding": coding})
            assert reply.status_code == 200
            assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
            assert reply.headers["vary"] == "Accept-Encoding"
            assert reply.headers.get("content-encoding", "identity") == coding
            raw = await _raw(client, browser.SNIPPET_URL, coding)
            assert decode(raw) == asset.body
        etag = reply.headers["etag"]
        again = await client.get(browser.SNIPPET_URL, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        # another version's URL (a page cached across a deploy): this one, not cached
        stale = await client.get("/_edge/edge.0123456789.js")
        assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
        # the unminified file keeps working for themes that include it by hand
        plain = await client.get("/_edge/static/edge.js")
        assert plain.status_code == 200 and plain.content == source
        assert plain.headers["cache-control"] == "public, max-age=300"


async def _raw(client: httpx.AsyncClient, url: str, coding: str) -> bytes:
    """The body as sent (httpx would decode it)."""
    async with client.stream("GET", url, headers={"Accept-Encoding": coding}) as reply:
        return b"".join([chunk async for chunk in reply.aiter_raw()])


def test_the_snippet_is_at_most_6_kb_gzipped() -> None:
    asset = browser.SnippetAsset.load(ROOT / "static" / "edge.js")  # the file as it is now
    assert len(gzip.compress(asset.body, 9)) <= 6144, len(gzip.compress(asset.body, 9))
    assert asset.gzip == gzip.compress(asset.body, 9, mtime=0)


# --- the arm record's views and clicks (pure) ------------------------------------------


def test_views_add_up_when_two_cookies_merge_and_clicks_count_once_per_showing() -> None:
    from edge.profiles import events as ev
    from edge.profiles.model import link_hash, new_profile

    t0 = 1_800_000_000
    a, b = new_profile("a", t0), new_profile("b", t0)
    for p in (a, b):
        shown = ev.PlacementShown(placement_id="hero", ts=t0, arm="warm", links=[link_hash("/x")])
        ev.apply(p, shown, t0, ev.Source.OBSERVED)
        ev.apply(p, ev.PlacementViewed(token="t", placement_id="hero"), t0, ev.Source.BROWSER)
    ev.merge(a, b)
    assert a.arms["hero"].views == 2
    click = ev.PlacementClicked(token="t", placement_id="hero", href="/x?from=hero")
    ev.apply(a, click, t0 + 5, ev.Source.BROWSER)
    ev.apply(a, click, t0 + 6, ev.Source.BROWSER)  # the same showing: once
    ev.apply(a, ev.PageViewed(path="/x"), t0 + 7, ev.Source.BROWSER)  # nor inferred again
    assert a.arms["hero"].clicks == 1
    offsite = ev.PlacementClicked(token="t", placement_id="hero", href="https://elsewhere.example/")
    ev.apply(a, offsite, t0 + 8, ev.Source.BROWSER)  # only the beacon can tell this one
    assert a.arms["hero"].clicks == 2


async def test_a_browser_page_type_the_rules_do_not_have_is_named_in_the_log(
    tmp_path: Path, shop: str, feed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(tmp_path, shop, feed, browser_pages=["categry"])
    with caplog.at_level("WARNING", logger="edge.decide"):
        assert (await page(app, "/")).status_code == 200
    [line] = [r.getMessage() for r in caplog.records if "browser_pages" in r.getMessage()]
    assert "'categry' is not a page type" in line and "category" in line
    await app.store.close()


async def test_a_profiling_answer_as_an_event_is_checked_as_the_forms_post(
    tmp_path: Path, shop: str, feed: Path
) -> None:
    """The snippet sends the form's answer to /_edge/events: a question the rules do not
    ask, or an answer the question does not accept, is refused whole (422, naming it);
    a good one is stored normalised, as the form's POST stores it; a decline too."""
    app = make_app(tmp_path, shop, feed)
    visitor = Browser(app)
    await visitor.arrive()
    answer = {"event": "Profile Form Answered"}
    unknown = await visitor.beacons({**answer, "question": "shoe_size", "answer": "42"})
    assert unknown.status_code == 422 and "shoe_size" in unknown.json()["message"]
    wrong = await visitor.beacons(
        {**answer, "question": "city", "answer": "Roma"},
        {**answer, "question": "gender", "answer": "martian"},
    )
    assert wrong.status_code == 422 and "events[1].answer" in wrong.json()["message"]
    assert (await visitor.profile()).get("answers", {}) == {}  # nothing of that batch
    good = await visitor.beacons(
        {**answer, "question": "gender", "answer": "  FEMALE "},
        {**answer, "question": "city", "answer": "-"},
    )
    assert good.status_code == 202
    assert (await visitor.profile())["answers"] == {"gender": "female", "city": "-"}
    await visitor.close()
    await app.recorder.flush()
    await app.store.close()


# --- the answer's pre-encoded entries ----------------------------------------------------


@pytest.mark.parametrize(
    "content",
    ['<a href="/c/x?a=1&b=2">Ciao \u00e8 \u2028 \\ "q" \x07</a>', b"<p>caf\xc3\xa9 \xff</p>", ""],
)
def test_a_pre_encoded_entry_is_the_json_of_the_edit_and_is_made_once(
    content: str | bytes,
) -> None:
    """An edit's JSON object, encoded once per block and completed with its token, is
    what encoding the whole object gives (quotes, backslashes, controls, non-ASCII,
    bytes content that is not UTF-8), and the second request gets the same bytes."""
    from edge.rewrite.edits import Edit
    from edge.rewriting import SlotEdit

    edit = SlotEdit("hero-x", "home-hero", Edit(HERO, "set_inner_content", content))
    head = browser._encode_entry(edit, "b", HERO)
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    tok = browser._b64(b"\x00\xff payload")
    whole = msgspec.json.encode(
        {
            "placement": "hero-x",
            "arm": "b",
            "slot": "home-hero",
            "selector": HERO,
            "action": "set_inner_content",
            "html": text,
            "token": tok,
        }
    )
    assert head + b',"token":"' + tok.encode() + b'"}' == whole
    assert browser._encode_entry(edit, "b", HERO) is head
    assert browser._encode_entry(edit, "a", HERO) != head  # another arm, another entry

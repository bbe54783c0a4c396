"""The browser snippet (static/edge.js) in a real browser: Debian's Chromium driven by
Playwright, through a real `edge serve` in front of a small shop of the test's own (a
threaded HTTP server: cached home and category pages the sidecar leaves to the browser,
product pages it personalizes itself, a single-page view, a page under a strict CSP).

What a shop's front-end developer expects: the page the snippet makes is the page the
sidecar makes (every action of the rewriter, compared in the DOM); the VIP and the
lapsed visitor get their blocks on a cached page, a held-out one the original; a page the sidecar personalized is left alone; a single-page
navigation is decided again; beacons go only with consent and never with GPC, and turn
the dwell and recommendation-click segments true; a strict CSP with a nonce holds; a
slow /decide shows the original at the cap; an expired offer hides; no console errors
and no layout shift from swapping a slot that keeps its size. Screenshots go to the
test's tmp dir."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import msgspec
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Route,
)

from edge.demo.catalog import PRODUCTS_BY_ID
from edge.placements import in_holdout
from edge.profiles.model import ArmRecord, Profile
from edge.rules import RequestInfo, ShopStats, load_rules
from tests._chromium import CHROMIUM
from tests.conftest import ROOT, EdgeProcess, fetch, start_edge
from tests.test_activities import (
    AVG_ORDER_VALUE,
    ORIGINAL_HERO,
    TOKEN,
    Visitor,
    edge_env,
    give_orders,
    order,
    stop_edge,
    vip_orders,
    wait_for,
    write_feed,
)

CONSENT = "shop_consent"
NONCE = "r4nd0m-n0nce-2026"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (tests/run.sh installs it)",
    ),
]

# --- the shop: its own theme, slots of a fixed size --------------------------------------

SHOP_CSS = b"""
body { margin: 0; font: 16px/1.4 system-ui, sans-serif; }
.container { max-width: 960px; margin: 0 auto; padding: 0 16px; }
.edge-banner { box-sizing: border-box; height: 64px; overflow: hidden; background: #f1ebe2; }
.hero { height: 320px; overflow: hidden; background: #efe6da; }
ol.products, .recs ul { display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px;
  list-style: none; padding: 0; }
ol.products li, .recs li { height: 80px; border: 1px solid #ddd; }
footer { height: 900px; }
"""

# A single-page front end: a link swaps the view without loading a page.
SPA_JS = b"""
document.addEventListener("click", function (event) {
  var link = event.target.closest("a[data-spa]");
  if (!link) return;
  event.preventDefault();
  var href = link.getAttribute("href");
  if (location.pathname === href) history.replaceState({}, "", href);
  else history.pushState({}, "", href);
  document.querySelector("main").innerHTML =
    '<p><a data-spa href="/">Home (in this page)</a></p>' +
    '<section class="hero" data-edge-slot="home-hero"><div class="container">' +
    "<h1>Fatto a mano, fatto per durare.</h1></div></section>";
});
"""

FAVICON = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>'
# One page, two places: the slots of TWIN_RULES, each with another of the rewriter's
# actions; /twin/server is personalized by the sidecar, /twin/browser by the snippet.
TWIN_MAIN = (
    '<div id="t-inner"><p>inner</p></div>\n'
    '<div id="t-replace"><p>replaced</p></div>\n'
    '<p class="t-before">one</p> <p class="t-before">two</p>\n'
    '<div id="t-after">after</div>\n'
    '<ul id="t-prepend"><li>first</li></ul>\n'
    '<ul id="t-append"><li>last</li></ul>\n'
    '<ol class="twin">\n'
    + "".join(
        f'  <li data-product-id="{p}">{p}</li>\n' for p in [f"p{1000 + i}" for i in range(1, 7)]
    )
    + "  <li>no id</li>\n</ol>"
)
TWIN_SLOTS = {
    "t-inner": ("#t-inner", "set_inner_content"),
    "t-replace": ("#t-replace", "replace"),
    "t-before": (".t-before", "before"),
    "t-after": ("#t-after", "after"),
    "t-prepend": ("#t-prepend", "prepend"),
    "t-append": ("#t-append", "append"),
}
HOME_SLOTS = "[data-edge-slot=home-hero],[data-edge-slot=top-banner]"
PRODUCTS = [f"p{1000 + i}" for i in range(1, 7)]


def layout(title: str, main: str, head: str = "", main_attrs: str = "") -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="/shop.css">'
        f"{head}</head><body>"
        '<header class="container"><a href="/">Bottega</a> <a href="/c/scarpe">Scarpe</a></header>'
        '<div class="edge-banner" data-edge-slot="top-banner"></div>\n'
        f"<main{main_attrs}>{main}</main><footer></footer></body></html>"
    ).encode()


def home(head: str = "", main_end: str = "") -> bytes:
    hero = (
        '<section class="hero" data-edge-slot="home-hero"><div class="container">'
        f"<h1>{ORIGINAL_HERO}</h1><p>Scarpe, borse e oggetti per la casa.</p></div></section>"
    )
    return layout("Home", hero + main_end, head)


ALL_HOME_SLOTS = (
    '<div data-edge-slot="home-shelves"></div><aside data-edge-slot="profile-form"></aside>'
)
"""The home slots of the repository's rules that home() leaves out (the snippet asks
once every listed slot is parsed)."""


def category(slug: str) -> bytes:
    items = "".join(
        f'<li class="product" data-product-id="{p}"><a href="/p/{p}">{p}</a></li>' for p in PRODUCTS
    )
    spa = '<p><a data-spa href="/">Home (in this page)</a></p>'
    return layout(
        f"Category {slug}",
        f'{spa}<ol class="products">{items}</ol>',
        '<script src="/spa.js" defer></script>',
    )


def product(pid: str) -> bytes:
    # The theme includes the snippet itself on every product page; the sidecar
    # personalizes these pages on the server, so the snippet only measures there.
    recs = "".join(
        f'<li data-product-id="{p}"><a href="/p/{p}">{p}</a></li>' for p in PRODUCTS if p != pid
    )
    main = (
        f"<h1>Product {pid}</h1>"
        '<aside data-edge-slot="profile-form"></aside>'
        f'<section class="recs" data-edge-list="recommendations"><ul>{recs}</ul></section>'
    )
    head = f'<script src="/_edge/static/edge.js" data-consent-cookie="{CONSENT}" defer></script>'
    return layout(f"Product {pid}", main, head, f' data-edge-product="{pid}"')


def strict(slots: str) -> tuple[bytes, str]:
    """A page under a strict CSP: scripts only with the nonce, no inline styles."""
    head = (
        f'<script nonce="{NONCE}" src="/_edge/static/edge.js" data-edge-slots="{slots}"'
        f' data-consent-cookie="{CONSENT}" defer></script>'
    )
    policy = (
        f"default-src 'self'; script-src 'nonce-{NONCE}'; style-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    return home(head), policy


PAUSE = 2.0
"""How long the slowly streamed home page waits before its last bytes (the page is
parsed but for them: DOMContentLoaded comes after)."""


def preloaded(path: str) -> str:
    """A theme's preload of its page's decision (the URL the snippet fetches)."""
    href = "/_edge/decide?path=" + quote(path, safe="")
    return f'<link rel="preload" as="fetch" crossorigin href="{href}">'


class ShopHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def slowly(self, body: bytes) -> None:
        """*body* all but its end at once, the end PAUSE seconds later (no length: the
        connection's end ends it)."""
        cut = body.rindex(b"</body>")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        time.sleep(PAUSE)
        self.wfile.write(body[cut:])

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/" and "slow" in query:  # every slot the rules list for home
            self.slowly(home(main_end=ALL_HOME_SLOTS))
            return
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if path == "/shop.css":
            body, headers = SHOP_CSS, {"Content-Type": "text/css"}
        elif path == "/favicon.ico":
            body, headers = FAVICON, {"Content-Type": "image/svg+xml"}
        elif path == "/spa.js":
            body, headers = SPA_JS, {"Content-Type": "text/javascript"}
        elif path == "/" and "form" in query:  # with the profiling form's slot
            body = home(main_end=ALL_HOME_SLOTS)
        elif path == "/" and "preload" in query:
            body = home(preloaded("/?preload"))
        elif path == "/" and "csp" in query:
            body, policy = strict(HOME_SLOTS)
            headers["Content-Security-Policy"] = policy
        elif path == "/":
            body = home()
        elif path.startswith("/c/"):
            body = category(path[3:])
        elif path.startswith("/p/"):
            body = product(path[3:])
        elif path.startswith("/twin/"):
            body = layout("Twins", TWIN_MAIN)
        else:
            self.send_error(404)
            return
        if "Content-Security-Policy" not in headers and path in ("/", "/c/scarpe"):
            headers["Cache-Control"] = "public, max-age=300"  # a CDN may keep these
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def shop() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ShopHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def edge(shop: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    catalog = write_feed(tmp_path_factory.mktemp("feed") / "catalog.csv")
    env = {
        **edge_env(catalog),
        "EDGE_BROWSER_PAGES": "home,category",  # product pages: the sidecar's own
        "EDGE_CONSENT_COOKIE": CONSENT,
    }
    proc = start_edge(shop, env=env)
    yield proc
    stop_edge(proc)


# --- watching a page -----------------------------------------------------------------------

# Installed before any page script: layout shifts and CSP violations, kept on window.
WATCH = """
window.__shifts = 0; window.__violations = [];
new PerformanceObserver(function (list) {
  list.getEntries().forEach(function (e) {
    if (e.hadRecentInput) return;
    window.__shifts += e.value;
    window.__shifted = (window.__shifted || []).concat(e.sources.map(function (s) {
      return (s.node && s.node.outerHTML || "?").slice(0, 80) + " " +
        JSON.stringify([s.previousRect, s.currentRect]) + (s.node && s.node.parentNode ? s.node.parentNode.outerHTML.slice(0, 200) : "");
    }));
  });
}).observe({type: "layout-shift", buffered: true});
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
// What showed when the document was parsed (the snippet had run: it is deferred).
document.addEventListener("DOMContentLoaded", function () {
  var seen = function (selector) {
    var el = document.querySelector(selector);
    return el ? getComputedStyle(el).visibility : null;
  };
  window.__atDcl = {hero: seen("[data-edge-slot=home-hero]"), header: seen("header")};
});
// Every beacon the page sends to /_edge/events, counted where a navigation keeps it
// (the browser does not always report a beacon sent as the page goes).
(function () {
  function count(url) {
    if (String(url).indexOf("/_edge/events") < 0) return;
    localStorage.setItem("beacons", String(Number(localStorage.getItem("beacons") || 0) + 1));
  }
  var beacon = navigator.sendBeacon;
  navigator.sendBeacon = function (url, data) { count(url); return beacon.call(navigator, url, data); };
  var fetch = window.fetch;
  window.fetch = function (url, options) {
    if (options && options.method === "POST") count(url);
    return fetch.apply(this, arguments);
  };
})();
"""


class Watch:
    """What a page reports as wrong (console errors, uncaught exceptions, failed loads),
    and the requests it makes to the sidecar's /decide and /events."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.decides: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("request", self._request)
        page.on(
            "response",
            lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"),
        )

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _failed(self, request: Request) -> None:
        if request.failure != "net::ERR_ABORTED":  # a navigation cancels what was loading
            self.errors.append(f"failed: {request.url} {request.failure}")

    def _request(self, request: Request) -> None:
        if "/_edge/decide" in request.url:
            self.decides.append(request.url)

    @property
    def beacons(self) -> int:
        """Beacons the snippet sent from this origin in this browser so far."""
        return int(self.page.evaluate("Number(localStorage.getItem('beacons') || 0)"))

    @property
    def shift(self) -> float:
        """The page's cumulative layout shift (what moved: window.__shifted)."""
        return float(self.page.evaluate("window.__shifts"))

    @property
    def violations(self) -> list[str]:
        return list(self.page.evaluate("window.__violations"))


def new_context(
    browser: Browser,
    base: str,
    visitor: Visitor | None = None,
    *,
    consent: bool = True,
    cap: int = 10_000,
    **kw: Any,
) -> BrowserContext:
    """A browser for *visitor* (their cookie), with the shop's consent cookie unless
    not *consent*. The anti-flicker *cap* is the theme's window.shopEdgeConfig: long by
    default, so that a loaded test machine does not turn a swap into the original."""
    context = browser.new_context(locale="en-GB", viewport={"width": 1100, "height": 900}, **kw)
    context.set_default_timeout(10_000)
    context.set_default_navigation_timeout(15_000)
    context.add_init_script(WATCH)
    context.add_init_script(f"window.shopEdgeConfig = {{cap: {cap}}};")
    cookies = []
    if visitor is not None:
        name, _, value = visitor.cookie.partition("=")
        cookies.append({"name": name, "value": value, "url": base})
    if consent:
        cookies.append({"name": CONSENT, "value": "yes", "url": base})
    if cookies:
        context.add_cookies(cookies)  # type: ignore[arg-type]
    return context


@pytest.fixture
def base(edge: EdgeProcess) -> str:
    return f"http://127.0.0.1:{edge.port}"


def shot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    print(f"screenshot: {path}")


def applied(page: Page) -> None:
    """Wait until the snippet applied its decision (polled from here: a page whose
    clock is installed runs no timers of its own)."""
    mark = "performance.getEntriesByName('shop-edge:applied').length"
    until(page, lambda: page.evaluate(mark))


class Shopper(Visitor):
    """A visitor who accepted the shop's consent banner (its cookie on every request)."""

    def __init__(self, port: int) -> None:
        super().__init__(port, Cookie=f"{CONSENT}=yes")

    def profile(self) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {TOKEN}", "Cookie": f"{self.cookie}; {CONSENT}=yes"}
        reply = fetch(self.port, "/_edge/profile", headers=auth)
        return msgspec.json.decode(reply.body).get("profile") or {}


def customer(port: int, placement: str) -> Visitor:
    """A visitor outside *placement*'s holdout, with a first page view stored."""
    while True:
        visitor = Shopper(port)
        visitor.arrive(f"/p/{PRODUCTS[5]}")  # (a page the sidecar personalizes: the cookie)
        if not in_holdout(f"cust:customer-{visitor.id}", placement, 0.1):
            return visitor


def segments(visitor: Visitor) -> set[str]:
    """The segments the repository's rules put *visitor* in, from their stored profile."""
    ruleset, errors = load_rules(ROOT / "rules")
    assert ruleset is not None, errors
    profile = msgspec.convert(visitor.profile(), Profile, strict=False)
    shop = ShopStats(avg_order_value=float(AVG_ORDER_VALUE))
    context = ruleset.context(profile, RequestInfo(), time.time(), shop)
    return set(ruleset.names(ruleset.evaluate(context)))


def until(page: Page, probe: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll *probe* while the page's events are handled (a sync Playwright page hears
    nothing during time.sleep)."""
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"condition not met in {timeout}s"
        page.wait_for_timeout(50)


ARM_FIELDS = ArmRecord.__struct_fields__
"""(``/_edge/profile`` gives an arm record as an array: its fields in declared order)"""


def arm(visitor: Visitor, placement: str) -> dict[str, Any]:
    """The visitor's measurement record of *placement* (edge/profiles/model.py ArmRecord)."""
    record = visitor.profile().get("arms", {}).get(placement)
    return dict(zip(ARM_FIELDS, record, strict=False)) if record else {}


def counted(visitor: Visitor, placement: str, field: str) -> int:
    return int(arm(visitor, placement).get(field, 0))


def decided_path(url: str) -> str | None:
    """The page path a /_edge/decide URL asks about (None: not such a URL)."""
    parts = urlsplit(url)
    if parts.path != "/_edge/decide":
        return None
    return parse_qs(parts.query).get("path", [""])[0]


def hero_text(page: Page) -> str:
    return page.locator("[data-edge-slot=home-hero]").inner_text()


# --- a cached page, personalized in the browser ------------------------------------------


def test_a_cached_home_page_is_personalized_in_the_browser(
    edge: EdgeProcess, base: str, browser: Browser, tmp_path: Path
) -> None:
    vip = customer(edge.port, "hero-vip")
    give_orders(vip, vip_orders(vip))
    lapsed = customer(edge.port, "hero-lapsed")
    give_orders(lapsed, [order(lapsed, 1, 120, 60.0, "p1002")])  # four months ago

    # the sidecar leaves the page as the shop made it, cacheable, with the snippet's tag
    reply = vip.get("/")
    body = reply.body.decode()
    assert ORIGINAL_HERO in body and "edge-hero" not in body
    assert reply.header("cache-control") == "public, max-age=300"
    tag = re.search(r'<script src="(/_edge/edge\.[0-9a-f]{10}\.js)"([^>]*)>', body)
    assert tag is not None, body[:600]
    assert "data-edge-slots=" in tag.group(2)

    for name, visitor, expected in (
        ("vip", vip, "edge-hero--vip"),
        ("lapsed", lapsed, "edge-hero--lapsed"),
    ):
        context = new_context(browser, base, visitor)
        page = context.new_page()
        watch = Watch(page)
        page.goto(base + "/", wait_until="load")
        applied(page)
        hero = page.locator("[data-edge-slot=home-hero]")
        assert hero.locator(f".{expected}").count() == 1, hero.inner_html()
        assert ORIGINAL_HERO not in hero_text(page)
        assert (
            page.evaluate(
                "getComputedStyle(document.querySelector('[data-edge-slot=home-hero]')).visibility"
            )
            == "visible"
        )
        if name == "lapsed":  # the comeback offer in the banner, its countdown ticking
            page.wait_for_function(
                "/^\\(\\d\\d:\\d\\d:\\d\\d\\)$/.test(document.querySelector("
                "'[data-edge-offer] [data-edge-countdown]').textContent.trim())"
            )
        # the swap kept the slots' size: nothing moved
        assert watch.shift == 0.0, page.evaluate("window.__shifted")
        shot(page, tmp_path, f"cached-home-{name}")
        assert len(watch.decides) == 1
        if name == "vip":  # in view for a second: a view; a click on its link: a click
            wait_for(partial(counted, visitor, "hero-vip", "views"))
            with page.expect_navigation(wait_until="load"):
                hero.get_by_role("link", name="See the preview").click()
            wait_for(partial(counted, visitor, "hero-vip", "clicks"))
        assert watch.errors == []
        context.close()


def test_a_held_out_visitor_sees_the_original_and_its_view_counts(
    edge: EdgeProcess, base: str, browser: Browser
) -> None:
    while True:  # a VIP in the VIP hero's 10% holdout: the control group
        held = Shopper(edge.port)
        held.arrive(f"/p/{PRODUCTS[5]}")
        if in_holdout(f"cust:customer-{held.id}", "hero-vip", 0.1):
            break
    give_orders(held, vip_orders(held))
    context = new_context(browser, base, held)
    page = context.new_page()
    watch = Watch(page)
    with page.expect_response(lambda r: decided_path(r.url) == "/") as answer:
        page.goto(base + "/", wait_until="load")
    holdouts = answer.value.json()["holdouts"]
    assert [h["placement"] for h in holdouts] == ["hero-vip"]
    applied(page)
    assert ORIGINAL_HERO in hero_text(page)
    # the original hero in view for a second: a view on the holdout arm
    wait_for(partial(counted, held, "hero-vip", "views"))
    assert arm(held, "hero-vip")["arm"] == "holdout"
    assert watch.errors == []
    context.close()


def test_nothing_is_done_on_a_page_the_sidecar_personalized(
    edge: EdgeProcess, base: str, browser: Browser, tmp_path: Path
) -> None:
    visitor = Shopper(edge.port)
    visitor.arrive(f"/p/{PRODUCTS[5]}")  # (a page the sidecar personalizes: the cookie)
    served = visitor.page(f"/p/{PRODUCTS[0]}")
    assert '<meta name="shop-edge" content="done">' in served
    assert "edge-profile-form" in served  # the server's own swap
    context = new_context(browser, base, visitor)
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{base}/p/{PRODUCTS[0]}", wait_until="load")
    page.wait_for_function("window.shopEdge && window.shopEdge.version")
    page.wait_for_timeout(400)  # longer than the cap: had it swapped, it would have
    assert watch.decides == []
    assert page.locator("form.edge-profile-form").count() == 1  # not doubled
    assert watch.errors == []
    shot(page, tmp_path, "server-personalized")
    context.close()


def test_slots_are_filled_while_the_page_is_still_parsed(
    edge: EdgeProcess, base: str, browser: Browser
) -> None:
    """The tag is not deferred: the snippet asks once the listed slots are parsed and
    fills them then, not at DOMContentLoaded (the page's end comes PAUSE s later)."""
    vip = customer(edge.port, "hero-vip")
    give_orders(vip, vip_orders(vip))
    tag = re.search(r"<script [^>]*edge\.[0-9a-f]{10}\.js[^>]*>", vip.page("/"))
    assert tag is not None and " defer" not in tag.group(0) and " async" not in tag.group(0)
    context = new_context(browser, base, vip)
    context.add_init_script(
        "document.addEventListener('DOMContentLoaded', function () {"
        " window.__heroAtDcl = document.querySelectorAll("
        "'[data-edge-slot=home-hero] .edge-hero--vip').length; });"
    )
    page = context.new_page()
    watch = Watch(page)
    page.goto(base + "/?slow", wait_until="commit")
    page.locator("[data-edge-slot=home-hero] .edge-hero--vip").wait_for()
    assert page.evaluate("document.readyState") == "loading"  # (its end not parsed yet)
    page.wait_for_load_state("load")
    assert page.evaluate("window.__heroAtDcl") == 1
    assert ORIGINAL_HERO not in hero_text(page)
    assert [decided_path(url) for url in watch.decides] == ["/?slow"]
    assert watch.shift == 0.0, page.evaluate("window.__shifted")
    assert watch.errors == []
    context.close()


def test_a_preloaded_decision_is_asked_once(edge: EdgeProcess, base: str, browser: Browser) -> None:
    """A theme's <link rel=preload as=fetch> of the page's decision: the snippet uses it
    (one request, one exposure; no console warning about an unused preload)."""
    vip = customer(edge.port, "hero-vip")
    give_orders(vip, vip_orders(vip))
    context = new_context(browser, base, vip)
    page = context.new_page()
    watch = Watch(page)
    warnings: list[str] = []
    page.on("console", lambda m: m.type == "warning" and warnings.append(m.text))
    page.goto(base + "/?preload", wait_until="load")
    applied(page)
    assert page.locator("[data-edge-slot=home-hero] .edge-hero--vip").count() == 1
    page.wait_for_timeout(3500)  # Chromium names a preload unused after 3 s
    assert [decided_path(url) for url in watch.decides] == ["/?preload"]
    assert not [w for w in warnings if "preload" in w], warnings
    assert watch.errors == []
    context.close()


# --- single-page navigation ------------------------------------------------------------------


def test_a_single_page_navigation_is_decided_again(
    edge: EdgeProcess, base: str, browser: Browser, tmp_path: Path
) -> None:
    vip = customer(edge.port, "hero-vip")
    give_orders(vip, vip_orders(vip))
    context = new_context(browser, base, vip)
    page = context.new_page()
    watch = Watch(page)
    page.goto(base + "/c/scarpe", wait_until="load")
    applied(page)
    assert [decided_path(url) for url in watch.decides] == ["/c/scarpe"]
    # a big spender: the page's own products, the dearest first (the catalogue's prices)
    shown = page.locator("ol.products > li").evaluate_all(
        "items => items.map(li => li.dataset.productId)"
    )
    assert shown == sorted(PRODUCTS, key=lambda p: -PRODUCTS_BY_ID[p].price)
    assert watch.shift == 0.0, page.evaluate("window.__shifted")
    with page.expect_response(lambda r: decided_path(r.url) == "/"):
        page.get_by_text("Home (in this page)").click()
    assert page.url == base + "/"
    page.locator("[data-edge-slot=home-hero] .edge-hero--vip").wait_for()
    assert [decided_path(url) for url in watch.decides] == ["/c/scarpe", "/"]
    # the view rendered again, its hero the shop's: the decision of this path fills it
    page.get_by_text("Home (in this page)").click()
    page.locator("[data-edge-slot=home-hero] .edge-hero--vip").wait_for()
    assert page.locator("[data-edge-slot=home-hero]").count() == 1
    assert len(watch.decides) == 2  # the same path: not asked again
    # back: the category view is decided again (the shop's view is its own business)
    page.go_back()
    page.wait_for_function("location.pathname === '/c/scarpe'")
    until(page, lambda: len(watch.decides) == 3)
    assert watch.errors == []
    shot(page, tmp_path, "spa-home")
    context.close()


# --- beacons: consent, GPC, and the segments they feed -----------------------------------

GPC = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"


def click_recommendation(page: Page, pid: str) -> None:
    with page.expect_navigation(wait_until="load"):
        page.locator(f'[data-edge-list=recommendations] a[href="/p/{pid}"]').click()


def test_beacons_go_only_after_consent(edge: EdgeProcess, base: str, browser: Browser) -> None:
    context = new_context(browser, base, consent=False)
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{base}/p/{PRODUCTS[0]}", wait_until="load")
    click_recommendation(page, PRODUCTS[1])  # a click, a page left: nothing is sent
    page.wait_for_timeout(300)
    assert watch.beacons == 0

    # the shop's consent banner: accepted; from the next page on, the snippet reports
    page.evaluate("shopEdge.consent(true)")
    assert CONSENT in {c["name"] for c in context.cookies()}
    page.goto(f"{base}/p/{PRODUCTS[2]}", wait_until="load")
    click_recommendation(page, PRODUCTS[3])
    until(page, lambda: watch.beacons)
    vid = next(c["value"] for c in context.cookies() if c["name"] == "edge_vid")
    visitor = Shopper(edge.port)
    visitor.cookie = f"edge_vid={vid}"
    wait_for(lambda: visitor.profile().get("recommendation_clicks") == 1)

    # withdrawn: nothing more, and the cookie says so for the sidecar too
    page.evaluate("shopEdge.consent(false)")
    sent = watch.beacons
    click_recommendation(page, PRODUCTS[4])
    page.wait_for_timeout(300)
    assert watch.beacons == sent
    assert visitor.profile().get("recommendation_clicks") == 1
    assert watch.errors == []
    context.close()


def test_global_privacy_control_sends_nothing(
    edge: EdgeProcess, base: str, browser: Browser
) -> None:
    context = new_context(browser, base, extra_http_headers={"Sec-GPC": "1"})
    context.add_init_script(GPC)
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{base}/p/{PRODUCTS[0]}", wait_until="load")
    assert page.evaluate("navigator.globalPrivacyControl") is True
    page.evaluate("shopEdge.consent(true)")  # even a yes on the banner does not override it
    click_recommendation(page, PRODUCTS[1])
    page.goto(base + "/", wait_until="load")
    applied(page)
    page.wait_for_timeout(1_300)  # the home blocks were in view for more than a second
    page.goto(f"{base}/p/{PRODUCTS[2]}", wait_until="load")
    assert watch.beacons == 0
    assert watch.errors == []
    context.close()


def test_dwell_time_makes_a_close_reader(edge: EdgeProcess, base: str, browser: Browser) -> None:
    visitor = Shopper(edge.port)
    visitor.arrive(f"/p/{PRODUCTS[5]}")  # (a page the sidecar personalizes: the cookie)
    assert "long_dwell" not in segments(visitor)
    context = new_context(browser, base, visitor)
    page = context.new_page()
    watch = Watch(page)
    page.clock.install()  # the page's clock, moved on below without waiting
    page.goto(f"{base}/p/{PRODUCTS[0]}", wait_until="load")
    page.clock.fast_forward(95_000)  # reading for a minute and a half
    page.goto(base + "/", wait_until="load")  # leaving the product page reports it
    wait_for(lambda: visitor.profile().get("dwell_count") == 1)
    assert watch.beacons >= 1
    assert 95_000 <= visitor.profile()["dwell_ms"] < 100_000
    assert "long_dwell" in segments(visitor)
    assert watch.errors == []
    context.close()


def test_recommendation_clicks_without_orders_make_a_segment(
    edge: EdgeProcess, base: str, browser: Browser
) -> None:
    visitor = Shopper(edge.port)
    visitor.arrive(f"/p/{PRODUCTS[5]}")  # (a page the sidecar personalizes: the cookie)
    assert "rec_clicker_no_buy" not in segments(visitor)
    context = new_context(browser, base, visitor)
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{base}/p/{PRODUCTS[0]}", wait_until="load")
    for pid in PRODUCTS[1:4]:
        click_recommendation(page, pid)
    until(page, lambda: watch.beacons >= 3)
    wait_for(lambda: visitor.profile().get("recommendation_clicks") == 3)
    assert "rec_clicker_no_buy" in segments(visitor)
    assert watch.errors == []
    context.close()


# --- the cap, the offer's deadline, the CSP -----------------------------------------------


def test_a_slow_decide_shows_the_original_at_the_cap(
    edge: EdgeProcess, base: str, browser: Browser, tmp_path: Path
) -> None:
    vip = customer(edge.port, "hero-vip")
    give_orders(vip, vip_orders(vip))
    context = new_context(browser, base, vip, cap=300)  # the default
    page = context.new_page()
    watch = Watch(page)

    def late(route: Route) -> None:
        time.sleep(1.0)  # the real sidecar answers, a second late
        route.continue_()

    page.route("**/_edge/decide?*", late)
    with page.expect_response(lambda r: "/_edge/decide" in r.url) as answer:
        page.goto(base + "/", wait_until="load")
    assert answer.value.ok
    assert "edge-hero--vip" in answer.value.text()  # there was something to show ...
    # while it was asked, the slots were hidden, and only they
    assert page.evaluate("window.__atDcl") == {"hero": "hidden", "header": "visible"}
    page.wait_for_timeout(300)
    # ... but the original had been shown at the cap, and stays: no late swap
    assert ORIGINAL_HERO in hero_text(page)
    assert page.locator(".edge-hero").count() == 0
    visibility = "getComputedStyle(document.querySelector('[data-edge-slot=home-hero]')).visibility"
    assert page.evaluate(visibility) == "visible"
    assert watch.shift == 0.0
    assert watch.errors == []
    shot(page, tmp_path, "cap-original")
    context.close()


def test_an_expired_offer_is_hidden(
    edge: EdgeProcess, base: str, browser: Browser, tmp_path: Path
) -> None:
    lapsed = customer(edge.port, "hero-lapsed")
    give_orders(lapsed, [order(lapsed, 1, 120, 60.0, "p1002")])
    context = new_context(browser, base, lapsed)
    page = context.new_page()
    watch = Watch(page)
    page.clock.install()
    page.goto(base + "/", wait_until="load")
    offer = page.locator("[data-edge-offer]")
    offer.wait_for()  # put in the banner by the snippet
    assert offer.is_visible() and "AURORA10" in (offer.text_content() or "")
    deadline = int(page.locator("[data-edge-countdown]").get_attribute("data-deadline") or 0)
    page.clock.fast_forward(int((deadline - time.time() + 5) * 1000))
    page.clock.run_for(1_000)
    assert offer.get_attribute("hidden") is not None
    assert offer.is_hidden()
    display = "getComputedStyle(document.querySelector('[data-edge-offer]')).display"
    assert page.evaluate(display) == "none"
    assert watch.errors == []
    shot(page, tmp_path, "offer-expired")
    context.close()


@pytest.fixture(scope="module")
def edge_by_hand(shop: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """The same sidecar with inject_snippet off: the theme includes the snippet itself
    (as a page under a strict CSP must, with its nonce)."""
    catalog = write_feed(tmp_path_factory.mktemp("feed") / "catalog.csv")
    env = {
        **edge_env(catalog),
        "EDGE_BROWSER_PAGES": "home,category",
        "EDGE_CONSENT_COOKIE": CONSENT,
        "EDGE_INJECT_SNIPPET": "false",
    }
    proc = start_edge(shop, env=env)
    yield proc
    stop_edge(proc)


def write_twin_rules(root: Path) -> tuple[Path, Path]:
    rules, snippets = root / "rules", root / "snippets"
    rules.mkdir()
    snippets.mkdir()
    pages = '["browser", "server"]'
    theme = ['[page_types]\nbrowser = "/twin/browser"\nserver = "/twin/server"\n']
    placements = []
    for name, (select, action) in TWIN_SLOTS.items():
        theme.append(f'[slots.{name}]\nselect = "{select}"\naction = "{action}"\npages = {pages}\n')
        placements.append(
            f'[[placements]]\nid = "{name}"\nslot = "{name}"\nsnippet = "twin.html"\n'
        )
    theme.append(
        f'[slots.list]\nselect = "ol.twin"\nitem_id = "data-product-id"\npages = {pages}\n'
    )
    placements.append('[[placements]]\nid = "t-list"\nslot = "list"\nsort = "price desc"\n')
    (rules / "theme.toml").write_text("\n".join(theme))
    (rules / "placements.toml").write_text("\n".join(placements))
    (snippets / "twin.html").write_text(
        '<p class="twin">A twin block, <a href="/c/x">with a link</a>.</p>\n'
    )
    return rules, snippets


def test_the_browser_makes_the_page_the_sidecar_makes(
    shop: str, browser: Browser, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Every action of the rewriter's vocabulary, on the same page: the snippet's DOM is
    the sidecar's rewritten page (one decision, two places)."""
    work = tmp_path_factory.mktemp("twin")
    rules, snippets = write_twin_rules(work)
    env = {
        **edge_env(write_feed(work / "catalog.csv"), snippets),
        "EDGE_RULES": str(rules),
        "EDGE_BROWSER_PAGES": "browser",
    }
    proc = start_edge(shop, env=env)
    try:
        base = f"http://127.0.0.1:{proc.port}"
        context = new_context(browser, base, consent=False)
        page = context.new_page()
        watch = Watch(page)
        page.goto(base + "/twin/server", wait_until="load")
        assert page.locator('meta[name="shop-edge"]').count() == 1
        by_server = page.locator("main").inner_html()
        page.goto(base + "/twin/browser", wait_until="load")
        applied(page)
        assert page.locator('meta[name="shop-edge"]').count() == 0
        by_browser = page.locator("main").evaluate(
            "main => { const copy = main.cloneNode(true);"
            " copy.querySelectorAll('[data-edge-done]').forEach("
            "el => el.removeAttribute('data-edge-done')); return copy.innerHTML; }"
        )
        assert by_browser == by_server
        assert by_server != TWIN_MAIN  # (every slot was changed)
        assert by_server.count("A twin block") == 7  # two before .t-before, one each else
        order = re.findall(r'<li data-product-id="(p\d+)"', by_server)
        assert order == sorted(order, key=lambda p: -PRODUCTS_BY_ID[p].price)
        assert by_server.rstrip().endswith("<li>no id</li>\n</ol>")
        assert watch.errors == []
        shot(page, tmp_path, "twin-browser")
        context.close()
    finally:
        stop_edge(proc)


def test_the_snippet_works_under_a_strict_csp(
    edge_by_hand: EdgeProcess, browser: Browser, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{edge_by_hand.port}"
    lapsed = customer(edge_by_hand.port, "hero-lapsed")
    give_orders(lapsed, [order(lapsed, 1, 120, 60.0, "p1002")])
    context = new_context(browser, base, lapsed)
    page = context.new_page()
    watch = Watch(page)
    with page.expect_response(lambda r: r.url.startswith(base + "/?csp")) as answer:
        page.goto(base + "/?csp=1", wait_until="load")
    assert "script-src 'nonce-" in (answer.value.headers.get("content-security-policy") or "")
    served = answer.value.text()
    assert served.count("<script") == 1 and f'nonce="{NONCE}"' in served  # the theme's own
    applied(page)
    assert page.locator("[data-edge-slot=home-hero] .edge-hero--lapsed").count() == 1
    page.locator("[data-edge-offer] [data-edge-countdown]").wait_for()
    page.wait_for_timeout(1_300)  # a countdown tick, a view beacon
    wait_for(lambda: arm(lapsed, "hero-lapsed").get("views", 0) >= 1)  # its beacon came
    assert watch.violations == []
    assert watch.shift == 0.0, page.evaluate("window.__shifted")
    assert watch.errors == []
    assert page.locator("script").count() == 1  # (a block's script tag is not put in)
    shot(page, tmp_path, "strict-csp")
    # the policy is enforced, and a breach of it would have been seen
    page.evaluate("document.body.setAttribute('style', 'color: red')")
    until(page, lambda: watch.violations)
    assert watch.violations[0].startswith("style-src")
    context.close()


def test_the_profiling_form_is_answered_without_leaving_the_page(
    edge: EdgeProcess, base: str, browser: Browser
) -> None:
    """With the browser snippet, an answer goes as an event the sidecar checks like the
    form's POST; the page stays (no navigation), the form gives way to its thanks."""
    context = new_context(browser, base)
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{base}/?form", wait_until="load")
    form = page.locator("form.edge-profile-form")
    form.wait_for()
    page.evaluate("window.__stayed = true")  # gone if the page were loaded again
    question = form.locator("input[name=question]").get_attribute("value")
    assert question == "gender"
    form.locator("select[name=answer]").select_option("female")
    form.locator("button[type=submit]:not([name=skip])").click()
    thanks = page.locator(".edge-profile-form__thanks")
    thanks.wait_for()
    assert thanks.text_content() == "Thank you: noted."
    assert page.evaluate("window.__stayed") is True and page.url == f"{base}/?form"
    vid = next(c["value"] for c in context.cookies() if c["name"] == "edge_vid")
    visitor = Shopper(edge.port)
    visitor.cookie = f"edge_vid={vid}"
    wait_for(lambda: visitor.profile().get("answers") == {"gender": "female"})
    # the next page asks the next question
    page.goto(f"{base}/?form", wait_until="load")
    asked = page.locator("form.edge-profile-form input[name=question]")
    asked.wait_for(state="attached")
    assert asked.get_attribute("value") == "age_band"
    assert watch.errors == []
    context.close()

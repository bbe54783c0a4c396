"""``/_edge/admin`` in a real browser: Chromium (Debian's, driven by Playwright) through
a real ``edge serve`` (uvicorn, a SQLite store seeded with the demo's 310 profiles and
a week of segment snapshots). Without the token: 401 and the login form; a wrong token
is refused; the right one logs in; the page draws its charts (SVG with a size, one
lift bar per variant, one line per segment and per outcome), logs no console error
(a CSP violation is one), asks nothing of another origin; a screenshot is kept.

The report comes from tests/admin_sample.py: until the measurement (edge/report.py)
is on main, the launcher below puts that hand-made report behind the page's one
report call (``edge.admin.report_for_admin``); everything else is the real server."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from edge.demo.seed import seed
from edge.identity import Identity
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore
from edge.rules import LiveRules
from tests._chromium import CHROMIUM
from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, fetch, free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "admin-browser-token"
SEGMENTS = list(LiveRules(ROOT / "rules").ruleset.segment_names)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (tests/run.sh installs it)",
    ),
]

UNAUTHORIZED = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
LAUNCH = """
import sys
import edge.admin
from tests.admin_sample import sample_report

async def report(store, ruleset, *, days, window_seconds):
    return sample_report()

edge.admin.report_for_admin = report
from edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def _fill(db: Path) -> None:
    store = SQLiteStore(db)
    await seed(ProfileService(store, Identity(["test-secret"]).email_hash))
    today = dt.datetime.now(dt.UTC).date()
    for back in range(6, 0, -1):  # a week of history before today's, taken at start
        day = (today - dt.timedelta(days=back)).isoformat()
        counts = {name: (i * 7 + back * 3) % 60 for i, name in enumerate(SEGMENTS)}
        await store.put_segment_snapshot(day, {"total": 300 - back, "counts": counts})
    await store.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    db = tmp_path_factory.mktemp("store") / "profiles.db"
    asyncio.run(_fill(db))
    upstream = TestUpstream().start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env.update(
        EDGE_STORE=f"sqlite:{db}",
        EDGE_SECRET="test-secret",
        EDGE_ADMIN_TOKEN=TOKEN,
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--upstream", upstream.url, "--port", str(port)],
        cwd=ROOT / "tests",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, proc=proc)
        yield EdgeProcess(proc, port)
    finally:
        EdgeProcess(proc, port).stop()
        upstream.stop()


class Watch:
    """Everything a page asks for, and what it reports as wrong."""

    def __init__(self, page: Page) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))


def _size(page: Page, selector: str) -> list[tuple[float, float]]:
    boxes = []
    for handle in page.locator(selector).all():
        box = handle.bounding_box()
        assert box is not None, f"{selector} is not drawn"
        boxes.append((box["width"], box["height"]))
    return boxes


def test_the_admin_page_in_chromium(edge: EdgeProcess, browser: Browser, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{edge.port}"
    for path in ("/", "/", "/product/1"):  # traffic for the live rates
        fetch(edge.port, path, headers={"Accept": "text/html"})
    context = browser.new_context(locale="en-GB", viewport={"width": 1366, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    watch = Watch(page)
    try:
        first = page.goto(base + "/_edge/admin", wait_until="load")
        assert first is not None and first.status == 401
        assert page.locator("form input[name=token]").count() == 1

        page.fill("input[name=token]", "not the token")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "not the admin token" in page.locator(".alert").text_content()
        assert page.locator("input[name=token]").count() == 1

        # the two 401s are the only things wrong so far (Chromium logs each answer >= 400)
        assert watch.errors == [UNAUTHORIZED] * 2
        watch.errors.clear()
        page.wait_for_timeout(1_200)  # the live rates: a point at least a second apart
        page.fill("input[name=token]", TOKEN)
        with page.expect_navigation() as navigation:
            page.click("button[type=submit]")
        assert navigation.value is not None
        page.wait_for_load_state("load")
        assert page.url == base + "/_edge/admin"
        assert page.locator("#placements-title").text_content() == "What each placement earns"
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["edge_admin"]["httpOnly"] and cookies["edge_admin"]["sameSite"] == "Strict"
        assert TOKEN not in cookies["edge_admin"]["value"]

        # the placements: one interval bar per variant (2 + 1 + 1 + 1), drawn with a size
        assert page.locator("article.placement").count() == 4
        bars = _size(page, "svg.lift-chart rect.bar")
        assert len(bars) == 5 and all(w > 1 and h > 1 for w, h in bars)
        assert all(w > 100 and h > 10 for w, h in _size(page, "svg.lift-chart"))
        assert page.locator("tr.winner").count() == 1
        # each placement's conversion rate so far: a line per arm (3 + 2 + 2 + 2)
        assert page.locator("svg.trend-chart polyline.trend-line").count() == 9
        assert all(w > 100 and h > 40 for w, h in _size(page, "svg.trend-chart"))
        assert page.locator("text=Sample ratio mismatch").count() >= 1
        # hero-vip's breakdown by segment: a group of rows per segment, server-side
        hero = page.locator("article.placement[data-placement=hero-vip]")
        groups = hero.locator("table.by-segment tbody")
        assert [g.get_attribute("data-segment") for g in groups.all()] == ["vip", "mobile_user"]
        assert groups.nth(1).locator("tr").count() == 3
        assert groups.nth(1).locator(".figure.up").count() == 1  # warm beats the holdout
        assert page.locator("table.by-segment").count() == 1
        assert page.locator(".badge.wait", has_text="too small to read").count() >= 1

        # segment sizes: a line per segment over the week and today
        sparks = page.locator("figure.spark")
        assert sparks.count() == len(SEGMENTS)
        assert page.locator("figure.spark").first.locator("circle.point").count() == 7
        assert all(w > 50 and h > 20 for w, h in _size(page, "svg.spark-chart"))

        # live rates: a line per outcome
        lines = page.locator("svg.rate-chart polyline.rate")
        assert lines.count() == 5
        assert all(w > 100 for w, _ in _size(page, "svg.rate-chart"))

        # the stylesheet applied (same origin), nothing asked of another origin
        colour = page.evaluate(
            "getComputedStyle(document.querySelector('header.top')).backgroundColor"
        )
        assert colour == "rgb(13, 33, 55)"
        elsewhere = [u for u in watch.requests if not u.startswith(base + "/")]
        assert elsewhere == []
        assert watch.errors == []

        shot = Path(os.environ.get("ADMIN_SCREENSHOT", tmp_path / "admin.png"))
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        print(f"admin page screenshot: {shot}")

        # logging out ends the session
        with page.expect_navigation():
            page.click("form.logout button")
        assert page.locator("input[name=token]").count() == 1
        assert watch.errors == [UNAUTHORIZED]  # the login form again, answered 401
    finally:
        context.close()

"""In a real browser: Chromium (Debian's, driven by Playwright) through `edge serve` in
front of the demo shop. The timed offer's countdown ticks, the profiling form works
when a person fills it in, and the pages log no errors."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
)

from tests._chromium import CHROMIUM
from tests.conftest import EdgeProcess, start_edge
from tests.test_activities import edge_env, lapsed_customer, start_shop, stop, write_feed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (tests/run.sh installs it)",
    ),
]

COUNTDOWN = re.compile(r"^\((?:(\d+)d )?(\d\d):(\d\d):(\d\d)\)$")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    shop, url = start_shop()
    try:
        catalog = write_feed(tmp_path_factory.mktemp("feed") / "catalog.csv")
        proc = start_edge(url, env=edge_env(catalog))
        yield proc
        proc.stop()
    finally:
        stop(shop)


class Errors:
    """What a page reports as wrong: console errors, uncaught exceptions, failed loads."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.seen.append(f"uncaught: {exc}"))
        page.on("requestfailed", self._failed)
        page.on(
            "response",
            lambda r: r.status >= 400 and self.seen.append(f"HTTP {r.status}: {r.url}"),
        )

    def _failed(self, request: Request) -> None:
        # A navigation cancels what the page was still loading (its favicon, say).
        if request.failure != "net::ERR_ABORTED":
            self.seen.append(f"failed: {request.url} {request.failure}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"console: {message.text}")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(locale="en-GB")
    context.set_default_timeout(10_000)
    context.set_default_navigation_timeout(15_000)
    yield context
    context.close()


def seconds_left(text: str) -> int:
    m = COUNTDOWN.match(text.strip())
    assert m is not None, f"not a ticking countdown: {text!r}"
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def test_the_timed_offer_counts_down(edge: EdgeProcess, context: BrowserContext) -> None:
    visitor = lapsed_customer(edge.port)
    base = f"http://127.0.0.1:{edge.port}"
    name, _, value = visitor.cookie.partition("=")
    context.add_cookies([{"name": name, "value": value, "url": base}])
    page = context.new_page()
    errors = Errors(page)
    page.goto(base + "/", wait_until="load")

    countdown = page.locator("[data-edge-offer] [data-edge-countdown]")
    assert countdown.count() == 1
    deadline = int(countdown.get_attribute("data-deadline") or 0)
    # the script replaced the server's "23 h 59 min left" with a ticking clock
    page.wait_for_function(
        "() => /^\\(\\d\\d:\\d\\d:\\d\\d\\)$/.test("
        "document.querySelector('[data-edge-countdown]').textContent.trim())"
    )
    first = seconds_left(countdown.text_content() or "")
    assert abs(first - (deadline - time.time())) <= 3
    assert 24 * 3600 - 120 < first <= 24 * 3600

    page.wait_for_timeout(2_200)
    later = seconds_left(countdown.text_content() or "")
    assert 1 <= first - later <= 4, (first, later)
    assert page.evaluate("window.__shopEdge") is True  # loaded once, by the sidecar
    assert page.locator('script[src="/_edge/static/edge.js"]').count() == 1
    assert errors.seen == []

    # a reload later shows the same deadline, still counting down from it
    page.reload(wait_until="load")
    assert int(countdown.get_attribute("data-deadline") or 0) == deadline
    assert errors.seen == []


def test_the_timed_offer_disappears_at_its_deadline(
    edge: EdgeProcess, context: BrowserContext
) -> None:
    visitor = lapsed_customer(edge.port)
    base = f"http://127.0.0.1:{edge.port}"
    name, _, value = visitor.cookie.partition("=")
    context.add_cookies([{"name": name, "value": value, "url": base}])
    page = context.new_page()
    errors = Errors(page)
    page.clock.install()  # the page's clock, moved on below without waiting a day
    page.goto(base + "/", wait_until="load")
    offer = page.locator("[data-edge-offer]")
    assert offer.count() == 1 and offer.is_visible()
    assert "AURORA10" in (offer.text_content() or "")
    deadline = int(page.locator("[data-edge-countdown]").get_attribute("data-deadline") or 0)
    assert deadline > time.time() + 23 * 3600

    # a second before the deadline it still shows; past it, the code is gone from view
    page.clock.fast_forward(int((deadline - time.time() - 2) * 1000))
    page.clock.run_for(1_000)
    assert offer.is_visible()
    page.clock.fast_forward(3_000)
    page.clock.run_for(1_000)
    assert offer.get_attribute("hidden") is not None  # edge.js marked it hidden ...
    assert offer.is_hidden()  # ... and the stylesheet lets it be
    assert (
        page.evaluate("getComputedStyle(document.querySelector('[data-edge-offer]')).display")
        == "none"
    )
    assert errors.seen == []


def test_the_profiling_form_asks_the_next_question(
    edge: EdgeProcess, context: BrowserContext
) -> None:
    base = f"http://127.0.0.1:{edge.port}"
    page = context.new_page()
    errors = Errors(page)
    page.goto(base + "/c/scarpe-donna", wait_until="load")
    assert page.locator("form.edge-profile-form").count() == 0  # not on category pages
    page.goto(base + "/", wait_until="load")

    form = page.locator("form.edge-profile-form")
    question = form.locator("input[name=question]")
    assert question.get_attribute("value") == "gender"
    label = form.locator("label").text_content()
    options = form.locator("select[name=answer] option[value]:not([value=''])")
    answer = options.first.get_attribute("value") or ""
    form.locator("select[name=answer]").select_option(answer)
    with page.expect_navigation(wait_until="load"):
        form.get_by_role("button", name="Save").click()

    assert urlpath(page.url) == "/"
    next_question = question.get_attribute("value")
    assert next_question not in (None, "", "gender")
    assert form.locator("label").text_content() != label

    # "Prefer not to say" skips it without an answer (the field is required otherwise)
    with page.expect_navigation(wait_until="load"):
        form.get_by_role("button", name="Prefer not to say").click()
    assert question.count() == 0 or question.get_attribute("value") not in (
        "gender",
        next_question,
    )
    profile = page.request.get(base + "/_edge/profile").json()["profile"]
    assert profile["answers"]["gender"] == answer
    assert profile["answers"][next_question] == "-"
    assert errors.seen == []


def urlpath(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)

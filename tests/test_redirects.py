"""Campaign links the shop redirects: the new visitor's cookie and the landing campaign
are taken from the redirect itself (its follow-up may have lost the utm_*), and the
campaign holds for the visit. Through the demo shop, whose old home page address
(/index.html) redirects to / without the query, as many shops' redirects do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.profiles import events as ev
from edge.profiles.model import Touch, new_profile
from tests.conftest import EdgeProcess, fetch, start_edge
from tests.test_activities import (
    BROWSER,
    ORIGINAL_HERO,
    Visitor,
    edge_env,
    hero,
    start_shop,
    stop,
    stop_edge,
    wait_for,
    write_feed,
)

CAMPAIGN_LINK = "/index.html?utm_source=google&utm_medium=cpc&utm_campaign=black-friday"
FROM_GOOGLE = {"Referer": "https://www.google.com/", "Sec-Fetch-Dest": "document"}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    shop, url = start_shop()
    try:
        catalog = write_feed(tmp_path_factory.mktemp("feed") / "catalog.csv")
        proc = start_edge(url, env=edge_env(Path(catalog)))
        yield proc
        stop_edge(proc)
    finally:
        stop(shop)


def test_a_redirected_campaign_link_gives_the_cookie_and_keeps_the_campaign(
    edge: EdgeProcess,
) -> None:
    visitor = Visitor(edge.port)
    landing = visitor.get(CAMPAIGN_LINK, FROM_GOOGLE)
    assert landing.status == 302 and landing.header("location") == "/"
    # the new visitor's cookie rides on the redirect, which is then for them alone
    assert visitor.cookie.startswith("edge_vid=")
    assert landing.header("cache-control") == "private, max-age=300"

    # The browser follows later (a slow hop: the page is in another second than the
    # redirect), with the Referer it had: Google, and no utm_* any more.
    time.sleep(1.1)
    page = visitor.page("/", {"Referer": "https://www.google.com/"})
    assert "edge-hero--campaign" in hero(page) and ORIGINAL_HERO not in hero(page)
    assert "Black friday" in hero(page)  # page.campaign: the visit's campaign

    wait_for(lambda: visitor.profile().get("last_touch", {}).get("campaign") == "black-friday")
    profile = visitor.profile()
    assert profile["last_touch"]["channel"] == "paid"  # not "search": one arrival
    assert profile["visits"] == 1 and profile["session_pageviews"] == 1
    # later pages of the visit, no Referer, no utm_*: still the campaign
    again = visitor.page("/")
    assert "edge-hero--campaign" in hero(again) and "Black friday" in hero(again)


def test_a_returning_visitor_redirected_from_a_campaign_keeps_it(edge: EdgeProcess) -> None:
    visitor = Visitor(edge.port)
    assert ORIGINAL_HERO in hero(visitor.arrive("/"))
    cookie = visitor.cookie
    newsletter = "/index.html?utm_source=newsletter&utm_medium=email&utm_campaign=june"
    landing = visitor.get(newsletter, {"Referer": "https://mail.google.com/"})
    assert landing.status == 302 and visitor.cookie == cookie
    assert not any(c.startswith("edge_vid=") for c in landing.all("set-cookie"))
    wait_for(lambda: visitor.profile().get("last_touch", {}).get("campaign") == "june")
    assert visitor.profile()["last_touch"]["channel"] == "email"
    page = visitor.page("/", {"Referer": "https://mail.google.com/"})
    assert "edge-hero--newsletter" in hero(page)


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "image/avif,image/webp,*/*;q=0.8", "Sec-Fetch-Dest": "image"},
        {"Accept": "image/avif,image/webp,*/*;q=0.8"},  # no Sec-Fetch-*: by Accept
        {"Accept": "text/html", "Sec-Fetch-Dest": "script"},  # the browser's word wins
        {"Accept": "*/*"},
    ],
)
def test_a_redirect_fetched_by_a_page_gets_no_cookie(
    edge: EdgeProcess, headers: dict[str, str]
) -> None:
    reply = fetch(
        edge.port, CAMPAIGN_LINK, headers={"User-Agent": BROWSER["User-Agent"], **headers}
    )
    assert reply.status == 302
    assert not any(c.startswith("edge_vid=") for c in reply.all("set-cookie"))
    assert reply.header("cache-control") == "public, max-age=300"  # still shareable


def test_a_navigation_is_a_page_request_whatever_it_accepts(edge: EdgeProcess) -> None:
    headers = {"Accept": "*/*", "Sec-Fetch-Dest": "document", "User-Agent": BROWSER["User-Agent"]}
    reply = fetch(edge.port, CAMPAIGN_LINK, headers=headers)
    assert reply.status == 302
    assert any(c.startswith("edge_vid=") for c in reply.all("set-cookie"))


NOW = 1_790_000_000
AD = Touch(NOW, "google", "cpc", "black-friday", "paid", "www.google.com")
SEARCH = Touch(NOW + 2, channel="search", referrer="www.google.com")


def test_one_arrival_told_twice_keeps_its_campaign_in_either_order() -> None:
    for touches in ([AD, SEARCH], [SEARCH, AD]):
        profile = new_profile("v", NOW)
        for touch in touches:
            ev.record_touch(profile, touch)
        assert profile.last_touch == AD and profile.visits == 1
        assert profile.session_start == NOW  # the visit starts with the redirect
        assert ev.visit_touch(profile, SEARCH) == AD
        assert ev.visit_touch(profile, None) == AD
    # another site later in the visit is a new arrival; a new visit forgets the campaign
    profile = new_profile("v", NOW)
    ev.record_touch(profile, AD)
    social = Touch(NOW + 60, channel="social", referrer="www.facebook.com")
    assert ev.visit_touch(profile, social) == social
    ev.record_touch(profile, social)
    assert profile.last_touch == social
    later = Touch(NOW + 7200, channel="search", referrer="www.google.com")
    ev.record_touch(profile, later)
    assert profile.last_touch == later and profile.visits == 2
    assert ev.visit_touch(profile, None) == later

"""Visitors through a real `edge serve`: cookie, consent, events, ingest, erasure, durability."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.request import is_crawler
from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, Reply, fetch, start_edge

TOKEN = "ingest-token-for-tests"
SIGNING = "ingest-hmac-for-tests"


@pytest.fixture
def tracked(upstream: TestUpstream) -> Iterator[EdgeProcess]:
    proc = start_edge(upstream.url, env={"EDGE_INGEST_TOKEN": TOKEN, "EDGE_INGEST_SECRET": SIGNING})
    yield proc
    proc.stop()


def visitor_cookie(reply: Reply) -> str:
    cookie = next(v for v in reply.all("set-cookie") if v.startswith("edge_vid="))
    return cookie.split(";")[0]


def post_json(
    port: int, path: str, payload: object, headers: dict[str, str] | None = None
) -> Reply:
    body = json.dumps(payload).encode()
    return fetch(port, path, "POST", {"Content-Type": "application/json", **(headers or {})}, body)


def profile(port: int, cookie: str) -> dict:  # type: ignore[type-arg]
    return json.loads(fetch(port, "/_edge/profile", headers={"Cookie": cookie}).body)["profile"]


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_first_visit_gets_a_signed_cookie_and_a_private_response(
    tracked: EdgeProcess, upstream: TestUpstream
) -> None:
    first = fetch(tracked.port, "/page")
    cookie = next(v for v in first.all("set-cookie") if v.startswith("edge_vid="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert first.header("cache-control") == "private, max-age=60"  # never in a shared cache
    again = fetch(tracked.port, "/page", headers={"Cookie": cookie.split(";")[0]})
    assert again.all("set-cookie") == []
    assert again.header("cache-control") == "public, max-age=60"  # a known visitor: untouched
    # X-Forwarded-Proto is anyone's to send: believed only with trust_forwarded
    claimed = fetch(tracked.port, "/page", headers={"X-Forwarded-Proto": "https"})
    cookie = next(v for v in claimed.all("set-cookie") if v.startswith("edge_vid="))
    assert "Secure" not in cookie


def test_behind_a_trusted_tls_terminator_the_cookie_is_secure(upstream: TestUpstream) -> None:
    proc = start_edge(upstream.url, env={"EDGE_TRUST_FORWARDED": "true"})
    try:
        https = fetch(proc.port, "/page", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in next(v for v in https.all("set-cookie") if v.startswith("edge_vid="))
        plain = fetch(proc.port, "/page")
        assert "Secure" not in next(v for v in plain.all("set-cookie") if v.startswith("edge_vid="))
    finally:
        proc.stop()


def test_tampered_cookie_means_a_new_visitor(tracked: EdgeProcess) -> None:
    cookie = visitor_cookie(fetch(tracked.port, "/page"))
    vid, tag = cookie.removeprefix("edge_vid=").split(".")
    forged = f"edge_vid={vid[:-1]}{'A' if vid[-1] != 'A' else 'B'}.{tag}"
    for bad in (forged, "edge_vid=garbage", "edge_vid=", "edge_vid=a.b.c"):
        reply = fetch(tracked.port, "/page", headers={"Cookie": bad})
        assert reply.status == 200
        assert visitor_cookie(reply) != cookie


def test_page_views_are_recorded_off_the_hot_path(tracked: EdgeProcess) -> None:
    cookie = visitor_cookie(
        fetch(tracked.port, "/page?utm_source=newsletter&utm_medium=email&utm_campaign=saldi")
    )
    time.sleep(0.3)
    # one cookieless hit stores nothing yet (a crawler or a script would stop here) ...
    assert profile(tracked.port, cookie) is None
    # ... the browser that returns the cookie gets a profile: both pages, the landing campaign
    fetch(tracked.port, "/page", headers={"Cookie": cookie, "Referer": "http://127.0.0.1/page"})
    wait_for(lambda: profile(tracked.port, cookie) is not None)
    p = profile(tracked.port, cookie)
    assert sum(p["pageview_days"].values()) == 2
    assert p["first_touch"]["campaign"] == "saldi" and p["first_touch"]["channel"] == "email"
    assert p["visits"] == 1


def test_browser_events_change_only_behaviour(tracked: EdgeProcess) -> None:
    cookie = visitor_cookie(fetch(tracked.port, "/page"))
    ok = post_json(
        tracked.port,
        "/_edge/events",
        {"events": [{"event": "Product Engaged", "product_id": "p1", "dwell_ms": 30000}]},
        {"Cookie": cookie},
    )
    assert ok.status == 202
    assert profile(tracked.port, cookie)["dwell_ms"] == 30000
    before = profile(tracked.port, cookie)
    for forbidden in (
        {"event": "Order Completed", "order_id": "X1", "total": 9999},
        {"event": "Identify", "traits": {"city": "Roma"}},
        {"event": "Email Opened"},
    ):
        refused = post_json(
            tracked.port,
            "/_edge/events",
            {
                "events": [
                    {"event": "Product Engaged", "product_id": "p1", "dwell_ms": 1},
                    forbidden,
                ]
            },
            {"Cookie": cookie},
        )
        assert refused.status == 403
        assert "may not send" in json.loads(refused.body)["message"]
    assert profile(tracked.port, cookie) == before
    bad = post_json(
        tracked.port,
        "/_edge/events",
        {"events": [{"event": "Product Engaged"}]},
        {"Cookie": cookie},
    )
    assert bad.status == 422 and "product_id" in json.loads(bad.body)["message"]
    assert post_json(tracked.port, "/_edge/events", {"events": []}).status == 403  # no cookie


def test_ingest_needs_authentication_and_counts_orders_once(tracked: EdgeProcess) -> None:
    cookie = visitor_cookie(fetch(tracked.port, "/page"))
    vid = cookie.removeprefix("edge_vid=").split(".")[0]
    order = {
        "events": [
            {
                "event": "Order Completed",
                "order_id": "A-77",
                "total": 250.0,
                "anonymous_id": vid,
                "user_id": "c-1",
                "coupon": "SALDI20",
                "products": [{"product_id": "p9", "category": "borse"}],
            }
        ]
    }
    assert post_json(tracked.port, "/_edge/ingest", order).status == 401
    assert (
        post_json(tracked.port, "/_edge/ingest", order, {"Authorization": "Bearer wrong"}).status
        == 401
    )
    body = json.dumps(order).encode()
    stamp = str(int(time.time()))
    forged = hmac.new(b"not-the-secret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert (
        fetch(
            tracked.port,
            "/_edge/ingest",
            "POST",
            {"X-Edge-Signature": f"t={stamp},v1={forged}"},
            body,
        ).status
        == 401
    )
    good = hmac.new(SIGNING.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert (
        fetch(
            tracked.port,
            "/_edge/ingest",
            "POST",
            {"X-Edge-Signature": f"t={stamp},v1={good}"},
            body,
        ).status
        == 200
    )
    assert (
        post_json(tracked.port, "/_edge/ingest", order, {"Authorization": f"Bearer {TOKEN}"}).status
        == 200
    )
    # The visitor's cookie now reaches the customer's profile, which a cookie alone does
    # not show (no session_cookie here: tests/test_hardening_identity.py shows it with one)
    shown = json.loads(fetch(tracked.port, "/_edge/profile", headers={"Cookie": cookie}).body)
    assert shown["profile"] is None and shown["linked"] is True


def test_erasure_removes_profile_and_cookie(tracked: EdgeProcess) -> None:
    cookie = visitor_cookie(fetch(tracked.port, "/page"))
    fetch(tracked.port, "/page", headers={"Cookie": cookie})
    wait_for(lambda: profile(tracked.port, cookie) is not None)
    erased = fetch(tracked.port, "/_edge/profile", "DELETE", {"Cookie": cookie})
    assert json.loads(erased.body) == {"erased": True}
    assert any(v.startswith("edge_vid=;") and "Max-Age=0" in v for v in erased.all("set-cookie"))
    assert profile(tracked.port, cookie) is None


def test_without_consent_nothing_is_stored(upstream: TestUpstream) -> None:
    proc = start_edge(upstream.url, env={"EDGE_CONSENT_COOKIE": "cookie_consent"})
    try:
        reply = fetch(proc.port, "/page")
        assert reply.all("set-cookie") == []
        assert reply.header("cache-control") == "public, max-age=60"
        denied = fetch(proc.port, "/page", headers={"Cookie": "cookie_consent=no"})
        assert denied.all("set-cookie") == []
        accepted = fetch(proc.port, "/page", headers={"Cookie": "cookie_consent=yes"})
        cookie = visitor_cookie(accepted)
        # consent withdrawn: the old cookie is ignored and events are not stored
        events = post_json(
            proc.port,
            "/_edge/events",
            {"events": [{"event": "Product Engaged", "product_id": "p1", "dwell_ms": 5}]},
            {"Cookie": f"{cookie}; cookie_consent=no"},
        )
        assert events.status == 204 and events.body == b""
    finally:
        proc.stop()


def test_kill_9_after_acknowledgement_loses_nothing(upstream: TestUpstream) -> None:
    store = f"sqlite:{tempfile.mkdtemp(prefix='edge-kill-')}/p.db"
    env = {"EDGE_STORE": store, "EDGE_INGEST_TOKEN": TOKEN}
    proc = start_edge(upstream.url, env=env)
    cookie = visitor_cookie(fetch(proc.port, "/page"))
    acked = 0
    for i in range(25):  # under the per-visitor burst limit (30)
        reply = post_json(
            proc.port,
            "/_edge/events",
            {"events": [{"event": "Product Engaged", "product_id": f"p{i}", "dwell_ms": 1000}]},
            {"Cookie": cookie},
        )
        assert reply.status == 202
        acked += 1
    for i in range(20):
        order = {
            "events": [
                {
                    "event": "Order Completed",
                    "order_id": f"K-{i}",
                    "total": 10.0,
                    "user_id": "killed",
                }
            ]
        }
        assert (
            post_json(
                proc.port, "/_edge/ingest", order, {"Authorization": f"Bearer {TOKEN}"}
            ).status
            == 200
        )
    proc.stop(signal.SIGKILL)  # right after the last acknowledgement, no shutdown
    again = start_edge(upstream.url, env=env)
    try:
        assert profile(again.port, cookie)["dwell_ms"] == acked * 1000
        from edge.profiles.sqlite import SQLiteStore

        stored = SQLiteStore(store.removeprefix("sqlite:")).get_sync("cust:killed")
        assert stored is not None and stored.order_count == 20
    finally:
        again.stop()


def test_assets_never_get_the_cookie(tracked: EdgeProcess, upstream: TestUpstream) -> None:
    direct = fetch(upstream.port, "/cookies")  # text without a content type: not a page
    reply = fetch(tracked.port, "/cookies")
    assert [v for v in reply.all("set-cookie") if v.startswith("edge_vid=")] == []
    assert reply.all("set-cookie") == direct.all("set-cookie")
    assert reply.header("cache-control") == direct.header("cache-control")
    large = fetch(tracked.port, "/large")
    assert large.all("set-cookie") == [] and large.header("cache-control") is None


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    ],
)
def test_crawlers_are_not_tracked(tracked: EdgeProcess, upstream: TestUpstream, agent: str) -> None:
    reply = fetch(tracked.port, "/page", headers={"User-Agent": agent})
    direct = fetch(upstream.port, "/page", headers={"User-Agent": agent})
    assert reply.all("set-cookie") == []
    assert reply.body == direct.body and reply.header("cache-control") == direct.header(
        "cache-control"
    )


def test_events_endpoint_limits(tracked: EdgeProcess) -> None:
    cookie = visitor_cookie(fetch(tracked.port, "/page"))
    wrong_method = fetch(tracked.port, "/_edge/events", headers={"Cookie": cookie})
    assert wrong_method.status == 405 and wrong_method.header("allow") == "POST"
    huge = {"events": [{"event": "Products Searched", "query": "x" * 150}] * 600}
    assert post_json(tracked.port, "/_edge/events", huge, {"Cookie": cookie}).status == 413
    many = {"events": [{"event": "Cart Viewed"}] * 101}
    too_many = post_json(tracked.port, "/_edge/events", many, {"Cookie": cookie})
    assert too_many.status == 413 and "at most 100 events" in json.loads(too_many.body)["message"]
    statuses = [
        post_json(
            tracked.port,
            "/_edge/events",
            {"events": [{"event": "Cart Viewed"}]},
            {"Cookie": cookie},
        ).status
        for _ in range(40)
    ]
    assert statuses[0] == 202 and statuses[-1] == 429  # a burst is cut off


async def test_events_queued_during_a_flush_are_written_without_more_traffic() -> None:
    import asyncio

    from edge.identity import Identity
    from edge.profiles import events as ev
    from edge.profiles.service import ProfileService
    from edge.profiles.store import MemoryStore
    from edge.recorder import Recorder
    from edge.visitors import Visit

    class SlowService(ProfileService):
        async def record(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.1)  # the store is slow: more events arrive meanwhile
            return await super().record(*args, **kwargs)

    identity = Identity(["s"])
    service = SlowService(MemoryStore(), identity.email_hash)
    recorder = Recorder(service)
    returning = Visit("v1", new=False, secure=False, consent=True)
    recorder.observed(returning, [ev.PageViewed(path="/a")], None, int(time.time()))
    await asyncio.sleep(0.08)  # the first flush is writing now
    recorder.observed(returning, [ev.PageViewed(path="/b")], None, int(time.time()))
    for _ in range(100):
        await asyncio.sleep(0.02)
        profile = await service.load("v1")
        if profile is not None and profile.session_pageviews == 2:
            break
    assert profile is not None and profile.session_pageviews == 2


@pytest.mark.parametrize(
    ("user_agent", "crawler"),
    [
        (b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        (b"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", True),
        (b"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", True),
        (b"Mozilla/5.0 (compatible; YandexBot/3.0)", True),
        (b"WhatsApp/2.23.20.0", True),
        (b"Mozilla/5.0 (Linux; Android 14) Chrome-Lighthouse", True),
        (b"MOZILLA/5.0 (COMPATIBLE; AHREFSBOT/7.0)", True),
        (b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36", False),
        (b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148", False),
        (b"Mozilla/5.0 (Windows NT 10.0; rv:128.0) Gecko/20100101 Firefox/128.0", False),
    ],
)
def test_crawlers_are_told_from_browsers_every_time(user_agent: bytes, crawler: bool) -> None:
    # The second answer comes from the verdicts kept by User-Agent.
    assert is_crawler(user_agent) is crawler
    assert is_crawler(user_agent) is crawler


def test_ingest_takes_the_whole_cookie_value_only_when_its_signature_verifies(
    tracked: EdgeProcess,
) -> None:
    cookie = visitor_cookie(fetch(tracked.port, "/page"))
    fetch(tracked.port, "/page", headers={"Cookie": cookie})
    wait_for(lambda: profile(tracked.port, cookie) is not None)
    signed = cookie.removeprefix("edge_vid=")
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def order(anonymous_id: str, number: str) -> dict:  # type: ignore[type-arg]
        event = {"event": "Order Completed", "order_id": number, "total": 40.0}
        return {"events": [{**event, "anonymous_id": anonymous_id, "ts": int(time.time())}]}

    # the shop copied the whole cookie: the id inside is used, the order is the visitor's
    assert post_json(tracked.port, "/_edge/ingest", order(signed, "o-1"), auth).status == 200
    assert profile(tracked.port, cookie)["order_count"] == 1
    # ... or the cookie with its name
    whole = order(f"edge_vid={signed}", "o-2")
    assert post_json(tracked.port, "/_edge/ingest", whole, auth).status == 200
    assert profile(tracked.port, cookie)["order_count"] == 2

    # a value whose tag does not verify is refused, naming the field; nothing is stored
    visitor_id, _, tag = signed.partition(".")
    forged = f"{visitor_id}.{'A' * len(tag)}"
    batch = order(forged, "o-3")
    batch["events"].insert(0, order(visitor_id, "o-4")["events"][0])
    reply = post_json(tracked.port, "/_edge/ingest", batch, auth)
    assert reply.status == 400
    problem = json.loads(reply.body)
    assert problem["error"] == "bad_anonymous_id"
    assert "events[1].anonymous_id" in problem["message"] and "before the '.'" in problem["message"]
    assert profile(tracked.port, cookie)["order_count"] == 2
    # the id alone goes on working
    assert post_json(tracked.port, "/_edge/ingest", order(visitor_id, "o-4"), auth).status == 200
    assert profile(tracked.port, cookie)["order_count"] == 3


GEO_RULES = """
[slots.page]
select = "body"
action = "prepend"

[[placements]]
slot = "page"
when = "geo.country == 'IT'"
snippet = "near.html"
"""


@pytest.mark.parametrize("trusted", [False, True])
def test_geo_headers_count_only_when_the_operator_says_they_are_its_own(
    upstream: TestUpstream, tmp_path: Path, trusted: bool
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "theme.toml").write_text(GEO_RULES)
    snippets = tmp_path / "snippets"
    snippets.mkdir()
    (snippets / "near.html").write_text("<p id=near>Vicino a te</p>")
    env = {"EDGE_RULES": str(rules), "EDGE_SNIPPETS": str(snippets)}
    if trusted:
        env["EDGE_TRUST_GEO"] = "true"
    proc = start_edge(upstream.url, env=env)
    try:
        page = fetch(proc.port, "/page", headers={"X-Geo-Country": "it", "CF-IPCountry": "IT"})
        assert (b"<p id=near>" in page.body) is trusted
    finally:
        proc.stop()


async def test_a_first_hit_waits_as_bytes_and_is_stored_whole_with_the_second() -> None:
    """A new visitor's first hit is kept packed in memory (a stream of cookieless
    requests fills that table) and comes back whole: its events, their times, the
    campaign touch, for the profile the second request stores."""
    import asyncio

    from edge.identity import Identity
    from edge.profiles import events as ev
    from edge.profiles.model import Touch
    from edge.profiles.service import ProfileService
    from edge.profiles.store import MemoryStore
    from edge.recorder import Recorder
    from edge.visitors import Visit

    identity = Identity(["s"])
    service = ProfileService(MemoryStore(), identity.email_hash)
    recorder = Recorder(service)
    landed = 1_796_000_000
    touch = Touch(ts=landed, source="google", medium="cpc", campaign="winter", channel="paid")
    first = Visit("v2", new=True, secure=False, consent=True)
    recorder.observed(first, [ev.PageViewed(path="/c/scarpe", page_type="category")], touch, landed)
    (packed,) = recorder._first_hits._data.values()
    assert isinstance(packed[1], bytes)
    pending = recorder.pending_profile("v2")
    assert pending is not None and pending.session_pageviews == 1
    second = Visit("v2", new=False, secure=False, consent=True)
    recorder.observed(second, [ev.PageViewed(path="/p/1")], None, landed + 30)
    for _ in range(100):
        await asyncio.sleep(0.02)
        profile = await service.load("v2")
        if profile is not None and profile.session_pageviews == 2:
            break
    assert profile is not None and profile.session_pageviews == 2
    assert profile.first_seen == landed
    assert profile.first_touch is not None and profile.first_touch.campaign == "winter"

"""``/_edge/admin`` in process: who gets in (404 without a token, 401 without it, the
login form, the session cookie, the form tokens), what the page draws from a hand-made
report (a winner, an inconclusive placement, a broken split, one too small to read),
the segment snapshots (counted as ``edge segments`` counts, kept in SQLite, Redis and
memory, taken once a day) and the live rates. The page in a real browser through a
real ``edge serve``: tests/test_admin_browser.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from edge import admin, metrics
from edge.admin import AdminPage, RateSampler, page_view
from edge.app import create_app
from edge.cli import main
from edge.config import Config
from edge.demo.seed import seed
from edge.identity import Identity
from edge.profiles.redis import RedisStore
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.stats import average_order_value
from edge.profiles.store import Breaker, GuardedStore, MemoryStore, Store, StoreUnavailable
from edge.rules import LiveRules, ShopStats
from edge.snapshots import DailySnapshots, _until_tomorrow, count_segments, take_snapshot, today
from tests.admin_sample import sample_report, sample_snapshots

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "correct horse battery staple"


def _rules(tmp_path: Path, text: str | None = None) -> LiveRules:
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    if text is not None:
        (directory / "shop.toml").write_text(text, encoding="utf-8")
        return LiveRules(directory)
    return LiveRules(ROOT / "rules")


def _render(view: dict[str, Any]) -> HTMLParser:
    config = Config(admin_token=TOKEN)
    page = AdminPage(lambda: config, MemoryStore(), LiveRules(ROOT / "rules"))
    return HTMLParser(page.env.get_template("admin.html").render(logout="", path="/x", **view))


# --- what the page draws --------------------------------------------------------------


def test_the_placements_table_reads_a_report(tmp_path: Path) -> None:
    report = sample_report()
    days = ["2026-12-01", "2026-12-02", "2026-12-04"]
    snapshots = sample_snapshots(days, {"vip": [10, 12, 15], "lapsed": [40, 38, 30]})
    rates = [(-10.0, {"passthrough": 2.0, "personalized": 1.0}), (-5.0, {"passthrough": 4.0})]
    view = page_view(report, snapshots, rates, _rules(tmp_path), days=30)
    tree = _render(view)
    articles = {a.attributes["data-placement"]: a for a in tree.css("article.placement")}
    assert list(articles) == ["hero-vip", "cart-reminder", "lapsed-offer", "newsletter-form"]

    hero = articles["hero-vip"]
    verdict = hero.css_first(".verdict")
    assert "good" in verdict.attributes["class"] and "“warm” wins" in verdict.text()
    assert "+60.0%" in verdict.text()
    winner = hero.css_first("tr.winner th")
    assert winner.text().startswith("warm") and "winner" in winner.text()
    table = hero.css_first("table.arms")  # (the totals; the breakdown by segment after it)
    rows = [r.css_first("th").text().split()[0] for r in table.css("tbody tr")]
    assert rows == ["holdout", "bold", "warm"]  # the holdout first: the baseline
    bars = hero.css("svg.lift-chart rect.bar")
    assert [b.attributes["class"] for b in bars] == ["bar flat", "bar up"]  # bold, warm
    # the bar crosses the zero line exactly when the interval includes zero
    for row in hero.css("svg.lift-chart"):
        zero = float(row.css_first("line.zero").attributes["x1"])
        bar = row.css_first("rect.bar")
        x0 = float(bar.attributes["x"])
        x1 = x0 + float(bar.attributes["width"])
        assert (x0 < zero < x1) == ("flat" in bar.attributes["class"])
        dot = float(row.css_first("circle.estimate").attributes["cx"])
        assert x0 <= dot <= x1
    assert "+27.4% to +92.6%" in hero.text()  # the interval, rounded for display only
    assert hero.css_first("tr.holdout svg") is None  # no lift for the holdout
    headers = [h.text() for h in table.css("thead th")]
    cells = {
        r.css_first("th").text().split()[0]: r.css("td")[headers.index("Clicks") - 1].text()
        for r in table.css("tbody tr")
    }
    warm = next(a for a in report["placements"][0]["arms"] if a["arm"] == "warm")
    assert cells["warm"] == f"{warm['clicks']:,}" and warm["clicks"] > 0
    assert cells["holdout"] == ""  # the holdout saw no block to click
    assert "45%" in hero.text() and "10%" in hero.text()  # the configured split
    # the breakdown by segment: per segment its arms, each variant's lift against the
    # segment's own holdout, as the report computed it
    groups = hero.css("table.by-segment tbody")
    assert [g.attributes["data-segment"] for g in groups] == ["vip", "mobile_user"]
    mobile = report["placements"][0]["segments"][1]["arms"]
    bold = next(a for a in mobile if a["arm"] == "bold")
    relative = bold["lift"]["conversion_rate"]["relative"]
    row = next(r for r in groups[1].css("tr") if r.css("th")[-1].text().startswith("bold"))
    assert f"{relative * 100:+.1f}%" in row.text()
    assert groups[1].css_first("tr.holdout").text().count("(baseline)") == 1
    assert all(len(articles[p].css("table.by-segment")) == 0 for p in list(articles)[1:])

    trend = hero.css("svg.trend-chart polyline.trend-line")
    assert [t.attributes["data-arm"] for t in trend] == ["holdout", "bold", "warm"]
    assert all(len(t.attributes["points"].split()) == 14 for t in trend)  # two weeks
    # warm converts best: its line ends highest (SVG y grows downwards)
    ends = {
        t.attributes["data-arm"]: float(t.attributes["points"].split()[-1].split(",")[1])
        for t in trend
    }
    assert ends["warm"] < ends["bold"] < ends["holdout"]
    assert "8.00%" in hero.css_first("figure.trend .legend").text()

    cart = articles["cart-reminder"]
    assert "No clear winner" in cart.css_first(".verdict").text()
    assert cart.css_first(".badge.bad") is None and cart.css_first("tr.winner") is None

    lapsed = articles["lapsed-offer"]
    assert "Sample ratio mismatch" in lapsed.css_first(".badge.bad").text()
    assert "cannot be trusted" in lapsed.css_first(".verdict.bad").text()

    small = articles["newsletter-form"]
    assert small.css_first(".badge.wait").text() == "too small to read"
    assert "Too small to read yet" in small.css_first(".verdict").text()
    assert "everyone" in small.css_first(".meta").text()  # no segment

    sparks = tree.css("figure.spark")
    assert [s.attributes["data-segment"] for s in sparks] == ["lapsed", "vip"]  # largest first
    lapsed_spark = sparks[0]
    assert len(lapsed_spark.css("circle.point")) == 3
    assert lapsed_spark.css_first(".change.down").text() == "−10"
    ys = [
        float(p.split(",")[1])
        for p in lapsed_spark.css_first("polyline").attributes["points"].split()
    ]
    assert ys[0] < ys[1] < ys[2]  # shrinking: each point lower on the chart (SVG y grows down)

    lines = tree.css("svg.rate-chart polyline.rate")
    assert [line.attributes["data-outcome"] for line in lines] == list(admin.OUTCOME_COLOURS)
    legend = tree.css_first("#live .legend").text()
    assert "passthrough 4.0/s" in " ".join(legend.split())


def test_the_page_escapes_what_it_shows_and_runs_no_inline_script(tmp_path: Path) -> None:
    report = sample_report()
    report["placements"][0]["id"] = '<script>alert("x")</script>'
    report["placements"][0]["arms"][1]["arm"] = "<img src=x onerror=alert(1)>"
    view = page_view(report, [], [], _rules(tmp_path), days=7)
    html = _render(view).html or ""
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert", "")
    assert "&lt;script&gt;" in html
    assert " style=" not in html  # CSP default-src 'self': no inline styles either
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere


def test_rule_errors_and_warnings_are_listed_with_their_place(tmp_path: Path) -> None:
    rules = _rules(tmp_path, "[segments.vip]\nwhen = \"orders_within(30d) >= 'x'\"\n")
    assert rules.errors
    view = page_view({"placements": [], "since": "2026-12-01"}, [], [], rules, days=7)
    tree = _render(view)
    issue = tree.css_first("#rules ul.issues li.error")
    assert re.search(r"shop\.toml:2:\d+", issue.css_first("code").text())
    assert "cannot compare" in issue.text()
    assert "^" in issue.css_first("pre").text()
    assert "refused" in tree.css_first("#rules .verdict.bad").text()


def test_the_rate_sampler_turns_counters_into_rates() -> None:
    sampler = RateSampler(every=5.0, keep=3)
    sampler.sample(now=100.0)
    for _ in range(10):
        metrics.REQUESTS["personalized"].inc()
    sampler.sample(now=105.0)
    rates = sampler.rates(now=105.5)  # the last sample is recent: no extra point
    assert len(rates) == 1
    seconds_ago, by_outcome = rates[0]
    assert seconds_ago == pytest.approx(-0.5)
    assert by_outcome["personalized"] == pytest.approx(2.0)
    assert by_outcome["error"] == 0
    for t in (110.0, 115.0, 120.0, 125.0):
        sampler.sample(now=t)
    assert len(sampler.samples) == 4  # a ring: the oldest ones dropped


# --- who gets in -------------------------------------------------------------------


def _client(app: Any, base: str = "http://shop.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


async def test_without_an_admin_token_there_is_no_admin_page() -> None:
    app = create_app(Config(upstream="http://127.0.0.1:9"), MemoryStore())
    async with _client(app) as client:
        for path in ("/_edge/admin", "/_edge/admin/data.json"):
            reply = await client.get(path, headers={"Authorization": "Bearer anything"})
            assert reply.status_code == 404
        assert (await client.post("/_edge/admin/login", data={"token": ""})).status_code in (
            404,
            405,
        )


@pytest.fixture
def app() -> Any:
    return create_app(Config(upstream="http://127.0.0.1:9", admin_token=TOKEN), MemoryStore())


async def test_no_token_gets_the_login_form_a_wrong_one_401(app: Any) -> None:
    async with _client(app) as client:
        reply = await client.get("/_edge/admin")
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.headers["cache-control"] == "no-store"
        assert reply.headers["content-security-policy"].startswith("default-src 'self'")
        form = HTMLParser(reply.text).css_first("form")
        assert form.attributes["action"] == "/_edge/admin/login"
        assert form.css_first("input[name=token]").attributes["type"] == "password"

        wrong = await client.get("/_edge/admin", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        assert TOKEN not in wrong.text

        right = await client.get("/_edge/admin", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200
        assert right.headers["x-frame-options"] == "DENY"
        tree = HTMLParser(right.text)
        assert tree.css_first("#placements h2").text() == "What each placement earns"
        # the shipped rules' placements, named by the report, nothing measured yet
        assert tree.css("article.placement")
        data = await client.get(
            "/_edge/admin/data.json", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert data.status_code == 200 and "report" in data.json()
        assert (await client.get("/_edge/admin/data.json")).status_code == 401


async def _login(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = HTMLParser((await client.get("/_edge/admin")).text)
    csrf = form.css_first("input[name=csrf]").attributes["value"]
    return await client.post("/_edge/admin/login", data={"token": token, "csrf": csrf})


async def test_logging_in_sets_a_session_cookie_not_the_token(app: Any) -> None:
    async with _client(app) as client:
        bad = await _login(client, "guess")
        assert bad.status_code == 401 and "not the admin token" in bad.text
        assert "edge_admin" not in client.cookies

        reply = await _login(client)
        assert reply.status_code == 303 and reply.headers["location"] == "/_edge/admin"
        set_cookie = next(
            v for v in reply.headers.get_list("set-cookie") if v.startswith("edge_admin=")
        )
        attributes = [part.strip().lower() for part in set_cookie.split(";")]
        assert "httponly" in attributes and "samesite=strict" in attributes
        assert "path=/_edge/admin" in attributes and "secure" not in attributes  # http
        value = client.cookies["edge_admin"]
        assert TOKEN not in value and hashlib.sha256(TOKEN.encode()).hexdigest() not in value

        page = await client.get("/_edge/admin")
        assert page.status_code == 200
        logout = HTMLParser(page.text).css_first("form.logout input[name=csrf]")

        # a forged session (right shape, wrong key) is not one
        stamp = value.split(".")[0]
        forged = hmac.new(b"not the key", stamp.encode(), hashlib.sha256).hexdigest()
        client.cookies.set(
            "edge_admin", f"{stamp}.{forged}", domain="shop.test", path="/_edge/admin"
        )
        assert (await client.get("/_edge/admin")).status_code == 401
        odd = await client.get(
            "/_edge/admin", headers={"Cookie": "edge_admin=1.\xe9".encode("latin-1")}
        )
        assert odd.status_code == 401  # not a 500
        client.cookies.set("edge_admin", value, domain="shop.test", path="/_edge/admin")

        # logging out needs the page's own form token
        refused = await client.post("/_edge/admin/logout", data={"csrf": "x"})
        assert refused.status_code == 403
        done = await client.post("/_edge/admin/logout", data={"csrf": logout.attributes["value"]})
        assert done.status_code == 303
        assert (await client.get("/_edge/admin")).status_code == 401


async def test_the_login_needs_its_form_token_and_the_same_site(app: Any) -> None:
    async with _client(app) as client:
        no_form = await client.post("/_edge/admin/login", data={"token": TOKEN})
        assert no_form.status_code == 403 and "edge_admin" not in client.cookies
        form = HTMLParser((await client.get("/_edge/admin")).text)
        csrf = form.css_first("input[name=csrf]").attributes["value"]
        cross = await client.post(
            "/_edge/admin/login",
            data={"token": TOKEN, "csrf": csrf},
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"},
        )
        assert cross.status_code == 403 and "edge_admin" not in client.cookies
        # without Sec-Fetch-Site (an older browser), the Origin must be this host
        other = await client.post(
            "/_edge/admin/login",
            data={"token": TOKEN, "csrf": csrf},
            headers={"Origin": "https://evil.test"},
        )
        assert other.status_code == 403 and "edge_admin" not in client.cookies
        huge = await client.post("/_edge/admin/login", data={"token": "x" * 10_000, "csrf": csrf})
        assert huge.status_code == 413 and "edge_admin" not in client.cookies
        many = await client.post("/_edge/admin/login", content="&".join(["a=1"] * 50))
        assert many.status_code == 413
        # each refusal hands out a new form token: the page's latest one logs in
        form = HTMLParser((await client.get("/_edge/admin")).text)
        csrf = form.css_first("input[name=csrf]").attributes["value"]
        same = await client.post(
            "/_edge/admin/login",
            data={"token": TOKEN, "csrf": csrf},
            headers={"Origin": "http://shop.test", "Sec-Fetch-Site": "same-origin"},
        )
        assert same.status_code == 303 and "edge_admin" in client.cookies


async def test_over_https_the_cookie_is_secure() -> None:
    config = Config(upstream="http://127.0.0.1:9", admin_token=TOKEN, trust_forwarded=True)
    app = create_app(config, MemoryStore())
    # (the client sends the Secure form cookie back over https only, as browsers do)
    async with _client(app, "https://shop.test") as client:
        page = await client.get("/_edge/admin", headers={"X-Forwarded-Proto": "https"})
        csrf = HTMLParser(page.text).css_first("input[name=csrf]").attributes["value"]
        reply = await client.post(
            "/_edge/admin/login",
            data={"token": TOKEN, "csrf": csrf},
            headers={"X-Forwarded-Proto": "https"},
        )
        cookie = next(
            v for v in reply.headers.get_list("set-cookie") if v.startswith("edge_admin=")
        )
        assert "secure" in [p.strip().lower() for p in cookie.split(";")]


async def test_a_session_ends_when_the_token_changes(app: Any) -> None:
    async with _client(app) as client:
        await _login(client)
        value = client.cookies["edge_admin"]
    other = create_app(
        Config(upstream="http://127.0.0.1:9", admin_token="another token"), MemoryStore()
    )
    async with _client(other) as client:
        client.cookies.set("edge_admin", value, domain="shop.test", path="/_edge/admin")
        assert (await client.get("/_edge/admin")).status_code == 401


async def test_a_reload_changes_the_token_and_can_turn_the_page_off(app: Any) -> None:
    async with _client(app) as client:
        await _login(client)
        assert (await client.get("/_edge/admin")).status_code == 200
        assert app.reload(msgspec.structs.replace(app.config, admin_token="rotated")) == []
        assert (await client.get("/_edge/admin")).status_code == 401  # the old session ended
        bearer = {"Authorization": "Bearer rotated"}
        assert (await client.get("/_edge/admin", headers=bearer)).status_code == 200
        app.reload(msgspec.structs.replace(app.config, admin_token=""))
        assert (await client.get("/_edge/admin", headers=bearer)).status_code == 404
        off = await client.post("/_edge/admin/login", data={"token": "", "csrf": ""})
        assert off.status_code == 404


async def test_the_page_says_when_the_store_is_away(tmp_path: Path) -> None:
    breaker = Breaker(failures=1, cooldown=60)
    store = GuardedStore(MemoryStore(), breaker=breaker)
    breaker.failed(breaker.attempt(), "timeout")
    assert breaker.state == "open"
    with pytest.raises(StoreUnavailable):
        await store.get_segment_snapshots("2026-01-01")
    with pytest.raises(StoreUnavailable):
        await store.put_segment_snapshot("2026-01-01", {"total": 0, "counts": {}})
    app = create_app(Config(upstream="http://127.0.0.1:9", admin_token=TOKEN), MemoryStore())
    app.admin.store = store
    async with _client(app) as client:
        reply = await client.get("/_edge/admin", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200
    assert "segment sizes could not be read" in reply.text


# --- segment snapshots -------------------------------------------------------------


_SEEDED: list[MemoryStore] = []


async def _seeded(store: MemoryStore) -> MemoryStore:
    """*store* with the demo's 310 customers (seeded once per module, then copied)."""
    if not _SEEDED:
        _SEEDED.append(MemoryStore())
        await seed(ProfileService(_SEEDED[0], Identity(["s"]).email_hash))
    source = _SEEDED[0]
    store._data.update(source._data)
    store.aliases.update(source.aliases)
    store.claims.update(source.claims)
    return store


async def test_counting_yields_to_the_event_loop_between_batches() -> None:
    store = await _seeded(MemoryStore())
    rules = LiveRules(ROOT / "rules")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    before = ticks
    shop = ShopStats(avg_order_value=await average_order_value(store))
    counts = await count_segments(store, rules.ruleset, shop, batch=50)
    task.cancel()
    assert counts.total == 310
    assert ticks - before >= 310 // 50  # the ticker ran between the batches
    assert counts.counts["vip"] > 0 and set(counts.counts) == set(rules.ruleset.segment_names)


async def _round_trip(store: Store) -> None:
    await store.put_segment_snapshot("2026-12-01", {"total": 3, "counts": {"vip": 1}})
    await store.put_segment_snapshot("2026-12-03", {"total": 5, "counts": {"vip": 2}})
    await store.put_segment_snapshot("2026-12-03", {"total": 6, "counts": {"vip": 3}})
    assert await store.get_segment_snapshots("2026-12-02") == [
        {"day": "2026-12-03", "total": 6, "counts": {"vip": 3}}
    ]
    assert [s["day"] for s in await store.get_segment_snapshots("2026-01-01")] == [
        "2026-12-01",
        "2026-12-03",
    ]


async def test_snapshots_in_sqlite_survive_a_reopen(tmp_path: Path) -> None:
    store = GuardedStore(SQLiteStore(tmp_path / "p.db"))
    await _round_trip(store)
    await store.close()
    again = SQLiteStore(tmp_path / "p.db")
    assert len(await again.get_segment_snapshots("2026-01-01")) == 2
    await again.close()


async def test_snapshots_in_memory() -> None:
    await _round_trip(GuardedStore(MemoryStore()))


@pytest.mark.slow
async def test_snapshots_in_redis(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="edge-admin-test:")
    try:
        await _round_trip(GuardedStore(store))
    finally:
        await store._redis.delete("edge-admin-test:snapshots")
        await store.close()


async def test_the_daily_job_takes_today_once() -> None:
    store = GuardedStore(await _seeded(MemoryStore()))
    rules = LiveRules(ROOT / "rules")
    job = DailySnapshots(store, lambda: rules.ruleset, ShopStats)
    assert await job.once() is True
    assert await job.once() is False  # today's is there
    other = DailySnapshots(store, lambda: rules.ruleset, ShopStats)
    assert await other.once() is False  # another replica: the store has it
    kept = await store.get_segment_snapshots(today())
    assert len(kept) == 1 and kept[0]["total"] == 310
    direct = await count_segments(store, rules.ruleset, ShopStats())
    assert kept[0]["counts"] == direct.counts


async def test_edge_segments_snapshot_keeps_what_it_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "p.db"
    source = await _seeded(MemoryStore())
    store = SQLiteStore(db)
    await store.transact(list(source._data), [], lambda _current, _seen: source.profiles)
    await store.close()
    monkeypatch.setenv("EDGE_STORE", f"sqlite:{db}")
    monkeypatch.setenv("EDGE_SECRET", "s")
    monkeypatch.chdir(tmp_path)
    code = await asyncio.to_thread(main, ["segments", "--snapshot", "--rules", str(ROOT / "rules")])
    assert code == 0
    out = capsys.readouterr().out
    assert f"snapshot for {today()} (UTC)" in out and "310 stored profiles" in out
    vip = int(next(line for line in out.splitlines() if line.startswith("vip ")).split()[1])
    again = SQLiteStore(db)
    kept = await again.get_segment_snapshots(today())
    await again.close()
    assert kept[0]["counts"]["vip"] == vip and kept[0]["total"] == 310


async def test_take_snapshot_replaces_today_s() -> None:
    store = MemoryStore()
    rules = LiveRules(ROOT / "rules")
    await take_snapshot(store, rules.ruleset, ShopStats())
    await _seeded(store)
    day, counts = await take_snapshot(store, rules.ruleset, ShopStats())
    kept = await store.get_segment_snapshots(day)
    assert len(kept) == 1 and kept[0]["total"] == counts.total == 310


def test_the_next_snapshot_is_after_midnight_utc() -> None:
    noon = 1_796_644_800.0  # 2026-12-07T12:00:00Z
    assert today(noon) == "2026-12-07"
    assert _until_tomorrow(noon) == 12 * 3600
    assert today(noon + _until_tomorrow(noon)) == "2026-12-08"
    assert _until_tomorrow(noon + 12 * 3600 - 0.5) == 1.0  # never a busy loop


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_every_token_endpoint_reads_the_bearer_scheme_alike(scheme: str) -> None:
    """RFC 9110: the scheme is case-insensitive. The admin page, its data, the report
    and the readiness details read ``Authorization`` with one function
    (edge.headers.bearer), and a wrong token is refused by all of them."""
    config = Config(upstream="http://127.0.0.1:9", admin_token=TOKEN)
    app = create_app(config, MemoryStore())
    good = {"Authorization": f"{scheme}  {TOKEN} "}
    bad = {"Authorization": f"{scheme} {TOKEN}x"}
    async with _client(app) as client:
        for path in ("/_edge/admin", "/_edge/admin/data.json", "/_edge/report.json"):
            assert (await client.get(path, headers=good)).status_code == 200, path
            assert (await client.get(path, headers=bad)).status_code == 401, path
        assert "rule_errors" in (await client.get("/_edge/readyz", headers=good)).json()
        assert "rule_errors" not in (await client.get("/_edge/readyz", headers=bad)).json()


def test_script_nonce_of_a_policy() -> None:
    from edge.headers import script_nonce

    assert (
        script_nonce(b"default-src 'self'; script-src 'nonce-abc+/=' 'strict-dynamic'") == "abc+/="
    )
    assert script_nonce(b"default-src 'nonce-d3f'") == "d3f"  # the fallback
    assert script_nonce(b"script-src-elem 'nonce-e1'; script-src 'nonce-s1'") == "e1"
    assert script_nonce(b"script-src 'self'; default-src 'nonce-x'") == ""  # script-src rules
    assert script_nonce(b"script-src 'nonce-<x>'") == "" and script_nonce(b"") == ""


def test_bearer_and_same_token() -> None:
    from edge.headers import bearer, same_token

    assert bearer("Bearer abc") == "abc"
    assert bearer("bEaReR   abc  ") == "abc"
    assert bearer("Basic abc") is None and bearer("") is None
    assert same_token("abc", "abc") and not same_token("abd", "abc")
    assert not same_token("", "") and not same_token("abc", "")


async def test_only_the_edge_path_space_is_the_sidecars(app: Any) -> None:
    """``/_edge`` and ``/_edge/...`` are the sidecar's; ``/_edgex`` is a shop page (here
    the shop is unreachable: the sidecar's error page for it)."""
    async with _client(app) as client:
        assert (await client.get("/_edge/nothing")).status_code == 404
        assert (await client.get("/_edge")).status_code == 404
        shop = await client.get("/_edgex", headers={"Accept": "text/html"})
        assert shop.status_code == 502

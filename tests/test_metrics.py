"""``/_edge/metrics``: scraped from a real ``edge serve`` in front of the test upstream,
parsed with prometheus-client's own parser, and the counters moved by exactly the
traffic sent; the token; the store's API; the queue depth read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge import metrics
from edge.app import create_app
from edge.config import Config
from edge.identity import Identity
from edge.preview import make_token, preview_link
from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, fetch, start_edge

RULES = """
[slots.banner]
select = "body"
action = "prepend"

[[placements]]
id = "welcome"
slot = "banner"
snippet = "welcome.html"

[segments.anyone]
when = "true"
"""
HTML = {"Accept": "text/html"}
BOT = {"Accept": "text/html", "User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(edge: EdgeProcess, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = fetch(edge.port, "/_edge/metrics", headers=headers)
    assert reply.status == 200, reply.body[:300]
    assert (reply.header("content-type") or "").startswith("text/plain; version=0.0.4")
    assert reply.header("cache-control") == "no-store"
    return parse(reply.body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeProcess, Path]]:
    rules = tmp_path_factory.mktemp("rules")
    (rules / "site.toml").write_text(RULES, encoding="utf-8")
    snippets = tmp_path_factory.mktemp("snippets")
    (snippets / "welcome.html").write_text('<p id="welcome">Welcome</p>', encoding="utf-8")
    upstream = TestUpstream().start()
    proc = start_edge(
        upstream.url,
        env={
            "EDGE_RULES": str(rules),
            "EDGE_SNIPPETS": str(snippets),
            "EDGE_METRICS_TOKEN": "scrape-me",
            "EDGE_ACCESS_LOG": "off",
        },
    )
    yield proc, rules
    proc.stop()
    upstream.stop()


@pytest.mark.slow
def test_requests_are_counted_by_outcome(site: tuple[EdgeProcess, Path]) -> None:
    edge, _ = site
    before = scrape(edge, "scrape-me")
    for _ in range(3):
        reply = fetch(edge.port, "/page", headers=HTML)
        assert reply.status == 200 and b'<p id="welcome">' in reply.body
    for _ in range(2):
        reply = fetch(edge.port, "/page", headers=BOT)
        assert reply.status == 200 and b'<p id="welcome">' not in reply.body
    reply = fetch(edge.port, "/page", headers={"Accept": "image/png"})  # not a page view
    assert reply.status == 200 and b'<p id="welcome">' not in reply.body
    token = make_token(Identity(["test-secret"]), ["anyone"], ttl=600)
    link = preview_link("http://x", "/page", token).removeprefix("http://x")
    reply = fetch(edge.port, link, headers=HTML)
    assert reply.status == 200 and b'<p id="welcome">' in reply.body
    for _ in range(2):
        assert fetch(edge.port, "/reset", headers=HTML).status == 502
    after = scrape(edge, "scrape-me")

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert {o: moved("edge_requests_total", outcome=o) for o in metrics.OUTCOMES} == {
        "passthrough": 1,
        "personalized": 3,
        "preview": 1,
        "bot": 2,
        "error": 2,
    }
    # an upstream answer for every request but the two reset ones; a decision for each
    # page view of a visitor (made while the upstream works: the reset ones too), none
    # for the crawler's or the image's
    assert moved("edge_upstream_seconds_count") == 7
    assert moved("edge_upstream_seconds_bucket", le="+Inf") == 7
    assert moved("edge_upstream_seconds_sum") > 0
    assert moved("edge_decision_seconds_count") == 6
    # exposures: the three pages shown to visitors; not the preview, not the crawlers
    assert moved("edge_exposures_total", placement="welcome", group="shown") == 3
    assert value(after, "edge_event_queue_depth") >= 0
    assert value(after, "process_resident_memory_bytes") > 0


@pytest.mark.slow
def test_rule_reloads_and_refused_edits_are_counted(site: tuple[EdgeProcess, Path]) -> None:
    edge, rules = site
    before = scrape(edge, "scrape-me")
    broken = rules / "broken.toml"
    broken.write_text('[segments.bad]\nwhen = "orders_within("\n', encoding="utf-8")
    try:
        after = _scrape_until(edge, "edge_rules_reload_errors_total", before)
        assert value(after, "edge_rules_reloads_total") == value(before, "edge_rules_reloads_total")
    finally:
        broken.unlink()
    again = _scrape_until(edge, "edge_rules_reloads_total", before)
    assert value(again, "edge_rules_reloads_total") == value(before, "edge_rules_reloads_total") + 1
    assert fetch(edge.port, "/page", headers=HTML).body.count(b'<p id="welcome">') == 1


def _scrape_until(edge: EdgeProcess, name: str, before: Samples) -> Samples:
    """Scrape until *name* moved by one (the rules watcher polls every second)."""
    deadline = time.monotonic() + 15
    while True:
        samples = scrape(edge, "scrape-me")
        if value(samples, name) == value(before, name) + 1:
            return samples
        assert time.monotonic() < deadline, f"{name} never moved"
        time.sleep(0.2)


@pytest.mark.slow
def test_metrics_need_the_token_when_one_is_set(site: tuple[EdgeProcess, Path]) -> None:
    edge, _ = site
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic scrape-me"},
        {"Authorization": "Bearer scrape-me-too"},
    ):
        reply = fetch(edge.port, "/_edge/metrics", headers=headers)
        assert reply.status == 401, headers
        assert reply.header("www-authenticate") == "Bearer"
        assert b"edge_requests_total" not in reply.body
    assert value(scrape(edge, "scrape-me"), "edge_rules_reloads_total") >= 0


async def test_without_a_token_metrics_are_open(tmp_path: Path) -> None:
    config = Config(upstream="http://127.0.0.1:9", store=f"sqlite:{tmp_path}/p.db")
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        reply = await client.get("/_edge/metrics")
    await app.store.close()
    assert reply.status_code == 200
    assert ("edge_requests_total", (("outcome", "bot"),)) in parse(reply.text)


def test_the_store_api_and_the_breaker() -> None:
    before = parse(metrics.exposition().decode())
    metrics.store_call("load", 0.002)
    metrics.store_call("load", 0.3, ok=False)
    metrics.store_call("write", 0.004)
    metrics.store_breaker(open=True)
    opened = parse(metrics.exposition().decode())
    metrics.store_breaker(open=False)
    closed = parse(metrics.exposition().decode())

    def moved(name: str, **labels: str) -> float:
        return value(opened, name, **labels) - value(before, name, **labels)

    assert moved("edge_store_seconds_count", op="load") == 2
    assert moved("edge_store_seconds_bucket", op="load", le="0.0025") == 1
    assert moved("edge_store_seconds_bucket", op="load", le="0.5") == 2
    assert moved("edge_store_seconds_count", op="write") == 1
    assert moved("edge_store_errors_total", op="load") == 1
    assert moved("edge_store_errors_total", op="write") == 0
    assert value(opened, "edge_store_breaker_open") == 1
    assert value(closed, "edge_store_breaker_open") == 0


def test_a_value_on_a_bound_falls_in_that_bucket() -> None:
    timing = metrics.Timing((0.1, 1.0))
    for seconds in (0.1, 0.5, 1.0, 7.0):
        timing.observe(seconds)
    assert timing.buckets() == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]
    assert timing.sum == pytest.approx(8.6)


class _Queue:
    def __init__(self, depth: int) -> None:
        self.depth = depth

    def queued(self) -> int:
        return self.depth


def test_the_queue_depth_is_read_at_scrape_time_from_the_queues_alive() -> None:
    def depth() -> float:
        return value(parse(metrics.exposition().decode()), "edge_event_queue_depth")

    base = depth()
    first, second = _Queue(3), _Queue(4)
    metrics.queue_depth(first.queued)
    metrics.queue_depth(second.queued)
    assert depth() == base + 7
    first.depth = 10
    assert depth() == base + 14
    del second  # a queue gone (an app thrown away) no longer counts, nor is it kept alive
    assert depth() == base + 10

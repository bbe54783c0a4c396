"""A store that hangs or locks costs the page nothing: deadlines, the circuit breaker,
readiness, and no acknowledged event lost.

The breaker alone (a clock of the test's own), a real SQLite file locked by another
connection, a real redis-server paused with SIGSTOP under the store in process, and
under a real ``edge serve`` serving a shop of the test's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.identity import Identity
from edge.profiles import events as ev
from edge.profiles.model import encode, new_profile
from edge.profiles.redis import RedisStore
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import Breaker, GuardedStore, MemoryStore, StoreUnavailable, Ticket
from tests.conftest import EdgeProcess, fetch, serving, start_edge
from tests.redis_server import RedisServer, require_redis_server

SECRET = "faults-secret"
TOKEN = "faults-ingest"
ADMIN = "faults-admin"
IDENTITY = Identity([SECRET])


class Observed:
    """A StoreObserver that keeps what it heard."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.breaker: list[bool] = []

    def store_call(self, op: str, seconds: float, ok: bool) -> None:
        assert seconds >= 0
        self.calls.append((op, ok))

    def store_breaker(self, open: bool) -> None:
        self.breaker.append(open)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# --- the breaker ----------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_probes_once_after_the_cooldown() -> None:
    now = [100.0]
    changes: list[bool] = []
    breaker = Breaker(3, 5.0, clock=lambda: now[0], on_change=changes.append)
    for _ in range(2):
        breaker.failed(breaker.attempt(), "timeout")
    breaker.succeeded(breaker.attempt())  # a success in between: the count starts again
    for _ in range(2):
        breaker.failed(breaker.attempt(), "timeout")
    assert breaker.state == "closed" and changes == []
    breaker.failed(breaker.attempt(), "timeout")
    assert breaker.state == "open" and changes == [True]
    assert breaker.attempt() is Ticket.REFUSED
    now[0] += 4.9
    assert breaker.attempt() is Ticket.REFUSED
    now[0] += 0.2
    probe = breaker.attempt()
    assert probe is Ticket.PROBE
    assert breaker.attempt() is Ticket.REFUSED  # one probe at a time
    breaker.failed(probe, "error: ConnectionError")  # still down: another cool-down
    assert breaker.state == "open" and changes == [True]
    assert breaker.last_error == "error: ConnectionError"
    now[0] += 5.1
    probe = breaker.attempt()
    breaker.abandoned(probe)  # the caller went away: the next call probes
    probe = breaker.attempt()
    assert probe is Ticket.PROBE
    breaker.succeeded(probe)
    assert breaker.state == "closed" and changes == [True, False]
    assert breaker.attempt() is Ticket.CALL


# --- SQLite: a file another process holds locked -----------------------------------


async def test_a_locked_sqlite_file_fails_writes_within_the_deadline_and_reads_go_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.db"
    inner = SQLiteStore(path, read_timeout=0.05, write_timeout=0.2)
    observed = Observed()
    store = GuardedStore(
        inner, read_timeout=0.05, write_timeout=2.0, breaker=Breaker(3, 0.3), observer=observed
    )
    service = ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)
    await service.record("v1", [_dwell("p1")], ev.Source.BROWSER)

    # Another program holds the file's write lock (a long transaction, a tool).
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        # What the sidecar observed waits in the background for the lock to go.
        background = asyncio.ensure_future(service.record("v1", [_dwell("p3")], ev.Source.OBSERVED))
        for _ in range(3):  # a sender's batch: refused within the lock wait, not acknowledged
            with pytest.raises(StoreUnavailable) as failed:
                await service.record("v1", [_dwell("p2")], ev.Source.BROWSER)
            # the writer's lock wait (half the deadline), or the deadline when the
            # background retry held the writer first
            assert failed.value.reason in ("error", "timeout")
            # WAL: reads do not wait for the writer, so pages stay personalized, and
            # their successes keep the breaker closed (failures must be consecutive).
            service.cache.forget_cached("v1")
            loaded = await service.load("v1")
            assert loaded is not None and loaded.dwell_count == 1
        assert ("transact", False) in observed.calls
        assert store.breaker.state == "closed" and observed.breaker == []
        assert not background.done()
        await asyncio.sleep(0.15)  # past the writer's lock wait: it holds no p2 any more
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await background is not None  # written once the lock went
    profile = await service.load("v1")
    assert profile is not None and profile.dwell_count == 2  # p1 and p3; p2 was refused
    await store.close()


async def test_a_sqlite_write_past_its_deadline_fails_and_is_skipped_if_not_begun(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.db"
    store = SQLiteStore(path, write_timeout=0.2)
    service = ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)
    await service.record("v1", [_dwell("p1")], ev.Source.BROWSER)
    store._writer.execute("PRAGMA busy_timeout=3000")  # a writer stuck longer than that
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        first = asyncio.ensure_future(service.record("v1", [_dwell("p2")], ev.Source.BROWSER))
        await asyncio.sleep(0.05)  # the writer took it and waits for the lock
        second = asyncio.ensure_future(service.record("v1", [_dwell("p3")], ev.Source.BROWSER))
        for pending in (first, second):
            with pytest.raises(TimeoutError):
                await pending
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await service.record("v1", [_dwell("p4")], ev.Source.BROWSER)  # the writer goes on
    service.cache.forget_cached("v1")
    profile = await service.load("v1")
    assert profile is not None
    # p3's caller stopped waiting before the writer began it: never written. (p2 was
    # begun: it may have landed, which is why a timed-out batch is not acknowledged.)
    assert profile.dwell_count in (2, 3)
    assert "p3" not in json.dumps(msgspec.to_builtins(profile))
    await store.close()


async def test_a_sqlite_read_past_its_deadline_is_interrupted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db", read_timeout=0.05)
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT ? FROM n"
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        store._read_one(endless + " WHERE x < 0", "never")
    assert await store.get("nobody") is None  # the connection reads on
    await store.close()


def _dwell(product: str) -> ev.BaseEvent:
    return ev.ProductEngaged(product_id=product, dwell_ms=1000)


# --- Redis paused, in process -------------------------------------------------------


@pytest.fixture(scope="module")
def paused_redis() -> Iterator[RedisServer]:
    """A redis-server of this module's own: the tests stop and continue it."""
    executable = require_redis_server()
    with tempfile.TemporaryDirectory(prefix="edge-faults-") as data_dir:
        server = RedisServer(executable, Path(data_dir)).start()
        try:
            yield server
        finally:
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()


class Paused:
    def __init__(self, server: RedisServer) -> None:
        assert server.proc is not None
        self.pid = server.proc.pid

    def __enter__(self) -> Paused:
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


@pytest.mark.slow
async def test_a_paused_redis_times_out_opens_the_breaker_and_is_not_called_while_open(
    paused_redis: RedisServer,
) -> None:
    inner = RedisStore(paused_redis.url, prefix="inproc:", timeout=1.0)
    observed = Observed()
    store = GuardedStore(
        inner, read_timeout=0.05, write_timeout=1.0, breaker=Breaker(4, 0.3), observer=observed
    )
    service = ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)
    await service.record("v1", [_dwell("p1")], ev.Source.BROWSER)
    service.cache.forget_cached("v1")
    with Paused(paused_redis):
        loads = [service.load("v1") for _ in range(8)]  # a burst of page views at once
        outcomes = await asyncio.gather(*loads, return_exceptions=True)
        assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
        assert {o.reason for o in outcomes} <= {"timeout", "open"}  # type: ignore[union-attr]
        assert store.breaker.state == "open" and observed.breaker == [True]
        tried = store.calls
        for _ in range(50):
            with pytest.raises(StoreUnavailable):
                await service.load("v1")
        assert store.calls == tried
        assert ("get", False) in observed.calls
        # What the sidecar observed is retried in the background, not dropped.
        pending = asyncio.ensure_future(service.record("v1", [_dwell("p2")], ev.Source.OBSERVED))
        await asyncio.sleep(0.5)
        assert not pending.done()
    assert (await pending) is not None
    wait_until = time.monotonic() + 5
    while store.breaker.state != "closed" and time.monotonic() < wait_until:
        await asyncio.sleep(0.05)
    assert store.breaker.state == "closed" and observed.breaker == [True, False]
    profile = await service.load("v1")
    assert profile is not None
    assert profile.dwell_count == 2  # p1 before the pause, p2 retried after it
    await store.close()


# --- Redis paused under a real `edge serve` -------------------------------------------

SHOP_PAGE = (
    "<!doctype html>\n<html><head><meta charset=utf-8><title>Shop</title></head><body>\n"
    '<section data-edge-slot="home-hero"><h1>The shop\'s own hero</h1></section>\n'
    + "".join(f"<p>Line {i}</p>\n" for i in range(50))
    + "</body></html>\n"
).encode()

RULES = {
    "theme.toml": """
[page_types]
home = "/"

[slots.home-hero]
label = "The hero"
select = "[data-edge-slot=home-hero]"
pages = ["home"]
""",
    "segments.toml": """
[segments.buyer]
label = "Bought something"
when = "orders >= 1"
""",
    "placements.toml": """
[[placements]]
id = "hero-buyer"
slot = "home-hero"
segment = "buyer"
snippet = "buyer.html"
""",
}


class _Shop(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(SHOP_PAGE)))
        self.end_headers()
        self.wfile.write(SHOP_PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(paused_redis: RedisServer) -> Iterator[tuple[EdgeProcess, Path]]:
    """``edge serve`` on the paused Redis, and its rule directory."""
    work = Path(tempfile.mkdtemp(prefix="edge-faults-"))
    (work / "rules").mkdir()
    (work / "snippets").mkdir()
    for name, text in RULES.items():
        (work / "rules" / name).write_text(text)
    (work / "snippets" / "buyer.html").write_text("<h1>Welcome back, buyer</h1>")
    env = {
        "EDGE_STORE": paused_redis.url,
        "EDGE_SECRET": SECRET,
        "EDGE_INGEST_TOKEN": TOKEN,
        "EDGE_ADMIN_TOKEN": ADMIN,
        "EDGE_RULES": str(work / "rules"),
        "EDGE_SNIPPETS": str(work / "snippets"),
        "EDGE_STORE_BREAKER_FAILURES": "3",
        "EDGE_STORE_BREAKER_COOLDOWN": "0.5",
        "EDGE_STORE_WRITE_TIMEOUT_MS": "500",
    }
    with serving(_Shop) as shop:
        proc = start_edge(shop, env=env)
        yield proc, work / "rules"
        proc.stop()


def _cookie(port: int) -> tuple[str, str]:
    reply = fetch(port, "/", headers={"Accept": "text/html"})
    value = next(v for v in reply.all("set-cookie") if v.startswith("edge_vid="))
    cookie = value.split(";")[0]
    return cookie, cookie.removeprefix("edge_vid=").split(".")[0]


def _ingest(port: int, visitor: str, order_id: str) -> int:
    order = {
        "events": [
            {
                "event": "Order Completed",
                "order_id": order_id,
                "total": 40.0,
                "anonymous_id": visitor,
                "products": [{"product_id": "p1"}],
            }
        ]
    }
    reply = fetch(
        port,
        "/_edge/ingest",
        "POST",
        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        json.dumps(order).encode(),
    )
    return reply.status


def _page(port: int, cookie: str) -> bytes:
    reply = fetch(port, "/", headers={"Accept": "text/html", "Cookie": cookie})
    assert reply.status == 200
    return reply.body


def _ready(port: int, admin: bool = False) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ADMIN}"} if admin else {}
    reply = fetch(port, "/_edge/readyz", headers=headers)
    return reply.status, json.loads(reply.body)


@pytest.mark.slow
def test_a_paused_redis_serves_the_shops_page_and_loses_no_acknowledged_event(
    served: tuple[EdgeProcess, Path], paused_redis: RedisServer
) -> None:
    port = served[0].port
    status, ready = _ready(port)
    assert status == 200 and ready["checks"]["store"] == "ok"

    # A buyer, personalized while Redis answers.
    cookie, visitor = _cookie(port)
    _page(port, cookie)  # their second request: the profile is stored
    assert _ingest(port, visitor, "F-1") == 200
    wait_for(lambda: b"Welcome back, buyer" in _page(port, cookie))

    with Paused(paused_redis):
        # Nothing cached for this one (the cache keeps a profile 5 s): a new visitor
        # whose loads must reach the hung store.
        other, other_id = _cookie(port)
        pages = [_page(port, other) for _ in range(6)]
        assert all(page == SHOP_PAGE for page in pages)  # the shop's page, byte for byte
        status, ready = _ready(port)
        assert status == 503 and ready["status"] == "not ready"
        assert ready["checks"]["store"] in ("breaker open", "timeout")
        assert any(reason.startswith("store: ") for reason in ready["reasons"])
        assert "store" not in ready  # the detail is the admin's
        status, detail = _ready(port, admin=True)
        assert status == 503 and detail["store"]["breaker"] in ("open", "half-open")
        assert detail["store"]["last_error"] in ("timeout", "error: ConnectionError")
        # A shop's batch while the store is away: not acknowledged, retried later.
        refused = fetch(
            port,
            "/_edge/ingest",
            "POST",
            {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            json.dumps(
                {
                    "events": [
                        {
                            "event": "Order Completed",
                            "order_id": "F-2",
                            "total": 40.0,
                            "anonymous_id": visitor,
                        }
                    ]
                }
            ).encode(),
        )
        assert refused.status == 503 and refused.header("retry-after") == "1"
        # What an operator's dashboard shows: the breaker open, failed store calls.
        scraped = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(
                fetch(port, "/_edge/metrics").body.decode()
            )
            for sample in family.samples
        }
        assert scraped[("edge_store_breaker_open", ())] == 1
        failed = [v for (name, _), v in scraped.items() if name == "edge_store_errors_total"]
        assert sum(failed) >= 1
        # The visitor's own profile page: not there now, ask again (not a 500).
        mine = fetch(port, "/_edge/profile", headers={"Cookie": other})
        assert mine.status == 503 and mine.header("retry-after") == "1"

    # Redis continues: the breaker closes after its cool-down and pages are personal again.
    wait_for(lambda: _ready(port)[0] == 200)
    assert _ready(port, admin=True)[1]["store"]["breaker"] == "closed"
    assert _ingest(port, visitor, "F-2") == 200  # the sender's retry
    assert _ingest(port, visitor, "F-2") == 200  # and a second one counts once
    profile = json.loads(fetch(port, "/_edge/profile", headers={"Cookie": cookie}).body)
    assert profile["profile"]["order_count"] == 2  # F-1 (before the pause) and F-2
    assert b"Welcome back, buyer" in _page(port, cookie)
    # The other visitor's page views during the pause were written once it answered.
    wait_for(
        lambda: (
            (
                p := json.loads(fetch(port, "/_edge/profile", headers={"Cookie": other}).body)[
                    "profile"
                ]
            )
            is not None
            and p["session_pageviews"] >= 6
        )
    )
    assert other_id


@pytest.mark.slow
def test_readiness_shows_rule_errors_in_a_few_words_and_the_details_to_the_admin(
    served: tuple[EdgeProcess, Path],
) -> None:
    proc, rules = served
    broken = rules / "broken.toml"
    broken.write_text('[segments.oops]\nlabel = "Oops"\nwhen = "orders >>= 1"\n')
    try:
        wait_for(lambda: _ready(proc.port)[1]["checks"]["rules"] != "ok")
        status, public = _ready(proc.port)
        assert status == 200  # the rules that were serving keep serving
        assert public["checks"]["rules"] == "error in 1 file"
        assert "rules: error in 1 file" in public["reasons"]
        text = json.dumps(public)
        assert "broken.toml" not in text and str(rules) not in text and ">>=" not in text
        for wrong in ({"Authorization": "Bearer nope"}, {"X-Edge-Admin-Token": "nope"}):
            reply = fetch(proc.port, "/_edge/readyz", headers=wrong)
            assert "rule_errors" not in json.loads(reply.body)
        reply = fetch(proc.port, "/_edge/readyz", headers={"X-Edge-Admin-Token": ADMIN})
        detail = json.loads(reply.body)
        assert any("broken.toml:3:" in error for error in detail["rule_errors"])
        assert detail["store"]["breaker"] == "closed"
    finally:
        broken.unlink()
    wait_for(lambda: _ready(proc.port)[1]["checks"]["rules"] == "ok")


# --- the SQLite layout --------------------------------------------------------------


async def test_a_store_of_the_older_layout_is_moved_to_the_current_one(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(
        "CREATE TABLE profiles (key TEXT PRIMARY KEY, data BLOB NOT NULL, "
        "updated INTEGER NOT NULL) WITHOUT ROWID"
    )
    profile = new_profile("v-old", 1_700_000_000)
    profile.dwell_count = 3
    old.execute("INSERT INTO profiles VALUES (?, ?, 0)", ("v-old", encode(profile)))
    old.close()
    store = SQLiteStore(path)
    loaded = await store.get("v-old")
    assert loaded is not None and loaded.dwell_count == 3
    await store.close()
    check = sqlite3.connect(path)
    (sql,) = check.execute("SELECT sql FROM sqlite_master WHERE name = 'profiles'").fetchone()
    assert "WITHOUT ROWID" not in sql.upper()
    assert check.execute(
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 'profiles_%' AND type = 'table'"
    ).fetchone() == (0,)
    check.close()
    again = SQLiteStore(path)  # the current layout is left as it is
    assert (await again.get("v-old")) is not None
    await again.close()


async def test_a_redis_nobody_listens_on_fails_fast_and_opens_the_breaker() -> None:
    from tests.conftest import free_port

    observed = Observed()
    store = GuardedStore(
        RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0),
        read_timeout=0.05,
        breaker=Breaker(2, 60.0),
        observer=observed,
    )
    for _ in range(2):
        with pytest.raises(StoreUnavailable) as failed:
            await store.get("v1")
        assert failed.value.reason == "error"
    assert store.breaker.state == "open" and store.breaker.last_error == "error: ConnectionError"
    with pytest.raises(StoreUnavailable) as refused:
        await store.ping()
    assert refused.value.reason == "open"
    assert observed.calls == [("get", False), ("get", False)]
    await store.close()


async def test_signed_request_names_are_claimed_in_the_store_itself() -> None:
    # Replicas share what the store keeps: a name claimed through one guard is taken
    # for another over the same store.
    inner = MemoryStore()
    first, second = GuardedStore(inner), GuardedStore(inner)
    assert await first.claim_once("sig-1", 60)
    assert not await second.claim_once("sig-1", 60)
    await second.release_once("sig-1")
    assert await first.claim_once("sig-1", 60)

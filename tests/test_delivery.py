"""Delivering the outbox to a real HTTP receiver (a local server the test starts): signed
as the README says a receiver verifies, the same idempotency key on every try, dead
after max_attempts, sent again by ``edge outbox retry``, at most ``rate`` a second, a
coupon code fixed at the first try; the due loop on an injectable clock; and a real
``edge serve`` killed with SIGKILL in the middle of deliveries loses no message, on
SQLite and on Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from edge.activation.delivery import BACKOFF_CAP, Delivery, Destination, sign
from edge.activation.loop import ActivationLoops
from edge.metrics import exposition
from edge.profiles.backends import open_store
from edge.profiles.model import Profile
from edge.profiles.outbox import DEAD, DELIVERED, PENDING, OutMessage
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import Profiles, Store, activating
from tests.conftest import EDGE, ROOT, free_port, wait_listening
from tests.test_outbox import DELAY, Reminder, view
from tests.test_profiles import IDENTITY, NOW

SECRET = b"whsec-test-secret"


def readme_verify() -> Callable[..., bool]:
    """The receiver's verification, as the README shows it (run as it is written)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (code,) = [b for b in blocks if "def verify(" in b and "Shop-Edge-Signature" in b]
    scope: dict[str, Any] = {}
    exec(code, scope)
    return scope["verify"]  # type: ignore[no-any-return]


VERIFY = readme_verify()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


@dataclass
class Receiver:
    """What the receiver got, and what it answers per path (200 by default)."""

    url: str = ""
    got: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.got if r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            if len(body) < length:  # the sender died mid-request: nothing received
                return
            with state.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                state.got.append(Received(self.path, headers, body))
                status = state.status.get(self.path, 200)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # (the default 5 refuses a burst of deliveries)

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


class Fixed:
    """An activation that enqueues the given messages (the store's own path)."""

    def __init__(self, messages: list[OutMessage]) -> None:
        self.messages = messages

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        return self.messages


async def enqueue(store: Store, messages: list[OutMessage], now: int = NOW) -> None:
    """Write *messages* as the activation does: in a profile's transaction."""

    def keep(current: Profiles, seen: set[str]) -> Profiles:
        return {"v-enqueue": current["v-enqueue"] or Profile(visitor_id="v-enqueue")}

    await store.transact(["v-enqueue"], [], activating(keep, Fixed(messages), now, []))


def destination(receiver: Receiver, path: str, **kw: Any) -> Destination:
    settings = {"rate": 100, "max_attempts": 8, "timeout": 10.0, **kw}
    return Destination(path.strip("/"), receiver.url + path, SECRET, **settings)


def msg(id: str, dest: str, **kw: Any) -> OutMessage:
    body = kw.pop("body", json.dumps({"id": id, "code": "__EDGE_COUPON__"}).encode())
    return OutMessage(id, dest, body, kw.pop("visitor", "v1"), kw.pop("not_before", NOW), **kw)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "p.db")
    yield store
    await store.close()


async def test_a_receiver_gets_webhooks_signed_as_the_readme_verifies(
    receiver: Receiver, store: Store
) -> None:
    await store.coupon_load("spring", ["SPRING-1", "SPRING-2"])
    await enqueue(
        store,
        [
            msg("m1", "signed", coupon_pool="spring"),
            msg("m2", "signed", body=b'{"segment": "lapsed", "entered": true}'),
            msg("m3", "signed", body=b"{}", not_before=NOW + 60),
        ],
    )
    delivery = Delivery(store, {"signed": destination(receiver, "/signed")})
    assert await delivery.run_once(NOW) == 2  # m3 waits for its time
    got = receiver.on("/signed")
    assert sorted(r.headers["idempotency-key"] for r in got) == ["m1", "m2"]
    for r in got:
        assert r.headers["content-type"] == "application/json"
        assert VERIFY(SECRET, r.headers["shop-edge-signature"], r.body)
        assert not VERIFY(b"another secret", r.headers["shop-edge-signature"], r.body)
        assert not VERIFY(SECRET, r.headers["shop-edge-signature"], r.body + b" ")
    by_key = {r.headers["idempotency-key"]: json.loads(r.body) for r in got}
    assert by_key == {
        "m1": {"id": "m1", "code": "SPRING-1"},
        "m2": {"segment": "lapsed", "entered": True},
    }
    old = sign(SECRET, b"{}", int(time.time()) - 301)
    assert not VERIFY(SECRET, old, b"{}")  # a replay after 5 minutes is refused
    assert await delivery.run_once(NOW + 60) == 1
    states = {r.message.id: r.state for r in await store.outbox_list("", 10)}
    assert states == {"m1": DELIVERED, "m2": DELIVERED, "m3": DELIVERED}
    scraped = exposition().decode()
    assert 'edge_webhooks_total{destination="signed",outcome="delivered"} 3.0' in scraped
    await delivery.close()


def edge_cli(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["EDGE_STORE"] = store
    return subprocess.run(
        [*EDGE, *args], cwd=ROOT / "tests", env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_dead_after_max_attempts_then_sent_again_by_edge_outbox_retry(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Against a receiver answering 500: three tries (the same key and the same coupon
    code each time), then dead; `edge outbox retry --dead` makes it pending, and it
    goes once the receiver is back."""
    path = tmp_path / "p.db"
    receiver.status["/down"] = 500
    dest = {"down": destination(receiver, "/down", max_attempts=3)}

    async def until_dead() -> list[int]:
        store = SQLiteStore(path)
        await store.coupon_load("spring", ["A1", "A2", "A3"])
        await enqueue(store, [msg("d1", "down", coupon_pool="spring")])
        delivery = Delivery(store, dest)
        claimed, now = [], NOW
        for _ in range(5):
            claimed.append(await delivery.run_once(now))
            (row,) = await store.outbox_list("", 1)
            if row.state == PENDING:
                assert now < row.next_at <= now + BACKOFF_CAP  # a wait, capped
            now += int(BACKOFF_CAP) + 1  # past any wait
        await delivery.close()
        await store.close()
        return claimed

    assert asyncio.run(until_dead()) == [1, 1, 1, 0, 0]
    tries = receiver.on("/down")
    assert len(tries) == 3
    assert {r.headers["idempotency-key"] for r in tries} == {"d1"}
    assert {r.body for r in tries} == {b'{"id": "d1", "code": "A1"}'}

    listed = edge_cli("outbox", "list", "--state", "dead", "--json", store=f"sqlite:{path}")
    assert listed.returncode == 0, listed.stderr
    (dead,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (dead["id"], dead["state"], dead["attempts"], dead["error"]) == (
        "d1",
        DEAD,
        3,
        "HTTP 500",
    )

    retried = edge_cli("outbox", "retry", "--dead", store=f"sqlite:{path}")
    assert retried.returncode == 0, retried.stderr
    assert "1 messages to be sent again" in retried.stdout
    receiver.status["/down"] = 200

    async def once_more() -> list[Any]:
        store = SQLiteStore(path)
        delivery = Delivery(store, dest)
        claimed = await delivery.run_once(int(time.time()))
        rows = await store.outbox_list("", 10)
        await delivery.close()
        await store.close()
        return [claimed, [(r.state, r.attempts) for r in rows]]

    assert asyncio.run(once_more()) == [1, [(DELIVERED, 1)]]
    tries = receiver.on("/down")
    assert len(tries) == 4 and tries[-1].body == b'{"id": "d1", "code": "A1"}'
    recent = edge_cli(
        "outbox", "purge", "--state", "delivered", "--older-than", "1d", store=f"sqlite:{path}"
    )
    assert recent.returncode == 0 and "0 delivered messages deleted" in recent.stdout
    purged = edge_cli("outbox", "purge", "--state", "delivered", store=f"sqlite:{path}")
    assert purged.returncode == 0 and "1 delivered messages deleted" in purged.stdout


async def test_at_most_rate_messages_in_each_second(receiver: Receiver, store: Store) -> None:
    """Counted per one-second window of the signatures' timestamps (the sender's clock
    as the receiver sees it)."""
    await enqueue(store, [msg(f"r{i:02}", "limited", body=b"{}") for i in range(25)])
    delivery = Delivery(store, {"limited": destination(receiver, "/limited", rate=10)})
    while await store.outbox_list(PENDING, 1):
        await delivery.run_once(NOW)
    got = receiver.on("/limited")
    assert sorted(r.headers["idempotency-key"] for r in got) == [f"r{i:02}" for i in range(25)]
    per_second: dict[int, int] = {}
    for r in got:
        t = int(r.headers["shop-edge-signature"].split(",")[0].removeprefix("t="))
        per_second[t] = per_second.get(t, 0) + 1
    assert max(per_second.values()) <= 10
    assert len(per_second) >= 3
    await delivery.close()


async def test_the_due_loop_on_an_injected_clock(receiver: Receiver, store: Store) -> None:
    """A profile due at NOW + DELAY is looked at then and not before; its message is
    delivered by the next round."""
    service = ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)
    service.activation = Reminder()
    clock = [float(NOW)]
    delivery = Delivery(store, {"esp": destination(receiver, "/due")})
    loops = ActivationLoops(service, store, delivery, interval=60, clock=lambda: clock[0])
    await view(service, "v-due", NOW)
    await store.coupon_load("spring", ["DUE-1"])
    assert await loops.due_once(NOW + DELAY - 1) == 0
    assert await delivery.run_once(NOW + DELAY - 1) == 0
    assert await loops.due_once(NOW + DELAY) == 1
    assert await loops.due_once(NOW + DELAY + 60) == 0  # done: no longer due
    assert await delivery.run_once(NOW + DELAY) == 1
    (got,) = receiver.on("/due")
    assert json.loads(got.body) == {"visitor": "v-due", "code": "DUE-1"}
    assert got.headers["idempotency-key"] == f"remind:v-due:{NOW}"
    await delivery.close()


# --- kill -9 of a real `edge serve` in the middle of deliveries ----------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_kill_9_in_the_middle_of_deliveries_loses_no_message(
    kind: str, receiver: Receiver, upstream: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    count = 120
    ids = [f"k{kind}{i:03}" for i in range(count)]
    path = f"/killed-{kind}"
    if kind == "sqlite":
        spec = f"sqlite:{tmp_path / 'p.db'}"
    else:  # a database of the test server of its own, under the sidecar's default prefix
        spec = request.getfixturevalue("redis_url").replace("/0", "/2")
        redis.Redis.from_url(spec).flushdb()

    async def fill() -> None:
        store = open_store(spec)
        now = int(time.time())
        await enqueue(
            store, [msg(i, "esp", body=b'{"id": "%s"}' % i.encode(), not_before=now) for i in ids]
        )
        await store.close()

    asyncio.run(fill())
    (tmp_path / "edge.toml").write_text(
        "activation = true\n"
        "[destinations.esp]\n"
        f'url = "{receiver.url}{path}"\n'
        'secret_env = "EDGE_DEST_ESP_SECRET"\n'
        "rate = 30\n"
        'timeout = "1s"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env |= {
        "EDGE_STORE": spec,
        "EDGE_SECRET": "test-secret",
        "EDGE_DEST_ESP_SECRET": SECRET.decode(),
    }

    def start() -> subprocess.Popen[bytes]:
        port = free_port()
        proc = subprocess.Popen(
            [*EDGE, "serve", "--upstream", upstream.url, "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "edge.log").open("ab"),
        )
        wait_listening(port, proc=proc)
        return proc

    def received() -> list[Received]:
        return receiver.on(path)

    def wait_for(enough: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not enough():
            assert time.monotonic() < deadline, (tmp_path / "edge.log").read_text()[-2000:]
            time.sleep(0.02)

    first = start()
    try:
        wait_for(lambda: len(received()) >= 20, 30)
        first.send_signal(signal.SIGKILL)  # mid-round: claimed messages left unsettled
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert len({r.headers["idempotency-key"] for r in received()}) < count
    second = start()
    try:
        wait_for(lambda: {r.headers["idempotency-key"] for r in received()} >= set(ids), 60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    got = received()
    assert {r.headers["idempotency-key"] for r in got} == set(ids)
    for r in got:  # a duplicate is the same message under the same key, signed
        assert json.loads(r.body) == {"id": r.headers["idempotency-key"]}
        assert VERIFY(SECRET, r.headers["shop-edge-signature"], r.body)

    async def states() -> tuple[set[str], int]:
        store = open_store(spec)
        rows = await store.outbox_list("", 1000)
        await store.close()
        mine = [r for r in rows if r.message.id in set(ids)]
        return {r.state for r in mine}, sum(r.attempts > 1 for r in mine)

    wait_for(lambda: asyncio.run(states())[0] == {DELIVERED}, 10)
    # The killed sidecar had taken messages it never settled: the second took them again.
    assert asyncio.run(states())[1] > 0


def test_a_destination_secret_missing_from_the_environment_is_an_error_naming_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "edge.toml").write_text(
        'activation = true\n[destinations.esp]\nurl = "https://esp.example/h"\n'
        'secret_env = "EDGE_DEST_ESP_SECRET"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--port",
            str(free_port()),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "EDGE_DEST_ESP_SECRET" in done.stderr and "Traceback" not in done.stderr


async def test_a_receiver_that_is_down_is_tried_again_later(store: Store) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook?token=s3cret"  # nothing listens there
    dest = Destination("gone", closed, SECRET, rate=10, max_attempts=8, timeout=2.0)
    await enqueue(store, [msg("g1", "gone", body=b"{}")])
    delivery = Delivery(store, {"gone": dest})
    assert await delivery.run_once(NOW) == 1
    (row,) = await store.outbox_list("", 1)
    assert (row.state, row.attempts, row.error) == (PENDING, 1, "no answer: ConnectError")
    assert NOW < row.next_at <= NOW + 30  # the first wait: at most 30 s
    assert "s3cret" not in row.error
    assert await delivery.run_once(row.next_at - 1) == 0
    assert await delivery.run_once(row.next_at) == 1
    await delivery.close()

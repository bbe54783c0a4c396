"""The outbox and the due index in every store: messages written in the profiles'
transaction, claimed under a lease, settled, retried, purged, erased with their
visitor; coupon codes never given twice; the due index finds exactly who is due.

The delivery worker against a real HTTP receiver is in tests/test_delivery.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from edge.profiles import events as ev
from edge.profiles.model import Profile
from edge.profiles.outbox import DEAD, DELIVERED, PENDING, OutMessage
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import GuardedStore, MemoryStore, Store
from tests.test_profiles import IDENTITY, NOW, events

DELAY = 4 * 3600
_prefixes = itertools.count()


class Reminder:
    """A minimal activation, standing in for edge.activation's Activator: a profile is
    due DELAY after its last page view; written at or after that time, it gets one
    message and is due no more."""

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        if profile.due and now >= profile.due:
            profile.due = 0
            body = b'{"visitor": "%s", "code": "__EDGE_COUPON__"}' % profile.visitor_id.encode()
            return [message(f"remind:{profile.visitor_id}:{profile.last_seen}", profile, body)]
        if before is None or profile.last_seen != before.last_seen:
            profile.due = profile.last_seen + DELAY
        return []


def message(id: str, profile: Profile, body: bytes = b"{}") -> OutMessage:
    return OutMessage(id, "esp", body, profile.visitor_id, profile.due or NOW, "spring")


StoreMaker = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    """Stores of one kind sharing their data (memory: the same one)."""
    if request.param == "memory":
        one = MemoryStore()
        return lambda: one
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "p.db")
    from edge.profiles.redis import RedisStore

    url, prefix = request.getfixturevalue("redis_url"), f"to{next(_prefixes)}:"
    return lambda: RedisStore(url, prefix=prefix)


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[Store]:
    # (the deadlines of a serving sidecar are not what these tests are about: a loaded
    # machine stalled a Redis read past the page path's 50 ms)
    store = GuardedStore(make_store(), read_timeout=10.0, write_timeout=10.0)
    yield store
    await store.close()


@pytest.fixture
def service(store: Store) -> ProfileService:
    service = ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)
    service.activation = Reminder()
    return service


async def view(service: ProfileService, visitor: str, at: int) -> None:
    await service.record(visitor, events({"event": "Page Viewed"}), ev.Source.BROWSER, now=at)


async def test_the_due_index_finds_exactly_the_profiles_due(
    service: ProfileService, store: Store
) -> None:
    for i in range(6):
        await view(service, f"v{i}", NOW + i * 60)
    assert await store.due_keys(until=NOW + DELAY - 1, limit=100) == []
    assert await store.due_keys(until=NOW + 2 * 60 + DELAY, limit=100) == ["v0", "v1", "v2"]
    assert await store.due_keys(until=NOW + 10**6, limit=2) == ["v0", "v1"]
    # Written at its due time, v1 gets its message and leaves the index; a new view
    # of v0 moves it later.
    await service.touch(["v1"], NOW + 60 + DELAY)
    await view(service, "v0", NOW + 600)
    assert await store.due_keys(until=NOW + 5 * 60 + DELAY, limit=100) == ["v2", "v3", "v4", "v5"]
    assert await store.due_keys(until=NOW + 600 + DELAY, limit=100) == [
        "v2",
        "v3",
        "v4",
        "v5",
        "v0",
    ]
    pending = await store.outbox_list(PENDING, 100)
    assert [r.message.id for r in pending] == [f"remind:v1:{NOW + 60}"]
    assert pending[0].message.visitor == "v1"
    assert pending[0].attempts == 0


class Observing(Reminder):
    """The Reminder, noting the ``before`` it is given (the last page view it shows)."""

    def __init__(self, reads_before: bool) -> None:
        self.reads_before = reads_before
        self.befores: list[int | None] = []

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        self.befores.append(None if before is None else before.last_seen)
        return super().after(profile, before, now)


@pytest.mark.parametrize("reads_before", [True, False])
async def test_the_profile_as_read_is_kept_only_for_an_activation_that_reads_it(
    service: ProfileService, store: Store, reads_before: bool
) -> None:
    # edge.activation's Activator judges the profile as it is (reads_before = False):
    # the write then keeps no copy of it as read, and stores the same.
    service.activation = observing = Observing(reads_before)
    await view(service, "v", NOW)
    await view(service, "v", NOW + 60)
    await service.touch(["v"], NOW + 120)
    expected_befores = [None, NOW, NOW + 60] if reads_before else [None, None, None]
    assert observing.befores == expected_befores
    stored = await store.get("v")
    assert stored is not None and stored.last_seen == NOW + 60
    # Without `before` the Reminder reschedules on every write: due from the last one.
    assert stored.due == NOW + 60 + DELAY
    from edge.activation.activator import Activator

    assert Activator.reads_before is False


async def test_a_message_is_enqueued_once_whatever_runs_it_again(
    service: ProfileService, store: Store
) -> None:
    await view(service, "v1", NOW)
    await service.touch(["v1"], NOW + DELAY)
    profile = await service.load("v1")
    assert profile is not None and profile.due == 0
    # The same message again (a retry of the step, another replica): nothing new.
    profile.due = NOW + DELAY

    def again(current: dict[str, Profile | None], seen: set[str]) -> dict[str, Profile | None]:
        return {"v1": current["v1"]}

    from edge.profiles.store import activating

    messages: list[OutMessage] = []
    await store.transact(["v1"], [], activating(again, _Once(profile), NOW + DELAY, messages))
    rows = await store.outbox_list("", 100)
    assert [r.message.id for r in rows] == [f"remind:v1:{NOW}"]
    assert messages and messages[0].id == f"remind:v1:{NOW}"
    assert rows[0].message.body == messages[0].body


class _Once:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        body = b'{"visitor": "v1", "code": "__EDGE_COUPON__"}'
        return [message(f"remind:v1:{NOW}", self.profile, body)]


async def test_claim_lease_settle_retry_purge(service: ProfileService, store: Store) -> None:
    for i in range(3):
        await view(service, f"v{i}", NOW + i)
        await service.touch([f"v{i}"], NOW + i + DELAY)
    later = NOW + DELAY + 10
    claimed = await store.outbox_claim(later, 2, 60)
    assert [r.message.id for r in claimed] == [f"remind:v0:{NOW}", f"remind:v1:{NOW + 1}"]
    assert all(r.attempts == 1 and r.next_at == later + 60 for r in claimed)
    # Leased: another worker gets the third only; after the lease, the first two again.
    assert [r.message.id for r in await store.outbox_claim(later, 10, 60)] == [
        f"remind:v2:{NOW + 2}"
    ]
    assert await store.outbox_claim(later + 59, 10, 60) == []
    again = await store.outbox_claim(later + 60, 1, 60)
    assert [(r.message.id, r.attempts) for r in again] == [(f"remind:v0:{NOW}", 2)]

    await store.outbox_done(f"remind:v0:{NOW}")
    await store.outbox_failed(f"remind:v1:{NOW + 1}", later + 500, "HTTP 500", False)
    await store.outbox_failed(f"remind:v2:{NOW + 2}", 0, "HTTP 500", True)
    states = {r.message.id: (r.state, r.error) for r in await store.outbox_list("", 10)}
    assert states == {
        f"remind:v0:{NOW}": (DELIVERED, ""),
        f"remind:v1:{NOW + 1}": (PENDING, "HTTP 500"),
        f"remind:v2:{NOW + 2}": (DEAD, "HTTP 500"),
    }
    assert await store.outbox_claim(later + 499, 10, 60) == []
    assert [r.message.id for r in await store.outbox_claim(later + 500, 10, 60)] == [
        f"remind:v1:{NOW + 1}"
    ]
    # A dead message retried is pending and due now, its attempts counted afresh; a
    # delivered one is not sent again.
    assert await store.outbox_retry([f"remind:v2:{NOW + 2}", f"remind:v0:{NOW}"]) == 1
    (row,) = await store.outbox_claim(later + 501, 10, 60)
    assert (row.message.id, row.attempts, row.state) == (f"remind:v2:{NOW + 2}", 1, PENDING)
    # Purge: only the state named, only what last changed before the time given.
    assert await store.outbox_purge(DELIVERED, 0) == 0
    assert await store.outbox_purge(DELIVERED, 2**40) == 1
    assert [r.message.id for r in await store.outbox_list(DELIVERED, 10)] == []
    assert len(await store.outbox_list(PENDING, 10)) == 2


async def test_erasure_removes_the_visitors_messages(service: ProfileService, store: Store) -> None:
    for visitor in ("v1", "v2"):
        await view(service, visitor, NOW)
        await service.touch([visitor], NOW + DELAY)
    assert len(await store.outbox_list(PENDING, 10)) == 2
    assert await service.erase("v1")
    assert [r.message.visitor for r in await store.outbox_list("", 10)] == ["v2"]
    assert await store.due_keys(until=2**40, limit=10) == []


async def test_only_consenting_visitors_get_messages(service: ProfileService, store: Store) -> None:
    await view(service, "v1", NOW)

    def refuse(current: dict[str, Profile | None], seen: set[str]) -> dict[str, Profile | None]:
        profile = current["v1"]
        assert profile is not None
        profile.consent = False
        return {"v1": profile}

    await service.cache.transact(["v1"], [], refuse)
    await service.touch(["v1"], NOW + DELAY)
    assert await store.outbox_list("", 10) == []
    assert await store.due_keys(until=2**40, limit=10) == []  # the activation still ran


async def test_coupon_codes_are_never_given_twice(make_store: StoreMaker) -> None:
    """Two workers (two stores on the same data: own connections, threads or Redis
    clients) draw codes for messages at once; each message keeps its code."""
    first, second = make_store(), make_store()
    try:
        assert await first.coupon_load("spring", [f"C{i:03}" for i in range(40)]) == 40
        assert await second.coupon_load("spring", ["C000", "C001", "C040"]) == 1
        ids = [f"m{i}" for i in range(50)]
        drawn = await asyncio.gather(
            *(w.coupon_take("spring", id) for id in ids for w in (first, second))
        )
        by_message: dict[str, set[str | None]] = {}
        for (id, _), code in zip(itertools.product(ids, "ab"), drawn, strict=True):
            by_message.setdefault(id, set()).add(code)
        assert all(len(codes) == 1 for codes in by_message.values())  # the same code twice
        codes = [next(iter(c)) for c in by_message.values()]
        given = [c for c in codes if c is not None]
        assert len(given) == 41 and len(set(given)) == 41
        assert await first.coupon_take("spring", "m-late") is None
        assert await first.coupon_counts("spring") == (0, 41)
        # A code loaded again after it was given is not given again.
        assert await first.coupon_load("spring", given[:5]) == 0
        assert await first.coupon_take("spring", "m-later") is None
        assert await first.coupon_take("spring", ids[0]) == codes[0]
    finally:
        await first.close()
        if second is not first:
            await second.close()


class Welcome:
    """An activation for the import: every customer with an order gets a thank-you
    message, and is due a day after their last order."""

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        if not profile.orders:
            return []
        profile.due = profile.orders[-1].ts + 86_400
        body = b'{"customer": "%s"}' % profile.customer_id.encode()
        return [OutMessage(f"thanks:{profile.customer_id}", "esp", body, profile.visitor_id, now)]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_import_activates_what_it_writes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``edge import`` runs the activation on every profile it writes, and its messages
    and due times land in the same transactions (an import run again adds nothing)."""
    from edge.importer import import_file

    store: Store
    if kind == "sqlite":
        store = SQLiteStore(tmp_path / "p.db")
    else:
        from edge.profiles.redis import RedisStore

        store = RedisStore(request.getfixturevalue("redis_url"), prefix=f"ti{next(_prefixes)}:")
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,user_id,date,total\no1,u1,1717200000,10\no2,u2,1717286400,20\n"
        "o3,u1,1717372800,30\n",
        encoding="utf-8",
    )
    for _ in range(2):
        report = import_file(
            orders, store=store, identity=IDENTITY, progress=False, now=NOW, activation=Welcome()
        )
        assert report.errors == []

    async def look() -> tuple[list[str], list[tuple[str, str]]]:
        due = await store.due_keys(until=1717372800 + 86_400, limit=10)
        rows = await store.outbox_list(PENDING, 10)
        await store.close()
        return due, [(r.message.id, r.message.visitor) for r in rows]

    due, rows = asyncio.run(look())
    assert due == ["cust:u2", "cust:u1"]  # u2: a day after 2024-06-02; u1: after 06-03
    assert sorted(rows) == [("thanks:u1", "cust:u1"), ("thanks:u2", "cust:u2")]


async def test_two_workers_deliver_each_message_once(make_store: StoreMaker) -> None:
    """Two stores on the same data claiming at once: a message goes to one of them."""
    first, second = (
        GuardedStore(make_store(), read_timeout=10.0, write_timeout=10.0) for _ in range(2)
    )
    try:
        profile = Profile(visitor_id="v1")
        messages = [message(f"m{i}", profile) for i in range(60)]
        from edge.profiles.store import activating

        def keep(current: dict[str, Profile | None], seen: set[str]) -> dict[str, Profile | None]:
            return {"v1": profile}

        class All:
            def after(self, p: Profile, before: Profile | None, now: int) -> list[OutMessage]:
                return messages

        await first.transact(["v1"], [], activating(keep, All(), NOW, []))
        claims = await asyncio.gather(
            *(store.outbox_claim(NOW, 7, 600) for _ in range(6) for store in (first, second))
        )
        ids = [row.message.id for rows in claims for row in rows]
        assert sorted(ids) == sorted(m.id for m in messages)  # each once, none missing
    finally:
        await first.close()
        if second.inner is not first.inner:
            await second.close()


def test_edge_coupons_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.cli import main

    monkeypatch.chdir(tmp_path)  # (no edge.toml here)

    db = tmp_path / "p.db"
    asyncio.run(SQLiteStore(db).close())
    codes = tmp_path / "codes.txt"
    codes.write_text("# spring campaign\nSPRING-001\n\nSPRING-002\nSPRING-001\n")
    assert main(["coupons", "load", "spring", str(codes), "--store", f"sqlite:{db}"]) == 0
    assert "2 codes added to pool spring" in capsys.readouterr().out
    assert main(["coupons", "load", "spring", str(codes), "--store", f"sqlite:{db}"]) == 0
    assert "0 codes added to pool spring" in capsys.readouterr().out
    codes.write_text("SPRING-003\nSPRING 004\n")
    assert main(["coupons", "load", "spring", str(codes), "--store", f"sqlite:{db}"]) == 2
    err = capsys.readouterr().err
    assert f"{codes}:2:1: 'SPRING 004' is not a coupon code" in err


def test_edge_forget_removes_the_visitors_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.cli import main

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "p.db"

    async def prepare() -> None:
        store = SQLiteStore(db)
        service = ProfileService(store, IDENTITY.email_hash)
        service.activation = Reminder()
        for visitor in ("v1", "v2"):
            await view(service, visitor, NOW)
            await service.touch([visitor], NOW + DELAY)
        await store.close()

    async def left() -> list[str]:
        store = SQLiteStore(db)
        rows = await store.outbox_list("", 10)
        await store.close()
        return [r.message.visitor for r in rows]

    asyncio.run(prepare())
    assert asyncio.run(left()) == ["v1", "v2"]
    assert main(["forget", "v1", "--store", f"sqlite:{db}"]) == 0
    assert "erased the profile of v1" in capsys.readouterr().out
    assert asyncio.run(left()) == ["v2"]

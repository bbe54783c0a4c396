"""``edge import`` reading in a second process: the same results as reading in one,
nothing written when the reader fails or the import is interrupted (and no process
left behind), and profiles that another writer changed meanwhile computed again."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge.identity import Identity
from edge.importer import ImportReport, import_file, pipeline
from edge.importer.bulk import Bulk
from edge.importer.formats import BATCH
from edge.importer.orders import OrderGroup, Orders, Scattered
from edge.importer.records import Batch, Parser, Unit
from edge.profiles import events as ev
from edge.profiles.model import Profile, decode, encode
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore

IDENTITY = Identity(["test-secret"])
NOW = 1_750_000_000
DAY1 = 1_717_200_000  # 2024-06-01T00:00:00Z
HEADER = ["order_id", "user_id", "email", "anonymous_id", "date", "total", "coupon"]
HEADER += ["product_id", "category", "brand", "price", "quantity", "name"]


def orders_csv(path: Path, orders: int = 1_500, seed: int = 3, scatter: bool = True) -> Path:
    """Item rows of many shapes: customers by id, email or visitor id (some by two, so
    profiles merge), totals given or summed, orders whose rows are far apart (unless
    not *scatter*), and bad lines of every kind."""
    rng = random.Random(seed)
    rows: list[list[str]] = []
    for n in range(orders):
        c = rng.randrange(150)
        who = rng.choice(
            [
                [f"u{c}", "", ""],
                [f"u{c}", "", ""],
                ["", f"p{c % 40}@x.io", ""],
                ["", "", f"v{c % 30}"],
                [f"u{c}", f"p{c % 40}@x.io", ""],
                ["", f"P{c % 40}@X.io ", f"v{c % 30}"],
            ]
        )
        when = rng.choice(
            [
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(DAY1 + n * 600)),
                time.strftime("%Y-%m-%d", time.gmtime(DAY1 + n * 600)),
                str(DAY1 + n * 600),
            ]
        )
        items = []
        for _ in range(rng.randint(1, 4)):
            price, quantity = round(rng.uniform(1, 90), 2), rng.choice((1, 1, 2, 3))
            category = rng.choice(["shoes", "socks", "hats", "bags, small", ""])
            items.append((f"p{rng.randrange(300)}", category, price, quantity))
        total = f"{sum(p * q for *_, p, q in items):.2f}" if rng.random() < 0.8 else ""
        coupon = "SPRING" if rng.random() < 0.1 else ""
        for product_id, category, price, quantity in items:
            name = 'Sock "Deluxe"\nsecond line' if rng.random() < 0.01 else ""
            row = [f"o{n}", *who, when, total, coupon, product_id, category, "acme"]
            rows.append([*row, f"{price:.2f}", str(quantity), name])
    for _ in range(orders // 20 if scatter else 0):  # an order's row moved far away
        rows.insert(rng.randrange(len(rows)), rows.pop(rng.randrange(len(rows))))

    def nobody(row: list[str]) -> None:
        row[1:4] = ["", "", ""]

    spoil = {
        7: lambda row: row.__setitem__(10, "five"),  # a bad price: its order is not applied
        19: lambda row: row.__setitem__(5, "12,5€"),  # a bad total
        31: nobody,
        47: lambda row: row.__setitem__(4, "yesterday"),  # rows that disagree on the date
        53: lambda row: row.append("extra"),  # one field too many
        71: lambda row: row.__setitem__(0, ""),  # no order id
        83: lambda row: row.__setitem__(11, "0"),  # quantity below 1
    }
    for every, change in spoil.items():
        for row in rows[every::397]:
            change(row)
    rows.insert(len(rows) // 2, [])  # a blank line
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def events_jsonl(path: Path, events: int = 2_500, seed: int = 5) -> Path:
    rng = random.Random(seed)
    lines = []
    for n in range(events):
        who: dict[str, Any] = rng.choice(
            [
                {"user_id": f"u{n % 70}"},
                {"email": f"p{n % 40}@x.io"},
                {"anonymous_id": f"v{n % 30}"},
                {"user_id": f"u{n % 50}", "anonymous_id": f"v{n % 30}"},
                {"email": f"p{n % 40}@x.io", "anonymous_id": f"v{n % 25}"},
            ]
        )
        kind = n % 5
        if kind == 0:
            event = {
                "event": "Order Completed",
                "order_id": f"j{n % 900}",
                "total": n % 70,
                "ts": DAY1 + n * 60,
                "products": [{"product_id": f"p{n % 13}", "category": f"c{n % 4}"}],
            }
        elif kind == 1:
            event = {"event": "Identify", "traits": {"city": f"city{n % 9}"}}
        elif kind == 2:
            event = {"event": "Email Opened", "ts": DAY1 + n * 3600, "campaign": "june"}
        elif kind == 3:
            event = {"event": "Product Viewed", "product_id": f"p{n}", "ts": DAY1 + n}
        else:
            event = {"event": "Email Sent", "ts": DAY1 + (n % 17) * 86_400}  # repeats
        lines.append(json.dumps({**event, **who}))
        if n % 401 == 0:
            lines.append('{"event": "Order Completed", "user_id": "u1", "total": "lots"}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def orders_json(path: Path, orders: int = 2_500) -> Path:
    """One object per order (products inside), in one JSON array."""
    rng = random.Random(11)
    items = []
    for n in range(orders):
        products = [
            {"product_id": f"p{rng.randrange(99)}", "price": rng.randrange(1, 50)}
            for _ in range(rng.randint(0, 3))
        ]
        total: Any = sum(p["price"] for p in products) if n % 97 else "lots"
        items.append(
            {"order_id": f"a{n % 2_300}", "user_id": f"u{n % 77}", "ts": DAY1 + n, "total": total}
            | ({"products": products} if products else {})
        )
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    return path


def customers_csv(path: Path) -> Path:
    """Customers already known before the import: emails and visitor ids linked."""
    rows = ["user_id,email,anonymous_id,city"]
    rows += [f"u{n},p{n % 40}@x.io,v{n % 30},city{n}" for n in range(0, 150, 7)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def dump(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        return {
            "profiles": dict(conn.execute("SELECT key, data FROM profiles")),
            "aliases": dict(conn.execute("SELECT alias, key FROM aliases")),
            "claims": {claim for (claim,) in conn.execute("SELECT claim FROM claims")},
        }
    finally:
        conn.close()


def run(path: Path, store: SQLiteStore, **kw: Any) -> ImportReport:
    return import_file(path, store=store, identity=IDENTITY, progress=False, now=NOW, **kw)


def same_report(report: ImportReport) -> ImportReport:
    return dataclasses.replace(report, seconds=0.0)


# --- one process or two: the same -------------------------------------------------------


def contiguous_orders_csv(path: Path) -> Path:
    return orders_csv(path, scatter=False)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("make", [orders_csv, contiguous_orders_csv, events_jsonl, orders_json])
def test_separate_reader_gives_identical_results(tmp_path: Path, make: Any, strict: bool) -> None:
    """(An order found scattered makes the reader start again: see the tests below.)"""
    name = {events_jsonl: "events.jsonl", orders_json: "orders.json"}.get(make, "orders.csv")
    path = make(tmp_path / name)
    known = customers_csv(tmp_path / "customers.csv")
    dumps, reports = [], []
    for separate in (False, True):
        db = tmp_path / f"separate-{separate}.db"
        store = SQLiteStore(db)
        assert run(known, store).errors == []
        first = run(path, store, separate_reader=separate, chunk=500, strict=strict)
        again = run(path, store, separate_reader=separate, chunk=500)
        reports.append([same_report(first), same_report(again)])
        dumps.append(dump(db))
        assert multiprocessing.active_children() == []
    assert reports[0] == reports[1]
    assert dumps[0] == dumps[1]
    first, again = reports[0]
    assert first.errors and first.lines > BATCH  # several batches, bad lines
    if not strict:
        assert first.applied_events > 1_000 and again.applied_events == 0
    if make in (orders_csv, contiguous_orders_csv) and not strict:
        assert first.orders > 1_000 and again.skipped_duplicates == first.applied_events


def test_orders_go_out_early_or_at_the_end_alike(tmp_path: Path) -> None:
    """Read early (an order goes out when a row of another one follows), the units and
    bad lines are the ones found when every order waits for the end of the file."""
    path = orders_csv(tmp_path / "orders.csv", scatter=False)
    found = []
    for early in (False, True):
        opened, batches = pipeline.read(path, None, early=early)
        batches = list(batches)
        units = [(unit.lines, unit.event) for batch in batches for unit in batch.units]
        errors = sorted((e for b in batches for e in b.errors), key=lambda e: e.line)
        found.append((opened, units, errors, [len(b.units) for b in batches]))
    assert found[0][:3] == found[1][:3]
    at_end, early = found[0][3], found[1][3]
    assert sum(at_end[:-1]) == 0
    assert sum(early[:-1]) > len(found[0][1]) // 2


def test_an_order_found_scattered_means_reading_again(tmp_path: Path) -> None:
    path = orders_csv(tmp_path / "orders.csv", scatter=True)
    with pytest.raises(Scattered):
        list(pipeline.read(path, None, early=True)[1])


def test_small_files_are_read_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_process(*args: Any) -> None:
        raise AssertionError("a second process for a small file")

    monkeypatch.setattr(pipeline, "_read_for", no_process)
    path = orders_csv(tmp_path / "orders.csv", orders=200)
    assert path.stat().st_size < pipeline.SEPARATE_READER_BYTES
    assert run(path, SQLiteStore(tmp_path / "p.db")).orders > 100


@pytest.mark.parametrize("separate", [False, True])
def test_any_event_id_counts_once(tmp_path: Path, separate: bool) -> None:
    """Claims are stored many at a time (as a JSON array): ids with quotes, backslashes,
    NUL or other control characters and any Unicode go in and are found again."""
    ids = ['q"uote', "back\\slash", "nul\x00byte", "ctl\x01\x1f", "é😀\u2028", "\\u0000"]
    lines = [
        json.dumps({"event": "Email Sent", "user_id": f"u{n}", "ts": DAY1, "event_id": i})
        for n, i in enumerate(ids)
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = SQLiteStore(tmp_path / "p.db")
    first = run(path, store, separate_reader=separate)
    again = run(path, store, separate_reader=separate)
    assert (first.applied_events, again.skipped_duplicates) == (len(ids), len(ids))
    assert dump(tmp_path / "p.db")["claims"] == {f"event:{i}" for i in ids}


# --- failures: nothing written, nothing left running -------------------------------------


def nothing_written(db: Path) -> bool:
    """Nothing in the store; or no store at all (`edge import` removes the one it made
    when it wrote nothing)."""
    if not db.exists():
        return True
    state = dump(db)
    return not state["profiles"] and not state["claims"] and not state["aliases"]


def test_a_reader_that_fails_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = orders_csv(tmp_path / "orders.csv")
    closed = 0
    close = Orders._close

    def failing(self: Orders, group: OrderGroup) -> None:
        nonlocal closed
        closed += 1
        if closed == 700:
            raise ValueError("the disk is on fire")
        close(self, group)

    monkeypatch.setattr(Orders, "_close", failing)  # (the fork inherits it)
    store = SQLiteStore(tmp_path / "p.db")
    with pytest.raises(RuntimeError, match="the disk is on fire"):
        run(path, store, separate_reader=True)
    assert nothing_written(tmp_path / "p.db")
    assert multiprocessing.active_children() == []


def test_a_reader_that_dies_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = orders_csv(tmp_path / "orders.csv")
    batch = Parser.batch

    def dying(self: Parser, lines: int, position: int) -> Batch:
        out = batch(self, lines, position)
        if out.units:
            os.kill(os.getpid(), signal.SIGKILL)  # only ever in the reading process
        return out

    monkeypatch.setattr(Parser, "batch", dying)
    store = SQLiteStore(tmp_path / "p.db")
    with pytest.raises(RuntimeError, match="ended before the file did"):
        run(path, store, separate_reader=True)
    assert nothing_written(tmp_path / "p.db")
    assert multiprocessing.active_children() == []


def test_interrupted_while_reading_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = orders_csv(tmp_path / "orders.csv")
    add = Bulk.add

    def interrupted(self: Bulk, units: list[Unit]) -> None:
        if units:
            raise KeyboardInterrupt
        add(self, units)

    monkeypatch.setattr(Bulk, "add", interrupted)
    store = SQLiteStore(tmp_path / "p.db")
    with pytest.raises(KeyboardInterrupt):
        run(path, store, separate_reader=True)
    assert nothing_written(tmp_path / "p.db")
    assert multiprocessing.active_children() == []


def test_ctrl_c_stops_both_processes(tmp_path: Path) -> None:
    """A real Ctrl-C (SIGINT to the foreground process group) on ``edge import``."""
    path = orders_csv(tmp_path / "orders.csv", orders=40_000)
    db = tmp_path / "p.db"
    env = {**os.environ, "EDGE_STORE": f"sqlite:{db}", "EDGE_SECRET": "test-secret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "import", str(path), "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_group(proc.pid)) < 2:  # the reader has started
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert b"KeyboardInterrupt" in proc.stderr.read()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group(proc.pid) == []
    assert nothing_written(db)
    assert not db.exists()  # the store this import made, it removed


def test_a_ctrl_c_while_the_reader_starts_waits_for_it() -> None:
    """Raised during the fork, a KeyboardInterrupt was swallowed by an at-fork hook (the
    import went on and wrote everything) or left a reader nobody stopped."""

    class Reader:
        def start(self) -> None:
            signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert pipeline._start(Reader()) is True  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        reader = multiprocessing.get_context("fork").Process(target=int)
        assert pipeline._start(reader) is False
        reader.join()
    finally:
        signal.signal(signal.SIGINT, previous)


def _group(pgid: int) -> list[int]:
    """Live processes of a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


# --- another writer meanwhile -------------------------------------------------------------


def test_profiles_changed_meanwhile_are_computed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar stores a customer's visit and an order arrives by ingest while the
    import reads: that customer is computed again from what is stored; the others are
    written as computed."""
    rows = ["order_id,user_id,date,total,product_id,category,price"]
    for n in range(300):
        rows.append(f"o{n},u{n % 30},{DAY1 + n * 60},5,p{n},shoes,5")
    path = tmp_path / "orders.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    db = tmp_path / "p.db"
    write = Bulk.write

    def meanwhile(self: Bulk, **kw: Any) -> None:
        conn = sqlite3.connect(db)
        visitor = Profile(visitor_id="cust:u3", customer_id="u3", visits=4)
        visitor.traits.city = "Oslo"
        with conn:
            conn.execute(
                "INSERT INTO profiles (key, data, updated) VALUES (?, ?, 0)",
                ("cust:u3", encode(visitor)),
            )
            conn.execute("INSERT INTO claims VALUES ('order:o4', 0)")  # u4's first order
        conn.close()
        write(self, **kw)

    monkeypatch.setattr(Bulk, "write", meanwhile)
    store = SQLiteStore(db)
    report = run(path, store, separate_reader=True, chunk=40)
    assert (report.orders, report.skipped_duplicates) == (299, 1)
    profiles = {k: decode(v) for k, v in dump(db)["profiles"].items()}
    u3 = profiles["cust:u3"]
    assert (u3.traits.city, u3.visits, u3.order_count) == ("Oslo", 4, 10)
    assert profiles["cust:u4"].order_count == 9
    assert "o4" not in {o.order_id for o in profiles["cust:u4"].orders}
    assert all(profiles[f"cust:u{n}"].order_count == 10 for n in range(30) if n != 4)


def test_written_meanwhile_is_as_if_written_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events that merge visitors into customers, with the sidecar recording a visit and
    an order for some of them while the import reads: the same profiles as when those
    came before the import."""
    path = events_jsonl(tmp_path / "events.jsonl")
    known = customers_csv(tmp_path / "customers.csv")

    def sidecar(db: Path) -> None:
        async def record() -> None:
            store = SQLiteStore(db)
            service = ProfileService(store, IDENTITY.email_hash)
            visit = [ev.PageViewed(path="/p/1"), ev.ProductViewed(product_id="p1", category="c1")]
            await service.record("v3", visit, ev.Source.BROWSER, now=NOW)  # now u63's
            order = ev.OrderCompleted(order_id="j7", total=9, user_id="u5", ts=DAY1)
            await service.record(None, [order], ev.Source.SHOP, now=NOW)  # also in the file
            await store.close()

        asyncio.run(record())

    before = tmp_path / "before.db"
    store = SQLiteStore(before)
    run(known, store)
    sidecar(before)
    expected = run(path, store, separate_reader=False)

    meanwhile = tmp_path / "meanwhile.db"
    store = SQLiteStore(meanwhile)
    run(known, store)
    write = Bulk.write

    def write_after_the_sidecar(self: Bulk, **kw: Any) -> None:
        sidecar(meanwhile)
        write(self, **kw)

    monkeypatch.setattr(Bulk, "write", write_after_the_sidecar)
    computed_again = []
    write_around = Bulk._write_around

    def counted(self: Bulk, result: Any, claims: Any, stale: set[str]) -> None:
        computed_again.append(len(stale))
        write_around(self, result, claims, stale)

    monkeypatch.setattr(Bulk, "_write_around", counted)
    report = run(path, store, separate_reader=True, chunk=300)
    assert same_report(report) == same_report(expected)
    assert dump(meanwhile) == dump(before)
    assert 0 < sum(computed_again) < 10  # only the groups the sidecar touched


def test_progress_bars_with_a_separate_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = orders_csv(tmp_path / "orders.csv")
    store = SQLiteStore(tmp_path / "p.db")
    report = import_file(
        path, store=store, identity=IDENTITY, now=NOW, progress=True, separate_reader=True
    )
    err = capsys.readouterr().err
    assert "\rreading   [####################]" in err
    assert f"\rapplying  [####################] {report.orders:,}/" in err
    assert err.endswith("\r")

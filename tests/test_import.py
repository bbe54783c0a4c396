"""``edge import``: files of orders, customers, emails and events into profiles."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge.identity import Identity
from edge.importer import ImportFailed, ImportReport, LineError, import_file
from edge.importer.progress import Progress
from edge.importer.records import derive_id
from edge.profiles import events as ev
from edge.profiles.model import Profile, day_of
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore

IDENTITY = Identity(["test-secret"])
NOW = 1_750_000_000
DAY1 = 1_717_200_000  # 2024-06-01T00:00:00Z


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "profiles.db")
    yield s
    await s.close()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(path: Path, store: SQLiteStore, **kw: Any) -> ImportReport:
    return import_file(path, store=store, identity=IDENTITY, progress=False, now=NOW, **kw)


async def load(store: SQLiteStore, key: str) -> Profile | None:
    """Through a fresh service: what the store itself holds, no cache."""
    return await ProfileService(store, IDENTITY.email_hash).load(key)


async def must_load(store: SQLiteStore, key: str) -> Profile:
    profile = await load(store, key)
    assert profile is not None, key
    return profile


def messages(report: ImportReport) -> dict[int, str]:
    return {e.line: e.message for e in report.errors}


# --- orders ----------------------------------------------------------------------------


async def test_orders_one_row_per_order(tmp_path: Path, store: SQLiteStore) -> None:
    products = json.dumps(
        [
            {"product_id": "p1", "category": "shoes", "brand": "acme", "price": 50, "quantity": 2},
            {"product_id": "p2", "category": "socks", "price": 10},
        ]
    )
    csv_text = (
        "order_id,user_id,date,total,coupon,products\n"
        f'o1,u1,2024-06-01,110.00,SUMMER,"{products.replace(chr(34), chr(34) * 2)}"\n'
        "o2,u1,2024-06-02T10:00:00+02:00,20,,\n"
        "o3,u2,1717200000,5.5,,\n"
    )
    report = run(write(tmp_path, "orders.csv", csv_text), store)
    assert report.errors == []
    assert (report.kind, report.lines, report.orders, report.applied_events) == ("orders", 3, 3, 3)
    assert report.kind_reason.startswith("from the file name")
    u1 = await must_load(store, "cust:u1")
    assert u1.customer_id == "u1"
    assert u1.order_count == 2
    assert u1.lifetime_spent == 130.0
    assert u1.coupon_orders == 1
    assert u1.categories.bought == {"shoes": 2, "socks": 1}
    assert [o.order_id for o in u1.orders] == ["o1", "o2"]
    assert u1.orders[0].ts == DAY1
    assert u1.orders[1].ts == DAY1 + 86_400 + 8 * 3600
    u2 = await must_load(store, "cust:u2")
    assert u2.orders[0].ts == DAY1 and u2.lifetime_spent == 5.5


async def test_orders_one_row_per_item_grouped_across_the_file(
    tmp_path: Path, store: SQLiteStore
) -> None:
    csv_text = (
        "order_id,email,date,total,product_id,category,brand,price,quantity\n"
        "o1,Ann@Example.com,2024-06-01T12:00:00Z,70,p1,shoes,acme,50,1\n"  # line 2
        "o2,bob@example.com,2024-06-01T13:00:00Z,9,p9,hats,,9,1\n"  # line 3
        "o1,Ann@Example.com,2024-06-01T12:00:00Z,70,p2,socks,acme,10,2\n"  # line 4: o1 again
    )
    report = run(write(tmp_path, "shop-export.csv", csv_text), store)
    assert report.errors == []
    assert report.kind == "orders" and report.kind_reason.startswith("from the columns")
    assert (report.lines, report.orders) == (3, 2)
    ann = await must_load(store, "email:" + IDENTITY.email_hash("ann@example.com"))
    assert ann.order_count == 1
    assert ann.email_hash == IDENTITY.email_hash("ann@example.com")
    [order] = ann.orders
    assert order.order_id == "o1" and order.total == 70
    assert [(i.product_id, i.quantity) for i in order.items] == [("p1", 1), ("p2", 2)]
    assert ann.categories.bought == {"shoes": 1, "socks": 2}
    assert ann.brands.bought == {"acme": 3}


async def test_item_rows_without_total_sum_up(tmp_path: Path, store: SQLiteStore) -> None:
    csv_text = (
        "order_id,user_id,ts,product_id,price,quantity\n"
        "o1,u1,1717200000,p1,12.5,2\n"
        "o1,u1,1717200000,p2,5,1\n"
    )
    report = run(write(tmp_path, "orders.csv", csv_text), store)
    assert report.errors == [] and report.orders == 1
    assert (await must_load(store, "cust:u1")).lifetime_spent == 30.0


async def test_semicolon_csv(tmp_path: Path, store: SQLiteStore) -> None:
    csv_text = (
        "order_id;user_id;date;total;product_id;category;price;quantity\n"
        "o1;u1;2024-06-01;12.50;p1;shoes, boots;12.50;1\n"
        "o2;u1;2024-06-03;3;p2;socks;1.5;2\n"
    )
    report = run(write(tmp_path, "orders.csv", csv_text), store)
    assert report.errors == []
    assert "semicolon" in report.kind_reason
    u1 = await must_load(store, "cust:u1")
    assert u1.order_count == 2 and u1.lifetime_spent == 15.5
    assert u1.categories.bought == {"shoes, boots": 1, "socks": 2}


async def test_bad_lines_reported_with_line_numbers(tmp_path: Path, store: SQLiteStore) -> None:
    csv_text = (
        "order_id,user_id,date,total\n"  # 1
        "o1,u1,2024-06-01,10\n"  # 2
        "o2,u1,2024-06-01,12,5€\n"  # 3: an unquoted decimal comma makes a 5th field
        'o3,u1,2024-06-01,"12,5€"\n'  # 4
        "o4,,2024-06-01,10\n"  # 5: nobody
        "\n"  # 6: blank, skipped
        "o5,u1,01/06/2024,10\n"  # 7
        "o6,u1,2024-06-01,-3\n"  # 8
        ",u1,2024-06-01,3\n"  # 9
        '"o7\n'  # 10: a quoted field spanning two lines
        'b",u2,2024-06-02,7\n'  # 11
    )
    report = run(write(tmp_path, "orders.csv", csv_text), store)
    got = messages(report)
    assert sorted(got) == [3, 4, 5, 7, 8, 9]
    assert got[3] == "5 fields, the header has 4"
    assert got[4] == 'total: Expected float, got "12,5€"'
    assert got[5] == "needs a user_id, email or anonymous_id"
    assert got[7].startswith(
        'date: expected an ISO 8601 date or datetime or unix seconds, got "01/'
    )
    assert got[8] == 'total: Expected float >= 0.0, got "-3"'
    assert got[9] == "order_id: missing"
    assert report.exit_code() == 1
    assert report.orders == 2  # o1 and the two-line o7
    assert (await must_load(store, "cust:u1")).order_count == 1
    assert (await must_load(store, "cust:u2")).orders[0].order_id == "o7\nb"
    text = report.format_report()
    assert 'orders.csv:4: total: Expected float, got "12,5€"' in text
    assert "applied 2 events (2 orders)" in text


async def test_strict_applies_nothing_when_a_line_is_bad(
    tmp_path: Path, store: SQLiteStore
) -> None:
    csv_text = "order_id,user_id,date,total\no1,u1,2024-06-01,10\no2,u2,2024-06-01,x\n"
    path = write(tmp_path, "orders.csv", csv_text)
    report = run(path, store, strict=True)
    assert not report.applied
    assert report.exit_code() == 1
    assert report.errors == [LineError(3, 'total: Expected float, got "x"')]
    assert report.applied_events == 0
    assert await load(store, "cust:u1") is None
    assert "--strict: nothing applied" in report.format_report()
    # Without --strict the good line goes in.
    report = run(path, store)
    assert report.applied and report.applied_events == 1 and report.exit_code() == 1
    assert (await must_load(store, "cust:u1")).order_count == 1
    assert await load(store, "cust:u2") is None


async def test_strict_good_file_applies_all(tmp_path: Path, store: SQLiteStore) -> None:
    rows = "".join(f"o{n},u{n % 7},{DAY1 + n},1\n" for n in range(40))
    path = write(tmp_path, "orders.csv", "order_id,user_id,ts,total\n" + rows)
    report = import_file(
        path, store=store, identity=IDENTITY, strict=True, progress=False, now=NOW, chunk=6
    )
    assert report.exit_code() == 0 and report.orders == 40
    counts = [(await must_load(store, f"cust:u{n}")).order_count for n in range(7)]
    assert sum(counts) == 40


async def test_order_whose_rows_disagree_is_reported_on_each_line(
    tmp_path: Path, store: SQLiteStore
) -> None:
    csv_text = (
        "order_id,user_id,date,product_id,price\n"
        "o1,u1,2024-06-01,p1,5\n"  # 2
        "o2,u2,2024-06-01,p1,5\n"  # 3
        "o1,u9,2024-06-01,p2,5\n"  # 4: another customer for o1
        "o3,u3,2024-06-01,p1,5\n"  # 5
        "o3,u3,2024-06-01,p2,five\n"  # 6: a bad item: o3 is not applied at all
    )
    report = run(write(tmp_path, "orders.csv", csv_text), store)
    got = messages(report)
    assert sorted(got) == [2, 4, 5, 6]
    assert got[2] == got[4] == "order o1: its rows (lines 2, 4) disagree on user_id"
    assert got[6] == 'price: Expected float, got "five"'
    assert got[5] == "order o3: not applied, line 6 of it is bad"
    assert report.orders == 1
    assert await load(store, "cust:u1") is None
    assert await load(store, "cust:u3") is None
    assert (await must_load(store, "cust:u2")).order_count == 1


async def test_reimport_counts_once(tmp_path: Path, store: SQLiteStore) -> None:
    csv_text = (
        "order_id,user_id,date,total,product_id,category,price\n"
        "o1,u1,2024-06-01,10,p1,shoes,10\n"
        "o2,u1,2024-06-02,5,p2,socks,5\n"
        "o2,u1,2024-06-02,5,p3,socks,0\n"
    )
    path = write(tmp_path, "orders.csv", csv_text)
    first = run(path, store)
    before = msgspec.msgpack.encode(await must_load(store, "cust:u1"))
    second = run(path, store)
    assert (first.orders, first.skipped_duplicates) == (2, 0)
    assert (second.orders, second.applied_events, second.skipped_duplicates) == (0, 0, 2)
    assert second.exit_code() == 0
    after = await must_load(store, "cust:u1")
    assert msgspec.msgpack.encode(after) == before
    assert after.order_count == 2 and after.lifetime_spent == 15.0


async def test_duplicate_order_rows_in_one_file_count_once(
    tmp_path: Path, store: SQLiteStore
) -> None:
    csv_text = "order_id,user_id,date,total\no1,u1,2024-06-01,10\no1,u1,2024-06-01,10\n"
    report = run(write(tmp_path, "orders.csv", csv_text), store)
    assert (report.orders, report.skipped_duplicates) == (1, 1)
    assert (await must_load(store, "cust:u1")).lifetime_spent == 10


# --- customers -------------------------------------------------------------------------


async def test_customers_set_traits_and_stitch(tmp_path: Path, store: SQLiteStore) -> None:
    service = ProfileService(store, IDENTITY.email_hash)
    # A visitor browsed anonymously; an order arrived by email before the customer id.
    await service.record(
        "vid-1", [ev.PageViewed(path="/a"), ev.PageViewed(path="/b")], ev.Source.BROWSER, now=NOW
    )
    await service.record(
        None,
        [ev.OrderCompleted(order_id="o9", total=40, email="ann@example.com", ts=DAY1)],
        ev.Source.SHOP,
        now=NOW,
    )
    csv_text = (
        "user_id,email,anonymous_id,birth_year,gender,city,latitude,registered,loyalty_tier\n"
        "u1,ann@example.com,vid-1,1985,f,Berlin,52.52,2024-01-02,gold\n"
        "u2,,,,,Paris,,,\n"
    )
    report = run(write(tmp_path, "customers.csv", csv_text), store)
    assert report.errors == []
    assert (report.kind, report.applied_events) == ("customers", 2)
    u1 = await must_load(store, "cust:u1")
    assert u1.customer_id == "u1"
    assert u1.email_hash == IDENTITY.email_hash("ann@example.com")
    assert u1.traits.birth_year == 1985 and u1.traits.gender == "f"
    assert u1.traits.city == "Berlin" and u1.traits.latitude == 52.52
    assert u1.traits.registered == 1_704_153_600
    assert u1.traits.custom == {"loyalty_tier": "gold"}
    # Merged: the anonymous visits and the email-only order are the customer's now.
    assert u1.visits == 1 and sum(u1.pageview_days.values()) == 2
    assert u1.order_count == 1 and u1.lifetime_spent == 40
    assert "vid-1" in u1.aliases
    assert await must_load(store, "vid-1") == u1  # the cookie's id finds the customer
    assert await store.get("vid-1") is None
    assert await store.resolve("vid-1") == "cust:u1"
    assert (await must_load(store, "cust:u2")).traits.city == "Paris"
    # An order by anonymous id alone now lands on the customer too.
    report = run(
        write(tmp_path, "orders.jsonl", '{"order_id": "o10", "anonymous_id": "vid-1", '),
        store,
    )
    assert messages(report)[1].startswith("invalid JSON")
    path = write(
        tmp_path,
        "orders.jsonl",
        '{"order_id": "o10", "anonymous_id": "vid-1", "ts": 1717300000, "total": 7}\n',
    )
    assert run(path, store).orders == 1
    assert (await must_load(store, "cust:u1")).order_count == 2


async def test_customers_bad_traits(tmp_path: Path, store: SQLiteStore) -> None:
    csv_text = (
        "user_id,birth_year,latitude,registered\n"
        "u1,nineteen,,\n"
        "u2,,north,\n"
        "u3,,,yesterday\n"
        ",1990,,\n"
        "u5,1990,1.5,1700000000\n"
    )
    report = run(write(tmp_path, "customers.csv", csv_text), store)
    assert messages(report) == {
        2: 'birth_year: Expected int, got "nineteen"',
        3: 'latitude: Expected float, got "north"',
        4: 'registered: expected an ISO 8601 date or datetime or unix seconds, got "yesterday"',
        5: "needs a user_id or email",
    }
    u5 = await must_load(store, "cust:u5")
    assert (u5.traits.birth_year, u5.traits.registered) == (1990, 1_700_000_000)


async def test_customers_in_bulk_chain_stitching_within_one_chunk(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """Email-only profile, then its anonymous visitor, then the customer id: one profile."""
    lines = [
        {"event": "Email Opened", "email": "c@x.io", "ts": DAY1, "campaign": "spring"},
        {"event": "Product Viewed", "anonymous_id": "v7", "product_id": "p1", "ts": DAY1},
        {"event": "Identify", "email": "c@x.io", "anonymous_id": "v7"},
        {"event": "Identify", "user_id": "c1", "email": "c@x.io", "traits": {"city": "Rome"}},
        {
            "event": "Order Completed",
            "anonymous_id": "v7",
            "order_id": "o1",
            "total": 3,
            "ts": DAY1,
        },
    ]
    path = write(tmp_path, "events.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    report = run(path, store)
    assert report.errors == [] and report.applied_events == 5
    c1 = await must_load(store, "cust:c1")
    assert c1.traits.city == "Rome"
    assert sum(c1.email_open_days.values()) == 1
    assert sum(c1.product_view_days.values()) == 1
    assert c1.order_count == 1
    assert await must_load(store, "v7") == c1
    assert await must_load(store, "email:" + IDENTITY.email_hash("c@x.io")) == c1
    assert sorted(await store.keys()) == ["cust:c1"]


async def test_a_second_customer_on_one_browser_is_not_merged_into_the_first_in_bulk(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """As ProfileService stitches: v9 was u1's browser; u2 logging in there takes the
    browser's id, and the two customers stay two profiles."""
    lines = [
        {"event": "Identify", "anonymous_id": "v9", "user_id": "u1"},
        {"event": "Order Completed", "user_id": "u1", "order_id": "o1", "total": 5, "ts": DAY1},
        {"event": "Identify", "anonymous_id": "v9", "user_id": "u2"},
        {
            "event": "Order Completed",
            "anonymous_id": "v9",
            "order_id": "o2",
            "total": 7,
            "ts": DAY1,
        },
    ]
    path = write(tmp_path, "events.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    report = run(path, store)
    assert report.errors == [] and report.applied_events == 4
    u1, u2 = await must_load(store, "cust:u1"), await must_load(store, "cust:u2")
    assert (u1.order_count, u1.lifetime_spent, u1.aliases) == (1, 5, [])
    assert (u2.order_count, u2.lifetime_spent, u2.aliases) == (1, 7, ["v9"])
    assert await store.resolve("v9") == "cust:u2"


# --- emails ----------------------------------------------------------------------------


async def test_emails(tmp_path: Path, store: SQLiteStore) -> None:
    csv_text = (
        "email,date,type,campaign\n"
        "ann@example.com,2024-06-01T08:00:00Z,sent,june\n"
        "ann@example.com,2024-06-01T09:30:00Z,opened,june\n"
        "ANN@example.com ,2024-06-02T09:30:00Z,Opened,june\n"
        "ann@example.com,2024-06-02T09:30:00Z,clicked,june\n"
    )
    path = write(tmp_path, "newsletter.csv", csv_text)
    report = run(path, store)
    assert report.kind == "emails"
    assert messages(report) == {5: 'type: expected "sent" or "opened", got "clicked"'}
    key = "email:" + IDENTITY.email_hash("ann@example.com")
    ann = await must_load(store, key)
    assert ann.email_send_days == {day_of(DAY1): 1}
    assert ann.email_open_days == {day_of(DAY1): 1, day_of(DAY1) + 1: 1}
    # Rows without event ids get stable derived ones: a second import counts nothing.
    again = run(path, store)
    assert (again.applied_events, again.skipped_duplicates) == (0, 3)
    assert await must_load(store, key) == ann


async def test_a_time_of_true_is_bad_after_a_time_of_one(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """JSON ``true`` is no time, even after a ``1`` (equal as keys of a dict)."""
    lines = [{"email": "a@x.io", "type": "sent", "ts": ts} for ts in (1, True)]
    path = write(tmp_path, "emails.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    report = run(path, store)
    assert messages(report) == {
        2: "ts: expected an ISO 8601 date or datetime or unix seconds, got True"
    }
    assert report.applied_events == 1


# --- events (JSON) ---------------------------------------------------------------------


async def test_jsonl_events(tmp_path: Path, store: SQLiteStore) -> None:
    lines = [
        json.dumps(
            {
                "event": "Order Completed",
                "user_id": "u1",
                "order_id": "o1",
                "total": 20,
                "ts": DAY1,
                "products": [{"product_id": "p1", "category": "shoes", "price": 20}],
            }
        ),
        "",
        json.dumps({"event": "Coupon Applied", "user_id": "u1", "order_id": "o1", "coupon": "X"}),
        json.dumps({"event": "Identify", "user_id": "u1", "traits": {"age_band": "25-34"}}),
        json.dumps({"event": "Email Sent", "user_id": "u1", "ts": DAY1, "event_id": "m1"}),
        json.dumps({"event": "Order Completed", "user_id": "u1", "order_id": 5, "total": 1}),
        json.dumps({"event": "Refund Issued", "user_id": "u1"}),
        json.dumps({"event": "Email Opened", "ts": DAY1}),
        json.dumps({"event": "Identify", "user_id": "u1", "traits": {"birth_year": "old"}}),
        "[1, 2]",
    ]
    path = write(tmp_path, "export.ndjson", "\n".join(lines) + "\n")
    report = run(path, store)
    assert report.kind == "events" and report.kind_reason == "from the columns"
    assert messages(report) == {
        6: "order_id: Expected str, got 5",
        7: "event: Invalid value 'Refund Issued'",
        8: "needs a user_id, email or anonymous_id (shop events name their subject)",
        9: "trait 'birth_year' must be a number, got 'old'",
        10: "expected a JSON object",
    }
    assert report.lines == 9
    u1 = await must_load(store, "cust:u1")
    assert u1.order_count == 1 and u1.coupon_orders == 1 and u1.orders[0].coupon == "X"
    assert u1.traits.age_band == "25-34"
    assert u1.email_send_days == {day_of(DAY1): 1}
    again = run(path, store)
    assert again.applied_events == 0 and again.skipped_duplicates == 4
    assert await must_load(store, "cust:u1") == u1


async def test_json_array_with_line_numbers(tmp_path: Path, store: SQLiteStore) -> None:
    text = (
        "[\n"
        '  {"order_id": "o1", "user_id": "u1", "ts": 1717200000, "total": 5},\n'
        '  {"order_id": "o2", "user_id": "u1",\n'
        '   "ts": 1717200000, "total": "lots"},\n'
        '  {"order_id": "o3", "user_id": "u1", "date": "2024-06-01", "total": 1,\n'
        '   "products": [{"product_id": "p1", "price": 1}]}\n'
        "]\n"
    )
    report = run(write(tmp_path, "orders.json", text), store)
    assert messages(report) == {3: 'total: Expected float, got "lots"'}
    assert (await must_load(store, "cust:u1")).order_count == 2


# --- the bulk path and the service agree -------------------------------------------------


async def test_bulk_import_matches_the_service(tmp_path: Path) -> None:
    """The same shop events through ProfileService.record one by one and through the
    importer give the same profiles (keys, stitching, duplicates, merges)."""
    events: list[dict[str, Any]] = []
    for n in range(60):
        who: dict[str, Any] = [
            {"user_id": f"u{n % 5}"},
            {"email": f"p{n % 4}@x.io"},
            {"anonymous_id": f"v{n % 6}"},
            {"user_id": f"u{n % 3}", "email": f"p{n % 4}@x.io"},
            {"email": f"p{n % 4}@x.io", "anonymous_id": f"v{n % 6}"},
            {"user_id": f"u{n % 5}", "anonymous_id": f"v{n % 6}"},
        ][n % 6]
        kind = n % 4
        if kind == 0:
            events.append(
                {
                    "event": "Order Completed",
                    "order_id": f"o{n % 5}",
                    "total": n,
                    "ts": DAY1 + n * 3600,
                    "products": [{"product_id": f"p{n}", "category": f"c{n % 3}"}],
                    **who,
                }
            )
        elif kind == 1:
            events.append({"event": "Identify", "traits": {"city": f"city{n}"}, **who})
        elif kind == 2:
            events.append({"event": "Email Opened", "ts": DAY1 + n * 86_400, **who})
        else:
            events.append({"event": "Product Viewed", "product_id": f"p{n}", "ts": DAY1, **who})
    path = write(tmp_path, "events.jsonl", "".join(json.dumps(e) + "\n" for e in events))

    bulk = SQLiteStore(tmp_path / "bulk.db")
    one_by_one = SQLiteStore(tmp_path / "service.db")
    try:
        report = import_file(path, store=bulk, identity=IDENTITY, progress=False, now=NOW, chunk=7)
        assert report.errors == []
        service = ProfileService(one_by_one, IDENTITY.email_hash)
        decoded = [msgspec.convert(e, ev.Event) for e in events]
        for event in decoded:
            if event.event_id is None and not isinstance(event, ev.OrderCompleted):
                # the importer derives ids for rows without one; so does this side
                event.event_id = _derived(event)
            await service.record(None, [event], ev.Source.SHOP, now=NOW)
        keys = sorted(await one_by_one.keys())
        assert sorted(await bulk.keys()) == keys
        for key in keys:
            assert await bulk.get(key) == await one_by_one.get(key), key
        orders = sum(isinstance(e, ev.OrderCompleted) for e in decoded)
        assert (report.orders, report.skipped_duplicates) == (5, orders - 5)
    finally:
        await bulk.close()
        await one_by_one.close()


def _derived(event: ev.BaseEvent) -> str:
    return derive_id("events", event)


# --- kinds, files, progress ----------------------------------------------------------------


async def test_kind_detection_and_file_problems(tmp_path: Path, store: SQLiteStore) -> None:
    with pytest.raises(ImportFailed, match="pass --kind"):
        run(write(tmp_path, "data.csv", "a,b\n1,2\n"), store)
    with pytest.raises(ImportFailed, match=r"missing columns: ts\|date"):
        run(write(tmp_path, "orders.csv", "order_id,user_id,total\no1,u1,3\n"), store)
    with pytest.raises(ImportFailed, match="not CSV"):
        run(write(tmp_path, "x.csv", "user_id\nu1\n"), store, kind="events")
    with pytest.raises(ImportFailed, match="no such file"):
        run(tmp_path / "missing.csv", store)
    with pytest.raises(ImportFailed, match="unknown kind"):
        run(write(tmp_path, "y.csv", "user_id\nu1\n"), store, kind="refunds")
    # the file name says customers, and the columns fit
    report = run(write(tmp_path, "crm_users.csv", "user_id,type\nu1,vip\n"), store)
    assert (report.kind, report.kind_reason) == ("customers", "from the file name")
    # --kind wins
    report = run(
        write(tmp_path, "orders-old.csv", "user_id,type\nu1,vip\n"), store, kind="customers"
    )
    assert (report.kind, report.kind_reason) == ("customers", "given")
    assert (await must_load(store, "cust:u1")).traits.custom == {"type": "vip"}


async def test_ignored_columns_are_named(tmp_path: Path, store: SQLiteStore) -> None:
    csv_text = "\ufefforder_id,user_id,date,total,currency\no1,u1,2024-06-01,3,EUR\n"
    report = run(write(tmp_path, "orders.csv", csv_text), store)
    assert report.errors == [] and report.notes == ["columns ignored: currency"]
    assert "note: columns ignored: currency" in report.format_report()


def test_progress_bar_draws_on_a_stream() -> None:
    out = io.StringIO()
    bar = Progress("applying", 10, "", enabled=True, stream=out)
    bar.add(10)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\rapplying  [####################] 10/10")
    assert "ETA 0s" in text and text.endswith("\r")
    quiet = io.StringIO()
    bar = Progress("applying", 10, "", enabled=False, stream=quiet)
    bar.add(5)
    bar.close()
    assert quiet.getvalue() == ""


async def test_short_rows_and_quiet_without_a_tty(
    tmp_path: Path, store: SQLiteStore, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_text = "user_id,city,country\nu1,Oslo\nu2\n"  # missing trailing cells are empty
    path = write(tmp_path, "customers.csv", csv_text)
    report = import_file(path, store=store, identity=IDENTITY, now=NOW)  # progress: auto
    assert report.errors == [] and report.applied_events == 2
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    u1 = await must_load(store, "cust:u1")
    assert (u1.traits.city, u1.traits.country) == ("Oslo", "")


async def test_progress_bar_when_asked(
    tmp_path: Path, store: SQLiteStore, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f"o{n},u{n % 50},{DAY1 + n},1\n" for n in range(2500))
    path = write(tmp_path, "orders.csv", "order_id,user_id,ts,total\n" + rows)
    report = import_file(path, store=store, identity=IDENTITY, now=NOW, progress=True)
    assert report.orders == 2500
    err = capsys.readouterr().err
    assert "\rapplying  [" in err and "2,500/2,500" in err and err.endswith("\r")


# --- the command line ----------------------------------------------------------------


def test_cli_import_reports_bad_lines_and_applies_the_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    db = tmp_path / "cli.db"
    monkeypatch.setenv("EDGE_STORE", f"sqlite:{db}")
    monkeypatch.setenv("EDGE_SECRET", "test-secret")
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path,
        "orders.csv",
        "order_id,user_id,date,total,coupon\n"
        "A1,c1,2024-06-01,40.5,\n"
        "A2,c1,yesterday,10,\n"
        "A3,c2,2024-06-02,12,WELCOME\n",
    )
    assert main(["import", str(path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "orders.csv:3: " in out and "kind orders" in out
    assert "2 orders" in out

    # the same file again: nothing new, and --strict refuses it whole
    assert main(["import", str(path), "--no-progress", "--strict"]) == 1
    assert "nothing applied" in capsys.readouterr().out

    async def check() -> Profile | None:
        store = SQLiteStore(db)
        try:
            return await load(store, "cust:c1")
        finally:
            await store.close()

    import asyncio

    profile = asyncio.run(check())
    assert profile is not None and len(profile.orders) == 1


def test_cli_import_whole_file_problems_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    monkeypatch.setenv("EDGE_STORE", f"sqlite:{tmp_path / 'cli.db'}")
    monkeypatch.setenv("EDGE_SECRET", "test-secret")
    monkeypatch.chdir(tmp_path)
    assert main(["import", str(tmp_path / "missing.csv"), "--no-progress"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    monkeypatch.setenv("EDGE_STORE", "memory")
    path = write(tmp_path, "orders.csv", "order_id,user_id,date,total\nA1,c1,2024-06-01,1\n")
    assert main(["import", str(path)]) == 2
    assert "SQLite" in capsys.readouterr().err

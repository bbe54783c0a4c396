"""``edge export SEGMENT``: the members with marketing consent, their key, customer id and
e-mail hash and only the traits ``export_traits`` allows, as CSV or JSON Lines, from
SQLite or Redis, read-only."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from pathlib import Path

import pytest

from edge.cli import main
from edge.profiles.model import Profile
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import Profiles, Store

RULES = """
[segments.regulars]
label = "Two orders or more"
when = "orders >= 2"

[segments.newcomers]
label = "No order yet"
when = "orders == 0"
"""


def people() -> list[Profile]:
    out = []
    for i, (orders, consent) in enumerate([(3, True), (2, True), (5, False), (0, True)]):
        p = Profile(visitor_id=f"v{i}", customer_id=f"c{i}", email_hash=f"h{i}", consent=consent)
        p.order_count = orders
        p.traits.city = "Oslo"
        p.traits.country = "NO"
        p.traits.custom["tier"] = "gold" if i == 0 else "silver"
        out.append(p)
    return out


async def fill(store: Store) -> None:
    profiles = {f"cust:{p.customer_id}": p for p in people()}

    def write(current: Profiles, seen: set[str]) -> Profiles:
        return dict(profiles)

    await store.transact(list(profiles), [], write)
    await store.close()


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        asyncio.run(fill(SQLiteStore(tmp_path / "p.db")))
        return f"sqlite:{tmp_path / 'p.db'}"
    from edge.profiles.redis import RedisStore

    # The export reads the store the setting names, under the default prefix: a
    # database of the shared test server that only this module uses.
    url = request.getfixturevalue("redis_url").replace("/0", "/1")
    asyncio.run(fill(RedisStore(url)))
    return url


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("EDGE_"):
            monkeypatch.delenv(name)
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "segments.toml").write_text(RULES, encoding="utf-8")
    (tmp_path / "edge.toml").write_text('export_traits = ["country", "custom.tier"]\n')
    return tmp_path


def export(*args: str, store: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["export", *args, "--store", store, "--rules", "rules"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_csv_has_the_consenting_members_and_only_the_traits_allowed(
    setup: Path, store_spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = export("regulars", store=store_spec, capsys=capsys)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["key", "customer_id", "email_hash", "country", "custom.tier"]
    # c2 has 5 orders but no marketing consent; c3 has no order.
    assert sorted(rows[1:]) == [
        ["cust:c0", "c0", "h0", "NO", "gold"],
        ["cust:c1", "c1", "h1", "NO", "silver"],
    ]
    assert "Oslo" not in out  # city is not in export_traits
    assert "2 profiles in regulars" in err


def test_json_lines(setup: Path, store_spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    (setup / "edge.toml").write_text("")  # no traits allowed: ids and hash only
    code, out, err = export("newcomers", "--format", "jsonl", store=store_spec, capsys=capsys)
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"key": "cust:c3", "customer_id": "c3", "email_hash": "h3"}
    ]


def test_export_changes_nothing_and_makes_no_store(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = setup / "nothing-here.db"
    code, _, err = export("regulars", store=f"sqlite:{missing}", capsys=capsys)
    assert code == 2 and "no store there" in err
    assert not missing.exists()

    db = setup / "p.db"
    asyncio.run(fill(SQLiteStore(db)))
    before = db.read_bytes()
    output = setup / "out.csv"
    code, _, err = export("regulars", "--output", str(output), store=f"sqlite:{db}", capsys=capsys)
    assert code == 0, err
    assert db.read_bytes() == before
    assert len(output.read_text().splitlines()) == 3


def test_an_unknown_segment_or_trait_is_an_error_naming_it(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = setup / "p.db"
    asyncio.run(fill(SQLiteStore(db)))
    code, _, err = export("regular", store=f"sqlite:{db}", capsys=capsys)
    assert code == 2
    assert "no segment 'regular'" in err and "did you mean 'regulars'" in err
    (setup / "edge.toml").write_text('export_traits = ["email"]\n')
    code, _, err = export("regulars", store=f"sqlite:{db}", capsys=capsys)
    assert code == 2
    assert "export_traits" in err and "'email'" in err and "custom.NAME" in err
    assert "Traceback" not in err

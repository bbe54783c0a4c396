"""The report: its JSON on known aggregates equals numbers computed here by hand, and
``edge report`` prints it as JSON, CSV or a table, read-only, with one-line errors."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge import report
from edge.cli import main
from edge.profiles import events as ev
from edge.profiles.model import DAY
from edge.profiles.service import ProfileService
from edge.profiles.store import ReportRow
from edge.rules.spec import Placement
from tests.test_measure import IDENTITY

NOW = 1_800_000_000
TODAY = NOW // DAY
Z = 1.959963984540054


def placement(pid: str, holdout: float, slot: str = "hero", segment: str = "vip") -> object:
    return SimpleNamespace(
        id=pid,
        spec=Placement(slot=slot, segment=segment, holdout=holdout, snippet="hero.html"),
    )


def row(
    day: int, pid: str, arm: str, units: int, conv: int, rev: float, rev_sq: float
) -> ReportRow:
    return ReportRow(day, pid, arm, units, units * 3, conv, rev, rev_sq, 0)


def wilson(x: int, n: int) -> tuple[float, float]:
    p = x / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def test_the_json_on_known_data_is_the_hand_computed_numbers() -> None:
    rows = [
        # holdout: 200 visitors (two days), 10 converting, revenue 1000, Σr² 120000
        row(TODAY - 2, "hero-vip", "holdout", 120, 6, 600.0, 72_000.0),
        row(TODAY - 1, "hero-vip", "holdout", 80, 4, 400.0, 48_000.0),
        # default: 210 visitors, 21 converting, revenue 2100, Σr² 252000
        row(TODAY - 1, "hero-vip", "default", 210, 21, 2100.0, 252_000.0),
        row(TODAY - 40, "hero-vip", "default", 999, 99, 1.0, 1.0),  # before "since"
    ]
    got = report.build(
        rows, [placement("hero-vip", 0.5)], since_day=TODAY - 30, window_seconds=7 * DAY, now=NOW
    )
    assert got["since"] == report.day_text(TODAY - 30) and got["window_days"] == 7
    (p,) = got["placements"]
    assert (p["id"], p["slot"], p["segment"]) == ("hero-vip", "hero", "vip")
    assert p["split"] == {"holdout": 0.5, "default": 0.5}
    holdout, variant = p["arms"]
    assert holdout == {
        "arm": "holdout",
        "visitors": 200,
        "exposures": 600,
        "views": 0,
        "clicks": 0,
        "conversions": 10,
        "revenue": 1000.0,
        "conversion_rate": 0.05,
        "revenue_per_visitor": 5.0,
    }
    assert "lift" not in holdout
    assert (variant["visitors"], variant["conversions"], variant["revenue"]) == (210, 21, 2100.0)
    assert variant["conversion_rate"] == pytest.approx(0.1)
    assert variant["revenue_per_visitor"] == pytest.approx(10.0)
    # absolute lift: Newcombe's hybrid score interval from the two Wilson intervals
    p1, p0 = 21 / 210, 10 / 200
    (l1, u1), (l0, u0) = wilson(21, 210), wilson(10, 200)
    cr = variant["lift"]["conversion_rate"]
    assert cr["absolute"] == pytest.approx(0.05)
    assert cr["absolute_ci95"] == pytest.approx(
        [p1 - p0 - math.hypot(p1 - l1, u0 - p0), p1 - p0 + math.hypot(u1 - p1, p0 - l0)]
    )
    # relative lift, delta method: var = v1/(n1 m0²) + m1² v0/(n0 m0⁴)
    var = p1 * (1 - p1) / (210 * p0**2) + p1**2 * p0 * (1 - p0) / (200 * p0**4)
    assert cr["relative"] == pytest.approx(1.0)
    assert cr["ci95"] == pytest.approx([1 - Z * math.sqrt(var), 1 + Z * math.sqrt(var)])
    # revenue per visitor: sample variances from Σr and Σr²
    v1 = (252_000 - 2100**2 / 210) / 209
    v0 = (120_000 - 1000**2 / 200) / 199
    rpv = variant["lift"]["revenue_per_visitor"]
    half = Z * math.sqrt(v1 / 210 + v0 / 200)
    assert rpv["absolute"] == pytest.approx(5.0)
    assert rpv["absolute_ci95"] == pytest.approx([5 - half, 5 + half])
    rel_var = v1 / (210 * 25) + 100 * v0 / (200 * 625)
    assert rpv["relative"] == pytest.approx(1.0)
    assert rpv["ci95"] == pytest.approx([1 - Z * math.sqrt(rel_var), 1 + Z * math.sqrt(rel_var)])
    # 31 conversions < 150: too small to read, whatever the interval says
    assert variant["too_small"] is True and variant["significant"] is False
    # SRM: chi-square of 200 / 210 against 50/50, one degree of freedom
    stat = 2 * (5**2) / 205
    assert p["srm_p"] == pytest.approx(math.erfc(math.sqrt(stat / 2)))
    assert p["srm_broken"] is False
    assert p["daily"] == [
        {"day": report.day_text(TODAY - 2), "arm": "holdout", "visitors": 120,
         "exposures": 360, "conversions": 6, "revenue": 600.0},
        {"day": report.day_text(TODAY - 1), "arm": "default", "visitors": 210,
         "exposures": 630, "conversions": 21, "revenue": 2100.0},
        {"day": report.day_text(TODAY - 1), "arm": "holdout", "visitors": 80,
         "exposures": 240, "conversions": 4, "revenue": 400.0},
    ]  # fmt: skip
    json.dumps(got)  # plain JSON


def test_a_broken_split_is_flagged_and_an_empty_holdout_gives_no_lift() -> None:
    rows = [
        row(TODAY, "a", "holdout", 100, 5, 0.0, 0.0),
        row(TODAY, "a", "default", 1500, 80, 0.0, 0.0),  # 10% holdout configured: 6.25%
        row(TODAY, "b", "default", 50, 2, 10.0, 100.0),
        row(TODAY, "gone", "default", 5, 0, 0.0, 0.0),  # a placement no longer in the rules
    ]
    got = report.build(
        rows,
        [placement("a", 0.1), placement("b", 0.2)],
        since_day=TODAY - 1,
        window_seconds=DAY,
        now=NOW,
    )
    a, b, gone = got["placements"]
    assert a["srm_p"] < 0.001 and a["srm_broken"] is True
    assert b["arms"][0] == {
        "arm": "holdout",
        "visitors": 0,
        "exposures": 0,
        "views": 0,
        "clicks": 0,
        "conversions": 0,
        "revenue": 0.0,
        "conversion_rate": None,
        "revenue_per_visitor": None,
    }
    assert b["arms"][1]["lift"] is None and b["arms"][1]["too_small"] is True
    assert gone["id"] == "gone" and gone["split"] == {} and gone["srm_p"] is None
    only = report.build(
        rows, [placement("a", 0.1)], since_day=0, window_seconds=DAY, now=NOW, only="b"
    )
    assert [p["id"] for p in only["placements"]] == ["b"]


def test_the_table_warns_about_mismatch_and_small_samples() -> None:
    rows = [
        row(TODAY, "a", "holdout", 100, 5, 0.0, 0.0),
        row(TODAY, "a", "default", 1500, 80, 0.0, 0.0),
    ]
    built = report.build(rows, [placement("a", 0.1)], since_day=0, window_seconds=DAY, now=NOW)
    text = report.table(built)
    assert "SAMPLE RATIO MISMATCH" in text and "too small to read" in text
    assert "(baseline)" in text and "5.00%" in text


def test_each_segment_s_arms_are_the_report_of_its_rows_alone() -> None:
    rows = [
        row(TODAY, "a", "holdout", 400, 20, 2000.0, 30_000.0),
        row(TODAY, "a", "default", 3600, 250, 20_000.0, 400_000.0),
        row(TODAY - 1, "a", "default", 100, 9, 900.0, 9_000.0),
    ]
    vip = [
        row(TODAY, "a", "holdout", 40, 2, 200.0, 3_000.0)._replace(segment="vip"),
        row(TODAY, "a", "default", 400, 60, 5_000.0, 90_000.0)._replace(segment="vip"),
    ]
    lapsed = [row(TODAY, "a", "default", 10, 1, 50.0, 2_500.0)._replace(segment="lapsed")]
    spec = [placement("a", 0.1)]
    built = report.build(
        rows + vip + lapsed,
        spec,
        since_day=0,
        window_seconds=DAY,
        now=NOW,
        segment_order=("vip", "lapsed"),
    )
    (p,) = built["placements"]
    alone = report.build(rows, spec, since_day=0, window_seconds=DAY, now=NOW)
    assert p["arms"] == alone["placements"][0]["arms"]  # the totals as before
    assert [s["segment"] for s in p["segments"]] == ["vip", "lapsed"]
    for rows_of, entry in ((vip, p["segments"][0]), (lapsed, p["segments"][1])):
        plain = [r._replace(segment="") for r in rows_of]
        own = report.build(plain, spec, since_day=0, window_seconds=DAY, now=NOW)
        assert entry["arms"] == own["placements"][0]["arms"]
    assert p["segments"][1]["arms"][0] == {**p["segments"][1]["arms"][0], "visitors": 0}
    only = report.build(
        rows + vip + lapsed, spec, since_day=0, window_seconds=DAY, now=NOW, segment="lapsed"
    )
    assert [s["segment"] for s in only["placements"][0]["segments"]] == ["lapsed"]
    assert only["placements"][0]["arms"] == p["arms"]
    csv_text = report.csv_rows(built)
    assert [(r[1], r[2]) for r in csv_text[1:]] == [
        ("", "holdout"),
        ("", "default"),
        ("vip", "holdout"),
        ("vip", "default"),
        ("lapsed", "holdout"),
        ("lapsed", "default"),
    ]


# --- the command -----------------------------------------------------------------------

RULES = """
[slots.hero]
select = "#hero"

[[placements]]
id = "hero-vip"
slot = "hero"
snippet = "hero.html"
holdout = 0.25
"""


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, Path]:
    """A SQLite store with a few units recorded through the real write path."""
    from edge.profiles.sqlite import SQLiteStore

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "theme.toml").write_text(RULES)
    db = tmp_path / "profiles.db"

    async def fill() -> None:
        import time

        now = int(time.time())
        store = SQLiteStore(db)
        service = ProfileService(store, IDENTITY.email_hash)
        for i in range(12):
            arm = "holdout" if i % 4 == 0 else "default"
            shown = ev.PlacementShown(
                placement_id="hero-vip",
                ts=now,
                arm=arm,
                held_out=arm == "holdout",
                segments=["big"] if i % 2 == 0 else [],
            )
            await service.record(f"v{i}", [shown], ev.Source.OBSERVED, now)
            if i % 3 == 0:
                done = ev.OrderCompleted(order_id=f"o{i}", total=25.0, anonymous_id=f"v{i}", ts=now)
                await service.record(None, [done], ev.Source.SHOP, now)
        await store.close()

    asyncio.run(fill())
    return db, rules


def test_edge_report_prints_json_csv_and_a_table(
    filled: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, rules = filled
    base = ["report", "--store", f"sqlite:{db}", "--rules", str(rules)]
    assert main([*base, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    (p,) = got["placements"]
    arms = {a["arm"]: a for a in p["arms"]}
    assert (arms["holdout"]["visitors"], arms["default"]["visitors"]) == (3, 9)
    # orders of v0, v3, v6, v9: v0 is held out (i % 4 == 0), the other three not
    assert (arms["holdout"]["conversions"], arms["default"]["conversions"]) == (1, 3)
    assert arms["default"]["revenue"] == 75.0 and p["split"] == {"holdout": 0.25, "default": 0.75}
    assert main([*base, "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["segment"], r["arm"], r["visitors"], r["conversions"]) for r in table] == [
        ("", "holdout", "3", "1"),
        ("", "default", "9", "3"),
        # the even units were in "big" at their exposure: v0, v4, v8 held out, v2, v6,
        # v10 not; of them v0 and v6 ordered
        ("big", "holdout", "3", "1"),
        ("big", "default", "3", "1"),
    ]
    assert table[1]["too_small"] == "yes" and table[0]["too_small"] == ""
    assert main([*base, "--json", "--segment", "big"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["segment"] == "big"
    (big,) = got["placements"][0]["segments"]
    assert [(a["arm"], a["visitors"]) for a in big["arms"]] == [("holdout", 3), ("default", 3)]
    assert main([*base, "--segment", "big"]) == 0
    out = capsys.readouterr().out
    assert "segment big:" in out and "(baseline)" in out
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "hero-vip" in out and "too small to read" in out
    assert main([*base, "--json", "--since", "2999-01-01"]) == 0
    assert json.loads(capsys.readouterr().out)["placements"][0]["arms"][0]["visitors"] == 0


def test_edge_report_errors_are_one_line_and_make_no_store(
    filled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, rules = filled
    missing = tmp_path / "nothing" / "here.db"
    (tmp_path / "nothing").mkdir()
    for args, says in (
        (["--store", f"sqlite:{missing}"], "no store there"),
        (["--store", f"sqlite:{db}", "--since", "last week"], "--since: expected a date"),
        (["--store", f"sqlite:{db}", "--placement", "nope"], "--placement: no placement 'nope'"),
        (["--store", f"sqlite:{db}", "--segment", "nope"], "--segment: no segment 'nope'"),
    ):
        assert main(["report", "--rules", str(rules), *args]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert not missing.exists()


@pytest.mark.slow
def test_edge_report_reads_a_redis_store(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.profiles.redis import RedisStore

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "theme.toml").write_text(RULES)
    url = redis_url.rsplit("/", 1)[0] + "/11"  # a database of its own

    async def fill() -> None:
        import time

        now = int(time.time())
        store = RedisStore(url)  # (the command reads the default prefix)
        service = ProfileService(store, IDENTITY.email_hash)
        for i, arm in enumerate(["holdout", "default", "default"]):
            shown = ev.PlacementShown(placement_id="hero-vip", ts=now, arm=arm)
            await service.record(f"redis-v{i}", [shown], ev.Source.OBSERVED, now)
        done = ev.OrderCompleted(order_id="r-o1", total=12.5, anonymous_id="redis-v1", ts=now)
        await service.record(None, [done], ev.Source.SHOP, now)
        await store.close()

    asyncio.run(fill())
    assert main(["report", "--json", "--store", url, "--rules", str(rules)]) == 0
    arms = {a["arm"]: a for a in json.loads(capsys.readouterr().out)["placements"][0]["arms"]}
    assert (arms["holdout"]["visitors"], arms["default"]["visitors"]) == (1, 2)
    assert (arms["default"]["conversions"], arms["default"]["revenue"]) == (1, 12.5)


async def test_report_json_says_503_while_the_store_is_away() -> None:
    from starlette.requests import Request

    from edge.app import report_response
    from edge.config import Config
    from edge.profiles.store import Breaker, GuardedStore, MemoryStore

    breaker = Breaker(failures=1, cooldown=60)
    store = GuardedStore(MemoryStore(), breaker=breaker)
    breaker.failed(breaker.attempt(), "error: test")  # open
    request = Request({"type": "http", "query_string": b"", "headers": []})
    ruleset = SimpleNamespace(placements=[])
    reply = await report_response(request, store, ruleset, Config())
    assert reply.status_code == 503 and b"circuit breaker open" in reply.body
    bad = Request({"type": "http", "query_string": b"since=yesterday", "headers": []})
    assert (await report_response(bad, store, ruleset, Config())).status_code == 400

"""The demo's synthetic measurement history reads as the report should: the VIP hero
with a real lift, the comeback hero with none, neither split broken; from a seeded
SQLite store (``edge.report.build``, ``edge report --json``) and from a running
``edge demo`` (``/_edge/report.json`` with the token its banner prints)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import selectors
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import report
from edge.demo.history import EXPERIMENTS, plan
from edge.demo.seed import seed, shipped_placements, shipped_ruleset
from edge.identity import Identity
from edge.placements import HOLDOUT_ARM, assign, in_holdout
from edge.profiles.model import DAY
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore, read_report_rows
from tests.conftest import EDGE, ROOT, demo_process, fetch, free_port

NOW = 1_790_000_000
SINCE = dt.date(1970, 1, 1) + dt.timedelta(days=NOW // DAY - 30)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "profiles.db"

    async def fill() -> None:
        store = SQLiteStore(str(path))
        profiles = ProfileService(store, Identity(["s3cret"]).email_hash)
        ruleset = shipped_ruleset()
        assert ruleset is not None
        await seed(profiles, now=NOW, placements=ruleset.placements, ruleset=ruleset)
        await store.close()

    asyncio.run(fill())
    return path


def by_id(built: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in built["placements"]}


def arm(placement: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in placement["arms"] if a["arm"] == name)


def check_demo_report(built: dict[str, Any]) -> None:
    """The two cases a newcomer should see, whatever day the history ends on."""
    placements = by_id(built)
    vip, lapsed = placements["hero-vip"], placements["hero-lapsed"]
    for p in (vip, lapsed):
        assert p["srm_broken"] is False and p["srm_p"] > 0.001
        assert p["split"] == {"holdout": 0.1, "default": 0.9}
        assert arm(p, "holdout")["visitors"] >= 100 and arm(p, "default")["visitors"] >= 900
        assert p["daily"] and len({d["day"] for d in p["daily"]}) >= 20  # spread over weeks
    shown = arm(vip, "default")
    assert shown["significant"] is True and shown["too_small"] is False
    low, high = shown["lift"]["conversion_rate"]["ci95"]
    assert 0 < low < high
    assert shown["conversion_rate"] > 1.5 * arm(vip, "holdout")["conversion_rate"]
    flat = arm(lapsed, "default")
    assert flat["significant"] is False and flat["too_small"] is False  # readable: no lift
    low, high = flat["lift"]["conversion_rate"]["ci95"]
    assert low < 0 < high
    low, high = flat["lift"]["conversion_rate"]["absolute_ci95"]
    assert low < 0 < high
    # placements the history leaves alone have no visitors
    assert all(a["visitors"] == 0 for a in placements["cart-reminder"]["arms"])


def visitors_by_segment(placement: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {
        s["segment"]: {a["arm"]: a["visitors"] for a in s["arms"]} for s in placement["segments"]
    }


def check_demo_segments(built: dict[str, Any]) -> None:
    """The units were in their placement's segment when first exposed (the sidecar's
    verdict, kept with the exposure): every VIP hero unit in ``vip``, every comeback
    hero unit in ``lapsed`` or ``lost`` (one or the other: a lost customer bought
    nothing for a year)."""
    placements = by_id(built)
    vip, lapsed = placements["hero-vip"], placements["hero-lapsed"]
    totals = {a["arm"]: a["visitors"] for a in vip["arms"]}
    assert visitors_by_segment(vip)["vip"] == totals
    segments = visitors_by_segment(lapsed)
    for name in ("holdout", "default"):
        both = segments["lapsed"][name] + segments["lost"][name]
        assert both == arm(lapsed, name)["visitors"] > 0
    # the lift holds among the VIPs too (they are the same visitors)
    in_vip = next(s for s in vip["segments"] if s["segment"] == "vip")
    assert next(a for a in in_vip["arms"] if a["arm"] == "default")["significant"] is True


def test_the_report_of_the_seeded_store_shows_a_lift_and_none(store_path: Path) -> None:
    since_day = report.day_number(SINCE)
    built = report.build(
        read_report_rows(str(store_path), since_day),
        shipped_placements(),
        since_day=since_day,
        window_seconds=7 * DAY,
        now=NOW,
    )
    check_demo_report(built)
    check_demo_segments(built)


def test_edge_report_json_on_the_seeded_store(store_path: Path) -> None:
    done = subprocess.run(
        [*EDGE, "report", "--json", "--since", SINCE.isoformat(), "--rules", str(ROOT / "rules")],
        env={"EDGE_STORE": f"sqlite:{store_path}", "EDGE_SECRET": "s3cret", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    check_demo_report(json.loads(done.stdout))
    check_demo_segments(json.loads(done.stdout))


def test_the_history_is_deterministic_and_assigned_as_the_sidecar_would() -> None:
    placements = shipped_placements()
    first, again = plan(placements, NOW), plan(placements, NOW)
    assert [(u.visitor_id, u.arm, u.exposures, u.past) for u in first] == [
        (u.visitor_id, u.arm, u.exposures, u.past) for u in again
    ]
    assert len(first) == sum(e.units for e in EXPERIMENTS) <= 5000
    rules = {r.id: r for r in placements}
    for unit in first:
        key = f"cust:{unit.customer_id}" if unit.customer_id else unit.visitor_id
        rule = rules[unit.placement]
        assert unit.arm == assign(key, rule.id, rule.spec.holdout, rule.variants)
        assert (unit.arm == HOLDOUT_ARM) == in_holdout(key, rule.id, rule.spec.holdout)
        assert NOW - 28 * DAY <= unit.exposures[0] < NOW
        assert unit.past and all(o.ts < unit.exposures[0] for o in unit.past)  # type: ignore[operator]
        if unit.order is not None:  # bought within the attribution window, in the past
            assert unit.exposures[0] < unit.order.ts <= NOW  # type: ignore[operator]
            assert unit.order.ts - unit.exposures[0] <= 7 * DAY  # type: ignore[operator]
    assert sum(1 for u in first if not u.customer_id) > 500  # anonymous visitors too


def test_each_unit_s_past_puts_it_in_its_placement_s_segment(store_path: Path) -> None:
    """Replayed on a new profile, a unit's past orders make the rules put it in the
    placement's segment at each of its exposures, under the shop's average order of
    the seeded store (as the sidecar computes it)."""
    from edge.profiles import events as ev
    from edge.profiles.model import new_profile
    from edge.profiles.stats import average_order_value
    from edge.rules import RequestInfo, ShopStats

    ruleset = shipped_ruleset()
    assert ruleset is not None

    async def average() -> float | None:
        store = SQLiteStore(str(store_path))
        try:
            return await average_order_value(store)
        finally:
            await store.close()

    shop = ShopStats(avg_order_value=asyncio.run(average()))
    wanted = {"hero-vip": {"vip"}, "hero-lapsed": {"lapsed", "lost"}}
    for unit in plan(ruleset.placements, NOW):
        profile = new_profile("unit", unit.exposures[0])
        for order in unit.past:
            ev.apply(profile, order, NOW, ev.Source.SHOP)
        for ts in unit.exposures:
            names = set(
                ruleset.names(ruleset.evaluate(ruleset.context(profile, RequestInfo(), ts, shop)))
            )
            assert names & wanted[unit.placement], (unit.placement, names)


def read_banner(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    """The demo's stdout up to its start banner's end."""
    assert proc.stdout is not None
    out = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while b"Press Ctrl-C" not in out and time.monotonic() < deadline:
            if sel.select(timeout=1.0):
                chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
                if not chunk:
                    break
                out += chunk
    return out.decode()


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[int, str]]:
    port = free_port()
    with demo_process(port, timeout=60) as run:
        yield port, read_banner(run.proc)


@pytest.mark.slow
def test_the_running_demo_serves_the_report_with_its_printed_token(
    demo: tuple[int, str],
) -> None:
    port, banner = demo
    assert f"http://127.0.0.1:{port}/_edge/admin" in banner
    found = re.search(r"admin token: (\S+)", banner)
    assert found is not None, banner
    token = found.group(1)
    assert fetch(port, "/_edge/report.json").status == 401
    assert fetch(port, "/_edge/report.json", headers={"Authorization": "Bearer x"}).status == 401
    reply = fetch(port, "/_edge/report.json", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 200
    check_demo_report(json.loads(reply.body))
    check_demo_segments(json.loads(reply.body))
    page = fetch(port, "/_edge/admin")
    assert page.status == 401  # the login form: the token goes in there

"""The report over 1,000,000 exposures and 50,000 orders, and what recording an exposure
costs a request.

    .venv/bin/python bench/report.py                  # ~1-2 min
    .venv/bin/python bench/report.py --units 10000 --orders 5000 --rounds 3   # quick

**Fill**: ``--units`` visitors (default 100,000), each shown ``--per-unit`` placements
views (default 10: 5 placements x 2 pages, so 1,000,000 exposures), first exposed on a
day of the last 28, in an arm of a 10% holdout and two variants; then ``--orders``
orders (default 50,000) of random visitors, 0-10 days after their first exposure (so
about a third fall outside the 7-day window). All through the real write path:
``ProfileService.record`` into a SQLite store (group commits, 256 requests at a time),
the aggregates written in the same transactions as the profiles.

**Report**: ``report_rows`` + :func:`edge.report.build` in process (best of 5), and
``edge report --json`` as a command (a fresh process: start-up, rules, read-only open).
Goal: under 2 s.

**Recording**: CPU time per write of a returning visitor's page, as the SQLite writer
thread runs it (read, mutation, encode, write, commit), three ways, interleaved over
``--rounds`` rounds of ``--requests`` requests each, the least kept (the least noisy
on a shared VM): a page view alone (``page``), a page view and one placement
exposure without measurement (``caps only``: ``measured=False``, what the store did
before arms existed), and with it (``measured``: the arm record, the aggregates'
delta and their update). One request per commit (a quiet sidecar), and 32 (a busy one:
the writer commits what is waiting together, so the aggregates' rows, few per day,
are written once for all). Goal: ``measured - caps only`` under 10 µs per exposure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge import report
from edge.identity import Identity
from edge.profiles import events as ev
from edge.profiles.model import DAY, new_profile
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import _SCHEMA, SQLiteStore, _apply_group, _connect

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = Identity(["bench-report"])
PLACEMENTS = [f"placement-{i}" for i in range(5)]
RULES = "".join(
    f'\n[[placements]]\nid = "{pid}"\nslot = "hero"\nsnippet = "s.html"\nholdout = 0.1\n'
    for pid in PLACEMENTS
)
THEME = '[slots.hero]\nselect = "#hero"\n'
CHUNK = 256
SEGMENTS = [f"segment_{i}" for i in range(8)]
"""The rules' reported segments (``report_segments``): 8, the most kept."""


def arm_of(rng: random.Random) -> str:
    x = rng.random()
    return "holdout" if x < 0.1 else ("warm" if x < 0.55 else "bold")


async def fill(service: ProfileService, units: int, per_unit: int, orders: int, now: int) -> None:
    rng = random.Random(16)
    first = {}
    batch = []
    for u in range(units):
        vid = f"u{u}"
        t = now - rng.randrange(28) * DAY - rng.randrange(DAY)
        first[vid] = t
        arms = {pid: arm_of(rng) for pid in PLACEMENTS}
        segments = sorted(rng.sample(SEGMENTS, rng.randrange(4)))  # in 0-3 of the 8
        events = [
            ev.PlacementShown(
                placement_id=(pid := PLACEMENTS[i % len(PLACEMENTS)]),
                arm=arms[pid],
                held_out=arms[pid] == "holdout",
                ts=t + 60 * i,
                segments=segments,
            )
            for i in range(per_unit)
        ]
        batch.append(service.record(vid, events, ev.Source.OBSERVED, t))
        if len(batch) >= CHUNK:
            await asyncio.gather(*batch)
            batch = []
    for o in range(orders):
        vid = f"u{rng.randrange(units)}"
        ts = first[vid] + rng.randrange(10 * DAY)
        done = ev.OrderCompleted(
            order_id=f"o{o}", total=round(rng.uniform(10, 200), 2), anonymous_id=vid, ts=ts
        )
        batch.append(service.record(None, [done], ev.Source.SHOP, ts))
        if len(batch) >= CHUNK:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)


def placements() -> list[object]:
    from edge.rules import load_rules

    directory = Path(tempfile.mkdtemp(prefix="bench-report-rules-"))
    (directory / "theme.toml").write_text(THEME + RULES)
    ruleset, errors = load_rules(directory)
    assert ruleset is not None, errors
    return list(ruleset.placements)


async def report_seconds(store: SQLiteStore, now: int) -> tuple[float, dict]:  # type: ignore[type-arg]
    rules = placements()
    best = float("inf")
    built: dict = {}  # type: ignore[type-arg]
    since = now // DAY - 30
    for _ in range(5):
        start = time.perf_counter()
        rows = await store.report_rows(since)
        built = report.build(rows, rules, since_day=since, window_seconds=7 * DAY, now=now)
        best = min(best, time.perf_counter() - start)
    return best, built


def command_seconds(db: Path) -> float:
    rules = Path(tempfile.mkdtemp(prefix="bench-report-cli-"))
    (rules / "theme.toml").write_text(THEME + RULES)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "edge", "report", "--json", "--store", f"sqlite:{db}",
         "--rules", str(rules)],
        capture_output=True,
        check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"edge report failed: {done.stderr.decode()}")
    return seconds


MODES = ("page", "caps only", "measured", "measured, 3 segments", "measured, 8 segments")
_SEGMENTS_OF = {
    mode: int(mode.split(", ")[1].split()[0]) if "segments" in mode else 0 for mode in MODES
}


def segments_of(mode: str) -> int:
    return _SEGMENTS_OF[mode]


def job(vid: str, mode: str, ts: int) -> Any:
    """A returning visitor's page write as the SQLite writer runs it: a page view, and
    (but for ``page``) one exposure of the hero, measured or not, the unit in that many
    of the reported segments."""
    page = ev.PageViewed(path="/", ts=ts)
    count = segments_of(mode)
    extra = {"segments": SEGMENTS[:count]} if count else {}  # (a base tree has none)
    shown = ev.PlacementShown(
        placement_id="hero", arm="warm", measured=mode != "caps only", ts=ts, **extra
    )

    def mutation(current: Any, seen: set[str]) -> Any:
        profile = current.get(vid) or new_profile(vid, ts)
        ev.apply(profile, page, ts, ev.Source.OBSERVED)
        if mode != "page":
            ev.apply(profile, shown, ts, ev.Source.OBSERVED)
        return {vid: profile}

    return ([vid], [], mutation, None, None)


def commits(conn: Any, mode: str, groups: int, per_group: int, clock: int) -> int:
    """*groups* commits of *per_group* returning visitors' writes (the mode's own
    visitors); returns the clock after them."""
    visitors = [f"{mode}-{i}" for i in range(per_group)]
    for _group in range(groups):
        clock += 1
        conn.execute("BEGIN IMMEDIATE")
        _apply_group(conn, [job(vid, mode, clock) for vid in visitors])
        conn.execute("COMMIT")
    return clock


def recording(path: Path, groups: int, rounds: int, per_group: int) -> dict[str, float]:
    """CPU µs per request for each way, the least over *rounds* (the ways in a shuffled
    order each round): *groups* commits of *per_group* returning visitors' page writes
    each, through the SQLite writer's own group commit (``_apply_group`` between
    ``BEGIN IMMEDIATE`` and ``COMMIT``: what its thread runs for a request's events)."""
    conn = _connect(str(path), sync_full=False)
    conn.executescript(_SCHEMA)
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    rng = random.Random(7)
    clock = int(time.time())
    for _ in range(rounds):
        order = list(results)
        rng.shuffle(order)
        for mode in order:
            start = time.process_time()
            clock = commits(conn, mode, groups, per_group, clock)
            spent = time.process_time() - start
            results[mode].append(spent / (groups * per_group) * 1e6)
    conn.close()
    return {mode: min(v) for mode, v in results.items()}


# --- instructions (callgrind): figures that repeat on a busy machine ---------------

COUNTED = 512
"""Requests counted per way and commit size under callgrind (after as many unmeasured)."""


def _mark() -> None:
    """Callgrind dumps its counters here (``--dump-before=getppid``)."""
    os.getppid()


def _supported(mode: str) -> bool:
    """Whether the tree measured knows the mode (a base tree may keep no segments)."""
    return not segments_of(mode) or "segments" in ev.PlacementShown.__struct_fields__


def counted_child(work: Path) -> None:
    """The process callgrind runs: for each commit size and way, COUNTED requests
    unmeasured (the visitors made, the rows there), a marker, COUNTED measured, a
    marker."""
    clock = int(time.time())
    modes = [m for m in MODES if _supported(m)]
    (work / "modes").write_text("\n".join(modes))
    for per_group in (1, 32):
        conn = _connect(str(work / f"count{per_group}.db"), sync_full=False)
        conn.executescript(_SCHEMA)
        for mode in modes:
            clock = commits(conn, mode, COUNTED // per_group, per_group, clock)
            _mark()
            clock = commits(conn, mode, COUNTED // per_group, per_group, clock)
            _mark()
        conn.close()


def instructions(root: Path, python: str) -> dict[int, dict[str, float]]:
    """Instructions per request of each way (callgrind's Ir; the kernel's share of a
    commit is not counted), for the tree at *root* (its ``edge`` package)."""
    work = Path(tempfile.mkdtemp(prefix="bench-report-ir-"))
    out = work / "callgrind.out"
    try:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             "--dump-before=getppid", "--dump-instr=no", python, __file__,
             "--counted-child", str(work)],
            env={**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"},
            capture_output=True,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"callgrind run failed: {done.stderr.decode()[-2000:]}")
        modes = (work / "modes").read_text().splitlines()
        parts = sorted(work.glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        totals = []
        for part in parts:
            found = re.search(r"^(?:totals|summary): *(\d+)", part.read_text(), re.M)
            assert found is not None, part
            totals.append(int(found.group(1)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # parts: (unmeasured, measured) for each size and way, in order
    out_ir: dict[int, dict[str, float]] = {}
    index = 1
    for per_group in (1, 32):
        out_ir[per_group] = {}
        for mode in modes:
            out_ir[per_group][mode] = totals[index] / COUNTED
            index += 2
    return out_ir


def print_recording(costs: dict[int, dict[str, float]], unit: str, digits: int) -> dict[int, float]:
    """The ways' figures and, per commit size, what a measured exposure adds (the most
    of the three: no segment, 3, 8) over the same write without measurement."""
    worst = {}
    for concurrent, by_mode in costs.items():
        at = "one per commit" if concurrent == 1 else f"{concurrent} per commit"
        for mode, value in by_mode.items():
            print(f"{'record, ' + mode + ', ' + at:<50} {value:>12,.{digits}f} {unit}/write")
        for mode in MODES[2:]:
            if mode in by_mode:
                added = by_mode[mode] - by_mode["caps only"]
                label = f"added by an exposure, {mode}, {at}"
                print(f"{label:<50} {added:>12,.{digits}f} {unit}")
        worst[concurrent] = max(
            by_mode[m] - by_mode["caps only"] for m in MODES[2:] if m in by_mode
        )
    return worst


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--per-unit", type=int, default=10)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=4_096)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per write under callgrind (needs valgrind; ~3 min)",
    )
    parser.add_argument(
        "--compare", metavar="ROOT", help="with --instructions: also count another tree's"
    )
    parser.add_argument("--counted-child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.counted_child:
        counted_child(Path(args.counted_child))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    now = int(time.time())
    try:
        db = work / "profiles.db"
        store = SQLiteStore(db)
        service = ProfileService(store, IDENTITY.email_hash)
        start = time.perf_counter()
        await fill(service, args.units, args.per_unit, args.orders, now)
        fill_s = time.perf_counter() - start
        seconds, built = await report_seconds(store, now)
        exposures = sum(a["exposures"] for p in built["placements"] for a in p["arms"])
        converting = sum(a["conversions"] for p in built["placements"] for a in p["arms"])
        command = command_seconds(db)
        costs = {
            per_group: recording(
                work / f"rec{per_group}.db", args.requests // per_group, args.rounds, per_group
            )
            for per_group in (1, 32)
        }
        await store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"report: {args.units:,} units, {exposures:,} exposures, {args.orders:,} orders "
        f"({converting:,} converting unit-placements in the window); fill {fill_s:.1f} s"
    )
    print(f"{'what':<50} {'value':>12}  goal")
    print(f"{'report_rows + build (in process)':<50} {seconds * 1000:>9.1f} ms  < 2 s")
    print(f"{'edge report --json (a process)':<50} {command * 1000:>9.1f} ms  < 2 s")
    added = print_recording(costs, "µs CPU", 1)
    print(f"(goal: an exposure adds < 10 µs; the most added, 32 per commit: {added[32]:.1f} µs)")
    if args.instructions:
        for name, root in (("base", args.compare), ("this tree", str(ROOT))):
            if root:
                print(f"instructions per write, {name} ({root}):")
                print_recording(instructions(Path(root), sys.executable), "Ir", 0)
    ok = seconds < 2 and command < 2 and added[32] < 10
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

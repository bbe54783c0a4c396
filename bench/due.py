"""The due index: profiles due in a given minute found without a scan, and processed.

Fills a fresh SQLite store (``bench/.work/due/``, gitignored) with ``--profiles``
profiles (default 1,000,000) whose ``due`` times spread over 30 days, plus one "hot"
minute holding ``--hot`` of them (default 20,000: a campaign's worth). Then prints:

* **find**: ``Store.due_keys`` for 20 ordinary minutes (rows found, median ms), and the
  same question asked of the table without its index (a full scan) for comparison;
* **process**: the due loop (:meth:`ActivationLoops.due_once`) over the hot minute, each
  profile written again through ``ProfileService.touch`` with a minimal activation (it
  clears ``due``): profiles/s of wall time and per CPU second (the process's, the
  SQLite writer thread included) against the goal (20,000/s on one core, issue 18).
  ``--activation rules`` runs the real Activator (segments, journeys, next change;
  the shipped library) instead, on hot profiles copied from the demo customers
  (``bench/transitions.py``'s histories): the due loop end to end. On a shared
  machine the wall figure follows the load average printed.

    python bench/due.py [--profiles 1000000] [--hot 20000] [--activation clear|rules]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.activation.activator import Activator  # noqa: E402
from edge.activation.delivery import Delivery  # noqa: E402
from edge.activation.loop import DUE_BATCH, ActivationLoops  # noqa: E402
from edge.profiles.model import Profile, decode  # noqa: E402
from edge.profiles.outbox import OutMessage  # noqa: E402
from edge.profiles.service import ProfileService  # noqa: E402
from edge.profiles.sqlite import SQLiteStore  # noqa: E402
from edge.rules import LIBRARY_DIR, LIBRARY_SEGMENTS, LiveRules, load_rules  # noqa: E402


def customer_histories() -> list[tuple[bytes, int]]:
    """bench/transitions.py's demo customers moved back 0-180 days (3,000 histories)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from transitions import variants

    rules, errors = load_rules(LIBRARY_DIR, LIBRARY_SEGMENTS)
    assert rules is not None, errors
    return variants(rules, 3000)


WORK = ROOT / "bench" / ".work" / "due"
GOAL_PER_S = 20_000
START = 1_800_000_000
SPREAD = 30 * 86_400
HOT_MINUTE = START + 7 * 86_400


class ClearDue:
    """The smallest activation: a profile looked at is due no more."""

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        profile.due = 0
        return []


def fill(store: SQLiteStore, profiles: int, hot: int, histories: list[bytes]) -> float:
    """*histories* (encoded profiles): the hot minute's profiles are copies of them
    (``--activation rules``), else small ones like the rest."""
    rng = random.Random(7)
    started = time.perf_counter()
    session = store.bulk()
    chunk = 50_000
    for first in range(0, profiles, chunk):
        result: dict[str, Profile | None] = {}
        for i in range(first, min(profiles, first + chunk)):
            key = f"v{i:07}"
            due = HOT_MINUTE + rng.randrange(60) if i % (profiles // hot) == 0 else 0
            if due and histories:
                p = decode(histories[i % len(histories)])
                p.visitor_id, p.due = key, due
                result[key] = p
                continue
            result[key] = Profile(
                visitor_id=key,
                first_seen=START - 86_400,
                visits=3,
                order_count=i % 4,
                due=due or START + rng.randrange(SPREAD),
            )
        session.run(lambda result=result: session.write(result, [], {}))  # type: ignore[misc]
    session.close()
    return time.perf_counter() - started


def find(store: SQLiteStore) -> tuple[int, float, float]:
    """The due loop's question for the hot minute, once what came due before was
    handled: (rows of its first batch, median ms with the index, median ms of the same
    question without the index: a full scan)."""
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE profiles SET due = 0 WHERE due > 0 AND due < ?", (HOT_MINUTE,))
    indexed, scanned, rows = [], [], 0
    for _ in range(9):
        t = time.perf_counter()
        rows = len(asyncio.run(store.due_keys(until=HOT_MINUTE + 59, limit=DUE_BATCH)))
        indexed.append(time.perf_counter() - t)
    for _ in range(3):
        t = time.perf_counter()
        store._reader.execute(
            "SELECT key FROM profiles NOT INDEXED WHERE due > 0 AND due <= ? ORDER BY due LIMIT ?",
            (HOT_MINUTE + 59, DUE_BATCH),
        ).fetchall()
        scanned.append(time.perf_counter() - t)
    return rows, statistics.median(indexed) * 1000, statistics.median(scanned) * 1000


async def process(store: SQLiteStore, rules: bool) -> tuple[int, float, float]:
    service = ProfileService(store, lambda email: email, cache_ttl=0)
    service.activation = (
        Activator(LiveRules(LIBRARY_DIR, LIBRARY_SEGMENTS)) if rules else ClearDue()
    )
    loops = ActivationLoops(service, store, Delivery(store, {}), interval=60)
    t = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    done = await loops.due_once(HOT_MINUTE + 59)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    await loops.delivery.close()
    return done, wall, (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--hot", type=int, default=20_000)
    parser.add_argument(
        "--activation",
        choices=("clear", "rules"),
        default="clear",
        help="clear: the smallest activation (the store's own cost); rules: the real "
        "Activator with the shipped library, the hot profiles copies of demo customers",
    )
    args = parser.parse_args()
    rules = args.activation == "rules"
    histories = [blob for blob, _ in customer_histories()] if rules else []
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    store = SQLiteStore(WORK / "profiles.db")
    try:
        seconds = fill(store, args.profiles, args.hot, histories)
        rows, indexed_ms, scan_ms = find(store)
        done, wall, cpu = asyncio.run(process(store, rules))
    finally:
        asyncio.run(store.close())
        shutil.rmtree(WORK, ignore_errors=True)
    load = os.getloadavg()[0]
    print(
        f"due index, SQLite, {args.profiles:,} profiles (filled in {seconds:.1f} s); "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"{'step':<32} {'rows':>8} {'ms':>9} {'profiles/s':>11} {'per cpu s':>10} "
        f"{'goal':>8} {'cpu s':>6}"
    )
    print(f"{'find the due (due_keys, a batch)':<32} {rows:>8,} {indexed_ms:>9.2f}")
    step = "process it (real Activator)" if rules else "process the hot minute"
    print(f"{'same without the index (a scan)':<32} {rows:>8,} {scan_ms:>9.2f}")
    rate = done / wall if wall else 0.0
    per_cpu = done / cpu if cpu else 0.0
    print(
        f"{step:<32} {done:>8,} {wall * 1000:>9.0f} {rate:>11,.0f} "
        f"{per_cpu:>10,.0f} {GOAL_PER_S:>8,} {cpu:>6.2f}"
    )
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())

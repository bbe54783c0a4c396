"""Segment transitions by time alone: 1,000,000 stored profiles, the ones due found
through the due index, then processed (load, update, next_change, write).

The profiles are copies of the 310 demo customers (edge/demo/seed.py), each copy
moved back in time by a random number of days and seconds (``--variants`` distinct
histories), so that their due times (when a segment of the shipped library can next
change with no event: an order leaving a window, `lost` after 365 days...) spread
over the months ahead. Every copy is evaluated once at the bench's clock and stored
with its segments and due time.

The store is a SQLite file of the sidecar's shape built here: ``profiles(key, data,
updated, due)`` with a partial index on ``(due, key)`` (covering the query that finds
them; profiles that time alone never changes are not in it). The store's own due index (``due_keys``, issue 18's "delivery" part) was not
merged when this was written; this table is what it describes (a column and an index,
written in the same transaction as the profile).

For each window ahead of the clock (the busiest minute, the next hour, the next day,
the next week) the table shows the profiles due, the time to find their keys through
the index (no full scan: the query plan is printed and checked), and the rate at which
they are processed on one core: read by key in batches, decoded, ``refresh`` (``update``:
every activatable segment evaluated, entries and exits recorded; and ``next_change``;
in one evaluation), encoded
and written back with the new due time, in one transaction per batch. Goal: >= 20,000
profiles/s ("processed/s", wall clock, pinned to one core; "per CPU s": per second of
the process's CPU time, steadier on a machine shared with other work). ``--profile`` adds where the time goes (cProfile, by own time), and the
split by phase is printed after the table.

    python bench/transitions.py [--profiles 1000000] [--variants 3000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from proxy import PROXY_CORE, print_table, work_dir

from edge.activation.segments import next_change, refresh, update
from edge.demo.seed import seed
from edge.identity import Identity
from edge.profiles.model import DAY, Profile, decode, encode
from edge.profiles.service import ProfileService
from edge.profiles.store import MemoryStore
from edge.rules import LIBRARY_DIR, LIBRARY_SEGMENTS, RuleSet, load_rules
from edge.server import run

GOAL_PER_S = 20_000
BATCH = 1000
CLOCK = 1_790_000_000
"""The bench's now (the demo customers are seeded up to it)."""
SCHEMA = """
CREATE TABLE profiles (key TEXT PRIMARY KEY, data BLOB NOT NULL, updated INTEGER NOT NULL,
    due INTEGER NOT NULL DEFAULT 0);
CREATE INDEX profiles_due ON profiles(due, key) WHERE due > 0;
"""
CACHE_KIB = 512 * 1024
"""SQLite's page cache for the run (the sidecar's bulk writer uses a large one too)."""
FIND = "SELECT key FROM profiles WHERE due > 0 AND due >= ? AND due < ? ORDER BY due"
LOAD = "SELECT key, data FROM profiles WHERE key IN ({})"
WRITE = "UPDATE profiles SET data = ?, updated = ?, due = ? WHERE key = ?"


def shifted(p: Profile, back: int) -> Profile:
    """*p* with its history *back* seconds earlier (daily counters by whole days)."""
    days = back // DAY
    p = decode(encode(p))

    def t(ts: int) -> int:
        return ts - back if ts else 0

    p.first_seen, p.last_seen, p.session_start = t(p.first_seen), t(p.last_seen), t(p.session_start)
    for o in p.orders:
        o.ts = t(o.ts)
    for name in ("visit_days", "pageview_days", "product_view_days"):
        counts = getattr(p, name)
        setattr(p, name, {d - days: n for d, n in counts.items()})
    p.email_send_days = {d - days: n for d, n in p.email_send_days.items()}
    p.email_open_days = {d - days: n for d, n in p.email_open_days.items()}
    p.cart.updated = t(p.cart.updated)
    p.checkout_started = t(p.checkout_started)
    if p.traits.registered:
        p.traits.registered = t(p.traits.registered)
    return p


async def demo_customers() -> list[Profile]:
    store = MemoryStore()
    await seed(ProfileService(store, Identity(["bench"]).email_hash), now=CLOCK)
    return list(store.profiles.values())


def variants(rules: RuleSet, count: int) -> list[tuple[bytes, int]]:
    """*count* histories (blob, due): the demo customers moved back 0-180 days."""
    customers = run(demo_customers())
    pick = random.Random(7)
    out = []
    for i in range(count):
        p = shifted(customers[i % len(customers)], pick.randrange(180 * DAY))
        update(p, rules, CLOCK)
        p.due = next_change(p, rules, CLOCK) or 0
        out.append((encode(p), p.due))
    return out


def fill(path: Path, count: int, histories: list[tuple[bytes, int]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    pick = random.Random(count)
    # random visitor ids as the cookie makes them, inserted in key order (a quicker
    # fill; the due times, drawn at random, have nothing to do with that order)
    keys = sorted(f"{pick.getrandbits(96):024x}" for _ in range(count))
    chunk = 50_000
    for start in range(0, count, chunk):
        rows = []
        for key in keys[start : start + chunk]:
            blob, due = histories[pick.randrange(len(histories))]
            rows.append((key, blob, CLOCK, due))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO profiles (key, data, updated, due) VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()


def open_store(path: Path) -> sqlite3.Connection:
    """As the sidecar opens its store (WAL, synchronous=NORMAL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + FIND, (0, 1)))
    if "profiles_due" not in plan:
        raise SystemExit(f"the due query does not use the index: {plan}")
    return conn


class Phases:
    def __init__(self) -> None:
        self.seconds = dict.fromkeys(("read", "decode", "segments", "write"), 0.0)


def process(
    conn: sqlite3.Connection, rules: RuleSet, keys: list[str], now: int, phases: Phases
) -> int:
    """Each due profile: read, update, next_change, written back with its due time, in
    transactions of ``BATCH``. Returns the transitions found."""
    clock = time.perf_counter
    spent = phases.seconds
    moved = 0
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]
        t0 = clock()
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(LOAD.format(",".join("?" * len(batch))), batch).fetchall()
        t1 = clock()
        out = []
        t_decode = t_segments = 0.0
        for key, data in rows:
            a = clock()
            p = decode(data)
            b = clock()
            changes, due = refresh(p, rules, now)  # update and next_change, one evaluation
            p.due = due or 0
            c = clock()
            moved += len(changes)
            out.append((encode(p), now, p.due, key))
            t_decode += b - a
            t_segments += c - b
        t2 = clock()
        conn.executemany(WRITE, out)
        conn.execute("COMMIT")
        t3 = clock()
        spent["read"] += t1 - t0
        spent["decode"] += t_decode
        spent["segments"] += t_segments
        spent["write"] += (t3 - t2) + (t2 - t1 - t_decode - t_segments)
    return moved


def busiest_minute(conn: sqlite3.Connection, now: int) -> int:
    row = conn.execute(
        "SELECT due / 60 AS m FROM profiles WHERE due > 0 AND due >= ? AND due < ? "
        "GROUP BY m ORDER BY count(*) DESC LIMIT 1",
        (now, now + 7 * DAY),
    ).fetchone()
    return int(row[0]) * 60 if row else now


def bench(
    conn: sqlite3.Connection, rules: RuleSet, profile: bool
) -> tuple[list[list[str]], Phases]:
    phases = Phases()
    rows = []
    minute = busiest_minute(conn, CLOCK)
    windows = [
        ("busiest minute", minute, minute + 60),
        ("next hour", CLOCK, CLOCK + 3600),
        ("next day", CLOCK + 3600, CLOCK + DAY),
        ("next week", CLOCK + DAY, CLOCK + 7 * DAY),
    ]
    profiler = cProfile.Profile() if profile else None
    total = total_s = total_cpu = 0.0
    for name, start, end in windows:
        t0 = time.perf_counter()
        keys = [k for (k,) in conn.execute(FIND, (start, end))]
        found = time.perf_counter() - t0
        gc.collect()
        gc.disable()
        if profiler is not None:
            profiler.enable()
        t1, c1 = time.perf_counter(), time.process_time()
        moved = process(conn, rules, keys, end, phases)
        took, cpu = time.perf_counter() - t1, time.process_time() - c1
        if profiler is not None:
            profiler.disable()
        gc.enable()
        rate = len(keys) / took if keys else 0.0
        total += len(keys)
        total_s += took
        total_cpu += cpu
        rows.append(
            [
                name,
                f"{len(keys):,}",
                f"{found * 1000:.1f}",
                f"{moved:,}",
                f"{rate:,.0f}" if keys else "-",
                f"{len(keys) / cpu:,.0f}" if keys and cpu else "-",
            ]
        )
    rate = total / total_s if total_s else 0.0
    ok = "ok" if rate >= GOAL_PER_S else "BELOW GOAL"
    per_cpu = total / total_cpu if total_cpu else 0.0
    rows.append(["all", f"{int(total):,}", "", "", f"{rate:,.0f} ({ok})", f"{per_cpu:,.0f}"])
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(18)
    return rows, phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--variants", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="cProfile the processing")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(PROXY_CORE)})  # one core, as the sidecar's loop has
    rules, errors = load_rules(LIBRARY_DIR, LIBRARY_SEGMENTS)
    assert rules is not None, errors
    work = work_dir("transitions-")
    try:
        t0 = time.perf_counter()
        histories = variants(rules, args.variants)
        path = work / "store.sqlite3"
        fill(path, args.profiles, histories)
        built = time.perf_counter() - t0
        conn = open_store(path)
        indexed = conn.execute("SELECT count(*) FROM profiles WHERE due > 0").fetchone()[0]
        print(
            f"transitions: {args.profiles:,} profiles stored ({indexed:,} with a due time) "
            f"in {built:.0f} s; goal >= {GOAL_PER_S:,} processed/s on one core"
        )
        rows, phases = bench(conn, rules, args.profile)
        print_table(
            ["window", "profiles due", "found in ms", "transitions", "processed/s", "per CPU s"],
            rows,
            right={1, 2, 3, 4, 5},
        )
        spent = phases.seconds
        whole = sum(spent.values()) or 1.0
        print(
            "time by phase: " + ", ".join(f"{k} {100 * v / whole:.0f}%" for k, v in spent.items())
        )
        conn.close()
        rate_ok = rows[-1][-1].endswith("(ok)")
        return 0 if rate_ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

"""``edge import`` throughput: orders per second into a fresh SQLite file.

Generates 100,000 orders from about 20,000 customers, 1–4 line items each, as the
common one-row-per-item CSV export (``bench/.work/importer/orders.csv``, gitignored),
imports it into a fresh SQLite file through :func:`edge.importer.import_file`, and
prints orders, wall and CPU seconds, and orders/s (wall) against the goal (20,000/s).
The file is read in a second process while this one applies: CPU seconds count both
(so up to twice the wall seconds); the load average before and after says how busy
the machine was with other work. A second import of the same file shows the
idempotent path (every order skipped as a duplicate). Then the same file into Redis
(a redis-server started here on loopback, ``appendfsync everysec`` as a production
server would run, unless ``--skip-redis``): the shared store the replicas use, written
in ``MULTI``/``EXEC`` chunks of 2,000 orders. The figures so far, and what made them:
``bench/README.md``.

    python bench/importer.py [--orders 100000] [--customers 20000] [--skip-redis]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.identity import Identity  # noqa: E402
from edge.importer import ImportReport, import_file  # noqa: E402
from edge.profiles.sqlite import SQLiteStore  # noqa: E402

WORK = ROOT / "bench" / ".work" / "importer"
GOAL_ORDERS_PER_S = 20_000
CATEGORIES = ["shoes", "shirts", "trousers", "jackets", "bags", "hats", "socks", "belts"]
BRANDS = ["acme", "northwind", "globex", "initech", "umbrella", "hooli"]


def generate(path: Path, orders: int, customers: int, seed: int = 7) -> int:
    """Write the CSV; return the number of item rows."""
    rng = random.Random(seed)
    start = 1_700_000_000
    rows = 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                *("order_id", "user_id", "date", "total", "coupon"),
                *("product_id", "category", "brand", "price", "quantity"),
            ]
        )
        for n in range(orders):
            customer = f"c{rng.randrange(customers):06d}"
            ts = start + n * 300 + rng.randrange(300)
            date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
            items = []
            for _ in range(rng.randint(1, 4)):
                price = round(rng.uniform(5, 200), 2)
                quantity = rng.choice((1, 1, 1, 2, 3))
                items.append((f"p{rng.randrange(5_000)}", price, quantity))
            total = f"{sum(p * q for _, p, q in items):.2f}"
            coupon = "WELCOME10" if rng.random() < 0.1 else ""
            for product_id, price, quantity in items:
                writer.writerow(
                    [
                        *(f"o{n:07d}", customer, date, total, coupon, product_id),
                        *(rng.choice(CATEGORIES), rng.choice(BRANDS), f"{price:.2f}", quantity),
                    ]
                )
                rows += 1
    return rows


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of its children that have finished (the
    import's reading process)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime


def print_table(hdr: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(hdr[i]), *(len(r[i]) for r in rows)) for i in range(len(hdr))]
    print(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(hdr, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def row(label: str, report: ImportReport, cpu: tuple[float, float], goal: bool) -> list[str]:
    rate = report.lines and (report.orders + report.skipped_duplicates) / report.seconds
    return [
        label,
        f"{report.orders:,}",
        f"{report.skipped_duplicates:,}",
        f"{report.seconds:.2f}",
        f"{cpu[0] + cpu[1]:.2f}",
        f"{cpu[1]:.2f}",
        f"{rate:,.0f}",
        (f"{rate / GOAL_ORDERS_PER_S:.2f}x ({'ok' if rate >= GOAL_ORDERS_PER_S else 'MISSED'})")
        if goal
        else "",
    ]


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on a free loopback port, its data in *work*; its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(work)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not answer PING within 10 s")


def redis_rows(csv_path: Path, identity: Identity) -> tuple[list[list[str]], bool]:
    """The same file into a fresh Redis, then again."""
    import asyncio

    from edge.profiles.redis import RedisStore

    proc, url = start_redis(WORK)
    try:
        store = RedisStore(url)
        cpu = cpu_seconds()
        first = import_file(csv_path, store=store, identity=identity, progress=False)
        cpu_first = tuple(b - a for a, b in zip(cpu, cpu_seconds(), strict=True))
        cpu = cpu_seconds()
        again = import_file(csv_path, store=store, identity=identity, progress=False)
        cpu_again = tuple(b - a for a, b in zip(cpu, cpu_seconds(), strict=True))
        asyncio.run(store.close())
    finally:
        proc.terminate()
        proc.wait(10)
    rows = [
        row("fresh Redis", first, cpu_first, False),  # type: ignore[arg-type]
        row("Redis, same file again", again, cpu_again, False),  # type: ignore[arg-type]
    ]
    return rows, not first.errors and again.orders == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--keep-work", action="store_true", help="keep bench/.work/importer")
    parser.add_argument("--skip-redis", action="store_true", help="no Redis rows")
    args = parser.parse_args(argv)

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    csv_path = WORK / "orders.csv"
    started = time.perf_counter()
    # Generated in a process of its own: `edge import` starts in a fresh one, whose
    # memory no million freed objects have left holed (here that cost the import ~10%).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        item_rows = pool.submit(generate, csv_path, args.orders, args.customers).result()
    size = csv_path.stat().st_size
    print(
        f"generated {args.orders:,} orders ({item_rows:,} item rows, {size / 1e6:.1f} MB) "
        f"for {args.customers:,} customers in {time.perf_counter() - started:.1f} s"
    )

    store = SQLiteStore(WORK / "profiles.db")
    identity = Identity(["bench-secret"])
    load_before = os.getloadavg()[0]
    cpu = cpu_seconds()
    first = import_file(csv_path, store=store, identity=identity, progress=False)
    cpu_first = tuple(b - a for a, b in zip(cpu, cpu_seconds(), strict=True))
    cpu = cpu_seconds()
    again = import_file(csv_path, store=store, identity=identity, progress=False)
    cpu_again = tuple(b - a for a, b in zip(cpu, cpu_seconds(), strict=True))
    load_after = os.getloadavg()[0]
    profiles = store._reader.execute("SELECT count(*) FROM profiles").fetchone()[0]
    store._reader.close()
    store._writer.close()
    extra: list[list[str]] = []
    redis_ok = True
    if not args.skip_redis and shutil.which("redis-server"):
        extra, redis_ok = redis_rows(csv_path, identity)

    print()
    print_table(
        [
            "import",
            "orders",
            "duplicates",
            "seconds",
            "cpu s",
            "reading",
            "orders/s",
            f"vs goal {GOAL_ORDERS_PER_S:,}/s",
        ],
        [
            row("fresh SQLite file", first, cpu_first, True),  # type: ignore[arg-type]
            row("same file again", again, cpu_again, False),  # type: ignore[arg-type]
            *extra,
        ],
    )
    print(f"\n{profiles:,} customer profiles; bad lines: {len(first.errors)}")
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}")
    ok = not first.errors and first.orders == args.orders and again.orders == 0 and redis_ok
    rate = first.orders / first.seconds
    if not args.keep_work:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0 if ok and rate >= GOAL_ORDERS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())

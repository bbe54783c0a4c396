"""Slowloris against `edge serve`: dripping connections closed at header_timeout, and
what the attack does to everyone else's latency.

    python bench/slowloris.py [--connections 200] [--duration 10] [--header-timeout 10]

An `edge serve` (passthrough: no rules, tracking off; pinned to core 0) in front of nginx
serving ``bench/proxy.py``'s 61 KB storefront page. First wrk (``-t1 -c8``, core 1)
measures normal requests alone. Then ``--connections`` (default 200) attackers connect,
send a request line and start a header, and drip one more header byte every second,
never finishing the head; each one the sidecar closes is replaced, so the attack goes
on at full strength while wrk measures again. Reported: how many of the first 200 are
still open ``header_timeout`` + 2 s after they connected (goal: 0), when they were
closed, and the normal requests' p50/p99 during the attack against without it (goal:
close; the line gives the ratios). ``--header-timeout`` sets ``EDGE_HEADER_TIMEOUT``
(default: the sidecar's own default, 10 s); a large value shows the attack without
the guard. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from personalize import DEFAULT_EDGE, wait_ready
from proxy import (
    LOAD_CORE,
    PROXY_CORE,
    WRK_LUA,
    Procs,
    free_port,
    log_tail,
    nginx_conf,
    preflight,
    print_table,
    run_bench,
    run_wrk,
    start_nginx,
    storefront_html,
    work_dir,
)

from edge.config import Config

GRACE = 2.0  # the first wave is counted this long after header_timeout
LONGEST = 60.0  # or after this many seconds, if sooner (a large --header-timeout)
GOAL_P99_RATIO = 1.5  # p99 during the attack over p99 without it


@dataclass
class Attacker:
    """*n* slowloris connections to 127.0.0.1:*port*, each replaced when closed, on an
    asyncio loop in a thread."""

    port: int
    n: int
    drip_every: float = 1.0
    opened: int = 0
    failed: int = 0
    closed_after: list[float] = field(default_factory=list)
    """Seconds from connect to the server's close, for the first wave."""
    first_wave_open: set[int] = field(default_factory=set)

    def start(self) -> Attacker:
        self._loop = asyncio.new_event_loop()
        self._stopping = False
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(30)

    async def _main(self) -> None:
        tasks = [asyncio.ensure_future(self._slot(k)) for k in range(self.n)]
        while not self._stopping:
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _slot(self, k: int) -> None:
        first = True
        while not self._stopping:
            await self._one(k if first else None)
            first = False

    async def _one(self, wave_id: int | None) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self.failed += 1
            await asyncio.sleep(0.1)
            return
        self.opened += 1
        started = time.monotonic()
        if wave_id is not None:
            self.first_wave_open.add(wave_id)
        closed = asyncio.ensure_future(reader.read(65536))  # b"" (or an error) when closed
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: slow\r\nX-Drip: ")
            while not closed.done() and not self._stopping:
                await asyncio.wait([closed], timeout=self.drip_every)
                if not closed.done():
                    writer.write(b"a")
        except OSError:
            pass
        finally:
            if closed.done() and wave_id is not None:
                self.first_wave_open.discard(wave_id)
                self.closed_after.append(time.monotonic() - started)
            closed.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@dataclass
class Row:
    name: str
    result: dict[str, Any]

    def cells(self) -> list[str]:
        r = self.result
        seconds = r["duration_us"] / 1e6
        errors = sum(r[k] for k in ("connect", "read", "write", "timeout", "status"))
        return [
            self.name,
            f"{r['requests'] / seconds:,.0f}",
            f"{r['p50'] / 1000:.2f}",
            f"{r['p99'] / 1000:.2f}",
            str(errors),
        ]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Procs()
        self.work = work_dir("slowloris-")

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def start_upstream(self) -> int:
        www = self.work / "www"
        www.mkdir()
        (www / "index.html").write_bytes(storefront_html())
        port = free_port()
        conf = nginx_conf(self.work, "upstream", port, f"        root {www};")
        wait_ready(port, start_nginx(self.procs, self.work, conf), "/")
        return port

    def start_edge(self, upstream: int) -> int:
        cwd = self.work / "edge"
        (cwd / "no-rules").mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env.update(
            EDGE_RULES=str(cwd / "no-rules"),
            EDGE_SNIPPETS=str(cwd / "no-rules"),
            EDGE_TRACK="false",
        )
        if self.args.header_timeout is not None:
            env["EDGE_HEADER_TIMEOUT"] = str(self.args.header_timeout)
        port = free_port()
        argv = ["taskset", "-c", PROXY_CORE, self.args.edge, "serve"]
        argv += ["--upstream", f"http://127.0.0.1:{upstream}", "--port", str(port)]
        log = self.work / "edge.log"
        p = self.procs.start(argv, log, cwd=cwd, env=env)
        try:
            wait_ready(port, p, "/_edge/healthz")
        except RuntimeError as exc:
            raise RuntimeError(f"edge serve: {exc}: {log_tail(log)}") from None
        return port

    def run(self) -> int:
        a = self.args
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # the attackers share wrk's core
        timeout = a.header_timeout if a.header_timeout is not None else Config().header_timeout
        self.log(f"work dir: {self.work}")
        port = self.start_edge(self.start_upstream())
        lua = self.work / "done.lua"
        lua.write_text(WRK_LUA)
        run_wrk(self.procs, self.work, port, 2, lua)  # warm-up
        self.log(f"normal requests alone: {a.duration:g} s")
        rows = [Row("without attack", run_wrk(self.procs, self.work, port, a.duration, lua))]

        self.log(f"{a.connections} slowloris connections, then normal requests again")
        attacker = Attacker(port, a.connections).start()
        try:
            time.sleep(1.0)
            during = run_wrk(self.procs, self.work, port, a.duration, lua)
            rows.append(Row(f"during {a.connections} slowloris", during))
            check_after = min(timeout + GRACE, LONGEST)
            time.sleep(max(0.0, attacker.t0 + check_after - time.monotonic()))
            still_open = len(attacker.first_wave_open)
        finally:
            attacker.stop()
        return self.report(rows, attacker, still_open, timeout, check_after)

    def report(
        self, rows: list[Row], attacker: Attacker, still_open: int, timeout: float, after: float
    ) -> int:
        a = self.args
        print(
            f"\nslowloris: edge serve (passthrough) in front of nginx, header_timeout {timeout:g} s; "
            f"normal requests: wrk -t1 -c8, {a.duration:g} s"
        )
        print_table(
            ["normal requests", "req/s", "p50 ms", "p99 ms", "errors"],
            [row.cells() for row in rows],
            right={1, 2, 3, 4},
        )
        closed = sorted(attacker.closed_after)
        when = (
            f"closed by the sidecar {closed[0]:.1f}-{closed[-1]:.1f} s after connecting "
            f"(median {statistics.median(closed):.1f} s)"
            if closed
            else "none closed by the sidecar"
        )
        print(
            f"\nattack: {a.connections} connections dripping a header byte a second; "
            f"{attacker.opened} opened in all ({attacker.opened - a.connections} replacements"
            f"{f', {attacker.failed} failed to connect' if attacker.failed else ''}); "
            f"first {a.connections}: {when}"
        )
        base, hit = rows[0].result, rows[1].result
        p50_ratio = hit["p50"] / max(base["p50"], 1)
        p99_ratio = hit["p99"] / max(base["p99"], 1)
        ok_open = still_open == 0
        ok_latency = p99_ratio <= GOAL_P99_RATIO
        at = f"header_timeout + {GRACE:g} s" if after == timeout + GRACE else f"{after:g} s"
        print(
            f"goal: still open at {at}: {still_open} of "
            f"{a.connections} ({'ok' if ok_open else 'MISSED'}); normal latency during the "
            f"attack: p50 x{p50_ratio:.2f}, p99 x{p99_ratio:.2f} "
            f"({'ok' if ok_latency else 'MISSED'}, goal p99 within x{GOAL_P99_RATIO:g})"
        )
        errors = sum(
            row.result[k] for row in rows for k in ("connect", "read", "write", "timeout", "status")
        )
        return 0 if errors == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Slowloris connections against edge serve: closed at header_timeout?"
    )
    parser.add_argument(
        "--connections", type=int, default=200, help="slowloris connections (default 200)"
    )
    parser.add_argument(
        "--duration", type=float, default=10, help="seconds per wrk run (default 10)"
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        help="EDGE_HEADER_TIMEOUT for the sidecar (default: its own default)",
    )
    parser.add_argument(
        "--edge", default=str(DEFAULT_EDGE), help=f"edge executable (default {DEFAULT_EDGE})"
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the work dir (configs, logs)"
    )
    args = parser.parse_args(argv)
    if preflight():
        return 2
    return run_bench(Bench(args), args.keep_work)


if __name__ == "__main__":
    sys.exit(main())

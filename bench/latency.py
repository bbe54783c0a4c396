"""G2's instruments: an open-loop client that holds its rate, the sidecar's capacity as
CPU, and a timeline of the slow requests against the sidecar's garbage collections and
store-writer batches. ``bench/goals.py --goal G2`` drives them (see bench/README.md).

Why not wrk's req/s for the capacity: wrk ``-c8`` is closed-loop, so its req/s is
the sidecar's capacity only when the sidecar had its core to itself. On this shared
machine it rarely has: wrk's req/s is ``1 / CPU per request`` times the share of the
core the sidecar got, and that share moved between runs from 0.17 to 0.97 (the
capacity "jump" of issue 19's first round, 340 -> 1,543 req/s for the mix, was mostly
that: the base's run had a quarter of its core). Delayed ACKs were ruled out: the
base sets ``TCP_NODELAY`` on every accepted socket (strace), delayed ACKs were 0.017
a request against 0.009, and with one connection base and main answer alike. The
capacity is therefore ``1 / CPU seconds per request`` of the sidecar's process tree
(``/proc/PID/stat``), measured with this client at a known rate, and G2's rate is
half of it; each G2 run prints how busy the sidecar's core really was, and with whom.

The client (``--client``): Poisson arrivals (seeded, so the direct and the sidecar
runs get the same schedule), woken by a ``timerfd`` at each planned send (event loops
only sleep in whole milliseconds, which would send in bursts), each request on an idle
keep-alive connection (a new one only when none is idle: counted), no task per
request, the body counted, not kept. It reports the achieved rate and how late each
send was against its plan, so a client that could not keep up says so.

``--traced-edge FILE ...``: runs ``edge`` with hooks that time-stamp (CLOCK_MONOTONIC,
the client's clock) every garbage collection and every store-writer commit, written to
FILE at exit, for the tail's timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import math
import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

ORIGIN_DELAY = 0.100  # s: G2's origin, per page
PROXY_CPU = 0  # the core the sidecars are pinned to (bench/proxy.py's PROXY_CORE)
SLOW_MS = 2.0  # a request slower than the direct run's p50 by this is "slow" in the timeline


# --------------------------------------------------------------------------- timerfd


class Timer:
    """A CLOCK_MONOTONIC timerfd armed at absolute times (µs precision, unlike the
    event loop's millisecond sleeps); None where libc has none."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self.fd = libc.timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")

    def arm(self, at: float) -> None:
        sec = int(at)
        spec = struct.pack("qqqq", 0, 0, sec, int((at - sec) * 1e9))  # interval 0, value
        if self._settime(self.fd, 1, spec, None) != 0:  # TFD_TIMER_ABSTIME
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)


# --------------------------------------------------------------------------- the client


class _Conn(asyncio.Protocol):
    """One keep-alive connection: one request at a time, the body counted, not kept."""

    __slots__ = ("client", "first", "got", "head", "index", "length", "sent", "tail", "transport")

    def __init__(self, client: OpenLoop) -> None:
        self.client = client
        self.transport: Any = None
        self.head = bytearray()
        self.length = self.got = self.index = -1
        self.sent = self.first = 0.0
        self.tail = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, request: bytes, index: int) -> None:
        self.head.clear()
        self.length = self.got = -1
        self.first = 0.0
        self.tail = b""
        self.index = index
        self.sent = time.monotonic()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.got < 0:  # still in the head
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.head[:end]).lower()
            status = int(head[9:12])
            if status != 200:
                self.client.done(self, status, 0.0, now)
                return
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                eol = head.find(b"\r\n", at + 2)
                self.length = int(head[at + 17 : eol if eol >= 0 else len(head)])
            else:  # chunked (a personalized page): ends with the last chunk
                self.length = -1
            self.got = len(self.head) - end - 4
            data = bytes(self.head[end + 4 :])
        else:
            self.got += len(data)
        if self.got > 0 and not self.first:
            self.first = now
        if self.length >= 0:
            if self.got >= self.length:
                self.client.done(self, 200, self.first, now)
        elif data:
            self.tail = (self.tail + data)[-5:]
            if self.tail == b"0\r\n\r\n":
                self.client.done(self, 200, self.first, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)


class OpenLoop:
    """Poisson arrivals at *rate* for *warmup* + *seconds* (see the module docstring)."""

    def __init__(
        self,
        port: int,
        requests: list[bytes],
        rate: float,
        seed: int = 19,
        pids: tuple[int, ...] = (),
    ) -> None:
        self.pids = pids  # the sidecar's: its CPU time over the measured window
        self.cpu: list[tuple[float, float, float]] = []
        """(monotonic, the sidecar's CPU seconds, core 0's busy seconds) at the measured
        window's start and end."""
        self.port = port
        self.requests = requests
        self.rate = rate
        self.seed = seed
        self.idle: collections.deque[_Conn] = collections.deque()
        self.busy: set[_Conn] = set()
        self.errors = 0
        self.opened = 0
        self.completed = 0
        # per request sent in the measured window: planned, late, first byte, end (s)
        self.planned: list[float] = []
        self.late: list[float] = []
        self.first: list[float] = []
        self.end: list[float] = []
        self.measure_from = 0
        self.pending: list[tuple[bytes, int]] = []  # sends waiting for a new connection

    async def connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port)
        return conn

    def done(self, conn: _Conn, status: int, first: float, end: float) -> None:
        self.busy.discard(conn)
        self.completed += 1
        i = conn.index
        if status != 200:
            self.errors += 1
        elif i >= 0:
            self.first[i] = first - conn.sent
            self.end[i] = end - conn.sent
        self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.errors += 1
        if conn in self.idle:
            self.idle.remove(conn)

    def _send(self, conn: _Conn, request: bytes, index: int) -> None:
        self.busy.add(conn)
        if index >= 0:
            self.late[index] = time.monotonic() - self.planned[index]
        conn.send(request, index)

    async def _open_and_send(self, request: bytes, index: int) -> None:
        self.opened += 1
        try:
            conn = await self.connect()
        except OSError:
            self.errors += 1
            return
        self._send(conn, request, index)

    async def run(self, warmup: float, seconds: float, connections: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for _ in range(connections):
            self.idle.append(await self.connect())
        rng = random.Random(self.seed)
        start = time.monotonic() + 0.05
        measure_from, stop = start + warmup, start + warmup + seconds
        schedule, at = [], start
        while at < stop:
            schedule.append(at)
            at += rng.expovariate(self.rate)
        measured = [t for t in schedule if t >= measure_from]
        self.planned = measured
        n = len(measured)
        self.late, self.first, self.end = [math.nan] * n, [math.nan] * n, [math.nan] * n
        first_measured = len(schedule) - n
        finished = loop.create_future()
        timer = Timer()
        tasks: set[asyncio.Task[None]] = set()
        pos = 0

        def wake() -> None:
            nonlocal pos
            timer.clear()
            now = time.monotonic()
            while pos < len(schedule) and schedule[pos] <= now:
                request = self.requests[pos % len(self.requests)]
                index = pos - first_measured
                pos += 1
                if self.idle:
                    self._send(self.idle.pop(), request, index)
                else:
                    task = loop.create_task(self._open_and_send(request, index))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            if (not self.cpu and pos > first_measured) or (
                len(self.cpu) == 1 and pos >= len(schedule)
            ):
                self.cpu.append((time.monotonic(), cpu_seconds(self.pids), core_busy(PROXY_CPU)))
            if pos < len(schedule):
                timer.arm(schedule[pos])
            elif not finished.done():
                finished.set_result(None)

        loop.add_reader(timer.fd, wake)
        timer.arm(schedule[0])
        await finished
        loop.remove_reader(timer.fd)
        os.close(timer.fd)
        deadline = time.monotonic() + 10
        while (self.busy or tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.errors += len(self.busy)
        return self.summary(seconds)

    def summary(self, seconds: float) -> dict[str, Any]:
        firsts = [x * 1000 for x in self.first if x == x]
        lates = [x * 1000 for x in self.late if x == x]
        sent_span = (self.planned[-1] - self.planned[0]) if len(self.planned) > 1 else seconds
        cpu = {}
        if len(self.cpu) == 2 and self.pids:
            (t0, c0, b0), (t1, c1, b1) = self.cpu
            cpu = {
                "busy": (c1 - c0) / (t1 - t0),
                "cpu_ms": (c1 - c0) / max(len(lates), 1) * 1000,
                "others": max(0.0, (b1 - b0) - (c1 - c0)) / (t1 - t0),
            }
        return {
            **cpu,
            "requests": len(firsts),
            "planned_rate": self.rate,
            "rate": len(lates) / seconds,  # sent in the measured window
            "span_rate": len(lates) / max(sent_span, 1e-9),
            "errors": self.errors,
            "completed": self.completed,
            "p50": pct(firsts, 0.5),
            "p90": pct(firsts, 0.9),
            "p99": pct(firsts, 0.99),
            "p999": pct(firsts, 0.999),
            "max": max(firsts, default=0.0),
            "end_p50": pct([x * 1000 for x in self.end if x == x], 0.5),
            "late_p50": pct(lates, 0.5),
            "late_p99": pct(lates, 0.99),
            "late_max": max(lates, default=0.0),
            "new_connections": self.opened,
        }


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """utime + stime of *pids* and their threads (``/proc/PID/stat``), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def core_busy(cpu: int) -> float:
    """Seconds core *cpu* was not idle (``/proc/stat``: user to steal)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            fields = [int(x) for x in line.split()[1:9]]
            return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def client_main(args: argparse.Namespace) -> int:
    """``--client PORT PATH RATE``: one run; its summary as JSON on stdout; with
    ``--timeline FILE``, each measured request's (planned, late, first byte) too."""
    import uvloop

    port, path, rate = int(args.client[0]), args.client[1], float(args.client[2])
    cookies = (Path(args.cookies).read_text().split() if args.cookies else []) or [""]
    from personalize import BROWSER

    requests = [
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in BROWSER.items())
            + (f"Cookie: {c}\r\n" if c else "")
            + "\r\n"
        ).encode()
        for c in cookies
    ]
    pids = tuple(int(p) for p in args.pids.split(",")) if args.pids else ()
    client = OpenLoop(port, requests, rate, pids=pids)
    connections = math.ceil(rate * (ORIGIN_DELAY + 0.02) * 1.3) + 8
    summary = uvloop.run(client.run(args.seconds / 4, args.seconds, connections))
    if args.timeline:
        rows = zip(client.planned, client.late, client.first, strict=True)
        Path(args.timeline).write_text(json.dumps([r for r in rows if r[2] == r[2]]))
    print(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------- traced edge


def traced_edge(out: str, argv: list[str]) -> int:
    """``edge`` (argv) with the garbage collector's and the store writer's moments
    recorded: (kind, start, end, detail) rows, CLOCK_MONOTONIC seconds, to *out* at exit."""
    import atexit
    import gc
    import signal

    events: list[tuple[str, float, float, int, float]] = []
    started: list[float] = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = time.monotonic(), time.thread_time()
        else:
            cpu = time.thread_time() - started[1]
            kind = f"gc{info['generation']}"
            events.append((kind, started[0], time.monotonic(), info["collected"], cpu))

    gc.callbacks.append(on_gc)
    from edge.profiles.sqlite import SQLiteStore

    commit = SQLiteStore._commit

    def timed_commit(self: Any, group: list[Any]) -> Any:
        t0, c0 = time.monotonic(), time.thread_time()
        try:
            return commit(self, group)
        finally:
            events.append(("commit", t0, time.monotonic(), len(group), time.thread_time() - c0))

    SQLiteStore._commit = timed_commit  # type: ignore[method-assign]
    if os.environ.get("BENCH_SWITCH_INTERVAL"):  # an A/B of the GIL's switch interval
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    import edge.server

    serve = edge.server.serve

    async def traced_serve(*args: Any, **kwargs: Any) -> Any:
        asyncio.get_running_loop().call_soon(lag_probe, events)
        return await serve(*args, **kwargs)

    edge.server.serve = traced_serve  # type: ignore[assignment]

    def heap(*_: Any) -> None:  # SIGUSR1, sent by bench/goals.py after the timed run
        # The live heap: objects the collector tracks, and one full collection's CPU.
        tracked, c0 = len(gc.get_objects()), time.thread_time()
        gc.collect()
        t = time.monotonic()
        events.append(("heap", t, t, tracked, time.thread_time() - c0))
        events.append(("frozen", t, t, gc.get_freeze_count(), 0.0))

    atexit.register(lambda: Path(out).write_text(json.dumps(events)))
    signal.signal(signal.SIGUSR1, heap)
    from edge.cli import main as edge_main

    return edge_main(argv)


def lag_probe(events: list[tuple[str, float, float, int, float]]) -> None:
    """Every 2 ms on the sidecar's loop: a wake-up more than 1.5 ms late is recorded as a
    ``stall`` (planned, actual, 0, the main thread's run-queue wait meanwhile from
    ``/proc/self/task/TID/schedstat``: time it was runnable but another process had
    the core). Lateness minus that wait is the loop's own: a long callback, a
    collection, or the GIL held by the store's writer thread."""
    loop = asyncio.get_running_loop()
    stat = f"/proc/self/task/{threading.get_native_id()}/schedstat"
    state = [time.monotonic() + 0.002, int(Path(stat).read_text().split()[1])]

    def tick() -> None:
        now = time.monotonic()
        waited = int(Path(stat).read_text().split()[1])
        late = now - state[0]
        if late > 0.0015:
            events.append(("stall", now - late, now, 0, (waited - state[1]) / 1e9))
        state[:] = now + 0.002, waited
        loop.call_later(0.002, tick)

    loop.call_later(0.002, tick)


def slow_timeline(
    client_rows: list[list[float]], events: list[list[Any]], base_ms: float
) -> list[str]:
    """The sidecar's collections, store commits and loop stalls during a run (wall and
    CPU time of the thread that ran them), and what the slow requests (first byte
    later than *base_ms* + SLOW_MS) and the stalls overlapped, as report lines."""
    slow = [
        (p + late, p + late + first)
        for p, late, first in client_rows
        if first * 1000 > base_ms + SLOW_MS
    ]
    lo_t = min((p for p, _, _ in client_rows), default=0.0)
    hi_t = max((p for p, _, _ in client_rows), default=0.0)
    seconds = max(hi_t - lo_t, 1e-9)
    spans: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    lines = []
    for kind, _, _, count, cpu in events:
        if kind == "heap":
            lines.append(
                f"  after the run: {count:,} objects tracked; a full collection {cpu * 1000:.1f} ms CPU"
            )
        elif kind == "frozen":
            lines.append(f"  after the run: {count:,} objects frozen at start-up (gc.freeze)")
    for kind, start, end, _, cpu in events:
        if (
            lo_t <= start <= hi_t and kind not in ("heap", "frozen") and kind[:4] != "big "
        ):  # the measured window
            spans[kind].append((start, end, cpu * 1000))
    stalls = spans.pop("stall", [])
    lines.insert(
        0, f"{len(slow)} of {len(client_rows)} requests > {SLOW_MS:g} ms over the direct p50"
    )
    for kind in sorted(spans):
        wall = sorted((e - s) * 1000 for s, e, _ in spans[kind])
        cpu = sorted(c for _, _, c in spans[kind])
        lines.append(
            f"  {kind}: {len(wall) / seconds:.1f}/s; wall p50 {pct(wall, 0.5):.2f} p99 "
            f"{pct(wall, 0.99):.2f} max {wall[-1]:.1f} ms; its thread's CPU p50 "
            f"{pct(cpu, 0.5):.2f} p99 {pct(cpu, 0.99):.2f} max {cpu[-1]:.1f} ms, "
            f"{sum(cpu) / seconds / 10:.1f}% of a core"
        )

    def over(lo: float, hi: float) -> str:
        """What [lo, hi] overlapped: the first of gc2, gc1, gc0, commit, else "-"."""
        for kind in ("gc2", "gc1", "gc0", "commit"):
            if any(s < hi and e > lo and e - s >= 0.001 for s, e, _ in spans.get(kind, ())):
                return kind
        return "-"

    def shares(items: list[tuple[float, float]]) -> str:
        counts = collections.Counter(over(lo, hi) for lo, hi in items)
        return ", ".join(f"{k} {n / len(items):.0%}" for k, n in counts.most_common())

    if stalls:
        own = sorted(max(0.0, (e - s) * 1000 - w) for s, e, w in stalls)
        queued = sorted(w for _, _, w in stalls)
        mine = [(s, e) for s, e, w in stalls if (e - s) * 1000 - w > 1.0]
        lines.append(
            f"  loop stalls > 1.5 ms: {len(stalls) / seconds:.1f}/s; the loop's own part "
            f"(lateness minus the run-queue wait) p50 {pct(own, 0.5):.2f} p99 {pct(own, 0.99):.2f} "
            f"max {own[-1]:.1f} ms; waiting for the core p50 {pct(queued, 0.5):.2f} max {queued[-1]:.1f} ms"
        )
        if mine:
            lines.append(
                f"  stalls with > 1 ms of their own ({len(mine) / seconds:.1f}/s) overlapped: {shares(mine)}"
            )
    if slow:
        lines.append(
            f"  slow requests overlapped (the first of gc2, gc1, gc0, commit >= 1 ms): {shares(slow)}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--client", nargs=3, metavar=("PORT", "PATH", "RATE"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--cookies")
    parser.add_argument("--timeline")
    parser.add_argument("--pids", help="the sidecar's process ids (comma-separated): its CPU time")
    parser.add_argument("--traced-edge", nargs=argparse.REMAINDER, metavar="FILE ARGS")
    args = parser.parse_args(argv)
    if args.traced_edge:
        return traced_edge(args.traced_edge[0], args.traced_edge[1:])
    if args.client:
        return client_main(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())

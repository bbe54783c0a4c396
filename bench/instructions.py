"""Instructions per request on the request path, counted by callgrind.

    .venv/bin/python bench/instructions.py                       # this tree (~2 min)
    .venv/bin/python bench/instructions.py --compare /work/base  # a base checkout, then this tree
    .venv/bin/python bench/instructions.py --python P --root DIR [--n1 10] [--n2 60]
                                           [--warmup 32] [--layouts 1] [--keep-work]

Wall-clock benchmarks on this shared 2-core VM move 2x between runs; instruction counts
do not, so a refactor's before/after ("no behaviour change") is checked here. The
sidecar is built as ``edge serve`` builds it (``load_config`` from ``EDGE_*`` settings,
``create_app``, its ASGI lifespan) in a process run under ``valgrind --tool=callgrind``,
and answers GET requests given to it as ASGI calls (scope, receive, send: no client
socket, no uvicorn). Its upstream pool speaks HTTP/1.1 over loopback TCP to an asyncio
server in the same process serving fixed snapshots of the demo shop's ``/`` and
``/c/scarpe-donna`` (rendered once per run, ``bench/personalize.py``'s upstream headers):
in the same process, the answer is in the socket when the sidecar next polls, in every
run (from another process it sometimes is not, and the loop turns once more).

Rows, ``bench/personalize.py``'s modes, each sidecar with its own SQLite store:

* ``passthrough``: an empty rules directory, ``track=false``: the bare proxy, the reference;
* ``tracking``: no rules, tracking on, a returning visitor's cookie;
* ``personalized / (replay)``, ``personalized /c/scarpe-donna (replay)``: the repository's
  ``rules/`` and ``snippets/``, the demo catalogue feed, ``avg_order_value=100``, and
  ``bench/personalize.py``'s returning visitor (an order 120 days ago and a bag in the
  cart 3 h ago, sent through ``POST /_edge/ingest``): lapsed hero, timed offer (the cart
  reminder's cap of 10 is spent in the warm-up), profiling form, shelves by interest;
  the 12 products of the category reordered. Steady state: the page was rewritten
  before, so it is replayed;
* ``personalized / (no replay)``: ``replay_cache_bytes=0``: every response rewritten;
* ``personalized / (500 visitors)``, ``personalized /c/scarpe-donna (500 visitors)``:
  issue 19's G1 yardstick. The ``personalized`` sidecar, but 500 returning visitors
  (fixed ids, cookies signed with the bench's secret, none held out; each with the
  visitor's history and their own bag in the cart, sent in batches of 100 as
  ``bench/personalize.py``'s ``500 visitors`` mode does) take turns, one request each,
  across both rows: every request's profile comes from the store (SQLite), not the
  local profile cache. A visitor's turn never comes back sooner than the cache's
  lifetime (``profile_cache_ttl``, 5 s) after their profile was last read or written:
  the clock skips ahead before the row's first request (and would again if a row came
  round to a visitor, which the default sizes never do); the store's reads are counted
  (``edge_store_seconds{op="get"}``) and must be one a measured request. Each visitor
  is on their first page of the day: the cart reminder (theirs), not the timed offer.
  Measured after the rows above (a mode added later goes last: the modes before it,
  and their figures, stay as they were);
* ``personalized / (a new page each time)``: issue 19's G3 yardstick, a ~32 KB page
  that cannot be replayed. The ``personalized`` sidecar and visitor, but the shop puts
  a new token in the head of ``/`` on every response (``<meta name="csrf-token"
  ...>``, as shops do with per-visitor CSRF tokens; no ETag): the replay finds the
  page changed each time, so it is rewritten from scratch, with the replay cache on
  (the default settings), unlike ``no replay``, which turns the cache off.

``--modes goals`` measures only the last two modes (``bench/goals.py`` does);
``--json PATH`` writes the figures for a script to read.

Method: the same load runs in two processes, ``--n1`` and ``--n2`` measured requests a
row after ``--warmup`` requests a row; callgrind dumps its counters at markers around
each row's measured requests (``--dump-before=getppid``: nothing else calls getppid),
and **Ir/request** is ``(Ir(n2) - Ir(n1)) / (n2 - n1)`` of the row's part, so what both
processes share (start-up, imports, warm-up) cancels out. That is every instruction of
the process in user space: Python, C extensions, libc, the store's writer thread. Each
request's write-behind flush is awaited before the next request (every task the
request left has ended), so its cost is in the request that caused it. Every response
is checked (status 200; passthrough and tracking the snapshot byte for byte;
personalized ones ``Cache-Control: private``, hero, banner, form, shelf or product
order, as ``bench/personalize.py`` checks them), and the visitors' stored page views
must count every request: a broken run exits 1 with its problems, not a number.

Repeatable: ``PYTHONHASHSEED=0`` and the same few environment variables; ``random``
seeded; one fixed visitor id signed with the bench's secret; ``time.time``,
``time.monotonic`` and ``time.perf_counter`` replaced, before ``edge`` is imported, by
a virtual clock that starts each sidecar at a fixed instant and moves 1 ms a request
(so the time-based caches, 1 s snippet lookups and the 5 s profile cache, stay warm
through a row, as at 1,000 requests/s; ``Server-Timing`` reads 0); the app's own
timers (the rules watcher polls every second) stopped after start-up: they cost by the
second, and under valgrind a second is a handful of requests; the loop blocked past the
50 ms write-behind delay before it turns again, so it finds the flush's timer due on
its first turn; ``gc.freeze()`` before each measured part, so a full collection does
not cost by where it falls; a GIL switch interval of 30 s, so the writer thread runs
when the loop waits, not after a wall-clock 5 ms; a pause after each sidecar's
shutdown, so its writer thread's last frees do not interleave with the next sidecar's
allocations; every tree reached through the same paths (``bench/.work/instructions/``
``tree`` and ``venv``, links), since a path of another length moves the heap.

How much they vary: run to run (three runs), passthrough and the harness repeat to the
instruction, the other rows within 0.05% (which thread waits for the GIL when the loop
and the writer thread hand over). Moving the heap moves the rows by up to a few tenths
of a percent (CPython's method cache is indexed by the address of the attribute's
name; what glibc's malloc has free decides what an allocation costs, and now and then
it sorts its free lists, ~1M Ir at once), and any code change moves the heap:
``--layouts 3`` runs each tree under three layouts and prints the median and the
spread, the noise floor for a before/after. Figures: bench/README.md.

Not counted: uvicorn (parsing the visitor's request, writing to the visitor's socket) and
the kernel (syscalls, loopback TCP, SQLite's file I/O). In every row: the harness's own
share (building the scope, collecting the messages, waiting for the flush; the
``harness`` line answers a fixed page with no sidecar) and the in-process upstream's
(a find, a split, one write: ~10,000 Ir, what passthrough gained when the upstream
moved into the process).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gc
import json
import logging
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy import ROOT, WORK_ROOT, Procs, log_tail, print_table, run_bench

START = 1_796_191_200.0  # 2026-12-02 06:00 UTC: the virtual clock's first instant
MODE_SPAN = 3600.0  # each sidecar's clock starts this much after the previous one's
STEP = 0.001  # virtual seconds per request
VISITOR_ID = "instructions-visitor-1"  # 22 characters, like a real one
MIX = "500 visitors"
MIX_VISITORS = 500
MIX_ID = "instructions-mix-{:05d}"  # 22 characters too
FRESH = "new page"
FRESH_TOKEN = b'<meta name="csrf-token" content="%016x">'
"""What the upstream adds to ``/`` in the ``new page`` mode, a new value on every response."""
PAGE_FILES = {"/": "home.html", "/c/scarpe-donna": "scarpe-donna.html"}
HARNESS = "harness"
WRITE_BEHIND = 0.06  # s: a little more than the sidecar's 50 ms write-behind delay
SCRIPT = str(Path(__file__).resolve())  # in every process's argv: one length, however run


DECIDE = "/_edge/decide"
"""The browser snippet's decision (edge/browser.py): no page view, its exposures recorded."""


@dataclass(frozen=True)
class Row:
    name: str
    mode: str  # the sidecar's settings (see ``sidecar_env``)
    path: str
    query: str = ""


ROWS = (
    Row("passthrough", "passthrough", "/"),
    Row("tracking", "tracking", "/"),
    Row("personalized / (replay)", "personalized", "/"),
    Row("personalized /c/scarpe-donna (replay)", "personalized", "/c/scarpe-donna"),
    Row("personalized / (500 visitors)", MIX, "/"),
    Row("personalized /c/scarpe-donna (500 visitors)", MIX, "/c/scarpe-donna"),
    Row("/_edge/decide for /", "personalized", DECIDE, "path=%2F"),
    Row("/_edge/decide for /c/scarpe-donna", "personalized", DECIDE, "path=%2Fc%2Fscarpe-donna"),
    Row("personalized / (no replay)", "no replay", "/"),
    Row("personalized / (a new page each time)", FRESH, "/"),
)
MODES = ("passthrough", "tracking", "personalized", "no replay", MIX, FRESH)
"""In this order: a mode added later goes last, so the modes before it (their clock's
start, the heap they find) and their figures stay as they were."""
PERSONALIZED = frozenset(("personalized", "no replay", MIX, FRESH))
GOAL_MODES = (MIX, FRESH)
"""``--modes goals``: the modes of issue 19's G1 and G3 rows (``bench/goals.py``)."""


# --------------------------------------------------------------------------- the clock


class VirtualClock:
    """``time.time``, ``time.monotonic`` and ``time.perf_counter`` that move only when
    :meth:`tick` or :meth:`start` says so. Installed before ``edge`` is imported, so
    the defaults its caches capture (``timer=time.monotonic``) are this clock too."""

    def __init__(self) -> None:
        self.now = 0.0

    def install(self) -> None:
        time.time = lambda: START + self.now
        time.monotonic = time.perf_counter = lambda: 1000.0 + self.now

    def start(self, mode_index: int) -> None:
        """A sidecar's first instant: the same in every process, whatever ran before."""
        self.now = max(self.now, mode_index * MODE_SPAN)

    def tick(self) -> None:
        self.now += STEP

    def skip_to(self, instant: float) -> None:
        """Move on to *instant* (virtual seconds since the first sidecar's start)."""
        self.now = max(self.now, instant)


# --------------------------------------------------------------------------- ASGI calls


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_scope(
    method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> dict[str, Any]:
    """A scope as uvicorn makes it for a request from a browser on this machine."""
    raw = [(b"host", b"127.0.0.1:8000")]
    raw += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
    }


async def call(app: Any, scope: dict[str, Any], body: bytes = b"") -> Answer:
    """One request through *app*; the client never disconnects."""
    messages: list[dict[str, Any]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if asked:
            await asyncio.get_running_loop().create_future()  # the visitor stays
        asked = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    return Answer(
        start["status"],
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])],
        b"".join(m.get("body", b"") for m in messages[1:]),
    )


class Lifespan:
    """Drives an app's ASGI lifespan. After start-up the app's own timer tasks (the
    rules watcher) are stopped: they cost by the second, not by the request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        before = asyncio.all_tasks()
        self.task = asyncio.ensure_future(
            self.app(scope | {"state": {}}, self.inbox.get, self.replies.put)
        )
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await self.replies.get()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"start-up failed: {reply.get('message', reply)}")
        timers = asyncio.all_tasks() - before - {self.task}
        for task in timers:
            task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        reply = await self.replies.get()
        if reply["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"shutdown failed: {reply.get('message', reply)}")
        assert self.task is not None
        await self.task


async def settle(baseline: set[asyncio.Task[Any]]) -> None:
    """Wait for every task a request left behind (the write-behind flush of its events)
    to end, so that its cost lands in that request and nowhere else."""
    me = asyncio.current_task()
    first = True
    while True:
        left = [t for t in asyncio.all_tasks() if t is not me and t not in baseline]
        if not left:
            return
        if first:
            # Once they have taken their first step (the flush sets its timer, on the loop's
            # real clock), block past the flush's delay: the loop then finds the timer due
            # on its next turn, every time (waiting for it in the loop, the wake-up falls
            # before or after the timer's millisecond: one turn more or less).
            asyncio.get_running_loop().call_soon(time.sleep, WRITE_BEHIND)
            first = False
        done, _ = await asyncio.wait(left, timeout=60)
        if not done:
            raise RuntimeError(f"tasks still running 60 s after a request: {left}")


# --------------------------------------------------------------------------- the load


def mark(label: str, markers: list[str]) -> None:
    """Callgrind dumps its counters here (``--dump-before=getppid``)."""
    markers.append(label)
    os.getppid()


@dataclass
class Load:
    """The measured process: every row, *n* measured requests each."""

    n: int
    warmup: int
    root: Path
    work: Path
    """The run's: the pages, the catalogue feed."""
    stores: Path
    """This process's: a directory for each sidecar."""
    clock: VirtualClock
    pages: dict[str, bytes] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seen: dict[str, list[str]] = field(default_factory=dict)

    upstream: str = ""
    modes: tuple[str, ...] = MODES

    def sidecar_env(self, mode: str, store: Path) -> dict[str, str]:
        from personalize import SECRET, TOKEN

        env = {
            "EDGE_UPSTREAM": self.upstream,
            "EDGE_SECRET": SECRET,
            "EDGE_INGEST_TOKEN": TOKEN,
            "EDGE_LOG_LEVEL": "warning",
        }
        if mode in PERSONALIZED:
            env.update(
                EDGE_RULES=str(self.root / "rules"),
                EDGE_SNIPPETS=str(self.root / "snippets"),
                EDGE_CATALOG=str(self.work / "catalog.csv"),
                EDGE_AVG_ORDER_VALUE="100",
            )
            if mode == "no replay":
                env["EDGE_REPLAY_CACHE_BYTES"] = "0"
        else:
            (store / "no-rules").mkdir()
            env.update(EDGE_RULES="no-rules", EDGE_SNIPPETS="no-rules")
            if mode == "passthrough":
                env["EDGE_TRACK"] = "false"
        return env

    async def run(self) -> None:
        from personalize import BROWSER

        for path, name in PAGE_FILES.items():
            self.pages[path] = (self.work / "pages" / name).read_bytes()
        page = self.pages["/"]
        responses = Upstream.responses_for(self.pages)
        loop = asyncio.get_running_loop()
        shop = await loop.create_server(lambda: Upstream(responses), "127.0.0.1", 0)
        self.upstream = f"http://127.0.0.1:{shop.sockets[0].getsockname()[1]}"

        async def harness(scope: dict[str, Any], receive: Any, send: Any) -> None:
            """The page, and nothing else: what the harness itself costs."""
            await receive()
            headers = [(b"content-type", b"text/html; charset=utf-8")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": page})

        await self.rows(harness, [Row(HARNESS, HARNESS, "/")], BROWSER, set())
        for i, mode in enumerate(MODES):
            if mode not in self.modes:
                continue
            if mode == MIX:
                await self.mix(i + 1)
            elif mode == FRESH:
                fresh = await loop.create_server(
                    lambda: FreshUpstream(responses, page), "127.0.0.1", 0
                )
                self.upstream = f"http://127.0.0.1:{fresh.sockets[0].getsockname()[1]}"
                await self.mode(i + 1, mode)
            else:
                await self.mode(i + 1, mode)

    async def mode(self, index: int, mode: str) -> None:
        from personalize import BROWSER, TOKEN, has_history, visitor_cookie, visitor_history

        from edge.app import create_app
        from edge.config import load_config

        self.clock.start(index)
        # Its own directory: the default store (edge-data/profiles.db, SQLite), no edge.toml,
        # and the same relative names in every process (their hashes, their dict slots).
        store = self.stores / mode.replace(" ", "-")
        store.mkdir(parents=True)
        os.chdir(store)
        app = create_app(load_config(environ=self.sidecar_env(mode, store)))
        lifespan = Lifespan(app)
        await lifespan.startup()
        baseline = asyncio.all_tasks()
        headers = dict(BROWSER)
        if mode != "passthrough":
            headers["Cookie"] = visitor_cookie(VISITOR_ID)
        views = 0
        if mode != "passthrough":
            # A returning visitor: a page view stores the profile, the shop sends the rest.
            await self.request(app, "/", headers, baseline)
            views += 1
            if mode in PERSONALIZED:
                body = json.dumps({"events": visitor_history(VISITOR_ID, time.time())}).encode()
                auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
                scope = http_scope("POST", "/_edge/ingest", auth, body)
                answer = await call(app, scope, body)
                await settle(baseline)
                if answer.status != 200:
                    self.problems.append(f"{mode}: POST /_edge/ingest -> {answer.status}")
                elif not has_history(await self.profile(app, headers)):
                    self.problems.append(f"{mode}: the visitor's history is not in the profile")
        rows = [r for r in ROWS if r.mode == mode]
        views += await self.rows(app, rows, headers, baseline)
        if mode != "passthrough":
            counted = sum((await self.profile(app, headers)).get("pageview_days", {}).values())
            if counted != views:
                self.problems.append(f"{mode}: {views} page views, {counted} recorded")
        await lifespan.shutdown()
        # The store's writer thread ends just after: let it, so that its last frees do
        # not interleave with the next sidecar's allocations (the heap's layout decides
        # the cost of some allocations and set lookups to the instruction).
        time.sleep(0.5)

    async def rows(
        self,
        app: Any,
        rows: list[Row],
        headers: dict[str, str],
        baseline: set[asyncio.Task[Any]],
    ) -> int:
        """Warm-up then the measured requests of each row; returns how many were made."""
        made = 0
        for row in rows:
            for _ in range(self.warmup):
                answer = await self.request(app, row.path, headers, baseline, row.query)
                self.check(row, "warm-up", answer)
            gc.collect()
            gc.freeze()
            answers = []
            mark(f"begin {row.name}", self.markers)
            for _ in range(self.n):
                answers.append(await self.request(app, row.path, headers, baseline, row.query))
            mark(f"end {row.name}", self.markers)
            gc.unfreeze()
            for answer in answers:
                self.check(row, "measured", answer)
            if row.path != DECIDE:  # (a decision for the browser is no page view)
                made += self.warmup + self.n
        return made

    async def request(
        self,
        app: Any,
        path: str,
        headers: dict[str, str],
        baseline: set[asyncio.Task[Any]],
        query: str = "",
    ) -> Answer:
        self.clock.tick()
        scope = http_scope("GET", path, headers)
        scope["query_string"] = query.encode()
        answer = await call(app, scope)
        await settle(baseline)
        return answer

    async def profile(self, app: Any, headers: dict[str, str]) -> dict[str, Any]:
        answer = await call(app, http_scope("GET", "/_edge/profile", headers))
        return json.loads(answer.body).get("profile") or {}

    async def mix(self, index: int) -> None:
        """The 500-visitor mix: :data:`MIX_VISITORS` returning visitors (the history of
        ``bench/personalize.py``'s visitor, each with their own bag in the cart, sent in
        batches of 100) take turns, one request each. A visitor's turn comes back no
        sooner than the profile cache's lifetime after anything last touched their
        profile (the clock skips ahead when it must; with the default sizes a row never
        comes back to a visitor), so every request reads its profile from the store
        (SQLite): the store's reads are counted and must be one a measured request."""
        from personalize import BROWSER, SECRET, TOKEN, has_history, visitor_cookie, visitor_history

        from edge.app import create_app
        from edge.config import load_config
        from edge.identity import Identity

        self.clock.start(index)
        store = self.stores / MIX.replace(" ", "-")
        store.mkdir(parents=True)
        os.chdir(store)
        config = load_config(environ=self.sidecar_env(MIX, store))
        app = create_app(config)
        lifespan = Lifespan(app)
        await lifespan.startup()
        baseline = asyncio.all_tasks()
        ids = mix_visitors()
        now = time.time()
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        for at in range(0, len(ids), 100):
            events = [
                e
                for k in range(at, min(len(ids), at + 100))
                for e in visitor_history(ids[k], now, k)
            ]
            body = json.dumps({"events": events}).encode()
            answer = await call(app, http_scope("POST", "/_edge/ingest", auth, body), body)
            await settle(baseline)
            if answer.status != 200:
                self.problems.append(f"{MIX}: POST /_edge/ingest -> {answer.status}")
        identity = Identity([SECRET])
        visitors = [MixVisitor({**BROWSER, "Cookie": visitor_cookie(v, identity)}) for v in ids]
        for v in (visitors[0], visitors[-1]):
            if not has_history(await self.profile(app, v.headers)):
                self.problems.append(f"{MIX}: a visitor's history is not in the profile")
        touched = self.clock.now
        for v in visitors:
            v.touched = touched
        rows = [r for r in ROWS if r.mode == MIX]
        await self.mix_rows(app, rows, visitors, config.profile_cache_ttl, baseline)
        for v in visitors:
            if v.views:
                counted = sum(
                    (await self.profile(app, v.headers)).get("pageview_days", {}).values()
                )
                if counted != v.views:
                    self.problems.append(f"{MIX}: {v.views} page views, {counted} recorded")
                    break
        await lifespan.shutdown()
        time.sleep(0.5)

    async def mix_rows(
        self,
        app: Any,
        rows: list[Row],
        visitors: list[MixVisitor],
        ttl: float,
        baseline: set[asyncio.Task[Any]],
    ) -> None:
        """Warm-up then measured requests of each row, the visitors taking turns across
        the rows; each measured request must read one profile from the store."""
        turn = 0

        async def one(row: Row) -> Answer:
            nonlocal turn
            v = visitors[turn % len(visitors)]
            turn += 1
            self.clock.skip_to(v.touched + ttl + 0.5)  # past the cache entry's lifetime
            answer = await self.request(app, row.path, v.headers, baseline)
            v.touched = self.clock.now
            v.views += 1
            return answer

        for row in rows:
            for _ in range(self.warmup):
                self.check(row, "warm-up", await one(row))
            gc.collect()
            gc.freeze()
            answers = []
            loads = store_reads()
            mark(f"begin {row.name}", self.markers)
            for _ in range(self.n):
                answers.append(await one(row))
            mark(f"end {row.name}", self.markers)
            loads = store_reads() - loads
            gc.unfreeze()
            for answer in answers:
                self.check(row, "measured", answer)
            if loads != self.n:
                self.problems.append(
                    f"{row.name}: {loads} profile reads from the store for {self.n} requests"
                )
            self.seen.setdefault(row.name, []).append(f"{loads} store reads in {self.n} requests")

    def check(self, row: Row, when: str, answer: Answer) -> None:
        from personalize import check_response

        if row.path == DECIDE:
            self.check_decide(row, when, answer)
            return
        personalized = row.mode in PERSONALIZED
        if row.mode == FRESH and FRESH_TOKEN.split(b"%")[0] not in answer.body:
            self.problems.append(f"{row.name} ({when}): the shop's token is not in the page")
        problems, seen = check_response(
            personalized, row.path, answer.status, answer.headers, answer.body, self.pages[row.path]
        )
        self.problems += [f"{row.name} ({when}): {p}" for p in problems[:3]]
        if seen:
            self.seen[row.name] = seen

    def check_decide(self, row: Row, when: str, answer: Answer) -> None:
        """The decision for the browser carries the visitor's blocks (home) or order."""
        want = "hero-lapsed" if row.query == "path=%2F" else "order-by-interest"
        try:
            edits = [e["placement"] for e in json.loads(answer.body)["edits"]]
        except (ValueError, KeyError, TypeError):
            edits = []
        if answer.status != 200 or want not in edits:
            self.problems.append(f"{row.name} ({when}): {answer.status}, edits {edits}")
        else:
            self.seen[row.name] = edits


@dataclass
class MixVisitor:
    """One of the mix's visitors: what they send, when their profile was last read or
    written (virtual seconds), and their page views so far."""

    headers: dict[str, str]
    touched: float = 0.0
    views: int = 0


def mix_visitors() -> list[str]:
    """The mix's visitor ids: fixed, none held out of a placement by the rules."""
    from personalize import held_out

    ids: list[str] = []
    i = 0
    while len(ids) < MIX_VISITORS:
        candidate = MIX_ID.format(i)
        i += 1
        if not held_out(candidate):
            ids.append(candidate)
    return ids


def store_reads() -> int:
    """Profile reads from the store so far (the ``get`` calls the guarded store tells
    ``edge_store_seconds`` about; reads the profile cache answers are not)."""
    from edge import metrics

    timing = metrics._store_timings.get("get")
    return sum(timing.counts) if timing is not None else 0


def shift_heap(layout: int) -> list[bytes]:
    """Heap layout *layout* (0: none): blocks of every size up to 40 KB (pymalloc's and
    malloc's), every other one freed again, before ``edge`` is imported; what comes
    after lands at other addresses and finds other holes in malloc's free lists."""
    kept = []
    for i in range(499 * layout):
        for size in (i % 480, (i * 613) % 40_000):
            block = b"x" * size
            if i % 2:
                kept.append(block)
    return kept


def run_load(args: argparse.Namespace) -> int:
    """``--load N``: the process callgrind counts."""
    clock = VirtualClock()
    clock.install()
    random.seed(0)
    sys.setswitchinterval(30.0)
    padding = shift_heap(args.layout)
    root = Path(args.root).absolute()  # the link, not what it points to
    sys.path.insert(0, str(root))
    import edge

    if not Path(edge.__file__).is_relative_to(root):
        raise SystemExit(f"edge imported from {edge.__file__}, not from {root}")
    import uvloop

    logging.basicConfig(level="WARNING", stream=sys.stderr)
    load = Load(args.load, args.warmup, root, Path(args.work), Path(args.stores), clock)
    load.modes = args.modes
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(load.run())
    report = {"markers": load.markers, "problems": load.problems, "seen": load.seen}
    Path(args.report).write_text(json.dumps(report))
    del padding
    return 0


# --------------------------------------------------------------------------- the upstream


def snapshot(args: argparse.Namespace) -> int:
    """``--snapshot``: the demo shop's pages, rendered once into the work dir (the
    upstream's bytes for every process of the run), and the catalogue feed."""
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    from personalize import BROWSER

    from edge.demo.catalog import write_feed
    from edge.demo.shop import create_app

    work = Path(args.work)
    write_feed(work / "catalog.csv")
    (work / "pages").mkdir()
    shop = create_app()
    for path, name in PAGE_FILES.items():
        answer = asyncio.run(call(shop, http_scope("GET", path, {"Accept": BROWSER["Accept"]})))
        if answer.status != 200:
            raise SystemExit(f"demo shop: GET {path} -> {answer.status}")
        (work / "pages" / name).write_bytes(answer.body)
    return 0


class Upstream(asyncio.Protocol):
    """The shop: answers ``GET path`` with its snapshot, keep-alive HTTP/1.1, in one
    write. In the measured process, so that when its answer arrives does not depend
    on another process's timing; its share (a find, a split, a write) is in every row."""

    def __init__(self, responses: dict[bytes, bytes]) -> None:
        self.responses = responses
        self.buffer = b""
        self.transport: Any = None

    @staticmethod
    def responses_for(pages: dict[str, bytes]) -> dict[bytes, bytes]:
        from personalize import UPSTREAM_HEADERS

        out = {}
        for path, page in pages.items():
            head = {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Length": str(len(page)),
                "ETag": f'"{len(page):x}-snapshot"',
                **UPSTREAM_HEADERS,
            }
            lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
            out[path.encode()] = f"HTTP/1.1 200 OK\r\n{lines}\r\n".encode() + page
        return out

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # The whole answer in the socket at once (not 16 KB now, the rest when writable).
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:  # GETs: no bodies
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1]
            self.transport.write(self.responses.get(target, NOT_FOUND))


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class FreshUpstream(Upstream):
    """The ``new page`` mode's shop: ``/`` carries a new token in its head on every
    response (as a shop that puts a per-visitor CSRF token in every page), so no
    response is the page of the one before: it cannot be replayed."""

    def __init__(self, responses: dict[bytes, bytes], page: bytes) -> None:
        from personalize import UPSTREAM_HEADERS

        super().__init__(responses)
        head = {  # no ETag: the page is new every time
            "Content-Type": "text/html; charset=utf-8",
            "Content-Length": str(len(page) + len(FRESH_TOKEN % 0)),
            **UPSTREAM_HEADERS,
        }
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        marker = page.index(b"<head>") + len(b"<head>")
        self.before = f"HTTP/1.1 200 OK\r\n{lines}\r\n".encode() + page[:marker]
        self.after = page[marker:]
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1]
            if target == b"/":
                self.count += 1
                self.transport.write(self.before + FRESH_TOKEN % self.count + self.after)
            else:
                self.transport.write(self.responses.get(target, NOT_FOUND))


# --------------------------------------------------------------------------- the driver


@dataclass
class Target:
    """A tree to measure (a checkout and its Python)."""

    label: str
    python: Path
    root: Path
    counts: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)
    """(layout, n) -> row -> Ir of its measured part."""
    problems: list[str] = field(default_factory=list)
    seen: dict[str, list[str]] = field(default_factory=dict)

    def per_request(self, row: str, n1: int, n2: int, layouts: int) -> list[float]:
        """Ir/request of *row* under each layout (empty if a run failed)."""
        keys = [((k, n1), (k, n2)) for k in range(layouts)]
        if self.problems or any(a not in self.counts or b not in self.counts for a, b in keys):
            return []
        return [(self.counts[b][row] - self.counts[a][row]) / (n2 - n1) for a, b in keys]


@dataclass
class Job:
    """One process under callgrind: *target*'s tree, *n* measured requests a row, the
    heap shifted by *layout*."""

    target: Target
    n: int
    layout: int
    proc: subprocess.Popen[bytes] | None = None
    out: Path = Path()
    log: Path = Path()
    report: Path = Path()


def dump_totals(out: Path) -> list[int]:
    """Ir of each part callgrind dumped (``out.1``, ``out.2``, ...; ``out`` is the last)."""
    numbered = out.parent.glob(out.name + ".*")
    parts = [*sorted(numbered, key=lambda p: int(p.name.rsplit(".", 1)[1])), out]
    totals = []
    for part in parts:
        m = re.search(r"^(?:totals|summary): *(\d+)", part.read_text(errors="replace"), re.M)
        if m is None:
            raise RuntimeError(f"{part}: no totals line")
        totals.append(int(m.group(1)))
    return totals


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Procs()
        # One fixed directory (one run at a time): every path a measured process sees is
        # the same in every run and for every tree. A path one character longer, or
        # other characters that hash elsewhere, moves the heap, and the heap's layout
        # moves the counts (CPython's method cache is indexed by the address of the
        # attribute's name; glibc's malloc cost depends on what it has free).
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        self._lock = (WORK_ROOT / "instructions.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit("bench/instructions.py: another run is in progress") from None
        self.work = WORK_ROOT / "instructions"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir()
        self.targets = [Target("this tree", Path(args.python), Path(args.root))]
        if args.compare:
            base_root = Path(args.compare)
            base_python = Path(args.base_python or base_root / ".venv" / "bin" / "python")
            self.targets = [Target("base", base_python, base_root), self.targets[0]]
            self.targets[1].label = "new"

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def env(self) -> dict[str, str]:
        """The same few variables for every process (no EDGE_* from the caller's shell);
        nothing written into the trees (the base checkout stays as it is)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def link(self, t: Target) -> tuple[Path, Path]:
        """(python, root) for *t* through ``work/venv`` and ``work/tree``: the same
        paths whichever tree is measured."""
        tree = self.work / "tree"
        tree.unlink(missing_ok=True)
        tree.symlink_to(t.root.absolute(), target_is_directory=True)
        python = t.python.absolute()
        if (python.parent.parent / "pyvenv.cfg").exists():  # a venv: its prefix is the link
            venv = self.work / "venv"
            venv.unlink(missing_ok=True)
            venv.symlink_to(python.parent.parent, target_is_directory=True)
            python = venv / "bin" / python.name
        return python, tree

    def snapshot(self) -> None:
        """The demo shop's pages, rendered by the (new) tree measured last."""
        python, root = self.link(self.targets[-1])
        argv = [str(python), SCRIPT, "--snapshot", "--root", str(root), "--work", str(self.work)]
        log = self.work / "snapshot.log"
        if self.procs.start(argv, log, env=self.env()).wait(120) != 0:
            raise RuntimeError(f"rendering the demo shop's pages failed: {log_tail(log)}")

    def run(self) -> int:
        a = self.args
        if shutil.which("valgrind") is None:
            self.log("bench/instructions.py: valgrind not found (apt-get install -y valgrind)")
            return 2
        for t in self.targets:
            if not t.python.exists() or not (t.root / "edge").is_dir():
                self.log(f"bench/instructions.py: no {t.python} or no {t.root}/edge")
                return 2
        self.log(f"work dir: {self.work}")
        self.snapshot()
        started = time.monotonic()
        for t in self.targets:  # one tree after the other, each through the same links
            python, root = self.link(t)
            jobs = [Job(t, n, k) for k in range(a.layouts) for n in (a.n1, a.n2)]
            running: list[Job] = []
            while jobs or running:
                while jobs and len(running) < a.jobs:
                    job = jobs.pop(0)
                    self.start_load(job, python, root)
                    running.append(job)
                time.sleep(0.5)
                for job in [j for j in running if j.proc is not None and j.proc.poll() is not None]:
                    running.remove(job)
                    self.collect(job)
        self.log(f"done in {time.monotonic() - started:.0f} s")
        self.report()
        return 1 if any(t.problems for t in self.targets) else 0

    def start_load(self, job: Job, python: Path, root: Path) -> None:
        t = job.target
        tag = f"{job.layout}-{job.n:05d}"  # the same length for every process
        job.out = self.work / f"callgrind-{tag}.out"
        job.log = self.work / f"load-{tag}.log"
        job.report = self.work / f"load-{tag}.json"
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--dump-before=getppid",
            f"--callgrind-out-file={job.out}",
            *(str(python), SCRIPT, "--load", f"{job.n:05d}"),
            *("--warmup", f"{self.args.warmup:05d}", "--layout", str(job.layout)),
            *("--root", str(root), "--work", str(self.work)),
            *("--stores", str(self.work / f"stores-{tag}"), "--report", str(job.report)),
        ]
        if self.args.modes != MODES:  # (only then: the argv's length moves the heap)
            argv += ["--modes", ",".join(m.replace(" ", "-") for m in self.args.modes)]
        layout = f", layout {job.layout}" if self.args.layouts > 1 else ""
        self.log(
            f"-- {t.label} ({t.root}): {job.n} measured requests a row{layout}, under callgrind"
        )
        job.proc = self.procs.start(argv, job.log, env=self.env())

    def collect(self, job: Job) -> None:
        """Read a finished process's counts; its files go to ``work/<tree label>/``."""
        t, proc = job.target, job.proc
        assert proc is not None
        where = f"n={job.n}" + (f" layout {job.layout}" if self.args.layouts > 1 else "")
        kept = self.work / t.label.replace(" ", "-")
        kept.mkdir(exist_ok=True)
        try:
            if proc.returncode != 0 or not job.report.exists():
                t.problems.append(f"{where}: exit {proc.returncode}: {log_tail(job.log, 15)}")
                return
            report = json.loads(job.report.read_text())
            t.problems += [f"{where}: {x}" for x in report["problems"]]
            t.seen.update(report["seen"])
            totals = dump_totals(job.out)
            markers = report["markers"]
            if len(totals) != len(markers) + 1:
                t.problems.append(
                    f"{where}: {len(totals)} callgrind parts for {len(markers)} markers "
                    "(something else called getppid?)"
                )
                return
            t.counts[(job.layout, job.n)] = {
                label.removeprefix("end "): totals[i]
                for i, label in enumerate(markers)
                if label.startswith("end ")
            }
            self.log(f"   {t.label} {where}: done")
        finally:
            for path in self.work.glob(f"*-{job.layout}-{job.n:05d}*"):
                path.rename(kept / path.name)

    def report(self) -> None:
        a = self.args
        print()
        print(
            f"Instructions per request: callgrind's Ir, (Ir(n={a.n2}) - Ir(n={a.n1})) / "
            f"{a.n2 - a.n1}; ASGI calls into the app, its upstream over loopback HTTP/1.1"
        )
        if a.layouts > 1:
            print(
                f"Each figure the median of {a.layouts} heap layouts; spread: (max - min) / "
                "median over them, the noise a code change brings by moving the heap."
            )
        print()
        names = [r.name for r in ROWS if r.mode in a.modes]
        per = {
            t.label: {r: t.per_request(r, a.n1, a.n2, a.layouts) for r in [*names, HARNESS]}
            for t in self.targets
        }

        def mid(label: str, row: str) -> float | None:
            values = per[label][row]
            return statistics.median(values) if values else None

        def ir(v: float | None) -> str:
            return f"{v:,.0f}" if v is not None else "n/a"

        def ratio(v: float | None, ref: float | None, digits: int = 2) -> str:
            return f"{v / ref:.{digits}f}" if v is not None and ref else ""

        def spread(label: str, row: str) -> str:
            values = per[label][row]
            return (
                f"{(max(values) - min(values)) / statistics.median(values):.2%}" if values else ""
            )

        hdr = ["row"]
        for t in self.targets:
            prefix = f"{t.label} " if len(self.targets) > 1 else ""
            hdr += [f"{prefix}Ir/req", f"{prefix}x pt"]
            if a.layouts > 1:
                hdr.append(f"{prefix}spread")
        if len(self.targets) > 1:
            hdr.append("new/base")
        rows = []
        for r in names:
            cells = [r]
            for t in self.targets:
                cells += [ir(mid(t.label, r)), ratio(mid(t.label, r), mid(t.label, "passthrough"))]
                if a.layouts > 1:
                    cells.append(spread(t.label, r))
            if len(self.targets) > 1:
                base, new = self.targets
                cells.append(ratio(mid(new.label, r), mid(base.label, r), 4))
            rows.append(cells)
        print_table(hdr, rows, right=set(range(1, len(hdr))))
        harness = ", ".join(f"{t.label} {ir(mid(t.label, HARNESS))}" for t in self.targets)
        print(
            f"(x pt: over passthrough. harness: a fixed page answered with no sidecar, {harness}\n"
            " Ir/request; it is in every row, as is the in-process upstream's share, ~10,000.)"
        )
        for t in self.targets:
            for row, seen in t.seen.items():
                if row in names and row.startswith("personalized"):
                    print(f"  {t.label} {row}: {', '.join(seen)}")
        print()
        problems = [f"{t.label}: {p}" for t in self.targets for p in t.problems]
        print("Correctness: " + ("OK" if not problems else "FAILED"))
        for p in problems:
            print(f"  PROBLEM: {p}")
        if a.json:
            figures = {
                t.label: {r: mid(t.label, r) for r in [*names, HARNESS]} for t in self.targets
            }
            out = {"ir_per_request": figures, "problems": problems}
            Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


def parse_modes(text: str) -> tuple[str, ...]:
    """``--modes``: 'all', 'goals' or mode names (``-`` for a space), in MODES' order."""
    if text == "all":
        return MODES
    if text == "goals":
        return GOAL_MODES
    names = {m.replace(" ", "-"): m for m in MODES}
    asked = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in asked if w not in names]
    if unknown or not asked:
        raise ValueError(
            f"--modes: unknown {', '.join(unknown) or '(none)'}; know {', '.join(names)}"
        )
    return tuple(m for m in MODES if m.replace(" ", "-") in asked)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--python", default=sys.executable, help="the tree's Python (default: this one)"
    )
    parser.add_argument("--root", default=str(ROOT), help=f"the tree to measure (default {ROOT})")
    parser.add_argument(
        "--compare",
        metavar="BASE_ROOT",
        help="measure the checkout BASE_ROOT first, then the tree, and print them side by side",
    )
    parser.add_argument(
        "--base-python", help="BASE_ROOT's Python (default BASE_ROOT/.venv/bin/python)"
    )
    parser.add_argument(
        "--n1", type=int, default=10, help="measured requests a row, first process (default 10)"
    )
    parser.add_argument("--n2", type=int, default=60, help="... second process (default 60)")
    parser.add_argument(
        "--warmup", type=int, default=32, help="warm-up requests a row (default 32)"
    )
    parser.add_argument(
        "--layouts",
        type=int,
        default=1,
        help="measure each tree under this many heap layouts and print the median and the "
        "spread (default 1; 3 to tell a change from layout noise, 3x the time)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes under valgrind at once (2)")
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep bench/.work/instructions (callgrind's files, logs) after the run",
    )
    parser.add_argument(
        "--modes",
        default="all",
        help="the sidecars to measure, comma-separated: "
        f"{', '.join(m.replace(' ', '-') for m in MODES)}; 'goals' for issue 19's G1 and G3 "
        "rows (500-visitors,new-page); default all. The harness row is always measured. "
        "A subset runs in another heap: its figures can differ from the full run's by a few "
        "tenths of a percent",
    )
    parser.add_argument("--json", help="also write the Ir/request figures as JSON to this path")
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layout", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--stores", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.modes = parse_modes(args.modes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.load is not None:
        return run_load(args)
    if args.snapshot:
        return snapshot(args)
    if not 0 <= args.n1 < args.n2:
        parser.error("need 0 <= --n1 < --n2")
    if args.layouts < 1:
        parser.error("need --layouts >= 1")
    return run_bench(Bench(args), args.keep_work)


if __name__ == "__main__":
    sys.exit(main())

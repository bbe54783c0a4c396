"""What deciding one page costs, in process: warm, after a page view, and after idling.

    .venv/bin/python bench/decide.py [--requests 1000]

The sidecar's head waits for :meth:`edge.decide.Decider.decide` (the ETag and
``Cache-Control`` depend on it), so its time is both CPU per personalized request and
part of the time to first byte. This measures it without sockets, wrk or uvicorn:

* the app is built as ``edge serve`` builds it (``create_app``), with the repository's
  ``rules/`` and ``snippets/``, the demo catalogue feed and ``EDGE_AVG_ORDER_VALUE=100``,
  and its own SQLite store in a temporary directory;
* the visitor is ``bench/personalize.py``'s: lapsed, a bag in the cart, not a known
  customer, so on ``/`` four placements apply (hero, cart reminder, profiling form,
  shelves by interest) and on ``/c/scarpe-donna`` the product order;
* **same profile**: decisions back to back for the same cached profile;
* **next page**: before each decision the previous page view and its exposures are
  recorded and written (``Responder.record`` + ``flush``), as a real visitor's next page
  finds it: a new profile object, and the writer's work just done on the same core;
* **after N ms idle**: *next page*, then a sleep before the decision, as the TTFB
  benchmark's paced requests (0-50 ms apart) find the process;
* **cookie HMAC** rows time the visitor cookie's signature check (the HMAC itself, not
  the sidecar's memo of checked cookies) the same ways: a few microseconds, mostly C, that
  no design change touches, to tell the machine's cold-cache penalty from the
  decision's own work.

The process is pinned to one core. p50 and p90 in microseconds; **x warm** is the p50
over the same-profile row's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from personalize import BROWSER, SECRET, TOKEN, visitor_history

from edge.app import EdgeApp, create_app
from edge.config import load_config
from edge.decide import Decision
from edge.demo.catalog import write_feed
from edge.ingest import _decode_batch
from edge.profiles import events as ev
from edge.request import RequestHead

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("/", "/c/scarpe-donna")
IDLE_MS = (1, 10, 50)


def scope_for(path: str, cookie: str = "") -> dict[str, Any]:
    headers = [(k.lower().encode(), v.encode()) for k, v in BROWSER.items()]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


def build(work: Path) -> EdgeApp:
    os.chdir(work)  # its edge-data/ store
    env = {
        "EDGE_SECRET": SECRET,
        "EDGE_INGEST_TOKEN": TOKEN,
        "EDGE_RULES": str(ROOT / "rules"),
        "EDGE_SNIPPETS": str(ROOT / "snippets"),
        "EDGE_CATALOG": str(write_feed(work / "catalog.csv")),
        "EDGE_AVG_ORDER_VALUE": "100",
        "EDGE_UPSTREAM": "http://127.0.0.1:9",  # never asked: nothing is proxied here
    }
    return create_app(load_config(environ=env))


def page_view(app: EdgeApp, scope: dict[str, Any], decision: Decision | None = None) -> str:
    """Record a page view as the sidecar does once the response is out (with the
    placements *decision* showed); the visitor's cookie."""
    exchange, _personalize = app.respond.visit(RequestHead.parse(scope))
    exchange.status, exchange.content_type = 200, b"text/html"
    if decision is not None:
        exchange.decision = decision
        exchange.applied = [e.placement for e in decision.edits]
    visit = exchange.visit
    assert visit.visitor_id is not None
    app.respond.record(exchange)
    return app.visitors.cookie_header(visit)[1].decode().split(";", 1)[0]


async def returning_visitor(app: EdgeApp) -> str:
    """A visitor's cookie whose profile is stored with the benchmark's history."""
    cookie = page_view(app, scope_for("/"))
    page_view(app, scope_for("/", cookie))
    await app.recorder.flush()
    visit_id = cookie.removeprefix("edge_vid=").split(".")[0]
    history = json.dumps({"events": visitor_history(visit_id, time.time())})
    await app.profiles.record(None, _decode_batch(history.encode()).events, ev.Source.SHOP)
    return cookie


Step = Callable[[], Awaitable[None]]


async def timed(step: Step, before: Step | None, idle: float, n: int) -> list[float]:
    times = []
    for _ in range(n):
        if before is not None:
            await before()
        if idle:
            time.sleep(idle)  # the whole process idles, the loop included, as between requests
        started = time.perf_counter()
        await step()
        times.append((time.perf_counter() - started) * 1e6)
    return times


class PageViews:
    """One visitor's decisions on one page, and the page views that follow them."""

    def __init__(self, app: EdgeApp, path: str, cookie: str) -> None:
        self.app = app
        self.scope = scope_for(path, cookie)
        self.last: Decision | None = None

    async def decide(self) -> None:
        head = RequestHead.parse(self.scope)
        exchange, _personalize = self.app.respond.visit(head)
        self.last = await self.app.decider.decide(
            head, exchange.visit, exchange.page, exchange.touch
        )

    async def page_view(self) -> None:
        """What the sidecar does after the response: the view and what it showed,
        queued and written."""
        page_view(self.app, self.scope, self.last)
        await self.app.recorder.flush()


def idle_count(n: int, ms: int) -> int:
    """Fewer decisions after longer pauses: about four seconds a row."""
    return max(50, min(n, int(4000 / ms)))


async def run(app: EdgeApp, n: int) -> list[tuple[str, str, list[float]]]:
    cookie = await returning_visitor(app)
    rows: list[tuple[str, str, list[float]]] = []
    for path in PAGES:
        page = PageViews(app, path, cookie)
        await page.decide()
        if page.last is None or not page.last.edits:
            raise SystemExit(f"bench/decide.py: nothing personalized on {path}")
        shown = ", ".join(e.placement for e in page.last.edits if e.placement)
        print(f"{path}: {shown}", file=sys.stderr, flush=True)
        rows.append((path, "same profile", await timed(page.decide, None, 0.0, n)))
        rows.append((path, "next page", await timed(page.decide, page.page_view, 0.0, n)))
        for ms in IDLE_MS:
            times = await timed(page.decide, page.page_view, ms / 1000, idle_count(n, ms))
            rows.append((path, f"next page, {ms} ms idle", times))

    signed = cookie.split("=", 1)[1]

    async def check_cookie() -> None:
        assert app.identity._verify(signed)  # the HMAC itself, not the memo of checked cookies

    rows.append(("", "cookie HMAC", await timed(check_cookie, None, 0.0, n)))
    for ms in IDLE_MS:
        times = await timed(check_cookie, None, ms / 1000, idle_count(n, ms))
        rows.append(("", f"cookie HMAC, {ms} ms idle", times))
    await app.store.close()
    return rows


def report(rows: list[tuple[str, str, list[float]]]) -> None:
    print("decide() in process, one core: a returning visitor (lapsed, cart, unknown)")
    print(f"{'page':<16} {'case':<26} {'n':>5} {'p50 us':>8} {'p90 us':>8} {'x warm':>7}")
    warm: dict[str, float] = {}
    for page, case, times in rows:
        times.sort()
        p50 = statistics.median(times)
        p90 = times[int(len(times) * 0.9)]
        warm.setdefault(page, p50)
        print(
            f"{page or '(cookie)':<16} {case:<26} {len(times):>5} {p50:>8.1f} {p90:>8.1f}"
            f" {p50 / warm[page]:>6.1f}x"
        )
    print(
        "(next page: the previous view and its exposures written first, as a visitor's next\n"
        " page finds the profile; idle: a sleep before each, as paced requests find the core.)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=1000, help="decisions per row")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory(prefix="edge-decide-") as work:
        rows = asyncio.run(run(build(Path(work)), args.requests))
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

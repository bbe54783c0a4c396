"""The browser snippet in Chromium: from DOMContentLoaded to the slots applied.

    .venv/bin/python bench/snippet.py [--loads 20] [--warmup 3] [--designs early,defer]

The goal (issue 17): on loopback, the slots are applied at most 50 ms after
DOMContentLoaded at p50, /_edge/decide answered in the same page load. The demo shop
under uvicorn, ``edge serve`` in front of it with the repository's rules and snippets,
the demo catalogue and ``EDGE_BROWSER_PAGES=home,category`` (the pages relayed with the
snippet's script tag, personalized in the browser); a lapsed customer (an order four
months ago, sent by ``POST /_edge/ingest``) loads each page ``--loads`` times in Debian's
Chromium (Playwright, headless, a warm HTTP cache: the snippet is immutable).

Designs, measured in the same run, their loads interleaved (every page of every design
goes through the same Playwright route, the page's HTML changed as the design says):
**early** the tag as the sidecar injects it (not deferred: the snippet asks once the
listed slots are parsed, with their items' ids, and fills each slot as soon as it is
parsed); **head** the same, asking at once from the head, without the ids
(``shopEdgeConfig.ask = "head"``); **defer** the tag ``defer`` (issue 17's first
snippet: asked just before DOMContentLoaded); **preload** ``defer`` plus a ``<link
rel="preload" as="fetch" crossorigin href="/_edge/decide?path=...">`` first in the head
(the snippet fetches that very URL, without ids).

Per load, from the page's own timing: **DCL -> applied** = the snippet's
``performance.mark("shop-edge:applied")`` minus the navigation's
``domContentLoadedEventStart`` (negative: applied before DOMContentLoaded); **decide**
= the /_edge/decide fetch (resource timing, request start to response end); **asked**
= its start minus DOMContentLoaded; **fetches** the most /_edge/decide requests of a
load (1: a preload was used);
**nav -> applied** = the mark's time from the navigation start. A load whose decision
came after the cap (``shop-edge:cap``, the original shown) is counted in **capped**.
Also printed: the snippet's size as served (rjsmin; gzip -9, brotli 11), goal <= 6 KB
gzipped. Not a test: nothing is asserted, the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import BrowserContext, Page, Route, sync_playwright  # noqa: E402

from edge.browser import ASSET  # noqa: E402
from edge.demo.catalog import write_feed  # noqa: E402
from edge.demo.shop import serve_argv  # noqa: E402
from edge.placements import in_holdout  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TOKEN = "bench-snippet-ingest-token"
PAGES = ("/", "/c/scarpe-donna")
TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const mark = (name) => (performance.getEntriesByName(name)[0] || {}).startTime;
  const decides = performance.getEntriesByType("resource")
    .filter((e) => e.name.includes("/_edge/decide"));
  const decide = decides[0];
  return {dcl: nav.domContentLoadedEventStart, applied: mark("shop-edge:applied"),
          cap: mark("shop-edge:cap"), fetches: decides.length,
          asked: decide ? decide.startTime - nav.domContentLoadedEventStart : null,
          decide: decide ? decide.responseEnd - decide.requestStart : null};
}"""
TAG = re.compile(r'<script (?:nonce="[^"]*" )?src="/_edge/edge\.[0-9a-f]+\.js"[^>]*>')
DESIGNS = ("early", "head", "defer", "preload")


def redesign(html: str, path: str, design: str) -> str:
    """The page as *design* has it (the sidecar serves the *early* one)."""
    tag = TAG.search(html)
    if tag is None:
        sys.exit(f"bench/snippet.py: no snippet tag in the page {path}")
    if design in ("defer", "preload"):
        html = html.replace(tag.group(0), tag.group(0)[:-1] + " defer>", 1)
    if design == "preload":
        href = "/_edge/decide?path=" + urllib.parse.quote(path, safe="")
        link = f'<link rel="preload" as="fetch" crossorigin href="{href}">'
        html = html.replace("<head>", "<head>" + link, 1)
    if design == "head":
        config = '<script>window.shopEdgeConfig = {ask: "head"};</script>'
        html = html.replace("<head>", "<head>" + config, 1)
    return html


def routed(context: BrowserContext, base: str, design: list[str]) -> None:
    """The bench's pages as the design of the moment (``design[0]``) has them."""

    def handle(route: Route) -> None:
        reply = route.fetch()
        path = route.request.url.removeprefix(base)
        route.fulfill(response=reply, body=redesign(reply.text(), path, design[0]))

    for path in PAGES:  # only these: a routed request waits for this process
        context.route(base + path, handle)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench/snippet.py: a server exited ({proc.returncode}) before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench/snippet.py: nothing listens on 127.0.0.1:{port} after {timeout} s")


def http(port: int, path: str, body: dict[str, object] | None = None, **headers: str) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, headers)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return bytes(reply.read())


def lapsed_cookie(port: int) -> str:
    """A visitor cookie from a first decision (one outside the lapsed hero's 10%
    holdout), then the shop's order four months ago."""
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/_edge/decide?path=%2F")
        with urllib.request.urlopen(request, timeout=10) as reply:
            cookie = reply.headers["set-cookie"].split(";")[0]
        visitor = cookie.removeprefix("edge_vid=").split(".")[0]
        if not in_holdout(f"cust:customer-{visitor}", "hero-lapsed", 0.1):
            break
    event = {
        "event": "Order Completed",
        "anonymous_id": visitor,
        "user_id": f"customer-{visitor}",
        "order_id": f"{visitor}-1",
        "total": 60.0,
        "ts": int(time.time() - 120 * 86_400),
        "products": [{"product_id": "p1002", "price": 60.0}],
    }
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    http(port, "/_edge/ingest", {"events": [event]}, **auth)
    for _ in range(200):  # the order is written behind the acknowledgement's batch
        answer = json.loads(http(port, "/_edge/decide?path=%2F", Cookie=cookie))
        if any(e["placement"] == "hero-lapsed" for e in answer["edits"]):
            return cookie
        time.sleep(0.05)
    sys.exit("bench/snippet.py: the lapsed hero never came for the bench visitor")


def load(page: Page, url: str) -> dict[str, float | None]:
    page.goto(url, wait_until="load")
    page.wait_for_function(
        "performance.getEntriesByName('shop-edge:applied').length"
        " || performance.getEntriesByName('shop-edge:cap').length"
    )
    return dict(page.evaluate(TIMING))


def pct(values: list[float], q: float) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=20, help="timed loads per page")
    parser.add_argument("--warmup", type=int, default=3, help="untimed loads per page first")
    parser.add_argument(
        "--designs",
        default=",".join(DESIGNS),
        help=f"the designs compared, comma-separated, of {', '.join(DESIGNS)}",
    )
    args = parser.parse_args()
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown or not designs:
        parser.error(
            f"--designs: unknown {', '.join(unknown) or '(none)'}; use {', '.join(DESIGNS)}"
        )
    if not Path(CHROMIUM).exists():
        print(f"bench/snippet.py: skipped, needs Debian's chromium at {CHROMIUM}")
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-snippet-"))
    shop_port, edge_port = free_port(), free_port()
    shop = subprocess.Popen(serve_argv(shop_port), cwd=ROOT, stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env.update(
        EDGE_STORE=f"sqlite:{work}/profiles.db",
        EDGE_SECRET="bench-secret",
        EDGE_RULES=str(ROOT / "rules"),
        EDGE_SNIPPETS=str(ROOT / "snippets"),
        EDGE_CATALOG=str(write_feed(work / "catalog.csv")),
        EDGE_INGEST_TOKEN=TOKEN,
        EDGE_AVG_ORDER_VALUE="100",
        EDGE_BROWSER_PAGES="home,category",
        EDGE_LOG_LEVEL="warning",
    )
    argv = [sys.executable, "-m", "edge", "serve", "--upstream", f"http://127.0.0.1:{shop_port}"]
    edge = subprocess.Popen(
        [*argv, "--port", str(edge_port)], cwd=work, env=env, stdout=subprocess.DEVNULL
    )
    rows: list[tuple[str, str, list[dict[str, float | None]]]] = []
    notes: dict[str, int] = {}
    try:
        wait_listening(shop_port, shop)
        wait_listening(edge_port, edge)
        cookie = lapsed_cookie(edge_port)
        base = f"http://127.0.0.1:{edge_port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            context = browser.new_context()
            name, _, value = cookie.partition("=")
            context.add_cookies([{"name": name, "value": value, "url": base}])
            design = [designs[0]]
            routed(context, base, design)
            page = context.new_page()
            # console warnings and errors (an unused preload says so): how often each
            page.on(
                "console",
                lambda m: (
                    m.type in ("warning", "error")
                    and notes.__setitem__(m.text, notes.get(m.text, 0) + 1)
                ),
            )
            for path in PAGES:
                runs: dict[str, list[dict[str, float | None]]] = {d: [] for d in designs}
                for i in range(args.warmup + args.loads):
                    for d in designs:  # interleaved: the machine's moods hit every design
                        design[0] = d
                        timing = load(page, base + path)
                        if i >= args.warmup:
                            runs[d].append(timing)
                for d in designs:
                    rows.append((d, path, runs[d]))
            browser.close()
    finally:
        for proc in (edge, shop):
            proc.terminate()
            proc.wait(10)

    print(f"snippet: {len(ASSET.body)} B minified, {len(ASSET.gzip)} B gzip, {len(ASSET.br)} B br")
    print("(goal: <= 6144 B gzipped)\n")
    print(
        "design         page             loads  DCL->applied p50  p90 ms  decide p50 ms"
        "  asked p50 ms  nav->applied p50 ms  fetches  capped"
    )
    for design_name, path, runs_ in rows:
        done = [r for r in runs_ if r["applied"] is not None]
        after = [float(r["applied"]) - float(r["dcl"]) for r in done]  # type: ignore[arg-type]
        nav = [float(r["applied"]) for r in done]  # type: ignore[arg-type]
        fetches = [float(r["decide"]) for r in runs_ if r["decide"] is not None]  # type: ignore[arg-type]
        asked = [float(r["asked"]) for r in runs_ if r["asked"] is not None]  # type: ignore[arg-type]
        most = max((int(r["fetches"] or 0) for r in runs_), default=0)
        capped = sum(1 for r in runs_ if r["cap"] is not None)
        print(
            f"{design_name:<14} {path:<16} {len(runs_):>5}  {pct(after, 0.5):>16}  "
            f"{pct(after, 0.9):>6}  {pct(fetches, 0.5):>13}  {pct(asked, 0.5):>12}  "
            f"{pct(nav, 0.5):>19}  {most:>7}  {capped:>6}"
        )
    for text, count in notes.items():
        print(f"console ({count}x): {text[:160]}")
    print("\n(goal: DCL->applied <= 50 ms at p50; negative: applied before DOMContentLoaded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

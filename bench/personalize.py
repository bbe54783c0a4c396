"""Personalization end to end: what a personalized page costs on one core, and its TTFB.

    python bench/personalize.py [--duration 8] [--rounds 1] [--ttfb-requests 200]
                                [--profile] [--keep-work]

One run, five `edge serve` modes in front of the same upstream:

* ``passthrough``: an empty rules directory and ``EDGE_TRACK=false`` (the bare proxy);
* ``tracking``: no rules, tracking on, a returning visitor's cookie;
* ``personalized``: the repository's ``rules/`` and ``snippets/``, the demo catalogue
  feed, ``EDGE_AVG_ORDER_VALUE=100``, and a returning visitor whose history (sent
  through ``POST /_edge/ingest``) makes them lapsed, with an abandoned cart and a
  favourite category: on ``/`` the hero, the banner, the profiling form and the
  shelves order change; on ``/c/scarpe-donna`` the 12 products are reordered;
* ``500 visitors``: the same, but wrk takes turns among 500 such visitors, each with
  their own bag in the cart (so the cart reminder's content differs by visitor);
* ``no replay``: ``personalized`` with the replay cache off (every page rewritten).

1. Throughput: the demo shop's rendered ``/`` and ``/c/scarpe-donna``, snapshotted
   once and served by nginx (so the upstream is far faster than the sidecar); each
   sidecar pinned to core 0, wrk and nginx on core 1; req/s, CPU per 1k requests of
   the sidecar's process tree, and personalized over passthrough for the same page.
2. Time to first byte: a raw asyncio upstream streams the home page (padded to a
   realistic 8 KB before the first slot): head and the first 8 KB at once, the rest
   50 ms later. Sequential requests on a keep-alive connection, direct and through
   each mode: time to the response head, the first body byte, 8 KB of body, the end.
3. Correctness: before and after the timed runs the personalized pages must carry the
   personalized hero, banner, form and orders, the others the snapshot byte for byte.

``--profile`` also runs the personalized sidecar under cProfile on each page and prints
where a request's time goes (deciding, rendering snippets, rewriting).

See bench/README.md for how to read the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from latency import PROXY_CPU, core_busy
from proxy import (
    CLK_TCK,
    CONNECTIONS,
    LOAD_CORE,
    PROXY_CORE,
    ROOT,
    WRK_LUA,
    Procs,
    busy_cores,
    cpu_ticks,
    free_port,
    log_tail,
    nginx_conf,
    preflight,
    print_table,
    process_tree,
    run_bench,
    start_nginx,
    steal_seconds,
    work_dir,
)
from proxy import run_wrk as proxy_run_wrk

from edge.demo.catalog import products_in, write_feed
from edge.demo.shop import serve_argv
from edge.identity import Identity
from edge.placements import in_holdout

DEFAULT_EDGE = ROOT / ".venv" / "bin" / "edge"
TOKEN = "bench-ingest-token"
SECRET = "bench-secret"
DAY = 86_400
MANY = "500 visitors"
MANY_VISITORS = 500
MODES = ("passthrough", "tracking", "personalized", MANY, "no replay")
"""Throughput rows; ``500 visitors`` is ``personalized`` with wrk taking turns among 500
returning visitors whose carts differ (the cart reminder's content is theirs, so the
rewrite plan's contents change from one request to the next, as in real traffic);
``no replay`` is ``personalized`` with ``EDGE_REPLAY_CACHE_BYTES=0``: every response
rewritten from scratch (a page that differs on every response)."""
TTFB_MODES = MODES[:3]
PERSONALIZED = frozenset(("personalized", MANY, "no replay"))
ROTATE_LUA = r"""
local cookies = {}
for line in io.lines("%(cookies)s") do cookies[#cookies + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, {["Cookie"] = cookies[(i %% #cookies) + 1]})
end
"""
PAGES = {"/": "home.html", "/c/scarpe-donna": "scarpe-donna.html"}
BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-GB,en;q=0.9",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
}
UPSTREAM_HEADERS = {"Cache-Control": "public, max-age=60", "Vary": "Cookie"}  # the demo's

# Goals (issue 5), each against the same run.
GOAL_RATIO = 0.60  # personalized req/s over passthrough's, same page
GOAL_TTFB_MS = 1.0  # personalized first body byte over the upstream's own, median

FIRST_CHUNK = 8192  # the streamed page's head and header, sent at once
STREAM_DELAY = 0.050  # then the rest, this much later
TTFB_MAX_GAP = 0.050  # a random pause of up to this before each TTFB request


# --------------------------------------------------------------------------- pages


def snapshot_demo(procs: Procs, work: Path) -> dict[str, bytes]:
    """The demo shop's rendered pages, fetched once from a real demo shop (then stopped)."""
    port = free_port()
    shop = procs.start(
        serve_argv(port),
        work / "demo-shop.log",
        cwd=ROOT,
    )
    try:
        wait_ready(port, shop, "/")
        pages = {}
        for path in PAGES:
            status, _, body = get(port, path, {"Accept": BROWSER["Accept"]})
            if status != 200:
                raise RuntimeError(f"demo shop: GET {path} -> {status}")
            pages[path] = body
        return pages
    finally:
        procs.stop(shop)


def streamed_page(home: bytes) -> bytes:
    """The home page with a critical-CSS block in its head, so its first slot starts
    after ``FIRST_CHUNK`` bytes, as on a typical theme (the demo's head is ~2 KB)."""
    first_slot = home.index(b"data-edge-slot")
    rule = b".edge-pad-%04d{margin:0 auto;padding:0 1rem;max-width:72rem}\n"
    pad = b"".join(rule % i for i in range((FIRST_CHUNK + 512 - first_slot) // len(rule % 0) + 1))
    page = home.replace(b"</head>", b"<style>\n" + pad + b"</style>\n</head>", 1)
    assert page.index(b"data-edge-slot") > FIRST_CHUNK + 256
    return page


# --------------------------------------------------------------------------- HTTP helpers


def get(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def wait_ready(port: int, p: subprocess.Popen[bytes], path: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"exited with code {p.returncode}")
        try:
            status, _, _ = get(port, path, timeout=1.0)
            if status == 200:
                return
            last = f"GET {path} -> {status}"
        except OSError as exc:
            last = exc.__class__.__name__
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {seconds:g}s ({last})")


def wait_for(probe: Any, what: str, seconds: float = 5.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds:g}s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- sidecars


@dataclass
class Sidecar:
    mode: str
    proc: subprocess.Popen[bytes]
    port: int
    cookie: str = ""  # the returning visitor's ``edge_vid=...`` ("" in passthrough)
    lua: Path | None = None
    """wrk's script when it takes turns among several visitors' cookies (then
    ``cookie`` is the first of them, for the correctness checks)."""

    def headers(self) -> dict[str, str]:
        return {**BROWSER, **({"Cookie": self.cookie} if self.cookie else {})}

    def load_headers(self) -> dict[str, str]:
        """What wrk sends as fixed headers: the script sets the cookie if it has one."""
        return BROWSER if self.lua is not None else self.headers()


def start_sidecar(
    procs: Procs,
    work: Path,
    edge: Path,
    mode: str,
    upstream: str,
    feed: Path,
    tag: str,
    launcher: list[str] | None = None,
    settings: dict[str, str] | None = None,
) -> Sidecar:
    """``edge serve`` in *mode* on core 0, ready, with its visitor(s); *settings*:
    more ``EDGE_*`` variables (``bench/goals.py``'s)."""
    cwd = work / f"{tag}-{mode.replace(' ', '-')}"  # its own edge-data/ store, thrown away after
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env.update(EDGE_SECRET=SECRET, EDGE_INGEST_TOKEN=TOKEN, **(settings or {}))
    if mode in PERSONALIZED:
        env.update(
            EDGE_RULES=str(ROOT / "rules"),
            EDGE_SNIPPETS=str(ROOT / "snippets"),
            EDGE_CATALOG=str(feed),
            EDGE_AVG_ORDER_VALUE="100",
        )
        if mode == "no replay":
            env["EDGE_REPLAY_CACHE_BYTES"] = "0"
    else:
        (cwd / "no-rules").mkdir()
        env.update(EDGE_RULES=str(cwd / "no-rules"), EDGE_SNIPPETS=str(cwd / "no-rules"))
        if mode == "passthrough":
            env["EDGE_TRACK"] = "false"
    port = free_port()
    argv = [*(launcher or [str(edge)]), "serve", "--upstream", upstream]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    log = work / f"{tag}-{mode.replace(' ', '-')}.log"
    p = procs.start(["taskset", "-c", PROXY_CORE, *argv], log, cwd=cwd, env=env)
    try:
        wait_ready(port, p, "/_edge/healthz")
    except RuntimeError as exc:
        raise RuntimeError(f"edge serve ({mode}): {exc}: {log_tail(log)}") from None
    sidecar = Sidecar(mode, p, port)
    if mode == MANY:
        cookies = returning_visitors(port, MANY_VISITORS)
        (cwd / "cookies.txt").write_text("".join(c + "\n" for c in cookies))
        sidecar.lua = cwd / "rotate.lua"
        sidecar.lua.write_text(ROTATE_LUA % {"cookies": cwd / "cookies.txt"} + WRK_LUA)
        sidecar.cookie = cookies[0]
    elif mode != "passthrough":
        sidecar.cookie = returning_visitor(port, personalize=mode in PERSONALIZED)
    return sidecar


def visitor_history(visitor_id: str, now: float, k: int = 0) -> list[dict[str, Any]]:
    """Lapsed (one order four months ago, under the shop's average: not a VIP), not a
    known customer (no user_id: the profiling form applies), fond of kitchenware (the
    home shelves move), bought two of the women's shoes (they go last in that
    category) and left a bag in the cart three hours ago (cart reminder, then offer).
    Visitor number *k* of several has the *k*-th bag in the cart, so their cart
    reminders differ."""
    bought = [
        products_in("casa-cucina")[0],
        products_in("casa-cucina")[1],
        *products_in("scarpe-donna")[:2],
    ]
    bags = products_in("borse-accessori")
    in_cart = bags[k % len(bags)]

    def item(p: Any) -> dict[str, Any]:
        return {
            "product_id": p.id,
            "category": p.category,
            "brand": p.brand,
            "price": p.price / 100,
        }

    return [
        {
            "event": "Order Completed",
            "anonymous_id": visitor_id,
            "order_id": f"{visitor_id}-1",
            "total": 60.0,
            "ts": int(now - 120 * DAY),
            "products": [item(p) for p in bought],
        },
        {
            "event": "Product Added",
            "anonymous_id": visitor_id,
            "product_id": in_cart.id,
            "category": in_cart.category,
            "ts": int(now - 3 * 3600),
        },
    ]


def ingest(port: int, events: list[dict[str, Any]]) -> None:
    """Send *events* as the shop does (``POST /_edge/ingest``, bearer token)."""
    status, _, reply = get(
        port,
        "/_edge/ingest",
        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        method="POST",
        body=json.dumps({"events": events}).encode(),
    )
    if status != 200:
        raise RuntimeError(f"POST /_edge/ingest -> {status}: {reply[:200]!r}")


def stored_profile(port: int, cookie: str) -> dict[str, Any]:
    """The profile the sidecar has stored for the visitor with *cookie* ({} if none)."""
    body = get(port, "/_edge/profile", {"Cookie": cookie})[2]
    return json.loads(body).get("profile") or {}


def has_history(profile: dict[str, Any]) -> bool:
    """Whether the history of :func:`visitor_history` is in *profile*."""
    return profile.get("order_count") == 1 and bool(profile.get("cart"))


def held_out(visitor_id: str) -> bool:
    """Whether the repository's rules hold *visitor_id* out of a placement (the
    control group sees the shop's page): such a visitor cannot show what the checks
    look for, so the benchmark's own visitors are chosen outside every holdout."""
    return any(in_holdout(visitor_id, pid, share) for pid, share in _holdouts())


@functools.cache
def _holdouts() -> tuple[tuple[str, float], ...]:
    with open(ROOT / "rules" / "placements.toml", "rb") as f:
        placements = tomllib.load(f).get("placements", [])
    return tuple((p["id"], p["holdout"]) for p in placements if p.get("holdout"))


def returning_visitor(port: int, personalize: bool) -> str:
    """The cookie of a visitor with a stored profile: a first page sets it, a second one
    stores the profile; for ``personalize`` the shop then sends the history above.
    A visitor the rules hold out of a placement is passed over (one in ten or so)."""
    for _ in range(100):
        _, headers, _ = get(port, "/", BROWSER)
        cookie = next(
            (
                v.split(";", 1)[0]
                for k, v in headers
                if k.lower() == "set-cookie" and v.startswith("edge_vid=")
            ),
            "",
        )
        if not cookie:
            raise RuntimeError("edge set no edge_vid cookie on a first page view")
        visitor_id = cookie.removeprefix("edge_vid=").split(".", 1)[0]
        if not (personalize and held_out(visitor_id)):
            break
    get(port, "/", {**BROWSER, "Cookie": cookie})
    wait_for(
        lambda: stored_profile(port, cookie).get("visitor_id") == visitor_id,
        "visitor profile stored",
    )
    if personalize:
        ingest(port, visitor_history(visitor_id, time.time()))
        wait_for(lambda: has_history(stored_profile(port, cookie)), "history")
    return cookie


def visitor_cookie(visitor_id: str, identity: Identity | None = None) -> str:
    """``edge_vid=...`` for *visitor_id*, signed as a sidecar with the bench's secret
    signs it."""
    return f"edge_vid={(identity or Identity([SECRET])).sign(visitor_id)}"


def returning_visitors(port: int, n: int) -> list[str]:
    """Cookies of *n* visitors with the history above (each their own bag in the
    cart), signed as the sidecar signs them and given their history by the shop."""
    identity = Identity([SECRET])
    ids: list[str] = []
    while len(ids) < n:
        candidate = identity.new_visitor_id()
        if not held_out(candidate):
            ids.append(candidate)
    now = time.time()
    for at in range(0, n, 100):
        ingest(
            port, [e for k in range(at, min(n, at + 100)) for e in visitor_history(ids[k], now, k)]
        )
    cookies = [visitor_cookie(v, identity) for v in ids]
    wait_for(
        lambda: all(has_history(stored_profile(port, c)) for c in (cookies[0], cookies[-1])),
        "visitors' histories",
    )
    return cookies


# --------------------------------------------------------------------------- correctness


def shelves(page: bytes) -> list[bytes]:
    return re.findall(rb'<section class="shelf" data-category="([^"]+)"', page)


def product_ids(page: bytes) -> list[bytes]:
    m = re.search(rb'<ol class="products"[^>]*>(.*?)</ol>', page, re.S)
    return re.findall(rb'data-product-id="(p\d+)"', m.group(1)) if m else []


def serve_pages(procs: Any, work: Path, www: Path) -> tuple[subprocess.Popen[bytes], int]:
    """nginx serving the shop's pages (PAGES, files in *www*) with the upstream's
    headers, on a free port; returns the process and the port once it answers."""
    port = free_port()
    locations = "\n".join(
        f"        location = {path} {{ try_files /{name} =404; }}" for path, name in PAGES.items()
    )
    headers = "\n".join(f'        add_header {k} "{v}";' for k, v in UPSTREAM_HEADERS.items())
    conf = nginx_conf(
        work,
        "upstream",
        port,
        f"        root {www};\n        charset utf-8;\n{headers}\n{locations}",
    )
    p = start_nginx(procs, work, conf)
    wait_ready(port, p, "/")
    return p, port


def check_page(sidecar: Sidecar, path: str, original: bytes) -> tuple[list[str], list[str]]:
    """(problems, what was personalized) for one GET through *sidecar*."""
    status, headers, body = get(sidecar.port, path, sidecar.headers())
    return check_response(sidecar.mode in PERSONALIZED, path, status, headers, body, original)


def check_response(
    personalized: bool,
    path: str,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    original: bytes,
) -> tuple[list[str], list[str]]:
    """(problems, what was personalized) for one response to GET *path* (of
    :data:`PAGES`), whose upstream page is *original*: a *personalized* one must carry
    this benchmark's visitor's edits and ``Cache-Control: private``, any other must be
    *original* byte for byte."""
    if status != 200:
        return [f"GET {path} -> {status}"], []
    if not personalized:
        return (
            []
            if body == original
            else [f"body differs from upstream ({len(body)} vs {len(original)} B)"]
        ), []
    problems, seen = [], []
    if path == "/":
        checks = {
            "hero": b"edge-hero--lapsed" in body,
            "banner": b"edge-cart-reminder" in body or b"data-edge-offer" in body,
            "form": b"edge-profile-form" in body,
            "shelves": shelves(body) != shelves(original)
            and sorted(shelves(body)) == sorted(shelves(original)),
        }
        banner = "cart reminder" if b"edge-cart-reminder" in body else "timed offer"
    else:
        ids, before = product_ids(body), product_ids(original)
        checks = {"reorder": ids != before and sorted(ids) == sorted(before) and len(ids) == 12}
        banner = ""
    for name, ok in checks.items():
        (seen if ok else problems).append(f"{name} ({banner})" if name == "banner" else name)
    cache = next((v for k, v in headers if k.lower() == "cache-control"), "")
    if "private" not in cache:
        problems.append(f"Cache-Control: {cache!r}")
    return problems, seen


# --------------------------------------------------------------------------- throughput


@dataclass
class Row:
    page: str
    target: str
    na: str = ""
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    cpu_ms_per_req: float = 0.0
    kb_per_resp: float = 0.0
    steal_s: float = 0.0
    core_others: float = 0.0
    """Cores' worth of the target's core (0) other processes used during the run: above
    ~0.1 the req/s is the target's share of a core, not its capacity."""
    notes: list[str] = field(default_factory=list)


def run_wrk(
    procs: Procs,
    work: Path,
    port: int,
    path: str,
    duration: float,
    headers: dict[str, str],
    lua: Path | None = None,
) -> dict[str, Any]:
    script = lua or work / "done.lua"
    return proxy_run_wrk(procs, work, port, duration, script, path=path, headers=headers)


def measure(
    procs: Procs,
    work: Path,
    page: str,
    target: str,
    port: int,
    pid: int,
    headers: dict[str, str],
    args: argparse.Namespace,
    lua: Path | None = None,
) -> Row:
    row = Row(page, target)
    if args.warmup > 0:
        run_wrk(procs, work, port, page, args.warmup, headers, lua)
    pids = process_tree(pid)
    before = cpu_ticks(pids)
    steal0, core0, t0 = steal_seconds(), core_busy(PROXY_CPU), time.monotonic()
    w = run_wrk(procs, work, port, page, args.duration, headers, lua)
    row.steal_s = steal_seconds() - steal0
    after = cpu_ticks(sorted(set(pids) | set(process_tree(pid))))
    ticks = sum(after.get(p, 0) - before.get(p, 0) for p in after)
    others = core_busy(PROXY_CPU) - core0 - ticks / CLK_TCK
    row.core_others = max(0.0, others) / (time.monotonic() - t0)
    requests = max(int(w["requests"]), 1)
    row.rps = w["requests"] / (w["duration_us"] / 1e6)
    row.p50_ms, row.p99_ms = w["p50"] / 1000, w["p99"] / 1000
    row.errors = sum(int(w[k]) for k in ("connect", "read", "write", "status", "timeout"))
    row.cpu_ms_per_req = ticks / CLK_TCK / requests * 1000
    row.kb_per_resp = w["bytes"] / requests / 1000
    return row


def median_row(rows: list[Row]) -> Row:
    """The round with the median req/s (its own CPU and latency: one real run)."""
    ok = sorted((r for r in rows if not r.na), key=lambda r: r.rps)
    if not ok:
        return rows[0]
    row = ok[(len(ok) - 1) // 2]
    if len(rows) > 1:
        row.notes.append(
            f"median of {len(ok)} rounds: req/s {', '.join(f'{r.rps:,.0f}' for r in rows)}"
        )
    return row


# The sidecar's steps, for the --profile table: (label, file, function, is a coroutine).
PROFILE_STEPS = (
    ("whole proxied request", "edge/respond.py", "_respond", True),
    ("decide: profile, rules, placements", "edge/decide.py", "_decide", True),
    ("  snippets rendered (jinja)", "edge/personalize/snippets.py", "render", False),
    ("  rules evaluated", "edge/rules/ruleset.py", "evaluate", False),
    ("rewrite the body", "edge/respond.py", "_rewrite", True),
    ("  rewriter: start tags one by one", "edge/rewrite/rewriter.py", "_start_tag", False),
    ("  rewriter: end tags one by one", "edge/rewrite/rewriter.py", "_end_tag", False),
    ("  rewriter: reorder items, fast path", "edge/rewrite/items.py", "_fast_items", False),
    ("events queued (Responder.record)", "edge/respond.py", "record", False),
)


def print_profile(path: Path, label: str) -> None:
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]

    def find(file: str, func: str) -> tuple[int, float]:
        calls, cum = 0, 0.0
        for (filename, _, name), (_, nc, _, ct, _) in stats.items():
            if filename.endswith(file) and name == func:
                calls, cum = calls + nc, cum + ct
        return calls, cum

    # A plain function called once per proxied request (a coroutine's count is its resumptions).
    requests = find("edge/proxy.py", "response_headers")[0]
    total = find("edge/respond.py", "_respond")[1]
    print()
    print(f"cProfile of the personalized sidecar, {label} ({requests} requests)")
    if not requests or not total:
        print("  no requests recorded")
        return
    rows = []
    for name, file, func, coroutine in PROFILE_STEPS:
        calls, cum = find(file, func)
        rows.append(
            [
                name,
                "" if coroutine else f"{calls / requests:.1f}",
                f"{cum / requests * 1000:.2f}",
                f"{cum / total:.0%}",
            ]
        )
    print_table(["step", "calls/req", "ms/req", "share"], rows, right={1, 2, 3})
    own = [
        (tt, nc, filename.replace(str(ROOT) + "/", ""), line, name)
        for (filename, line, name), (_, nc, tt, _, _) in stats.items()
        if filename.startswith(str(ROOT / "edge"))
    ]
    print("top edge/ functions by own time:")
    for tt, nc, short, line, name in sorted(own, reverse=True)[:8]:
        print(
            f"  {tt / requests * 1000:6.3f} ms/req  {nc / requests:6.1f} calls/req  {short}:{line}({name})"
        )
    print("(cProfile roughly doubles Python's run time: read the shares, not the ms.)")


# --------------------------------------------------------------------------- TTFB


def serve_streamed(port: int, page_file: str) -> None:
    """The streaming upstream (run as ``--serve-stream``): any GET gets the page, chunked,
    the head and the first ``FIRST_CHUNK`` bytes at once, the rest ``STREAM_DELAY`` later."""
    page = Path(page_file).read_bytes()
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n"
        + b"".join(f"{k}: {v}\r\n".encode() for k, v in UPSTREAM_HEADERS.items())
        + b"transfer-encoding: chunked\r\n\r\n"
    )
    first, rest = page[:FIRST_CHUNK], page[FIRST_CHUNK:]
    now = b"%x\r\n%b\r\n" % (len(first), first)
    later = b"%x\r\n%b\r\n0\r\n\r\n" % (len(rest), rest)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", request)
                if length:
                    await reader.readexactly(int(length.group(1)))
                writer.write(head + now)
                await asyncio.sleep(STREAM_DELAY)
                writer.write(later)
                await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(client, "127.0.0.1", port, backlog=512)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@dataclass
class Timing:
    head: float  # ms from the request's send to the first byte of the response head
    body: float  # ... to the first body byte
    kb8: float  # ... to 8,000 body bytes
    done: float  # ... to the end of the body
    body_bytes: bytes
    server_ms: float | None  # the sidecar's own Server-Timing (its decision), if any


class _Chunked:
    """Incremental chunked-body decoder (no trailers: neither upstream nor edge send any)."""

    def __init__(self) -> None:
        self.buf = b""
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = bytearray()
        while not self.ended:
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self.buf[:line_end].split(b";")[0], 16)
            stop = line_end + 2 + size + 2
            if len(self.buf) < stop:
                break
            out += self.buf[line_end + 2 : stop - 2]
            self.buf = self.buf[stop:]
            self.ended = size == 0
        return bytes(out)


def timed_get(sock: socket.socket, request: bytes) -> Timing:
    """One request on a keep-alive connection, timed from its send."""
    t0 = time.perf_counter()
    sock.sendall(request)
    buf = b""
    t_head = 0.0
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the end of the head")
        t_head = t_head or time.perf_counter()
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lower = head.lower()
    chunked = _Chunked() if b"transfer-encoding: chunked" in lower else None
    timing = re.search(rb"\r\nserver-timing: *edge;dur=([\d.]+)", lower)
    m = re.search(rb"content-length: *(\d+)", lower)
    if chunked is None and m is None:
        raise ConnectionError("neither chunked nor Content-Length")
    length = int(m.group(1)) if m else -1
    body = bytearray()
    t_body = t_8k = 0.0
    now, data = t_head, rest
    while True:
        body += chunked.feed(data) if chunked is not None else data
        if body and not t_body:
            t_body = now
        if len(body) >= 8000 and not t_8k:
            t_8k = now
        if chunked.ended if chunked is not None else len(body) >= length:
            break
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed mid-body")
        now = time.perf_counter()
    ms = 1000.0
    return Timing(
        (t_head - t0) * ms,
        (t_body - t0) * ms,
        (t_8k - t0) * ms,
        (now - t0) * ms,
        bytes(body),
        float(timing.group(1)) if timing else None,
    )


def ttfb_run(port: int, headers: dict[str, str], n: int, warm: int) -> list[Timing]:
    """*warm* then *n* sequential GET / on one keep-alive connection, a random pause of
    up to ``TTFB_MAX_GAP`` before each (back to back, every request would start just as
    the sidecar's 50 ms write-behind flush of the previous one runs)."""
    pauses = random.Random(5)
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        timings = []
        for i in range(warm + n):
            time.sleep(pauses.uniform(0, TTFB_MAX_GAP))
            timing = timed_get(sock, request)
            if i >= warm:
                timings.append(timing)
        return timings


@dataclass
class TtfbRow:
    target: str
    na: str = ""
    head: tuple[float, float] = (0.0, 0.0)  # p50, p90 in ms
    body: tuple[float, float] = (0.0, 0.0)
    kb8: tuple[float, float] = (0.0, 0.0)
    done: tuple[float, float] = (0.0, 0.0)
    server: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)


def p50_p90(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), q[8]


# --------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Procs()
        self.work = work_dir("personalize-")
        self.rows: list[Row] = []
        self.ttfb: list[TtfbRow] = []
        self.ratios: dict[str, list[float]] = {}
        self.profiles: list[tuple[Path, str]] = []
        self.problems: list[str] = []
        self.personalized: dict[str, list[str]] = {}
        self.pages: dict[str, bytes] = {}
        self.busy_before = 0.0

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def check(self, sidecar: Sidecar, when: str) -> None:
        for path, original in self.pages.items():
            problems, seen = check_page(sidecar, path, original)
            self.problems += [f"{sidecar.mode} {path} ({when}): {p}" for p in problems]
            if seen:
                self.personalized[f"{path} ({when})"] = seen

    def start_nginx(self) -> tuple[subprocess.Popen[bytes], int]:
        www = self.work / "www"
        www.mkdir()
        for path, name in PAGES.items():
            (www / name).write_bytes(self.pages[path])
        return serve_pages(self.procs, self.work, www)

    def run(self) -> int:
        a = self.args
        edge = Path(a.edge)
        self.log(f"work dir: {self.work}")
        self.busy_before = busy_cores()
        (self.work / "done.lua").write_text(WRK_LUA)
        feed = write_feed(self.work / "catalog.csv")
        self.log("snapshotting the demo shop's / and /c/scarpe-donna")
        self.pages = snapshot_demo(self.procs, self.work)

        # 1. throughput, in front of nginx serving the snapshots
        nginx, up_port = self.start_nginx()
        upstream = f"http://127.0.0.1:{up_port}"
        sidecars = [
            start_sidecar(self.procs, self.work, edge, mode, upstream, feed, "tp") for mode in MODES
        ]
        for s in sidecars:
            self.check(s, "before")
        rounds: dict[tuple[str, str], list[Row]] = {}
        for r in range(a.rounds):
            for path in PAGES:
                targets: list[tuple[str, int, int, dict[str, str], Path | None]] = [
                    ("nginx upstream", up_port, nginx.pid, BROWSER, None)
                ]
                targets += [(s.mode, s.port, s.proc.pid, s.load_headers(), s.lua) for s in sidecars]
                for name, port, pid, headers, lua in targets:
                    self.log(
                        f"-- round {r + 1}/{a.rounds} GET {path} {name}: "
                        f"{a.warmup:g}s warm-up + {a.duration:g}s"
                    )
                    try:
                        row = measure(self.procs, self.work, path, name, port, pid, headers, a, lua)
                    except Exception as exc:
                        row = Row(path, name, na=f"{exc.__class__.__name__}: {exc}")
                    rounds.setdefault((path, name), []).append(row)
                    self.log(f"   {row.rps:,.0f} req/s, {row.cpu_ms_per_req:.3f} ms CPU/req")
        self.rows = [median_row(rows) for rows in rounds.values()]
        self.ratios = {
            path: [
                pers.rps / base.rps
                for base, pers in zip(
                    rounds[(path, "passthrough")], rounds[(path, "personalized")], strict=True
                )
                if base.rps and not (base.na or pers.na)
            ]
            for path in PAGES
        }
        if a.profile:
            self.profile_personalized(upstream, feed)
        for s in sidecars:
            self.check(s, "after")
            self.procs.stop(s.proc)
        self.procs.stop(nginx)

        # 2. time to first byte, in front of the streaming upstream
        page = streamed_page(self.pages["/"])
        page_file = self.work / "streamed.html"
        page_file.write_bytes(page)
        st_port = free_port()
        streamer = self.procs.start(
            [
                "taskset",
                "-c",
                LOAD_CORE,
                sys.executable,
                __file__,
                "--serve-stream",
                str(st_port),
                str(page_file),
            ],
            self.work / "streamer.log",
        )
        wait_ready(st_port, streamer, "/")
        sidecars = [
            start_sidecar(
                self.procs, self.work, edge, mode, f"http://127.0.0.1:{st_port}", feed, "ttfb"
            )
            for mode in TTFB_MODES
        ]
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # the client: off the sidecar's core
        try:
            targets2 = [("upstream (direct)", st_port, BROWSER, "")]
            targets2 += [(s.mode, s.port, s.headers(), s.mode) for s in sidecars]
            for name, port, headers, mode in targets2:
                self.log(f"-- TTFB {name}: {a.ttfb_requests} sequential GET /")
                trow = TtfbRow(name)
                try:
                    timings = ttfb_run(port, headers, a.ttfb_requests, warm=20)
                except Exception as exc:
                    trow.na = f"{exc.__class__.__name__}: {exc}"
                    self.ttfb.append(trow)
                    continue
                trow.head = p50_p90([t.head for t in timings])
                trow.body = p50_p90([t.body for t in timings])
                trow.kb8 = p50_p90([t.kb8 for t in timings])
                trow.done = p50_p90([t.done for t in timings])
                server = [t.server_ms for t in timings if t.server_ms is not None]
                trow.server = p50_p90(server) if len(server) == len(timings) else None
                last = timings[-1].body_bytes
                if mode == "personalized":
                    if b"edge-hero--lapsed" not in last:
                        self.problems.append("TTFB personalized: no personalized hero in the body")
                elif last != page:
                    self.problems.append(f"TTFB {name}: body differs from the upstream's")
                self.ttfb.append(trow)
        finally:
            os.sched_setaffinity(0, mask)
        self.report(len(page))
        bad = any(r.errors or r.na for r in self.rows) or any(t.na for t in self.ttfb)
        return 1 if bad or self.problems else 0

    def profile_personalized(self, upstream: str, feed: Path) -> None:
        """The personalized sidecar under cProfile for one wrk run on each page."""
        a = self.args
        for path in PAGES:
            out = self.work / f"personalized{path.replace('/', '_')}.prof"
            launcher = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "edge"]
            sidecar = start_sidecar(
                self.procs,
                self.work,
                Path(a.edge),
                "personalized",
                upstream,
                feed,
                f"profile{path.replace('/', '_')}",
                launcher,
            )
            self.log(f"-- cProfile: GET {path} personalized, {a.duration:g}s")
            try:
                run_wrk(self.procs, self.work, sidecar.port, path, a.duration, sidecar.headers())
            finally:
                self.procs.stop(sidecar.proc, timeout=30)  # SIGTERM: cProfile writes on exit
            self.profiles.append((out, f"GET {path}"))

    # ------------------------------------------------------------------ report

    def report(self, streamed_bytes: int) -> None:
        a = self.args
        print()
        print(
            f"Personalization benchmark: demo shop pages (snapshots served by nginx), "
            f"wrk -t1 -c{CONNECTIONS} {a.duration:g}s (+{a.warmup:g}s warm-up) with a browser's "
            f"headers; edge on core {PROXY_CORE}, wrk + nginx on core {LOAD_CORE}"
        )
        print("Noisy shared 2-core box: read the ratios within this run, not the absolute numbers.")
        if self.busy_before > 0.3:
            print(
                f"WARNING: other processes were using {self.busy_before:.1f} of "
                f"{os.cpu_count()} cores just before the run: expect noisy numbers, re-run when idle."
            )
        print()
        hdr = [
            "page",
            "target",
            "req/s",
            "x passthrough",
            "p50 ms",
            "p99 ms",
            "errors",
            "CPU ms/req",
            "KB/resp",
            "steal s",
        ]
        rows = []
        for r in self.rows:
            if r.na:
                rows.append([r.page, r.target, "n/a", "", "", "", "", "", "", ""])
                continue
            ref = next(
                (
                    x
                    for x in self.rows
                    if x.page == r.page and x.target == "passthrough" and not x.na
                ),
                None,
            )
            ratio = f"{r.rps / ref.rps:.2f}" if ref and r.target in MODES else ""
            rows.append(
                [
                    r.page,
                    r.target,
                    f"{r.rps:,.0f}",
                    ratio,
                    f"{r.p50_ms:.2f}",
                    f"{r.p99_ms:.2f}",
                    str(r.errors),
                    f"{r.cpu_ms_per_req:.3f}",
                    f"{r.kb_per_resp:.1f}",
                    f"{r.steal_s:.2f}",
                ]
            )
        print_table(hdr, rows, right=set(range(2, len(hdr))))
        print("(CPU ms/req: utime+stime of the target's process tree during the timed run, per")
        print(
            " request (= s per 1k requests); the nginx upstream's row is its own, on wrk's core.)"
        )
        for r in self.rows:
            if r.na:
                print(f"  {r.page} {r.target}: n/a - {r.na}")
            for note in r.notes:
                print(f"  {r.page} {r.target}: {note}")

        print()
        print(
            f"Time to first byte: a streamed home page ({streamed_bytes / 1000:.1f} KB; head and "
            f"first {FIRST_CHUNK} B at once, the rest {STREAM_DELAY * 1000:.0f} ms later), "
            f"{a.ttfb_requests} sequential GET / on one keep-alive connection (client on core "
            f"{LOAD_CORE} with the upstream), ms from the send"
        )
        print()
        hdr = [
            "target",
            "head p50",
            "head p90",
            "body p50",
            "body p90",
            "8 KB p50",
            "8 KB p90",
            "end p50",
            "+body p50",
            "+body p90",
            "decide p50",
        ]
        up = next((t for t in self.ttfb if t.target.startswith("upstream") and not t.na), None)
        trows = []
        for t in self.ttfb:
            if t.na:
                trows.append([t.target, "n/a", *[""] * (len(hdr) - 2)])
                continue
            plus = (
                ["", ""]
                if up is None or t is up
                else [f"{t.body[0] - up.body[0]:+.2f}", f"{t.body[1] - up.body[1]:+.2f}"]
            )
            trows.append(
                [
                    t.target,
                    *(f"{v:.2f}" for v in (*t.head, *t.body, *t.kb8)),
                    f"{t.done[0]:.1f}",
                    *plus,
                    f"{t.server[0]:.2f}" if t.server else "",
                ]
            )
        print_table(hdr, trows, right=set(range(1, len(hdr))))
        print("(head: first byte of the response; body: first body byte; 8 KB: 8,000 body bytes,")
        print(" i.e. the page's head and header; end: the whole page; +body: over the upstream's;")
        print(" decide: the sidecar's own Server-Timing, its decision before the head can go.)")
        for t in self.ttfb:
            if t.na:
                print(f"  {t.target}: n/a - {t.na}")

        print()
        print("Correctness: " + ("OK" if not self.problems else "FAILED"))
        for where, seen in self.personalized.items():
            print(f"  personalized {where}: {', '.join(seen)}")
        for p in self.problems:
            print(f"  PROBLEM: {p}")

        print()
        for path in PAGES:
            base = next(
                (r for r in self.rows if r.page == path and r.target == "passthrough"), None
            )
            pers = next(
                (r for r in self.rows if r.page == path and r.target == "personalized"), None
            )
            label = f"Goal {path}: personalized req/s >= {GOAL_RATIO:.0%} of passthrough"
            if base is None or pers is None or base.na or pers.na or not base.rps:
                print(f"{label}: not checked")
                continue
            ratio = pers.rps / base.rps
            cpu = base.cpu_ms_per_req / pers.cpu_ms_per_req if pers.cpu_ms_per_req else 0.0
            extra = [f"by CPU per request: {cpu:.0%}"]
            track = next(
                (r for r in self.rows if r.page == path and r.target == "tracking" and not r.na),
                None,
            )
            if track is not None and track.rps:
                extra.append(f"of tracking's req/s: {pers.rps / track.rps:.0%}")
            spread = self.ratios.get(path, [])
            if len(spread) > 1:
                extra.append(f"rounds {min(spread):.0%}..{max(spread):.0%}")
            many = next(
                (r for r in self.rows if r.page == path and r.target == MANY and not r.na), None
            )
            if many is not None:
                extra.append(f"{MANY}: {many.rps / base.rps:.0%}")
            print(
                f"{label}: {ratio:.0%} {'PASS' if ratio >= GOAL_RATIO else 'FAIL'}"
                f" ({'; '.join(extra)})"
            )
        pers_t = next((t for t in self.ttfb if t.target == "personalized" and not t.na), None)
        label = f"Goal TTFB: personalized first body byte within {GOAL_TTFB_MS:g} ms of the upstream's (p50)"
        if up is None or pers_t is None:
            print(f"{label}: not checked")
        else:
            added = pers_t.body[0] - up.body[0]
            print(
                f"{label}: {added:+.2f} ms {'PASS' if added <= GOAL_TTFB_MS else 'FAIL'}"
                f" (p90 {pers_t.body[1] - up.body[1]:+.2f} ms)"
            )
        for path, label in self.profiles:
            if path.exists():
                print_profile(path, label)
            else:
                print(f"\ncProfile {label}: no output ({path.name} missing)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Personalized vs passthrough throughput on one core, TTFB of a streamed page."
    )
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up (default 2)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the throughput runs, interleaved; rows show the median round (default 1)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run the personalized sidecar under cProfile on each page and print where "
        "its time goes",
    )
    parser.add_argument(
        "--ttfb-requests",
        type=int,
        default=200,
        help="sequential requests per TTFB row (default 200)",
    )
    parser.add_argument(
        "--edge", default=str(DEFAULT_EDGE), help=f"edge executable (default {DEFAULT_EDGE})"
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the work dir (configs, logs)"
    )
    parser.add_argument("--serve-stream", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_stream:
        serve_streamed(int(args.serve_stream[0]), args.serve_stream[1])
        return 0
    if preflight():
        return 2

    return run_bench(Bench(args), args.keep_work)


if __name__ == "__main__":
    sys.exit(main())

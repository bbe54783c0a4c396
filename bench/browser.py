"""The browser's decision endpoint: ``GET /_edge/decide`` against the sidecar's passthrough.

    .venv/bin/python bench/browser.py [--duration 8] [--warmup 2] [--rounds 1] [--keep-work]

The goal (issue 17): ``/_edge/decide`` answers at least half the requests per second
that the sidecar's passthrough of the same page does, on one core (it proxies nothing,
but it decides, renders the blocks and writes JSON). One run, the demo shop's rendered
``/`` and ``/c/scarpe-donna`` snapshotted and served by nginx (``bench/personalize.py``'s
upstream, on core 1 with wrk), each sidecar pinned to core 0:

* ``passthrough``: ``edge serve`` with no rules and tracking off: the page relayed;
* ``server-personalized``: the repository's rules and snippets, the demo catalogue, and
  ``bench/personalize.py``'s returning lapsed visitor: the page rewritten (for scale);
* ``browser page``: the same sidecar with ``EDGE_BROWSER_PAGES=home,category``: the
  page relayed with the snippet's script tag, no decision (what a CDN-missed page costs);
* ``/_edge/decide``: that sidecar answering ``/_edge/decide?path=<page>`` for the same
  visitor (the decision, its blocks and tokens as JSON; the exposures recorded).

**decide / passthrough** is the decide row's req/s over the passthrough row's for the
same page, same run (goal >= 0.50). Before the timed runs every answer is checked: the
decide JSON carries the lapsed visitor's blocks (home) or product order (category), the
browser page is the snapshot plus the script tag.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import personalize
from personalize import (
    BROWSER,
    DEFAULT_EDGE,
    PAGES,
    SECRET,
    Row,
    Sidecar,
    get,
    has_history,
    ingest,
    measure,
    median_row,
    snapshot_demo,
    start_sidecar,
    stored_profile,
    visitor_cookie,
    visitor_history,
    wait_for,
)
from personalize import Bench as PersonalizeBench
from proxy import WRK_LUA, Procs, busy_cores, print_table, run_bench, work_dir

from edge.demo.catalog import write_feed
from edge.identity import Identity

GOAL = 0.50
DECIDE = "/_edge/decide"


def decide_path(page: str) -> str:
    return f"{DECIDE}?path={quote(page, safe='')}"


def returning_browser_visitor(port: int, personalize: bool) -> str:
    """``bench/personalize.py``'s returning lapsed visitor, on a sidecar whose pages
    are personalized in the browser: two decisions store the profile, then the shop
    sends the history."""
    cookie = visitor_cookie(Identity([SECRET]).new_visitor_id())
    visitor_id = cookie.removeprefix("edge_vid=").split(".", 1)[0]
    for _ in range(2):
        get(port, decide_path("/"), {**BROWSER, "Cookie": cookie, "Accept": "*/*"})
    wait_for(
        lambda: stored_profile(port, cookie).get("visitor_id") == visitor_id,
        "visitor profile stored",
    )
    ingest(port, visitor_history(visitor_id, time.time()))
    wait_for(lambda: has_history(stored_profile(port, cookie)), "history")
    return cookie


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Procs()
        self.work = work_dir("browser-")
        self.problems: list[str] = []

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def check(self, sidecar: Sidecar, pages: dict[str, bytes]) -> None:
        """The decide answers and the browser pages are what they should be."""
        headers = {**BROWSER, "Cookie": sidecar.cookie, "Accept": "*/*"}
        for page, original in pages.items():
            status, _, body = get(sidecar.port, decide_path(page), headers)
            if status != 200:
                self.problems.append(f"GET {decide_path(page)} -> {status}")
                continue
            edits = {e["placement"]: e for e in json.loads(body)["edits"]}
            want = "hero-lapsed" if page == "/" else "order-by-interest"
            if want not in edits:
                self.problems.append(f"{decide_path(page)}: no {want} in {sorted(edits)}")
            status, _, html = get(sidecar.port, page, {**BROWSER, "Cookie": sidecar.cookie})
            tag_at = html.find(b'<script src="/_edge/edge.')
            tag = html[tag_at : html.index(b"</script>", tag_at) + 9] if tag_at >= 0 else b""
            if status != 200 or not tag or html.replace(tag, b"", 1) != original:
                self.problems.append(f"GET {page} (browser page): not the snapshot plus the tag")

    def run(self) -> int:
        a = self.args
        edge = Path(a.edge)
        self.log(f"work dir: {self.work}")
        busy = busy_cores()
        (self.work / "done.lua").write_text(WRK_LUA)
        feed = write_feed(self.work / "catalog.csv")
        self.log("snapshotting the demo shop's / and /c/scarpe-donna")
        pages = snapshot_demo(self.procs, self.work)
        upstream_bench = PersonalizeBench(a)
        upstream_bench.procs, upstream_bench.work, upstream_bench.pages = (
            self.procs,
            self.work,
            pages,
        )
        nginx, up_port = upstream_bench.start_nginx()
        upstream = f"http://127.0.0.1:{up_port}"
        passthrough = start_sidecar(
            self.procs, self.work, edge, "passthrough", upstream, feed, "br"
        )
        server = start_sidecar(self.procs, self.work, edge, "personalized", upstream, feed, "br")
        # (its pages set no cookie: the returning visitor is made through /_edge/decide)
        launcher = ["env", "EDGE_BROWSER_PAGES=home,category", str(edge)]
        made_by_pages = personalize.returning_visitor
        personalize.returning_visitor = returning_browser_visitor
        try:
            browser = start_sidecar(
                self.procs, self.work, edge, "personalized", upstream, feed, "br-b", launcher
            )
        finally:
            personalize.returning_visitor = made_by_pages
        self.check(browser, pages)
        rounds: dict[tuple[str, str], list[Row]] = {}
        for r in range(a.rounds):
            for page in PAGES:
                targets = [
                    ("passthrough", page, passthrough, passthrough.headers()),
                    ("server-personalized", page, server, server.headers()),
                    ("browser page", page, browser, browser.headers()),
                    (DECIDE, decide_path(page), browser, {**browser.headers(), "Accept": "*/*"}),
                ]
                for name, path, sidecar, headers in targets:
                    self.log(f"-- round {r + 1}/{a.rounds} GET {path} {name}")
                    try:
                        row = measure(
                            self.procs, self.work, path, name, sidecar.port, sidecar.proc.pid,
                            headers, a,
                        )  # fmt: skip
                    except Exception as exc:
                        row = Row(path, name, na=f"{exc.__class__.__name__}: {exc}")
                    rounds.setdefault((page, name), []).append(row)
                    self.log(f"   {row.rps:,.0f} req/s, {row.cpu_ms_per_req:.3f} ms CPU/req")
        for s in (passthrough, server, browser):
            self.procs.stop(s.proc)
        self.procs.stop(nginx)
        self.report(rounds, busy)
        return (
            1 if self.problems or any(r.errors or r.na for rs in rounds.values() for r in rs) else 0
        )

    def report(self, rounds: dict[tuple[str, str], list[Row]], busy: float) -> None:
        print("\n/_edge/decide against the sidecar's passthrough of the same page (one core)")
        hdr = [
            "page",
            "target",
            "req/s",
            "x passthrough",
            "p50 ms",
            "p99 ms",
            "CPU ms/req",
            "errors",
        ]
        rows = []
        for page in PAGES:
            base = median_row(rounds[(page, "passthrough")])
            for name in ("passthrough", "server-personalized", "browser page", DECIDE):
                row = median_row(rounds[(page, name)])
                if row.na:
                    rows.append([page, name, "n/a", row.na[:40], "", "", "", ""])
                    continue
                ratio = row.rps / base.rps if base.rps else 0.0
                rows.append(
                    [
                        page,
                        name,
                        f"{row.rps:,.0f}",
                        f"{ratio:.2f}",
                        f"{row.p50_ms:.2f}",
                        f"{row.p99_ms:.2f}",
                        f"{row.cpu_ms_per_req:.3f}",
                        str(row.errors),
                    ]
                )
        print_table(hdr, rows, right=set(range(2, len(hdr))))
        for page in PAGES:
            ratios = [
                d.rps / p.rps
                for p, d in zip(rounds[(page, "passthrough")], rounds[(page, DECIDE)], strict=True)
                if p.rps and not (p.na or d.na)
            ]
            if ratios:
                verdict = "met" if min(ratios) >= GOAL else "NOT met"
                print(
                    f"decide / passthrough {page}: {min(ratios):.2f}-{max(ratios):.2f} "
                    f"(goal >= {GOAL:.2f}: {verdict})"
                )
        if busy > 0.2:
            print(f"note: {busy:.1f} cores were busy before the run: figures are noisy")
        for problem in self.problems:
            print(f"PROBLEM: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="/_edge/decide vs passthrough, one core.")
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument(
        "--edge", default=str(DEFAULT_EDGE), help=f"edge executable (default {DEFAULT_EDGE})"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    missing = [t for t in ("nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    return run_bench(Bench(args), args.keep_work)


if __name__ == "__main__":
    sys.exit(main())

"""A bounded load run: mixed traffic through one `edge serve` for minutes, no errors, flat memory.

    python bench/load.py [--seconds 120] [--connections 64] [--new-visitors 0..13]
                         [--sample 5] [--set EDGE_NAME=VALUE] [--json PATH] [--keep-work]

The sidecar runs as ``bench/personalize.py``'s ``500 visitors`` mode (the repository's
rules and snippets, the demo catalogue, 500 returning visitors whose histories make
their pages personalized) in front of nginx serving the demo shop's rendered ``/`` and
``/c/scarpe-donna``, a plain page and static assets. wrk (``--connections``, default
64) sends, in every 20 requests, 13 pages (7 ``/`` and 4 ``/c/scarpe-donna``,
personalized, and 2 of the plain page) with a returning visitor's cookie, taking turns
among the 500, and 7 assets (CSS, JS, an image) with the cookie, as a browser sends
them. ``--new-visitors K`` sends K of the 13 pages without a cookie: a new visitor each
time. Meanwhile the sidecar's resident memory (``VmRSS`` of ``/proc/PID/status``) is
sampled every ``--sample`` seconds.

Goals (issue 15): zero errors (socket errors and responses >= 400) and memory flat
within 10 % after the warm-up (the first quarter of the run, at most 20 s): the largest
sample after it at most 1.10x the first one. Before and after the run the personalized
pages must carry their edits (``bench/personalize.py``'s checks). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from personalize import (
    BROWSER,
    DEFAULT_EDGE,
    MANY,
    PAGES,
    Sidecar,
    check_page,
    serve_pages,
    snapshot_demo,
    start_sidecar,
)
from proxy import (
    LOAD_CORE,
    WRK_LUA,
    Procs,
    preflight,
    print_table,
    run_bench,
    work_dir,
)

from edge.demo.catalog import write_feed

GOAL_FLAT = 0.10  # largest RSS sample after warm-up over the first one, minus 1
MAX_WARMUP = 20.0

ASSETS = {
    "static/app.css": 28_000,
    "static/app.js": 64_000,
    "static/logo.png": 18_000,
}
PLAIN = "about.html"
PLAN = [  # one round of 20 requests: (path, whose cookie)
    *[("/", "returning")] * 7,
    *[("/c/scarpe-donna", "returning")] * 4,
    *[(f"/{PLAIN}", "returning")] * 2,
    *[("/static/app.css", "returning")] * 3,
    *[("/static/app.js", "returning")] * 2,
    *[("/static/logo.png", "returning")] * 2,
]
PAGE_SLOTS = 13


def plan(new_visitors: int) -> list[tuple[str, str]]:
    """:data:`PLAN` with *new_visitors* of its 13 page requests sent without a cookie
    (a new visitor each time), taken evenly from ``/``, the category and the plain page."""
    pages, assets = PLAN[:PAGE_SLOTS], PLAN[PAGE_SLOTS:]
    step = PAGE_SLOTS / max(new_visitors, 1)
    chosen = {int(k * step) for k in range(new_visitors)}
    return [(path, "new" if k in chosen else who) for k, (path, who) in enumerate(pages)] + assets


MIX_LUA = r"""
local cookies = {}
for line in io.lines("%(cookies)s") do cookies[#cookies + 1] = line end
local plan = {%(plan)s}
local browser = {%(browser)s}
local i = 0
request = function()
  i = i + 1
  local slot = plan[(i %% #plan) + 1]
  local headers = {}
  for k, v in pairs(browser) do headers[k] = v end
  if slot[2] == "returning" then headers["Cookie"] = cookies[(i %% #cookies) + 1] end
  return wrk.format("GET", slot[1], headers)
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string for these characters


def mix_lua(cookies: Path, slots: list[tuple[str, str]]) -> str:
    plan = ", ".join(f"{{{_lua_string(p)}, {_lua_string(who)}}}" for p, who in slots)
    browser = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in BROWSER.items())
    return MIX_LUA % {"cookies": cookies, "plan": plan, "browser": browser} + WRK_LUA


def rss_kb(pid: int) -> int:
    """VmRSS of *pid* in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Sampler:
    """VmRSS of one process every *every* seconds, on a thread."""

    pid: int
    every: float
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Sampler:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self._t0, rss_kb(self.pid)))
            if self._stop.wait(self.every):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Procs()
        self.work = work_dir("load-")
        self.problems: list[str] = []

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def start_upstream(self, pages: dict[str, bytes]) -> int:
        www = self.work / "www"
        (www / "static").mkdir(parents=True)
        for path, name in PAGES.items():
            (www / name).write_bytes(pages[path])
        (www / PLAIN).write_bytes(
            b"<!doctype html><html><head><title>About us</title></head><body>"
            + b"<p>A shop since 1952.</p>" * 200
            + b"</body></html>"
        )
        for name, size in ASSETS.items():
            (www / name).write_bytes(os.urandom(size))
        return serve_pages(self.procs, self.work, www)[1]

    def check(self, sidecar: Sidecar, pages: dict[str, bytes], when: str) -> None:
        for path, original in pages.items():
            problems, _seen = check_page(sidecar, path, original)
            self.problems += [f"{path} ({when}): {p}" for p in problems]

    def wrk(self, port: int, lua: Path) -> dict[str, Any]:
        a = self.args
        argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{a.connections}"]
        argv += [f"-d{a.seconds:g}s", "--latency", "--timeout", "5s", "-s", str(lua)]
        argv.append(f"http://127.0.0.1:{port}/")
        log = self.work / "wrk.log"
        p = self.procs.start(argv, log)
        try:
            p.wait(a.seconds + 60)
        finally:
            self.procs.stop(p)
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("WRKJSON "):
                return dict(json.loads(line[len("WRKJSON ") :]))
        raise RuntimeError(f"wrk printed no result (exit {p.returncode}): {text[-500:]}")

    def run(self) -> int:
        a = self.args
        self.log(f"work dir: {self.work}")
        feed = write_feed(self.work / "catalog.csv")
        self.log("snapshotting the demo shop's / and /c/scarpe-donna")
        pages = snapshot_demo(self.procs, self.work)
        upstream = f"http://127.0.0.1:{self.start_upstream(pages)}"
        self.log("starting edge serve and giving 500 visitors their histories")
        launcher = ["env", *a.set, a.edge] if a.set else None  # `env` adds the settings
        sidecar = start_sidecar(
            self.procs, self.work, Path(a.edge), MANY, upstream, feed, "load", launcher
        )
        lua = self.work / "mix.lua"
        slots = plan(a.new_visitors)
        lua.write_text(mix_lua(self.work / "load-500-visitors" / "cookies.txt", slots))
        self.check(sidecar, pages, "before")

        warmup = min(MAX_WARMUP, a.seconds / 4)
        self.log(f"load: {a.seconds:g} s, {a.connections} connections (warm-up {warmup:g} s)")
        before = rss_kb(sidecar.proc.pid)
        sampler = Sampler(sidecar.proc.pid, a.sample).start()
        try:
            result = self.wrk(sidecar.port, lua)
        finally:
            sampler.stop()
        self.check(sidecar, pages, "after")
        if sidecar.proc.poll() is not None:
            self.problems.append(f"edge serve exited with {sidecar.proc.returncode}")
        return self.report(result, before, sampler.samples, warmup)

    def report(
        self, r: dict[str, Any], before: int, samples: list[tuple[float, int]], warmup: float
    ) -> int:
        a = self.args
        seconds = r["duration_us"] / 1e6
        errors = {k: r[k] for k in ("connect", "read", "write", "timeout", "status") if r[k]}
        total = sum(errors.values())
        new = f"; {a.new_visitors} of them new visitors" if a.new_visitors else ""
        print(
            f"\nload: edge serve in front of nginx, wrk -c{a.connections}, {seconds:.0f} s; "
            f"in every 20 requests {PAGE_SLOTS} pages (returning visitors, {MANY} taking "
            f"turns{new}) and {20 - PAGE_SLOTS} assets"
        )
        spelled = ", ".join(f"{k}={v}" for k, v in errors.items())
        print_table(
            ["requests", "req/s", "p50 ms", "p99 ms", "max ms", "MB received", "errors"],
            [
                [
                    f"{r['requests']:,}",
                    f"{r['requests'] / seconds:,.0f}",
                    f"{r['p50'] / 1000:.2f}",
                    f"{r['p99'] / 1000:.2f}",
                    f"{r['max'] / 1000:.1f}",
                    f"{r['bytes'] / 1e6:,.0f}",
                    f"{total} ({spelled})" if total else "0",
                ]
            ],
            right=set(range(7)),
        )
        after = [(t, kb) for t, kb in samples if t >= warmup and kb]
        print(f"\nresident memory (VmRSS) of edge serve, every {a.sample:g} s:")
        print("  " + " ".join(f"{kb / 1024:.0f}" for _, kb in samples if kb) + " MB")
        if not after:
            print("no samples after the warm-up: run longer (--seconds)")
            return 1
        first, last, peak = after[0][1], after[-1][1], max(kb for _, kb in after)
        growth = peak / first - 1
        print_table(
            ["before load", "first after warm-up", "last", "max", "max / first"],
            [
                [
                    f"{before / 1024:.1f} MB",
                    f"{first / 1024:.1f} MB (at {after[0][0]:.0f} s)",
                    f"{last / 1024:.1f} MB",
                    f"{peak / 1024:.1f} MB",
                    f"{peak / first:.3f}",
                ]
            ],
            right=set(range(5)),
        )
        ok_errors = total == 0
        ok_flat = growth <= GOAL_FLAT
        print(
            f"\ngoal: zero errors: {'ok' if ok_errors else 'MISSED'} ({total}); memory flat "
            f"within {GOAL_FLAT:.0%} after warm-up: {'ok' if ok_flat else 'MISSED'} "
            f"({growth:+.1%})"
        )
        for problem in self.problems:
            print(f"PROBLEM: {problem}")
        if a.json:
            Path(a.json).write_text(
                json.dumps({"wrk": r, "rss_kb": samples, "before_kb": before, "warmup_s": warmup})
            )
        return 0 if ok_errors and not self.problems else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A bounded load run through edge serve: errors and resident memory."
    )
    parser.add_argument(
        "--seconds", type=float, default=120, help="length of the run (default 120)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--sample", type=float, default=5, help="seconds between memory samples (default 5)"
    )
    parser.add_argument(
        "--edge", default=str(DEFAULT_EDGE), help=f"edge executable (default {DEFAULT_EDGE})"
    )
    parser.add_argument(
        "--new-visitors",
        type=int,
        default=0,
        choices=range(PAGE_SLOTS + 1),
        metavar=f"0..{PAGE_SLOTS}",
        help=f"of the {PAGE_SLOTS} pages in every 20 requests, how many are sent without a "
        "cookie: a new visitor each (default 0)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="EDGE_NAME=VALUE",
        help="a setting for the sidecar, e.g. --set EDGE_REPLAY_CACHE_BYTES=0 (repeatable)",
    )
    parser.add_argument("--json", help="also write the numbers as JSON to this path")
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the work dir (configs, logs)"
    )
    args = parser.parse_args(argv)
    if preflight():
        return 2
    return run_bench(Bench(args), args.keep_work)


if __name__ == "__main__":
    sys.exit(main())

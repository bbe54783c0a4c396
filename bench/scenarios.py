"""Scenario engine benchmark: the shipped library (rules/scenarios.toml) on synthetic
customers, one core.

    .venv/bin/python bench/scenarios.py [--profiles N]

Rows: ``journeys.advance`` on a write where no step is due (what most writes and due
touches pay), ``journeys.advance`` where one step is due (its payload rendered: a
message), and the whole ``Activator.after`` (segment transitions and next change, the
"time" half, included) on the same profiles, for scale.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.activation import Activator
from edge.activation.journeys import advance
from edge.profiles import events as ev
from edge.profiles.model import DAY, Profile, decode, encode
from edge.rules import LIBRARY_DIR, LiveRules

NOW = 1_800_000_000
HOUR = 3600


def customers(n: int, activator: Activator) -> list[bytes]:
    """Encoded profiles, activated at NOW: a third with a cart, up to five past orders."""
    out = []
    for i in range(n):
        p = Profile(visitor_id=f"v{i}")
        for k in range(i % 6):
            order = ev.OrderCompleted(
                order_id=f"o{k}", total=60.0 + 40 * k, ts=NOW - (k + 1) * 40 * DAY
            )
            ev.apply(p, order, NOW, ev.Source.SHOP)
        if i % 3 == 0:
            ev.apply(p, ev.ProductAdded(product_id="a", price=10.0, ts=NOW), NOW, ev.Source.SHOP)
        activator.after(p, None, NOW)
        out.append(encode(p))
    return out


def rate(encoded: list[bytes], run: Callable[[Profile], int]) -> tuple[float, int]:
    """(profiles per second, results) over fresh copies, best of three."""
    best, results = 0.0, 0
    for _ in range(3):
        profiles = [decode(b) for b in encoded]
        start = time.perf_counter()
        results = sum(run(p) for p in profiles)
        best = max(best, len(profiles) / (time.perf_counter() - start))
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for name in ("segments.toml", "scenarios.toml", "shop.toml"):
            shutil.copy(LIBRARY_DIR / name, Path(work) / name)
        rules = LiveRules(work)
        activator = Activator(rules)
        ruleset = rules.ruleset
        encoded = customers(args.profiles, activator)
        carts = [b for i, b in enumerate(encoded) if i % 3 == 0]
        quiet = NOW + HOUR  # nothing due yet
        due = NOW + 4 * HOUR  # every cart's reminder
        rows = [
            ("journeys.advance, nothing due", encoded, quiet, "advance"),
            ("journeys.advance, a step due", carts, due, "advance"),
            ("Activator.after, nothing due", encoded, quiet, "after"),
            ("Activator.after, a step due", carts, due, "after"),
        ]
        print(f"scenarios: {len(ruleset.scenarios)} (the library), one core")
        print(f"{'what':34} {'profiles':>9} {'profiles/s':>12} {'messages':>9}")
        for label, profiles, now, what in rows:
            if what == "advance":
                per, sent = rate(
                    profiles,
                    lambda p, now=now: len(
                        advance(p, ruleset, [], now, activator._render).messages
                    ),
                )
            else:
                per, sent = rate(profiles, lambda p, now=now: len(activator.after(p, None, now)))
            print(f"{label:34} {len(profiles):>9,} {per:>12,.0f} {sent:>9,}")


if __name__ == "__main__":
    main()

"""Rule evaluation benchmark: the shipped library and 1,000 generated segments, compiled,
against GrowthBook's condition evaluator and a JSON-Logic library on the same segments.

    .venv/bin/python bench/rules.py

Peers get a flat dict of precomputed attributes (what they would be given in
practice); the compiled evaluator gets a Context whose values were already computed
("warm"), the same starting point. Context building plus a first evaluation (what a
request really pays) is reported on its own row. Compiling is timed from the segments'
text (parse, check, generate) and, separately, from a rule file on disk (TOML too).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.profiles import events as ev
from edge.profiles.model import DAY, Profile
from edge.rules import (
    LIBRARY_DIR,
    RequestInfo,
    ShopStats,
    build_context,
    compile_segments,
    load_rules,
)

NOW = 1_790_000_000


def p50(fn, loops: int, repeat: int = 15) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(loops):
            fn()
        times.append((time.perf_counter() - t) / loops)
    return statistics.median(times) * 1e6


def profile() -> Profile:
    p = Profile(visitor_id="v", customer_id="c")
    rng = random.Random(1)
    for i in range(8):
        ev.apply(
            p,
            ev.OrderCompleted(
                order_id=f"o{i}",
                total=rng.choice([40.0, 120.0]),
                ts=NOW - rng.randint(1, 300) * DAY,
                products=[ev.Product(product_id="p", category="shoes", brand="Ferri")],
            ),
            NOW,
            ev.Source.SHOP,
        )
    for d in range(60, 0, -3):
        ev.apply(p, ev.PageViewed(path="/", ts=NOW - d * DAY), NOW, ev.Source.SHOP)
        ev.apply(p, ev.EmailSent(ts=NOW - d * DAY), NOW, ev.Source.SHOP)
    ev.apply(
        p,
        ev.Identify(
            traits={"birth_year": 1985, "latitude": 45.47, "longitude": 9.2, "tier": "gold"}, ts=NOW
        ),
        NOW,
        ev.Source.SHOP,
    )
    return p


# Generated segments: a threshold over a windowed counter, a string test, a boolean mix.
FIELDS = [
    "orders_within(30d)",
    "orders_within(90d)",
    "spent_within(180d)",
    "pageviews_within(30d)",
    "visits",
    "orders",
    "email_opens_within(90d)",
    "avg_order_value",
]


def generated(n: int, *, unique: bool = False) -> dict[str, str]:
    """*n* segments of three shapes over :data:`FIELDS`; with *unique* every condition
    text differs (thresholds from the index), since a rule set that repeats a
    condition compiles that text once."""
    rng = random.Random(7)
    out = {}
    for i in range(n):
        a, b = rng.sample(FIELDS, 2)
        kind = i % 3
        if kind == 0:
            least = i + 1 if unique else rng.randint(1, 20)
            out[f"g{i}"] = f"{a} >= {least}"
        elif kind == 1:
            least = i % 5 + 1 if unique else rng.randint(1, 5)
            below = i + 5 if unique else rng.randint(5, 50)
            out[f"g{i}"] = f"{a} >= {least} and {b} < {below}"
        else:
            above = i if unique else rng.randint(1, 9)
            out[f"g{i}"] = f"geo.country in ['IT', 'FR'] or {a} > {above}"
    return out


def _rule_file(segments: dict[str, str]) -> str:
    """The segments as a merchant would write them in a rule file."""
    return "\n".join(f"[segments.{n}]\nwhen = {json.dumps(w)}\n" for n, w in segments.items())


def gb_condition(when: str):  # type: ignore[no-untyped-def]
    """GrowthBook's format for the generated shapes."""
    parts = [p.strip() for p in when.replace(" or ", " and ").split(" and ")]
    conds = []
    for part in parts:
        if " in " in part:
            conds.append({"geo_country": {"$in": ["IT", "FR"]}})
            continue
        left, op, right = part.split(" ")
        conds.append({left: {{">=": "$gte", "<": "$lt", ">": "$gt"}[op]: float(right)}})
    return {"$or": conds} if " or " in when else {"$and": conds}


def jl_condition(when: str):  # type: ignore[no-untyped-def]
    parts = [p.strip() for p in when.replace(" or ", " and ").split(" and ")]
    conds = []
    for part in parts:
        if " in " in part:
            conds.append({"in": [{"var": "geo_country"}, ["IT", "FR"]]})
            continue
        left, op, right = part.split(" ")
        conds.append({op: [{"var": left}, float(right)]})
    return {"or": conds} if " or " in when else {"and": conds}


def main() -> None:
    rows = []
    prof = profile()
    req = RequestInfo(country="IT", device="mobile", utm={"medium": "email"})
    shop = ShopStats(avg_order_value=80.0)
    library, errors = load_rules(LIBRARY_DIR)
    assert library is not None, errors
    ctx = build_context(prof, req, NOW, shop)
    library.evaluate(ctx)
    rows.append(
        (
            f"library ({len(library.segment_names)} segments), warm context",
            p50(lambda: library.evaluate(ctx), 20_000),
            "goal <= 2 us",
        )
    )
    rows.append(
        (
            "library, build_context + first evaluation",
            p50(lambda: library.evaluate(build_context(prof, req, NOW, shop)), 2_000),
            "real per-request cost",
        )
    )

    segs = generated(1000)
    big = compile_segments(segs)
    compile_ms = p50(lambda: compile_segments(segs), 1, 7) / 1e3
    unique = generated(1000, unique=True)
    distinct_ms = p50(lambda: compile_segments(unique), 1, 7) / 1e3
    with tempfile.TemporaryDirectory() as tmp:
        text = _rule_file(segs)
        (Path(tmp) / "segments.toml").write_text(text)
        load_ms = p50(lambda: load_rules(tmp), 1, 7) / 1e3
    ctx = build_context(prof, req, NOW, shop)
    big.evaluate(ctx)
    ours = p50(lambda: big.evaluate(ctx), 500)
    rows.append(("1,000 generated segments, warm context", ours, "goal <= 40 us"))
    rows.append(
        (
            "1,000 generated, build_context + first evaluation",
            p50(lambda: big.evaluate(build_context(prof, req, NOW, shop)), 200),
            "",
        )
    )

    flat = {f: ctx.value(f, *_reader(f)) for f in FIELDS}
    flat["geo_country"] = "IT"
    peers = []
    try:
        from growthbook.core import evalCondition

        gb = [gb_condition(w) for w in segs.values()]
        gb_us = p50(lambda: [evalCondition(flat, c) for c in gb], 20, 5)
        rows.append(
            ("1,000 generated, GrowthBook evalCondition", gb_us, f"ours {gb_us / ours:.0f}x faster")
        )
        peers.append("growthbook")
    except ImportError:
        rows.append(("GrowthBook", float("nan"), "pip install growthbook (bench extra)"))
    try:
        from json_logic import jsonLogic

        jl = [jl_condition(w) for w in segs.values()]
        jl_us = p50(lambda: [jsonLogic(c, flat) for c in jl], 10, 5)
        rows.append(
            (
                "1,000 generated, json-logic-qubit jsonLogic",
                jl_us,
                f"ours {jl_us / ours:.0f}x faster",
            )
        )
    except ImportError:
        rows.append(("JSON-Logic", float("nan"), "pip install json-logic-qubit (bench extra)"))

    print(f"{'what':<52} {'p50 us':>10}  note")
    for name, us, note in rows:
        print(f"{name:<52} {us:>10.2f}  {note}")
    for name, ms, note in (
        ("compile 1,000 segments (check, generate)", compile_ms, "goal <= 100 ms"),
        ("compile 1,000 segments, no condition repeated", distinct_ms, "goal <= 100 ms"),
        ("load a 1,000-segment rule file (+ read, TOML)", load_ms, "tomllib included"),
    ):
        print(f"{name:<52} {ms * 1000:>10.0f}  {note} ({ms:.0f} ms)")


def _reader(path: str):  # type: ignore[no-untyped-def]
    from edge.rules import functions as fn

    if "(" in path:
        name, arg = path[:-1].split("(")
        from edge.rules.lang import parse_duration

        return fn.FUNCTIONS[name].call, (parse_duration(arg),)
    return fn.field_reader(path)


if __name__ == "__main__":
    main()

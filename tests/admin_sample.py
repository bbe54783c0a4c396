"""A hand-made report in the shape of issue 16's shared contract (the JSON
``edge.report.build`` returns), its lifts computed by edge/lift.py from the counts, for
the admin page's tests: a placement with a winner, an inconclusive one, one whose split
is broken (SRM) and one too small to read."""

from __future__ import annotations

from typing import Any

from edge import lift

Counts = tuple[int, int, float, float]
"""visitors, conversions, revenue, revenue squared (per-visitor sums)."""


def _arm(name: str, counts: Counts, holdout: Counts | None) -> dict[str, Any]:
    visitors, conversions, revenue, revenue_sq = counts
    arm = lift.Arm(visitors, conversions, revenue, revenue_sq)
    out: dict[str, Any] = {
        "arm": name,
        "visitors": visitors,
        "exposures": visitors * 3,
        "clicks": 0 if name == "holdout" else visitors // 7,
        "conversions": conversions,
        "revenue": revenue,
        "conversion_rate": arm.rate,
        "revenue_per_visitor": arm.revenue_per_visitor,
    }
    if holdout is None:
        return out
    c = lift.compare(arm, lift.Arm(*holdout))

    def part(pair: Any) -> tuple[float | None, list[float] | None]:
        return (pair[0], list(pair[1])) if pair else (None, None)

    absolute, absolute_ci = part(c.absolute)
    relative, relative_ci = part(c.relative)
    rev_abs, rev_abs_ci = part(c.revenue_absolute)
    rev_rel, rev_rel_ci = part(c.revenue_relative)
    out["lift"] = {
        "conversion_rate": None
        if absolute is None
        else {
            "absolute": absolute,
            "absolute_ci95": absolute_ci,
            "relative": relative,
            "ci95": relative_ci,
        },
        "revenue_per_visitor": None
        if rev_abs is None
        else {
            "absolute": rev_abs,
            "absolute_ci95": rev_abs_ci,
            "relative": rev_rel,
            "ci95": rev_rel_ci,
        },
    }
    out["too_small"] = c.too_small
    out["significant"] = c.significant
    return out


def _arms(arms: dict[str, Counts]) -> list[dict[str, Any]]:
    holdout = arms["holdout"]
    return [_arm(n, arms[n], None if n == "holdout" else holdout) for n in arms]


def _placement(
    pid: str,
    slot: str,
    segment: str,
    split: dict[str, float],
    arms: dict[str, Counts],
    segments: dict[str, dict[str, Counts]] | None = None,
) -> dict[str, Any]:
    names = list(arms)
    srm = lift.srm_p([arms[n][0] for n in names], [split[n] for n in names])
    return {
        "id": pid,
        "slot": slot,
        "segment": segment,
        "split": split,
        "srm_p": srm,
        "srm_broken": srm is not None and srm < lift.SRM_THRESHOLD,
        "arms": _arms(arms),
        "segments": [
            {"segment": name, "arms": _arms(counted)} for name, counted in (segments or {}).items()
        ],
        "daily": _daily(arms),
    }


DAYS = [f"2026-11-{d:02d}" for d in range(24, 31)] + [f"2026-12-{d:02d}" for d in range(1, 8)]


def _daily(arms: dict[str, Counts]) -> list[dict[str, Any]]:
    """The arms' counts spread over two weeks, a little uneven (as days are)."""
    rows = []
    for name, (visitors, conversions, revenue, _) in arms.items():
        for i, day in enumerate(DAYS):
            share = (1 + (i * 7 + len(name)) % 5) / sum(
                1 + (j * 7 + len(name)) % 5 for j in range(len(DAYS))
            )
            rows.append(
                {
                    "day": day,
                    "arm": name,
                    "visitors": round(visitors * share),
                    "conversions": round(conversions * share),
                    "revenue": revenue * share,
                }
            )
    return rows


def _revenue(conversions: int, order: float) -> tuple[float, float]:
    return conversions * order, conversions * order * order


def counts(visitors: int, conversions: int, order: float = 80.0) -> Counts:
    return (visitors, conversions, *_revenue(conversions, order))


def sample_report() -> dict[str, Any]:
    return {
        "generated": "2026-12-07T08:00:00Z",
        "since": "2026-11-08",
        "window_days": 30,
        "placements": [
            _placement(  # "warm" wins clearly; "bold" does not
                "hero-vip",
                "home-hero",
                "vip",
                {"holdout": 0.1, "warm": 0.45, "bold": 0.45},
                {
                    "holdout": counts(2000, 100),
                    "warm": counts(9000, 720),
                    "bold": counts(9050, 470),
                },
                {  # the same visitors, by the segments they were in when first exposed
                    "vip": {
                        "holdout": counts(2000, 100),
                        "warm": counts(9000, 720),
                        "bold": counts(9050, 470),
                    },
                    "mobile_user": {
                        "holdout": counts(600, 24),
                        "warm": counts(2700, 190),
                        "bold": counts(2650, 120),
                    },
                },
            ),
            _placement(  # readable, but the interval crosses zero
                "cart-reminder",
                "cart-banner",
                "cart_abandoner",
                {"holdout": 0.5, "default": 0.5},
                {"holdout": counts(3000, 150), "default": counts(3000, 160)},
            ),
            _placement(  # the split is 50/50, the arms are not
                "lapsed-offer",
                "home-hero",
                "lapsed",
                {"holdout": 0.5, "default": 0.5},
                {"holdout": counts(1000, 60), "default": counts(3000, 200)},
            ),
            _placement(  # a handful of visitors
                "newsletter-form",
                "footer",
                "",
                {"holdout": 0.2, "default": 0.8},
                {"holdout": counts(12, 1), "default": counts(50, 3)},
            ),
        ],
    }


def sample_snapshots(days: list[str], segments: dict[str, list[int]]) -> list[dict[str, Any]]:
    """Snapshots as the store returns them: per day, counts per segment."""
    return [
        {
            "day": day,
            "total": 1000,
            "counts": {name: values[i] for name, values in segments.items()},
            "taken": 0,
        }
        for i, day in enumerate(days)
    ]

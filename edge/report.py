"""The merchant's report: what each placement's arms did, and their lift (pure: no I/O).

:func:`build` turns the store's daily aggregates (:meth:`Store.report_rows`: per day of
first exposure, placement, arm and segment, the units, exposures, converting units,
revenue and revenue squared, clicks, views) and the rule set's placements into the
report's JSON (issue 16's contract, read by ``edge report``, ``/_edge/report.json``
and the admin page):

* per arm: ``visitors`` (units first exposed since ``since``: a customer on several
  cookies counts once), ``exposures``, ``clicks``, ``conversions`` (units with at
  least one order within the attribution window after their first exposure),
  ``revenue``, ``conversion_rate`` and ``revenue_per_visitor``;
* per variant, against the holdout: ``lift`` (absolute and relative, with 95%
  intervals, :func:`edge.lift.compare`), ``too_small`` and ``significant``;
* per placement: the configured ``split`` and the sample-ratio-mismatch check
  (``srm_p``, ``srm_broken`` below :data:`edge.lift.SRM_THRESHOLD`), the ``daily``
  rows for charts, and ``segments``: per reported segment (``report_segments``) the
  same arms, with lift against the segment's own holdout, over the units that were in
  it at their first exposure;
* per arm also ``views`` (exposures the browser saw: 0 until the snippet reports them).

Floats are not rounded here (the page and the CSV round for display).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from edge import lift
from edge.placements import split
from edge.profiles.model import DAY
from edge.profiles.store import ReportRow

__all__ = ["build", "csv_rows", "day_number", "day_text", "split_of", "table"]

HOLDOUT = "holdout"


def day_number(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days


def day_text(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def split_of(spec: Any) -> dict[str, float]:
    """arm -> configured share of a placement's eligible units."""
    return dict(split(spec))


class _Sums:
    __slots__ = ("clicks", "converters", "exposures", "revenue", "revenue_sq", "units", "views")

    def __init__(self) -> None:
        self.units = self.exposures = self.converters = self.clicks = self.views = 0
        self.revenue = self.revenue_sq = 0.0

    def add(self, row: ReportRow) -> None:
        self.units += row.units
        self.exposures += row.exposures
        self.converters += row.converters
        self.revenue += row.revenue
        self.revenue_sq += row.revenue_sq
        self.clicks += row.clicks
        self.views += row.views

    def arm(self) -> lift.Arm:
        return lift.Arm(self.units, self.converters, self.revenue, max(self.revenue_sq, 0.0))


def _interval(value: tuple[float, tuple[float, float]] | None) -> tuple[Any, Any]:
    if value is None:
        return None, None
    return value[0], [value[1][0], value[1][1]]


def _lift(c: lift.Comparison) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, absolute, relative in (
        ("conversion_rate", c.absolute, c.relative),
        ("revenue_per_visitor", c.revenue_absolute, c.revenue_relative),
    ):
        if absolute is None and relative is None:
            out[name] = None
            continue
        a, a_ci = _interval(absolute)
        r, r_ci = _interval(relative)
        out[name] = {"absolute": a, "absolute_ci95": a_ci, "relative": r, "ci95": r_ci}
    return out


def _arm_json(name: str, sums: _Sums) -> dict[str, Any]:
    n = sums.units
    return {
        "arm": name,
        "visitors": n,
        "exposures": sums.exposures,
        "views": sums.views,
        "clicks": sums.clicks,
        "conversions": sums.converters,
        "revenue": sums.revenue,
        "conversion_rate": sums.converters / n if n else None,
        "revenue_per_visitor": sums.revenue / n if n else None,
    }


def _arms(split: dict[str, float], sums: dict[str, _Sums]) -> list[dict[str, Any]]:
    """Each arm's JSON, the holdout first, each variant with its lift against it."""
    for name in split:
        sums.setdefault(name, _Sums())
    names = sorted(sums, key=lambda a: (a != HOLDOUT, a not in split, a))
    holdout = sums.get(HOLDOUT)
    arms = []
    for name in names:
        entry = _arm_json(name, sums[name])
        if name != HOLDOUT:
            if holdout is not None and holdout.units and sums[name].units:
                c = lift.compare(sums[name].arm(), holdout.arm())
                entry["lift"] = _lift(c)
                entry["too_small"] = c.too_small
                entry["significant"] = c.significant
            else:
                entry["lift"] = None
                entry["too_small"] = True
                entry["significant"] = False
        arms.append(entry)
    return arms


def _placement(
    pid: str,
    slot: str,
    segment: str,
    split: dict[str, float],
    rows: list[ReportRow],
    order: Sequence[str] = (),
) -> dict[str, Any]:
    """One placement's JSON from its rows: the arms' totals (segment ``""``) and, under
    ``segments``, the same per segment the units were in at their first exposure
    (*order*: the rules' segment order; others after, by name)."""
    sums: dict[str, _Sums] = {}
    daily: dict[tuple[int, str], _Sums] = {}
    by_segment: dict[str, dict[str, _Sums]] = {}
    for row in rows:
        if row.segment:
            by_segment.setdefault(row.segment, {}).setdefault(row.arm, _Sums()).add(row)
            continue
        sums.setdefault(row.arm, _Sums()).add(row)
        daily.setdefault((row.day, row.arm), _Sums()).add(row)
    arms = _arms(split, sums)
    names = [a["arm"] for a in arms]
    weights = [split.get(a, 0.0) for a in names]
    srm = lift.srm_p([sums[a].units for a in names], weights) if split else None
    rank = {name: i for i, name in enumerate(order)}
    segments = [
        {"segment": name, "arms": _arms(split, by_segment[name])}
        for name in sorted(by_segment, key=lambda n: (rank.get(n, len(rank)), n))
    ]
    return {
        "id": pid,
        "slot": slot,
        "segment": segment,
        "split": split,
        "srm_p": srm,
        "srm_broken": srm is not None and srm < lift.SRM_THRESHOLD,
        "arms": arms,
        "segments": segments,
        "daily": [
            {
                "day": day_text(day),
                "arm": arm,
                "visitors": s.units,
                "exposures": s.exposures,
                "conversions": s.converters,
                "revenue": s.revenue,
            }
            for (day, arm), s in sorted(daily.items())
        ],
    }


def build(
    rows: Iterable[ReportRow],
    placements: Sequence[Any],
    *,
    since_day: int,
    window_seconds: int,
    now: float,
    only: str | None = None,
    segment: str | None = None,
    segment_order: Sequence[str] = (),
) -> dict[str, Any]:
    """The report's JSON. *placements*: the rule set's placement rules (``id`` and
    ``spec``), in their order; placements that are no longer in the rules but have
    rows come after them (without a split: no SRM check). *only*: one placement id.
    *segment*: each placement's ``segments`` keep that one only (and the report says
    so under ``segment``); *segment_order*: the rules' segments, the breakdown's order."""
    by_placement: dict[str, list[ReportRow]] = {}
    for row in rows:
        if row.day >= since_day and (segment is None or row.segment in ("", segment)):
            by_placement.setdefault(row.placement, []).append(row)
    out = []
    seen = set()
    for rule in placements:
        spec = rule.spec
        if rule.id in seen or (only is not None and rule.id != only):
            continue
        seen.add(rule.id)
        out.append(
            _placement(
                rule.id,
                spec.slot,
                spec.segment or spec.when,
                split_of(spec),
                by_placement.get(rule.id, []),
                segment_order,
            )
        )
    for pid in sorted(by_placement):
        if pid not in seen and (only is None or pid == only):
            out.append(_placement(pid, "", "", {}, by_placement[pid], segment_order))
    generated = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    days = window_seconds / DAY
    built = {
        "generated": generated,
        "since": day_text(since_day),
        "window_days": int(days) if days.is_integer() else days,
        "placements": out,
    }
    if segment is not None:
        built["segment"] = segment
    return built


# --- the command line's views --------------------------------------------------------

CSV_HEADER = (
    "placement",
    "segment",
    "arm",
    "visitors",
    "exposures",
    "conversions",
    "conversion_rate",
    "revenue",
    "revenue_per_visitor",
    "lift_relative",
    "lift_ci95_low",
    "lift_ci95_high",
    "lift_absolute",
    "srm_p",
    "srm_broken",
    "too_small",
    "significant",
    "views",
)


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"


def _views(report: dict[str, Any], p: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(segment, arms) of placement *p* to show: its totals (segment ``""``) and each
    segment's, or with ``--segment`` that segment's only."""
    segments = [(s["segment"], s["arms"]) for s in p.get("segments", [])]
    if "segment" in report:
        return segments
    return [("", p["arms"]), *segments]


def csv_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per placement, segment (empty: all the placement's visitors) and arm,
    numbers rounded for reading."""
    rows = [list(CSV_HEADER)]
    for p in report["placements"]:
        for segment, arms in _views(report, p):
            rows += _csv_arms(p, segment, arms)
    return rows


def _csv_arms(p: dict[str, Any], segment: str, arms: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for a in arms:
        cr = (a.get("lift") or {}).get("conversion_rate") or {}
        ci = cr.get("ci95") or [None, None]
        rows.append(
            [
                p["id"],
                segment,
                a["arm"],
                str(a["visitors"]),
                str(a["exposures"]),
                str(a["conversions"]),
                _num(a["conversion_rate"]),
                _num(a["revenue"], 2),
                _num(a["revenue_per_visitor"], 2),
                _num(cr.get("relative")),
                _num(ci[0]),
                _num(ci[1]),
                _num(cr.get("absolute")),
                _num(p["srm_p"]),
                "yes" if p["srm_broken"] else "no",
                "" if a["arm"] == HOLDOUT else ("yes" if a["too_small"] else "no"),
                "" if a["arm"] == HOLDOUT else ("yes" if a["significant"] else "no"),
                str(a.get("views", 0)),
            ]
        )
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def _p_text(p: float) -> str:
    return "< 0.0001" if p < 0.0001 else f"= {p:.4f}"


def table(report: dict[str, Any]) -> str:
    """A table for a terminal: placement, arm, visitors, conversions, rate, revenue per
    visitor, lift with its interval, and the warnings (SRM, too small to read)."""
    head = ("placement", "arm", "visitors", "conv.", "rate", "rev/visitor", "lift (95% CI)")
    lines: list[tuple[str, ...]] = [head]
    notes: list[str] = []
    for p in report["placements"]:
        shown = _views(report, p)[0][1] if "segment" in report and p.get("segments") else None
        for a in p["arms"] if "segment" not in report else shown or []:
            rate = a["conversion_rate"]
            rpv = a["revenue_per_visitor"]
            cr = (a.get("lift") or {}).get("conversion_rate") or {}
            if a["arm"] == HOLDOUT:
                text = "(baseline)"
            elif cr.get("relative") is None:
                text = "-"
            else:
                low, high = cr["ci95"]
                text = f"{_pct(cr['relative'])} [{_pct(low)}, {_pct(high)}]"
                if a["too_small"]:
                    text += " too small to read"
                elif a["significant"]:
                    text += " *"
            lines.append(
                (
                    p["id"],
                    a["arm"],
                    str(a["visitors"]),
                    str(a["conversions"]),
                    "-" if rate is None else f"{rate * 100:.2f}%",
                    "-" if rpv is None else f"{rpv:.2f}",
                    text,
                )
            )
        if p["srm_broken"]:
            notes.append(
                f"{p['id']}: SAMPLE RATIO MISMATCH (p {_p_text(p['srm_p'])}): the arms' "
                "visitors do not match the configured split; fix assignment before "
                "reading any lift"
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [
        f"since {report['since']}, orders within {_num(report['window_days'], 2)} days "
        "of the first exposure; * a real difference (its 95% interval excludes zero)"
    ]
    if "segment" in report:
        out.append(
            f"segment {report['segment']}: the visitors who were in it at their first exposure"
        )
    out += [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    if not report["placements"]:
        out.append("(no placements)")
    return "\n".join(out + notes)

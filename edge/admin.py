"""``/_edge/admin``: the merchant's page. What each placement earns (the report's arms,
lifts with their 95% intervals, the sample-ratio check, which variant wins), segment
sizes over time (the daily snapshots, :mod:`edge.snapshots`), the rule files' errors
and warnings, and the requests per second by outcome over the last minutes.

Who gets in: nobody while ``admin_token`` is unset (404). A browser logs in with a form
taking the token; it gets a session cookie (``edge_admin``: HttpOnly, SameSite=Strict,
Secure over https, 12 hours) holding a timestamp and an HMAC keyed from the token,
never the token itself (changing the token ends every session). A script sends
``Authorization: Bearer <admin_token>``. Every comparison is in constant time.

The page only reads; its two POSTs (log in, log out) need a same-site request and a
form token (a double-submit cookie for the login, a MAC of the session for the
logout). Everything is drawn on the server: inline SVG, one same-origin stylesheet,
no script, no request to another origin, under ``Content-Security-Policy:
default-src 'self'`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import hmac
import itertools
import math
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from edge import metrics
from edge import report as reporting
from edge.config import Config
from edge.headers import bearer, same_token
from edge.profiles.store import Store, StoreUnavailable
from edge.rules import LiveRules, RuleSet
from edge.snapshots import since_day

__all__ = ["PATH", "AdminPage", "RateSampler", "page_view", "report_for_admin"]

PATH: Final = "/_edge/admin"
COOKIE: Final = "edge_admin"
CSRF_COOKIE: Final = "edge_admin_csrf"
SESSION_TTL: Final = 12 * 3600
WINDOWS: Final = (7, 30, 90)
"""The report windows the page offers (days); ``?days=N`` takes 1 to 400."""
SEGMENT_DAYS: Final = 90
FORM_BYTES: Final = 4096
"""The largest login form read (a token and a form token)."""
TEMPLATES: Final = Path(__file__).resolve().parent / "templates"
"""The page's templates, package data (pyproject.toml ``package-data``)."""

HEADERS: Final = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}

OUTCOME_COLOURS: Final = {
    # Okabe-Ito: told apart with the common colour blindnesses, dark enough on white.
    "passthrough": "#0072B2",
    "personalized": "#009E73",
    "preview": "#CC79A7",
    "bot": "#B8860B",
    "error": "#D55E00",
}


# --- the report ----------------------------------------------------------------------


async def report_for_admin(
    store: Store, ruleset: RuleSet, *, days: int, window_seconds: int
) -> dict[str, Any]:
    """The report JSON (:func:`edge.report.build`) over the units first exposed in the
    last *days* days, orders attributed within *window_seconds* of the first exposure."""
    since = reporting.day_number(dt.date.fromisoformat(since_day(days)))
    rows = await store.report_rows(since)
    return reporting.build(
        rows,
        ruleset.placements,
        since_day=since,
        window_seconds=window_seconds,
        now=time.time(),
        segment_order=ruleset.segment_names,
    )


# --- live rates ----------------------------------------------------------------------


class RateSampler:
    """``edge_requests_total`` by outcome, read every *every* seconds into a ring of
    *keep* samples: the page's requests per second over the last minutes."""

    def __init__(self, every: float = 5.0, keep: int = 180) -> None:
        self.every = every
        self.samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque(
            maxlen=keep + 1
        )

    def sample(self, now: float | None = None) -> None:
        counts = {outcome: count.value for outcome, count in metrics.REQUESTS.items()}
        self.samples.append((time.monotonic() if now is None else now, counts))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def rates(self, now: float | None = None) -> list[tuple[float, dict[str, float]]]:
        """(seconds before *now*, requests/s by outcome) per interval between samples,
        the last one up to the current counts."""
        now = time.monotonic() if now is None else now
        points = list(self.samples)
        current = {outcome: count.value for outcome, count in metrics.REQUESTS.items()}
        if points and now - points[-1][0] >= 1.0:
            points.append((now, current))
        out = []
        for (t0, c0), (t1, c1) in itertools.pairwise(points):
            span = t1 - t0
            if span <= 0:
                continue
            out.append((t1 - now, {o: max(0, c1.get(o, 0) - c0.get(o, 0)) / span for o in c1}))
        return out


# --- charts: geometry computed here, drawn by the template ----------------------------


def _fmt_pct(value: float | None, signed: bool = False, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value * 100:+.{digits}f}%" if signed else f"{value * 100:.{digits}f}%"
    return text.replace("-", "−")


def _fmt_money(value: float | None, currency: str, locale: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    try:
        from babel.numbers import format_currency

        return format_currency(value, currency, locale=locale or "en")
    except Exception:
        return f"{value:,.2f} {currency}"


def _fmt_int(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else "–"


def _interval(lift: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """(estimate, low, high) of a relative lift, None when it was not computed."""
    if not lift:
        return None
    relative, ci = lift.get("relative"), lift.get("ci95")
    if relative is None or not ci or None in ci:
        return None
    return float(relative), float(ci[0]), float(ci[1])


LIFT_WIDTH: Final = 360
LIFT_HEIGHT: Final = 30


def _lift_scale(intervals: list[tuple[float, float, float]]) -> tuple[float, float]:
    """The axis of a placement's lift bars: zero inside, every interval on it (a
    relative lift's interval is clamped to -100% … +300%)."""
    low = min([-0.1, *(max(-1.0, lo) for _, lo, _ in intervals)])
    high = max([0.1, *(min(3.0, hi) for _, _, hi in intervals)])
    pad = (high - low) * 0.08
    return low - pad, high + pad


def _lift_bar(item: tuple[float, float, float], scale: tuple[float, float]) -> dict[str, Any]:
    estimate, low, high = item
    lo_axis, hi_axis = scale

    def x(value: float) -> float:
        value = min(max(value, lo_axis), hi_axis)
        return round((value - lo_axis) / (hi_axis - lo_axis) * LIFT_WIDTH, 1)

    tone = "up" if low > 0 else "down" if high < 0 else "flat"
    return {
        "x0": x(low),
        "x1": x(high),
        "width": max(2.0, round(x(high) - x(low), 1)),
        "cx": x(estimate),
        "zero": x(0.0),
        "tone": tone,
        "clipped_low": low < lo_axis,
        "clipped_high": high > hi_axis,
        "title": f"{_fmt_pct(estimate, True)} (95% interval {_fmt_pct(low, True)} to "
        f"{_fmt_pct(high, True)})",
    }


def _verdict(placement: dict[str, Any], variants: list[dict[str, Any]]) -> dict[str, str]:
    """What a marketer reads first: keep which variant, or why nothing can be said."""
    if placement.get("srm_broken"):
        return {
            "tone": "bad",
            "text": "Sample ratio mismatch: the arms did not get the configured split, so "
            "these numbers cannot be trusted. Check the placement's assignment before "
            "reading any lift.",
        }
    if not placement.get("arms"):
        return {"tone": "none", "text": "Nothing measured yet in this window."}
    if not any(a["arm"] == "holdout" for a in placement["arms"]):
        return {"tone": "none", "text": "No holdout: no lift can be computed."}
    if variants and all(v.get("too_small") for v in variants):
        return {
            "tone": "wait",
            "text": "Too small to read yet: keep it running until more visitors convert.",
        }
    winners = [v for v in variants if v.get("significant") and (_abs(v) or 0) > 0]
    losers = [v for v in variants if v.get("significant") and (_abs(v) or 0) < 0]
    if winners:
        best = max(winners, key=lambda v: _abs(v) or 0)
        lift = (best.get("lift") or {}).get("conversion_rate") or {}
        return {
            "tone": "good",
            "winner": str(best["arm"]),
            "text": f"“{best['arm']}” wins: {_fmt_pct(lift.get('relative'), True)} "
            f"conversion rate against the holdout. Keep it.",
        }
    if losers and len(losers) == len(variants):
        return {
            "tone": "bad",
            "text": "Converts worse than the original page: consider switching it off.",
        }
    return {
        "tone": "wait",
        "text": "No clear winner: the intervals still include zero.",
    }


def _abs(arm: dict[str, Any]) -> float | None:
    lift = (arm.get("lift") or {}).get("conversion_rate") or {}
    value = lift.get("absolute")
    return float(value) if isinstance(value, int | float) else None


def _arm_rows(
    arms: list[dict[str, Any]], split: dict[str, Any], winner: str, currency: str, locale: str
) -> tuple[list[dict[str, Any]], tuple[float, float]]:
    """The table rows of *arms* (the holdout first), each variant's lift bar on the
    scale of their own intervals (returned with them, for the axis)."""
    arms = sorted(arms, key=lambda a: (a.get("arm") != "holdout", str(a.get("arm"))))
    variants = [a for a in arms if a.get("arm") != "holdout"]
    intervals = [
        i for a in variants if (i := _interval((a.get("lift") or {}).get("conversion_rate")))
    ]
    scale = _lift_scale(intervals)
    rows = []
    for arm in arms:
        lift = arm.get("lift") or {}
        cr = _interval(lift.get("conversion_rate"))
        rpv = lift.get("revenue_per_visitor") or {}
        rows.append(
            {
                "arm": str(arm.get("arm", "")),
                "holdout": arm.get("arm") == "holdout",
                "winner": bool(winner) and arm.get("arm") == winner,
                "share": _fmt_pct(split.get(arm.get("arm")), digits=0),
                "visitors": _fmt_int(arm.get("visitors")),
                "exposures": _fmt_int(arm.get("exposures")),
                "conversions": _fmt_int(arm.get("conversions")),
                # a held-out unit saw no block: no clicks to show
                "clicks": "" if arm.get("arm") == "holdout" else _fmt_int(arm.get("clicks")),
                "rate": _fmt_pct(arm.get("conversion_rate"), digits=2),
                "rpv": _fmt_money(arm.get("revenue_per_visitor"), currency, locale),
                "revenue": _fmt_money(arm.get("revenue"), currency, locale),
                "lift": _fmt_pct(cr[0], True) if cr else "",
                "ci": f"{_fmt_pct(cr[1], True)} to {_fmt_pct(cr[2], True)}" if cr else "",
                "rpv_lift": _fmt_pct(rpv.get("relative"), True) if rpv else "",
                "bar": _lift_bar(cr, scale) if cr else None,
                "no_lift": arm.get("arm") != "holdout" and cr is None,
                "too_small": bool(arm.get("too_small")),
                "significant": bool(arm.get("significant")),
            }
        )
    return rows, scale


def _placement_view(placement: dict[str, Any], currency: str, locale: str) -> dict[str, Any]:
    arms = list(placement.get("arms") or [])
    variants = [a for a in arms if a.get("arm") != "holdout"]
    verdict = _verdict(placement, variants)
    split = placement.get("split") or {}
    rows, scale = _arm_rows(arms, split, verdict.get("winner", ""), currency, locale)
    ticks = _ticks(scale)
    srm_p = placement.get("srm_p")
    segments = [
        {
            "segment": str(entry.get("segment", "")),
            "rows": _arm_rows(list(entry.get("arms") or []), split, "", currency, locale)[0],
        }
        for entry in placement.get("segments") or []
        if any(a.get("visitors") for a in entry.get("arms") or [])
    ]
    return {
        "id": str(placement.get("id", "")),
        "slot": str(placement.get("slot", "")),
        "segment": str(placement.get("segment", "")) or "everyone",
        "rows": rows,
        "segments": segments,
        "verdict": verdict,
        "srm_broken": bool(placement.get("srm_broken")),
        "srm_p": "–" if srm_p is None else f"{srm_p:.3g}",
        "axis": [
            {"x": _lift_bar((t, t, t), scale)["cx"], "label": _fmt_pct(t, True, 0) if t else "0%"}
            for t in ticks
        ],
        "zero": _lift_bar((0.0, 0.0, 0.0), scale)["cx"],
        "bars": sum(1 for r in rows if r["bar"]),
        "trend": _trend_view(list(placement.get("daily") or []), [r["arm"] for r in rows]),
    }


TREND_W: Final = 560
TREND_H: Final = 130
HOLDOUT_COLOUR: Final = "#57606a"
ARM_COLOURS: Final = ("#0072B2", "#009E73", "#CC79A7", "#D55E00", "#B8860B", "#56B4E9")


def _trend_view(daily: list[dict[str, Any]], arms: list[str]) -> dict[str, Any] | None:
    """The conversion rate of each arm so far, day by day (cumulative: it settles as
    the sample grows); None below two days."""
    days = sorted({str(row.get("day", "")) for row in daily})
    if len(days) < 2:
        return None
    index = {day: i for i, day in enumerate(days)}
    names = [a for a in arms if any(row.get("arm") == a for row in daily)]
    curves: dict[str, list[tuple[int, float]]] = {}
    for name in names:
        visitors = conversions = 0
        points = []
        rows = sorted((r for r in daily if r.get("arm") == name), key=lambda r: str(r["day"]))
        for row in rows:
            visitors += int(row.get("visitors") or 0)
            conversions += int(row.get("conversions") or 0)
            if visitors:
                points.append((index[str(row["day"])], conversions / visitors))
        if points:
            curves[name] = points
    if not curves:
        return None
    top = _nice(max(rate for points in curves.values() for _, rate in points) or 0.01)
    span = len(days) - 1
    series = []
    colours = iter(ARM_COLOURS * 4)
    for name, points in curves.items():
        path = " ".join(
            f"{round(44 + i / span * (TREND_W - 54), 1)},"
            f"{round(TREND_H - 22 - rate / top * (TREND_H - 34), 1)}"
            for i, rate in points
        )
        colour = HOLDOUT_COLOUR if name == "holdout" else next(colours)
        series.append(
            {"arm": name, "colour": colour, "path": path, "last": _fmt_pct(points[-1][1], digits=2)}
        )
    grid = [
        {"y": round(TREND_H - 22 - f * (TREND_H - 34), 1), "label": _fmt_pct(top * f, digits=1)}
        for f in (0, 0.5, 1)
    ]
    return {"series": series, "grid": grid, "first": days[0], "last": days[-1]}


def _ticks(scale: tuple[float, float]) -> list[float]:
    low, high = scale
    step = _nice((high - low) / 4)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 6) for i in range(int((high - first) / step) + 1)]


def _nice(raw: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) at least *raw*."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


SPARK_W: Final = 220
SPARK_H: Final = 56


def _segment_views(snapshots: list[dict[str, Any]], ruleset: RuleSet) -> list[dict[str, Any]]:
    """One small line chart per segment over the snapshots' days, largest first."""
    if not snapshots:
        return []
    days = [s["day"] for s in snapshots]
    first, last = _day_number(days[0]), _day_number(days[-1])
    span = max(1, last - first)
    names = list(ruleset.segment_names)
    for snapshot in snapshots:
        names += [n for n in snapshot.get("counts", {}) if n not in names]
    views = []
    for name in names:
        series = [
            (_day_number(s["day"]), int(s.get("counts", {}).get(name, 0)), s["day"])
            for s in snapshots
            if name in s.get("counts", {})
        ]
        if not series:
            continue
        top = max(1, max(n for _, n, _ in series))
        points = [
            (
                round((d - first) / span * (SPARK_W - 8) + 4, 1),
                round(SPARK_H - 6 - n / top * (SPARK_H - 14), 1),
                n,
                day,
            )
            for d, n, day in series
        ]
        latest = series[-1][1]
        change = latest - series[0][1]
        rule = ruleset.segments.get(name)
        views.append(
            {
                "name": name,
                "label": rule.label if rule is not None else "",
                "latest": f"{latest:,}",
                "latest_value": latest,
                "change": (f"{change:+,}" if len(series) > 1 else "first day").replace("-", "−"),
                "tone": "up" if change > 0 else "down" if change < 0 else "flat",
                "path": " ".join(f"{x},{y}" for x, y, _, _ in points),
                "points": [{"x": x, "y": y, "title": f"{day}: {n:,}"} for x, y, n, day in points],
                "top": f"{top:,}",
            }
        )
    views.sort(key=lambda v: -v["latest_value"])
    return views


def _day_number(day: str) -> int:
    return dt.date.fromisoformat(day).toordinal()


RATE_W: Final = 640
RATE_H: Final = 200


def _rates_view(rates: list[tuple[float, dict[str, float]]]) -> dict[str, Any]:
    """Requests per second by outcome: one line each over the last minutes."""
    if not rates:
        return {"series": [], "grid": [], "span": "", "now": {}}
    oldest = min(t for t, _ in rates)
    span = max(60.0, -oldest)
    top = _nice(max([0.0, *(v for _, r in rates for v in r.values())]) or 1.0)
    series = []
    for outcome, colour in OUTCOME_COLOURS.items():
        values = [(t, r.get(outcome, 0.0)) for t, r in rates]
        points = [
            (
                round(40 + (span + t) / span * (RATE_W - 50), 1),
                round(RATE_H - 24 - v / top * (RATE_H - 40), 1),
            )
            for t, v in values
        ]
        if len(points) == 1:
            points.insert(0, (40.0, points[0][1]))
        series.append(
            {
                "name": outcome,
                "colour": colour,
                "path": " ".join(f"{x},{y}" for x, y in points),
                "now": f"{values[-1][1]:.1f}",
            }
        )
    grid = [
        {"y": round(RATE_H - 24 - f * (RATE_H - 40), 1), "label": f"{top * f:g}"}
        for f in (0, 0.25, 0.5, 0.75, 1)
    ]
    minutes = max(1, round(span / 60))
    return {"series": series, "grid": grid, "span": f"{minutes} min ago", "top": top}


def page_view(
    report: dict[str, Any],
    snapshots: list[dict[str, Any]],
    rates: list[tuple[float, dict[str, float]]],
    rules: LiveRules,
    *,
    days: int,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """Everything the template draws, from the report JSON, the segment snapshots,
    the sampled rates and the rules serving (pure: tested on hand-made reports)."""
    ruleset = rules.ruleset
    shop = ruleset.shop
    placements = [
        _placement_view(p, shop.currency, shop.locale) for p in report.get("placements", [])
    ]
    issues = [
        {
            "where": f"{e.file}:{e.line}:{e.column}" if e.line else e.file,
            "severity": e.severity,
            "message": e.message,
            "text": e.text,
            "caret": " " * max(0, e.column - 1) + "^" * max(1, e.length) if e.text else "",
            "help": e.help,
        }
        for e in [*rules.errors, *ruleset.warnings]
    ]
    return {
        "report": report,
        "days": days,
        "windows": WINDOWS,
        "placements": placements,
        "segments": _segment_views(snapshots, ruleset),
        "segment_days": len(snapshots),
        "rates": _rates_view(rates),
        "issues": issues,
        "rules_serving": not rules.errors,
        "problems": problems or [],
        "lift_width": LIFT_WIDTH,
        "lift_height": LIFT_HEIGHT,
        "spark": {"w": SPARK_W, "h": SPARK_H},
        "rate_size": {"w": RATE_W, "h": RATE_H},
        "trend_size": {"w": TREND_W, "h": TREND_H},
    }


# --- the endpoints ---------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    key: bytes

    def issue(self, now: float) -> str:
        stamp = str(int(now))
        return f"{stamp}.{self._mac(stamp)}"

    def valid(self, value: str, now: float) -> bool:
        stamp, _, mac = value.partition(".")
        if not stamp.isdigit() or not hmac.compare_digest(mac.encode(), self._mac(stamp).encode()):
            return False
        return int(stamp) - 60 <= now < int(stamp) + SESSION_TTL

    def form_token(self, session: str, purpose: str = "logout") -> str:
        return self._mac(f"{purpose}:{session}")

    def _mac(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()


class DemoSection(Protocol):
    """``edge demo``'s section (edge/demo/activation.py): its receiver's messages, the
    outbox, and a fake clock the page moves. Only the demo sets one."""

    async def view(self) -> dict[str, Any]: ...
    async def move(self, seconds: int) -> dict[str, int]: ...


DEMO_MOVES: Final = {"1h": 3600, "4h": 4 * 3600, "1d": 86_400}
"""The demo clock's moves, by the form's ``by``."""


class AdminPage:
    """The routes of ``/_edge/admin``, for an app's store, rules and sampler.

    *settings* returns the configuration serving (a SIGHUP reload may change
    ``admin_token`` and ``trust_forwarded``): read at each request, so a new token
    takes over at once (the sessions of the old one end) and an emptied one turns the
    page off (404)."""

    def __init__(
        self,
        settings: Callable[[], Config],
        store: Store,
        rules: LiveRules,
        *,
        sampler: RateSampler | None = None,
    ) -> None:
        self.settings = settings
        self._keyed: tuple[bytes, _Session] | None = None
        self.store = store
        self.rules = rules
        self.sampler = sampler or RateSampler()
        self.demo: DemoSection | None = None
        """Set by ``edge demo`` only: without it the demo section and its clock are not
        there (404)."""
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    @property
    def token(self) -> bytes:
        return self.settings().admin_token.encode()

    @property
    def session(self) -> _Session:
        """Sessions keyed from the token serving (derived again when it changes)."""
        token = self.token
        if self._keyed is None or self._keyed[0] != token:
            key = hmac.new(token, b"shop-edge admin session v1", hashlib.sha256).digest()
            self._keyed = (token, _Session(key))
        return self._keyed[1]

    def routes(self) -> list[Route]:
        return [
            Route(PATH, self._on(self.page), methods=["GET", "HEAD"]),
            Route(PATH + "/data.json", self._on(self.data), methods=["GET"]),
            Route(PATH + "/login", self._on(self.login), methods=["POST"]),
            Route(PATH + "/logout", self._on(self.logout), methods=["POST"]),
            Route(PATH + "/demo/clock", self._on(self.demo_clock), methods=["POST"]),
        ]

    def _on(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """*handler* while ``admin_token`` is set; a 404 (no such endpoint) otherwise."""

        async def guarded(request: Request) -> Response:
            if not self.settings().admin_token:
                return _not_found()
            return await handler(request)

        return guarded

    # who is asking

    def _bearer(self, request: Request) -> str | None:
        return bearer(request.headers.get("authorization", ""))

    def _signed_in(self, request: Request) -> bool:
        given = self._bearer(request)
        if given is not None:
            return same_token(given, self.token.decode())
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and self.session.valid(cookie, time.time())

    def _secure(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        forwarded = request.headers.get("x-forwarded-proto") == "https"
        return forwarded and self.settings().trust_forwarded

    def _cookie(
        self, response: Response, request: Request, name: str, value: str, age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=age,
            path=PATH,
            httponly=True,
            secure=self._secure(request),
            samesite="strict",
        )

    def _same_site(self, request: Request) -> bool:
        """A POST from the page itself, not from another site: the browser's own
        ``Sec-Fetch-Site`` when it sends one, else the ``Origin`` against the host asked
        (the form tokens and the SameSite=Strict cookies are checked besides)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        hosts = {request.headers.get("host", "")}
        if self.settings().trust_forwarded:
            hosts.add(request.headers.get("x-forwarded-host", ""))
        return origin.split("://", 1)[-1] in hosts

    # the pages

    def _html(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(**context)
        return HTMLResponse(body, status_code=status, headers=dict(HEADERS))

    def _login_form(self, request: Request, status: int, message: str = "") -> Response:
        csrf = secrets.token_urlsafe(24)
        response = self._html("admin_login.html", status, csrf=csrf, message=message, path=PATH)
        if status == 401:
            response.headers["www-authenticate"] = 'Bearer realm="shop-edge admin"'
        self._cookie(response, request, CSRF_COOKIE, csrf, 3600)
        return response

    async def page(self, request: Request) -> Response:
        if self._bearer(request) is not None and not self._signed_in(request):
            return _unauthorized()
        if not self._signed_in(request):
            return self._login_form(request, 401)
        days = _days(request)
        view = await self._view(days)
        session = request.cookies.get(COOKIE, "")
        return self._html(
            "admin.html",
            logout=self.session.form_token(session) if session else "",
            path=PATH,
            demo=await self.demo.view() if self.demo is not None else None,
            clock_csrf=self.session.form_token(session, "clock") if session else "",
            **view,
        )

    async def data(self, request: Request) -> Response:
        """The page's data as JSON, for scripts (``Authorization: Bearer``)."""
        if not self._signed_in(request):
            return _unauthorized()
        days = _days(request)
        report, snapshots, problems = await self._gather(days)
        return JSONResponse(
            {
                "report": report,
                "segment_snapshots": snapshots,
                "rates": [{"seconds_ago": -t, **r} for t, r in self.sampler.rates()],
                "rule_errors": [str(e) for e in self.rules.errors],
                "problems": problems,
                **({"demo": await self.demo.view()} if self.demo is not None else {}),
            },
            headers=dict(HEADERS),
        )

    async def _gather(self, days: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
        problems = []
        ruleset = self.rules.ruleset
        try:
            report = await report_for_admin(
                self.store, ruleset, days=days, window_seconds=self.settings().attribution_seconds
            )
        except StoreUnavailable as exc:
            problems.append(f"the report could not be read: {exc}")
            report = {"placements": [], "since": since_day(days), "window_days": days}
        try:
            snapshots = await self.store.get_segment_snapshots(since_day(SEGMENT_DAYS))
        except StoreUnavailable as exc:
            problems.append(f"the segment sizes could not be read: {exc}")
            snapshots = []
        return report, snapshots, problems

    async def _view(self, days: int) -> dict[str, Any]:
        report, snapshots, problems = await self._gather(days)
        return page_view(
            report, snapshots, self.sampler.rates(), self.rules, days=days, problems=problems
        )

    async def login(self, request: Request) -> Response:
        form = await _small_form(request)
        if form is None:
            return self._login_form(request, 413, "That form was too large.")
        given = str(form.get("token", ""))
        csrf = str(form.get("csrf", ""))
        expected = request.cookies.get(CSRF_COOKIE, "")
        if (
            not self._same_site(request)
            or not expected
            or not hmac.compare_digest(csrf.encode(), expected.encode())
        ):
            return self._login_form(
                request, 403, "The form expired or came from another site: log in again."
            )
        if not same_token(given, self.token.decode()):
            return self._login_form(request, 401, "That is not the admin token.")
        response = RedirectResponse(PATH, status_code=303, headers=dict(HEADERS))
        self._cookie(response, request, COOKIE, self.session.issue(time.time()), SESSION_TTL)
        response.delete_cookie(CSRF_COOKIE, path=PATH)
        return response

    async def logout(self, request: Request) -> Response:
        form = await _small_form(request) or {}
        session = request.cookies.get(COOKIE, "")
        given = str(form.get("csrf", ""))
        if (
            not session
            or not self._same_site(request)
            or not hmac.compare_digest(given.encode(), self.session.form_token(session).encode())
        ):
            return JSONResponse(
                {"error": "forbidden", "message": "log out from the admin page's own button"},
                status_code=403,
                headers=dict(HEADERS),
            )
        response = RedirectResponse(PATH, status_code=303, headers=dict(HEADERS))
        response.delete_cookie(COOKIE, path=PATH)
        return response

    async def demo_clock(self, request: Request) -> Response:
        """``edge demo``'s clock control: moves the fake clock on (``by`` = 1h, 4h or
        1d) and runs the due loop at once. The page's form (the session cookie and its
        form token, same site) or a script (``Authorization: Bearer``)."""
        if self.demo is None:
            return _not_found()
        form = await _small_form(request) or {}
        script = self._bearer(request) is not None
        if not self._signed_in(request):
            return _unauthorized()
        session = request.cookies.get(COOKIE, "")
        given = str(form.get("csrf", ""))
        if not script and (
            not self._same_site(request)
            or not hmac.compare_digest(
                given.encode(), self.session.form_token(session, "clock").encode()
            )
        ):
            return JSONResponse(
                {"error": "forbidden", "message": "move the clock from the admin page's buttons"},
                status_code=403,
                headers=dict(HEADERS),
            )
        seconds = DEMO_MOVES.get(str(form.get("by", "")))
        if seconds is None:
            return JSONResponse(
                {"error": "bad_request", "message": "by: expected one of 1h, 4h, 1d"},
                status_code=400,
                headers=dict(HEADERS),
            )
        moved = await self.demo.move(seconds)
        if script:
            return JSONResponse(moved, headers=dict(HEADERS))
        return RedirectResponse(PATH + "#demo", status_code=303, headers=dict(HEADERS))


async def _small_form(request: Request) -> dict[str, str] | None:
    """The URL-encoded form of a POST, None when it is larger than ``FORM_BYTES``
    (read no further: these forms hold a token or two)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BYTES:
            return None
    try:
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:  # more fields than a login form has
        return None
    return {name: values[0] for name, values in fields.items()}


def _not_found() -> Response:
    return JSONResponse(
        {
            "error": "not_found",
            "message": "No such sidecar endpoint. /_edge/ is reserved for shop-edge.",
        },
        status_code=404,
        headers={"cache-control": "no-store"},
    )


def _unauthorized() -> Response:
    return JSONResponse(
        {
            "error": "unauthorized",
            "message": "send Authorization: Bearer <admin_token>, or log in at /_edge/admin",
        },
        status_code=401,
        headers={**HEADERS, "www-authenticate": 'Bearer realm="shop-edge admin"'},
    )


def _days(request: Request) -> int:
    raw = request.query_params.get("days", "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 400 else 30

"""Segment sizes: how many stored profiles are in each segment, counted now
(``edge segments``) and kept once a day (the admin page's "segment sizes over time").

One counting for both: :func:`count_segments` walks the store's profiles, judges every
segment on each (without a request: the campaign, device and location segments are
counted as a profile alone makes them) and hands the event loop back between batches,
so a sidecar counting a large store keeps serving pages meanwhile.

A snapshot is that count for one UTC day, kept in the store (:meth:`Store.put_segment_
snapshot`): ``{"total": 1200, "counts": {"vip": 31, ...}, "taken": 1765094400}``. The
sidecar takes one at start when today's is missing and then once a day
(:class:`DailySnapshots`); ``edge segments --snapshot`` takes one now. With several
replicas on one Redis, one of them takes the day's (``claim_once``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from edge.profiles.store import Store
from edge.rules import RequestInfo, RuleSet, ShopStats

__all__ = ["BATCH", "DailySnapshots", "SegmentCounts", "count_segments", "take_snapshot", "today"]

log = logging.getLogger("edge.snapshots")

BATCH: Final = 500
"""Profiles judged between two hand-backs to the event loop."""
KEEP_DAYS: Final = 400
"""How far back the admin page reads snapshots (a snapshot is a few hundred bytes)."""


@dataclass(slots=True)
class SegmentCounts:
    total: int = 0
    """Profiles counted."""
    counts: dict[str, int] = field(default_factory=dict)
    """Members per segment, every segment of the rule set (0 included), in its order."""

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"total": self.total, "counts": dict(self.counts), "taken": int(now)}


async def count_segments(
    store: Store,
    ruleset: RuleSet,
    shop: ShopStats,
    *,
    now: float | None = None,
    batch: int = BATCH,
) -> SegmentCounts:
    """Members per segment over every profile in *store* (a key gone meanwhile is
    skipped), yielding to the event loop every *batch* profiles."""
    now = time.time() if now is None else now
    result = SegmentCounts(counts=dict.fromkeys(ruleset.segment_names, 0))
    counts = result.counts
    empty = RequestInfo()
    for i, key in enumerate(await store.keys()):
        profile = await store.get(key)
        if profile is not None:
            result.total += 1
            verdict = ruleset.evaluate(ruleset.context(profile, empty, now, shop))
            for name in ruleset.names(verdict):
                counts[name] += 1
        if i % batch == batch - 1:
            await asyncio.sleep(0)
    return result


def today(now: float | None = None) -> str:
    """The UTC day of *now* as the snapshots name it (``2026-12-07``)."""
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    return moment.date().isoformat()


async def take_snapshot(
    store: Store, ruleset: RuleSet, shop: ShopStats, *, now: float | None = None
) -> tuple[str, SegmentCounts]:
    """Count now and keep it as today's snapshot (replacing one taken earlier today)."""
    now = time.time() if now is None else now
    counts = await count_segments(store, ruleset, shop, now=now)
    day = today(now)
    await store.put_segment_snapshot(day, counts.snapshot(now))
    return day, counts


class DailySnapshots:
    """The sidecar's background job: today's snapshot at start when it is missing,
    then one a day shortly after midnight UTC. *rules* and *shop* are read at each
    snapshot (the rules serving then, the shop's average order then)."""

    def __init__(
        self,
        store: Store,
        rules: Callable[[], RuleSet | None],
        shop: Callable[[], ShopStats],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.rules = rules
        self.shop = shop
        self.clock = clock
        self.taken: list[str] = []
        """The days this process took (the log says so too)."""

    async def once(self) -> bool:
        """Take today's snapshot unless the store has it already (or another replica is
        taking it); True when this call took it."""
        ruleset = self.rules()
        if ruleset is None:
            return False
        now = self.clock()
        day = today(now)
        if await self.store.get_segment_snapshots(day):
            return False
        claim = f"segment-snapshot:{day}"
        if not await self.store.claim_once(claim, 2 * 86_400):
            return False
        try:
            _, counts = await take_snapshot(self.store, ruleset, self.shop(), now=now)
        except BaseException:
            await self.store.release_once(claim)  # another replica, or a later try, may
            raise
        self.taken.append(day)
        log.info("segment snapshot for %s: %d profiles", day, counts.total)
        return True

    async def run(self, retry: float = 600.0) -> None:
        """Forever: today's now if missing, then each day after midnight UTC (a failed
        try is tried again after *retry* seconds)."""
        while True:
            try:
                await self.once()
                wait = _until_tomorrow(self.clock()) + 60.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("segment snapshot not taken (tried again in %g s): %s", retry, exc)
                wait = retry
            await asyncio.sleep(wait)


def _until_tomorrow(now: float) -> float:
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = dt.datetime.combine(moment.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return max(1.0, (midnight - moment).total_seconds())


def since_day(days: int, now: float | None = None) -> str:
    """The first day of a window of *days* days ending today."""
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    return (moment.date() - dt.timedelta(days=days - 1)).isoformat()

"""The activation's two loops, started by ``edge serve`` when ``activation = true``.

The due loop: every ``activation_interval`` seconds, the profiles whose ``due`` time
has come (the store's due index, never a scan) are written again unchanged through
:meth:`~edge.profiles.service.ProfileService.touch`; the activation that runs in every
write (:func:`edge.profiles.store.activating`) finds their segment changes and journey
steps and enqueues the messages in that same transaction. With several replicas one
takes each interval (:meth:`~edge.profiles.store.Store.claim_once`); were two to run
at once, nothing would be sent twice (message ids are deterministic, an id enqueued
again is ignored).

The delivery loop: a round of :class:`~edge.activation.delivery.Delivery` every second,
at once again while rounds come back full. Replicas share the work safely: a claim
leases its messages.

Both take the time from an injectable clock (tests drive it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from edge.activation.activator import Activator
from edge.activation.delivery import Delivery
from edge.profiles.service import ProfileService
from edge.profiles.store import Store, StoreUnavailable
from edge.rules import LiveRules

log = logging.getLogger("edge.activation")

Clock = Callable[[], float]
DUE_BATCH: Final = 1000
"""Profiles taken from the due index at a time."""
TOUCH_PART: Final = 100
"""Profiles written again per transaction."""
DELIVERY_EVERY: Final = 1.0
"""Seconds between two delivery rounds that found nothing to send."""


def activator_for(rules: LiveRules, **settings: object) -> Activator:
    """The activation over the live rules (segments, journeys, payloads): what every
    profile write runs in its transaction."""
    return Activator(rules, **settings)  # type: ignore[arg-type]


class ActivationLoops:
    def __init__(
        self,
        profiles: ProfileService,
        store: Store,
        delivery: Delivery,
        *,
        interval: float = 60.0,
        clock: Clock = time.time,
    ) -> None:
        self.profiles = profiles
        self.store = store
        self.delivery = delivery
        self.interval = interval
        self.clock = clock

    async def due_once(self, now: int) -> int:
        """Write again every profile due at *now*; how many."""
        seen: set[str] = set()
        while True:
            keys = await self.store.due_keys(until=now, limit=DUE_BATCH)
            # A profile the activation left due (its time not moved on) is looked at
            # once a round, not again and again.
            fresh = [key for key in keys if key not in seen]
            if not fresh:
                if keys:
                    log.warning("activation: %d profiles stay due after a look", len(keys))
                return len(seen)
            seen.update(fresh)
            # A transaction per part, the parts together: SQLite commits them as one
            # group, Redis overlaps their round trips (and WATCHes few keys each).
            parts = [fresh[i : i + TOUCH_PART] for i in range(0, len(fresh), TOUCH_PART)]
            await asyncio.gather(*(self.profiles.touch(part, now) for part in parts))
            if len(keys) < DUE_BATCH:
                return len(seen)

    async def run_due(self) -> None:
        while True:
            now = int(self.clock())
            try:
                # One replica per interval does it (the others would find the same).
                window = int(now // self.interval)
                if await self.store.claim_once(f"due-loop:{window}", int(self.interval) + 1):
                    touched = await self.due_once(now)
                    if touched:
                        log.info("activation: %d profiles due", touched)
            except StoreUnavailable as exc:
                log.warning("activation: due profiles not processed: %s", exc)
            except Exception:
                log.exception("activation: the due loop failed a round")
            await asyncio.sleep(self.interval)

    async def run_delivery(self) -> None:
        while True:
            claimed = 0
            try:
                claimed = await self.delivery.run_once(int(self.clock()))
            except StoreUnavailable as exc:
                log.warning("activation: outbox not delivered: %s", exc)
            except Exception:
                log.exception("activation: the delivery loop failed a round")
            if claimed < self.delivery.batch:
                await asyncio.sleep(DELIVERY_EVERY)

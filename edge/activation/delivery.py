"""Delivering the outbox: signed webhooks, retried with backoff, dead-lettered, rate-limited.

Each round claims a batch of due messages from the store under a lease
(:meth:`~edge.profiles.store.Store.outbox_claim`), POSTs each to its destination and
settles it: a 2xx answer marks it delivered; anything else (another status, no answer
within the destination's ``timeout``, a refused connection) schedules another try after
an exponential backoff with full jitter, or dead-letters it after ``max_attempts``.
A worker killed mid-delivery settles nothing: the lease runs out and a worker claims
the message again, so every message is delivered at least once, and a receiver drops
duplicates by their ``Idempotency-Key`` (the message id, the same on every try).

The signature is Stripe's scheme: ``Shop-Edge-Signature: t=<unix time>,v1=<hex
HMAC-SHA256 of "<t>.<body>">`` with the destination's secret (README, "Webhooks").
A message with a coupon gets its code at its first delivery, the same code on every
later try (:meth:`~edge.profiles.store.Store.coupon_take`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import httpx

from edge import __version__, metrics
from edge.config import Config, ConfigError
from edge.profiles.outbox import COUPON_PLACEHOLDER, OutboxRow
from edge.profiles.store import Store, StoreUnavailable

log = logging.getLogger("edge.activation")
# httpx logs every request with its URL at INFO: a destination's URL may hold a token.
logging.getLogger("httpx").setLevel(logging.WARNING)

SIGNATURE_HEADER: Final = "Shop-Edge-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
BACKOFF_FIRST: Final = 30.0
"""Seconds: the ceiling of the wait after the first failed try; it doubles each try."""
BACKOFF_CAP: Final = 6 * 3600.0
"""Seconds: the ceiling stops doubling here."""
BATCH_SECONDS: Final = 2
"""A round claims what its destinations' rates send in this many seconds."""
MAX_BATCH: Final = 100
LEASE_SPARE: Final = 3
"""Seconds of a claim's lease beyond the round's longest possible run."""
CONCURRENCY: Final = 16
"""Requests in flight at once, across destinations."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A receiver, with its secret read from the environment."""

    name: str
    url: str
    secret: bytes
    rate: int
    max_attempts: int
    timeout: float


def destinations_from(
    config: Config, environ: Mapping[str, str] | None = None
) -> dict[str, Destination]:
    """The destinations of *config*, each with its signing secret from the environment
    (a :class:`ConfigError` naming the variable when one is unset or empty)."""
    environ = os.environ if environ is None else environ
    out = {}
    for name, dest in config.destinations.items():
        secret = environ.get(dest.secret_env, "")
        if not secret:
            raise ConfigError(
                f"destinations.{name}.secret_env: the environment variable "
                f"{dest.secret_env} is not set; set it to the secret the receiver "
                "verifies signatures with"
            )
        out[name] = Destination(
            name, dest.url, secret.encode(), dest.rate, dest.max_attempts, dest.timeout_seconds
        )
    return out


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``Shop-Edge-Signature`` header of *body* sent at *timestamp*."""
    mac = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def backoff(attempts: int, rng: random.Random) -> int:
    """Seconds to wait after *attempts* failed tries: full jitter, uniform between 1 and
    ``min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (attempts - 1))``, so receivers coming back
    from an outage are not hit by every sender in step."""
    ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, attempts - 1))
    return max(1, math.ceil(rng.uniform(0, ceiling)))


class RateLimit:
    """At most *rate* sends in each second of the wall clock (fixed one-second windows,
    which is what a receiver counting requests per second sees)."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.time) -> None:
        self.rate = rate
        self.clock = clock
        self._window = -1
        self._count = 0

    async def acquire(self) -> int:
        """Wait for a free slot; the second (unix time) the send belongs to."""
        while True:
            now = self.clock()
            window = int(now)
            if window != self._window:
                self._window, self._count = window, 0
            if self._count < self.rate:
                self._count += 1
                return window
            await asyncio.sleep(max(0.001, window + 1 - now))


class Delivery:
    """Delivers the outbox of *store* to *destinations*. :meth:`run_once` is one round;
    ``edge.activation.loop`` runs them."""

    def __init__(
        self,
        store: Store,
        destinations: Mapping[str, Destination],
        *,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.destinations = dict(destinations)
        self.client = client or httpx.AsyncClient(
            follow_redirects=False, headers={"user-agent": f"shop-edge/{__version__}"}
        )
        self.rng = rng or random.Random()
        self.limits = {name: RateLimit(d.rate) for name, d in self.destinations.items()}
        self._slots = asyncio.Semaphore(CONCURRENCY)
        slowest = min((d.rate for d in self.destinations.values()), default=10)
        self.batch = max(1, min(MAX_BATCH, slowest * BATCH_SECONDS))
        longest = max((d.timeout for d in self.destinations.values()), default=5.0)
        self.lease = math.ceil(longest) + math.ceil(self.batch / slowest) + LEASE_SPARE
        """Seconds a claim holds its messages: longer than a round can take, so a live
        worker settles them first; after a crash, another claims them then."""

    async def run_once(self, now: int) -> int:
        """Claim the messages due at *now* and deliver them; how many were claimed."""
        rows = await self.store.outbox_claim(now, self.batch, self.lease)
        if rows:
            await asyncio.gather(*(self._deliver(row, now) for row in rows))
        return len(rows)

    async def _deliver(self, row: OutboxRow, now: int) -> None:
        async with self._slots:
            try:
                error = await self._send(row)
            except StoreUnavailable as exc:
                error = f"store: {exc.reason}"
            except Exception as exc:  # a bug must not stop the other deliveries
                log.exception("delivering message %s failed", row.message.id)
                error = type(exc).__name__
            try:
                await self._settle(row, now, error)
            except StoreUnavailable as exc:
                # Not settled: the lease runs out and the message is claimed again.
                log.warning("message %s not settled (%s): retried later", row.message.id, exc)

    async def _send(self, row: OutboxRow) -> str:
        """Send *row*'s message: "" when delivered, else why not (no personal data)."""
        message = row.message
        dest = self.destinations.get(message.destination)
        if dest is None:
            return f"unknown destination {message.destination!r} (add [destinations.NAME])"
        body = message.body
        if COUPON_PLACEHOLDER in body:
            if not message.coupon_pool:
                return "the body has a coupon placeholder but the message names no pool"
            code = await self.store.coupon_take(message.coupon_pool, message.id)
            if code is None:
                return f"coupon pool {message.coupon_pool!r} is empty (edge coupons load)"
            body = body.replace(COUPON_PLACEHOLDER, code.encode())
        timestamp = await self.limits[message.destination].acquire()
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(dest.secret, body, timestamp),
            IDEMPOTENCY_HEADER: message.id,
        }
        try:
            response = await self.client.post(
                dest.url, content=body, headers=headers, timeout=dest.timeout
            )
        except httpx.TimeoutException:
            return f"no answer within {dest.timeout:g} s"
        except httpx.HTTPError as exc:
            # The name only: the text may quote the URL, which may carry a token.
            return f"no answer: {type(exc).__name__}"
        if 200 <= response.status_code < 300:
            return ""
        return f"HTTP {response.status_code}"

    async def _settle(self, row: OutboxRow, now: int, error: str) -> None:
        message = row.message
        if not error:
            await self.store.outbox_done(message.id)
            metrics.webhook(message.destination, "delivered")
            return
        dest = self.destinations.get(message.destination)
        dead = row.attempts >= (dest.max_attempts if dest is not None else 1)
        retry_at = now + backoff(row.attempts, self.rng)
        await self.store.outbox_failed(message.id, retry_at, error, dead)
        metrics.webhook(message.destination, "dead" if dead else "failed")
        log.debug("message %s to %s failed (%s)", message.id, message.destination, error)
        if dead:
            log.warning(
                "message %s to %s dead after %d tries: %s",
                message.id,
                message.destination,
                row.attempts,
                error,
            )

    async def close(self) -> None:
        await self.client.aclose()

"""What the sidecar counts, for Prometheus: ``GET /_edge/metrics`` (text format 0.0.4).

A leaf: it imports nothing of ours, so every layer may count (the request path, the
rules watcher, the recorder, the profile store).

What is counted, and who counts it:

==================================  ============================================================
``edge_requests_total{outcome}``    each request to the shop, once, by outcome:
                                    ``passthrough``, ``personalized``, ``preview``, ``bot``,
                                    ``error`` (:mod:`edge.respond`)
``edge_upstream_seconds``           time to the upstream's response head (histogram)
``edge_decision_seconds``           time deciding a page (profile, segments, placements, edits)
``edge_rules_reloads_total``        rule sets swapped in (:meth:`edge.rules.LiveRules.reload`)
``edge_rules_reload_errors_total``  edits of the rule files refused (the old rules kept serving)
``edge_exposures_total``            placements shown (``group="shown"``) or withheld from their
``{placement,group}``               holdout (``group="holdout"``) on a page sent
``edge_event_queue_depth``          observed events waiting for the batch writer (read at scrape)
``edge_store_seconds{op}``          profile store calls (histogram) ...
``edge_store_errors_total{op}``     ... and those that failed (or ran past their deadline)
``edge_store_breaker_open``         1 while the store's circuit breaker is open
``edge_webhooks_total``             the outbox's delivery tries, by destination and outcome
``{destination,outcome}``           (``delivered``, ``failed``, ``dead``: :mod:`edge.activation`)
``edge_access_log_dropped_total``   access log lines dropped because the log could not keep up
``edge_log_repeats_suppressed_...`` repeats of a log message held back (:mod:`edge.logs`)
``process_*``, ``python_*``         the process (resident memory, CPU, open files) and runtime
==================================  ============================================================

The API for code elsewhere (the store's deadlines and circuit breaker among them)::

    metrics.store_call("load", seconds, ok=True)   # one store call, how long, whether it worked
    metrics.store_breaker(open=True)               # the breaker opened (False: closed again)
    metrics.rules_reloaded(ok=False)               # a reload refused an invalid edit
    metrics.queue_depth(recorder.queued)           # a callable read at each scrape
    metrics.webhook("esp", "delivered")            # a delivery try and how it ended

``store_call`` and ``store_breaker`` may be called from any thread; the rest runs on the
event loop's thread.

Why counters of our own behind a prometheus-client *collector*, not its ``Counter``
and ``Histogram``: those take a lock and walk the buckets in Python on every update,
~4 µs for a labelled ``inc`` and ~8 µs for an ``observe`` on this VM, against ~0.5 µs
and ~1.3 µs here (a bisect and two additions). The request path pays per request;
the collector builds prometheus-client's metric families only when scraped, and
prometheus-client writes the exposition format.

One registry per process, at module level (not prometheus-client's global default
registry, so nothing else in the process lands on ``/_edge/metrics``): Prometheus
scrapes processes, and a module-level registry lets any layer count without an object
threaded through every constructor. Several apps built in one process (the tests, the
demo) add up in the same counters, as they would in a scrape of that process; the
queue depth sums the recorders alive. ``edge serve`` runs one process (no workers):
with several replicas, each is scraped on its own and Prometheus' ``instance`` label
tells them apart (``sum by (outcome) (rate(edge_requests_total[5m]))`` adds them up).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "CONTENT_TYPE",
    "REQUESTS",
    "MetricsEndpoint",
    "exposition",
    "exposure",
    "queue_depth",
    "rules_reloaded",
    "store_breaker",
    "store_call",
    "webhook",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

OUTCOMES: Final = ("passthrough", "personalized", "preview", "bot", "error")
"""How a request to the shop went, as ``edge_requests_total`` labels it."""


class Count:
    """A counter's value (one labelled child): ``inc()`` is an addition."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class Timing:
    """A histogram's buckets (cumulated only when scraped) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le=).
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((_bound(bound), total))
        return out


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


_NETWORK: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LOCAL: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

REQUESTS: Final = {outcome: Count() for outcome in OUTCOMES}
"""The labelled children of ``edge_requests_total``: ``REQUESTS["bot"].inc()``."""
PASSTHROUGH: Final = REQUESTS["passthrough"]
UPSTREAM: Final = Timing(_NETWORK)
"""``edge_upstream_seconds``: ``UPSTREAM.observe(seconds)``."""
DECISION: Final = Timing(_LOCAL)
"""``edge_decision_seconds``."""
ACCESS_LOG_DROPPED: Final = Count()
LOG_REPEATS_SUPPRESSED: Final = Count()

_reloads = Count()
_reload_errors = Count()
_shown: dict[str, Count] = {}
_holdouts: dict[str, Count] = {}
_store_timings: dict[str, Timing] = {}
_store_errors: dict[str, Count] = {}
_store_lock = threading.Lock()
_breaker_open = False
_queues: list[weakref.WeakMethod[Callable[[], int]]] = []
_webhooks: dict[tuple[str, str], Count] = {}


def rules_reloaded(ok: bool) -> None:
    """A rule reload: a new rule set serving (*ok*), or an edit refused."""
    (_reloads if ok else _reload_errors).inc()


def exposure(placement: str, held_out: bool = False) -> None:
    """A placement shown on a page sent, or withheld from its holdout."""
    counts = _holdouts if held_out else _shown
    count = counts.get(placement)
    if count is None:
        count = counts[placement] = Count()
    count.value += 1


def store_call(op: str, seconds: float, ok: bool = True) -> None:
    """One profile store call (``op``: what it did, e.g. ``load``, ``write``): how long
    it took, and whether it worked (a call past its deadline did not)."""
    with _store_lock:
        timing = _store_timings.get(op)
        if timing is None:
            timing = _store_timings[op] = Timing(_LOCAL)
            _store_errors[op] = Count()
        timing.observe(seconds)
        if not ok:
            _store_errors[op].inc()


def store_breaker(open: bool) -> None:
    """The store's circuit breaker opened (calls are skipped) or closed again."""
    global _breaker_open
    _breaker_open = open


def webhook(destination: str, outcome: str) -> None:
    """A try at delivering an outbox message to *destination*: ``delivered``, ``failed``
    (tried again later) or ``dead`` (no more tries)."""
    count = _webhooks.get((destination, outcome))
    if count is None:
        count = _webhooks[(destination, outcome)] = Count()
    count.value += 1


def queue_depth(depth: Callable[[], int]) -> None:
    """Read *depth* (a bound method: its object is not kept alive) at each scrape, for
    ``edge_event_queue_depth`` (the sum over every one registered and alive)."""
    _queues.append(weakref.WeakMethod(depth))  # type: ignore[arg-type]


class _Collector:
    """Builds prometheus-client's metric families from the counts, at scrape time."""

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "edge_requests", "Requests to the shop, by outcome.", labels=["outcome"]
        )
        for outcome, count in REQUESTS.items():
            requests.add_metric([outcome], count.value)
        yield requests
        yield _histogram(
            "edge_upstream_seconds", "Time to the upstream's response head.", {"": UPSTREAM}
        )
        yield _histogram(
            "edge_decision_seconds",
            "Time deciding a page: profile, segments, placements, edits.",
            {"": DECISION},
        )
        yield CounterMetricFamily(
            "edge_rules_reloads", "Rule sets swapped in.", value=_reloads.value
        )
        yield CounterMetricFamily(
            "edge_rules_reload_errors",
            "Edits of the rule files refused (the rules serving kept serving).",
            value=_reload_errors.value,
        )
        exposures = CounterMetricFamily(
            "edge_exposures",
            "Placements shown on pages sent, or withheld from their holdout group.",
            labels=["placement", "group"],
        )
        for group, counts in (("shown", _shown), ("holdout", _holdouts)):
            for placement, count in sorted(counts.items()):
                exposures.add_metric([placement, group], count.value)
        yield exposures
        yield GaugeMetricFamily(
            "edge_event_queue_depth",
            "Observed events waiting for the batch writer.",
            value=_queued(),
        )
        with _store_lock:
            timings = dict(_store_timings)
            errors = {op: count.value for op, count in _store_errors.items()}
        yield _histogram(
            "edge_store_seconds", "Profile store calls, by operation.", timings, label="op"
        )
        store_errors = CounterMetricFamily(
            "edge_store_errors",
            "Profile store calls that failed or ran past their deadline.",
            labels=["op"],
        )
        for op, value in sorted(errors.items()):
            store_errors.add_metric([op], value)
        yield store_errors
        yield GaugeMetricFamily(
            "edge_store_breaker_open",
            "1 while the store's circuit breaker is open (calls skipped).",
            value=1.0 if _breaker_open else 0.0,
        )
        webhooks = CounterMetricFamily(
            "edge_webhooks",
            "Outbox delivery tries, by destination and outcome (delivered, failed, dead).",
            labels=["destination", "outcome"],
        )
        for (destination, outcome), count in sorted(_webhooks.items()):
            webhooks.add_metric([destination, outcome], count.value)
        yield webhooks
        yield CounterMetricFamily(
            "edge_access_log_dropped",
            "Access log lines dropped: the log's destination could not keep up.",
            value=ACCESS_LOG_DROPPED.value,
        )
        yield CounterMetricFamily(
            "edge_log_repeats_suppressed",
            "Repeats of a log message held back (counted in a summary line instead).",
            value=LOG_REPEATS_SUPPRESSED.value,
        )


def _histogram(
    name: str, documentation: str, timings: dict[str, Timing], label: str = ""
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=[label] if label else None)
    for value, timing in sorted(timings.items()):
        family.add_metric([value] if label else [], timing.buckets(), timing.sum)
    return family


def _queued() -> int:
    total = 0
    for ref in list(_queues):
        depth = ref()
        if depth is None:
            _queues.remove(ref)
        else:
            total += depth()
    return total


REGISTRY: Final = CollectorRegistry(auto_describe=True)
REGISTRY.register(_Collector())  # type: ignore[arg-type]
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)


def exposition() -> bytes:
    """Everything counted, in Prometheus' text format (``CONTENT_TYPE``)."""
    return generate_latest(REGISTRY)


class MetricsEndpoint:
    """``GET /_edge/metrics`` (an ASGI app): the exposition; with a token, only for
    ``Authorization: Bearer <token>`` (compared in constant time), else 401."""

    def __init__(self, token: str = "") -> None:
        self._digest = hashlib.sha256(token.encode()).digest() if token else b""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._digest and not self._authorized(scope):
            body = b'{"error":"unauthorized","message":"Authorization: Bearer <metrics_token>"}'
            await _answer(send, 401, body, b"application/json", [(b"www-authenticate", b"Bearer")])
            return
        await _answer(send, 200, exposition(), CONTENT_TYPE.encode())

    def _authorized(self, scope: dict[str, Any]) -> bool:
        given = next((v for n, v in scope["headers"] if n == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        # Digests compared: neither the token's bytes nor its length show in the timing.
        offered = hashlib.sha256(token.strip()).digest()
        return scheme.lower() == b"bearer" and hmac.compare_digest(offered, self._digest)


async def _answer(
    send: Any,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

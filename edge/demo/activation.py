"""The demo's activation: a webhook receiver, a fake clock, and what the admin page's
demo section shows of them (``edge demo`` only; ``edge serve`` never builds any of it).

- :class:`Receiver`: a small HTTP receiver the demo's destinations point at (its own
  server on 127.0.0.1, not reachable through the sidecar). It verifies each request's
  ``Shop-Edge-Signature`` as README's receiver snippet does and keeps the last
  :data:`KEEP` messages in memory, verified or not (the page says which).
- :class:`DemoClock`: the real time plus an offset the page moves ("+1 h", "+4 h",
  "+1 day"). The activation's loops, the Activator and the profile writes read it, so a
  cart left "now" is 4 hours old after "+4 h".
- :class:`DemoActivation`: what the admin page's demo section (``edge/admin.py``) asks
  for: :meth:`~DemoActivation.view` and :meth:`~DemoActivation.move`, which runs the
  due loop and a delivery round at once, so the newcomer sees the result.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.activation.journeys import message_id
from edge.admin import DEMO_MOVES
from edge.profiles.model import Profile
from edge.profiles.outbox import DEAD, DELIVERED, PENDING, STATES, OutMessage

if TYPE_CHECKING:
    from edge.activation.loop import ActivationLoops
    from edge.profiles.store import Activation
    from edge.rules import LiveRules

__all__ = ["DemoActivation", "DemoClock", "Labels", "Receiver", "verify"]

KEEP: Final = 50
"""Messages the receiver keeps (the newest)."""
BODY_LIMIT: Final = 256 * 1024
"""The largest request body the receiver reads."""
TOLERANCE: Final = 300
"""Seconds a signature's timestamp may be away from the (real) time: README's 5 minutes."""
PATH: Final = "/hooks/{destination}"
OUTBOX_SHOWN: Final = 20
"""Messages of each outbox state the page lists (the newest)."""


def verify(secret: bytes, header: str, body: bytes, tolerance: int = TOLERANCE) -> bool:
    """True if *header* (Shop-Edge-Signature) signs *body*: README's receiver snippet."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


class DemoClock:
    """The real time moved on by :attr:`offset` seconds (the page's clock control)."""

    def __init__(self, base: Callable[[], float] = time.time) -> None:
        self.base = base
        self.offset = 0

    def __call__(self) -> float:
        return self.base() + self.offset

    def move(self, seconds: int) -> None:
        if seconds <= 0:
            raise ValueError("the demo clock only moves forward")
        self.offset += seconds


@dataclass(frozen=True, slots=True)
class Received:
    """One request the receiver got."""

    at: float
    """When it came (real time)."""
    destination: str
    message_id: str
    scenario: str
    step: str
    visitor: str
    payload: str
    """The body, pretty-printed when it is JSON."""
    verified: bool


class Labels:
    """Which scenario and step made each message: wraps the activation every profile
    write runs and remembers the last :data:`KEEP` × 4 messages' labels."""

    def __init__(self, inner: Activation, rules: LiveRules) -> None:
        self.inner = inner
        self.rules = rules
        self.reads_before = getattr(inner, "reads_before", True)
        self.known: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        messages = self.inner.after(profile, before, now)
        for message in messages:
            label = self._label(profile, message.id)
            if label is not None:
                self.known[message.id] = label
                while len(self.known) > KEEP * 4:
                    self.known.popitem(last=False)
        return messages

    def _label(self, profile: Profile, mid: str) -> tuple[str, str] | None:
        scenarios = self.rules.ruleset.scenarios
        for journey in profile.journeys.values():
            scenario = scenarios.get(journey.scenario)
            if scenario is None:
                continue
            for index, step in enumerate(scenario.steps):
                if message_id(scenario.id, index, profile.visitor_id, journey.trigger) == mid:
                    return scenario.id, step.name
        return None


class Receiver:
    """The demo's webhook receiver: ``POST /hooks/NAME`` (its own server's routes)."""

    def __init__(self, secret: bytes, labels: Labels | None = None, keep: int = KEEP) -> None:
        self.secret = secret
        self.labels = labels
        self.messages: collections.deque[Received] = collections.deque(maxlen=keep)

    def routes(self) -> list[Route]:
        return [Route(PATH, self.receive, methods=["POST"])]

    async def receive(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > BODY_LIMIT:
                return JSONResponse({"error": "too large"}, status_code=413)
        verified = verify(self.secret, request.headers.get("shop-edge-signature", ""), body)
        mid = request.headers.get("idempotency-key", "")[:64]
        try:
            payload: Any = json.loads(body)
            pretty = json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True)
        except ValueError:
            payload, pretty = {}, body.decode("utf-8", "replace")
        payload = payload if isinstance(payload, dict) else {}
        known = self.labels.known.get(mid) if self.labels is not None else None
        scenario, step = known or (str(payload.get("type", "")), str(payload.get("step", "")))
        visitor = payload.get("visitor")
        key = visitor.get("id", "") if isinstance(visitor, dict) else ""
        self.messages.append(
            Received(
                time.time(),
                request.path_params["destination"],
                mid,
                scenario,
                step,
                str(key),
                pretty,
                verified,
            )
        )
        if not verified:  # a receiver refuses what it cannot trust; the page shows it
            return JSONResponse({"error": "bad signature"}, status_code=401)
        return JSONResponse({"received": mid})


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _offset_text(offset: int) -> str:
    if not offset:
        return "the real time"
    days, rest = divmod(offset, 86_400)
    hours, rest = divmod(rest, 3600)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else ""]
    parts.append(f"{rest // 60} min" if rest >= 60 else "")
    return "+" + " ".join(p for p in parts if p)


class DemoActivation:
    """The demo section of the admin page: the clock, the receiver, the outbox."""

    def __init__(self, clock: DemoClock, receiver: Receiver, loops: ActivationLoops) -> None:
        self.clock = clock
        self.receiver = receiver
        self.loops = loops

    async def move(self, seconds: int) -> dict[str, int]:
        """Move the clock on, then run the due loop and a delivery round at once."""
        self.clock.move(seconds)
        now = int(self.clock())
        due = await self.loops.due_once(now)
        sent = await self.loops.delivery.run_once(now)
        return {"offset": self.clock.offset, "due": due, "sent": sent}

    async def view(self) -> dict[str, Any]:
        """What the section draws (and ``data.json``'s ``demo``)."""
        store = self.loops.store
        outbox: dict[str, list[dict[str, Any]]] = {}
        for state in STATES:
            rows = await store.outbox_list(state, 10_000)
            outbox[state] = [
                {
                    "id": r.message.id,
                    "destination": r.message.destination,
                    "attempts": r.attempts,
                    "next": _when(r.next_at) if r.state == PENDING and r.next_at else "",
                    "error": r.error,
                    "label": " · ".join(self.receiver.labels.known.get(r.message.id, ()))
                    if self.receiver.labels is not None
                    else "",
                }
                for r in reversed(rows)
            ]
        return {
            "now": _when(self.clock()),
            "offset": self.clock.offset,
            "offset_text": _offset_text(self.clock.offset),
            "moves": [{"by": by, "label": _move_label(by)} for by in DEMO_MOVES],
            "messages": [_received_view(m) for m in reversed(self.receiver.messages)],
            "outbox": {state: rows[:OUTBOX_SHOWN] for state, rows in outbox.items()},
            "counts": {state: len(outbox[state]) for state in (PENDING, DELIVERED, DEAD)},
        }


def _move_label(by: str) -> str:
    return {"1h": "+1 h", "4h": "+4 h", "1d": "+1 day"}[by]


def _received_view(message: Received) -> dict[str, Any]:
    return {
        "at": _when(message.at),
        "destination": message.destination,
        "message_id": message.message_id,
        "scenario": message.scenario,
        "step": message.step,
        "visitor": message.visitor,
        "payload": message.payload,
        "verified": message.verified,
    }


def webhook_names(rule_files: Iterable[Mapping[str, Any]]) -> set[str]:
    """The destinations the scenarios of parsed rule files name (``action.webhook``)."""
    names = set()
    for document in rule_files:
        for scenario in document.get("scenarios") or []:
            for step in scenario.get("steps") or [] if isinstance(scenario, dict) else []:
                action = step.get("action") if isinstance(step, dict) else None
                if isinstance(action, dict) and isinstance(action.get("webhook"), str):
                    names.add(action["webhook"])
    return names

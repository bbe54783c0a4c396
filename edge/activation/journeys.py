"""The scenario engine: each visitor's journeys through the merchant's ``[[scenarios]]``.

Pure: every function takes ``now`` and the profile, and nothing else is read (no clock,
no I/O). :func:`advance` is called on every profile write (an event, an import, the due
loop's touch) after the profile changed, with the segment transitions that write made:

1. a visitor without marketing consent has no journeys (pending ones are dropped);
2. a journey whose ``exit`` happened (an order since the trigger, the visitor left the
   trigger's segment, an emptied cart) ends;
3. a trigger (a segment entry or exit among the transitions, a cart left, an order)
   newer than the journey's starts it again from its first step, if the trigger's
   ``when`` holds (else the trigger is kept as seen, in a journey already done);
4. every step that is due runs: if it is more than the scenario's ``late`` overdue it
   is skipped; else if its ``when`` holds, its payload is rendered into an
   :class:`OutMessage` (discount from the tiers); else it is skipped;
5. the profile's next due time is the earliest pending step.

A message's id is :func:`message_id` of the scenario, the step, the profile and the
trigger's time: running the same step again (a store that retries a transaction, two
replicas) gives the same id, which the outbox keeps once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge.profiles.model import Journey, Profile
from edge.profiles.outbox import OutMessage
from edge.rules import RuleSet
from edge.rules.scenarios import Scenario, Step

__all__ = ["Journey", "Outcome", "Render", "Transition", "advance", "message_id"]


class Transition(Protocol):
    """A segment entry or exit (``edge.activation.segments.Transition``)."""

    @property
    def segment(self) -> str: ...
    @property
    def entered(self) -> bool: ...
    @property
    def at(self) -> int: ...


Render = Callable[[Profile, Scenario, Step, str, float, int], bytes | None]
"""``render(profile, scenario, step, message_id, discount, now)``: the step's JSON payload,
or None when it cannot be rendered (the step is then passed without a message)."""


@dataclass(slots=True)
class Outcome:
    messages: list[OutMessage] = field(default_factory=list)
    due: int = 0
    """The earliest pending step of any journey; 0: none."""


def message_id(scenario: str, step: int, key: str, trigger: int) -> str:
    """The idempotency key of one step of one journey (32 hex digits)."""
    text = f"{scenario}:{step}:{key}:{trigger}".encode()
    return hashlib.blake2b(text, digest_size=16).hexdigest()


class _Result:
    """The rule set's evaluation of the profile at ``now``, computed on first use."""

    __slots__ = ("_profile", "_result", "_ruleset", "now")

    def __init__(self, ruleset: RuleSet, profile: Profile, now: int) -> None:
        self._ruleset = ruleset
        self._profile = profile
        self.now = now
        self._result: Sequence[bool] | None = None

    @property
    def values(self) -> Sequence[bool]:
        if self._result is None:
            self._result = self._ruleset.evaluate(
                self._ruleset.context(self._profile, None, self.now)
            )
        return self._result

    def holds(self, scenario: Scenario, condition: int) -> bool:
        return condition < 0 or scenario.holds(self.values, condition)


def advance(
    profile: Profile,
    ruleset: RuleSet,
    transitions: Iterable[Transition],
    now: int,
    render: Render,
) -> Outcome:
    """Move every journey of *profile* on to *now* (see the module's docstring).
    ``profile.segments`` is as :func:`edge.activation.segments.update` left it, with
    *transitions*."""
    journeys = profile.journeys
    scenarios = ruleset.scenarios
    if not profile.consent:
        journeys.clear()
        return Outcome()
    for gone in [sid for sid in journeys if sid not in scenarios]:
        del journeys[gone]
    if not scenarios:
        return Outcome()
    changes = list(transitions)
    result = _Result(ruleset, profile, now)
    out = Outcome()
    for scenario in scenarios.values():
        journey = journeys.get(scenario.id)
        if journey is not None and not journey.done and _exited(profile, scenario, journey):
            journey.done, journey.due = True, 0
        at = _triggered(profile, scenario, changes)
        if at is not None and (journey is None or at > journey.trigger):
            if result.holds(scenario, scenario.trigger.when):
                journey = journeys[scenario.id] = _start(scenario, at, now, result)
            else:  # this trigger is seen (its moment passed): not judged again
                journey = journeys[scenario.id] = Journey(scenario.id, 0, now, 0, at, True)
        if journey is not None and not journey.done:
            _run(profile, scenario, journey, result, render, out.messages)
    out.due = min((j.due for j in journeys.values() if not j.done and j.due), default=0)
    return out


def _orders_since(profile: Profile, since: int, strictly: bool) -> bool:
    """Whether an order was placed after *since* (at it too, unless *strictly*)."""
    for order in reversed(profile.orders):
        if order.ts > since or (order.ts == since and not strictly):
            return True
        if order.ts < since:
            break
    return False


def _exited(profile: Profile, scenario: Scenario, journey: Journey) -> bool:
    exits, trigger = scenario.exit, scenario.trigger
    if "order" in exits:
        strictly = trigger.kind == "event" and trigger.name == "order"
        if _orders_since(profile, journey.trigger, strictly):
            return True
    if "cart_emptied" in exits and not profile.cart.items:
        return True
    if "checkout" in exits and profile.checkout_started >= journey.trigger:
        return True
    if "leave" in exits and trigger.kind != "event":
        # profile.segments: as segments.update just judged them, with these transitions
        return (trigger.name in profile.segments) != (trigger.kind == "enter")
    return False


def _triggered(profile: Profile, scenario: Scenario, changes: list[Transition]) -> int | None:
    """The time of the scenario's latest trigger as this profile stands, if any."""
    trigger = scenario.trigger
    if trigger.kind != "event":
        entered = trigger.kind == "enter"
        times = [t.at for t in changes if t.segment == trigger.name and t.entered == entered]
        return max(times) if times else None
    if trigger.name == "order":
        return profile.orders[-1].ts if profile.orders else None
    cart, checkout = profile.cart, profile.checkout_started
    if not cart.items or not cart.updated:
        return None
    if trigger.name == "cart_left":
        left = cart.updated if checkout < cart.updated else None
    else:  # checkout_left
        left = checkout if checkout >= cart.updated else None
    if left is None or _orders_since(profile, left, False):
        return None
    return left


def _start(scenario: Scenario, at: int, now: int, result: _Result) -> Journey:
    first = scenario.steps[0]
    return Journey(
        scenario.id, 0, now, at + scenario.delay(first, _values(scenario, first, result)), at
    )


def _values(scenario: Scenario, step: Step, result: _Result) -> Sequence[bool]:
    """The result, evaluated only when the step's delay depends on a condition."""
    return result.values if step.instead else ()


def _run(
    profile: Profile,
    scenario: Scenario,
    journey: Journey,
    result: _Result,
    render: Render,
    messages: list[OutMessage],
) -> None:
    """Run the steps of *journey* that are due, and schedule the next one."""
    now = result.now
    while not journey.done and journey.due <= now:
        if journey.step >= len(scenario.steps):  # the scenario lost steps in an edit
            journey.done, journey.due = True, 0
            break
        step = scenario.steps[journey.step]
        if now - journey.due <= scenario.late and result.holds(scenario, step.when):
            mid = message_id(scenario.id, journey.step, profile.visitor_id, journey.trigger)
            discount = scenario.discount(step, result.values) if step.tiers else step.discount
            body = render(profile, scenario, step, mid, discount, now)
            if body is not None:
                messages.append(
                    OutMessage(
                        mid,
                        step.action.webhook,
                        body,
                        profile.visitor_id,
                        now,
                        step.action.coupon_pool,
                    )
                )
        journey.step += 1
        if journey.step >= len(scenario.steps):
            journey.done, journey.due = True, 0
            break
        following = scenario.steps[journey.step]
        delay = scenario.delay(following, _values(scenario, following, result))
        journey.due = max(journey.due, journey.trigger + delay)


def pending(journeys: Mapping[str, Journey]) -> list[Journey]:
    """The journeys with a step still to run, earliest first (for ``edge explain``)."""
    return sorted((j for j in journeys.values() if not j.done), key=lambda j: j.due)

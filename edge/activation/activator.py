"""The activation hook: what runs on every profile a write produces.

Segment transitions (``edge.activation.segments``), then the scenarios' journeys
(``edge.activation.journeys``), then the profile's next due time. A payload template
that fails is logged (the scenario and the template, never the visitor) and its step
passes without a message: a visitor's write never fails for a merchant's template.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

from edge.activation import journeys, segments
from edge.activation.payloads import Names, PayloadError, Payloads, payload_context
from edge.profiles.model import Profile
from edge.profiles.outbox import OutMessage
from edge.rules import LiveRules
from edge.rules.scenarios import Scenario, Step

log = logging.getLogger("edge.activation")
T = TypeVar("T")


Setting = Callable[[], T] | T


class Activator:
    """*snippets*: the merchant's snippet directory, whose ``webhooks/`` has the payload
    templates (the library's otherwise); *traits*: the traits a payload may carry
    (``export_traits``). Each a value, or a function giving the current one (settings
    that change while serving)."""

    reads_before = False
    """``after`` judges the profile as it is now (its ``segments`` keep what it was in):
    the store keeps no copy of it as it was read (``edge.profiles.store.Activating``)."""

    def __init__(
        self,
        rules: LiveRules,
        *,
        clock: Callable[[], float] | None = None,
        snippets: Setting[str | Path | None] = None,
        traits: Setting[Collection[str]] = (),
        names: Names | None = None,
    ) -> None:
        self.rules = rules
        self.clock = clock or time.time
        self._snippets = snippets
        self._traits = traits
        self.names = names
        """Products' names by id, for cart lines that came without one."""
        self._payloads: tuple[Path | None, Payloads] | None = None

    @property
    def payloads(self) -> Payloads:
        """The payload templates of the current snippet directory."""
        setting = self._snippets() if callable(self._snippets) else self._snippets
        directory = Path(setting) / "webhooks" if setting is not None else None
        if self._payloads is None or self._payloads[0] != directory:
            self._payloads = directory, Payloads(directory)
        return self._payloads[1]

    def after(self, profile: Profile, before: Profile | None, now: int) -> list[OutMessage]:
        """Called inside the store transaction on every profile a write produces (after
        the mutation): updates profile.segments (transitions via edge.activation.segments
        .update), advances profile.journeys (edge.activation.journeys), sets profile.due,
        returns the messages to enqueue (in the same transaction)."""
        ruleset = self.rules.ruleset
        # update and next_change in one evaluation (journeys change neither's inputs)
        transitions, change = segments.refresh(profile, ruleset, now)
        outcome = journeys.advance(profile, ruleset, transitions, now, self._render)
        change = change or 0
        profile.due = min((t for t in (change, outcome.due) if t), default=0)
        return outcome.messages

    def _render(
        self,
        profile: Profile,
        scenario: Scenario,
        step: Step,
        message_id: str,
        discount: float,
        now: int,
    ) -> bytes | None:
        context = payload_context(
            profile,
            scenario=scenario.id,
            step=step.name,
            message_id=message_id,
            at=now,
            discount=discount,
            coupon_pool=step.action.coupon_pool,
            traits=self._traits() if callable(self._traits) else self._traits,
            currency=self.rules.ruleset.shop.currency,
            names=self.names,
        )
        try:
            return self.payloads.render(step.action.template, context)
        except PayloadError as exc:
            log.error("scenario %s, %s: payload not sent: %s", scenario.id, step.name, exc)
            return None

"""The activation hook: what runs on every profile a write produces.

Minimal for now (segments and the due time); the scenarios' journeys extend ``after``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge.activation import segments
from edge.profiles.model import Profile
from edge.rules import LiveRules

# ``OutMessage`` is edge.activation.outbox's (the "delivery" branch): once both are merged,
# import it under TYPE_CHECKING here (importing it now would name a module not yet there).


class Activator:
    def __init__(self, rules: LiveRules, *, clock: Callable[[], float] | None = None) -> None:
        self.rules = rules
        self.clock = clock or time.time

    def after(
        self,
        profile: Profile,
        before: Profile | None,
        now: int,
    ) -> list[OutMessage]:  # noqa: F821
        """Called inside the store transaction on every profile a write produces (after
        the mutation): updates profile.segments (transitions via edge.activation.segments
        .update), advances profile.journeys (edge.activation.journeys), sets profile.due,
        returns the messages to enqueue (in the same transaction)."""
        ruleset = self.rules.ruleset
        segments.update(profile, ruleset, now)
        profile.due = segments.next_change(profile, ruleset, now) or 0
        return []

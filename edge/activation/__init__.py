"""Activation beyond the page: segment transitions as they happen and by time alone
(``segments``), scenarios with delays (``journeys``), and delivery through a durable
outbox (``outbox``).

Public surface::

    Activator(rules, clock=None)    .after(profile, before, now) -> [OutMessage]
    activatable(ruleset)            -> frozenset of segment names judged without a request
    update(profile, ruleset, now)   -> [Transition]   (profile.segments updated)
    next_change(profile, ruleset, now) -> int | None  (when time alone may change one)
    Transition(segment, entered, at)

``edge.profiles`` never imports this package: the store runs the activator as a
mutation wrapper it is given (see ``edge/profiles/store.py``).
"""

from edge.activation.activator import Activator
from edge.activation.segments import Transition, activatable, next_change, update

__all__ = ["Activator", "Transition", "activatable", "next_change", "update"]

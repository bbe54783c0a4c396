"""The outbox's types (:class:`OutMessage`, :class:`OutboxRow`) and states.

Defined in :mod:`edge.profiles.outbox`, beside the stores that write them in the
profiles' own transactions (the profiles package must not import this one)."""

from __future__ import annotations

from edge.profiles.outbox import (
    COUPON_PLACEHOLDER,
    DEAD,
    DELIVERED,
    PENDING,
    STATES,
    OutboxRow,
    OutMessage,
)

__all__ = [
    "COUPON_PLACEHOLDER",
    "DEAD",
    "DELIVERED",
    "PENDING",
    "STATES",
    "OutMessage",
    "OutboxRow",
]

"""The outbox's records, as the stores keep them: a message to deliver and its state.

The types live here, beside the stores that write them in the transaction that writes
the profiles (``edge.profiles`` never imports ``edge.activation``); the activation
package imports them from here.

States: ``pending`` (waiting for its time, or being delivered under a lease),
``delivered`` (a receiver answered 2xx), ``dead`` (``max_attempts`` failed: kept until
``edge outbox retry`` or ``purge``).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
DEAD: Final = "dead"
STATES: Final = (PENDING, DELIVERED, DEAD)

COUPON_PLACEHOLDER: Final = b"__EDGE_COUPON__"
"""Where a message's body takes the coupon code drawn at its first delivery."""
COUPON_CODE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""What a coupon code may be: it goes into a JSON body as it is, so nothing to escape."""


class OutMessage(msgspec.Struct, frozen=True):
    """One message to deliver, written by the activation in a profile's transaction."""

    id: str
    """The idempotency key: deterministic, so the same step of the same journey enqueued
    twice is one message (inserting an id that exists does nothing)."""
    destination: str
    """A destination name from edge.toml (``[destinations.NAME]``)."""
    body: bytes
    """The JSON payload, rendered at enqueue; may hold :data:`COUPON_PLACEHOLDER`."""
    visitor: str
    """The profile key (erasure removes the visitor's messages by it)."""
    not_before: int
    """Unix time before which it is not sent."""
    coupon_pool: str = ""
    """The pool the code for :data:`COUPON_PLACEHOLDER` is drawn from."""


class OutboxRow(msgspec.Struct, frozen=True):
    """A message and where its delivery stands."""

    message: OutMessage
    state: str
    """One of :data:`STATES`."""
    attempts: int = 0
    """Deliveries begun (a claim counts one, even if the worker died during it)."""
    next_at: int = 0
    """When it may be tried next: ``not_before``, a retry's time, or a claim's lease end."""
    error: str = ""
    """Why the latest attempt failed (no personal data: a status or an exception name)."""
    created: int = 0
    updated: int = 0


def encode_message(message: OutMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_message(data: bytes) -> OutMessage:
    return msgspec.msgpack.decode(data, type=OutMessage)

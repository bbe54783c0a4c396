"""One customer view: the rules that stitch a shop event's subject to one profile.

A profile is stored under one key: the customer's (``cust:ID``) once the shop names
the customer, else the first id it was known by (the cookie's visitor id, or
``email:HASH`` for an email address). The other ids it was known by are aliases that
point at that key. A shop event naming a customer (or an email) absorbs the visitor's
anonymous profile and a profile known only by email before the customer id arrived,
so what a visitor did before logging in or ordering counts for the customer.

Pure rules, no store and no I/O: :class:`~edge.profiles.service.ProfileService`
applies them one event at a time through the store, ``edge import``
(:mod:`edge.importer.bulk`) to many events in memory; both must stitch alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from edge.profiles.events import BaseEvent, OrderCompleted, OrderObserved, merge
from edge.profiles.model import Profile


class UnknownVisitor(Exception):
    """An event from the shop names no visitor, customer or email."""


def customer_key(customer_id: str) -> str:
    return f"cust:{customer_id}"


def email_key(email_hash: str) -> str:
    return f"email:{email_hash}"


_ORDERS: Final = (OrderCompleted, OrderObserved)
"""(a tuple: ``A | B`` would build a union object on every call)"""


def claim(event: BaseEvent) -> str:
    """What makes *event* count once: its order id for an order (ingested, imported or
    observed on the confirmation page alike), else its event id; "" when it has neither
    (it counts every time)."""
    if isinstance(event, _ORDERS):
        return f"order:{event.order_id}"
    if event.event_id:
        return f"event:{event.event_id}"
    return ""


def aliases(event: BaseEvent, email_hash: str) -> list[str]:
    """The ids a shop event knows its subject by besides the customer id: the visitor
    id, then the email's key (*email_hash*: of the event's email, "" for none)."""
    found = []
    if event.anonymous_id:
        found.append(event.anonymous_id)
    if email_hash:
        found.append(email_key(email_hash))
    return found


@dataclass(frozen=True, slots=True)
class Stitch:
    """Where a shop event goes."""

    key: str
    """The profile it changes."""
    absorb: list[str]
    """The profiles that become that one (merged into it, then removed)."""
    aliases: list[str]
    """The ids that point at it afterwards."""
    detach: list[str] = field(default_factory=list)
    """Other customers' profiles that held one of those ids: they keep what they are,
    the id moves (:func:`detach`)."""
    moved: list[str] = field(default_factory=list)
    """The ids that move from a *detach* profile to *key*."""


def stitch(event: BaseEvent, email_hash: str, resolve: Callable[[str], str | None]) -> Stitch:
    """Where the shop *event* goes. *resolve*: an alias (one of :func:`aliases`) ->
    the key of the profile that absorbed it, None when none did."""
    names = aliases(event, email_hash)
    if event.user_id:
        key = customer_key(event.user_id)
    elif names:  # no customer id: the email's profile, else the visitor's
        key = resolve(names[-1]) or names[-1]
    else:
        raise UnknownVisitor("each shop event needs user_id, email or anonymous_id")
    absorb: list[str] = []
    detach: list[str] = []
    moved: list[str] = []
    for alias in names:
        other = resolve(alias) or alias
        if other == key:
            continue
        if other.startswith("cust:") and key.startswith("cust:"):
            # Two customers are never merged: on a shared browser the second logged in
            # where the first had not logged out (as far as anyone saw). The browser
            # (or the email) is the second's from now on; the first keeps their profile.
            moved.append(alias)
            if other not in detach:
                detach.append(other)
        elif other not in absorb:
            absorb.append(other)
    return Stitch(key, absorb, names, detach, moved)


def detach(profile: Profile, moved: Sequence[str]) -> None:
    """*profile* (another customer's) no longer answers to the *moved* ids: they point
    at the profile the event went to (whose write links them)."""
    profile.aliases = [a for a in profile.aliases if a not in moved]


def absorb_into(
    profile: Profile, absorb: Sequence[str], current: Mapping[str, Profile | None]
) -> list[str]:
    """Merge the profiles of *absorb* that exist in *current* into *profile*, with
    their ids and aliases; returns their keys, for the caller to remove."""
    merged = []
    for other_key in absorb:
        other = current.get(other_key)
        if other is not None:
            merge(profile, other)
            merged.append(other_key)
    return merged


def link(
    profile: Profile,
    key: str,
    customer_id: str | None,
    email_hash: str,
    aliases: Sequence[str],
) -> None:
    """Name *profile* (stored under *key*) as the shop did: its customer id and email
    hash when given, and *aliases* pointing at it. (Positional: every recorded batch
    makes this call, and keywords cost more than what it does for most of them.)"""
    if customer_id:
        profile.customer_id = customer_id
    if email_hash:
        profile.email_hash = email_hash
    profile.aliases = sorted(set(profile.aliases) | {a for a in aliases if a != key})

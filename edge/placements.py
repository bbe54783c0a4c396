"""Choosing placements: which placement fills each slot of a page, for one visitor.

Pure: given the placements whose condition holds (highest priority first), the
slots, the page's type, the visitor's profile and the time, :func:`choose` says for
each candidate whether it may be shown (its slot is on this page, it is within its
schedule, under its frequency cap, not an expired timed offer) and whether this
visitor is in its holdout or which of its variants they see (:func:`assign`, one
arm per unit: a known customer, else a visitor); :func:`fill` then gives each slot the first candidate that
makes an edit, or keeps the original page where the first candidate holds the
visitor out. No I/O and no rendering here: :mod:`edge.activities` turns a choice
into an edit, :mod:`edge.decide` puts the two together.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from edge.personalize.offers import OfferState, frequency_allows, offer_state
from edge.profiles.model import Profile
from edge.rules import PlacementRule
from edge.rules.lang import parse_duration
from edge.rules.spec import Placement, Slot, Variant
from edge.rules.variants import DEFAULT_ARM, HOLDOUT_ARM, arms_of

__all__ = [
    "DEFAULT_ARM",
    "HOLDOUT_ARM",
    "Choice",
    "Filled",
    "assign",
    "choose",
    "fill",
    "in_holdout",
    "split",
    "unit_key",
]

T = TypeVar("T")


@dataclass(slots=True)
class Choice:
    """A placement that may fill its slot on this page. (Not frozen: one is made for
    every candidate of every page view, and a frozen one costs a call per field.)"""

    placement: PlacementRule
    slot: Slot
    offer: OfferState | None = None
    """The timed offer's state (deadline fixed at the first exposure), when it is one."""
    held_out: bool = False
    """The visitor is in this placement's control group: the slot keeps the original."""
    variant: Variant | None = None
    """What the slot shows (None when held out): one of the placement's variants, or
    its ``default`` one."""

    @property
    def arm(self) -> str:
        """``holdout`` or the variant's name, for the exposure and the report."""
        if self.held_out or self.variant is None:
            return HOLDOUT_ARM
        return self.variant.name

    @property
    def slot_name(self) -> str:
        return self.placement.spec.slot


@functools.lru_cache(maxsize=256)
def _seconds(text: str) -> int:
    """A duration the rule files' checker already accepted (``90s``, ``24h``, ``1.5h``);
    a rule set has a handful, asked for on every page."""
    seconds = parse_duration(text)
    assert seconds is not None, text
    return int(seconds)


def in_holdout(visitor_id: str, placement_id: str, share: float) -> bool:
    """Deterministic: the same visitor is always on the same side for a placement, and
    different placements split visitors independently."""
    if share <= 0.0 or not visitor_id:
        return False
    return _in_holdout(visitor_id, placement_id, share)


@functools.lru_cache(maxsize=16_384)
def _in_holdout(visitor_id: str, placement_id: str, share: float) -> bool:
    """(Remembered: a visitor asks the same placements page after page; a hash is
    ~5k instructions, a hit ~1k.) The hash of ``placement\0visitor``, from the
    placement's part hashed once (:func:`_holdout_hash`): a new visitor costs a
    copy of that state and the visitor's bytes, about half a fresh hash."""
    hashed = _holdout_hash(placement_id).copy()
    hashed.update(visitor_id.encode())
    return int.from_bytes(hashed.digest(), "big") / 2**64 < share


@functools.lru_cache(maxsize=1024)
def _holdout_hash(placement_id: str) -> hashlib.blake2b:
    """BLAKE2b-64 fed ``placement_id\0`` (copied, never fed itself)."""
    return hashlib.blake2b(f"{placement_id}\0".encode(), digest_size=8)


def unit_key(visitor_id: str, profile: Profile | None) -> str:
    """Who is assigned an arm: the customer (``cust:ID``) when the profile is linked to
    one, on every cookie and device of theirs; else the visitor id."""
    if profile is not None and profile.customer_id:
        return "cust:" + profile.customer_id
    return visitor_id


def _rank(unit: str, placement_id: str, name: str, weight: float) -> float:
    """A variant's draw for *unit*: exponential with rate *weight*, from its own hash."""
    digest = hashlib.blake2b(
        f"{placement_id}\0{name}\0{unit}".encode(), digest_size=8, person=b"edge-variant"
    ).digest()
    uniform = (int.from_bytes(digest, "big") + 0.5) / 2**64  # in (0, 1)
    return -math.log(uniform) / weight


def assign(unit: str, placement_id: str, holdout: float, variants: Sequence[Variant]) -> str:
    """The arm of *unit* in a placement: ``holdout`` (:func:`in_holdout`, as placements
    without variants always did), else one of *variants* by weight.

    Deterministic. Each variant draws for each unit from a hash of (placement, variant
    name, unit) and the smallest weighted draw wins (weighted rendezvous hashing): a
    variant gets ``weight / sum(weights)`` of the units outside the holdout, and a
    change moves only the units it must: raising one variant's weight moves units
    only into it, lowering it only out of it, adding a variant takes its share from
    the others in proportion, removing one spreads its units; reordering changes
    nothing, renaming one reassigns its units. The holdout hash is independent, so a
    new holdout share moves units between the holdout and the variants only. No
    unit (a preview): the first variant."""
    if in_holdout(unit, placement_id, holdout):
        return HOLDOUT_ARM
    if len(variants) == 1 or not unit:
        return variants[0].name
    best, best_rank = variants[0].name, math.inf
    for variant in variants:
        rank = _rank(unit, placement_id, variant.name, variant.weight)
        if rank < best_rank:
            best, best_rank = variant.name, rank
    return best


def split(spec: Placement) -> dict[str, float]:
    """The configured share of a placement's eligible units in each arm: ``holdout``
    first, then each variant's ``(1 - holdout) * weight / sum(weights)``; what the
    report's sample-ratio check compares the counts with."""
    arms = arms_of(spec)
    total = sum(v.weight for v in arms)
    out = {HOLDOUT_ARM: spec.holdout}
    for v in arms:
        out[v.name] = (1.0 - spec.holdout) * v.weight / total
    return out


def choose(
    placements: Sequence[PlacementRule],
    slots: Mapping[str, Slot],
    *,
    page_type: str,
    profile: Profile | None,
    now: int,
    holdout_key: str,
) -> list[Choice]:
    """The placements of *placements* (those whose condition holds, highest priority
    first) that may be shown on a page of *page_type* now, in the same order.

    A placement is left out when its slot is not declared or not on this page type,
    when it is outside its schedule, when the visitor saw it ``cap.views`` times in
    ``cap.per`` already, or when it is a timed offer whose deadline passed. Units
    are assigned their arm by *holdout_key* (:func:`unit_key`; empty: nobody is held
    out and the first variant shows, as in a preview)."""
    chosen: list[Choice] = []
    for placement in placements:
        spec = placement.spec
        slot = slots.get(spec.slot)
        if slot is None or (slot.pages and page_type not in slot.pages):
            continue
        if not placement.scheduled(now):
            continue
        if spec.cap is not None and profile is not None:
            times = profile.exposures.get(placement.id, [])
            if not frequency_allows(times, spec.cap.views, _seconds(spec.cap.per), now):
                continue
        offer = None
        if spec.offer_ttl:
            offers = profile.offers if profile is not None else {}
            offer = offer_state(offers, placement.id, _seconds(spec.offer_ttl), now)
            if offer.expired:
                continue
        variants = placement.variants or arms_of(spec)
        if len(variants) == 1:  # (the common case: one hash, as before variants)
            if in_holdout(holdout_key, placement.id, spec.holdout):
                chosen.append(Choice(placement, slot, offer, True))
            else:
                chosen.append(Choice(placement, slot, offer, False, variants[0]))
            continue
        arm = assign(holdout_key, placement.id, spec.holdout, variants)
        if arm == HOLDOUT_ARM:
            chosen.append(Choice(placement, slot, offer, True))
        else:
            variant = next(v for v in variants if v.name == arm)
            chosen.append(Choice(placement, slot, offer, False, variant))
    return chosen


@dataclass(slots=True)
class Filled(Generic[T]):
    """What :func:`fill` made of a page's choices."""

    shown: list[tuple[Choice, T]]
    """Each filled slot's choice and its edit, in the order the choices came."""
    held_out: list[Choice]
    """The choices whose slot keeps the original page for this visitor."""


def fill(choices: Sequence[Choice], make: Callable[[Choice], T | None]) -> Filled[T]:
    """Give each slot its first choice: held out (the slot is then done), or shown if
    ``make(choice)`` makes an edit; a choice that makes none (a snippet that failed,
    a form with nothing left to ask) lets the next choice for that slot try."""
    filled: Filled[T] = Filled([], [])
    taken: set[str] = set()
    for choice in choices:
        slot = choice.slot_name
        if slot in taken:
            continue
        if choice.held_out:
            taken.add(slot)
            filled.held_out.append(choice)
            continue
        made = make(choice)
        if made is None:
            continue
        taken.add(slot)
        filled.shown.append((choice, made))
    return filled

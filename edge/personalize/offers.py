"""Timed offers and frequency caps (pure: the caller stores what these say to store).

A timed offer's deadline is fixed at the visitor's first exposure to the placement,
kept in ``Profile.offers`` (placement id → first exposure time): a reload, another
page or another device after a merge shows the same deadline, and once it has passed
the offer is no longer shown.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence

import msgspec

__all__ = ["OfferState", "frequency_allows", "offer_state"]


class OfferState(msgspec.Struct, frozen=True):
    deadline: int
    """Unix time when the offer ends."""
    expired: bool
    """Past the deadline: do not show the offer."""
    first_exposure: bool
    """Not seen before: store ``offers[placement_id] = now`` (and record the exposure)."""
    seconds_left: int

    @property
    def deadline_iso(self) -> str:
        return _iso(self.deadline)


@functools.lru_cache(maxsize=4096)
def _iso(moment: int) -> str:
    """(Remembered: a visitor's deadline stays put, and a page shows it on every view.)"""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def offer_state(offers: Mapping[str, int], placement_id: str, ttl: int, now: int) -> OfferState:
    """The offer of *placement_id* lasting *ttl* seconds from the first exposure."""
    if ttl <= 0:
        raise ValueError(f"offer_ttl must be positive, got {ttl}")
    first = offers.get(placement_id)
    first_exposure = first is None
    start = now if first is None else first
    deadline = start + ttl
    return OfferState(
        deadline=deadline,
        expired=now >= deadline,
        first_exposure=first_exposure,
        seconds_left=max(0, deadline - now),
    )


# Frequency caps count exposure times per placement: ``Profile.exposures`` (placement
# id -> the last exposure times, oldest first; kept by ``edge.profiles.events``).


def frequency_allows(exposure_times: Sequence[int], cap: int, window: int, now: int) -> bool:
    """Whether one more exposure fits "at most *cap* in *window* seconds"."""
    if cap <= 0:
        return False
    since = now - window
    return sum(1 for ts in exposure_times if ts > since) < cap

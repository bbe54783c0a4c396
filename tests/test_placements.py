"""Choosing placements without a server: priority, page types, schedule, frequency cap,
holdout, timed offers, and how a slot is filled (edge/placements.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from edge.placements import Choice, choose, fill, in_holdout
from edge.profiles import events as ev
from edge.profiles.model import Profile, new_profile
from edge.rules import PlacementRule, RuleSet, compile_text

NOW = int(dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC).timestamp())
HOUR = 3600

RULES = """
[segments.vip]
when = "orders_within(365d) >= 1"

[page_types]
home = "/"

[slots.hero]
select = "#hero"
pages = ["home"]

[slots.banner]
select = ".banner"

[[placements]]
id = "hero-low"
slot = "hero"
snippet = "low.html"
priority = 1

[[placements]]
id = "hero-high"
slot = "hero"
segment = "vip"
snippet = "high.html"
priority = 10

[[placements]]
id = "banner-sale"
slot = "banner"
snippet = "sale.html"
start = 2026-11-27T00:00:00
end = 2026-11-28T00:00:00

[[placements]]
id = "banner-capped"
slot = "banner"
snippet = "capped.html"
cap = { views = 2, per = "1d" }
priority = 5

[[placements]]
id = "banner-offer"
slot = "banner"
snippet = "offer.html"
offer_ttl = "48h"
priority = 3

[[placements]]
id = "banner-held"
slot = "banner"
snippet = "held.html"
holdout = 0.5
priority = -1
"""


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return compile_text(RULES)


def by_id(ruleset: RuleSet, *ids: str) -> list[PlacementRule]:
    """Those placements, in the rule set's priority order (as the decision has them)."""
    return [p for p in ruleset.by_priority if p.id in ids]


def ids(choices: list[Choice]) -> list[str]:
    return [c.placement.id for c in choices]


def shown(profile: Profile, placement_id: str, *times: int, offer: bool = False) -> None:
    for ts in times:
        ev.apply(
            profile,
            ev.PlacementShown(placement_id=placement_id, offer=offer),
            ts,
            ev.Source.OBSERVED,
        )


def test_candidates_come_highest_priority_first(ruleset: RuleSet) -> None:
    chosen = choose(
        by_id(ruleset, "hero-low", "hero-high"),
        ruleset.slots,
        page_type="home",
        profile=None,
        now=NOW,
        holdout_key="",
    )
    assert ids(chosen) == ["hero-high", "hero-low"]
    filled = fill(chosen, lambda c: f"edit of {c.placement.id}")
    assert filled.shown == [(chosen[0], "edit of hero-high")]  # one placement a slot
    assert filled.held_out == []


def test_a_slot_applies_only_on_its_page_types(ruleset: RuleSet) -> None:
    args = {"profile": None, "now": NOW, "holdout_key": ""}
    hero = by_id(ruleset, "hero-low")
    assert ids(choose(hero, ruleset.slots, page_type="category", **args)) == []
    assert ids(choose(hero, ruleset.slots, page_type="", **args)) == []
    assert ids(choose(hero, ruleset.slots, page_type="home", **args)) == ["hero-low"]
    # a slot with no pages is on every page
    sale = by_id(ruleset, "banner-sale")
    assert ids(choose(sale, ruleset.slots, page_type="product", **args)) == ["banner-sale"]
    # a placement whose slot is not declared (rules without slots) is never chosen
    assert choose(hero, {}, page_type="home", **args) == []


def test_schedule_start_is_inclusive_and_end_exclusive(ruleset: RuleSet) -> None:
    sale = by_id(ruleset, "banner-sale")
    start = int(dt.datetime(2026, 11, 27, tzinfo=dt.UTC).timestamp())
    end = start + 24 * HOUR

    def on(now: int) -> bool:
        found = choose(sale, ruleset.slots, page_type="", profile=None, now=now, holdout_key="")
        return ids(found) == ["banner-sale"]

    assert [on(start - 1), on(start), on(end - 1), on(end)] == [False, True, True, False]


def test_frequency_cap_counts_the_visitor_s_exposures_in_the_window(ruleset: RuleSet) -> None:
    capped = by_id(ruleset, "banner-capped")
    profile = new_profile("v", NOW - 10 * 86_400)

    def allowed() -> bool:
        found = choose(
            capped, ruleset.slots, page_type="", profile=profile, now=NOW, holdout_key=""
        )
        return bool(found)

    assert allowed()  # never seen
    shown(profile, "banner-capped", NOW - 2 * 86_400, NOW - 3 * HOUR)
    assert allowed()  # once in the last day
    shown(profile, "banner-capped", NOW - HOUR)
    assert not allowed()  # twice in the last day: the cap is 2 a day
    assert choose(capped, ruleset.slots, page_type="", profile=None, now=NOW, holdout_key="")


def test_a_timed_offer_runs_from_the_first_exposure_and_then_ends(ruleset: RuleSet) -> None:
    offer = by_id(ruleset, "banner-offer")
    profile = new_profile("v", NOW - 86_400)
    (first,) = choose(offer, ruleset.slots, page_type="", profile=profile, now=NOW, holdout_key="")
    assert first.offer is not None and first.offer.first_exposure
    assert first.offer.deadline == NOW + 48 * HOUR
    shown(profile, "banner-offer", NOW, offer=True)
    later = NOW + 47 * HOUR
    (again,) = choose(
        offer, ruleset.slots, page_type="", profile=profile, now=later, holdout_key=""
    )
    assert again.offer is not None and not again.offer.first_exposure
    assert again.offer.deadline == NOW + 48 * HOUR and again.offer.seconds_left == HOUR
    expired = NOW + 48 * HOUR
    assert (
        choose(offer, ruleset.slots, page_type="", profile=profile, now=expired, holdout_key="")
        == []
    )


def test_holdout_is_deterministic_per_visitor_and_independent_per_placement(
    ruleset: RuleSet,
) -> None:
    held = by_id(ruleset, "banner-held")
    sides = {}
    for n in range(400):
        key = f"visitor-{n}"
        (choice,) = choose(
            held, ruleset.slots, page_type="", profile=None, now=NOW, holdout_key=key
        )
        assert choice.held_out == in_holdout(key, "banner-held", 0.5)
        again = choose(
            held, ruleset.slots, page_type="", profile=None, now=NOW + 1, holdout_key=key
        )
        assert again[0].held_out == choice.held_out  # the same side every time
        sides[key] = choice.held_out
    assert 150 < sum(sides.values()) < 250  # about half
    other = [in_holdout(key, "another-placement", 0.5) for key in sides]
    assert other != list(sides.values())  # placements split visitors independently
    # nobody is held out without a key (a preview), nor at a share of 0
    assert not choose(held, ruleset.slots, page_type="", profile=None, now=NOW, holdout_key="")[
        0
    ].held_out
    assert not any(in_holdout(key, "banner-held", 0.0) for key in sides)
    assert all(in_holdout(key, "banner-held", 1.0) for key in sides)


def test_fill_holds_the_slot_out_or_lets_the_next_choice_try(ruleset: RuleSet) -> None:
    banner = by_id(ruleset, "banner-capped", "banner-offer", "banner-held")
    key = next(k for k in (f"v{n}" for n in range(100)) if in_holdout(k, "banner-held", 0.5))
    chosen = choose(banner, ruleset.slots, page_type="", profile=None, now=NOW, holdout_key=key)
    assert ids(chosen) == ["banner-capped", "banner-offer", "banner-held"]
    # the first choice makes no edit (its snippet failed): the next one fills the slot
    filled = fill(chosen, lambda c: None if c.placement.id == "banner-capped" else c.placement.id)
    assert [edit for _c, edit in filled.shown] == ["banner-offer"] and filled.held_out == []
    # none makes an edit: the holdout is reached, and the visitor is its control group
    filled = fill(chosen, lambda c: None)
    assert filled.shown == [] and ids(filled.held_out) == ["banner-held"]
    # a held-out choice ends the slot: nothing after it is tried
    tried: list[str] = []
    held_first = [chosen[2], chosen[0]]
    filled = fill(held_first, lambda c: tried.append(c.placement.id) or c.placement.id)
    assert tried == [] and ids(filled.held_out) == ["banner-held"]

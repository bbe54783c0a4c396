"""The profiling form's questions and the timed offers' deadlines."""

from __future__ import annotations

import pytest

from edge.personalize.offers import frequency_allows, offer_state
from edge.personalize.profiling import (
    DECLINED,
    AnswerError,
    Question,
    default_questions,
    known_traits,
    next_question,
)
from edge.profiles.events import (
    Identify,
    PlacementShown,
    ProfileFormAnswered,
    Source,
    apply,
    merge,
)
from edge.profiles.model import MAX_EXPOSURES, new_profile

NOW = 1_750_000_000
INTERESTS = [
    ("scarpe-donna", {"en": "Women's shoes", "it": "Scarpe donna"}),
    ("casa-cucina", {"en": "Home", "it": "Casa e cucina"}),
]


def test_one_question_at_a_time_in_order() -> None:
    questions = default_questions(INTERESTS)
    p = new_profile("v", NOW)
    asked = []
    while (q := next_question(p, questions)) is not None:
        asked.append(q.trait)
        answer = {
            "gender": "female",
            "age_band": "25-34",
            "city": "Firenze",
            "interest": "casa-cucina",
        }[q.trait]
        apply(
            p, ProfileFormAnswered(question=q.trait, answer=q.validate(answer)), NOW, Source.BROWSER
        )
    assert asked == ["gender", "age_band", "city", "interest"]
    assert p.answers == {
        "gender": "female",
        "age_band": "25-34",
        "city": "Firenze",
        "interest": "casa-cucina",
    }


def test_traits_from_the_shop_count_as_known() -> None:
    p = new_profile("v", NOW)
    apply(p, Identify(traits={"gender": "male", "birth_year": 1980}), NOW, Source.SHOP)
    assert {"gender", "birth_year"} <= known_traits(p)
    assert next_question(p).trait == "city"  # birth_year answers the age question
    assert next_question(p, order=["interest", "age_band"]) is None  # no interest question
    q = next_question(p, default_questions(INTERESTS), order=["interest", "city"])
    assert q is not None and q.trait == "interest"
    assert next_question(p, known={"gender", "age_band", "city"}) is None


def test_declining_moves_on_and_survives_a_merge() -> None:
    p = new_profile("v", NOW)
    q = next_question(p)
    assert q is not None and q.validate("") == DECLINED == q.validate(" - ")
    apply(p, ProfileFormAnswered(question=q.trait, answer=DECLINED), NOW, Source.BROWSER)
    assert next_question(p).trait == "age_band"
    customer = new_profile("c", NOW)
    merge(customer, p)
    assert next_question(customer).trait == "age_band"


def test_validation() -> None:
    qs = default_questions(INTERESTS)
    assert qs["gender"].validate("FEMALE") == "female"
    assert qs["interest"].validate("casa-cucina") == "casa-cucina"
    with pytest.raises(AnswerError) as info:
        qs["gender"].validate("robot")
    assert info.value.text("it") == "Scegli una delle opzioni."
    assert qs["city"].validate("  Reggio   Emilia ") == "Reggio Emilia"
    with pytest.raises(AnswerError):
        qs["city"].validate("<script>")
    with pytest.raises(AnswerError):
        qs["city"].validate("x" * 61)
    year = Question("birth_year", {"en": "Year of birth?"}, "number", minimum=1900, maximum=2010)
    assert year.validate("1985") == "1985"
    for bad in ("1850", "19x5", "-3", "2011"):
        with pytest.raises(AnswerError):
            year.validate(bad)
    with pytest.raises(AnswerError, match="from 1900 to 2010"):
        year.validate("1800")


def test_question_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        Question("Bad Name", {"en": "?"})
    with pytest.raises(ValueError, match="needs a text"):
        Question("x", {})
    with pytest.raises(ValueError, match="without options"):
        Question("x", {"en": "?"}, "select")


def test_question_view_in_language() -> None:
    view = default_questions(INTERESTS)["interest"].view("it")
    assert view["text"] == "Cosa ti interessa di più?"
    assert view["options"] == [
        {"value": "scarpe-donna", "label": "Scarpe donna"},
        {"value": "casa-cucina", "label": "Casa e cucina"},
    ]
    assert default_questions()["gender"].view("de")["text"] == "Whom do you shop for most often?"


# --- timed offers ---


def test_offer_deadline_is_fixed_at_first_exposure() -> None:
    offers: dict[str, int] = {}
    first = offer_state(offers, "home-offer", 86_400, NOW)
    assert first.first_exposure and not first.expired
    assert first.deadline == NOW + 86_400 and first.seconds_left == 86_400
    offers["home-offer"] = NOW  # what the caller stores on first exposure
    for later in (NOW + 1, NOW + 600, NOW + 86_399):  # reloads do not move the deadline
        again = offer_state(offers, "home-offer", 86_400, later)
        assert again.deadline == first.deadline and not again.first_exposure
        assert not again.expired and again.seconds_left == first.deadline - later
    gone = offer_state(offers, "home-offer", 86_400, NOW + 86_400)
    assert gone.expired and gone.seconds_left == 0
    assert offer_state(offers, "other", 60, NOW + 5).first_exposure
    assert first.deadline_iso == "2025-06-16T15:06:40Z"
    with pytest.raises(ValueError):
        offer_state(offers, "x", 0, NOW)


def test_merged_profiles_keep_the_earliest_exposure() -> None:
    a, b = new_profile("a", NOW), new_profile("b", NOW)
    a.offers["o"] = NOW + 100
    b.offers["o"] = NOW
    merge(a, b)
    assert offer_state(a.offers, "o", 1000, NOW + 200).deadline == NOW + 1000


def test_frequency_cap() -> None:
    # The exposures a cap counts are the ones the profile keeps from PlacementShown.
    p = new_profile("v", NOW)
    for k in range(3):
        assert frequency_allows(p.exposures.get("b", []), cap=3, window=3600, now=NOW + k)
        apply(p, PlacementShown(placement_id="b"), NOW + k, Source.OBSERVED)
    assert not frequency_allows(p.exposures["b"], cap=3, window=3600, now=NOW + 10)
    assert frequency_allows(p.exposures["b"], cap=3, window=3600, now=NOW + 3601)
    assert not frequency_allows([], cap=0, window=60, now=NOW)
    for k in range(30):
        apply(p, PlacementShown(placement_id="b"), NOW + 100 + k, Source.OBSERVED)
    assert len(p.exposures["b"]) == MAX_EXPOSURES and p.exposures["b"][-1] == NOW + 129
    apply(p, PlacementShown(placement_id="c", held_out=True), NOW, Source.OBSERVED)
    assert "c" not in p.exposures  # a visitor held out saw nothing to count

"""The dynamic profiling form: one question at a time, about the next trait still missing.

The questions are the merchant's, written in the rule files as ``[questions.NAME]``
(checked by :mod:`edge.rules.questions`, served as ``ruleset.questions`` in the order
they are asked); the shipped library (``rules/questions.toml``) carries gender, age
band and city in English and Italian.

A trait counts as known when the shop told us (``profile.traits``, from ingest or
import) or the visitor answered (``profile.answers``, from ``Profile Form Answered``).
Declining is an answer too (:data:`DECLINED`), so a visitor who prefers not to say is
not asked again and the form moves on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from edge.profiles.model import Profile
from edge.rules.questions import DECLINED, AnswerError, Option, Question
from edge.rules.ruleset import LIBRARY_DIR, compile_text

__all__ = [
    "DECLINED",
    "AnswerError",
    "Option",
    "Question",
    "default_questions",
    "known_traits",
    "next_question",
]

LIBRARY_QUESTIONS = LIBRARY_DIR / "questions.toml"


@functools.lru_cache(maxsize=1)
def _library() -> tuple[Question, ...]:
    path = LIBRARY_QUESTIONS
    ruleset = compile_text(path.read_text(encoding="utf-8"), str(path))
    return tuple(ruleset.questions.values())


def default_questions(
    interests: Sequence[tuple[str, Mapping[str, str]]] = (),
) -> dict[str, Question]:
    """The shipped questions (``rules/questions.toml``). *interests* are the shop's
    categories as ``(id, labels by language)``: with them an ``interest`` question is
    asked last."""
    questions = {q.trait: q for q in _library()}
    if interests:
        questions["interest"] = Question(
            "interest",
            {"en": "What are you most interested in?", "it": "Cosa ti interessa di più?"},
            "select",
            tuple(Option(cid, dict(labels)) for cid, labels in interests),
        )
    return questions


def known_traits(profile: Profile) -> set[str]:
    """Trait names the sidecar knows for *profile*: shop traits, custom traits and
    the visitor's answers (declined ones included)."""
    known = {name for name, value in _shop_traits(profile).items() if value not in (None, "")}
    known.update(k for k, v in profile.traits.custom.items() if v not in (None, ""))
    known.update(k for k, v in profile.answers.items() if v != "")
    return known


def _shop_traits(profile: Profile) -> dict[str, object]:
    t = profile.traits
    return {
        "birth_year": t.birth_year,
        "age_band": t.age_band,
        "gender": t.gender,
        "city": t.city,
        "country": t.country,
        "language": t.language,
    }


def next_question(
    profile: Profile,
    questions: Mapping[str, Question] | None = None,
    order: Iterable[str] | None = None,
    *,
    known: set[str] | None = None,
    result: Sequence[bool] | None = None,
) -> Question | None:
    """The first question (in *order*, default the order of *questions*) whose trait is
    still missing and whose ``when`` holds in the rule *result* (the rule set's
    evaluation for this visitor), or ``None`` when nothing is left to ask. *known*
    overrides :func:`known_traits` (e.g. with answers given in this request that are
    not in the snapshot yet)."""
    questions = questions if questions is not None else default_questions()
    # (Without *known*, each candidate's traits are looked up in the profile: the
    # first question is usually the one, so the set of every known trait is not made.)
    is_known = known.__contains__ if known is not None else functools.partial(_knows, profile)
    for trait in order if order is not None else questions:
        q = questions.get(trait)
        if q is None or not q.asks(result):
            continue
        if is_known(trait) or any(is_known(alias) for alias in q.also_known_as):
            continue
        return q
    return None


_SHOP_TRAITS: Final = frozenset(("birth_year", "age_band", "gender", "city", "country", "language"))


def _knows(profile: Profile, trait: str) -> bool:
    """``trait in known_traits(profile)``, without making the set."""
    traits = profile.traits
    if trait in _SHOP_TRAITS and getattr(traits, trait) not in (None, ""):
        return True
    if traits.custom.get(trait, "") not in (None, ""):
        return True
    answers = profile.answers
    return trait in answers and answers[trait] != ""

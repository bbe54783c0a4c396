"""The dynamic profiling form: one question at a time, about the next trait still missing.

A trait counts as known when the shop told us (``profile.traits``, from ingest or
import) or the visitor answered (``profile.answers``, from ``Profile Form Answered``).
Declining is an answer too (:data:`DECLINED`), so a visitor who prefers not to say is
not asked again and the form moves on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from edge.profiles.model import Profile

__all__ = [
    "DECLINED",
    "DEFAULT_ORDER",
    "AnswerError",
    "Option",
    "Question",
    "default_questions",
    "known_traits",
    "next_question",
]

DECLINED: Final = "-"
"""The stored answer of a visitor who preferred not to say."""

DEFAULT_ORDER: Final = ("gender", "age_band", "city", "interest")

Kind = Literal["select", "number", "text"]


class AnswerError(ValueError):
    """An answer that does not fit the question; ``messages`` has it per language."""

    def __init__(self, messages: Mapping[str, str]) -> None:
        self.messages = dict(messages)
        super().__init__(self.messages.get("en") or next(iter(self.messages.values())))

    def text(self, language: str = "en") -> str:
        return self.messages.get(language) or self.messages["en"]


@dataclass(frozen=True)
class Option:
    value: str
    labels: Mapping[str, str]

    def label(self, language: str = "en") -> str:
        return self.labels.get(language) or self.labels.get("en") or self.value


@dataclass(frozen=True)
class Question:
    """One trait to ask about. ``texts`` by language (``en`` always present)."""

    trait: str
    texts: Mapping[str, str]
    kind: Kind = "text"
    options: tuple[Option, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 60
    also_known_as: tuple[str, ...] = ()
    """Other trait names that answer this question (``birth_year`` for ``age_band``)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", self.trait):
            raise ValueError(f"trait name {self.trait!r}: lowercase letters, digits and _")
        if "en" not in self.texts:
            raise ValueError(f"question {self.trait!r} needs an English text")
        if self.kind == "select" and not self.options:
            raise ValueError(f"question {self.trait!r} is a select without options")

    def text(self, language: str = "en") -> str:
        return self.texts.get(language) or self.texts["en"]

    def validate(self, answer: str) -> str:
        """The answer normalised for storing, or :class:`AnswerError`. An empty
        answer or :data:`DECLINED` means the visitor prefers not to say."""
        raw = " ".join(str(answer).split())
        if raw in ("", DECLINED):
            return DECLINED
        if self.kind == "select":
            for option in self.options:
                if raw.casefold() == option.value.casefold():
                    return option.value
            raise AnswerError(
                {"en": "Please choose one of the options.", "it": "Scegli una delle opzioni."}
            )
        if self.kind == "number":
            if not re.fullmatch(r"\d{1,9}", raw):
                raise AnswerError(
                    {"en": "Please enter a whole number.", "it": "Inserisci un numero intero."}
                )
            n = int(raw)
            lo = self.minimum if self.minimum is not None else 0
            hi = self.maximum if self.maximum is not None else 10**9
            if not lo <= n <= hi:
                raise AnswerError(
                    {
                        "en": f"Please enter a number from {lo} to {hi}.",
                        "it": f"Inserisci un numero da {lo} a {hi}.",
                    }
                )
            return str(n)
        if len(raw) > self.max_length or any(ord(c) < 32 for c in raw) or "<" in raw:
            raise AnswerError(
                {
                    "en": f"Please use at most {self.max_length} letters, without < or >.",
                    "it": f"Usa al massimo {self.max_length} caratteri, senza < o >.",
                }
            )
        return raw

    def view(self, language: str = "en") -> dict[str, object]:
        """What a snippet needs to draw the question, in *language*: made once per
        language and shared (snippets render in an immutable sandbox)."""
        views: dict[str, dict[str, object]] = self.__dict__.setdefault("_views", {})
        found = views.get(language)
        if found is None:
            found = views[language] = self._view(language)
        return found

    def _view(self, language: str) -> dict[str, object]:
        return {
            "trait": self.trait,
            "text": self.text(language),
            "kind": self.kind,
            "options": [{"value": o.value, "label": o.label(language)} for o in self.options],
            "min": self.minimum,
            "max": self.maximum,
            "max_length": self.max_length,
        }


def _options(*pairs: tuple[str, str, str]) -> tuple[Option, ...]:
    return tuple(Option(value, {"en": en, "it": it}) for value, en, it in pairs)


def default_questions(
    interests: Sequence[tuple[str, Mapping[str, str]]] = (),
) -> dict[str, Question]:
    """The shipped catalogue. *interests* are the shop's categories as ``(id, labels
    by language)``; without them the ``interest`` question is left out."""
    questions = [
        Question(
            "gender",
            {"en": "Whom do you shop for most often?", "it": "Per chi acquisti più spesso?"},
            "select",
            _options(
                ("female", "Women's", "Donna"),
                ("male", "Men's", "Uomo"),
                ("other", "Both / other", "Entrambi / altro"),
            ),
        ),
        Question(
            "age_band",
            {"en": "How old are you?", "it": "Quanti anni hai?"},
            "select",
            _options(
                ("18-24", "18–24", "18–24"),
                ("25-34", "25–34", "25–34"),
                ("35-44", "35–44", "35–44"),
                ("45-54", "45–54", "45–54"),
                ("55-64", "55–64", "55–64"),
                ("65+", "65 or more", "65 o più"),
            ),
            also_known_as=("birth_year",),
        ),
        Question(
            "city",
            {"en": "Which city do you live in?", "it": "In che città vivi?"},
            "text",
            max_length=60,
        ),
    ]
    if interests:
        questions.append(
            Question(
                "interest",
                {"en": "What are you most interested in?", "it": "Cosa ti interessa di più?"},
                "select",
                tuple(Option(cid, dict(labels)) for cid, labels in interests),
            )
        )
    return {q.trait: q for q in questions}


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
    order: Iterable[str] = DEFAULT_ORDER,
    *,
    known: set[str] | None = None,
) -> Question | None:
    """The first question in *order* whose trait is still missing, or ``None`` when
    nothing is left to ask. *known* overrides :func:`known_traits` (e.g. with answers
    given in this request that are not in the snapshot yet)."""
    questions = questions if questions is not None else default_questions()
    known = known_traits(profile) if known is None else known
    for trait in order:
        q = questions.get(trait)
        if q is None:
            continue
        if trait in known or any(alias in known for alias in q.also_known_as):
            continue
        return q
    return None

"""``[questions.NAME]``: the profiling questions, written in the merchant's rule files.

```toml
[questions.age_band]
text = { en = "How old are you?", it = "Quanti anni hai?" }
kind = "select"                  # select (default with options), number, text
order = 20                       # lower is asked first; then the order written
when = "not customer"            # who is asked (a condition); default everyone
also_known_as = ["birth_year"]   # traits that answer it already
options = [
  { value = "18-24", label = { en = "18–24", it = "18–24" } },
  { value = "65+", label = { en = "65 or more", it = "65 o più" } },
]
```

``NAME`` is the trait the answer is stored under (``answers.NAME`` in conditions),
unless ``trait`` says otherwise. ``text`` and an option's ``label`` are a table by
language, or one string for every language; every language of ``[shop] languages``
needs one. :class:`Question` is what the form shows and what validates an answer.
Pure logic, no I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

import msgspec

from edge.rules.errors import Locator, RuleError

__all__ = [
    "DECLINED",
    "AnswerError",
    "Option",
    "Question",
    "QuestionSpec",
    "check_questions",
    "parse_questions",
]

DECLINED: Final = "-"
"""The stored answer of a visitor who preferred not to say."""

Kind = Literal["select", "number", "text"]
_TRAIT: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")


class AnswerError(ValueError):
    """An answer that does not fit the question; ``messages`` has it per language."""

    def __init__(self, messages: Mapping[str, str]) -> None:
        self.messages = dict(messages)
        super().__init__(self.messages.get("en") or next(iter(self.messages.values())))

    def text(self, language: str = "en") -> str:
        return self.messages.get(language) or self.messages["en"]


def _in(texts: Mapping[str, str], language: str, fallback: str) -> str:
    """*texts* in *language*, else its primary language, else English, else the first."""
    found = texts.get(language) or texts.get(language.split("-")[0]) or texts.get("en")
    return found or next(iter(texts.values()), fallback)


@dataclass(frozen=True)
class Option:
    value: str
    labels: Mapping[str, str]

    def label(self, language: str = "en") -> str:
        return _in(self.labels, language, self.value)


@dataclass(frozen=True)
class Question:
    """One trait to ask about. ``texts`` by language."""

    trait: str
    texts: Mapping[str, str]
    kind: Kind = "text"
    options: tuple[Option, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 60
    also_known_as: tuple[str, ...] = ()
    """Other trait names that answer this question (``birth_year`` for ``age_band``)."""
    output: int = -1
    """Index of its ``when`` in the rule set's evaluation; -1: everyone is asked."""
    _views: dict[str, dict[str, object]] = field(
        default_factory=dict, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not _TRAIT.fullmatch(self.trait):
            raise ValueError(f"trait name {self.trait!r}: lowercase letters, digits and _")
        if not self.texts:
            raise ValueError(f"question {self.trait!r} needs a text")
        if self.kind == "select" and not self.options:
            raise ValueError(f"question {self.trait!r} is a select without options")

    def text(self, language: str = "en") -> str:
        return _in(self.texts, language, self.trait)

    def asks(self, result: Sequence[bool] | None) -> bool:
        """Whether a visitor with these rule *result*s is asked (its ``when`` holds)."""
        return self.output < 0 or result is None or bool(result[self.output])

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
        found = self._views.get(language)
        if found is None:
            found = self._views[language] = {
                "trait": self.trait,
                "text": self.text(language),
                "kind": self.kind,
                "options": [{"value": o.value, "label": o.label(language)} for o in self.options],
                "min": self.minimum,
                "max": self.maximum,
                "max_length": self.max_length,
            }
        return found


# --- the rule files ----------------------------------------------------------------------

Texts = str | dict[str, str]


class OptionSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    value: str
    label: Texts = ""
    """By language (``{ en = "Women's", it = "Donna" }``), or one text; default the value."""


class QuestionSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[questions.NAME]`` as written."""

    text: Texts
    trait: str = ""
    """The trait the answer is stored under; default the question's name."""
    kind: Kind | None = None
    """``select`` (the default when there are options), ``number`` or ``text``."""
    options: list[OptionSpec] = msgspec.field(default_factory=list)
    order: int = 0
    when: str = ""
    """Who is asked, in the rule language; default every visitor."""
    also_known_as: list[str] = msgspec.field(default_factory=list)
    min: int | None = None
    max: int | None = None
    max_length: Annotated[int, msgspec.Meta(ge=1, le=500)] = 60


@dataclass(slots=True)
class Declared:
    """A question of one file, before the checks that need every file."""

    name: str
    spec: QuestionSpec
    loc: Locator
    header: int
    index: int


def parse_questions(
    loc: Locator, data: dict[str, Any], errors: list[RuleError], found: list[Declared]
) -> None:
    """Decode each ``[questions.NAME]`` of one file into *found* (errors placed)."""
    for name, raw in data.get("questions", {}).items():
        header = loc.table("questions", name) or loc.table("questions") or 1
        what = f"question `{name}`"
        if not isinstance(raw, dict):
            errors.append(loc.error(header, 1, f"{what} must be a table"))
            continue
        try:
            spec = msgspec.convert(raw, QuestionSpec)
        except msgspec.ValidationError as e:
            errors.append(_decode_error(e, what, loc, header))
            continue
        found.append(Declared(name, spec, loc, header, len(found)))


def _decode_error(e: msgspec.ValidationError, what: str, loc: Locator, header: int) -> RuleError:
    text = str(e)
    unknown = re.search(r"unknown field `([^`]+)`", text)
    at = re.search(r" - at `\$\.([A-Za-z_]+)", text)
    key = unknown.group(1) if unknown else (at.group(1) if at else "")
    in_option = bool(at and at.group(1) == "options")
    if unknown and not in_option:
        fields = list(QuestionSpec.__struct_fields__)
        close = difflib.get_close_matches(key, fields, n=1)
        line, col = loc.key(header, key)
        return loc.error(
            line,
            col,
            f"unknown key `{key}` in {what}",
            len(key),
            f"did you mean `{close[0]}`?" if close else "known keys: " + ", ".join(fields),
        )
    missing = re.search(r"missing required field `([^`]+)`", text)
    if missing and not in_option:
        return loc.error(header, 1, f"{what} needs `{missing.group(1)}`", help=_EXAMPLE)
    line, col = loc.key(header, at.group(1)) if at else (header, 1)
    message = re.sub(r" - at `\$\.?", " (at `", text).lower()
    help = 'options = [{ value = "female", label = { en = "Women\'s", it = "Donna" } }]'
    return loc.error(line, col, f"{what}: {message}", help=help if in_option else "")


_EXAMPLE: Final = 'e.g. text = { en = "How old are you?", it = "Quanti anni hai?" }'


def check_questions(
    declared: Sequence[Declared], languages: Sequence[str], errors: list[RuleError]
) -> list[tuple[Question, Declared]]:
    """The questions of every file, checked, in the order they are asked: by
    ``order``, then as written. Every text needs each of *languages*."""
    out: list[tuple[Question, Declared]] = []
    traits: dict[str, Declared] = {}
    for d in sorted(declared, key=lambda d: (d.spec.order, d.index)):
        question = _question(d, languages, errors, traits)
        if question is not None:
            out.append((question, d))
    return out


def _question(
    d: Declared, languages: Sequence[str], errors: list[RuleError], traits: dict[str, Declared]
) -> Question | None:
    spec, loc, header = d.spec, d.loc, d.header
    what = f"question `{d.name}`"
    bad = len(errors)

    def err(key: str, message: str, help: str = "") -> None:
        line, col = loc.key(header, key) if key else (header, 1)
        errors.append(loc.error(line, col, f"{what}: {message}", len(key) or 1, help))

    trait = spec.trait or d.name
    if not _TRAIT.fullmatch(trait):
        err(
            "trait" if spec.trait else "",
            f"`{trait}` is not a trait name",
            "lowercase letters, digits and `_`, starting with a letter",
        )
    elif trait in traits:
        first = traits[trait]
        err(
            "",
            f"asks for `{trait}` again (also at {first.loc.file}:{first.header})",
            "one question a trait",
        )
    traits.setdefault(trait, d)
    texts = _texts(spec.text, languages)
    if isinstance(texts, str):
        err("text", f"no text in `{texts}`", f'add {texts} = "..." to text')
    kind = spec.kind or ("select" if spec.options else "text")
    if kind == "select" and not spec.options:
        err(
            "kind" if spec.kind else "",
            "a select question needs `options`",
            'options = [{ value = "female", label = { en = "Women\'s" } }]',
        )
    if kind != "select" and spec.options:
        err("options", f"a `{kind}` question has no `options`", 'kind = "select"')
    options = []
    seen: set[str] = set()
    for option in spec.options:
        labels = _texts(option.label or option.value, languages)
        if isinstance(labels, str):
            err(
                "options",
                f"option `{option.value}` has no label in `{labels}`",
                f'label = {{ {labels} = "..." }}',
            )
            continue
        if option.value.casefold() in seen or not option.value.strip() or option.value == DECLINED:
            err("options", f"option value `{option.value}` is empty, `-` or listed twice")
            continue
        seen.add(option.value.casefold())
        options.append(Option(option.value, labels))
    if spec.min is not None and spec.max is not None and spec.max < spec.min:
        err("max", "`max` is below `min`")
    for alias in spec.also_known_as:
        if not _TRAIT.fullmatch(alias):
            err("also_known_as", f"`{alias}` is not a trait name")
    if len(errors) > bad or isinstance(texts, str):
        return None
    return Question(
        trait,
        texts,
        kind,
        tuple(options),
        minimum=spec.min,
        maximum=spec.max,
        max_length=spec.max_length,
        also_known_as=tuple(spec.also_known_as),
    )


def _texts(value: Texts, languages: Sequence[str]) -> dict[str, str] | str:
    """A text by language; a language of *languages* without one is returned (a str)."""
    if isinstance(value, str):
        return {lang: value for lang in languages} or {"en": value}
    texts = {k.lower().replace("_", "-"): v for k, v in value.items() if v.strip()}
    for lang in languages:
        if lang not in texts and lang.split("-")[0] not in texts:
            return lang
    return texts if texts else (languages[0] if languages else "en")

"""Profiling questions written in the rule files: checked by `edge check` with their
place, asked and answered end to end through the demo shop, and an answered age band
feeding the shipped age segments."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from edge.cli import main
from edge.personalize.profiling import default_questions, next_question
from edge.profiles.model import Profile
from edge.rules.functions import Context
from edge.rules.ruleset import compile_sources, compile_text, load_rules
from tests.conftest import ROOT, EdgeProcess, fetch, start_edge
from tests.test_activities import BROWSER, Visitor, profile_form, start_shop, stop, wait_for

QUESTIONS = """
[questions.shoe_size]
order = 1
kind = "number"
min = 35
max = 48
text = { en = "What is your shoe size?", it = "Che numero di scarpe porti?" }

[questions.style]
order = 2
when = 'answers.shoe_size != "-"'   # not for those who would not say their size
text = { en = "Which style do you prefer?", it = "Che stile preferisci?" }
options = [
  { value = "classic", label = { en = "Classic", it = "Classico" } },
  { value = "sporty", label = { en = "Sporty", it = "Sportivo" } },
]

[questions.age_band]
order = 3
text = { en = "How old are you?", it = "Quanti anni hai?" }
options = [
  { value = "25-34", label = "25–34" },
  { value = "45-54", label = "45–54" },
]
"""

AGE_PLACEMENT = """
[[placements]]
id = "hello-35-54"
slot = "top-banner"
segment = "age_35_54"
snippet = "age_hello.html"
"""


# --- checked when the rules load -----------------------------------------------------


def errors_of(text: str, file: str = "rules/questions.toml") -> list[str]:
    ruleset, errors = compile_sources([(file, text)])
    assert ruleset is None
    return [str(e) for e in errors]


def test_bad_questions_are_reported_with_place_and_fix() -> None:
    text = """[shop]
languages = ["it", "en"]

[questions.size]
text = { en = "Size?", it = "Taglia?" }
kind = "select"
wen = "customer"

[questions.colour]
text = { en = "Colour?" }
options = [{ value = "red", label = { en = "Red", it = "Rosso" } }]

[questions.fit]
text = { en = "Fit?", it = "Vestibilità?" }
options = [
  { value = "slim", label = { en = "Slim" } },
]

[questions.city]
kind = "text"
text = "City?"
options = [{ value = "x" }]
when = "orders >> 1"

[questions.town]
trait = "city"
text = "Town?"
"""
    found = errors_of(text)
    joined = "\n".join(found)
    assert "rules/questions.toml:7:1: error: unknown key `wen` in question `size`" in joined
    assert "did you mean `when`?" in joined
    assert "rules/questions.toml:10:1: error: question `colour`: no text in `it`" in joined
    assert (
        "rules/questions.toml:15:1: error: question `fit`: option `slim` has no label in `it`"
        in (joined)
    )
    assert (
        "rules/questions.toml:22:1: error: question `city`: a `text` question has no `options`"
        in (joined)
    )
    assert "rules/questions.toml:23:" in joined and "question `city`: expected a value" in joined
    assert "question `town`: asks for `city` again (also at rules/questions.toml:19)" in joined
    # `size`: reported once, as its unknown key; a select without options is the next edit
    assert len(found) == 6, joined


def test_a_select_needs_options_and_labels_fall_back() -> None:
    found = errors_of('[questions.size]\ntext = "Size?"\nkind = "select"\n')
    assert found[0].startswith("rules/questions.toml:3:1: error: question `size`: a select")
    found = errors_of("[questions.size]\nkind = 'text'\n")
    assert "question `size` needs `text`" in found[0]
    ruleset = compile_text(QUESTIONS)
    assert list(ruleset.questions) == ["shoe_size", "style", "age_band"]
    style = ruleset.questions["style"]
    assert style.view("it")["options"] == [
        {"value": "classic", "label": "Classico"},
        {"value": "sporty", "label": "Sportivo"},
    ]
    assert style.text("de") == "Which style do you prefer?"  # English for another language
    assert ruleset.questions["age_band"].view("it")["options"][1]["label"] == "45–54"


def test_edge_check_validates_questions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "questions.toml").write_text(
        '[questions.size]\ntext = "Size?"\noptions = [{ value = "s", labl = "S" }]\n',
        encoding="utf-8",
    )
    assert main(["check", str(tmp_path), "--snippets", str(ROOT / "snippets")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'questions.toml'}:3:1: error: question `size`" in err
    assert "labl" in err
    (tmp_path / "questions.toml").write_text(QUESTIONS, encoding="utf-8")
    assert main(["check", str(tmp_path), "--snippets", str(ROOT / "snippets")]) == 0
    assert "3 questions" in capsys.readouterr().out


def test_the_shipped_questions_and_their_when() -> None:
    assert list(default_questions()) == ["gender", "age_band", "city"]
    ruleset = compile_text(QUESTIONS)
    profile = Profile(visitor_id="v")
    ctx = Context(profile, now=1_800_000_000)
    assert next_question(profile, ruleset.questions, result=ruleset.evaluate(ctx)).trait == (  # type: ignore[union-attr]
        "shoe_size"
    )
    profile.answers["shoe_size"] = "-"
    ctx = Context(profile, now=1_800_000_000)
    asked = next_question(profile, ruleset.questions, result=ruleset.evaluate(ctx))
    assert asked is not None and asked.trait == "age_band"  # style is not for them


@pytest.mark.parametrize(
    ("band", "segment"),
    [
        ("18-24", "age_18_24"),
        ("25-34", "age_25_34"),
        ("35-44", "age_35_54"),
        ("45-54", "age_35_54"),
        ("55-64", "age_55_plus"),
        ("65+", "age_55_plus"),
    ],
)
def test_an_answered_age_band_feeds_the_shipped_age_segments(band: str, segment: str) -> None:
    ruleset, errors = load_rules(ROOT / "rules")
    assert ruleset is not None, errors
    profile = Profile(visitor_id="v")
    profile.answers["age_band"] = band
    ages = {
        n for n in ruleset.matching(Context(profile, now=1_800_000_000)) if n.startswith("age_")
    }
    assert ages == {segment}
    # a birth year the shop sent wins over the visitor's answer
    profile.traits.birth_year = 1_800_000_000 // 31_557_600 + 1970 - 20
    ages = {
        n for n in ruleset.matching(Context(profile, now=1_800_000_000)) if n.startswith("age_")
    }
    assert ages == {"age_18_24"}


# --- end to end through the demo shop --------------------------------------------------


@pytest.fixture(scope="module")
def asking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    shop, url = start_shop()
    rules = tmp_path_factory.mktemp("rules")
    for path in (ROOT / "rules").glob("*.toml"):
        shutil.copy(path, rules / path.name)
    (rules / "questions.toml").write_text(QUESTIONS, encoding="utf-8")
    (rules / "age.toml").write_text(AGE_PLACEMENT, encoding="utf-8")
    snippets = tmp_path_factory.mktemp("snippets")
    (snippets / "age_hello.html").write_text(
        '<p class="age-hello">Hello, {{ "35-54" }}</p>', encoding="utf-8"
    )
    edge = start_edge(url, env={"EDGE_RULES": str(rules), "EDGE_SNIPPETS": str(snippets)})
    yield edge
    edge.stop()
    stop(shop)


def answer(edge: EdgeProcess, visitor: Visitor, form: dict[str, str], **given: str) -> str:
    fields = {k: v for k, v in form.items() if not k.startswith("_")} | given
    reply = fetch(
        edge.port,
        form["_action"],
        "POST",
        {**BROWSER, "Content-Type": "application/x-www-form-urlencoded", "Cookie": visitor.cookie},
        urlencode(fields).encode(),
    )
    assert reply.status == 303
    cookie = reply.header("set-cookie") or ""
    if cookie.startswith("edge_form_error="):
        visitor.headers["Cookie"] = cookie.split(";")[0]
    else:
        visitor.headers.pop("Cookie", None)
    return reply.header("location") or "/"


def test_questions_from_the_rule_files_are_asked_and_answered(asking: EdgeProcess) -> None:
    visitor = Visitor(asking.port, **{"Accept-Language": "it-IT,it;q=0.9"})
    visitor.arrive("/")
    page = visitor.page("/")
    form = profile_form(page)
    assert form is not None and form["question"] == "shoe_size"
    assert "Che numero di scarpe porti?" in page and 'min="35" max="48"' in page

    back = answer(asking, visitor, form, answer="50")  # out of range: asked again, with why
    page = visitor.page(back)
    form = profile_form(page)
    assert form is not None and form["question"] == "shoe_size"
    assert "Inserisci un numero da 35 a 48." in page

    back = answer(asking, visitor, form, answer="39")
    wait_for(lambda: visitor.profile().get("answers", {}).get("shoe_size") == "39")
    page = visitor.page(back)
    form = profile_form(page)
    assert form is not None and form["question"] == "style"
    assert form["_options"] == "classic sporty"
    assert ">Sportivo</option>" in page and "Che stile preferisci?" in page

    back = answer(asking, visitor, form, answer="sporty")
    wait_for(lambda: visitor.profile().get("answers", {}).get("style") == "sporty")
    form = profile_form(visitor.page(back))
    assert form is not None and form["question"] == "age_band"
    assert 'class="age-hello"' not in visitor.page("/")

    back = answer(asking, visitor, form, answer="45-54")
    wait_for(lambda: visitor.profile().get("answers", {}).get("age_band") == "45-54")
    page = visitor.page(back)
    assert profile_form(page) is None  # nothing left to ask
    # the answered band puts the visitor in the shipped age segment, without a birth year
    assert re.search(r'<p class="age-hello">Hello, 35-54</p>', page)


def test_a_question_whose_when_does_not_hold_is_skipped(asking: EdgeProcess) -> None:
    visitor = Visitor(asking.port, **{"Accept-Language": "en"})
    visitor.arrive("/")
    page = visitor.page("/")
    form = profile_form(page)
    assert form is not None and form["question"] == "shoe_size"
    assert "What is your shoe size?" in page
    back = answer(asking, visitor, form, skip="1")
    wait_for(lambda: visitor.profile().get("answers", {}).get("shoe_size") == "-")
    form = profile_form(visitor.page(back))
    assert form is not None and form["question"] == "age_band"  # not style

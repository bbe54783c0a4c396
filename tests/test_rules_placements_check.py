"""Placements checked against what they name: snippets (in the snippets directory or
the shipped library), slots, sorts; snippets that do not compile; and the warnings of
a rule set that loads but personalizes nothing (an empty placements file)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge.app import create_app
from edge.cli import main
from edge.config import Config
from edge.personalize.snippets import Snippets
from edge.rules import LiveRules, load_rules

THEME = '[slots.hero]\nselect = "[data-edge-slot=hero]"\n'


def rule_dir(tmp_path: Path, placements: str, theme: str = THEME) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "theme.toml").write_text(theme)
    (rules / "placements.toml").write_text(placements)
    (tmp_path / "snippets").mkdir(exist_ok=True)
    return rules


def names(tmp_path: Path) -> list[str]:
    return Snippets(tmp_path / "snippets").names()


def test_a_placement_naming_a_missing_snippet_is_an_error_at_its_place(tmp_path: Path) -> None:
    rules = rule_dir(
        tmp_path,
        '# the heroes\n[[placements]]\nslot = "hero"\n  snippet = "hero_vipp.html"\n',
    )
    ruleset, errors = load_rules(rules, snippets=names(tmp_path))
    assert ruleset is None
    [error] = errors
    assert (error.file, error.line, error.column) == (str(rules / "placements.toml"), 4, 3)
    text = str(error)
    assert text.startswith(f"{rules / 'placements.toml'}:4:3: error: no snippet `hero_vipp.html`")
    assert "  help: did you mean `hero_vip.html`?" in text  # the shipped library's
    assert '    snippet = "hero_vipp.html"\n      ^^^^^^^' in text


def test_snippet_names_with_or_without_html_and_language_variants(tmp_path: Path) -> None:
    rules = rule_dir(
        tmp_path,
        '[[placements]]\nslot = "hero"\nsnippet = "hero_vip"\n\n'  # the library's, no suffix
        '[[placements]]\nslot = "hero"\nsnippet = "banner.html"\nid = "b"\n\n'
        '[[placements]]\nslot = "hero"\nsnippet = "promo"\nid = "p"\n',
    )
    (tmp_path / "snippets" / "banner.html").write_text("<p>banner</p>")
    # only an Italian variant: the other languages have nothing to fall back to
    (tmp_path / "snippets" / "promo.it.html").write_text("<p>promo</p>")
    _, errors = load_rules(rules, snippets=names(tmp_path))
    assert [(e.line, e.message.split(" in ")[0]) for e in errors] == [(12, "no snippet `promo`")]
    (tmp_path / "snippets" / "promo.html").write_text("<p>promo</p>")
    ruleset, errors = load_rules(rules, snippets=names(tmp_path))
    assert errors == [] and ruleset is not None and len(ruleset.placements) == 3


def test_edge_serve_refuses_the_rules_until_the_snippet_is_written(tmp_path: Path) -> None:
    rules = rule_dir(tmp_path, '[[placements]]\nslot = "hero"\nsnippet = "welcome.html"\n')
    config = Config(
        upstream="http://127.0.0.1:9",
        rules=str(rules),
        snippets=str(tmp_path / "snippets"),
        store=f"sqlite:{tmp_path / 'profiles.db'}",
        secret="s",
    )
    app = create_app(config)
    assert not app.rules.ok and app.rules.ruleset.placements == []
    assert "no snippet `welcome.html`" in str(app.rules.errors[0])
    assert str(app.rules.errors[0]).startswith(f"{rules / 'placements.toml'}:3:1: error:")
    # The rule files did not change; the snippets did: the watcher loads them now.
    (tmp_path / "snippets" / "welcome.html").write_text("<p>Benvenuto</p>")
    assert app.rules.reload() is True
    assert app.rules.ok and [p.spec.snippet for p in app.rules.ruleset.placements] == [
        "welcome.html"
    ]


def test_placements_are_checked_against_snippets_only_when_given_them(tmp_path: Path) -> None:
    # Without a snippet list (edge explain, tests), placements are not checked for them.
    rules = rule_dir(tmp_path, '[[placements]]\nslot = "hero"\nsnippet = "welcome.html"\n')
    ruleset, errors = load_rules(rules)
    assert errors == [] and ruleset is not None
    live = LiveRules(rules, snippets=lambda: names(tmp_path))
    assert not live.ok


@pytest.mark.parametrize(
    "text",
    ["", "# nothing yet\n\n", '[segments.vip]\nwhen = "orders_within(30d) >= 3"\n'],
    ids=["empty", "comments", "no-placements"],
)
def test_an_empty_placements_file_is_a_warning_naming_it(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = rule_dir(tmp_path, text)
    ruleset, errors = load_rules(rules, snippets=names(tmp_path))
    assert errors == [] and ruleset is not None  # a merchant may start with none
    [warning] = ruleset.warnings
    assert warning.file == str(rules / "placements.toml")
    assert str(warning).startswith(f"{rules / 'placements.toml'}: warning: no [[placements]]")
    assert main(["check", str(rules), "--snippets", str(tmp_path / "snippets")]) == 0
    captured = capsys.readouterr()
    assert "ok: " in captured.out
    assert f"{rules / 'placements.toml'}: warning: no [[placements]]" in captured.err


def test_an_empty_rule_file_is_a_warning_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = rule_dir(tmp_path, '[[placements]]\nslot = "hero"\nsnippet = "hero_vip.html"\n')
    (rules / "segments.toml").write_text("\n# to do\n")
    with caplog.at_level(logging.WARNING, logger="edge.rules"):
        live = LiveRules(rules, snippets=lambda: names(tmp_path))
    assert live.ok
    assert [str(w) for w in live.ruleset.warnings] == [
        f"{rules / 'segments.toml'}: warning: the file is empty\n"
        "  help: write rules in it, or remove it"
    ]
    assert f"{rules / 'segments.toml'}: warning: the file is empty" in caplog.text


def test_a_placement_naming_a_missing_slot_is_an_error_even_with_no_slots(tmp_path: Path) -> None:
    rules = rule_dir(tmp_path, '[[placements]]\nslot = "hero"\nsnippet = "hero_vip.html"\n', "")
    _, errors = load_rules(rules, snippets=names(tmp_path))
    [error] = errors
    assert str(error).startswith(f"{rules / 'placements.toml'}:2:1: error: unknown slot `hero`")
    assert error.help == "declare it under [slots.NAME]"
    rules = rule_dir(tmp_path, '[[placements]]\nslot = "heor"\nsnippet = "hero_vip.html"\n')
    _, errors = load_rules(rules, snippets=names(tmp_path))
    assert [(e.line, e.message, e.help) for e in errors] == [
        (2, "unknown slot `heor`", "did you mean `hero`?")
    ]


def test_a_sort_on_an_unknown_field_is_an_error_at_its_place(tmp_path: Path) -> None:
    rules = rule_dir(tmp_path, '[[placements]]\nslot = "hero"\nsort = ["affinity", "prise desc"]\n')
    _, errors = load_rules(rules, snippets=names(tmp_path))
    [error] = errors
    assert (error.line, error.column) == (3, 1)
    assert error.message == "unknown sort `prise desc`"
    assert error.help == "did you mean `price desc`?"


def test_a_snippet_that_does_not_compile_is_an_error_of_edge_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = rule_dir(tmp_path, '[[placements]]\nslot = "hero"\nsnippet = "broken.html"\n')
    (tmp_path / "snippets" / "broken.html").write_text("<div>\n  {% if %}hi{% endif %}\n</div>\n")
    assert main(["check", str(rules), "--snippets", str(tmp_path / "snippets")]) == 1
    err = capsys.readouterr().err
    shown = tmp_path / "snippets" / "broken.html"
    assert f"{shown}:2: error: template syntax: Expected an expression" in err
    assert "    {% if %}hi{% endif %}\n  help: snippets are Jinja2 templates" in err
    assert f"{rules}: 1 error" in err

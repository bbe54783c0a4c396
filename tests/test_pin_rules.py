"""`sort = "pin"` without ids: an error at load naming its place; and at request time a
placement that fails leaves its own slot alone, never the page's other placements."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge.activities import Activities, PageActivities
from edge.identity import Identity
from edge.personalize.snippets import LIBRARY, Snippets
from edge.placements import choose, fill
from edge.rules import compile_text

NOW = 1_790_000_000

PIN_WITHOUT_IDS = """\
[slots.hero]
select = "section.hero"

[slots.shelf]
select = "ul.products"

[[placements]]
id = "everyone-hero"
slot = "hero"
snippet = "hero_campaign.html"

[[placements]]
id = "pinned-shelf"
slot = "shelf"
sort = "pin"
"""


def test_pin_without_ids_is_an_error_with_its_place_and_fix() -> None:
    with pytest.raises(ValueError) as raised:
        compile_text(PIN_WITHOUT_IDS, file="theme.toml")
    message = str(raised.value)
    assert 'theme.toml:15:1: error: `sort` has "pin" but `pin` lists no products' in message
    assert 'help: list the product ids to show first, e.g. pin = ["p1001", "p1002"]' in message
    # with ids it loads
    compile_text(PIN_WITHOUT_IDS + 'pin = ["p1001"]\n', file="theme.toml")


def test_edge_check_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    (tmp_path / "theme.toml").write_text(PIN_WITHOUT_IDS, encoding="utf-8")
    assert main(["check", str(tmp_path), "--snippets", str(LIBRARY)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'theme.toml'}:15:1: error:" in err and "pin = [" in err


def test_a_failing_placement_leaves_the_others_on_the_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ruleset = compile_text(PIN_WITHOUT_IDS + 'pin = ["p1001"]\n', file="theme.toml")
    # What the checker now refuses, as a rule set loaded before it did would hold it.
    shelf = next(p for p in ruleset.placements if p.id == "pinned-shelf")
    shelf.spec.pin.clear()
    activities = PageActivities(
        Activities(Snippets(library=LIBRARY), Identity(["secret"])),
        profile=None,
        visitor_id="v1",
        now=NOW,
        language="en",
        segments=[],
        page={"path": "/", "type": "home"},
        return_to="/",
        cookies={},
        preview=False,
    )
    choices = choose(
        ruleset.by_priority, ruleset.slots, page_type="home", profile=None, now=NOW, holdout_key=""
    )
    assert {c.placement.id for c in choices} == {"everyone-hero", "pinned-shelf"}
    with caplog.at_level(logging.ERROR, logger="edge.activities"):
        filled = fill(choices, activities.edit)
    assert [choice.placement.id for choice, _edit in filled.shown] == ["everyone-hero"]
    assert "placement pinned-shelf (theme.toml:" in caplog.text

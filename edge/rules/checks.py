"""Checks of a rule set against what lies outside the rule files, and its warnings.

A placement's ``snippet`` names a file in the snippets directory (or the shipped
library): the rules layer does not read snippets, so the caller passes the names
there are (``edge check``, and ``edge serve`` on every load), and a missing one is an
error at the placement's ``snippet =``, with the nearest names. Warnings do not stop
a rule set from loading: an empty rule file, or a ``placements.toml`` with no
placements (a merchant may start with none, but then no page is personalized).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from typing import Any, Final

from edge.rules.errors import Locator, RuleError
from edge.rules.spec import Placement

__all__ = ["PLACEMENTS_FILE", "file_warnings", "snippet_errors"]

PLACEMENTS_FILE: Final = "placements.toml"
"""Where the placements are written, by the shipped layout (rules/README.md)."""


def _file_name(name: str) -> str:
    return name if name.endswith(".html") else name + ".html"


def snippet_errors(
    placements: Iterable[tuple[Placement, Locator, int]], snippets: Collection[str]
) -> list[RuleError]:
    """An error for each placement whose snippet is not among *snippets* (file
    names, language variants included: ``hero_vip.html``, ``hero_vip.it.html``); the
    base file is what every language falls back to, so it must be there."""
    errors = []
    bases = sorted(n for n in snippets if n.count(".") == 1)  # no language variants
    for placement, loc, header in placements:
        if not placement.snippet or _file_name(placement.snippet) in snippets:
            continue
        line, column = loc.key(header, "snippet")
        close = difflib.get_close_matches(_file_name(placement.snippet), bases, n=1)
        if close:
            help = f"did you mean `{close[0]}`?"
        elif bases:
            help = "the snippets there are: " + ", ".join(f"`{name}`" for name in bases)
        else:
            help = "write it in the snippets directory (--snippets, EDGE_SNIPPETS)"
        errors.append(
            loc.error(
                line,
                column,
                f"no snippet `{placement.snippet}` in the snippets directory or the shipped "
                "library",
                len("snippet"),
                help,
            )
        )
    return errors


def file_warnings(file: str, text: str, data: dict[str, Any] | None) -> list[RuleError]:
    """What is worth a word in one rule file that loads (*data*: its decoded TOML)."""
    if data is None:
        return []
    if file.replace("\\", "/").rsplit("/", 1)[-1] == PLACEMENTS_FILE and not data.get("placements"):
        return [
            _warning(
                file,
                "no [[placements]] in the placements file: no page is personalized",
                'a placement fills a slot: [[placements]] slot = "home-hero" '
                'segment = "vip" snippet = "hero_vip.html" (rules/README.md)',
            )
        ]
    if not data:
        return [_warning(file, "the file is empty", "write rules in it, or remove it")]
    return []


def _warning(file: str, message: str, help: str) -> RuleError:
    return RuleError(file, 0, 0, message, help=help, severity="warning")

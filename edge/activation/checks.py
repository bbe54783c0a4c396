"""What ``edge check`` (and ``edge serve``, activation on) checks of the scenarios
beyond the rule files themselves: their payload templates render JSON, their segment
triggers can be judged without a request, their destinations exist in edge.toml."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from pathlib import Path

from edge.activation.payloads import Payloads
from edge.activation.segments import activatable
from edge.rules import RuleError, RuleSet

__all__ = ["check_scenarios", "unknown_destinations"]


def check_scenarios(ruleset: RuleSet, snippets: str | Path | None) -> list[RuleError]:
    """Errors: a template that is missing or does not render JSON (``snippets/webhooks/``
    of *snippets*, then the library's), a trigger segment that reads the request."""
    used: dict[str, list[tuple[str, int, int]]] = {}
    for scenario in ruleset.scenarios.values():
        for step in scenario.steps:
            used.setdefault(step.action.template, []).append((scenario.file, *step.template_at))
    directory = Path(snippets) / "webhooks" if snippets is not None else None
    errors = Payloads(directory).check(used) if used or directory else []
    judged = activatable(ruleset)
    for scenario in ruleset.scenarios.values():
        trigger = scenario.trigger
        if trigger.kind != "event" and trigger.name not in judged:
            errors.append(
                RuleError(
                    scenario.file,
                    scenario.line,
                    1,
                    f"scenario `{scenario.id}`: segment `{trigger.name}` reads the request "
                    "or the shop's figures (page, utm, device, geo, shop.*): it cannot be judged "
                    "between requests, so its changes are not seen",
                    help="trigger on a segment of profile fields only (orders, cart, traits, answers...)",
                )
            )
    return errors


def unknown_destinations(ruleset: RuleSet, destinations: Collection[str]) -> list[RuleError]:
    """A step whose webhook is not a ``[destinations.NAME]`` of edge.toml (a warning in
    ``edge check``, an error when ``edge serve`` starts with activation on)."""
    out = []
    for scenario in ruleset.scenarios.values():
        for step in scenario.steps:
            name = step.action.webhook
            if name in destinations:
                continue
            close = difflib.get_close_matches(name, list(destinations), n=1)
            out.append(
                RuleError(
                    scenario.file,
                    step.template_at[0],
                    1,
                    f"scenario `{scenario.id}`: no destination `{name}` in edge.toml",
                    help=f"did you mean `{close[0]}`?"
                    if close
                    else f'add [destinations.{name}] with url = "https://..." to edge.toml',
                    severity="warning",
                )
            )
    return out

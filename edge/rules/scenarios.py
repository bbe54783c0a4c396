"""``[[scenarios]]``: what happens after a visitor enters a segment or leaves a cart.

```toml
[[scenarios]]
id = "cart_recovery"
label = "Abandoned cart: a reminder, then 5% off"
trigger = { event = "cart_left" }     # or { enter = "SEGMENT" }, { exit = "SEGMENT" }
exit = ["order"]                      # an order since the trigger ends it

[[scenarios.steps]]
after = "4h"                          # counted from the trigger
instead = [{ when = "regular_customer", after = "24h" }]
action = { webhook = "esp", template = "cart_reminder.json" }

[[scenarios.steps]]
after = "48h"
when = "cart.items >= 1"              # checked when the step is due; else it is skipped
discount = 5
action = { webhook = "esp", template = "cart_reminder.json", coupon_pool = "cart5" }
```

A trigger is a segment's entry (``enter``) or exit (``exit``), or an event:
``cart_left`` (a cart with items that no checkout and no order followed; it happens at
the cart's last change), ``checkout_left`` (a checkout started, with items in the
cart, that no order followed; at the checkout's start) or ``order`` (each order). Its
``when`` must hold at that moment. ``exit`` lists what ends a scenario early: ``order``
(an order after the trigger), ``leave`` (the visitor is no longer in the trigger's
segment; in it again, for an ``exit`` trigger), ``cart_emptied``, ``checkout`` (a
checkout started since the trigger). ``tiers`` (on the scenario, or a step) pick the discount:
the first whose ``when`` holds when the step runs. A step is skipped, not sent, when
it is more than ``late`` (default ``1d``) overdue: an import of old orders, or a
sidecar that was down, does not send yesterday's reminders today.

Conditions are compiled with the segments into the rule set's one evaluator: the
engine (``edge/activation/journeys.py``) reads them from its result. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import msgspec

from edge.rules.compiler import Checked, Output, check
from edge.rules.errors import Locator, RuleError
from edge.rules.lang import LangError, parse, parse_duration
from edge.rules.shop import localize_dates

__all__ = [
    "EVENTS",
    "EXITS",
    "Action",
    "Declared",
    "Scenario",
    "Step",
    "Tier",
    "Trigger",
    "check_scenarios",
    "lang_errors",
    "parse_scenarios",
]

EVENTS: Final = ("cart_left", "checkout_left", "order")
"""The events a scenario can start on (besides a segment's entry or exit)."""
EXITS: Final = ("order", "leave", "cart_emptied", "checkout")
"""What can end a scenario before its last step."""
DEFAULT_LATE: Final = "1d"
_ID: Final = re.compile(r"[a-z][a-z0-9_]{0,59}")


# --- compiled --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tier:
    discount: float
    """A percentage, 0 to 100."""
    when: int = -1
    """The scenario's condition number (-1: always)."""


@dataclass(frozen=True, slots=True)
class Action:
    webhook: str
    """A destination of edge.toml's ``[destinations.NAME]``."""
    template: str
    """A payload template in ``snippets/webhooks/``."""
    coupon_pool: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    after: int
    """Seconds from the trigger."""
    instead: tuple[tuple[int, int], ...] = ()
    """(condition, seconds): the first that holds when the step is scheduled wins."""
    when: int = -1
    action: Action = Action("", "")
    discount: float = 0.0
    tiers: tuple[Tier, ...] = ()
    line: int = 0
    """The step's table (``[[scenarios.steps]]``) in its file."""
    template_at: tuple[int, int] = (0, 0)
    """(line, column) of its ``action``'s template name, for errors about it."""


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: str
    """``enter``, ``exit`` or ``event``."""
    name: str
    """The segment, or the event."""
    when: int = -1


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    label: str
    trigger: Trigger
    steps: tuple[Step, ...]
    exit: frozenset[str] = frozenset()
    late: int = 86_400
    file: str = ""
    line: int = 0
    base: int = 0
    """Where its conditions start in the rule set's result: condition *n* is
    ``result[base + n]``."""

    def holds(self, result: Sequence[bool], condition: int) -> bool:
        """Whether condition number *condition* (-1: none) holds in *result*."""
        return condition < 0 or bool(result[self.base + condition])

    def discount(self, step: Step, result: Sequence[bool]) -> float:
        """The step's discount: its first tier that holds, else its fixed one."""
        for tier in step.tiers:
            if self.holds(result, tier.when):
                return tier.discount
        return step.discount

    def delay(self, step: Step, result: Sequence[bool]) -> int:
        for condition, seconds in step.instead:
            if self.holds(result, condition):
                return seconds
        return step.after


# --- as written --------------------------------------------------------------------------

Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]


class TierSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    discount: Percent
    when: str = ""


class DelaySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    when: str
    after: str


class ActionSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    webhook: str
    template: str
    coupon_pool: str = ""


class TriggerSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enter: str = ""
    exit: str = ""
    event: str = ""
    when: str = ""


class StepSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    after: str
    action: ActionSpec
    name: str = ""
    when: str = ""
    instead: list[DelaySpec] = msgspec.field(default_factory=list)
    discount: Percent = 0
    tiers: list[TierSpec] = msgspec.field(default_factory=list)


class ScenarioSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    trigger: TriggerSpec
    steps: list[StepSpec]
    label: str = ""
    description: str = ""
    exit: str | list[str] = msgspec.field(default_factory=list)
    late: str = DEFAULT_LATE
    tiers: list[TierSpec] = msgspec.field(default_factory=list)


@dataclass(slots=True)
class Declared:
    """A scenario of one file, before the checks that need every file."""

    spec: ScenarioSpec
    loc: Locator
    header: int
    steps: list[int]
    """The header line of each step (the scenario's when they are written inline)."""


_EXAMPLE: Final = (
    'e.g. id = "cart_recovery", trigger = { event = "cart_left" }, and a '
    '[[scenarios.steps]] with after = "4h" and action = { webhook = "esp", '
    'template = "cart_reminder.json" }'
)


def parse_scenarios(
    loc: Locator, data: dict[str, Any], errors: list[RuleError], found: list[Declared]
) -> None:
    """Decode each ``[[scenarios]]`` of one file into *found* (errors placed)."""
    raw_all = data.get("scenarios", [])
    if not isinstance(raw_all, list):
        line = loc.table("scenarios") or 1
        errors.append(loc.error(line, 1, "write scenarios as [[scenarios]]", help=_EXAMPLE))
        return
    step_headers = []
    while line := loc.table("scenarios.steps", index=len(step_headers)):
        step_headers.append(line)
    counts = [len(r.get("steps", [])) if isinstance(r, dict) else 0 for r in raw_all]
    tabled = len(step_headers) == sum(counts)
    first = 0
    for index, raw in enumerate(raw_all):
        header = loc.table("scenarios", index=index) or 1
        what = "scenario"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            what = f"scenario `{raw['id']}`"
        steps = step_headers[first : first + counts[index]] if tabled else []
        first += counts[index]
        if not isinstance(raw, dict):
            errors.append(loc.error(header, 1, f"{what} must be a table"))
            continue
        try:
            spec = msgspec.convert(raw, ScenarioSpec)
        except msgspec.ValidationError as e:
            errors.append(_decode_error(e, what, loc, header, steps))
            continue
        found.append(Declared(spec, loc, header, steps or [header] * len(spec.steps)))


_KEYS: Final = {
    "": ScenarioSpec,
    "steps": StepSpec,
    "trigger": TriggerSpec,
    "action": ActionSpec,
    "tiers": TierSpec,
    "instead": DelaySpec,
}


def _decode_error(
    e: msgspec.ValidationError, what: str, loc: Locator, header: int, steps: list[int]
) -> RuleError:
    """A decoding error placed at its key (in the step's own table when it has one),
    with the keys that place knows."""
    text = str(e)
    path = re.search(r" - at `\$((?:\.\w+|\[\d+\])*)`", text)
    parts = re.findall(r"\.(\w+)|\[(\d+)\]", path.group(1)) if path else []
    table, kind, key, inside = header, ScenarioSpec, "", ""
    for name, number in parts:
        if name:
            kind = _KEYS.get(name, kind)
            inside = name
            key = key or name
        elif inside == "steps" and key == "steps" and steps:
            table, key = steps[min(int(number), len(steps) - 1)], ""
    fields = list(kind.__struct_fields__)
    where = f" ({inside})" if inside else ""
    unknown = re.search(r"unknown field `([^`]+)`", text)
    if unknown:
        name = unknown.group(1)
        line, col = loc.key(table, key or name)
        if key and 0 < line <= len(loc.lines):
            col = max(col, loc.lines[line - 1].find(name, col - 1) + 1)
        close = difflib.get_close_matches(name, fields, n=1)
        return loc.error(
            line,
            col,
            f"unknown key `{name}` in {what}{where}",
            len(name),
            f"did you mean `{close[0]}`?" if close else "known keys: " + ", ".join(fields),
        )
    line, col = loc.key(table, key) if key else (table, 1)
    missing = re.search(r"missing required field `([^`]+)`", text)
    if missing:
        return loc.error(line, col, f"{what}{where} needs `{missing.group(1)}`", help=_EXAMPLE)
    message = re.sub(r" - at `[^`]*`", "", text)
    shown = ".".join(n or f"[{i}]" for n, i in parts).replace(".[", "[")
    return loc.error(line, col, f"{what}: `{shown}`: {message.lower()}", len(key) or 1)


# --- checked -----------------------------------------------------------------------------

Known = dict[str, Checked | LangError | ExceptionGroup]
"""Conditions checked so far, by text (shared with the rule set's segments)."""


def lang_errors(
    group: BaseException,
    loc: Locator,
    offsets: list[int] | None,
    line: int,
    col: int,
    what: str,
) -> list[RuleError]:
    """The errors of a condition placed in the file: *offsets* has the raw offset of
    each of its characters (None: all at line, col)."""
    errors = group.exceptions if isinstance(group, BaseExceptionGroup) else [group]
    out = []
    for e in errors:
        assert isinstance(e, LangError)
        if offsets:
            at = offsets[min(e.offset, len(offsets) - 1)]
            end = offsets[min(e.offset + e.length, len(offsets) - 1)]
            eline, ecol = loc.position(at)
            length = max(1, end - at)
        else:
            eline, ecol, length = line, col, 1
        out.append(loc.error(eline, ecol, f"{what}: {e.message}", length, e.help))
    return out


def _offsets(loc: Locator, line: int, col: int, source: str) -> list[int] | None:
    """The raw offsets of *source*'s characters, written as the value of the key at
    (line, col), or inside the inline table or array that is that value."""
    direct = loc.string_offsets(line, col)
    if direct is not None:
        return direct
    if "\\" in source or line < 1:
        return None
    start = loc.starts[line - 1]
    for quote in ('"', "'"):
        found = loc.text.find(f"{quote}{source}{quote}", start)
        if found >= 0:
            return [found + 1 + i for i in range(len(source) + 1)]
    return None


@dataclass(slots=True)
class _Checking:
    """One scenario being checked: its errors and its conditions, numbered."""

    declared: Declared
    names: Collection[str]
    errors: list[RuleError]
    known: Known
    zone: dt.tzinfo
    conditions: list[Checked] = field(default_factory=list)
    bad: bool = False

    @property
    def what(self) -> str:
        return f"scenario `{self.declared.spec.id}`"

    def error(self, header: int, key: str, message: str, help: str = "", value: str = "") -> None:
        """An error at *key* of the table at *header*; at *value*, when it is written
        on that key's line (an inline table's, an array's)."""
        loc = self.declared.loc
        line, col = loc.key(header, key) if key else (header, 1)
        length = len(key) or 1
        text = loc.lines[line - 1] if 0 < line <= len(loc.lines) else ""
        at = text.find(f'"{value}"', col - 1) if value else -1
        if at >= 0:
            col, length = at + 2, max(1, len(value))
        self.errors.append(loc.error(line, col, f"{self.what}: {message}", length, help))
        self.bad = True

    def condition(self, source: str, header: int, key: str) -> int:
        """The number of condition *source* (written at *key*), or -1 for none."""
        if not source.strip():
            return -1
        found = self.known.get(source)
        if found is None:
            try:
                found = check(source, localize_dates(parse(source), self.zone), self.names)
            except (LangError, ExceptionGroup) as e:
                found = e
            self.known[source] = found
        if not isinstance(found, Checked):
            loc = self.declared.loc
            line, col = loc.key(header, key)
            offsets = _offsets(loc, line, col, source)
            self.errors.extend(lang_errors(found, loc, offsets, line, col, self.what))
            self.bad = True
            return -1
        self.conditions.append(found)
        return len(self.conditions) - 1

    def seconds(self, text: str, header: int, key: str) -> int:
        value = parse_duration(text)
        if value is None:
            self.error(header, key, f"`{text}` is not a duration", 'write e.g. "4h", "24h", "90d"')
            return 0
        return int(value)

    def tiers(self, specs: list[TierSpec], header: int, key: str) -> tuple[Tier, ...]:
        tiers = [Tier(t.discount, self.condition(t.when, header, key)) for t in specs]
        for i, tier in enumerate(tiers[:-1]):
            if tier.when < 0 and not specs[i].when.strip():
                self.error(header, key, "a tier without `when` must come last (it always holds)")
        return tuple(tiers)


def check_scenarios(
    declared: Sequence[Declared],
    names: Collection[str],
    errors: list[RuleError],
    known: Known,
    zone: dt.tzinfo = dt.UTC,
) -> list[tuple[Scenario, list[Checked]]]:
    """Every file's scenarios checked: each with its conditions, to number from
    :attr:`Scenario.base` once they are in the evaluator (:func:`number`)."""
    out = []
    seen: dict[str, Declared] = {}
    for d in declared:
        checking = _Checking(d, names, errors, known, zone)
        scenario = _scenario(checking, seen)
        if scenario is not None and not checking.bad:
            out.append((scenario, checking.conditions))
    return out


def number(
    checked: list[tuple[Scenario, list[Checked]]], outputs: list[Output]
) -> dict[str, Scenario]:
    """The scenarios by id, their conditions appended to the evaluator's *outputs*."""
    book = {}
    for scenario, conditions in checked:
        base = len(outputs)
        outputs += [Output(f"scenario.{scenario.id}.{i}", c) for i, c in enumerate(conditions)]
        book[scenario.id] = dataclasses.replace(scenario, base=base)
    return book


def _scenario(c: _Checking, seen: dict[str, Declared]) -> Scenario | None:
    d, spec = c.declared, c.declared.spec
    if not _ID.fullmatch(spec.id):
        c.error(d.header, "id", f"`{spec.id}` is not an id", "lowercase letters, digits and `_`")
    elif spec.id in seen:
        first = seen[spec.id]
        c.error(d.header, "id", f"defined twice (also at {first.loc.file}:{first.header})")
    seen.setdefault(spec.id, d)
    trigger = _trigger(c, spec.trigger)
    exits = [spec.exit] if isinstance(spec.exit, str) else spec.exit
    for name in exits:
        if name not in EXITS:
            close = difflib.get_close_matches(name, EXITS, n=1)
            known = ", ".join(f"`{e}`" for e in EXITS)
            c.error(
                d.header,
                "exit",
                f"unknown exit `{name}`",
                f"did you mean `{close[0]}`?" if close else f"an exit is one of {known}",
                name,
            )
    if "leave" in exits and trigger.kind == "event":
        c.error(d.header, "exit", "`leave` needs a segment trigger ({ enter = ... })")
    if "checkout" in exits and trigger.name == "checkout_left":
        c.error(d.header, "exit", "`checkout` would end a `checkout_left` scenario at once")
    late = c.seconds(spec.late, d.header, "late")
    tiers = c.tiers(spec.tiers, d.header, "tiers")
    if not spec.steps:
        c.error(d.header, "steps", "has no steps", "add a [[scenarios.steps]] table")
    steps = tuple(_step(c, i, s, tiers) for i, s in enumerate(spec.steps))
    for i in range(1, len(steps)):
        if steps[i].after < steps[i - 1].after:
            c.error(
                d.steps[i],
                "after",
                f"step {i + 1} comes before step {i} (`after` counts from the trigger)",
                f"write after = at least {spec.steps[i - 1].after!r}",
            )
    return Scenario(
        spec.id,
        spec.label or spec.id.replace("_", " "),
        trigger,
        steps,
        frozenset(exits),
        late,
        d.loc.file,
        d.header,
    )


def _trigger(c: _Checking, spec: TriggerSpec) -> Trigger:
    header = c.declared.header
    given = [
        (k, v) for k, v in (("enter", spec.enter), ("exit", spec.exit), ("event", spec.event)) if v
    ]
    if len(given) != 1:
        c.error(
            header,
            "trigger",
            "a trigger has one of `enter`, `exit` or `event`",
            'e.g. trigger = { enter = "lapsed" } or trigger = { event = "cart_left" }',
        )
        return Trigger("event", "")
    kind, name = given[0]
    if kind == "event" and name not in EVENTS:
        close = difflib.get_close_matches(name, EVENTS, n=1)
        c.error(
            header,
            "trigger",
            f"unknown event `{name}`",
            f"did you mean `{close[0]}`?"
            if close
            else "events: " + ", ".join(f"`{e}`" for e in EVENTS),
            name,
        )
    elif kind != "event" and name not in c.names:
        close = difflib.get_close_matches(name, list(c.names), n=1)
        c.error(
            header,
            "trigger",
            f"unknown segment `{name}`",
            f"did you mean `{close[0]}`?" if close else "define it under [segments.NAME]",
            name,
        )
    return Trigger(kind, name, c.condition(spec.when, header, "trigger"))


def _step(c: _Checking, index: int, spec: StepSpec, tiers: tuple[Tier, ...]) -> Step:
    header = c.declared.steps[index]
    after = c.seconds(spec.after, header, "after")
    instead = tuple(
        (c.condition(d.when, header, "instead"), c.seconds(d.after, header, "instead"))
        for d in spec.instead
    )
    action = spec.action
    if not action.webhook.strip():
        c.error(header, "action", "`action.webhook` names no destination", 'webhook = "esp"')
    if not action.template.endswith(".json") or "/" in action.template:
        c.error(
            header,
            "action",
            f"`action.template` is not a template name: `{action.template}`",
            'a file of snippets/webhooks/, e.g. template = "cart_reminder.json"',
        )
    own = c.tiers(spec.tiers, header, "tiers")
    if spec.tiers and spec.discount:
        c.error(header, "discount", "a step has `discount` or `tiers`, not both")
    return Step(
        spec.name or f"step{index + 1}",
        after,
        instead,
        c.condition(spec.when, header, "when"),
        Action(action.webhook, action.template, action.coupon_pool),
        float(spec.discount),
        own or (() if spec.discount else tiers),
        header,
        _value_at(c.declared.loc, header, "action", action.template),
    )


def _value_at(loc: Locator, header: int, key: str, value: str) -> tuple[int, int]:
    """(line, column) of *value* written on the line of *key* (else the key's)."""
    line, col = loc.key(header, key)
    text = loc.lines[line - 1] if 0 < line <= len(loc.lines) else ""
    at = text.find(f'"{value}"', col - 1)
    return (line, at + 2) if at >= 0 else (line, col)

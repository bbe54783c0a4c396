"""Rule files loaded, checked and compiled into a RuleSet.

``load_rules(directory)`` reads every ``*.toml`` in a directory, reports every error of
every file (not only the first), and compiles the whole set into one evaluator. A file
decodes into :class:`~edge.rules.spec.RuleFile`; each section is then checked by its
own function (``_segments``, ``_placements``, ``_slots``, ``_page_types``), and the
conditions of all files together. ``edge/rules/live.py`` keeps the rule set that is
serving.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import gc
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from edge.pages import NAMED_CAPTURES, PageMap, PatternError, compile_pattern
from edge.rules import functions as fn
from edge.rules.carts import CartRules, CartSections, parse_carts
from edge.rules.checks import file_warnings, snippet_errors
from edge.rules.compiler import Checked, Explained, Interpreter, Output, Program, check, generate
from edge.rules.errors import Locator, RuleError
from edge.rules.lang import LangError, parse, parse_duration
from edge.rules.products import ProductSelectors, Selector, parse_products, product_selectors
from edge.rules.questions import Declared, Question, check_questions, parse_questions
from edge.rules.scenarios import Declared as DeclaredScenario
from edge.rules.scenarios import Scenario, check_scenarios, lang_errors, parse_scenarios
from edge.rules.scenarios import number as number_scenarios
from edge.rules.shop import DEFAULT_SHOP, Shop, localize_dates, parse_shop, shop_links
from edge.rules.spec import SECTIONS, Placement, RuleFile, Segment, Slot, Variant
from edge.rules.variants import arms_of, check_shows
from edge.shipped import RULES

LIBRARY_DIR: Final = RULES
"""The shipped library: the repository's ``rules/`` (in an installed package, its copy:
:mod:`edge.shipped`)."""
LIBRARY_SEGMENTS: Final = ("segments.toml", "questions.toml")
"""What ``edge serve`` loads from the library when the shop has no rule directory:
the segments and the profiling questions (the placements there map the demo shop's
theme)."""

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED: Final = frozenset({"and", "or", "not", "in", "true", "false", "has", "date"})


@dataclass(slots=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class SegmentRule:
    name: str
    label: str
    description: str
    when: str
    where: Where
    checked: Checked | None = None


@dataclass(slots=True)
class PlacementRule:
    id: str
    spec: Placement
    where: Where
    output: int = 0
    """Index of its eligibility in the evaluator's result."""
    checked: Checked | None = None
    start: float | None = None
    end: float | None = None
    variants: tuple[Variant, ...] = ()
    """What it may show (``edge/rules/variants.py``: its own, or its one ``default``)."""

    def scheduled(self, now: float) -> bool:
        return (self.start is None or now >= self.start) and (self.end is None or now < self.end)


@dataclass(slots=True)
class RuleSet:
    segments: dict[str, SegmentRule]
    """In dependency order (a segment comes after those it uses)."""
    placements: list[PlacementRule]
    slots: dict[str, Slot]
    page_types: dict[str, list[str]]
    """The rule files' own ``[page_types]``."""
    program: Program
    pages: PageMap
    """Paths to page types, from ``page_types``: slots and tracking read this one map."""
    files: list[str] = field(default_factory=list)
    carts: CartRules = field(default_factory=CartRules)
    """Cart actions and the cart and order pages' selectors (or the demo shop's)."""
    shop: Shop = DEFAULT_SHOP
    """``[shop]``: currency, locale, time zone, languages."""
    questions: dict[str, Question] = field(default_factory=dict)
    """The profiling questions by trait, in the order they are asked."""
    products: ProductSelectors = field(default_factory=ProductSelectors)
    """``[products]``: the merchant's selectors for product facts."""
    warnings: list[RuleError] = field(default_factory=list)
    """What loaded but is probably not what was meant (:mod:`edge.rules.checks`)."""
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    """``[[scenarios]]`` by id (:mod:`edge.rules.scenarios`)."""
    segment_names: tuple[str, ...] = ()
    evaluate: Callable[[fn.Context], tuple[bool, ...]] = field(init=False, repr=False)
    """``evaluate(ctx)``: every segment (in ``segment_names`` order), then every
    placement's condition. The generated function itself, called with no wrapper."""
    by_priority: list[PlacementRule] = field(init=False, repr=False)
    """The placements sorted once (stably) by priority, highest first: filtering keeps
    that order, so a page's eligible placements need no sort of their own."""

    def __post_init__(self) -> None:
        self.segment_names = tuple(self.segments)
        self.evaluate = self.program.evaluate
        self.by_priority = sorted(self.placements, key=lambda p: -p.spec.priority)

    def context(
        self,
        profile: Any,
        request: fn.RequestInfo | None = None,
        now: float = 0.0,
        shop: fn.ShopStats | None = None,
    ) -> fn.Context:
        """A rule context on this rule set's clock (``[shop] timezone``)."""
        ctx = fn.Context(profile, request, now, shop)
        ctx.zone = self.shop.zone
        return ctx

    def matching(self, ctx: fn.Context) -> frozenset[str]:
        """The names of the segments the context is in."""
        result = self.program.evaluate(ctx)
        return frozenset(n for n, yes in zip(self.segment_names, result, strict=False) if yes)

    def names(self, result: tuple[bool, ...]) -> list[str]:
        return [n for n, yes in zip(self.segment_names, result, strict=False) if yes]

    def eligible(
        self, ctx: fn.Context, result: tuple[bool, ...] | None = None
    ) -> list[PlacementRule]:
        """Placements whose condition holds and whose schedule is on, highest priority
        first (frequency caps and holdouts are applied by the placement step)."""
        if result is None:
            result = self.program.evaluate(ctx)
        now = ctx.now
        return [p for p in self.by_priority if result[p.output] and p.scheduled(now)]

    def explain(self, ctx: fn.Context) -> dict[str, Explained]:
        """For each segment, its value and the values of the sub-expressions that
        decided it (the reference interpreter, so it is also the specification)."""
        checked = {n: s.checked for n, s in self.segments.items() if s.checked is not None}
        interp = Interpreter(ctx, checked)
        return {name: interp.explain(c) for name, c in checked.items()}


# --- loading -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Parsed:
    """Entries of all files, before the cross-file checks."""

    segments: dict[str, tuple[SegmentRule, Locator, int]] = field(default_factory=dict)
    placements: list[tuple[Placement, Locator, int]] = field(default_factory=list)
    slots: dict[str, tuple[Slot, Where]] = field(default_factory=dict)
    slot_pages: list[tuple[str, Slot, Locator, int]] = field(default_factory=list)
    """Slots with ``pages``, to check the names once every file's page types are in."""
    page_types: dict[str, tuple[list[str], Where]] = field(default_factory=dict)
    carts: CartSections = field(default_factory=CartSections)
    shops: list[Shop] = field(default_factory=list)
    questions: list[Declared] = field(default_factory=list)
    scenarios: list[DeclaredScenario] = field(default_factory=list)
    products: dict[str, tuple[Selector, str]] = field(default_factory=dict)
    errors: list[RuleError] = field(default_factory=list)
    warnings: list[RuleError] = field(default_factory=list)


def _validation_message(error: msgspec.ValidationError, what: str) -> tuple[str, str]:
    """(message, key) from a msgspec error: the key it names, if any."""
    text = str(error)
    key = ""
    match = re.search(r"unknown field `([^`]+)`", text)
    if match:
        return f"unknown key `{match.group(1)}` in {what}", match.group(1)
    match = re.search(r"missing required field `([^`]+)`", text)
    if match:
        return f"{what} needs `{match.group(1)}`", ""
    match = re.search(r" - at `\$\.([A-Za-z_]+)", text)
    if match:
        key = match.group(1)
    message = re.sub(r" - at `[^`]*`", "", text)
    return (f"`{key}`: {message.lower()}" if key else message), key


def _convert(
    raw: Any, kind: type[Any], what: str, loc: Locator, header: int, errors: list[RuleError]
) -> Any:
    """One entry decoded on its own; None, and its error placed, if it does not decode."""
    if not isinstance(raw, dict):
        line = header or 1
        errors.append(loc.error(line, 1, f"{what} must be a table"))
        return None
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as e:
        message, key = _validation_message(e, what)
        help = ""
        if key and key not in kind.__struct_fields__:
            close = difflib.get_close_matches(key, kind.__struct_fields__, n=1)
            help = (
                f"did you mean `{close[0]}`?"
                if close
                else ("known keys: " + ", ".join(f"`{k}`" for k in kind.__struct_fields__))
            )
        line, col = loc.key(header, key) if key else (header or 1, 1)
        errors.append(loc.error(line, col, message, len(key) or 1, help))
        return None


def _parse_file(text: str, shown: str, parsed: _Parsed, data: dict[str, Any] | None) -> None:
    """Decode one rule file and check it, section by section, into *parsed*."""
    loc = Locator(shown, text)
    if data is None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            parsed.errors.append(loc.toml_error(str(e)))
            return
    parsed.warnings += file_warnings(shown, text, data)
    try:
        declared: RuleFile | None = msgspec.convert(data, RuleFile)
    except msgspec.ValidationError:
        declared = None  # the sections decode each entry on its own, to place each error
        data = _tables(data, loc, parsed.errors)
    _segments(loc, data, declared, parsed)
    _placements(loc, data, declared, parsed)
    _slots(loc, data, declared, parsed)
    _page_types(loc, data, parsed)
    parse_carts(loc, data, declared, parsed.carts, parsed.errors, _convert)
    parse_shop(loc, data, parsed.errors, parsed.shops)
    parse_questions(loc, data, parsed.errors, parsed.questions)
    parse_scenarios(loc, data, parsed.errors, parsed.scenarios)
    parse_products(loc, data, parsed.products, parsed.errors)


def _tables(data: dict[str, Any], loc: Locator, errors: list[RuleError]) -> dict[str, Any]:
    """The sections of a file that is not a :class:`RuleFile`: an unknown table or one of
    the wrong shape is reported, and left out."""
    for key in data:
        if key not in SECTIONS:
            close = difflib.get_close_matches(key, list(SECTIONS), n=1)
            line = loc.table(key) or loc.key(1, key)[0] or 1
            errors.append(
                loc.error(
                    line,
                    1,
                    f"unknown table `{key}`",
                    len(key) + 2,
                    f"did you mean `{close[0]}`?"
                    if close
                    else "a rule file has [segments.NAME], [[placements]], [slots.NAME], "
                    "[page_types], [products], [[cart_actions]], [cart_page], [mini_cart], [[scenarios]], "
                    "[order_page], [shop] and [questions.NAME]",
                )
            )
    tables = {}
    for section, shape in SECTIONS.items():
        if section not in data:
            continue
        if isinstance(data[section], shape):
            tables[section] = data[section]
        else:
            errors.append(loc.error(loc.table(section) or 1, 1, f"`{section}` has the wrong shape"))
    return tables


def _segments(
    loc: Locator, data: dict[str, Any], declared: RuleFile | None, parsed: _Parsed
) -> None:
    """``[segments.NAME]``: a name a condition can use, defined once in all the files."""
    errors = parsed.errors
    for name, raw in data.get("segments", {}).items():
        header = loc.table("segments", name)
        if declared is not None:
            seg = declared.segments[name]
        else:
            seg = _convert(raw, Segment, f"segment `{name}`", loc, header, errors)
        if (
            not _NAME.match(name)
            or name in _RESERVED
            or fn.field_type(name)
            or (name in fn.FUNCTIONS)
        ):
            why = (
                "is a built-in name"
                if _NAME.match(name)
                else "must be letters, digits and `_`, starting with a letter"
            )
            errors.append(
                loc.error(
                    header or 1,
                    1,
                    f"segment name `{name}` {why}",
                    len(loc.lines[header - 1]) if header else 1,
                    "rename it, e.g. `my_" + re.sub(r"\W", "_", name) + "`",
                )
            )
            continue
        if name in parsed.segments:
            first = parsed.segments[name][0].where
            errors.append(
                loc.error(
                    header or 1,
                    1,
                    f"segment `{name}` is defined twice: here and at {first}",
                    len(loc.lines[header - 1]) if header else 1,
                    "rename one of them or remove the duplicate",
                )
            )
            continue
        if seg is None:
            continue
        rule = SegmentRule(name, seg.label, seg.description, seg.when, Where(loc.file, header))
        parsed.segments[name] = (rule, loc, header)


def _placements(
    loc: Locator, data: dict[str, Any], declared: RuleFile | None, parsed: _Parsed
) -> None:
    """``[[placements]]``, decoded here; they are checked with the whole rule set."""
    for index, raw in enumerate(data.get("placements", [])):
        header = loc.table("placements", index=index)
        if declared is not None:
            placement = declared.placements[index]
        else:
            placement = _placement(raw, loc, header, parsed.errors)
        if placement is not None:
            parsed.placements.append((placement, loc, header))


def _placement(raw: Any, loc: Locator, header: int, errors: list[RuleError]) -> Placement | None:
    """One placement decoded on its own; a day without a time (``start = 2026-11-27``)
    is its midnight."""
    placement = _convert(raw, Placement, "placement", loc, header, errors)
    if (
        placement is None
        and isinstance(raw, dict)
        and any(isinstance(raw.get(k), dt.date) for k in ("start", "end"))
    ):
        for k in ("start", "end"):
            if isinstance(raw.get(k), dt.date) and not isinstance(raw[k], dt.datetime):
                raw[k] = dt.datetime(raw[k].year, raw[k].month, raw[k].day)
        errors.pop()
        placement = _convert(raw, Placement, "placement", loc, header, errors)
    return placement


def _slots(loc: Locator, data: dict[str, Any], declared: RuleFile | None, parsed: _Parsed) -> None:
    """``[slots.NAME]``: a place in the theme, found by a selector, defined once."""
    errors = parsed.errors
    for name, raw in data.get("slots", {}).items():
        header = loc.table("slots", name)
        if declared is not None:
            slot = declared.slots[name]
        else:
            slot = _convert(raw, Slot, f"slot `{name}`", loc, header, errors)
        if slot is None:
            continue
        if name in parsed.slots:
            errors.append(
                loc.error(
                    header or 1,
                    1,
                    f"slot `{name}` is defined twice: here and at {parsed.slots[name][1]}",
                )
            )
            continue
        if not slot.select.strip():
            line, col = loc.key(header, "select")
            errors.append(
                loc.error(
                    line,
                    col,
                    f"slot `{name}` has an empty `select`",
                    help='write a CSS selector such as "#hero" or "ol.products"',
                )
            )
        if slot.item_link:
            try:
                if re.compile(slot.item_link).groups < 1:
                    raise re.error("needs a group, like /p/([^/]+)")
            except re.error as e:
                line, col = loc.key(header, "item_link")
                errors.append(
                    loc.error(
                        line,
                        col,
                        f"`item_link` is not a usable pattern: {e}",
                        help=r'group 1 is the product id, e.g. "/p/([\w-]+)"',
                    )
                )
        parsed.slots[name] = (slot, Where(loc.file, header))
        if slot.pages:
            parsed.slot_pages.append((name, slot, loc, header))


def _page_types(loc: Locator, data: dict[str, Any], parsed: _Parsed) -> None:
    """``[page_types]``: a name's URL pattern, or a list of them, each one that
    :func:`edge.pages.compile_pattern` accepts; every name defined once."""
    errors = parsed.errors
    header = loc.table("page_types")
    for name, patterns in data.get("page_types", {}).items():
        line, col = loc.key(header, name)
        listed = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
            errors.append(
                loc.error(line, col, f'page type `{name}` needs a URL pattern like "/c/{{slug}}"')
            )
            continue
        bad = len(errors)
        for pattern in listed:
            try:
                compile_pattern(pattern)
            except PatternError as e:
                errors.append(
                    loc.error(
                        line,
                        col,
                        f"page type `{name}`: {e}",
                        help='e.g. "/c/{slug}" ({name} matches one path segment, * anything)',
                    )
                )
        if len(errors) > bad:
            continue
        _check_captures(name, listed, loc, line, col, errors)
        if name in parsed.page_types:
            errors.append(
                loc.error(
                    line,
                    col,
                    f"page type `{name}` is defined twice: here and at {parsed.page_types[name][1]}",
                )
            )
            continue
        parsed.page_types[name] = (listed, Where(loc.file, line))


def _check_captures(
    name: str, patterns: list[str], loc: Locator, line: int, col: int, errors: list[RuleError]
) -> None:
    """A product or category pattern that captures several segments says which one
    names the thing (``{product}``): otherwise views would be recorded without it."""
    wanted = NAMED_CAPTURES.get(name)
    if wanted is None:
        return
    for pattern in patterns:
        captures = compile_pattern(pattern).groupindex
        if len(captures) > 1 and wanted not in captures:
            errors.append(
                loc.error(
                    line,
                    col,
                    f"page type `{name}`: pattern `{pattern}` captures "
                    + ", ".join(f"`{{{c}}}`" for c in captures)
                    + f" but not `{{{wanted}}}`",
                    len(name),
                    f"name the segment that identifies the {name} `{{{wanted}}}`, "
                    f"e.g. {_example_capture(pattern, wanted)!r}",
                )
            )


def _example_capture(pattern: str, wanted: str) -> str:
    """*pattern* with its last capture renamed *wanted*."""
    last = list(re.finditer(r"\{[^{}]*\}", pattern))[-1]
    return pattern[: last.start()] + "{" + wanted + "}" + pattern[last.end() :]


def _check_slot_pages(parsed: _Parsed) -> None:
    """A slot's ``pages`` name page types that some file defines: a name nothing
    defines would keep the slot off every page without a word."""
    defined = list(parsed.page_types)
    for name, slot, loc, header in parsed.slot_pages:
        for page in slot.pages:
            if page in parsed.page_types:
                continue
            line, col = loc.key(header, "pages")
            close = difflib.get_close_matches(page, defined, n=1)
            parsed.errors.append(
                loc.error(
                    line,
                    col,
                    f"slot `{name}`: no page type `{page}`",
                    len("pages"),
                    f"did you mean `{close[0]}`?"
                    if close
                    else (
                        f"page types defined: {', '.join(defined)}"
                        if defined
                        else "define it in [page_types], e.g. "
                        f'{page} = "/{page}/{{slug}}" (rules/theme.toml)'
                    ),
                )
            )


def _expression_errors(
    group: BaseException, loc: Locator, line: int, col: int, what: str
) -> list[RuleError]:
    return lang_errors(group, loc, loc.string_offsets(line, col), line, col, what)


_Known = dict[str, Checked | LangError | ExceptionGroup[LangError]]
"""The conditions of one rule set checked so far, by text: a condition written several
times is parsed and checked once (its errors are placed at each of its places)."""


def _check_expression(
    source: str,
    names: Collection[str],
    loc: Locator,
    header: int,
    what: str,
    errors: list[RuleError],
    known: _Known,
    zone: dt.tzinfo = dt.UTC,
) -> Checked | None:
    found = known.get(source)
    if found is None:
        try:
            found = check(source, localize_dates(parse(source), zone), names)
        except (LangError, ExceptionGroup) as e:
            found = e
        known[source] = found
    if isinstance(found, Checked):
        return found
    line, col = loc.key(header, "when")
    errors.extend(_expression_errors(found, loc, line, col, what))
    return None


def _order(parsed: _Parsed, errors: list[RuleError]) -> list[str]:
    """Segments in dependency order; cycles are reported with their path. A depth-first
    walk with its own stack: a long chain of segments does not reach Python's recursion
    limit, and no nested function refers to itself (such a cycle would keep every rule
    of a dropped rule set until the cyclic collector ran)."""
    uses = {
        name: [u for u, _ in rule.checked.segments] if rule.checked else []
        for name, (rule, _, _) in parsed.segments.items()
    }
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    reported: set[frozenset[str]] = set()
    for root in parsed.segments:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        walking = [iter(uses[root])]  # for each segment on the path, the uses left to see
        while walking:
            for used in walking[-1]:
                if state.get(used) == 1:
                    cycle = [*path[path.index(used) :], used]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        _rule, loc, header = parsed.segments[used]
                        line, col = loc.key(header, "when")
                        errors.append(
                            loc.error(
                                line,
                                col,
                                "segments refer to each other in a circle: " + " -> ".join(cycle),
                                len(loc.lines[line - 1]) - col + 1 if line else 1,
                                "a segment can use segments defined without it; break the circle",
                            )
                        )
                elif used not in state:
                    state[used] = 1
                    path.append(used)
                    walking.append(iter(uses[used]))
                    break
            else:
                walking.pop()
                done = path.pop()
                state[done] = 2
                order.append(done)
    return order


def _timestamp(value: dt.datetime | None, zone: dt.tzinfo = dt.UTC) -> float | None:
    """A placement's ``start``/``end``: without an offset, the shop's wall-clock time."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.timestamp()


def _check_placement(
    p: Placement,
    loc: Locator,
    header: int,
    segments: Collection[str],
    slots: dict[str, Any],
    errors: list[RuleError],
    known: _Known,
    zone: dt.tzinfo = dt.UTC,
) -> PlacementRule | None:
    bad = len(errors)

    def err(key: str, message: str, help: str = "") -> None:
        line, col = loc.key(header, key) if key else (header or 1, 1)
        errors.append(loc.error(line, col, message, len(key) or 1, help))

    if p.slot not in slots:
        close = difflib.get_close_matches(p.slot, list(slots), n=1)
        err(
            "slot",
            f"unknown slot `{p.slot}`",
            f"did you mean `{close[0]}`?" if close else "declare it under [slots.NAME]",
        )
    if p.segment and p.when:
        err("when", "a placement has `segment` or `when`, not both")
    if p.segment and p.segment not in segments:
        close = difflib.get_close_matches(p.segment, segments, n=1)
        err(
            "segment",
            f"unknown segment `{p.segment}`",
            f"did you mean `{close[0]}`?" if close else "",
        )
    check_shows(
        p, loc, header, lambda at, message, help, n: errors.append(loc.error(*at, message, n, help))
    )
    start, end = _timestamp(p.start, zone), _timestamp(p.end, zone)
    if start is not None and end is not None and end <= start:
        err("end", "`end` is not after `start`")
    if p.cap is not None and parse_duration(p.cap.per) is None:
        err("cap", f"`cap.per` is not a duration: `{p.cap.per}`", 'write e.g. per = "1d"')
    if p.offer_ttl and parse_duration(p.offer_ttl) is None:
        err(
            "offer_ttl",
            f"`offer_ttl` is not a duration: `{p.offer_ttl}`",
            'write e.g. "48h" or "7d"',
        )
    checked = None
    if p.when:
        checked = _check_expression(
            p.when, segments, loc, header, "placement condition", errors, known, zone
        )
    if len(errors) > bad:
        return None
    if p.id:
        pid = p.id
    elif p.segment:
        pid = f"{p.slot}.{p.segment}"
    else:
        pid = f"{p.slot}.line{header}" if p.when else f"{p.slot}.everyone"
    where = Where(loc.file, header)
    arms = arms_of(p)
    return PlacementRule(pid, p, where, checked=checked, start=start, end=end, variants=arms)


def rule_files(directory: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The rule files of *directory*: every ``*.toml``, or those named in *only*."""
    if only is not None:
        return [directory / name for name in only if (directory / name).is_file()]
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def load_rules(
    directory: str | Path,
    only: Sequence[str] | None = None,
    snippets: Collection[str] | None = None,
) -> tuple[RuleSet | None, list[RuleError]]:
    """Read, check and compile every ``*.toml`` in *directory* (or the files named in
    *only*). Returns the rule set, or None and every error found. *snippets*: the
    snippet files there are, to check the placements' against (None: unchecked)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None, [RuleError(str(directory), 0, 0, "no such directory")]
    sources: list[tuple[str, str | None]] = []
    errors = []
    for path in rule_files(directory, only):
        shown = str(directory / path.name)
        try:
            sources.append((shown, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as e:
            sources.append((shown, None))
            errors.append(RuleError(shown, 0, 0, f"cannot read: {e}"))
    return compile_sources(sources, errors, snippets=snippets)


def compile_sources(
    sources: Iterable[tuple[str, str | None]],
    errors: Iterable[RuleError] = (),
    decoded: dict[str, dict[str, Any]] | None = None,
    snippets: Collection[str] | None = None,
) -> tuple[RuleSet | None, list[RuleError]]:
    """Check and compile rule files given as (name shown in errors, text); a text of
    None is a file that could not be read (its error is among *errors*). *decoded*
    has the TOML of some files already decoded (their text then only places errors);
    *snippets* as for :func:`load_rules`.

    The cyclic garbage collector is paused meanwhile: compiling allocates tens of
    thousands of small, acyclic objects (tokens, nodes, code strings), and in a serving
    process with a large heap the collections they trigger cost as much as the
    compiling itself (bench/rules.py: 1,000 segments about 25% faster)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _compile_sources(sources, errors, decoded, snippets)
    finally:
        if paused:
            gc.enable()


def _compile_sources(
    sources: Iterable[tuple[str, str | None]],
    errors: Iterable[RuleError],
    decoded: dict[str, dict[str, Any]] | None,
    snippets: Collection[str] | None,
) -> tuple[RuleSet | None, list[RuleError]]:
    parsed = _Parsed(errors=list(errors))
    files = []
    for shown, text in sources:
        files.append(shown)
        if text is not None:
            _parse_file(text, shown, parsed, (decoded or {}).get(shown))
    names = dict.fromkeys(parsed.segments)  # ordered, and quick to look a name up in
    errors = parsed.errors
    shop = _the_shop(parsed.shops, errors)
    zone = shop.zone
    known: _Known = {}
    for rule, loc, header in parsed.segments.values():
        rule.checked = _check_expression(
            rule.when, names, loc, header, f"segment `{rule.name}`", errors, known, zone
        )
    order = _order(parsed, errors)
    _check_slot_pages(parsed)
    placements = []
    for p, loc, header in parsed.placements:
        rule = _check_placement(p, loc, header, names, parsed.slots, errors, known, zone)
        if rule is not None:
            placements.append(rule)
    if snippets is not None:
        errors += snippet_errors(parsed.placements, snippets)
    questions = _questions(parsed, names, errors, known, shop)
    scenarios = check_scenarios(parsed.scenarios, names, errors, known, zone)
    seen: dict[str, PlacementRule] = {}
    for rule in placements:
        if rule.id in seen:
            loc_line = rule.where.line
            errors.append(
                RuleError(
                    rule.where.file,
                    loc_line,
                    1,
                    f"two placements have the id `{rule.id}` (also at {seen[rule.id].where})",
                    help="give each an `id`",
                )
            )
        seen[rule.id] = rule
    if errors:
        errors.sort(key=lambda e: (e.file, e.line, e.column))
        return None, errors
    segments = {name: parsed.segments[name][0] for name in order}
    index = {name: i for i, name in enumerate(order)}
    outputs = [Output(name, segments[name].checked) for name in order]
    for rule in placements:
        rule.output = len(outputs)
        if rule.checked is not None:
            outputs.append(Output(rule.id, rule.checked))
        elif rule.spec.segment:
            rule.output = index[rule.spec.segment]
        else:
            outputs.append(Output(rule.id, None))
    asked = {}
    for question, checked in questions:
        if checked is not None:
            question = dataclasses.replace(question, output=len(outputs))
            outputs.append(Output(f"question.{question.trait}", checked))
        asked[question.trait] = question
    book = number_scenarios(scenarios, outputs)
    program = generate(outputs, index)
    page_types = {n: p for n, (p, _) in parsed.page_types.items()}
    return RuleSet(
        segments=segments,
        placements=placements,
        slots={n: s for n, (s, _) in parsed.slots.items()},
        page_types=page_types,
        program=program,
        pages=PageMap(page_types),
        files=files,
        carts=parsed.carts.rules(),
        shop=shop_links(shop, page_types),
        questions=asked,
        products=product_selectors(parsed.products),
        warnings=parsed.warnings,
        scenarios=book,
    ), []


def _questions(
    parsed: _Parsed, names: Collection[str], errors: list[RuleError], known: _Known, shop: Shop
) -> list[tuple[Question, Checked | None]]:
    """Every file's questions checked, in the order they are asked, with their ``when``
    (checked for every question, even one with other errors)."""
    whens = {
        d.index: _check_expression(
            d.spec.when, names, d.loc, d.header, f"question `{d.name}`", errors, known, shop.zone
        )
        for d in parsed.questions
        if d.spec.when
    }
    return [
        (q, whens.get(d.index))
        for q, d in check_questions(parsed.questions, shop.languages, errors)
    ]


def _the_shop(shops: list[Shop], errors: list[RuleError]) -> Shop:
    """The one ``[shop]`` of the rule set (a second one is an error)."""
    for extra in shops[1:]:
        file, _, line = extra.where.rpartition(":")
        errors.append(
            RuleError(
                file,
                int(line),
                1,
                f"[shop] is defined twice: here and at {shops[0].where}",
                help="keep one [shop] table in one file",
            )
        )
    return shops[0] if shops else DEFAULT_SHOP


def compile_segments(segments: dict[str, str]) -> RuleSet:
    """A rule set from ``{name: condition}`` (tests, benchmarks). Raises ValueError
    with every error."""
    # The file these segments would be written as: errors are placed in it, as they
    # would be in a merchant's file; its TOML need not be decoded again.
    text = "\n".join(f"[segments.{n}]\nwhen = {_toml_string(w)}\n" for n, w in segments.items())
    data = {"segments": {name: {"when": when} for name, when in segments.items()}}
    return compile_text(text, decoded=data)


def compile_text(
    text: str, file: str = "<rules>", decoded: dict[str, Any] | None = None
) -> RuleSet:
    """A rule set from the text of one rule file. Raises ValueError with every error."""
    ruleset, errors = compile_sources(
        [(file, text)], decoded={file: decoded} if decoded is not None else None
    )
    if errors:
        raise ValueError("\n".join(str(e) for e in errors))
    assert ruleset is not None
    return ruleset


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

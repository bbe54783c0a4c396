"""The merchant's rule tools: ``edge check``, ``edge explain`` and ``edge segments``."""

from __future__ import annotations

import asyncio
import datetime as dt
import difflib
import re
import sys
import time
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from edge.activation.checks import check_scenarios, unknown_destinations
from edge.config import Config, ConfigError
from edge.profiles.model import Profile
from edge.rewrite import SelectorError, parse_selector
from edge.rules import RequestInfo, RuleSet, ShopStats, device_of, load_rules, rules_directory
from edge.rules.carts import DEFAULT_CART_ACTIONS
from edge.snapshots import SegmentCounts, count_segments, take_snapshot

# Fields that come from the request, not the profile: a segment reading them cannot be
# judged from stored profiles alone.
_REQUEST_FIELDS = re.compile(r"\b(utm\.|page\.|channel\b|lang\b|device\b|geo\.|distance_km)")


def rules_dir_for(configured: str | None, config: Config) -> Path:
    if configured:
        path = Path(configured)
        if not path.is_dir():
            raise ConfigError(f"--rules: no such directory: {path}")
        return path
    return rules_directory(config.rules)[0]


def check(directory: Path, snippets_dir: str, destinations: Collection[str] | None = None) -> int:
    """Print every error of every rule file and snippet (and the warnings); a
    summary when there is no error. *destinations*: edge.toml's, for the scenarios'
    webhooks (None: none configured, not checked)."""
    from edge.personalize.snippets import Snippets

    snippets = Snippets(snippets_dir)
    ruleset, errors = load_rules(directory, snippets=snippets.names())
    problems = [str(e) for e in errors]
    if ruleset is not None:
        problems += [str(e) for e in check_scenarios(ruleset, snippets_dir)]
        if destinations is not None:
            ruleset.warnings += unknown_destinations(ruleset, destinations)
    slots = _raw_slots(directory)
    problems += _slot_problems(slots, directory)
    problems += [str(p) for p in snippets.check() if "no such directory" not in str(p)]
    for warning in ruleset.warnings if ruleset is not None else ():
        print(warning, file=sys.stderr)
        print(file=sys.stderr)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
            print(file=sys.stderr)
        count = len(problems)
        print(f"{directory}: {count} error{'s' * (count != 1)}", file=sys.stderr)
        return 1
    assert ruleset is not None
    demo_carts = ruleset.carts.actions is DEFAULT_CART_ACTIONS
    print(
        f"{directory}: ok: {len(ruleset.segments)} segments, {len(ruleset.placements)} "
        f"placements, {len(ruleset.slots)} slots, {len(ruleset.page_types)} page types, "
        f"{len(ruleset.carts.actions)} cart actions{' (the demo shop’s)' * demo_carts}, "
        f"{len(ruleset.questions)} questions, {len(ruleset.scenarios)} scenarios "
        f"({len(ruleset.files)} files)"
    )
    return 0


def _where(directory: Path, header: str) -> str:
    """``file:line`` of a table header such as ``[slots.home-hero]``."""
    for path in sorted(directory.glob("*.toml")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip().startswith(header):
                return f"{path}:{number}"
    return str(directory)


def _raw_slots(directory: Path) -> dict[str, Any]:
    """Slots as written (so they are checked even when the rule language found
    errors elsewhere); files that do not parse are skipped here."""
    slots: dict[str, Any] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        for name, slot in (data.get("slots") or {}).items():
            if isinstance(slot, dict):
                slots[name] = _RawSlot(str(slot.get("select", "")), str(slot.get("item_link", "")))
    return slots


class _RawSlot(msgspec.Struct):
    select: str
    item_link: str


def _slot_problems(slots: dict[str, Any], directory: Path) -> list[str]:
    out = []
    for name, slot in slots.items():
        try:
            parse_selector(slot.select)
        except SelectorError as exc:
            where = _where(directory, f"[slots.{name}]")
            out.append(
                f"{where}: error: slot `{name}`: the selector {slot.select!r} is not one the "
                f"rewriter understands: {exc}\n  help: type, #id, .class, [attr], [attr=v], "
                "[attr~=v], [attr^=v], [attr$=v], [attr*=v], descendant and child combinators"
            )
        if slot.item_link:
            try:
                if re.compile(slot.item_link).groups == 0:
                    raise re.error("no group for the product id")
            except re.error as exc:
                where = _where(directory, f"[slots.{name}]")
                out.append(
                    f"{where}: error: slot `{name}`: item_link {slot.item_link!r}: {exc}\n"
                    "  help: a regular expression with a group for the id, e.g. '/p/([^/?#]+)'"
                )
    return out


def check_segment_names(names: list[str], config: Config) -> None:
    """Raise :class:`ConfigError` naming each of *names* that the serving rules do not
    define (with the closest one), or the rules' errors when they do not load."""
    directory, only = rules_directory(config.rules)
    ruleset, errors = load_rules(directory, only)
    if ruleset is None:
        raise ConfigError(
            f"the rules in {directory} have errors ({errors[0]}); run: edge check {directory}"
        )
    known = list(ruleset.segment_names)
    problems = []
    for name in names:
        if name not in ruleset.segments:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean `{close[0]}`?" if close else "one of: " + ", ".join(known)
            problems.append(f"unknown segment `{name}` in {directory}: {hint}")
    if problems:
        raise ConfigError("; ".join(problems))


def request_info(ruleset: RuleSet, url: str | None, user_agent: str = "") -> RequestInfo:
    if not url:
        return RequestInfo()
    from edge.observe import Observer, campaign_of
    from edge.request import RequestHead

    parts = urlsplit(url)
    path = parts.path or "/"
    # The same reading of the URL as the sidecar's for a request (utm fields, channel).
    head = RequestHead("GET", path, query=parts.query.encode("latin-1", "replace"))
    utm, channel = campaign_of(Observer().touch(head, int(time.time())))
    return RequestInfo(
        path=path,
        page_type=ruleset.pages.type_of(path),
        utm=utm,
        channel=channel,
        device=device_of(user_agent) if user_agent else "",
    )


async def _shop(config: Config, store: Any) -> ShopStats:
    from edge.profiles.stats import average_order_value

    if config.avg_order_value is not None:
        return ShopStats(avg_order_value=config.avg_order_value)
    return ShopStats(avg_order_value=await average_order_value(store))


async def _load_profile(config: Config, visitor: str) -> tuple[Profile | None, ShopStats]:
    from edge.identity import Identity
    from edge.profiles.backends import open_store
    from edge.profiles.service import ProfileService

    store = open_store(config.store)
    try:
        service = ProfileService(store, Identity([config.secret or "unused"]).email_hash)
        profile = await service.load(visitor)
        return profile, await _shop(config, store)
    finally:
        await store.close()


def explain(
    directory: Path,
    config: Config,
    visitor: str | None,
    profile_file: str | None,
    url: str | None,
    user_agent: str,
) -> int:
    ruleset, errors = load_rules(directory)
    if ruleset is None:
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    if profile_file:
        try:
            raw = msgspec.json.decode(Path(profile_file).read_bytes())
            if isinstance(raw, dict) and "profile" in raw:
                raw = raw["profile"]  # what GET /_edge/profile returns
            profile: Profile | None = msgspec.convert(raw, Profile, strict=False)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            print(f"edge explain: {profile_file}: {exc}", file=sys.stderr)
            return 2
        shop = ShopStats(avg_order_value=config.avg_order_value)
    else:
        assert visitor is not None
        profile, shop = asyncio.run(_load_profile(config, visitor))
        if profile is None:
            print(f"edge explain: no profile for {visitor} in {config.store}", file=sys.stderr)
            return 1
    request = request_info(ruleset, url, user_agent)
    now = time.time()
    explained = ruleset.explain(ruleset.context(profile, request, now, shop))
    result = ruleset.evaluate(ruleset.context(profile, request, now, shop))
    member = set(ruleset.names(result))
    for name in ruleset.segment_names:
        rule = ruleset.segments[name]
        mark = "yes" if name in member else "no "
        print(f"{mark}  {name}  {rule.label}".rstrip())
        if name in explained:
            for line in explained[name].lines(indent=3):
                print(line)
    eligible = ruleset.eligible(ruleset.context(profile, request, now, shop), result)
    for line in _placement_lines(ruleset, eligible, request.page_type if url else None):
        print(line)
    for line in _journey_lines(ruleset, profile):
        print(line)
    return 0


def _journey_lines(ruleset: RuleSet, profile: Profile) -> list[str]:
    """Where the visitor stands in each scenario (the stored journeys)."""
    if not ruleset.scenarios:
        return []
    out = ["scenarios:" + ("" if profile.consent else " none (no marketing consent)")]
    for sid, scenario in ruleset.scenarios.items():
        journey = profile.journeys.get(sid) if profile.consent else None
        if journey is None:
            state = "not started"
        elif journey.done:
            state = f"done (trigger {_when(journey.trigger)})"
        else:
            step = scenario.steps[min(journey.step, len(scenario.steps) - 1)]
            state = (
                f"step {journey.step + 1} of {len(scenario.steps)} ({step.name}) due "
                f"{_when(journey.due)} (trigger {_when(journey.trigger)})"
            )
        out.append(f"   {sid}  {state}")
    return out


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _placement_lines(ruleset: RuleSet, eligible: list[Any], page_type: str | None) -> list[str]:
    """The placements that hold, split by their slot's ``pages`` when the page is known
    (``--url``): those that apply on it, and those whose slot is not on it."""
    if not eligible:
        return []
    here: list[str] = []
    elsewhere: list[str] = []
    for placement in eligible:
        spec = placement.spec
        what = spec.snippet or f"sort {spec.sort_keys}"
        if spec.variants:  # A/B/n: each variant's name and what it shows
            what = ", ".join(
                f"{v.name}: {v.snippet or f'sort {v.sort_keys}'}" for v in spec.variants
            )
        line = f"  {placement.spec.slot}: {placement.id} -> {what}"
        slot = ruleset.slots.get(placement.spec.slot)
        pages = list(slot.pages) if slot is not None else []
        if page_type is None:
            here.append(line + (f"  (pages: {', '.join(pages)})" if pages else ""))
        elif pages and page_type not in pages:
            elsewhere.append(
                f"{line}  (slot `{placement.spec.slot}` is only on: {', '.join(pages)})"
            )
        else:
            here.append(line)
    caveat = "highest priority first; caps and holdouts apply at request time"
    if page_type is None:
        return ["", f"placements that hold ({caveat}; give --url for one page):", *here]
    page = f"`{page_type}` page" if page_type else "page of no known type"
    out = ["", f"placements that apply on this {page} ({caveat}):", *(here or ["  none"])]
    if elsewhere:
        out += ["", "placements that hold but not on this page (their slot's `pages`):", *elsewhere]
    return out


async def _count(
    config: Config, ruleset: RuleSet, snapshot: bool
) -> tuple[SegmentCounts, ShopStats]:
    """The counting the sidecar's daily snapshot does (edge/snapshots.py); with
    *snapshot*, kept as today's."""
    from edge.profiles.backends import open_store

    store = open_store(config.store)
    try:
        shop = await _shop(config, store)
        if snapshot:
            day, counts = await take_snapshot(store, ruleset, shop)
            print(f"snapshot for {day} (UTC) kept in {config.store}\n")
        else:
            counts = await count_segments(store, ruleset, shop)
        return counts, shop
    finally:
        await store.close()


def segments(directory: Path, config: Config, snapshot: bool = False) -> int:
    ruleset, errors = load_rules(directory)
    if ruleset is None:
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    result, shop = asyncio.run(_count(config, ruleset, snapshot))
    counts = result.counts
    total = result.total
    width = max((len(n) for n in counts), default=10)
    print(
        f"{total:,} stored profiles ({config.store}); shop average order "
        f"{shop.avg_order_value if shop.avg_order_value is not None else 'unknown'}\n"
    )
    print(f"{'segment':<{width}}  {'members':>8}  {'share':>6}  label")
    for name, n in counts.items():
        share = f"{100 * n / total:5.1f}%" if total else "    -"
        print(f"{name:<{width}}  {n:>8,}  {share:>6}  {ruleset.segments[name].label}")
    request_based = {n for n, s in ruleset.segments.items() if _REQUEST_FIELDS.search(s.when)}
    nobody = [n for n, c in counts.items() if c == 0 and n not in request_based]
    everybody = [n for n, c in counts.items() if total and c == total]
    if request_based:
        print(
            f"\ndepend on the request (campaign, device, location), counted without one: "
            f"{', '.join(sorted(request_based))}"
        )
    if nobody:
        print(
            f"\nnobody is in: {', '.join(nobody)} -- a rule that never matches is almost "
            "always a mistake"
        )
    if everybody:
        print(f"\neverybody is in: {', '.join(everybody)} -- is the condition too loose?")
    return 0

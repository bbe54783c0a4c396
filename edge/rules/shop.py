"""``[shop]``: the shop's money, language and time, checked when the rules load.

```toml
[shop]
currency = "EUR"                 # ISO 4217
locale = "it_IT"                 # how numbers and dates are written (Babel/CLDR)
timezone = "Europe/Rome"         # IANA; calendar conditions and dates in rules use it
languages = ["it", "en"]         # the page languages; the first is the default
language_path = "/{lang}/*"      # where the URL says the language (a pattern or a list)
links = { account = "/accounts/" }  # the shop's own URLs, for snippets (`links.account`)
```

``links``: the snippets' ``links`` (:func:`shop_links`) are each page type's first
literal pattern (``cart = "/basket/"``: ``links.cart``), ``home`` ``/`` by default;
``links`` here adds names or replaces those (a path or an ``http(s)://`` URL).

Every key is optional. One file of the rule set has ``[shop]``; a second one is an
error. :class:`Shop` is the checked result the request path reads (``ruleset.shop``).
Pure logic, no I/O beyond Babel's and zoneinfo's own data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import babel
import babel.numbers
import msgspec

from edge.pages import PatternError, compile_pattern
from edge.rules.errors import Locator, RuleError
from edge.rules.lang import Binary, Call, ListLit, Literal, Node, Unary

__all__ = [
    "DEFAULT_SHOP",
    "LINK_NAMES",
    "Shop",
    "ShopSpec",
    "localize_dates",
    "parse_shop",
    "shift_wall_time",
    "shop_links",
]

_COMMON_CURRENCIES: Final = ("EUR", "USD", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "PLN")
_TAG: Final = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$")
_LINK_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_LINK: Final = re.compile(r"^(?:/|https?://[^/\s]+(?:/|$))[^\s{}*<>\"']*$")
LINK_NAMES: Final = ("home", "category", "product", "search", "cart", "checkout", "account")
"""Names always in the snippets' ``links`` (None when the shop's are not known), so a
snippet may guard with ``{% if links.account %}``."""


class ShopSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[shop]`` as written."""

    currency: str = "EUR"
    """ISO 4217 code of the prices the shop shows."""
    locale: str = ""
    """``it_IT``, ``en_US``...: the shop's own formats; empty: the page language's."""
    timezone: str = "UTC"
    """IANA zone; ``hour``, ``weekday``, dates in conditions and placements' ``start``
    and ``end`` written without an offset are the shop's wall-clock time."""
    languages: list[str] = msgspec.field(default_factory=list)
    """The page languages, the first the default; empty: ``edge.toml``'s ``languages``."""
    language_path: str | list[str] = msgspec.field(default_factory=list)
    """Patterns with ``{lang}`` (``/{lang}/*``): the URL tells the page's language."""
    links: dict[str, str] = msgspec.field(default_factory=dict)
    """Name -> the shop's URL for it (``account = "/accounts/"``), for snippets; over
    the page types' literal patterns."""


@dataclass(frozen=True, slots=True, eq=False)
class Shop:
    """The checked ``[shop]`` settings. Hashed by identity (a rule set's one instance
    is a cache key on the request path: the snippets' formats by language)."""

    currency: str = "EUR"
    locale: str = ""
    zone: dt.tzinfo = dt.UTC
    languages: tuple[str, ...] = ()
    language_paths: tuple[re.Pattern[str], ...] = field(default=())
    where: str = ""
    """``file:line`` of the table, for "defined twice"."""
    links: Mapping[str, str | None] = field(default_factory=dict)
    """``[shop] links`` as written; once the rule set is compiled (:func:`shop_links`),
    every link a snippet sees (read-only)."""

    def path_language(self, path: str) -> str:
        """The language the URL names (``/it/c/borse`` -> ``it``), or ``""``."""
        for pattern in self.language_paths:
            match = pattern.fullmatch(path)
            if match is not None:
                tag = match.group("lang").lower().replace("_", "-")
                return tag if tag in self.languages else tag.split("-")[0]
        return ""


DEFAULT_SHOP: Final = Shop()


@lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    return frozenset(babel.numbers.list_currencies())


@lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


@lru_cache(maxsize=1)
def _locales() -> tuple[str, ...]:
    from babel.localedata import locale_identifiers

    return tuple(locale_identifiers())


def _suggest(value: str, known: Sequence[str], example: str) -> str:
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close]
    return f"did you mean `{close[0]}`?" if close else example


def parse_shop(
    loc: Locator, data: dict[str, Any], errors: list[RuleError], found: list[Shop]
) -> None:
    """Check ``[shop]`` of one file; the result is appended to *found*."""
    raw = data.get("shop")
    if raw is None:
        return
    header = loc.table("shop") or 1

    def err(key: str, message: str, help: str = "", length: int = 0) -> None:
        key, _, inner = key.partition(".")  # `links.cart`: the name in the inline table
        line, col = loc.key(header, key) if key else (header, 1)
        if inner:
            found = re.compile(rf"[\s{{,](?P<n>\"?{re.escape(inner)}\"?)\s*=")
            at = found.search(loc.lines[line - 1], col) if line <= len(loc.lines) else None
            if at is not None:
                col, key = at.start("n") + 1, at.group("n")
        errors.append(loc.error(line, col, message, length or len(key) or 1, help))

    if not isinstance(raw, dict):
        err("", "`shop` must be a table", "write [shop] and its keys under it")
        return
    bad = len(errors)
    fields = ShopSpec.__struct_fields__
    for key in raw:
        if key not in fields:
            known = "known keys: " + ", ".join(fields)
            err(key, f"unknown key `{key}` in [shop]", _suggest(key, fields, known))
    try:
        spec = msgspec.convert({k: v for k, v in raw.items() if k in fields}, ShopSpec)
    except msgspec.ValidationError as e:
        at = re.search(r" - at `\$\.([A-Za-z_]+)", str(e))
        key = at.group(1) if at else ""
        err(key, f"[shop] `{key}`: " + re.sub(r" - at `[^`]*`", "", str(e)).lower())
        return
    checked = _checked(spec, err)
    if checked is not None and len(errors) == bad:
        found.append(dataclasses.replace(checked, where=f"{loc.file}:{header}"))


_Err = Callable[..., None]
"""Places an error at a key of the table: ``err(key, message, help)``."""


def _checked(spec: ShopSpec, err: _Err) -> Shop | None:
    """The settings of a decoded ``[shop]``, each checked (None: errors placed)."""
    if spec.currency not in _currencies():
        wanted = spec.currency.upper()
        common = difflib.get_close_matches(wanted, _COMMON_CURRENCIES, n=1, cutoff=0.6)
        err(
            "currency",
            f"unknown currency `{spec.currency}`",
            f"did you mean `{common[0]}`?"
            if common
            else _suggest(wanted, sorted(_currencies()), 'an ISO 4217 code, e.g. "EUR", "USD"'),
        )
    if spec.locale:
        try:
            babel.Locale.parse(spec.locale)
        except (ValueError, babel.UnknownLocaleError):
            err(
                "locale",
                f"unknown locale `{spec.locale}`",
                _suggest(
                    spec.locale.replace("-", "_"), _locales(), 'e.g. "it_IT", "en_US", "en_GB"'
                ),
            )
    zone: dt.tzinfo = dt.UTC
    try:
        zone = ZoneInfo(spec.timezone) if spec.timezone != "UTC" else dt.UTC
    except (ZoneInfoNotFoundError, ValueError):
        err(
            "timezone",
            f"unknown time zone `{spec.timezone}`",
            _suggest(
                spec.timezone, _zones(), 'an IANA zone, e.g. "Europe/Rome", "America/New_York"'
            ),
        )
    languages = [tag.lower().replace("_", "-") for tag in spec.languages]
    for tag in languages:
        if not _TAG.match(tag):
            err("languages", f"`{tag}` is not a language tag", 'e.g. languages = ["it", "en"]')
    if len(set(languages)) != len(languages):
        err("languages", "a language is listed twice")
    for name, link in spec.links.items():
        if not _LINK_NAME.match(name):
            err("links", f"`{name}` is not a name for a link", "letters, digits, `_` and `-`")
        elif not isinstance(link, str) or not _LINK.match(link):
            err(
                f"links.{name}",
                f"link `{name}`: `{link}` is not a path or an http(s) URL",
                'a path from the site\'s root or a whole URL, no placeholders: "/basket/"',
            )
    compiled = _language_paths(spec, err)
    if compiled and not languages:
        err(
            "language_path",
            "`language_path` needs `languages`",
            'add e.g. languages = ["it", "en"]',
        )
    return Shop(
        currency=spec.currency,
        locale=spec.locale,
        zone=zone,
        languages=tuple(languages),
        language_paths=tuple(compiled),
        links=dict(spec.links),
    )


def shop_links(shop: Shop, page_types: Mapping[str, Sequence[str]]) -> Shop:
    """*shop* with every link a snippet sees: each page type's first literal pattern
    (no ``{name}``, no ``*``), ``home`` ``/`` when none says otherwise, the names of
    :data:`LINK_NAMES` (None when unknown), then ``[shop] links``."""
    links: dict[str, str | None] = dict.fromkeys(LINK_NAMES)
    links["home"] = "/"
    for name, patterns in page_types.items():
        literal = next((p for p in patterns if "{" not in p and "*" not in p), None)
        if literal is not None:
            links[name] = literal
        else:
            links.setdefault(name, None)
    links.update(shop.links)
    return dataclasses.replace(shop, links=links)


def _language_paths(spec: ShopSpec, err: _Err) -> list[re.Pattern[str]]:
    paths = [spec.language_path] if isinstance(spec.language_path, str) else spec.language_path
    compiled = []
    for pattern in paths:
        try:
            regex = compile_pattern(pattern)
        except PatternError as e:
            err("language_path", str(e), 'e.g. "/{lang}/*"')
            continue
        if "lang" not in regex.groupindex:
            err(
                "language_path",
                f"pattern `{pattern}` has no `{{lang}}`",
                'the segment that names the language, e.g. "/{lang}/*"',
            )
            continue
        compiled.append(regex)
    return compiled


def shift_wall_time(stamp: float, zone: dt.tzinfo) -> float:
    """*stamp* read as UTC wall-clock time (how the rule language parses a date
    without an offset), as that same wall-clock time in *zone*."""
    if zone is dt.UTC:
        return stamp
    wall = dt.datetime.fromtimestamp(stamp, dt.UTC).replace(tzinfo=zone)
    return wall.timestamp()


def localize_dates(node: Node, zone: dt.tzinfo) -> Node:
    """The dates of a parsed condition written without an offset (``2026-12-01``,
    ``date("2026-12-01T10:00")``), moved from UTC to the shop's wall-clock time in
    *zone*. Changes the tree in place (it is the rule's own, just parsed)."""
    if zone is dt.UTC:
        return node
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Literal):
            if n.type == "date":
                n.value = shift_wall_time(float(n.value), zone)  # type: ignore[arg-type]
                n.key = ("date", n.value)
        elif isinstance(n, Call):
            if n.name == "date" and n.args and isinstance(n.args[0], Literal):
                _localize_call(n, n.args[0], zone)
            else:
                stack.extend(n.args)
        elif isinstance(n, Binary):
            stack += (n.left, n.right)
        elif isinstance(n, Unary):
            stack.append(n.operand)
        elif isinstance(n, ListLit):
            stack.extend(n.items)
    return node


def _localize_call(call: Call, arg: Literal, zone: dt.tzinfo) -> None:
    try:
        written = dt.datetime.fromisoformat(str(arg.value))
    except ValueError:
        return  # the checker reports it
    if written.tzinfo is not None:
        return  # an explicit offset is kept
    arg.value = written.replace(tzinfo=zone).isoformat()
    arg.key = (arg.type, arg.value)
    call.key = ("(", call.name, arg.key)

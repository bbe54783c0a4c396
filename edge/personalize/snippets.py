"""The merchant's snippets: Jinja2 blocks rendered into the page's slots.

Templates are merchant files, so they run in Jinja2's immutable sandbox: no access
to ``__class__``, ``__globals__`` or other Python internals, no mutating the context.
They are autoescaped (a visitor's city containing ``<script>`` is printed as text)
and use ``StrictUndefined``, so a misspelt variable is an error rather than an empty
string; an error never reaches the page: :meth:`Snippets.render` logs it (file and
line) and returns ``None``, and the caller leaves the slot as the shop rendered it.

Where snippets come from: the merchant's directory (``--snippets DIR``, default
``./snippets``), then the library shipped with shop-edge (the repository's
``snippets/``, copied into the package when it is built: :mod:`edge.shipped`). A
merchant file with the same name as a library one replaces it.

Templates are compiled once and cached; files are checked for changes at most every
``reload_interval`` seconds, so an edited snippet is live a second later without a
restart. Language variants sit beside the base file: ``hero_vip.it.html`` is chosen
for a request whose ``Accept-Language`` prefers Italian, ``hero_vip.html`` otherwise.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import babel
import jinja2
import jinja2.meta
import msgspec
from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_currency
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge.caches import LRU, Expiring
from edge.headers import weighted
from edge.personalize.catalog import Catalog, ItemFacts
from edge.personalize.offers import OfferState
from edge.personalize.profiling import Question
from edge.profiles.model import Profile
from edge.rules.shop import DEFAULT_SHOP, Shop, shop_links
from edge.shipped import SNIPPETS

__all__ = [
    "DEFAULT_DIRECTORY",
    "LIBRARY",
    "PROFILE_FORM_ACTION",
    "Formats",
    "SnippetProblem",
    "Snippets",
    "accept_languages",
    "choose_language",
    "first_name",
    "formats_for",
    "sample_context",
    "visitor_context",
]

log = logging.getLogger("edge.snippets")

LIBRARY: Final = SNIPPETS
"""The snippets shipped with shop-edge (``snippets/``, see :mod:`edge.shipped`)."""
DEFAULT_DIRECTORY: Final = Path("snippets")
PROFILE_FORM_ACTION: Final = "/_edge/profile-form"

_LOG_EVERY: Final = 60.0
"""The same failure is logged at most once a minute, however many pages hit it."""


# --- Accept-Language ---------------------------------------------------------------

_LANG = re.compile(r"^[a-z]{1,8}(?:-[a-z0-9]{1,8})*$")


def accept_languages(header: str | None) -> list[str]:
    """Language tags by preference (q-values, then header order), lowercased; each
    regional tag is followed later by its primary language (``it-ch`` then ``it``)
    unless listed. ``*`` and ``q=0`` entries are dropped."""
    ranked: list[tuple[float, int, str]] = []
    for n, (tag, q) in enumerate(weighted(header)):
        tag = tag.replace("_", "-")
        if tag == "*" or not _LANG.match(tag):
            continue
        if q is not None and q > 0:  # (a malformed weight: the tag is left out)
            ranked.append((-q, n, tag))
    ranked.sort()
    tags = [tag for _, _, tag in ranked]
    result: list[str] = []
    for tag in tags:
        if tag not in result:
            result.append(tag)
    for tag in tags:
        primary = tag.split("-")[0]
        if primary not in result:
            result.append(primary)
    return result


def choose_language(
    accept_language: str | None, available: Sequence[str] = ("en", "it"), default: str = "en"
) -> str:
    """The visitor's preferred language among the shop's *available* ones. Pass it to
    :func:`visitor_context` so the snippet variant, prices and question texts agree."""
    for tag in accept_languages(accept_language):
        if tag in available:
            return tag
    return default


# --- the library -------------------------------------------------------------------


@dataclass(frozen=True)
class SnippetProblem:
    """A snippet that cannot be used: ``file:line: error: message``, the line of the
    template under it, and what to do."""

    file: str
    line: int | None
    message: str
    text: str = ""
    """The template's line, shown under the message."""
    help: str = ""

    def brief(self) -> str:
        """One line, for the log."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        out = [f"{where}: error: {self.message}"]
        if self.text.strip():
            out.append("    " + self.text.strip())
        if self.help:
            out.append(f"  help: {self.help}")
        return "\n".join(out)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r for snippets; using UTC", name)
        return UTC


# --- money and dates, by Babel ---------------------------------------------------------


class Formats(NamedTuple):
    """How a page writes money and time: the Babel locale (the page language, in the
    shop's region), the shop's currency and its time zone. In the render context as
    ``formats``; the filters below read it."""

    locale: str
    currency: str
    zone: tzinfo


@functools.lru_cache(maxsize=256)
def formats_for(language: str, shop: Shop = DEFAULT_SHOP) -> Formats:
    """The formats of a page in *language* of *shop*: its ``[shop] locale`` when the
    page is in that locale's language; else the page language in the shop's region
    (``en`` on an ``it_IT`` shop: ``en_IT``, Italian digits, English words) when CLDR
    has it; else the page language alone."""
    primary = (language or "en").split("-")[0].lower()
    chosen = "en"
    candidates = []
    if shop.locale:
        own = babel.Locale.parse(shop.locale)
        if own.language == primary:
            candidates.append(shop.locale)
        elif own.territory:
            candidates.append(f"{primary}_{own.territory}")
    candidates += [language.replace("-", "_"), primary]
    for candidate in candidates:
        try:
            babel.Locale.parse(candidate)
        except (ValueError, babel.UnknownLocaleError):
            continue
        chosen = candidate
        break
    return Formats(chosen, shop.currency, shop.zone)


def _formats(ctx: Any) -> Formats:
    found = ctx.get("formats")
    if isinstance(found, Formats):
        return found
    return formats_for(str(ctx.get("language") or "en"))


def _moment(value: Any, zone: tzinfo) -> datetime | None:
    """A unix time, an ISO text or a datetime, in *zone* (a naive one is taken as UTC)."""
    try:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value)
        else:
            moment = datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone)


@jinja2.pass_context
def _money(ctx: Any, value: Any, currency: str | None = None) -> str:
    """``{{ price|money }}``: ``89,90 €`` (it_IT, EUR), ``$89.90`` (en_US, USD),
    ``￥8,990`` (ja_JP, JPY: no decimals); another currency: ``price|money("USD")``."""
    f = _formats(ctx)
    try:
        amount = Decimal(str(value))
        return format_currency(amount, currency or f.currency, locale=f.locale)
    except (ArithmeticError, TypeError, ValueError, babel.UnknownLocaleError):
        return ""


def _dated(kind: str) -> Any:
    @jinja2.pass_context
    def fmt(ctx: Any, value: Any, format: str = "medium") -> str:
        f = _formats(ctx)
        moment = _moment(value, f.zone)
        if moment is None:
            return ""
        try:
            if kind == "date":
                return format_date(moment, format, locale=f.locale)
            if kind == "time":
                return format_time(moment, format, tzinfo=f.zone, locale=f.locale)
            return format_datetime(moment, format, tzinfo=f.zone, locale=f.locale)
        except (ValueError, KeyError, AttributeError):
            return ""

    fmt.__doc__ = (
        f"``{{{{ deadline|{kind} }}}}``: the time on the shop's clock, written the page "
        'locale\'s way; ``short``, ``medium`` (default), ``long``, ``full`` or a CLDR pattern ("HH:mm").'
    )
    return fmt


class Snippets:
    """Snippet templates by name, from *directory* then the shipped library."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        library: str | Path | None = LIBRARY,
        reload_interval: float = 1.0,
        timezone: str = "UTC",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        self.library = Path(library) if library is not None else None
        self.search_path = [self.directory] + ([self.library] if self.library else [])
        self.timezone = _zone(timezone)
        self._clock = clock
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(p) for p in self.search_path]),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=True,
            cache_size=1000,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["money"] = _money
        self.env.filters["datetime"] = _dated("datetime")
        self.env.filters["date"] = _dated("date")
        self.env.filters["time"] = _dated("time")
        self.env.filters["clock"] = self._clock_time
        self._rendered: LRU[Any, str] = LRU(4096)
        self._links: tuple[Any, bytes] | None = None
        """The last ``links`` seen, and its encoding for the render cache's keys."""
        self._uses: weakref.WeakKeyDictionary[jinja2.Template, tuple[str, ...] | None] = (
            weakref.WeakKeyDictionary()
        )
        self._chosen: Expiring[tuple[str, tuple[str, ...]], Any] = Expiring(
            2048, reload_interval, timer=clock
        )
        self._logged: Expiring[str, bool] = Expiring(1000, _LOG_EVERY, timer=clock)

    @jinja2.pass_context
    def _clock_time(self, ctx: Any, epoch: Any, fmt: str = "%d/%m %H:%M") -> str:
        """A unix time on the shop's clock, by a strftime pattern (``{{ t|clock }}``:
        kept for older snippets; ``datetime`` writes it the page locale's way)."""
        found = ctx.get("formats")
        zone = found.zone if isinstance(found, Formats) else self.timezone
        try:
            return datetime.fromtimestamp(int(epoch), zone).strftime(fmt)
        except (TypeError, ValueError, OverflowError, OSError):
            return ""

    # --- lookup ---

    @staticmethod
    def _base(name: str) -> str:
        return name if name.endswith(".html") else name + ".html"

    def template(self, name: str, languages: Sequence[str] = ()) -> jinja2.Template | None:
        """The template for *name* in the first of *languages* that has a variant, else
        the base file; ``None`` (logged) if there is none or it does not compile."""
        key = (name, tuple(languages))
        try:
            return self._chosen[key]
        except KeyError:
            pass
        chosen = self._choose(name, languages)
        self._chosen[key] = chosen
        return chosen

    def _choose(self, name: str, languages: Sequence[str]) -> jinja2.Template | None:
        base = self._base(name)
        stem = base[: -len(".html")]
        for candidate in [f"{stem}.{lang}.html" for lang in languages] + [base]:
            try:
                return self.env.get_template(candidate)
            except jinja2.TemplateNotFound:
                continue
            except jinja2.TemplateSyntaxError as exc:
                self._log(_problem(exc, candidate).brief())
                return None
            except Exception as exc:  # an unreadable file, say
                self._log(f"{candidate}: cannot load: {exc}")
                return None
        self._log(f"{base}: no such snippet in {', '.join(map(str, self.search_path))}")
        return None

    def render(
        self,
        name: str,
        context: Mapping[str, Any],
        *,
        languages: Sequence[str] | None = None,
        accept_language: str | None = None,
    ) -> str | None:
        """The snippet rendered with *context*, or ``None`` if it cannot be (the
        failure is logged with file and line; the caller keeps the slot unchanged).
        The language variant follows *languages*, else *accept_language*, else the
        context's ``language``."""
        if languages is None:
            languages = accept_languages(accept_language) if accept_language else []
            if not languages and context.get("language"):
                languages = [str(context["language"])]
        template = self.template(name, languages)
        if template is None:
            return None
        key = self._render_key(template, context)
        if key is not None:
            done = self._rendered.get(key)
            if done is not None:
                return done
        try:
            html = template.render(context)
        except Exception as exc:
            self._log(_runtime_problem(exc, template).brief())
            return None
        if key is not None:
            self._rendered[key] = html
        return html

    def _render_key(self, template: jinja2.Template, context: Mapping[str, Any]) -> Any:
        """Rendering is pure, so the output is cached by the template and the values
        of the variables it reads: every VIP gets the same hero from one render,
        while a cart reminder differs by cart. ``None``: do not cache (a template
        that includes others, or uses ``random``)."""
        names = self.reads(template)
        if names is None:
            return None
        try:
            # The filters read the language and the formats whether or not a
            # template names them. The links are the rule set's one mapping: encoded
            # once while it serves, not on every render.
            values = [context.get(n) for n in names if n != "formats" and n != "links"]
            formats = context.get("formats"), context.get("language")
            links = self._links_key(context.get("links")) if "links" in names else b""
            return template, formats, links, _KEY_ENCODER.encode(values)
        except (TypeError, ValueError):
            return None

    def reads(self, template: jinja2.Template) -> tuple[str, ...] | None:
        """The context names *template* reads (sorted), or ``None`` when its output may
        depend on more than its context's values (it includes others, or uses
        ``random``): what a render cache may key it by."""
        names = self._uses.get(template, False)
        if names is False:
            names = self._uses[template] = self._variables(template)
        return names

    def _links_key(self, links: Any) -> bytes:
        last = self._links
        if last is None or last[0] is not links:
            last = self._links = (links, _KEY_ENCODER.encode(links))
        return last[1]

    def _variables(self, template: jinja2.Template) -> tuple[str, ...] | None:
        try:
            source = self.env.loader.get_source(self.env, template.name)[0]  # type: ignore[union-attr]
            if any(word in source for word in ("include", "import", "extends", "random")):
                return None
            return tuple(sorted(jinja2.meta.find_undeclared_variables(self.env.parse(source))))
        except Exception:  # whatever it is, rendering says it properly
            return None

    def _log(self, message: str) -> None:
        if message not in self._logged:
            self._logged[message] = True
            log.warning("snippet left out: %s", message)

    # --- checking ---

    def names(self) -> list[str]:
        """Every snippet file name (variants included), merchant's and library's."""
        return sorted({n for n in self.env.list_templates() if n.endswith(".html")})

    def check(self, context: Mapping[str, Any] | None = None) -> list[SnippetProblem]:
        """Every problem in every snippet: syntax errors (file, line), and errors from
        rendering with *context* (default: :func:`sample_context`, every variable
        filled in), such as a misspelt variable name."""
        context = sample_context() if context is None else context
        problems: list[SnippetProblem] = []
        if not self.directory.is_dir() and self.directory != DEFAULT_DIRECTORY:
            problems.append(SnippetProblem(str(self.directory), None, "no such directory"))
        try:
            names = self.names()
        except OSError as exc:
            return [*problems, SnippetProblem(str(self.directory), None, str(exc))]
        for name in names:
            try:
                template = self.env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(_problem(exc, name))
                continue
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(SnippetProblem(name, None, f"cannot read: {exc}"))
                continue
            try:
                template.render(context)
            except Exception as exc:
                problems.append(_runtime_problem(exc, template))
        return problems


def _key_default(value: Any) -> Any:
    if isinstance(value, SimpleNamespace):
        return vars(value)
    raise TypeError(f"not a plain value: {type(value).__name__}")


_KEY_ENCODER: Final = msgspec.json.Encoder(enc_hook=_key_default, order="deterministic")


def _problem(exc: jinja2.TemplateSyntaxError, name: str) -> SnippetProblem:
    lines = (exc.source or "").splitlines()
    text = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else ""
    return SnippetProblem(
        exc.filename or name,
        exc.lineno,
        f"template syntax: {exc.message or exc}",
        text,
        "snippets are Jinja2 templates: {{ value }}, {% if test %}...{% endif %}, "
        "{% for x in list %}...{% endfor %}",
    )


def _runtime_problem(exc: BaseException, template: jinja2.Template) -> SnippetProblem:
    filename = template.filename or template.name or "snippet"
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno  # Jinja maps template frames to template lines
    message = (
        str(exc)
        if not isinstance(exc, jinja2.UndefinedError)
        else (
            f"{exc} (every variable a snippet uses must exist: guard optional ones with "
            "{% if name %})"
        )
    )
    if isinstance(exc, jinja2.exceptions.SecurityError):
        message = f"not allowed in a snippet: {exc}"
    return SnippetProblem(filename, line, f"{type(exc).__name__}: {message}")


# --- the render context --------------------------------------------------------------


def first_name(profile: Profile) -> str:
    """The visitor's first name as the shop's traits give it, else empty."""
    # Traits has no first_name field yet: read it from the shop's custom traits.
    custom = profile.traits.custom
    for key in ("first_name", "firstName", "firstname"):
        value = custom.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    name = custom.get("name")
    if isinstance(name, str) and name.strip():
        return name.split()[0]
    return ""


@functools.lru_cache(maxsize=8)
def _default_links(shop: Shop) -> Mapping[str, str | None]:
    """The links of a shop no rule set compiled (its ``links`` are ``[shop]``'s own):
    what :func:`edge.rules.shop.shop_links` gives with no page map."""
    return shop_links(shop, {}).links


def site_link(url: str) -> str:
    """A product's URL as a link on the page: a whole URL's path and query (the
    visitor stays on the host they browse, the sidecar in front of the shop)."""
    if not url.startswith(("http://", "https://")):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def offer_view(offer: OfferState) -> dict[str, Any]:
    """A timed offer as a snippet sees it: ``deadline`` (unix time), ``deadline_iso``,
    ``seconds_left``."""
    return {
        "deadline": offer.deadline,
        "deadline_iso": offer.deadline_iso,
        "seconds_left": offer.seconds_left,
    }


def visitor_context(
    profile: Profile | None,
    *,
    now: int,
    language: str = "en",
    catalog: Catalog | None = None,
    segments: Iterable[str] = (),
    page: Mapping[str, Any] | None = None,
    offer: OfferState | None = None,
    question: Question | None = None,
    form_error: str = "",
    csrf: str = "",
    return_to: str = "/",
    preview: bool = False,
    shop: Shop = DEFAULT_SHOP,
) -> dict[str, Any]:
    """What a snippet can use. Only plain values (str, numbers, lists, dicts and the
    ``cart`` namespace), so a template sees data, never the profile's objects. Every key is always present (``None``
    or empty when unknown), so snippets guard with ``{% if offer %}``:

    ``first_name``, ``known`` (a customer the shop identified), ``language``,
    ``cart`` (``items`` [{id, name, url, price, quantity, total, category, brand}],
    ``value``, ``count``), ``offer`` (``deadline`` unix time, ``deadline_iso``,
    ``seconds_left``), ``question`` (the next profiling question: ``trait``, ``text``,
    ``kind``, ``options`` [{value, label}], ``min``, ``max``, ``max_length``),
    ``form`` (``action``, ``csrf``, ``return_to``, ``error``), ``segments`` (names),
    ``page`` (what the caller passes: path, type, campaign…), ``preview``, ``now``,
    ``formats`` (``locale``, ``currency``, ``zone``: what ``money`` and ``datetime``
    write with, from ``[shop]`` and the page language), ``links`` (the shop's own URLs
    by name: ``links.cart``, ``links.home``…, from the page map and ``[shop] links``;
    None when unknown). A cart item's ``url`` is its product page's, as the feed or
    the shop's own pages taught it.
    """
    items = []
    cart_value = 0.0
    count = 0
    if profile is not None:
        for item in profile.cart.items:
            facts = catalog.get(item.product_id) if catalog is not None else None
            price = item.price or (facts.price if facts and facts.price is not None else 0.0)
            items.append(
                {
                    "id": item.product_id,
                    "name": (facts.name if facts and facts.name else item.name or item.product_id),
                    "url": site_link(facts.url) or None if facts and facts.url else None,
                    "price": price,
                    "quantity": item.quantity,
                    "total": round(price * item.quantity, 2),
                    "category": item.category or (facts.category if facts else ""),
                    "brand": item.brand or (facts.brand if facts else ""),
                }
            )
            cart_value += price * item.quantity
            count += item.quantity
    return {
        "first_name": first_name(profile) if profile is not None else "",
        "known": bool(profile and (profile.customer_id or profile.email_hash)),
        "language": language,
        # A namespace, not a dict: ``cart.items`` must be the list, not dict.items.
        "cart": SimpleNamespace(items=items, value=round(cart_value, 2), count=count),
        "offer": None if offer is None else offer_view(offer),
        "question": question.view(language) if question is not None else None,
        "form": {
            "action": PROFILE_FORM_ACTION,
            "csrf": csrf,
            "return_to": return_to,
            "error": form_error,
        },
        "segments": sorted(segments),
        "page": dict(page or {}),
        "links": shop.links if "home" in shop.links else _default_links(shop),
        "preview": preview,
        "now": now,
        "formats": formats_for(language, shop),
    }


def sample_context(language: str = "en") -> dict[str, Any]:
    """A context with every variable filled in, for :meth:`Snippets.check` and tests."""
    from edge.personalize.offers import offer_state
    from edge.personalize.profiling import default_questions
    from edge.profiles.model import Item

    profile = Profile(visitor_id="sample", customer_id="c1")
    profile.traits.custom["first_name"] = "Giulia"
    profile.cart.items = [
        Item("p1", "scarpe-donna", "Lunaria", 89.9, 1),
        Item("p2", "borse-accessori", "Valdarno", 120.0, 2),
    ]
    catalog = Catalog(
        {
            "p1": ItemFacts("p1", "scarpe-donna", "Lunaria", 89.9, "Décolleté Aurora", "/p/aurora"),
            "p2": ItemFacts("p2", "borse-accessori", "Valdarno", 120.0, "Borsa Arno", "/p/arno"),
        }
    )
    now = 1_700_000_000
    sample_links = {"account": "/account", "collection": "/c/new"}
    shop = shop_links(
        Shop(links=sample_links),
        {"cart": ["/cart"], "checkout": ["/checkout"], "search": ["/search"]},
    )
    return visitor_context(
        profile,
        now=now,
        language=language,
        catalog=catalog,
        segments=["vip", "lapsed"],
        page={"path": "/", "type": "home", "campaign": "saldi"},
        offer=offer_state({}, "sample", 86_400, now),
        question=default_questions()["gender"],
        csrf="sample-token",
        return_to="/",
        preview=True,
        shop=shop,
    )

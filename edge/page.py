"""Deciding what one page view shows: segments, then the placement for each slot.

The proxy starts the upstream request and, meanwhile, asks :meth:`Personalizer.decide`
for a :class:`Decision`: the visitor's profile (cache, then store), the request's
context (page type, campaign, language, device, geo), the compiled rules, and for
each slot the first placement by priority that holds, is within its schedule, is
under its frequency cap, is not an expired offer, and for which this visitor is not
in the holdout. A placement gives the slot a rendered snippet or a product order.
The decision is pure data; the proxy applies it with the streaming rewriter and
records the exposures after the response.

Fail open: anything that raises in here is logged and the page goes out untouched.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape as html_escape
from pathlib import Path
from typing import Any, Final

import cachetools
import msgspec

from edge.forms import FORM_PATH, csrf_token, form_error
from edge.identity import Identity, parse_cookies
from edge.observe import Observer
from edge.personalize.catalog import Catalog, ItemReader
from edge.personalize.offers import frequency_allows, offer_state
from edge.personalize.ordering import Interest, ListOrder, Sort
from edge.personalize.profiling import Question, default_questions, next_question
from edge.personalize.snippets import Snippets, choose_language, offer_view, visitor_context
from edge.preview import PREVIEW_COOKIE, Preview, read_token, strip_param
from edge.profiles import events as ev
from edge.profiles.model import Profile, Touch
from edge.profiles.service import ProfileService
from edge.rewrite import Edit
from edge.rules import LiveRules, RequestInfo, ShopStats, device_of
from edge.rules.functions import Context
from edge.rules.lang import parse_duration
from edge.visitors import Visit, Visitors

log = logging.getLogger("edge.page")

_FINGERPRINT: Final = msgspec.msgpack.Encoder()
_CSRF_KEPT: Final = 16_384

PREVIEW_SLOT: Final = "edge-preview-badge"
COUNTDOWN_SCRIPT: Final = '<script src="/_edge/static/edge.js" defer></script>'
ASSETS_SLOT: Final = "edge-assets"
"""Follows a timed offer's snippet: the sidecar's own script ticks its countdown."""


@functools.lru_cache(maxsize=256)
def _seconds(text: str) -> int:
    """A duration the rule files' checker already accepted (``90s``, ``24h``, ``1.5h``);
    a rule set has a handful, asked for on every page."""
    seconds = parse_duration(text)
    assert seconds is not None, text
    return int(seconds)


@dataclass(slots=True)
class SlotEdit:
    """What one placement does to one slot on this page."""

    placement: str
    slot: str
    edit: Edit
    offer: bool = False


@dataclass(slots=True)
class Decision:
    edits: list[SlotEdit] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    """Placements this visitor would have seen but is the control group of."""
    segments: list[str] = field(default_factory=list)
    preview: Preview | None = None
    seconds: float = 0.0
    """The sidecar's own time deciding, for Server-Timing."""
    fingerprint: str = ""
    """A digest of everything visitor-specific in the edits (for the ETag)."""
    clear_form_error: bool = False
    now: int | None = None
    """The time the decision was made: a timed offer's deadline on the page ran from it."""

    def exposures(self) -> list[ev.BaseEvent]:
        """Events recording what was shown (and withheld), for caps, offers, lift.
        Stamped with the decision's time, not the end of the response: a first exposure
        stored a second later would move the deadline the page showed."""
        out: list[ev.BaseEvent] = [
            ev.PlacementShown(placement_id=e.placement, offer=e.offer, ts=self.now)
            for e in self.edits
            if e.placement  # not the sidecar's own additions (stylesheet, preview badge)
        ]
        out += [
            ev.PlacementShown(placement_id=p, held_out=True, ts=self.now) for p in self.held_out
        ]
        return out


@functools.lru_cache(maxsize=1024)
def _with_countdown(html: str) -> str:
    """(The same string for the same snippet: see :func:`_html_digest`.)"""
    return html + COUNTDOWN_SCRIPT


@functools.lru_cache(maxsize=4096)
def _html_digest(html: str) -> bytes:
    """A rendered snippet's share of the page's fingerprint (ETag). Remembered: most
    renders come from the snippets' own cache, the very same string again."""
    return hashlib.blake2b(html.encode(), digest_size=12).digest()


def campaign_of(touch: Touch | None) -> tuple[dict[str, str], str]:
    """The request's ``utm`` fields and channel for the rules, from its touch."""
    if touch is None:
        return {}, ""
    parts = (("source", touch.source), ("medium", touch.medium), ("campaign", touch.campaign))
    return {k: v for k, v in parts if v}, touch.channel


def in_holdout(visitor_id: str, placement_id: str, share: float) -> bool:
    """Deterministic: the same visitor is always on the same side for a placement, and
    different placements split visitors independently."""
    if share <= 0.0 or not visitor_id:
        return False
    digest = hashlib.blake2b(f"{placement_id}\0{visitor_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


class Personalizer:
    def __init__(
        self,
        rules: LiveRules,
        snippets: Snippets,
        profiles: ProfileService,
        visitors: Visitors,
        identity: Identity,
        observer: Observer,
        *,
        catalog: Catalog | None = None,
        languages: Sequence[str] = ("en", "it"),
        questions: dict[str, Question] | None = None,
        shop: ShopStats | None = None,
        stylesheet: str = "/_edge/static/edge.css",
    ) -> None:
        self.rules = rules
        self.snippets = snippets
        self.profiles = profiles
        self.visitors = visitors
        self.identity = identity
        self.observer = observer
        self.catalog = catalog
        self.languages = tuple(languages)
        self.questions = questions if questions is not None else default_questions()
        self.shop = shop if shop is not None else ShopStats()
        self.stylesheet = stylesheet
        """Linked in the head of a page that shows snippets (empty: the theme styles
        them)."""
        self._readers: dict[str, ItemReader] = {}
        self._csrf: cachetools.LRUCache[str, str] = cachetools.LRUCache(_CSRF_KEPT)
        """The profiling form's token by visitor: an HMAC per page is ~5-10 µs here,
        and a visitor who is asked sees the form on page after page."""
        self._languages_by_header: dict[str, str] = {}

    @property
    def active(self) -> bool:
        ruleset = self.rules.ruleset
        return ruleset is not None and bool(ruleset.placements)

    def wants(self, scope: dict[str, Any]) -> bool:
        """Whether this request may be personalized at all (before any work)."""
        if scope["method"] != "GET" or not self.active:
            return False
        for name, value in scope["headers"]:
            if name == b"accept":
                return b"text/html" in value or b"*/*" in value
        return True

    def preview_of(self, scope: dict[str, Any]) -> tuple[Preview | None, str | None]:
        """A valid preview token from the query (which the shop must not see) or the
        preview cookie, and the token to set as the cookie when it came by URL."""
        query, token = strip_param(scope["query_string"])
        if token is not None:
            scope["query_string"] = query
            if token == "off":
                return None, ""
            preview = read_token(self.identity, token)
            return preview, token if preview is not None else None
        for name, value in scope["headers"]:
            if name == b"cookie" and PREVIEW_COOKIE.encode() in value:
                cookie = parse_cookies(value).get(PREVIEW_COOKIE)
                if cookie:
                    return read_token(self.identity, cookie), None
        return None, None

    async def decide(
        self, scope: dict[str, Any], visit: Visit | None, preview: Preview | None = None
    ) -> Decision | None:
        started = time.perf_counter()
        try:
            decision = await self._decide(scope, visit, preview)
        except Exception:
            log.exception("personalization failed; the page goes out as the shop made it")
            return None
        if decision is not None:
            decision.seconds = time.perf_counter() - started
        return decision

    async def _decide(
        self, scope: dict[str, Any], visit: Visit | None, preview: Preview | None
    ) -> Decision | None:
        ruleset = self.rules.ruleset
        if ruleset is None or (visit is not None and visit.crawler):
            return None
        now = int(time.time())
        visitor_id = visit.visitor_id if visit is not None and preview is None else None
        profile: Profile | None = None
        if visitor_id and visit is not None and not visit.new:
            profile = await self.profiles.load(visitor_id)
            if profile is None:
                # Their first page is stored only with this, their second request:
                # what it showed (the landing campaign, an offer's first exposure)
                # already counts.
                profile = self.visitors.pending_profile(visitor_id)
        headers = _headers(scope)
        request = self._request_info(scope, headers, visitor_id, now)
        ctx = Context(profile, request, now, self.shop)
        result = ruleset.evaluate(ctx)
        if preview is not None:
            names = set(preview.segments)
            segments = [n for n in ruleset.segment_names if n in names]
            eligible = [
                p
                for p in ruleset.by_priority
                if (p.spec.segment in names if p.spec.segment else result[p.output])
                and p.scheduled(now)
            ]
        else:
            segments = ruleset.names(result)
            eligible = ruleset.eligible(ctx, result)
        decision = Decision(segments=segments, preview=preview, now=now)
        if not eligible and preview is None:
            return decision
        language = request.lang
        cookies = parse_cookies(headers.get("cookie", ""))
        error_question, error_text = form_error(cookies)
        path = scope["path"]
        query = scope["query_string"].decode("latin-1")
        return_to = path + ("?" + query if query else "")
        question: Question | None = None
        asked = False  # the next profiling question is found only if a snippet needs it
        base: dict[str, Any] | None = None  # the snippets' context, made once if needed
        taken: set[str] = set()
        digest = hashlib.blake2b(digest_size=12)
        for placement in eligible:
            slot_name = placement.spec.slot
            if slot_name in taken:
                continue
            slot = ruleset.slots.get(slot_name)
            if slot is None or (slot.pages and request.page_type not in slot.pages):
                continue
            spec = placement.spec
            if spec.cap is not None and profile is not None:
                window = _seconds(spec.cap.per)
                times = profile.exposures.get(placement.id, [])
                if not frequency_allows(times, spec.cap.views, window, now):
                    continue
            offer = None
            if spec.offer_ttl:
                offers = profile.offers if profile is not None else {}
                offer = offer_state(offers, placement.id, _seconds(spec.offer_ttl), now)
                if offer.expired:
                    continue
            if preview is None and in_holdout(visitor_id or "", placement.id, spec.holdout):
                taken.add(slot_name)
                decision.held_out.append(placement.id)
                continue
            if spec.snippet:
                if not asked:
                    asked = True
                    if profile is not None or visitor_id:
                        known = profile or Profile(visitor_id=visitor_id or "")
                        question = next_question(known, self.questions)
                if spec.snippet.startswith("profile_form") and question is None:
                    continue  # nothing left to ask: the next placement may fill the slot
                if base is None:
                    base = visitor_context(
                        profile,
                        now=now,
                        language=language,
                        catalog=self.catalog,
                        segments=segments,
                        page={"path": path, "type": request.page_type, **request.utm},
                        question=question,
                        form_error=(
                            error_text if question and error_question == question.trait else ""
                        ),
                        # Only the profiling form posts it, and only with a question.
                        csrf=self._csrf_token(visitor_id)
                        if visitor_id and question is not None
                        else "",
                        return_to=return_to,
                        preview=preview is not None,
                    )
                    base["form"]["action"] = FORM_PATH
                context = base if offer is None else base | {"offer": offer_view(offer)}
                html = self.snippets.render(spec.snippet, context, languages=[language])
                if html is None:
                    continue  # logged by the library; the slot stays as the shop made it
                digest.update(_html_digest(html))
                if offer is not None:
                    html = _with_countdown(html)
                    digest.update(b"+countdown")
                if error_text and question and error_question == question.trait:
                    decision.clear_form_error = True
                action = spec.action or slot.action
                edit = Edit(slot.select, action, html)
            else:
                sorts = spec.sort_keys
                parsed = _sorts(tuple(sorts), tuple(spec.pin))
                interest = (
                    Interest.of(
                        profile, now, bought=any(s.strategy == "bought last" for s in parsed)
                    )
                    if profile is not None
                    else Interest()
                )
                fingerprint = interest.fingerprint()
                order = ListOrder(
                    self._reader(slot_name, slot), parsed, interest, fingerprint=fingerprint
                )
                edit = Edit(slot.select, "reorder", key=order.key, order=order.order)
                digest.update(_FINGERPRINT.encode((sorts, spec.pin)))
                digest.update(fingerprint)
            taken.add(slot_name)
            decision.edits.append(SlotEdit(placement.id, slot_name, edit, offer=offer is not None))
        if self.stylesheet and any(e.edit.action != "reorder" for e in decision.edits):
            link = f'<link rel="stylesheet" href="{html_escape(self.stylesheet)}">'
            decision.edits.append(SlotEdit("", ASSETS_SLOT, Edit("head", "append", link)))
        if preview is not None:
            badge = self.snippets.render(
                "preview_badge",
                visitor_context(None, now=now, language=language, segments=segments, preview=True),
                languages=[language],
            )
            if badge:
                edit = Edit("body", "prepend", badge)
                decision.edits.append(SlotEdit("", PREVIEW_SLOT, edit))
                digest.update(badge.encode())
        decision.fingerprint = digest.hexdigest()
        return decision

    def _csrf_token(self, visitor_id: str) -> str:
        token = self._csrf.get(visitor_id)
        if token is None:
            token = self._csrf[visitor_id] = csrf_token(self.identity, visitor_id)
        return token

    def _request_info(
        self, scope: dict[str, Any], headers: dict[str, str], visitor_id: str | None, now: int
    ) -> RequestInfo:
        ruleset = self.rules.ruleset
        path = scope["path"]
        page_type = ruleset.page_type(path) if ruleset is not None else ""
        if not page_type:
            page = self.observer.page(path)
            page_type = page.type if page is not None else ""
        query = scope["query_string"].decode("latin-1")
        utm, channel = campaign_of(self.observer.touch(query, headers.get("referer", ""), now))
        lat = _float(headers.get("x-geo-latitude"))
        lon = _float(headers.get("x-geo-longitude"))
        return RequestInfo(
            path=path,
            page_type=page_type,
            utm=utm,
            channel=channel,
            lang=self._language(headers.get("accept-language", "")),
            device=device_of(headers.get("user-agent", "")),
            country=(headers.get("x-geo-country") or headers.get("cf-ipcountry") or "").upper(),
            latitude=lat,
            longitude=lon,
        )

    def _language(self, accept_language: str) -> str:
        """The visitor's language among the shop's, by ``Accept-Language`` (a handful
        of distinct headers cover nearly every visitor, so the answer is kept)."""
        known = self._languages_by_header.get(accept_language)
        if known is None:
            known = choose_language(accept_language, self.languages)
            if len(self._languages_by_header) > 1024:
                self._languages_by_header.clear()
            self._languages_by_header[accept_language] = known
        return known

    def _reader(self, name: str, slot: Any) -> ItemReader:
        reader = self._readers.get(name)
        if reader is None:
            reader = ItemReader(
                id_attr=slot.item_id or "data-product-id",
                link_pattern=slot.item_link or None,
                catalog=self.catalog,
            )
            self._readers[name] = reader
        return reader


@functools.lru_cache(maxsize=256)
def _sorts(sorts: tuple[str, ...], pins: tuple[str, ...]) -> list[Sort]:
    """A placement's sorts, parsed once (the list is only read)."""
    return [Sort.parse(s, pinned=pins if s.strip().lower() == "pin" else ()) for s in sorts]


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    wanted = (
        b"accept-language",
        b"cookie",
        b"referer",
        b"user-agent",
        b"x-geo-country",
        b"cf-ipcountry",
        b"x-geo-latitude",
        b"x-geo-longitude",
    )
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in wanted:
            text = value.decode("latin-1")
            out[name.decode()] = out[name.decode()] + "; " + text if name.decode() in out else text
    return out


def _float(text: str | None) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if -180.0 <= value <= 180.0 else None


def load_catalog(path: str) -> Catalog | None:
    """The product feed named by ``catalog`` in the config, if any."""
    if not path:
        return None
    return Catalog.load(Path(path))

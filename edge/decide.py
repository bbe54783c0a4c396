"""Deciding what one page view shows: profile and context, segments, placements, edits.

:mod:`edge.respond` starts the upstream request and, meanwhile, asks
:meth:`Decider.decide` for a :class:`Decision`: the visitor's profile (cache, then
store, or the first hit not stored yet), the request's context for the rules (page
type, campaign, language, device, geo), the compiled rules' segments, the placements
chosen for this page (:mod:`edge.placements`) and the edits they make
(:mod:`edge.activities`). The decision is data; the response applies it with the
streaming rewriter (:mod:`edge.rewriting`) and records its exposures afterwards.

Fail open: anything that raises in here is logged and the page goes out untouched.
"""

from __future__ import annotations

import functools
import hashlib
import html
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from edge import metrics
from edge.activities import Activities, PageActivities
from edge.languages import PageLanguages, declared_language, pick
from edge.observe import campaign_of
from edge.pages import Page
from edge.personalize.snippets import choose_language
from edge.placements import HOLDOUT_ARM, choose, fill, unit_key
from edge.preview import Preview
from edge.profiles import events as ev
from edge.profiles.model import MAX_ARM_SEGMENTS, MAX_ID, MAX_LINKS, Profile, Touch, link_hash
from edge.profiles.service import ProfileService
from edge.profiles.store import StoreUnavailable
from edge.recorder import Recorder
from edge.request import RequestHead
from edge.rewrite.edits import Edit
from edge.rewriting import SlotEdit, filled
from edge.rules import LiveRules, PlacementRule, RequestInfo, RuleSet, ShopStats, device_of
from edge.rules.functions import Context
from edge.rules.shop import Shop
from edge.visitors import Visit

__all__ = ["Decider", "Decision"]

log = logging.getLogger("edge.decide")


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
    arms: dict[str, str] = field(default_factory=dict)
    """Placement id -> its arm (``holdout`` or the variant's name) for every placement
    shown or held out on this page."""
    browser: bool = False
    """Made for the browser (``/_edge/decide``): the snippet applies the edits."""
    measured: bool = True
    """Whether this page view counts in the report: not for a preview or a QA visitor
    (``qa_cookie``, ``qa_visitors``), who still see the placements. (A crawler gets
    no decision at all.)"""
    path: str = ""
    """The page's path (a block's link to the page it is on is no click)."""
    reported: list[str] = field(default_factory=list)
    """The visitor's segments that the report breaks placements down by
    (``report_segments``): kept with a unit's first exposure of each placement."""

    def exposures(self, shown: set[str] | None = None) -> list[ev.BaseEvent]:
        """Events recording what was shown (and withheld), for caps, offers, lift: the
        edits whose placement is in *shown* (all of them when None) and the holdouts.
        Stamped with the decision's time, not the end of the response: a first exposure
        stored a second later would move the deadline the page showed."""
        arms = self.arms
        measured = self.measured
        reported = self.reported if measured else []
        out: list[ev.BaseEvent] = [
            ev.PlacementShown(
                placement_id=e.placement,
                offer=e.offer,
                ts=self.now,
                arm=arms.get(e.placement, ""),
                measured=measured,
                links=_edit_links(e, self.path) if e.edit.html else [],
                segments=reported,
            )
            for e in self.edits
            # (not the sidecar's own additions: stylesheet, preview badge)
            if e.placement and (shown is None or e.placement in shown)
        ]
        if measured:  # a QA visitor's holdout changes nothing: no cap, no arm
            out += [
                ev.PlacementShown(
                    placement_id=p, held_out=True, ts=self.now, arm="holdout", segments=reported
                )
                for p in self.held_out
            ]
        return out


_HREF = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)


def _edit_links(edit: SlotEdit, page: str) -> list[int]:
    """:func:`_links` of the edit's content as the visitor gets it: the content with
    its placeholders (the same for every visitor, so the links are found once) unless
    a placeholder is in a link's ``href`` (then the visitor's value is)."""
    content = edit.edit.content
    if (
        edit.fill
        and isinstance(content, str)
        and any(_in_href(content, placeholder) for placeholder, _ in edit.fill)
    ):
        content = filled(content, edit.fill)
    return _links(content, page)


@functools.lru_cache(maxsize=1024)
def _in_href(content: str, placeholder: str) -> bool:
    """Whether *placeholder* is in one of *content*'s ``<a href>`` tags up to the value's
    end (where :func:`_links` reads)."""
    return any(placeholder in m.group(0) for m in _HREF.finditer(content))


@functools.lru_cache(maxsize=1024)
def _links(content: str | bytes, page: str) -> list[int]:
    """The same-site paths a rendered block links to (at most ``MAX_LINKS``, not the
    page it is on), as :func:`~edge.profiles.model.link_hash` names: a page view of
    one soon after is a click on the block. Rendered blocks repeat (the snippet
    render cache), so this runs once per block and page."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    out: list[int] = []
    for m in _HREF.finditer(text):
        href = html.unescape(m.group(1) or m.group(2) or m.group(3) or "").strip()
        if not href.startswith("/") or href.startswith("//"):
            continue  # another site, a scheme, a fragment or a relative link
        path = href.split("#", 1)[0].split("?", 1)[0]
        name = link_hash(path)
        if path != page and name not in out:
            out.append(name)
            if len(out) == MAX_LINKS:
                break
    return out


@functools.lru_cache(maxsize=1024)
def _language(accept_language: bytes, languages: tuple[str, ...]) -> str:
    """The visitor's language among the shop's, by ``Accept-Language`` (a handful of
    distinct headers cover nearly every visitor, so the answer is kept)."""
    return choose_language(accept_language.decode("latin-1"), languages, languages[0])


def _coordinate(text: bytes) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if -180.0 <= value <= 180.0 else None


MARKER: Final = '<meta name="shop-edge" content="done">'
"""At the start of a server-personalized page's head: the browser snippet then makes no
swaps of its own (it still ticks countdowns and reports dwell)."""
_MARKER_EDIT: Final = SlotEdit("", "shop-edge-marker", Edit("head", "prepend", MARKER))


@dataclass(frozen=True, slots=True)
class BrowserRendering:
    """Which page types the browser personalizes, and where: those of ``browser_pages``
    and every page type a ``render = "browser"`` placement's slot is on (a page is
    either cacheable and personalized in the browser, or personalized by the sidecar).
    Per such page type, the selectors of the slots the snippet may change (the same
    for every visitor, so the page stays cacheable)."""

    slots: dict[str, tuple[str, ...]]
    """Page type rendered in the browser -> the selectors of its slots."""

    @classmethod
    def of(cls, ruleset: RuleSet, browser_pages: frozenset[str]) -> BrowserRendering:
        pages = set(browser_pages)
        for placement in ruleset.placements:
            if placement.spec.render == "browser":
                slot = ruleset.slots.get(placement.spec.slot)
                if slot is not None:
                    pages.update(slot.pages or ruleset.pages.page_types)
        slots: dict[str, list[str]] = {page_type: [] for page_type in pages}
        for placement in ruleset.placements:
            slot = ruleset.slots.get(placement.spec.slot)
            if slot is None:
                continue
            for page_type in slot.pages or pages:
                selectors = slots.get(page_type)
                if selectors is not None and slot.select not in selectors:
                    selectors.append(slot.select)
        return cls({k: tuple(v) for k, v in slots.items()})


class Decider:
    def __init__(
        self,
        rules: LiveRules,
        profiles: ProfileService,
        recorder: Recorder,
        activities: Activities,
        *,
        languages: Sequence[str] = ("en", "it"),
        shop: ShopStats | None = None,
        trust_geo: bool = False,
        qa_cookie: str = "edge_qa",
        qa_visitors: Sequence[str] = (),
        report_segments: Sequence[str] = (),
        browser_pages: Sequence[str] = (),
    ) -> None:
        self.rules = rules
        self.profiles = profiles
        self.recorder = recorder
        self.activities = activities
        self.languages = tuple(languages)
        self.shop = shop if shop is not None else ShopStats()
        self.trust_geo = trust_geo
        """Whether the request's geo headers are the operator's (see Config.trust_geo)."""
        self.page_languages = PageLanguages()
        """What the shop's pages declared (``<html lang>``), learned as they pass."""
        self.qa_cookie = ""
        self.qa_visitors: frozenset[str] = frozenset()
        """QA: a browser with ``qa_cookie``, these visitor ids and ``cust:ID``s."""
        self._qa_any = False
        self.set_qa(qa_cookie, qa_visitors)
        self.report_segments: tuple[str, ...] = tuple(report_segments)
        """The segments the report breaks placements down by; empty: the rules' first
        ``MAX_ARM_SEGMENTS``."""
        self._reported: tuple[object, tuple[str, ...], frozenset[str]] = (None, (), frozenset())
        self.browser_pages = frozenset(browser_pages)
        """Page types personalized in the browser (``browser_pages``)."""
        self._rendering: tuple[RuleSet | None, frozenset[str], BrowserRendering | None] = (
            None,
            frozenset(),
            None,
        )

    def rendering(self) -> BrowserRendering:
        """What the serving rules render in the browser (made again when the rules or
        ``browser_pages`` change)."""
        ruleset = self.rules.ruleset
        kept_rules, kept_pages, rendering = self._rendering
        if rendering is None or kept_rules is not ruleset or kept_pages is not self.browser_pages:
            rendering = BrowserRendering.of(ruleset, self.browser_pages)
            self._rendering = (ruleset, self.browser_pages, rendering)
            known = ruleset.pages.page_types
            for name in sorted(self.browser_pages - known.keys()):
                log.warning(
                    "browser_pages: %r is not a page type of the rule files ([page_types]: "
                    "%s); fix the name in edge.toml",
                    name,
                    ", ".join(known) or "none",
                )
        return rendering

    def reported_segments(self, ruleset: RuleSet) -> frozenset[str]:
        """The segments of *ruleset* kept with exposures (``report_segments``, else the
        rules' own, in their order; at most ``MAX_ARM_SEGMENTS``)."""
        cached_rules, cached_setting, names = self._reported
        if cached_rules is ruleset and cached_setting == self.report_segments:
            return names
        wanted = self.report_segments or tuple(ruleset.segment_names)
        fitting = [n for n in wanted if n in ruleset.segment_names and len(n) <= MAX_ID]
        unknown = [n for n in self.report_segments if n not in ruleset.segment_names]
        if unknown:  # (once per rule set: the rules may define them later)
            log.warning(
                "report_segments: no segment %s in the rules serving; not reported (fix the "
                "name in edge.toml or define the segment)",
                ", ".join(unknown),
            )
        names = frozenset(fitting[:MAX_ARM_SEGMENTS])
        self._reported = (ruleset, self.report_segments, names)
        return names

    def page_seen(self, path: str, top: bytes) -> None:
        """A personalized page went out; *top* is its first decoded bytes: its
        ``<html lang>`` is remembered when the shop has ``[shop] languages``."""
        if self.rules.ruleset.shop.languages:
            self.page_languages.learn(path, declared_language(top[:4096]))

    def language(self, path: str, accept_language: bytes, shop: Shop) -> str:
        """The page's language (edge/languages.py): with ``[shop] languages``, the URL's
        (``language_path``), else the one the shop's pages declared, else the browser's;
        without, the browser's among ``edge.toml``'s ``languages``."""
        languages = shop.languages
        if not languages:
            return _language(accept_language, self.languages)
        if shop.language_paths:
            found = pick(shop.path_language(path), languages)
            if found:
                return found
        return pick(self.page_languages.of(path), languages) or _language(
            accept_language, languages
        )

    @property
    def active(self) -> bool:
        """Whether the serving rules place anything at all."""
        return bool(self.rules.ruleset.placements)

    def wants(self, head: RequestHead) -> bool:
        """Whether this request may be personalized at all (before any work)."""
        return head.method == "GET" and self.active and head.wants_html

    async def decide(
        self,
        head: RequestHead,
        visit: Visit,
        page: Page | None,
        touch: Touch | None,
        preview: Preview | None = None,
        *,
        browser: bool = False,
    ) -> Decision | None:
        """The decision for this page view, or None (a crawler, or something failed:
        the page goes out as the shop made it). *browser*: for the browser snippet
        (``/_edge/decide``): its edits go as data, without the page's marker."""
        started = time.perf_counter()
        try:
            decision = await self._decide(head, visit, page, touch, preview, browser)
        except Exception:
            log.exception("personalization failed; the page goes out as the shop made it")
            return None
        if decision is not None:
            decision.seconds = seconds = time.perf_counter() - started
            metrics.DECISION.observe(seconds)
        return decision

    async def _decide(
        self,
        head: RequestHead,
        visit: Visit,
        page: Page | None,
        touch: Touch | None,
        preview: Preview | None,
        browser: bool = False,
    ) -> Decision | None:
        ruleset = self.rules.ruleset
        if visit.crawler:
            return None
        now = int(time.time())
        visitor_id = visit.visitor_id if preview is None else None
        try:
            profile = await self._profile(visitor_id, visit)
        except StoreUnavailable:  # past its deadline, or the breaker open: the shop's page
            return None
        # This request's campaign, else its visit's: `utm.*`, `channel` and the
        # snippets' `page.campaign` hold for the whole visit.
        request = self._request_info(head, page, ev.visit_touch(profile, touch), ruleset.shop)
        ctx = Context(profile, request, now, self.shop)
        ctx.zone = ruleset.shop.zone
        result = ruleset.evaluate(ctx)
        if preview is not None:
            segments = [n for n in ruleset.segment_names if n in preview.segments]
            holding = _previewed(ruleset, preview, result)
        else:
            segments = ruleset.names(result)
            holding = [p for p in ruleset.by_priority if result[p.output]]
        decision = Decision(segments=segments, preview=preview, now=now, path=head.path)
        decision.browser = browser
        unit = unit_key(visitor_id, profile) if visitor_id else ""
        if preview is not None or (self._qa_any and self._qa(head, visitor_id, unit)):
            decision.measured = False
        elif segments:
            reported = self.reported_segments(ruleset)
            decision.reported = [n for n in segments if n in reported]
        choices = choose(
            holding,
            ruleset.slots,
            page_type=request.page_type,
            profile=profile,
            now=now,
            holdout_key=unit,
        )
        if not choices and preview is None:
            return decision
        activities = PageActivities(
            self.activities,
            profile=profile,
            visitor_id=visitor_id,
            now=now,
            language=request.lang,
            segments=segments,
            page={
                "path": head.path,
                "type": request.page_type,
                **request.utm,
                "channel": request.channel,
            },
            return_to=head.path + ("?" + head.query_text if head.query else ""),
            cookies=head.cookies,
            preview=preview is not None,
            shop=ruleset.shop,
            questions=ruleset.questions,
            result=result,
        )
        filled = fill(choices, activities.edit)
        decision.edits = [edit for _choice, edit in filled.shown]
        decision.held_out = [choice.placement.id for choice in filled.held_out]
        arms = decision.arms
        for choice, _edit in filled.shown:
            variant = choice.variant
            arms[choice.placement.id] = variant.name if variant is not None else HOLDOUT_ARM
        for choice in filled.held_out:
            arms[choice.placement.id] = HOLDOUT_ARM
        _finish(decision, activities)
        return decision

    def set_qa(self, cookie: str, visitors: Sequence[str]) -> None:
        """Who is QA from now on (at start, and on a reload)."""
        self.qa_cookie = cookie
        self.qa_visitors = frozenset(visitors)
        self._qa_any = bool(cookie or visitors)

    def _qa(self, head: RequestHead, visitor_id: str | None, unit: str) -> bool:
        """Whether this is QA: the QA cookie (any value), or a listed visitor or
        customer."""
        if self.qa_cookie and self.qa_cookie in head.cookies:
            return True
        qa = self.qa_visitors
        return bool(qa) and (visitor_id in qa or unit in qa)

    async def _profile(self, visitor_id: str | None, visit: Visit) -> Profile | None:
        if not visitor_id or visit.new:
            return None
        profile = await self.profiles.load(visitor_id)
        if profile is None:
            # Their first page is stored only with this, their second request: what it
            # showed (the landing campaign, an offer's first exposure) already counts.
            profile = self.recorder.pending_profile(visitor_id)
        return profile

    def _request_info(
        self, head: RequestHead, page: Page | None, touch: Touch | None, shop: Shop
    ) -> RequestInfo:
        utm, channel = campaign_of(touch)
        geo = self.trust_geo
        return RequestInfo(
            path=head.path,
            page_type=page.type if page is not None else "",
            utm=utm,
            channel=channel,
            lang=self.language(head.path, head.accept_language, shop),
            device=device_of(head.user_agent.decode("latin-1")),
            country=(head.geo_country or head.cf_country).decode("latin-1").upper() if geo else "",
            latitude=_coordinate(head.geo_latitude) if geo else None,
            longitude=_coordinate(head.geo_longitude) if geo else None,
        )


def _finish(decision: Decision, activities: PageActivities) -> None:
    """The sidecar's own edits (the stylesheet, a preview's badge; on a page it
    rewrites, the marker that tells the browser snippet so) and the fingerprint."""
    decision.edits += activities.additions(decision.edits)
    if decision.edits and not decision.browser:
        decision.edits.append(_MARKER_EDIT)
    decision.clear_form_error = activities.clear_form_error
    if decision.browser:  # (the fingerprint names a page's ETag: no page here)
        return
    digest = hashlib.blake2b(digest_size=12)
    for edit in decision.edits:
        digest.update(edit.share)
    decision.fingerprint = digest.hexdigest()


def _previewed(ruleset: RuleSet, preview: Preview, result: tuple[bool, ...]) -> list[PlacementRule]:
    """The placements a preview's segments see: a placement for a segment holds when
    the segment is previewed; one with its own condition, when that holds."""
    names = preview.segments
    return [
        p
        for p in ruleset.by_priority
        if (p.spec.segment in names if p.spec.segment else result[p.output])
    ]

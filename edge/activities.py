"""The on-site activities: a chosen placement becomes an edit of the page.

A snippet placement renders the merchant's block with the visitor's context (first
name, cart, the timed offer's deadline, the next profiling question and its form) and
puts it in the slot; a sort placement orders the slot's products for the visitor
(:class:`~edge.personalize.ordering.ListOrder`, keyed and ordered as the rewriter
reads the list). The sidecar's own additions go with them: the stylesheet of the
blocks, the countdown script after a timed offer, and the preview badge.

Each edit carries its share of the page's fingerprint (the ETag of a personalized
page): what in it is particular to this visitor.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping, Sequence
from html import escape as html_escape
from typing import Any, Final

import msgspec

from edge.caches import LRU, Memo
from edge.forms import FORM_PATH, csrf_token, form_error
from edge.identity import Identity
from edge.personalize.catalog import Catalog, ItemReader
from edge.personalize.ordering import Interest, ListOrder, Sort
from edge.personalize.profiling import Question, next_question
from edge.personalize.snippets import Snippets, offer_view, visitor_context
from edge.placements import Choice
from edge.profiles.model import Profile
from edge.rewrite import Edit
from edge.rewriting import SlotEdit
from edge.rules.shop import DEFAULT_SHOP, Shop
from edge.rules.spec import Slot, Variant

__all__ = [
    "ASSETS_SLOT",
    "COUNTDOWN_SCRIPT",
    "PREVIEW_SLOT",
    "Activities",
    "PageActivities",
]

log = logging.getLogger("edge.activities")

PREVIEW_SLOT: Final = "edge-preview-badge"
ASSETS_SLOT: Final = "edge-assets"
COUNTDOWN_SCRIPT: Final = '<script src="/_edge/static/edge.js" defer></script>'
"""Follows a timed offer's snippet: the sidecar's own script ticks its countdown."""

_FINGERPRINT: Final = msgspec.msgpack.Encoder()
_CSRF_KEPT: Final = 16_384
CSRF_SLOT: Final = "edge-csrf-slot-3f9a0c"
"""What the profiling form's ``form.csrf`` is while its snippet renders; the visitor's
token replaces it after. The render is then the same for every visitor asked the same
question (one render, one cached string), not one per visitor: a stream of new
visitors rendered the form anew each and filled the render cache with copies."""


@functools.lru_cache(maxsize=1024)
def _with_countdown(html: str) -> str:
    """(The same string for the same snippet: see :func:`_html_digest`.)"""
    return html + COUNTDOWN_SCRIPT


@functools.lru_cache(maxsize=4096)
def _html_digest(html: str) -> bytes:
    """A rendered snippet's share of the page's fingerprint (ETag). Remembered: most
    renders come from the snippets' own cache, the very same string again."""
    return hashlib.blake2b(html.encode(), digest_size=12).digest()


@functools.lru_cache(maxsize=256)
def _sorts(sorts: tuple[str, ...], pins: tuple[str, ...]) -> tuple[list[Sort], bytes]:
    """A placement's sorts, parsed once (the list is only read), and their share of
    the fingerprint."""
    parsed = [Sort.parse(s, pinned=pins if s.strip().lower() == "pin" else ()) for s in sorts]
    return parsed, _FINGERPRINT.encode((list(sorts), list(pins)))


class Activities:
    """What the activities need across requests: the snippets, the catalog, the
    profiling questions, each slot's item reader, the form tokens."""

    def __init__(
        self,
        snippets: Snippets,
        identity: Identity,
        *,
        catalog: Catalog | None = None,
        questions: dict[str, Question] | None = None,
        stylesheet: str = "/_edge/static/edge.css",
    ) -> None:
        self.snippets = snippets
        self.identity = identity
        self.catalog = catalog
        self.questions = questions
        """Profiling questions that replace the rule files' ``[questions]`` (tests)."""
        self.stylesheet = stylesheet
        """Linked in the head of a page that shows snippets (empty: the theme styles
        them)."""
        self._readers: Memo[tuple[str, str], ItemReader] = Memo(256)
        self._csrf: LRU[str, str] = LRU(_CSRF_KEPT)
        """The profiling form's token by visitor: an HMAC per page is ~5-10 µs here,
        and a visitor who is asked sees the form on page after page."""

    def csrf(self, visitor_id: str) -> str:
        token = self._csrf.get(visitor_id)
        if token is None:
            token = self._csrf[visitor_id] = csrf_token(self.identity, visitor_id)
        return token

    def reader(self, slot: Slot) -> ItemReader:
        """How a slot's items say which product they are (kept: it remembers items)."""
        key = (slot.item_id, slot.item_link)
        reader = self._readers.get(key)
        if reader is None:
            reader = self._readers.put(
                key,
                ItemReader(
                    id_attr=slot.item_id or "data-product-id",
                    link_pattern=slot.item_link or None,
                    catalog=self.catalog,
                ),
            )
        return reader


class PageActivities:
    """The activities of one page view: what its snippets share (the visitor's
    context, the next profiling question) is made once, when a snippet first needs it."""

    def __init__(
        self,
        activities: Activities,
        *,
        profile: Profile | None,
        visitor_id: str | None,
        now: int,
        language: str,
        segments: Sequence[str],
        page: dict[str, Any],
        return_to: str,
        cookies: dict[str, str],
        preview: bool,
        shop: Shop = DEFAULT_SHOP,
        questions: Mapping[str, Question] | None = None,
        result: Sequence[bool] | None = None,
    ) -> None:
        self.activities = activities
        self.profile = profile
        self.visitor_id = visitor_id
        self.now = now
        self.language = language
        self.segments = segments
        self.page = page
        self.return_to = return_to
        self.preview = preview
        self._cookies = cookies
        self.shop = shop
        self._questions = activities.questions if activities.questions is not None else questions
        self._result = result
        """The rule set's results: a question's ``when`` is among them."""
        self._asked = False  # the next profiling question is found only if a snippet needs it
        self._question: Question | None = None
        self._context: dict[str, Any] | None = None
        self.clear_form_error = False
        """A snippet showed the form's error: the error cookie is cleared."""

    def edit(self, choice: Choice) -> SlotEdit | None:
        """The edit *choice* makes of its slot, or None when it makes none (the slot
        is then left to the next placement)."""
        # One placement that fails (a bug, a rule the checker let through) leaves its
        # slot as the shop made it; the page's other placements still apply.
        try:
            if choice.variant is None:
                return None  # held out: the shop's original
            if choice.variant.snippet:
                return self._snippet(choice, choice.variant)
            return self._order(choice, choice.variant)
        except Exception:
            log.exception(
                "placement %s (%s) failed; its slot keeps the shop's content",
                choice.placement.id,
                choice.placement.where,
            )
            return None

    def _snippet(self, choice: Choice, variant: Variant) -> SlotEdit | None:
        question = self._next_question()
        if variant.snippet.startswith("profile_form") and question is None:
            return None  # nothing left to ask: the next placement may fill the slot
        context = self._snippet_context(question)
        if choice.offer is not None:
            context = context | {"offer": offer_view(choice.offer)}
        # (The render cache is keyed by the variant's template, and the replay by the
        # edit's HTML: two variants never share a render.)
        snippets = self.activities.snippets
        html = snippets.render(variant.snippet, context, languages=[self.language])
        if html is None:
            return None  # logged by the library; the slot stays as the shop made it
        if context["form"]["csrf"] and CSRF_SLOT in html:
            html = html.replace(CSRF_SLOT, self.activities.csrf(self.visitor_id or ""))
        share = _html_digest(html)
        if choice.offer is not None:
            html = _with_countdown(html)
            share += b"+countdown"
        if context["form"]["error"]:
            self.clear_form_error = True
        edit = Edit(choice.slot.select, variant.action or choice.slot.action, html)
        return SlotEdit(
            choice.placement.id,
            choice.slot_name,
            edit,
            offer=choice.offer is not None,
            share=share,
        )

    def _order(self, choice: Choice, variant: Variant) -> SlotEdit:
        sorts, share = _sorts(tuple(variant.sort_keys), tuple(choice.placement.spec.pin))
        profile = self.profile
        interest = (
            Interest.of(profile, self.now, bought=any(s.strategy == "bought last" for s in sorts))
            if profile is not None
            else Interest()
        )
        fingerprint = interest.fingerprint()
        order = ListOrder(
            self.activities.reader(choice.slot), sorts, interest, fingerprint=fingerprint
        )
        slot = choice.slot
        edit = Edit(
            slot.select,
            "reorder",
            key=order.key,
            order=order.order,
            key_link=bool(slot.item_link) or not slot.item_id,
        )
        return SlotEdit(
            choice.placement.id, choice.slot_name, edit, order=order, share=share + fingerprint
        )

    def _next_question(self) -> Question | None:
        if not self._asked:
            self._asked = True
            if self.profile is not None or self.visitor_id:
                known = self.profile or Profile(visitor_id=self.visitor_id or "")
                self._question = next_question(known, self._questions or {}, result=self._result)
        return self._question

    def _snippet_context(self, question: Question | None) -> dict[str, Any]:
        if self._context is None:
            error_question, error_text = form_error(self._cookies)
            shows_error = question is not None and error_question == question.trait
            visitor_id = self.visitor_id
            self._context = visitor_context(
                self.profile,
                now=self.now,
                language=self.language,
                catalog=self.activities.catalog,
                segments=self.segments,
                page=self.page,
                question=question,
                form_error=error_text if shows_error else "",
                # Only the profiling form posts it, and only with a question.
                # (a placeholder: the visitor's token replaces it after the render)
                csrf=CSRF_SLOT if visitor_id and question else "",
                return_to=self.return_to,
                preview=self.preview,
                shop=self.shop,
            )
            self._context["form"]["action"] = FORM_PATH
        return self._context

    def additions(self, edits: Sequence[SlotEdit]) -> list[SlotEdit]:
        """The sidecar's own edits for a page with *edits*: the blocks' stylesheet,
        and in a preview the badge that says so."""
        out = []
        stylesheet = self.activities.stylesheet
        if stylesheet and any(e.edit.action != "reorder" for e in edits):
            link = f'<link rel="stylesheet" href="{html_escape(stylesheet)}">'
            out.append(SlotEdit("", ASSETS_SLOT, Edit("head", "append", link)))
        if self.preview:
            badge = self.activities.snippets.render(
                "preview_badge",
                visitor_context(
                    None,
                    now=self.now,
                    language=self.language,
                    segments=self.segments,
                    preview=True,
                    shop=self.shop,
                ),
                languages=[self.language],
            )
            if badge:
                edit = Edit("body", "prepend", badge)
                out.append(SlotEdit("", PREVIEW_SLOT, edit, share=badge.encode()))
        return out

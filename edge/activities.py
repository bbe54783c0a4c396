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
import secrets
from collections.abc import Mapping, Sequence
from html import escape as html_escape
from typing import Any, Final

import msgspec

from edge.caches import LRU, Memo
from edge.forms import FORM_PATH, csrf_token, form_error
from edge.identity import Identity
from edge.personalize.catalog import Catalog, ItemReader
from edge.personalize.offers import OfferState
from edge.personalize.ordering import Interest, ListOrder, Sort
from edge.personalize.profiling import Question, next_question
from edge.personalize.snippets import Snippets, first_name, offer_view, visitor_context
from edge.placements import Choice
from edge.profiles.model import Profile
from edge.rewrite import Edit
from edge.rewrite.edits import Action
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
CSRF_SLOT: Final = f"edge-csrf-{secrets.token_hex(12)}"
"""What the profiling form's ``form.csrf`` is while its snippet renders, and in the
edit's content: the visitor's token takes its place where the content leaves the
sidecar (:attr:`SlotEdit.fill`). The render, its encoding, its share of the ETag and
its replay are then the same for every visitor asked the same question, not one per
visitor. New in every process, so no text a merchant or a visitor writes is it."""


@functools.lru_cache(maxsize=1024)
def _with_countdown(html: str) -> str:
    """(The same string for the same snippet: see :func:`_html_digest`.)"""
    return html + COUNTDOWN_SCRIPT


@functools.lru_cache(maxsize=4096)
def _html_digest(html: str) -> bytes:
    """A rendered snippet's share of the page's fingerprint (ETag). Remembered: most
    renders come from the snippets' own cache, the very same string again."""
    return hashlib.blake2b(html.encode(), digest_size=12).digest()


@functools.lru_cache(maxsize=4096)
def _holds_csrf(html: str) -> bool:
    """Whether a rendered block shows the form's token (its placeholder)."""
    return CSRF_SLOT in html


@functools.lru_cache(maxsize=1024)
def _form_digest(html: str) -> bytes:
    """:func:`_html_digest` of a block that shows the form's token, the placeholder
    (new in every process) taken out: the same share in every process and replica, so
    a visitor's ETag holds across them and across restarts."""
    return _html_digest(html.replace(CSRF_SLOT, ""))


@functools.lru_cache(maxsize=4096)
def _edit(selector: str, action: Action, html: str) -> Edit:
    """A snippet's edit, made once for the same block in the same slot (an ``Edit`` is
    frozen, and its checks cost more than the lookup)."""
    return Edit(selector, action, html)


@functools.lru_cache(maxsize=16)
def _stylesheet_edit(stylesheet: str) -> SlotEdit:
    """The blocks' stylesheet linked in the head: one edit, made once (it is only read)."""
    link = f'<link rel="stylesheet" href="{html_escape(stylesheet)}">'
    return SlotEdit("", ASSETS_SLOT, Edit("head", "append", link))


@functools.lru_cache(maxsize=256)
def _sorts(sorts: tuple[str, ...], pins: tuple[str, ...]) -> tuple[list[Sort], bytes]:
    """A placement's sorts, parsed once (the list is only read), and their share of
    the fingerprint."""
    parsed = [Sort.parse(s, pinned=pins if s.strip().lower() == "pin" else ()) for s in sorts]
    return parsed, _FINGERPRINT.encode((list(sorts), list(pins)))


_ITEMS: Final = msgspec.msgpack.Encoder()
_DERIVED: Final = frozenset(("language", "links", "formats"))
"""Context names whose values follow from the page's language and ``[shop]`` alone."""
_CONTEXT: Final = frozenset(visitor_context(None, now=0)) | {"offer"}
"""Every name a block's context has."""
_BLOCKS_KEPT: Final = 4096


class Blocks:
    """Rendered snippets by their template and the source values of what it reads.

    Rendering is pure, so :class:`~edge.personalize.snippets.Snippets` caches a render
    by the values the template reads; but its key is made from the finished context
    (about 43k instructions to build the context on a page, 14k to encode a key). This
    cache is keyed one step earlier, by the values in the profile and the page that
    those context values are made from (:meth:`PageActivities._block_key`), so a
    block seen before costs a tuple and a lookup. The questions and the catalog a key
    refers to by name are this cache's generation: another set clears it."""

    def __init__(self, maxsize: int = _BLOCKS_KEPT) -> None:
        self._kept: LRU[tuple[object, ...], str] = LRU(maxsize)
        self._generation: tuple[object, object] | None = None

    def generation(self, questions: object, catalog: object) -> None:
        """The questions and catalog the keys from now on are made with."""
        found = self._generation
        if found is None or found[0] is not questions or found[1] is not catalog:
            self._kept = LRU(self._kept.maxsize)
            self._generation = (questions, catalog)

    def get(self, key: tuple[object, ...]) -> str | None:
        return self._kept.get(key)

    def put(self, key: tuple[object, ...], html: str) -> None:
        self._kept[key] = html

    def __len__(self) -> int:
        return len(self._kept)


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
        self.blocks = Blocks()
        """Rendered blocks by what their templates read (:meth:`PageActivities._render`)."""
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
        activities.blocks.generation(self._questions, activities.catalog)
        """The rule set's results: a question's ``when`` is among them."""
        self._asked = False  # the next profiling question is found only if a snippet needs it
        self._question: Question | None = None
        self._context: dict[str, Any] | None = None
        self._form_values: tuple[Question | None, str, str] | None = None
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
        # (The render cache is keyed by the variant's template, and the replay by the
        # edit's HTML: two variants never share a render.)
        html = self._render(variant.snippet, question, choice.offer)
        if html is None:
            return None  # logged by the library; the slot stays as the shop made it
        csrf, error = self._form(question)
        fill: tuple[tuple[str, str], ...] = ()
        if csrf and _holds_csrf(html):
            token = self.activities.csrf(self.visitor_id or "")
            fill = ((CSRF_SLOT, token),)
            share = _form_digest(html) + b"+csrf:" + token.encode()
        else:
            share = _html_digest(html)
        if choice.offer is not None:
            html = _with_countdown(html)
            share += b"+countdown"
        if error:
            self.clear_form_error = True
        edit = _edit(choice.slot.select, variant.action or choice.slot.action, html)
        return SlotEdit(
            choice.placement.id,
            choice.slot_name,
            edit,
            offer=choice.offer is not None,
            share=share,
            fill=fill,
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

    def _render(self, name: str, question: Question | None, offer: OfferState | None) -> str | None:
        """The snippet *name* rendered with this page's context (and *offer*): from
        the blocks cache when the values its template reads were seen before, keyed by
        those values as the profile and the page hold them, so a hit builds no context
        and encodes none (see :class:`Blocks`); else rendered by the library."""
        snippets = self.activities.snippets
        languages = [self.language]
        blocks = self.activities.blocks
        key = None
        template = snippets.template(name, languages)
        if template is not None:
            names = snippets.reads(template)
            if names is not None:
                key = self._block_key(template, names, question, offer)
                if key is not None:
                    try:
                        html = blocks.get(key)
                    except TypeError:  # (a value that cannot be a key: no caching)
                        html = key = None
                    if html is not None:
                        return html
        context = self._snippet_context(question)
        if offer is not None:
            context = context | {"offer": offer_view(offer)}
        html = snippets.render(name, context, languages=languages)
        if html is not None and key is not None:
            blocks.put(key, html)
        return html

    def _block_key(
        self,
        template: object,
        names: tuple[str, ...],
        question: Question | None,
        offer: OfferState | None,
    ) -> tuple[object, ...] | None:
        """Everything the render of *template* depends on: the template, the page's
        language and ``[shop]`` (the filters' formats, the links), and for each name
        it reads the source of that value in :func:`visitor_context` (None: a name
        this page's context does not have; the library renders it, and says why)."""
        profile = self.profile
        parts: list[object] = [template, self.language, self.shop]
        for name in names:
            if name == "first_name":
                parts.append(first_name(profile) if profile is not None else "")
            elif name == "cart":
                parts.append(self._cart_part())
            elif name == "offer":
                parts.append((offer.deadline, offer.seconds_left) if offer is not None else None)
            elif name == "question":
                parts.append(question.trait if question is not None else None)
            elif name == "form":
                parts.append((*self._form(question), self.return_to))
            elif name == "known":
                parts.append(bool(profile and (profile.customer_id or profile.email_hash)))
            elif name == "segments":
                parts.append(tuple(self.segments))
            elif name == "page":
                parts.append(tuple(self.page.items()))
            elif name == "preview":
                parts.append(self.preview)
            elif name == "now":
                parts.append(self.now)
            elif name in _CONTEXT and name not in _DERIVED:
                return None  # (a context value this key does not know the source of)
            # else: language, links, formats (in the key already), or a name the
            # template sets itself (``{% set %}``): not in the context, always None
        return tuple(parts)

    def _cart_part(self) -> object:
        """The cart's share of a block's key: its lines as stored, and the catalog's
        version (a line's name, link and price may come from the catalog)."""
        if self.profile is None:
            return None
        catalog = self.activities.catalog
        version = catalog.version if catalog is not None else -1
        return version, _ITEMS.encode(self.profile.cart.items)

    def _form(self, question: Question | None) -> tuple[str, str]:
        """The form's ``csrf`` (the placeholder when there is a question to post) and
        ``error`` (the error cookie's, for this question), as the context has them."""
        found = self._form_values
        if found is None or found[0] is not question:
            csrf = CSRF_SLOT if self.visitor_id and question else ""
            error = ""
            if question is not None:
                error_question, error_text = form_error(self._cookies)
                if error_question == question.trait:
                    error = error_text
            found = self._form_values = (question, csrf, error)
        return found[1], found[2]

    def _next_question(self) -> Question | None:
        if not self._asked:
            self._asked = True
            if self.profile is not None or self.visitor_id:
                known = self.profile or Profile(visitor_id=self.visitor_id or "")
                self._question = next_question(known, self._questions or {}, result=self._result)
        return self._question

    def _snippet_context(self, question: Question | None) -> dict[str, Any]:
        if self._context is None:
            # Only the profiling form posts the token, and only with a question.
            # (a placeholder: the visitor's token replaces it after the render)
            csrf, error = self._form(question)
            self._context = visitor_context(
                self.profile,
                now=self.now,
                language=self.language,
                catalog=self.activities.catalog,
                segments=self.segments,
                page=self.page,
                question=question,
                form_error=error,
                csrf=csrf,
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
            out.append(_stylesheet_edit(stylesheet))
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

"""The browser's half of personalization: ``GET /_edge/decide``, exposure tokens, and
the snippet asset with its script tag.

A page the sidecar does not rewrite (a page type in ``browser_pages``, a placement
with ``render = "browser"``, a page a CDN serves from its cache) is personalized by
the browser snippet (``static/edge.js``): it asks ``/_edge/decide?path=...`` what this
visitor gets on that page and applies it with the rewriter's vocabulary. The answer is
made by the very :meth:`~edge.decide.Decider.decide` of the server path, and its
exposures are recorded the same way (caps, offers, arms): one decision, two places.

Each shown block and each holdout comes with an **exposure token** (:func:`token`):
the browser's proof, for the ``Placement Viewed``/``Placement Clicked`` beacons it
sends to ``/_edge/events``, that this visitor was given this placement's arm. A
token is a MAC with the configured secret over ``[visitor id, placement, arm, time]``
(msgpack), valid for a day and only for the cookie's own visitor.

The asset: ``static/edge.js`` minified at start (rjsmin), served at
``/_edge/edge.<hash>.js`` precompressed (br, gzip) with immutable caching
(:class:`SnippetAsset`); ``/_edge/static/edge.js`` stays for themes that include the
unminified file by hand.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import hashlib
import hmac
import html
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, unquote_plus

import brotli
import msgspec
import rjsmin

from edge import metrics
from edge.decide import Decider, Decision
from edge.identity import Identity
from edge.observe import Observer
from edge.pages import Page
from edge.personalize.catalog import Catalog, LearnedCatalog
from edge.recorder import Recorder
from edge.request import RequestHead
from edge.rewriting import SlotEdit
from edge.rules import RuleSet
from edge.rules.spec import Slot
from edge.shipped import STATIC
from edge.visitors import Visitors

__all__ = [
    "DECIDE_PATH",
    "SNIPPET_URL",
    "TOKEN_TTL",
    "BadToken",
    "BrowserDecide",
    "Exposure",
    "ShortCached",
    "SnippetAsset",
    "check_token",
    "script_tag",
    "token",
]

log = logging.getLogger("edge.browser")

DECIDE_PATH: Final = "/_edge/decide"
TOKEN_TTL: Final = 86_400
"""Seconds an exposure token is good for (a beacon is sent within the page's life)."""
_TAG_BYTES: Final = 16
_PURPOSE: Final = "exposure"
_MAX_TOKEN: Final = 512
_CLOCK_SKEW: Final = 60
_MAX_PATH: Final = 2048
_MAX_ITEMS: Final = 200
"""Items a browser reorder names at most (the page's, or the catalog's for the category)."""
_ITEM_ID: Final = re.compile(r"[^\x00-\x1f,]{1,128}")


# --- exposure tokens -------------------------------------------------------------------


class BadToken(Exception):
    """A beacon's token that does not hold: the message says why, for the sender."""


class Exposure(msgspec.Struct, array_like=True, frozen=True):
    visitor_id: str
    placement: str
    arm: str
    ts: int


_encode_exposure = msgspec.msgpack.Encoder().encode
_decode_exposure = msgspec.msgpack.Decoder(Exposure).decode


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    # (base64.urlsafe_b64encode's bytes, without its two Python-level calls)
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token(identity: Identity, visitor_id: str, placement: str, arm: str, ts: int) -> str:
    """The exposure token of *placement*'s *arm* given to *visitor_id* at *ts*."""
    payload = _encode_exposure((visitor_id, placement, arm, ts))  # as Exposure decodes it
    mac = identity.keyed(_PURPOSE)[0].copy()
    mac.update(payload)
    return _b64(payload) + "." + _b64(mac.digest()[:_TAG_BYTES])


def check_token(identity: Identity, text: str, visitor_id: str, now: int) -> Exposure:
    """The exposure *text* vouches for, or :class:`BadToken` saying why not: forged
    (its tag does not verify under any secret, compared in constant time), another
    visitor's, expired (older than a day) or not yet issued."""
    if not text or len(text) > _MAX_TOKEN or text.count(".") != 1:
        raise BadToken("token: not an exposure token from /_edge/decide")
    payload_text, tag_text = text.split(".")
    try:
        payload = _unb64(payload_text)
        tag = _unb64(tag_text)
    except ValueError:
        raise BadToken("token: not an exposure token from /_edge/decide") from None
    ok = False
    for keyed in identity.keyed(_PURPOSE):  # every key: timing tells nothing
        mac = keyed.copy()
        mac.update(payload)
        ok |= hmac.compare_digest(mac.digest()[:_TAG_BYTES], tag)
    if not ok:
        raise BadToken("token: its signature does not verify (changed, or not this shop's)")
    try:
        exposure = _decode_exposure(payload)
    except msgspec.DecodeError:
        raise BadToken("token: not an exposure token from /_edge/decide") from None
    if not hmac.compare_digest(exposure.visitor_id.encode(), visitor_id.encode()):
        raise BadToken("token: issued to another visitor (send it with its own cookie)")
    if now - exposure.ts > TOKEN_TTL:
        raise BadToken("token: expired (older than a day); ask /_edge/decide again")
    if exposure.ts - now > _CLOCK_SKEW:
        raise BadToken("token: issued in the future (check the sidecars' clocks)")
    return exposure


# --- the snippet asset -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnippetAsset:
    """``static/edge.js`` minified, its versioned URL and its precompressed bodies."""

    body: bytes
    gzip: bytes
    br: bytes
    digest: str
    """The first 10 hex digits of the SHA-256 of :attr:`body` (the served bytes)."""

    @classmethod
    def load(cls, source: Path) -> SnippetAsset:
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:  # a broken install: the decide endpoint still answers
            log.error("browser snippet %s unreadable (%s): serving an empty one", source, exc)
            text = ""
        body = rjsmin.jsmin(text).strip().encode("utf-8")
        return cls(
            body,
            gzip.compress(body, 9, mtime=0),
            brotli.compress(body, quality=11, mode=brotli.MODE_TEXT),
            hashlib.sha256(body).hexdigest()[:10],
        )

    @property
    def url(self) -> str:
        return f"/_edge/edge.{self.digest}.js"

    @property
    def etag(self) -> bytes:
        return b'"' + self.digest.encode() + b'"'

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``GET /_edge/edge.<hash>.js``: this version, immutable; another hash is
        answered with this version too, uncached (a page cached across a deploy gets
        the running snippet, and its next fetch the right URL)."""
        head = RequestHead.parse(scope)
        current = scope["path"] == self.url
        cache = b"public, max-age=31536000, immutable" if current else b"no-cache"
        headers = [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"cache-control", cache),
            (b"etag", self.etag),
            (b"vary", b"Accept-Encoding"),
            (b"x-content-type-options", b"nosniff"),
        ]
        if head.if_none_match and self.etag in head.if_none_match:
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        accepted = _accept_encoding(scope)
        body = self.body
        if "br" in accepted:
            body = self.br
            headers.append((b"content-encoding", b"br"))
        elif "gzip" in accepted:
            body = self.gzip
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )


def _accept_encoding(scope: dict[str, Any]) -> set[str]:
    """The codings the client accepts (``q=0`` ones refused)."""
    out: set[str] = set()
    for name, value in scope["headers"]:
        if name != b"accept-encoding":
            continue
        for part in value.decode("latin-1").split(","):
            coding, _, params = part.strip().partition(";")
            if params.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
                continue
            out.add(coding.strip().lower())
    return out


class ShortCached:
    """``/_edge/static/``: its files (the unversioned snippet a theme includes by hand,
    the blocks' stylesheet) cached for a short time, so a new version reaches pages."""

    def __init__(self, app: Any, max_age: int = 300) -> None:
        self.app = app
        self.header = (b"cache-control", b"public, max-age=%d" % max_age)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def cached(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] in (200, 304):
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, cached)


ASSET: Final = SnippetAsset.load(STATIC / "edge.js")
SNIPPET_URL: Final = ASSET.url
"""The versioned URL of the running snippet (``/_edge/edge.<hash>.js``)."""


def script_tag(
    selectors: tuple[str, ...], *, consent_cookie: str = "", consent_values: tuple[str, ...] = ()
) -> str:
    """The snippet's script tag for a page whose *selectors* may change in the browser
    (the same for every visitor: the page stays cacheable). Not ``defer``: the tag is
    immutable-cached, so blocking the parser costs a cache hit, and the snippet asks
    /_edge/decide while the page is still parsed and fills each slot as it is parsed
    (bench/snippet.py)."""
    attrs = [f'src="{SNIPPET_URL}"', f'data-edge-slots="{html.escape(",".join(selectors))}"']
    if consent_cookie:
        attrs.append(f'data-consent-cookie="{html.escape(consent_cookie)}"')
        if consent_values:
            attrs.append(f'data-consent-values="{html.escape(",".join(consent_values))}"')
    return f"<script {' '.join(attrs)}></script>"


# --- GET /_edge/decide -----------------------------------------------------------------


def _empty(now: int, consent: bool, css: str) -> dict[str, Any]:
    return {"v": 1, "now": now, "consent": consent, "edits": [], "holdouts": [], "css": css}


class BrowserDecide:
    """``GET /_edge/decide?path=<path and query of the page>``, raw ASGI (it is asked
    on every page the browser personalizes)."""

    def __init__(
        self,
        decider: Decider,
        visitors: Visitors,
        observer: Observer,
        recorder: Recorder,
        identity: Identity,
        stylesheet: Callable[[], str],
    ) -> None:
        self.decider = decider
        self.visitors = visitors
        self.observer = observer
        self.recorder = recorder
        self.identity = identity
        self.stylesheet = stylesheet
        self._candidates: dict[tuple[int, str], list[str]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"cache-control", b"private, no-store"),
            (b"vary", b"Cookie"),
        ]
        if scope["method"] not in ("GET", "HEAD"):
            status = 405
            payload: dict[str, Any] = {"error": "method_not_allowed", "message": "use GET"}
            headers.append((b"allow", b"GET"))
        else:
            status, payload = await self._answer(scope, headers)
        body = msgspec.json.encode(payload)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _answer(
        self, scope: dict[str, Any], headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, dict[str, Any]]:
        params = _params(scope["query_string"])
        target, problem = _page_target(params.get("path"))
        if problem:
            return 400, {"error": "bad_path", "message": problem}
        path, query = target
        head = RequestHead.parse(
            {
                **scope,
                "method": "GET",
                "path": unquote(path),
                "raw_path": path.encode("latin-1"),
                "query_string": query.encode("latin-1"),
            }
        )
        now = int(time.time())
        visit = self.visitors.begin(head)
        css = self.stylesheet()
        if visit.crawler or not self.decider.active:
            return 200, _empty(now, visit.consent, css)
        if visit.new and visit.visitor_id:
            headers.append(self.visitors.cookie_header(visit))
        ruleset = self.decider.rules.ruleset
        page = ruleset.pages.page(head.path)
        touch = self.observer.touch(head, now)
        decision = await self.decider.decide(head, visit, page, touch, browser=True)
        if decision is None:
            return 200, _empty(now, visit.consent, css)
        visitor_id = visit.visitor_id or ""
        out = _empty(decision.now or now, visit.consent, css)
        try:
            items = _items(params.get("items", ""))
            out["edits"] = self._edits(decision, ruleset, page, visitor_id, items)
            out["holdouts"] = self._holdouts(decision, ruleset, visitor_id)
        except Exception:  # fail open: the snippet shows the shop's page
            log.exception("the browser's decision could not be written; nothing is changed")
            return 200, _empty(now, visit.consent, css)
        self.recorder.observed(visit, decision.exposures(), None, now)
        for edit in decision.edits:
            if edit.placement:
                metrics.exposure(edit.placement)
        for placement in decision.held_out:
            metrics.exposure(placement, held_out=True)
        return 200, out

    def _token(self, visitor_id: str, placement: str, arm: str, ts: int) -> str:
        return token(self.identity, visitor_id, placement, arm, ts) if visitor_id else ""

    def _edits(
        self,
        decision: Decision,
        ruleset: RuleSet,
        page: Page | None,
        visitor_id: str,
        items: list[str],
    ) -> list[msgspec.Raw]:
        """The edits as JSON objects, each ``{placement, arm, slot, selector, action,
        html | items, key, order, token}``: all but the token and a reorder's ids
        encoded once per rendered block (:func:`_encode_entry`)."""
        out = []
        ts = decision.now or 0
        for edit in decision.edits:
            if not edit.placement:  # the sidecar's own: the stylesheet is "css"
                continue
            slot = ruleset.slots.get(edit.slot)
            if slot is None:
                continue
            arm = decision.arms.get(edit.placement, "")
            if edit.edit.action == "reorder":
                order = self._order(edit, slot, page, items)
                if order is None:
                    continue
                ids = msgspec.json.encode(order)
                head = _encode_entry(edit, arm, slot.select) + b"," + ids[1:-1]
            else:
                head = _encode_entry(edit, arm, slot.select)
            token_text = self._token(visitor_id, edit.placement, arm, ts)
            out.append(msgspec.Raw(b'%s,"token":"%s"}' % (head, token_text.encode())))
        return out

    def _holdouts(
        self, decision: Decision, ruleset: RuleSet, visitor_id: str
    ) -> list[dict[str, Any]]:
        out = []
        by_id = {p.id: p for p in ruleset.placements} if decision.held_out else {}
        for placement in decision.held_out:
            rule = by_id.get(placement)
            slot = ruleset.slots.get(rule.spec.slot) if rule is not None else None
            if rule is None or slot is None:
                continue
            out.append(
                {
                    "placement": placement,
                    "slot": rule.spec.slot,
                    "selector": slot.select,
                    "token": self._token(visitor_id, placement, "holdout", decision.now or 0),
                }
            )
        return out

    def _order(
        self, edit: SlotEdit, slot: Slot, page: Page | None, items: list[str]
    ) -> dict[str, Any] | None:
        """A reorder as the browser applies it: the items (the slot's children), the
        attribute naming each, and the ids in the order to show, by the very ordering
        of the server path. The ids are the page's (``items=`` of the request) or else
        the products the catalog knows in the page's category. A list whose items are
        known only by their link (``item_link``) is left to the server."""
        order = edit.order
        if order is None or (slot.item_link and not slot.item_id):
            return None
        attr = slot.item_id or "data-product-id"
        ids = items or self._category_products(page)
        ranked_ids: list[str] = []
        if ids:  # (no ids, nothing to rank: a home page's shelves asked without items=)
            keys = [order.key({attr: product_id}) for product_id in ids]
            by_key = dict(zip(keys, ids, strict=True))
            ranked = order.order(list(keys))
            ranked_ids = [by_key[k] for k in ranked if k in by_key]
        return {"items": slot.items or ":scope > *", "key": attr, "order": ranked_ids}

    def _category_products(self, page: Page | None) -> list[str]:
        """The ids of the products the catalog knows in the page's category (kept per
        catalog version)."""
        catalog: Catalog | None = self.decider.activities.catalog
        slug = page.ref("category") if page is not None and page.type == "category" else ""
        if catalog is None or not slug:
            return []
        key = (catalog.version, slug)
        found = self._candidates.get(key)
        if found is None:
            if len(self._candidates) > 256:
                self._candidates.clear()
            name = catalog.category_name(slug) if isinstance(catalog, LearnedCatalog) else slug
            facts = list(catalog.products.values())
            if isinstance(catalog, LearnedCatalog):
                facts += list(catalog.learned.values())
            found = []
            for fact in facts:
                if fact.category in (name, slug) and fact.product_id not in found:
                    found.append(fact.product_id)
                    if len(found) == _MAX_ITEMS:
                        break
            self._candidates[key] = found
        return found


_ENTRIES: dict[tuple[str, str, str, str, str, object], bytes] = {}
_MAX_ENTRIES: Final = 1024


def _encode_entry(edit: SlotEdit, arm: str, selector: str) -> bytes:
    """A browser edit's JSON object up to its token, open (no closing brace):
    ``{"placement":..,"arm":..,"slot":..,"selector":..,"action":..[,"html":..]``.
    Remembered by its fields: a block rendered once (the snippets' render cache
    gives back the same string) is JSON-escaped once, not on every request."""
    action = edit.edit.action
    content = edit.edit.content if action not in ("reorder", "remove") else None
    key = (edit.placement, arm, edit.slot, selector, action, content)
    found = _ENTRIES.get(key)
    if found is None:
        entry: dict[str, Any] = {
            "placement": edit.placement,
            "arm": arm,
            "slot": edit.slot,
            "selector": selector,
            "action": action,
        }
        if content is not None:
            entry["html"] = (
                content.decode("utf-8", "replace") if isinstance(content, bytes) else content
            )
        found = msgspec.json.encode(entry)[:-1]
        if len(_ENTRIES) >= _MAX_ENTRIES:
            _ENTRIES.clear()
        _ENTRIES[key] = found
    for placeholder, value in edit.fill:  # (the visitor's own values: SlotEdit.fill)
        found = found.replace(_json_text(placeholder), _json_text(value))
    return found


def _json_text(text: str) -> bytes:
    """*text* as inside a JSON string (escaped, without the quotes): what it is in an
    entry's ``html``, where a fill's placeholder is replaced by its value."""
    return msgspec.json.encode(text)[1:-1]


def _params(query: bytes) -> dict[str, str]:
    """``path`` and ``items`` of the query (the last of each), percent-decoded."""
    out = {}
    for part in query.decode("latin-1").split("&"):
        name, _, value = part.partition("=")
        if name in ("path", "items"):
            out[name] = _unquoted(value) if len(value) <= _MAX_PATH else unquote_plus(value)
    return out


@functools.lru_cache(maxsize=512)
def _unquoted(value: str) -> str:
    """``unquote_plus``, remembered: every visitor's snippet asks for the same few
    pages (~15k instructions decoded, ~1k remembered)."""
    return unquote_plus(value)


def _page_target(value: str | None) -> tuple[tuple[str, str], str]:
    """``((path, query), "")`` of the page named by ``?path=``, or ``(..., why not)``."""
    if not value:
        return ("", ""), "path: give the page's path and query, e.g. ?path=/c/shoes%3Fpage%3D2"
    if len(value) > _MAX_PATH:
        return ("", ""), f"path: at most {_MAX_PATH} characters"
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return ("", ""), "path: must be a path on this site starting with a single `/`"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return ("", ""), "path: control characters are not allowed"
    path, _, query = value.partition("?")
    return (path, query.partition("#")[0]), ""


def _items(value: str) -> list[str]:
    """``items=id,id,...``: the page's item ids, in page order (at most 200 kept)."""
    if not value:
        return []
    return [v for v in value.split(",") if _ITEM_ID.fullmatch(v)][:_MAX_ITEMS]

"""Preview links: a merchant sees a page as chosen segments would, before going live.

``edge preview-link --segment vip /`` prints ``https://shop/?edge_preview=TOKEN``.
The token names the segments and an expiry, signed with the sidecar's secret
(``Identity.mac``, checked in constant time against every configured secret), so it
cannot be forged or extended. The sidecar answers such a request with the page as
those segments see it: no tracking, ``Cache-Control: no-store``, and a small visible
badge. The token also rides in a session cookie, so the merchant can click around;
``?edge_preview=off`` ends the preview.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from edge.identity import Identity
from edge.request import RequestHead

PREVIEW_PARAM: Final = "edge_preview"
PREVIEW_COOKIE: Final = "edge_preview"
MAX_TTL: Final = 7 * 86_400
_PURPOSE: Final = "preview"
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


class _Claims(msgspec.Struct, array_like=True):
    segments: list[str]
    expires: int


@dataclass(frozen=True, slots=True)
class Preview:
    segments: frozenset[str]
    expires: int


def make_token(identity: Identity, segments: list[str], ttl: int, now: float | None = None) -> str:
    """A signed token for *segments*, valid for *ttl* seconds (at most a week)."""
    for name in segments:
        if not _NAME.match(name):
            raise ValueError(f"not a segment name: {name!r}")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"a preview link lasts between 1 second and {MAX_TTL // 86_400} days")
    now = time.time() if now is None else now
    body = msgspec.json.encode(_Claims(sorted(set(segments)), int(now) + ttl))
    payload = base64.urlsafe_b64encode(body).rstrip(b"=")
    return f"{payload.decode()}.{identity.mac(_PURPOSE, payload)}"


def read_token(identity: Identity, token: str, now: float | None = None) -> Preview | None:
    """The preview a token grants, or None when it is forged, malformed or expired."""
    if len(token) > 2048:
        return None
    payload, dot, tag = token.partition(".")
    if not dot or not identity.check_mac(_PURPOSE, payload.encode(), tag):
        return None
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = msgspec.json.decode(raw, type=_Claims)
    except (ValueError, msgspec.DecodeError):
        return None
    now = time.time() if now is None else now
    if claims.expires < now:
        return None
    return Preview(frozenset(claims.segments), claims.expires)


def preview_link(base_url: str, path: str, token: str) -> str:
    """*path* on *base_url* (the shop's public address) with the token added."""
    if not path.startswith("/"):
        raise ValueError(f"the path must start with '/', got {path!r}")
    base = urlsplit(base_url.rstrip("/"))
    target = urlsplit(path)
    query = [
        (k, v) for k, v in parse_qsl(target.query, keep_blank_values=True) if k != PREVIEW_PARAM
    ]
    query.append((PREVIEW_PARAM, token))
    return urlunsplit((base.scheme, base.netloc, target.path, urlencode(query), ""))


def of_request(identity: Identity, head: RequestHead) -> tuple[Preview | None, str | None]:
    """A valid preview token from the query (taken out of it: the shop must not see
    it) or the preview cookie; and the token to set as the cookie when it came by URL
    (empty: clear it, the preview is over)."""
    param = head.without_param(PREVIEW_PARAM.encode())
    if param is not None:
        token = param.decode("latin-1")
        if token == "off":
            return None, ""
        preview = read_token(identity, token)
        return preview, token if preview is not None else None
    cookie = head.cookies.get(PREVIEW_COOKIE) if PREVIEW_COOKIE.encode() in head.cookie else None
    if cookie:
        return read_token(identity, cookie), None
    return None, None


def response_headers(
    headers: list[tuple[bytes, bytes]], token: str | None
) -> list[tuple[bytes, bytes]]:
    """A preview is for one merchant: never stored anywhere; the token moves from
    the link to a session cookie (or is cleared with ``edge_preview=off``)."""
    out = [(n, v) for n, v in headers if n != b"cache-control"]
    out.append((b"cache-control", b"no-store"))
    if token is not None:
        value = f"{PREVIEW_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
        if not token:
            value += "; Max-Age=0"
        out.append((b"set-cookie", value.encode()))
    return out

"""Who the visitor is: a signed first-party cookie, and whether they consented.

The visitor cookie holds a random 128-bit id and an HMAC-SHA256 tag over it
(``<id>.<tag>``, URL-safe base64). Several secrets may verify (the first signs), so
a secret can be rotated without logging everyone out. Tags are compared in constant
time. Anything missing, malformed or tampered means "a new visitor", never an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any, Final

from edge.caches import Memo

VISITOR_COOKIE: Final = "edge_vid"
SESSION_BINDING_COOKIE: Final = "edge_sess"
"""Binds the visitor cookie to the shop's login session the shop set on this browser
(see :meth:`Identity.session_binding`)."""
COOKIE_MAX_AGE: Final = 400 * 86_400  # browsers cap cookie lifetime at 400 days
_ID_LEN: Final = 22  # 16 bytes, base64url without padding
_TAG_LEN: Final = 43  # 32 bytes
_VERIFIED_KEPT: Final = 50_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _Keyed:
    """HMAC-SHA256 (RFC 2104) with the key's pads hashed once, and a fixed prefix of
    the message too: a tag then costs two hash copies, two updates and two digests in
    C, no Python-level ``hmac.HMAC`` object (18k instructions a tag instead of 26k; a
    returning visitor's first request in a process verifies one). Tags equal
    ``hmac.new(key, prefix + message, hashlib.sha256)``'s (tests/test_identity.py)."""

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes, prefix: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self.inner = hashlib.sha256(key.translate(_IPAD))
        self.inner.update(prefix)
        self.outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self.inner.copy()
        inner.update(message)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_BLOCK: Final = 64  # SHA-256's block size
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def _tag(keyed: _Keyed, visitor_id: str) -> bytes:
    """The tag's 43 characters: unpadded URL-safe base64, as ``_b64`` writes it."""
    digest = keyed.digest(visitor_id.encode("ascii", "replace"))
    return binascii.b2a_base64(digest, newline=False).translate(_URLSAFE)[:_TAG_LEN]


class Identity:
    def __init__(
        self,
        signing_secrets: Sequence[str],
        *,
        consent_cookie: str = "",
        consent_values: Sequence[str] = (),
    ) -> None:
        if not signing_secrets or not all(signing_secrets):
            raise ValueError("at least one non-empty secret is needed to sign visitor cookies")
        self._keys = [s.encode() for s in signing_secrets]
        # Keyed once: a tag then costs copies and updates, and never releases the GIL
        # (hmac.digest does, handing the core to the store's writer thread).
        self._id_macs = [_Keyed(key, b"vid:") for key in self._keys]
        self._keyed: dict[str, list[hmac.HMAC]] = {}
        self._verified: Memo[str, str] = Memo(_VERIFIED_KEPT)
        """Cookie values already verified, whole: a returning visitor's costs a lookup."""
        self.consent_cookie = consent_cookie
        self.consent_values = frozenset(consent_values)

    def new_visitor_id(self) -> str:
        return _b64(secrets.token_bytes(16))

    def sign(self, visitor_id: str) -> str:
        return f"{visitor_id}.{_tag(self._id_macs[0], visitor_id).decode()}"

    def verify(self, cookie_value: str) -> str | None:
        """The visitor id in a cookie value, or None when it is not one we signed."""
        known = self._verified.get(cookie_value)
        if known is not None:
            return known
        visitor_id = self._verify(cookie_value)
        if visitor_id is not None:
            self._verified.put(cookie_value, visitor_id)
        return visitor_id

    def _verify(self, cookie_value: str) -> str | None:
        visitor_id, dot, tag = cookie_value.partition(".")
        if not dot or len(visitor_id) != _ID_LEN or len(tag) != _TAG_LEN:
            return None
        ok = False
        for mac in self._id_macs:  # check every key: timing reveals nothing about which
            ok |= hmac.compare_digest(_tag(mac, visitor_id), tag.encode("utf-8", "replace"))
        return visitor_id if ok else None

    def subject_id(self, anonymous_id: str) -> str | None:
        """The visitor id an ingested ``anonymous_id`` names: the id itself, or the id
        inside a whole ``edge_vid`` cookie value when its tag verifies (constant time);
        None for a cookie value that is not one we signed (the visitor's profile is
        stored under the id alone, so anything else would be a key nothing reads)."""
        if "." not in anonymous_id and "=" not in anonymous_id:
            return anonymous_id
        return self._verify(anonymous_id.removeprefix(f"{VISITOR_COOKIE}="))

    def mac(self, purpose: str, message: bytes) -> str:
        """A tag over *message* with the signing secret, separated by *purpose*:
        ``hmac.digest(secret, purpose + ":" + message, "sha256")``, from :meth:`keyed`'s
        object copied (~18k instructions instead of ~30k: no key set-up a call)."""
        mac = self.keyed(purpose)[0].copy()
        mac.update(message)
        return _b64(mac.digest())

    def check_mac(self, purpose: str, message: bytes, tag: str) -> bool:
        """Whether *tag* is :meth:`mac` of *message* under any of the secrets; constant
        time, every key tried."""
        ok = False
        # As bytes: compare_digest refuses a str with non-ASCII characters (a cookie or
        # query value may hold any), and that must be "no", not an error.
        theirs = tag.encode("utf-8", "replace")
        for keyed in self.keyed(purpose):
            mac = keyed.copy()
            mac.update(message)
            ok |= hmac.compare_digest(_b64(mac.digest()).encode(), theirs)
        return ok

    def keyed(self, purpose: str) -> list[Any]:
        """HMAC-SHA256 objects keyed with every secret (the signing one first) and fed
        *purpose* + ``":"``: ``copy()``, ``update(message)``, ``digest()`` (for
        :meth:`mac` and tags of other shapes: the browser's exposure tokens). Made once;
        the C object under ``hmac.HMAC`` when there is one (its methods without the
        Python wrappers: ~4k instructions less a tag)."""
        macs = self._keyed.get(purpose)
        if macs is None:
            prefix = purpose.encode() + b":"
            made = [hmac.new(key, prefix, hashlib.sha256) for key in self._keys]
            macs = self._keyed[purpose] = [getattr(mac, "_hmac", None) or mac for mac in made]
        return macs

    def session_binding(self, visitor_id: str, session_value: str) -> str:
        """A tag binding *visitor_id* to the shop's session cookie value *session_value*:
        the ``edge_sess`` cookie's value, set when the shop sets its session cookie on a
        response to this visitor. Only the shop can make a browser hold a session value,
        so a browser holding a tag that matches its session cookie proves the shop gave
        that session to that visitor (a visitor cookie alone proves nothing of the kind
        on a shared device)."""
        digest = hashlib.sha256(session_value.encode("utf-8", "replace")).digest()
        return self.mac("session", visitor_id.encode() + b"\0" + digest)

    def session_bound(self, visitor_id: str, session_value: str, tag: str) -> bool:
        """Whether *tag* is :meth:`session_binding` of this visitor and session value
        (constant time, every secret tried)."""
        if not session_value or len(tag) != _TAG_LEN:
            return False
        digest = hashlib.sha256(session_value.encode("utf-8", "replace")).digest()
        return self.check_mac("session", visitor_id.encode() + b"\0" + digest, tag)

    def binding_cookie_header(
        self, visitor_id: str, session_value: str, *, secure: bool, max_age: int | None
    ) -> bytes:
        """The Set-Cookie header of the ``edge_sess`` binding; it lives as long as the
        shop's session cookie does (*max_age* None: until the browser closes)."""
        parts = [
            f"{SESSION_BINDING_COOKIE}={self.session_binding(visitor_id, session_value)}",
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
        ]
        if max_age is not None:
            parts.insert(2, f"Max-Age={max_age}")
        if secure:
            parts.append("Secure")
        return "; ".join(parts).encode()

    @staticmethod
    def clear_binding_header(*, secure: bool) -> bytes:
        parts = [f"{SESSION_BINDING_COOKIE}=", "Path=/", "Max-Age=0", "HttpOnly", "SameSite=Lax"]
        if secure:
            parts.append("Secure")
        return "; ".join(parts).encode()

    def email_hash(self, email: str) -> str:
        """A keyed hash of a normalised email: emails are never stored in clear."""
        normal = email.strip().lower().encode()
        return hmac.new(self._keys[0], b"email:" + normal, hashlib.sha256).hexdigest()[:40]

    def has_consent(self, cookies: dict[str, str]) -> bool:
        """True when no consent cookie is configured, or it holds a "yes" value."""
        if not self.consent_cookie:
            return True
        return cookies.get(self.consent_cookie, "") in self.consent_values

    def set_cookie_header(self, visitor_id: str, *, secure: bool) -> bytes:
        parts = [
            f"{VISITOR_COOKIE}={self.sign(visitor_id)}",
            "Path=/",
            f"Max-Age={COOKIE_MAX_AGE}",
            "HttpOnly",
            "SameSite=Lax",
        ]
        if secure:
            parts.append("Secure")
        return "; ".join(parts).encode()

    @staticmethod
    def clear_cookie_header(*, secure: bool) -> bytes:
        parts = [f"{VISITOR_COOKIE}=", "Path=/", "Max-Age=0", "HttpOnly", "SameSite=Lax"]
        if secure:
            parts.append("Secure")
        return "; ".join(parts).encode()


def parse_cookies(header: bytes | str) -> dict[str, str]:
    """Cookies from a Cookie header; a malformed header yields what could be read."""
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    out: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name and name not in out:
            out[name] = value.strip().strip('"')
    return out

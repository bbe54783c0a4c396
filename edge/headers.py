"""Headers: weighted lists (``Accept-Encoding``, ``Accept-Language``), and the
bearer tokens of ``Authorization``, the script nonce of a
``Content-Security-Policy``."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

_Q: Final = re.compile(r"q\s*=\s*([^;\s]*)")


def weighted(header: str | None) -> list[tuple[str, float | None]]:
    """``a;q=0.5, b`` -> ``[("a", 0.5), ("b", 1.0)]`` in header order: each entry's
    token, stripped and lowercased, and its q-value (1.0 when not given; None when
    given but not a number, for the caller to decide). Empty entries are skipped."""
    found: list[tuple[str, float | None]] = []
    for part in (header or "").split(","):
        token, _, params = part.partition(";")
        token = token.strip().lower()
        if not token:
            continue
        q: float | None = 1.0
        if m := _Q.search(params):
            try:
                q = float(m.group(1))
            except ValueError:
                q = None
        found.append((token, q))
    return found


def bearer(authorization: str) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None for another scheme or
    none. The scheme is case-insensitive (RFC 9110 11.1) and the token is stripped;
    every endpoint that takes a token reads it here, so they all agree."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def same_token(given: str, expected: str) -> bool:
    """Whether *given* is *expected*, in constant time: their SHA-256 digests are
    compared, so neither the token's bytes nor its length show in the timing. An
    empty *expected* (the setting unset) matches nothing."""
    if not expected or not given:
        return False
    a = hashlib.sha256(given.encode()).digest()
    return hmac.compare_digest(a, hashlib.sha256(expected.encode()).digest())


_NONCE: Final = re.compile(rb"'nonce-([A-Za-z0-9+/_=-]{1,128})'")


def script_nonce(policy: bytes) -> str:
    """The nonce a ``Content-Security-Policy`` allows scripts by (``script-src-elem``,
    else ``script-src``, else ``default-src``, as browsers fall back), "" for none.
    Its characters are base64's only: safe in an attribute as they are."""
    directives = {}
    for part in policy.split(b";"):
        name, _, value = part.strip().partition(b" ")
        directives.setdefault(name.lower(), value)
    for name in (b"script-src-elem", b"script-src", b"default-src"):
        if name in directives:
            found = _NONCE.search(directives[name])
            return found.group(1).decode("ascii") if found else ""
    return ""

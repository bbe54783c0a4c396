"""Request headers: weighted lists (``Accept-Encoding``, ``Accept-Language``), and the
bearer tokens of ``Authorization``."""

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

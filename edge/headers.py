"""Request headers with weighted lists (``Accept-Encoding``, ``Accept-Language``)."""

from __future__ import annotations

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

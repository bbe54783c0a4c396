"""The page's language: from the URL where the shop says so, else what the shop's pages
declare (``<html lang>``), else the visitor's ``Accept-Language``, else the shop's first.

The choice is made while the upstream works, before the page's body arrives, so
``<html lang>`` is the one the shop's pages *declared last time*: each personalized
page that passes through the rewriter tells :meth:`PageLanguages.learn` its
``<html lang>``, remembered by path (bounded) and as the site's latest. A path is
then answered by its own memory, a path not seen yet by the site's latest. A path
whose pages declared different languages (a shop that picks the language by a
cookie, not the URL) is remembered as varying, and falls back to ``Accept-Language``.
Pure logic, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from edge.caches import Memo

__all__ = ["VARIES", "PageLanguages", "declared_language", "pick"]

VARIES: Final = "*"
"""A path whose pages declared different languages."""
_PATHS_KEPT: Final = 4096
_HTML_TAG: Final = re.compile(rb"<html\b[^>]*>", re.IGNORECASE)
_LANG_ATTR: Final = re.compile(
    rb"""\blang\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE
)
_TAG: Final = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$")


def declared_language(head: bytes) -> str:
    """The ``lang`` of the ``<html>`` tag at the top of a page (``it-IT`` -> ``it-it``),
    or ``""``. *head* is the first bytes of the decoded body."""
    start = head.find(b"<html")
    if start < 0:
        start = head.lower().find(b"<html")
        if start < 0:
            return ""
    tag = _HTML_TAG.match(head, start)
    if tag is None:
        return ""
    attr = _LANG_ATTR.search(tag.group(0))
    if attr is None:
        return ""
    value = next(g for g in attr.groups() if g is not None)
    text = value.decode("ascii", "replace").strip().lower().replace("_", "-")
    return text if _TAG.match(text) else ""


def pick(tag: str, languages: Sequence[str]) -> str:
    """*tag* among the shop's *languages* (itself, else its primary language), or ``""``."""
    if not tag:
        return ""
    if tag in languages:
        return tag
    primary = tag.split("-")[0]
    return primary if primary in languages else ""


class PageLanguages:
    """What the shop's pages declared, by path (bounded), and the site's latest."""

    def __init__(self, maxsize: int = _PATHS_KEPT) -> None:
        self._paths: Memo[str, str] = Memo(maxsize)
        self.site = ""
        """The language the last page that declared one declared."""

    def learn(self, path: str, tag: str) -> None:
        """The page at *path* declared *tag* (``""``: declared none)."""
        if not tag:
            return
        self.site = tag
        known = self._paths.get(path)
        if known is None:
            self._paths.put(path, tag)
        elif known != tag and known != VARIES:
            self._paths[path] = VARIES

    def of(self, path: str) -> str:
        """The language the page at *path* is expected to declare: its own last one,
        else the site's; ``""`` when unknown or when the path's pages vary."""
        known = self._paths.get(path)
        if known is None:
            return self.site
        return "" if known == VARIES else known

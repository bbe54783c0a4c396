"""Page types: one map from URL paths to the shop's kinds of page, one pattern language.

The same map tells tracking what a visitor looked at (a product view, a category
view, a search) and tells slots on which pages they apply. A pattern is a path:

- literal text matches itself (``/cart``);
- ``{name}`` matches one path segment and captures it (``/p/{product}``);
- ``*`` matches anything, slashes included (``/blog/*``);
- a trailing slash is optional (``/cart`` matches ``/cart/``).

Patterns are tried in the order written, the first match wins. The map is the rule
files' ``[page_types]`` (the shipped ``rules/theme.toml`` maps the demo shop); there is
no other. Pure logic, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from edge.caches import Memo

__all__ = ["NAMED_CAPTURES", "Page", "PageMap", "PatternError", "compile_pattern"]

NAMED_CAPTURES: Final[Mapping[str, str]] = {"product": "product", "category": "category"}
"""The page types whose pattern names a thing, and the capture that names it: a
``product`` page's ``{product}`` is the product's id or slug, a ``category``
page's ``{category}`` the category's. A pattern with a single capture may call it
anything (see :meth:`Page.ref`)."""

_PART: Final = re.compile(r"(\{[^{}]*\}|\*)")
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATHS_KEPT: Final = 4096


class PatternError(ValueError):
    """A page-type pattern that cannot be used; the message says why and how to write it."""


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression for a pattern (match it with ``fullmatch``)."""
    if not pattern.startswith("/"):
        raise PatternError(f"pattern `{pattern}` must start with `/`")
    out: list[str] = []
    names: set[str] = set()
    for part in _PART.split(pattern):
        if part == "*":
            out.append(".*")
        elif part.startswith("{"):
            name = part[1:-1]
            if not _NAME.match(name):
                raise PatternError(
                    f"pattern `{pattern}`: `{part}` is not a name (letters, digits and `_`)"
                )
            if name in names:
                raise PatternError(f"pattern `{pattern}` names `{{{name}}}` twice")
            names.add(name)
            out.append(f"(?P<{name}>[^/]+)")
        else:
            if "{" in part or "}" in part:
                raise PatternError(f"pattern `{pattern}` has an unmatched `{{` or `}}`")
            out.append(re.escape(part))
    return re.compile("".join(out) + "/?")


@dataclass(frozen=True, slots=True)
class Page:
    """A recognised page: its type and what its pattern captured (``{product}``...)."""

    type: str
    params: Mapping[str, str]

    def ref(self, name: str) -> str:
        """What the pattern captured as ``{name}``; or, when it captured one segment
        under another name (``/p/{id}`` for a product), that one. Empty: nothing."""
        found = self.params.get(name)
        if found is not None:
            return found
        if len(self.params) == 1:
            return next(iter(self.params.values()))
        return ""


class PageMap:
    """Paths to pages. A path's answer is remembered (a shop has many pages, but
    visitors keep coming back to the same ones)."""

    def __init__(self, page_types: Mapping[str, Sequence[str]]) -> None:
        self.page_types = {name: list(patterns) for name, patterns in page_types.items()}
        self._patterns = [
            (compile_pattern(p), name)
            for name, patterns in self.page_types.items()
            for p in patterns
        ]
        self._found: Memo[str, Page | None] = Memo(_PATHS_KEPT)

    def page(self, path: str) -> Page | None:
        """The page at *path*, or None when no pattern matches."""
        try:
            return self._found[path]
        except KeyError:
            pass
        found = None
        for pattern, name in self._patterns:
            match = pattern.fullmatch(path)
            if match is not None:
                found = Page(name, match.groupdict())
                break
        return self._found.put(path, found)

    def type_of(self, path: str) -> str:
        """The type of the page at *path*, empty when none matches."""
        page = self.page(path)
        return page.type if page is not None else ""

"""The files shipped with shop-edge: the rule library (``rules/``), the snippet
library (``snippets/``) and the browser snippet (``static/``).

In the source tree (a clone, an editable install) they are the repository's own
top-level directories, the ones a merchant reads and copies: one copy, no symbolic
links. In a built package they are package data under ``edge/shipped/``, copied there
by the build step (``setup.py``), so an installed wheel carries everything it serves.
A leaf: no imports of ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["RULES", "SNIPPETS", "STATIC", "shipped"]

_PACKAGE: Final = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """The directory *name* (``rules``, ``snippets``, ``static``): the package's copy
    when installed, else the source tree's."""
    packaged = _PACKAGE / "shipped" / name
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


RULES: Final = shipped("rules")
SNIPPETS: Final = shipped("snippets")
STATIC: Final = shipped("static")

"""Streaming HTML rewriting by CSS selector (pure logic: no I/O, no framework).

>>> plan = Plan([Edit("[data-edge-slot=home-hero]", "set_inner_content", b"<p>hi</p>")])
>>> rw = plan.rewriter()
>>> rw.write(b'<div data-edge-slot=home-hero><p>old</p></div>') + rw.end()
b'<div data-edge-slot=home-hero><p>hi</p></div>'
"""

from .edits import ACTIONS, Edit, RewriteError
from .rewriter import Plan, Rewriter, rewrite
from .selectors import SelectorError, SelectorList, parse_selector

__all__ = [
    "ACTIONS",
    "Edit",
    "Plan",
    "RewriteError",
    "Rewriter",
    "SelectorError",
    "SelectorList",
    "parse_selector",
    "rewrite",
]

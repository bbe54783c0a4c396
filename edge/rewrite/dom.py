"""A read-only element tree of a whole page, with the rewriter's CSS: pure, no I/O.

For the code that reads the shop's pages after the fact (product facts, carts and
orders, ``edge map``): ``parse(html)`` builds the tree with the rewriter's own
tokenizer (:mod:`edge.rewrite.scanner`, one regex match a tag) and its HTML5 tree
rules (:mod:`edge.rewrite.tree`: implied end tags, scopes, foreign content), and
``select`` matches the rewriter's selectors (:mod:`edge.rewrite.selectors`, the CSS
subset slots use: type, ``*``, ``#id``, ``.class``, attribute tests, descendant and
child combinators, lists), so a selector means here what it means when serving.

- void elements have no content, a self-closing flag counts only in ``<svg>`` and
  ``<math>``; the content of ``<script>``, ``<style>`` and the other raw text
  elements is their :attr:`Element.content`, not text; ``<title>``, ``<textarea>``
  text is text;
- character references are decoded in attribute values (as the rewriter decodes
  them) and in text;
- elements inside ``<template>`` are left out (the rewriter never matches them);
- broken markup never raises: a stray ``<`` is text, an end tag nothing opened is
  ignored, whatever is open at the end closes there.

The text is kept once, as the page's list of text chunks; each element knows its
stretch of it, and its stretch of the page's element list, so ``text()`` is a join
and a descendant walk is a slice (no recursion: a page may nest deeper than
Python's stack).

Measured (timeit, best of 5 x 30: parse + 5 selects on each of
tests/themes/*/category.html and product.html, 8 pages, 67 KB, on the 2-core VM)
for the three trees this module replaced and for itself:

=============================================  =========  =================
tree                                           run 1      runs 2-3 (busier)
=============================================  =========  =================
``facts._Tree`` (tokenizer, no tree rules)     6.4 ms     16.4-22.2 ms
``fitting.parse_document`` (+ tree rules)      9.3 ms     29.7-33.8 ms
``carts.Document`` (``html.parser``)           12.8 ms    32.7-40.5 ms
this module (the first + the second's rules)   7.0 ms     20.7-24.8 ms
=============================================  =========  =================
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from html import unescape
from typing import Final

from . import scanner as sc
from .selectors import ComplexSelector, SelectorList, parse_selector
from .tree import HTML, end_tag_closes, start_tag_place

__all__ = ["Document", "Element", "parse"]

_DOCUMENT: Final = b"#document"
_NOT_TEXT: Final = sc.RAWTEXT
"""Raw text elements whose content is not text (``<title>`` and ``<textarea>`` are)."""

Selector = str | SelectorList


class Element:
    """An element of the page: its name (lowercase bytes), attributes (lowercase
    names, decoded values, as the selectors read them), parent and children."""

    __slots__ = (
        "attrs",
        "children",
        "content",
        "doc",
        "end",
        "index",
        "last",
        "name",
        "parent",
        "start",
    )

    def __init__(
        self, doc: Document, name: bytes, attrs: dict[bytes, bytes], parent: Element | None
    ) -> None:
        self.doc = doc
        self.name = name
        self.attrs = attrs
        self.parent = parent
        self.children: list[Element] = []
        self.content = ""
        """The raw content of a ``<script>``, ``<style>``, ``<title>``... (else "")."""
        self.start = len(doc.texts)  # its text: doc.texts[start:end]
        self.end = -1
        self.index = len(doc.elements) - 1  # its descendants: elements[index + 1 : last + 1]
        self.last = self.index

    def __repr__(self) -> str:
        return f"<Element {self.name.decode('latin-1')} {len(self.children)} children>"

    def attr(self, name: str) -> str:
        """An attribute's value, "" when absent."""
        return self.attrs.get(name.encode(), b"").decode("utf-8", "replace")

    def text(self) -> str:
        """The text content, whitespace collapsed (as ``textContent``, without the
        content of scripts and styles)."""
        chunks = self.doc.texts[self.start : self.end]
        raw = b"".join(chunks)
        if b"&" in raw:
            text = "".join(unescape(c.decode("utf-8", "replace")) for c in chunks)
        else:
            text = raw.decode("utf-8", "replace")
        return " ".join(text.split())

    def walk(self) -> Sequence[Element]:
        """The descendants, in document order."""
        if self.parent is None:
            return self.doc.elements[:]
        return self.doc.elements[self.index + 1 : self.last + 1]

    def ancestors(self) -> Iterator[Element]:
        """Parent first, up to the element under the document."""
        node = self.parent
        while node is not None and node.parent is not None:
            yield node
            node = node.parent

    def matches(self, selector: Selector) -> bool:
        """Whether *selector* matches this element."""
        if self.parent is None:
            return False
        parsed = _parsed(selector).selectors
        return any(_matches(self, cs, len(cs.compounds) - 1) for cs in parsed)

    def select(self, selector: Selector) -> list[Element]:
        """The descendants *selector* matches, in document order (ancestors above
        this element count for its combinators, as ``querySelectorAll``); raises
        :class:`~edge.rewrite.selectors.SelectorError` for a selector string it
        cannot parse."""
        parsed = _parsed(selector).selectors
        if len(parsed) == 1:
            cs = parsed[0]
            i = len(cs.compounds) - 1
            return [el for el in self.walk() if _matches(el, cs, i)]
        return [
            el for el in self.walk() if any(_matches(el, c, len(c.compounds) - 1) for c in parsed)
        ]

    def select_one(self, selector: Selector) -> Element | None:
        """The first descendant *selector* matches, or None."""
        parsed = _parsed(selector).selectors
        for el in self.walk():
            if any(_matches(el, cs, len(cs.compounds) - 1) for cs in parsed):
                return el
        return None


class Document(Element):
    """The page: the root of its elements (named ``#document``), the page's elements
    in document order, and its text chunks."""

    __slots__ = ("elements", "texts")

    def __init__(self) -> None:
        self.texts: list[bytes] = []
        self.elements: list[Element] = []
        super().__init__(self, _DOCUMENT, {}, None)

    @property
    def scripts(self) -> list[tuple[str, str]]:
        """Each ``<script>``'s type (lowercase) and content, in page order."""
        return [
            (el.attr("type").lower(), el.content) for el in self.elements if el.name == b"script"
        ]


def _parsed(selector: Selector) -> SelectorList:
    return parse_selector(selector) if isinstance(selector, str) else selector


def _matches(el: Element | None, cs: ComplexSelector, i: int) -> bool:
    if el is None or el.parent is None or not cs.compounds[i].matches(el.name, el.attrs):
        return False
    if i == 0:
        return True
    parent = el.parent
    if cs.combinators[i - 1] == ">":
        return _matches(parent, cs, i - 1)
    while parent is not None and parent.parent is not None:
        if _matches(parent, cs, i - 1):
            return True
        parent = parent.parent
    return False


# --- building -----------------------------------------------------------------------

_Stack = list[tuple[bytes, int, int, Element]]


def parse(html: str) -> Document:
    """The page as an element tree (never raises on broken markup)."""
    doc = Document()
    data = html.encode("utf-8", "surrogateescape")
    stack: _Stack = []
    texts = doc.texts
    token = sc.TOKEN.match
    inert = 0  # how many <template> are open: their content is left out
    templates = b"<template" in data or b"<TEMPLATE" in data
    pos, n = 0, len(data)
    while pos < n:
        lt = data.find(b"<", pos)
        if lt < 0:
            if not inert:
                texts.append(data[pos:])
            break
        if lt > pos and not inert:
            texts.append(data[pos:lt])
        m = token(data, lt)
        if m is None:
            if not inert:
                texts.append(b"<")
            pos = lt + 1
        elif m.group(1):
            pos = _start_tag(doc, data, m, stack, inert)
            if templates:
                inert = sum(1 for entry in stack if entry[0] == b"template")
        elif m.group(3):
            if stack:
                index = end_tag_closes(stack, m.group(3).lower())
                if index >= 0:
                    _close(doc, stack, index)
                    if templates:
                        inert = sum(1 for entry in stack if entry[0] == b"template")
            pos = m.end()
        else:
            pos = m.end()
    _close(doc, stack, 0)
    doc.end = len(texts)
    doc.last = len(doc.elements) - 1
    return doc


def _close(doc: Document, stack: _Stack, index: int) -> None:
    end, last = len(doc.texts), len(doc.elements) - 1
    for entry in stack[index:]:
        element = entry[3]
        element.end = end
        element.last = last
    del stack[index:]


def _start_tag(doc: Document, data: bytes, m: re.Match[bytes], stack: _Stack, inert: int) -> int:
    """Open the element of start tag *m*; the position after it (and after the content
    of an element whose content is text, such as ``<script>``)."""
    name, area = m.group(1).lower(), m.group(2)
    ns, keep = start_tag_place(stack, name)
    if keep < len(stack):
        _close(doc, stack, keep)
    parent = stack[-1][3] if stack else doc
    element = Element(doc, name, sc.parse_attrs(area) if area else {}, parent)
    if not inert:
        parent.children.append(element)
        doc.elements.append(element)
        element.index = element.last = len(doc.elements) - 1
    pos = m.end()
    if name in sc.VOID or (ns != HTML and sc.is_self_closing(area)):
        element.end = element.start
        return pos
    if ns == HTML and name in sc.TEXT_ELEMENTS:
        if name == b"script":
            close = sc.script_end(data, pos)
        else:
            found = sc.raw_end_pattern(name).search(data, pos)
            close = found.start() if found else -1
        if close < 0:
            close = len(data)
        raw = data[pos:close]
        element.content = raw.decode("utf-8", "replace")
        if name not in _NOT_TEXT and not inert:
            doc.texts.append(raw)
        element.end = len(doc.texts)
        after = data.find(b">", close)
        return len(data) if after < 0 else after + 1
    stack.append((name, ns, 0, element))
    return pos

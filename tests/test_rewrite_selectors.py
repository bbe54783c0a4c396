"""Selector parsing and matching; matching is checked against selectolax (lexbor)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.rewrite import Edit, Rewriter, SelectorError, parse_selector
from tests._hypothesis import examples

lexbor = pytest.importorskip("selectolax.lexbor")

MARK = b"<!--@m-->"
_MARKED = re.compile(rb"<!--@m--><[^>]*?data-i=\"?(\d+)")


def ours(html: bytes, selector: str) -> list[int]:
    """data-i of the elements our rewriter matches (marked with ``before``)."""
    rw = Rewriter([Edit(selector, "before", MARK)])
    out = rw.write(html) + rw.end()
    assert rw.error is None, rw.error
    return sorted(int(m.group(1)) for m in _MARKED.finditer(out))


def theirs(html: bytes, selector: str) -> list[int]:
    tree = lexbor.LexborHTMLParser(html.decode("utf-8"))
    return sorted(
        {int(n.attributes["data-i"]) for n in tree.css(selector) if "data-i" in n.attributes}
    )


# -- a generator of storefront-shaped pages ------------------------------------------

BLOCK = ["div", "section", "article", "header", "nav", "main", "footer", "ul", "ol", "p"]
PHRASING = ["span", "a", "b", "em", "img", "br", "input"]
CLASSES = ["card", "product", "price", "hero", "banner", "x", "item-1", "a&b"]
IDS = ["hero", "main", "cart", "p1"]
VALUES = ["home-hero", "cart", "p1", "p2", "a b", "x"]
VOIDS = {"img", "br", "input"}


def _attr_text(draw: st.DrawFn, name: str, value: str) -> str:
    shape = draw(st.sampled_from(["dq", "sq", "uq", "ent"]))
    if shape == "ent" or "&" in value:
        value = value.replace("&", "&amp;")
        return f'{name}="{value}"'
    if shape == "uq" and value and " " not in value:
        return f"{name}={value}"
    if shape == "sq":
        return f"{name}='{value}'"
    return f'{name}="{value}"'


@st.composite
def element(draw: st.DrawFn, depth: int = 0, phrasing: bool = False) -> str:
    """One element; ``data-i="@"`` placeholders are numbered by :func:`page`."""
    tag = draw(st.sampled_from(PHRASING if phrasing or depth > 3 else BLOCK + PHRASING))
    attrs = ['data-i="@"']
    if draw(st.booleans()):
        classes = draw(st.lists(st.sampled_from(CLASSES), min_size=1, max_size=3, unique=True))
        attrs.append(_attr_text(draw, "class", " ".join(classes)))
    if draw(st.integers(0, 5)) == 0:
        attrs.append(_attr_text(draw, "id", draw(st.sampled_from(IDS))))
    if draw(st.booleans()):
        attrs.append(_attr_text(draw, "data-edge-slot", draw(st.sampled_from(VALUES))))
    attrs = draw(st.permutations(attrs))
    upper = draw(st.integers(0, 4)) == 0
    name = tag.upper() if upper else tag
    start = f"<{name} {' '.join(attrs)}>"
    if tag in VOIDS:
        return start
    if tag in ("ul", "ol"):
        items = []
        for _ in range(draw(st.integers(0, 3))):
            inner = "".join(draw(st.lists(element(depth + 2, False), max_size=2)))
            close = "" if draw(st.booleans()) else "</li>"
            items.append(f'<li data-i="@">{inner}{close}\n')
        return f"{start}{''.join(items)}</{name}>"
    child_phrasing = phrasing or tag in PHRASING or tag == "p"
    children = draw(st.lists(element(depth + 1, child_phrasing), max_size=3))
    text = draw(st.sampled_from(["", "text", " é ", "a &amp; b", "x\r\ny"]))
    extra = draw(
        st.sampled_from(
            [
                "",
                "<!-- <div class=hero data-i=0> -->",
                "<script>var s='<div id=hero data-i=0>';</script>",
            ]
        )
    )
    if tag == "a":  # nested links are restructured by the adoption agency: keep them out
        children = []
    omit_end = tag == "p" and not phrasing and draw(st.booleans())
    return f"{start}{text}{extra}{''.join(children)}{'' if omit_end else f'</{name}>'}"


@st.composite
def page(draw: st.DrawFn) -> bytes:
    body = "".join(draw(st.lists(element(), min_size=1, max_size=5)))
    numbers = iter(range(1, 99999))
    body = re.sub(r'data-i="@"', lambda _m: f'data-i="{next(numbers)}"', body)
    # An omitted </p> is closed by the next block, or by </body> at the end.
    return (
        "<!DOCTYPE html><html><head><title>t <div></title>"
        "<style>.hero > p { color: red }</style></head>"
        f'<body data-i="0">{body}<div data-i="99999">end</div></body></html>'
    ).encode()


COMPOUNDS = [
    "div",
    "span",
    "li",
    "p",
    "a",
    "ul",
    "section",
    "*",
    ".card",
    ".product",
    ".hero",
    ".a\\&b",
    "#hero",
    "#cart",
    "[data-edge-slot]",
    "[data-edge-slot=home-hero]",
    "[data-edge-slot='a b']",
    "[data-edge-slot~=b]",
    "[data-edge-slot^=ho]",
    "[data-edge-slot$=art]",
    "[data-edge-slot*=om]",
    "[class*=rd]",
    "div.card",
    "li.product",
    "span.price.x",
    "DIV",
    "[DATA-EDGE-SLOT=cart]",
    "p.hero",
]


@st.composite
def selector(draw: st.DrawFn) -> str:
    parts = [draw(st.sampled_from(COMPOUNDS))]
    for _ in range(draw(st.integers(0, 2))):
        parts.append(draw(st.sampled_from([" ", " > "])))
        parts.append(draw(st.sampled_from(COMPOUNDS)))
    text = "".join(parts)
    if draw(st.integers(0, 5)) == 0:
        text += ", " + draw(st.sampled_from(COMPOUNDS))
    return text


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page(), selector())
def test_matches_agree_with_lexbor(html: bytes, sel: str) -> None:
    assert ours(html, sel) == theirs(html, sel)


STOREFRONT = b"""<!doctype html>
<HTML lang=en><head><meta charset=utf-8><title>Shop &amp; co <b data-i=0></title>
<script>if (a < b) document.write('<div class="hero" data-i=0>');</script>
<style>.hero{}</style></head>
<body data-i=1 class='home page'>
<header data-i=2 id=top><nav data-i=3 class="nav main"><ul data-i=4><li data-i=5><a data-i=6 href=/>Home</a>
<li data-i=7 class=active><a data-i=8 href="/c?a=1&amp;b=2">Shoes</a></ul></nav></header>
<main data-i=9 ID=main>
<div data-i=10 data-edge-slot=home-hero class="hero banner"><h1 data-i=11>Hello</h1><p data-i=12>Text<p data-i=13>More</div>
<!-- <div class="hero" data-i=0> -->
<textarea data-i=14><div class=hero data-i=0></textarea>
<template data-i=15><div class=hero data-i=0>t</div></template>
<svg data-i=16 class=icon viewBox="0 0 1 1"><path data-i=17 class=hero d="M0"/><title data-i=18>t</title></svg>
<ol data-i=19 class="products grid">
<li data-i=20 data-product-id=p1 class=product><img data-i=21 src=a.jpg alt="P &quot;1&quot;"><span data-i=22 class=price>1</span>
<li data-i=23 data-product-id=p2 class=product><span data-i=24 class="price sale">2</span>
<li data-i=25 DATA-PRODUCT-ID=p3 class=product data-product-id=ignored><span data-i=26 class=price>3</span>
</ol>
<select data-i=27><option data-i=28>a<option data-i=29 selected>b<optgroup data-i=30><option data-i=31>c</select>
<dl data-i=32><dt data-i=33>t<dd data-i=34>d<dt data-i=35>t2</dl>
</main>
<footer data-i=36><p data-i=37>\xc2\xa9 caf\xc3\xa9</footer>
</body></HTML>
"""

STOREFRONT_SELECTORS = [
    "li",
    "li.product",
    "ol.products > li",
    "ol li span.price",
    ".price",
    "[data-product-id=p3]",
    "#main .hero",
    "main > div",
    "p",
    "option",
    "dt, dd",
    "nav a",
    "a[href*='a=1&b=2']",
    "img[alt='P \"1\"']",
    "body > header > nav li",
    "header li > a",
    "select option",
    "div p",
    ".hero",
    "svg",
    "[data-i]",
    "*",
    "main li, footer p",
    "ol > li > span",
    "ul > li a",
]


@pytest.mark.parametrize("sel", STOREFRONT_SELECTORS)
def test_real_world_shaped_page_agrees_with_lexbor(sel: str) -> None:
    assert ours(STOREFRONT, sel) == theirs(STOREFRONT, sel)


# -- unit tests for each selector form -------------------------------------------------

DOC = (
    b'<div id=a class="x y" data-k="foo-bar baz" lang=en-US>'
    b"<p class=x><span title='a&amp;b'>s</span></p></div><SPAN Class=X>u</SPAN>"
)


def names(selector: str) -> list[bytes]:
    rw = Rewriter([Edit(selector, "before", b"|")])
    out = rw.write(DOC) + rw.end()
    return re.findall(rb"\|<(\w+)", out)


@pytest.mark.parametrize(
    ("sel", "expected"),
    [
        ("div", [b"div"]),
        ("SPAN", [b"span", b"SPAN"]),
        ("*", [b"div", b"p", b"span", b"SPAN"]),
        ("#a", [b"div"]),
        (".x", [b"div", b"p"]),
        (".X", [b"SPAN"]),
        (".x.y", [b"div"]),
        ("[lang]", [b"div"]),
        ("[LANG]", [b"div"]),
        ("[data-k=baz]", []),
        ('[data-k="foo-bar baz"]', [b"div"]),
        ("[data-k~=baz]", [b"div"]),
        ("[data-k^=foo]", [b"div"]),
        ("[data-k$=baz]", [b"div"]),
        ("[data-k*='bar b']", [b"div"]),
        ("[data-k^='']", []),
        ("[lang|=en]", [b"div"]),
        ("[lang=en-us i]", [b"div"]),
        ("[title='a&b']", [b"span"]),
        ("div span", [b"span"]),
        ("div > span", []),
        ("div > p > span", [b"span"]),
        ("p, #a", [b"div", b"p"]),
        ("div.x > p.x span[title]", [b"span"]),
    ],
)
def test_selector_forms(sel: str, expected: list[bytes]) -> None:
    assert names(sel) == expected


@pytest.mark.parametrize(
    ("sel", "column", "words"),
    [
        ("", 1, "empty selector"),
        ("div,", 5, "empty selector"),
        ("div >", 6, "must be followed"),
        ("a + b", 3, "sibling combinator"),
        ("a:hover", 2, "pseudo-classes"),
        ("[data-x", 1, "unclosed '['"),
        ("[data-x!=v]", 8, "expected an operator"),
        ("[data-x=", 9, "expected a value"),
        ("[data-x='v]", 9, "unclosed string"),
        ("[data-x=v", 1, "unclosed '['"),
        ("#", 2, "expected an id"),
        ("..x", 2, "expected a class name"),
        ("div$", 4, "unexpected '$'"),
        ("[=x]", 2, "expected an attribute name"),
        ("ns|div", 3, "namespace"),
    ],
)
def test_selector_errors_name_position_and_problem(sel: str, column: int, words: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(sel)
    assert info.value.position + 1 == column
    assert words in str(info.value)
    assert f"column {column}" in str(info.value)


def test_selector_error_raised_when_compiling_edits() -> None:
    with pytest.raises(SelectorError, match="pseudo-classes"):
        Rewriter([Edit("li:first-child", "remove")])

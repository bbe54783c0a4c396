"""edge/rewrite/dom.py: the page's element tree, read with the rewriter's tokenizer,
tree rules and selectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.rewrite.dom import Document, Element, parse
from edge.rewrite.selectors import SelectorError, parse_selector

THEMES = Path(__file__).parent / "themes"


def names(elements: list[Element] | tuple[Element, ...]) -> list[str]:
    return [e.name.decode() for e in elements]


def shape(element: Element) -> str:
    """The tree as nested names: ``ul(li,li(p))``."""
    inner = ",".join(shape(child) for child in element.children)
    return element.name.decode() + (f"({inner})" if inner else "")


# --- nesting -------------------------------------------------------------------------


def test_implied_end_tags_close_list_items_paragraphs_and_cells() -> None:
    doc = parse("<ul><li>a<li>b<p>x<p>y</ul><table><tr><td>1<td>2<tr><td>3</table>")
    assert [shape(c) for c in doc.children] == ["ul(li,li(p,p))", "table(tr(td,td),tr(td))"]
    assert [li.text() for li in doc.select("li")] == ["a", "bxy"]
    assert [td.text() for td in doc.select("td")] == ["1", "2", "3"]


def test_a_block_closes_an_open_paragraph() -> None:
    doc = parse("<p>one<div>two</div><p>three")
    assert shape(doc) == "#document(p,div,p)"


def test_an_end_tag_closes_the_elements_opened_inside_it() -> None:
    doc = parse("<div><span><b>x</div><i>y</i>")
    assert shape(doc) == "#document(div(span(b)),i)"
    assert doc.select_one("i").parent is doc


def test_what_is_open_at_the_end_closes_there() -> None:
    doc = parse("<div class=a><span>unclosed")
    span = doc.select_one("div.a > span")
    assert span is not None and span.text() == "unclosed"
    assert doc.select_one("div").text() == "unclosed"


def test_void_elements_hold_nothing() -> None:
    doc = parse('<div><img src="a.png"><br>text<input name=q value=1>after</div>')
    div = doc.select_one("div")
    assert names(div.children) == ["img", "br", "input"]
    assert all(not e.children for e in div.children)
    assert div.text() == "textafter"


def test_self_closing_counts_only_in_foreign_content() -> None:
    doc = parse('<svg><path d="M0"/><circle r="1"/></svg><div/><span>in the div</span>')
    assert shape(doc) == "#document(svg(path,circle),div(span))"


def test_template_content_is_left_out() -> None:
    doc = parse("<div><template><b class=x>hidden</b></template><i>shown</i></div>")
    assert doc.select(".x") == []
    assert doc.select_one("div").text() == "shown"


# --- raw text and entities --------------------------------------------------------------


def test_scripts_and_styles_are_content_not_text_or_markup() -> None:
    html = (
        '<div><script type="application/LD+json">{"a": "<b>not a tag</b>"}</script>'
        "<style>p > b { color: red }</style>kept</div>"
    )
    doc = parse(html)
    assert doc.select("b") == []
    assert doc.select_one("div").text() == "kept"
    assert doc.scripts == [("application/ld+json", '{"a": "<b>not a tag</b>"}')]
    assert doc.select_one("style").content == "p > b { color: red }"


def test_title_and_textarea_are_text() -> None:
    doc = parse("<title>A &amp; <b>B</b></title><textarea>x < y</textarea>")
    assert doc.select_one("title").text() == "A & <b>B</b>"
    assert doc.select_one("textarea").text() == "x < y"
    assert doc.select("b") == []


def test_entities_are_decoded_in_text_and_attributes() -> None:
    doc = parse('<a href="/p?a=1&amp;b=2" title="caf&eacute;">Tom &amp; Jerry &#8364;&#x31;</a>')
    a = doc.select_one("a")
    assert a.attr("href") == "/p?a=1&b=2"
    assert a.attr("title") == "café"
    assert a.attr("missing") == ""
    assert a.text() == "Tom & Jerry €1"
    assert doc.select('a[href="/p?a=1&b=2"]') == [a]


def test_text_collapses_whitespace_and_joins_as_text_content() -> None:
    doc = parse("<p>\n  Blue\t <b>Shirt</b>s\u00a0 <i>\n</i> XL  </p>")
    assert doc.select_one("p").text() == "Blue Shirts XL"


# --- selectors ----------------------------------------------------------------------------

PAGE = """
<main id="shop">
  <ul class="products grid">
    <li class="product" data-id="1"><a href="/p/one"><h2>One</h2></a><span class=price>1</span></li>
    <li class="product sale" data-id="2"><a href="/p/two"><h2>Two</h2></a></li>
  </ul>
  <aside><li class="product" data-id="3"><h2>Three</h2></li></aside>
</main>
"""


@pytest.mark.parametrize(
    ("selector", "found"),
    [
        ("li.product", ["1", "2", "3"]),
        ("ul li", ["1", "2"]),  # descendant
        ("main > ul > li", ["1", "2"]),  # child
        ("main > li", []),
        ("#shop li.sale", ["2"]),
        ("[data-id]", ["1", "2", "3"]),
        ("[data-id='3']", ["3"]),
        ("li[class~=sale]", ["2"]),
        ("li[data-id^=1], aside li", ["1", "3"]),  # a list matches in page order
        ("*[data-id$='2']", ["2"]),
        ("ul.products.grid li", ["1", "2"]),
    ],
)
def test_select_matches_the_rewriters_css(selector: str, found: list[str]) -> None:
    doc = parse(PAGE)
    assert [e.attr("data-id") for e in doc.select(selector)] == found
    assert [e.attr("data-id") for e in doc.select(parse_selector(selector))] == found


def test_an_elements_select_sees_its_descendants_with_their_ancestors() -> None:
    doc = parse(PAGE)
    first = doc.select_one("li.product")
    assert first is not None
    assert names(first.select("h2")) == ["h2"]
    assert names(first.select("ul li h2")) == ["h2"]  # ancestors above it count
    assert first.select("li") == []  # not itself
    assert first.matches("ul > li") and not first.matches("aside li")
    assert first.select_one("a").attr("href") == "/p/one"
    assert first.select_one("table") is None
    assert names(first.walk()) == ["a", "h2", "span"]
    assert names(list(first.ancestors())) == ["ul", "main"]


def test_selectors_beyond_the_subset_raise() -> None:
    doc = parse(PAGE)
    with pytest.raises(SelectorError):
        doc.select("li:first-child")
    with pytest.raises(SelectorError):
        doc.select("li + li")


def test_the_document_matches_no_selector() -> None:
    doc = parse("<div></div>")
    assert isinstance(doc, Document)
    assert not doc.matches("*")
    assert names(doc.select("*")) == ["div"]


# --- broken markup -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        "",
        "<",
        "<div",
        "</p></div></body>",
        "<a href='x>unclosed quote",
        "<<>><!--",
        "a & b &amp &#xZZ; &#99999999;",
        "<svg><p>breaks out</svg></p>",
        "<template><b>",
        "<script>never ends",
        "<table><td><tr><caption></table></td>",
        "<b><p></b></p>",
        "\udcff\x00<div\x00>",
        "<div>" * 1500 + "deep",
    ],
)
def test_broken_markup_never_raises(html: str) -> None:
    doc = parse(html)
    for element in doc.walk():
        element.text()
        assert element.parent is not None
    doc.select("div p, b > p, [x]")
    assert isinstance(doc.text(), str)


def test_deep_nesting_is_walked_without_recursion() -> None:
    doc = parse("<div>" * 1500 + "deep")
    assert len(doc.select("div > div")) == 1499
    assert doc.select_one("div").text() == "deep"


@pytest.mark.parametrize("path", sorted(THEMES.glob("*/*.html")), ids=lambda p: str(p.parent.name))
def test_the_theme_pages_parse_into_one_tree(path: Path) -> None:
    doc = parse(path.read_text(encoding="utf-8"))
    assert doc.select_one("html > body") is not None
    every = doc.walk()
    assert len(every) == len({id(e) for e in every})
    for element in every:  # each element's children are in its own stretch
        assert all(child.parent is element for child in element.children)
        assert element.select("*") == list(element.walk())

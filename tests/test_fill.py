"""A visitor's own values in a block (the profiling form's token): the block keeps its
placeholder (rendered, encoded, replayed once for every visitor) and the value takes
its place where the content leaves the sidecar (``SlotEdit.fill``). Every response is
byte for byte what the block filled before the rewrite gives, replayed or not; the
shop's own bytes are never searched."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.activities import CSRF_SLOT
from edge.browser import _encode_entry
from edge.decide import _edit_links, _links
from edge.rewrite import Edit
from edge.rewriting import Rewriting, SlotEdit, filled
from tests._hypothesis import examples

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
FORM = (
    '<form action="/_edge/profile-form" method="post">'
    '<input type="hidden" name="csrf" value="{slot}">'
    "<label>Taglia preferita? {slot}</label><button>Salva…</button></form>"
)


def page(extra: str) -> str:
    return (
        "<!doctype html><html><head><title>Negozio</title></head><body>"
        f'<header>Aurora — {extra}</header><aside id="form"></aside>'
        '<div id="hero"><p>Benvenuta</p></div><footer>(c) è</footer></body></html>'
    )


def edits(form: str, fill: tuple[tuple[str, str], ...]) -> list[SlotEdit]:
    return [
        SlotEdit("form", "form", Edit("#form", "append", form), fill=fill),
        SlotEdit("hero", "hero", Edit("#hero", "set_inner_content", "<p>Ciao Anna</p>")),
    ]


def respond(rewriting: Rewriting, slot_edits: list[SlotEdit], body: bytes, charset: str) -> bytes:
    content_type = f"text/html; charset={charset}".encode()
    rewrite = rewriting.start(slot_edits, content_type, b"", b"/")
    cut = len(body) // 3
    return rewrite.feed(body[:cut], True) + rewrite.feed(body[cut:], False)


@settings(max_examples=examples(60), deadline=None)
@given(
    tokens=st.lists(
        st.one_of(st.text(B64, min_size=43, max_size=43), st.text(max_size=12)),
        min_size=1,
        max_size=5,
    ),
    charset=st.sampled_from(["utf-8", "iso-8859-1", "windows-1252", "shift_jis", "utf-16"]),
    shop_has_it=st.booleans(),
)
def test_a_filled_block_is_the_block_filled_before_the_rewrite(
    tokens: list[str], charset: str, shop_has_it: bool
) -> None:
    """Visitor after visitor (the first rewrite recorded, the next ones replayed), in
    charsets where bytes can be replaced and in those where they cannot: the response
    is the one for the block with the value already in it, from a sidecar that
    replays nothing; the placeholder in the shop's own page stays as it is."""
    form = FORM.format(slot=CSRF_SLOT)
    body = page(CSRF_SLOT if shop_has_it else "saldi").encode(charset, "xmlcharrefreplace")
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    for _round in range(2):
        for token in tokens:
            fill = ((CSRF_SLOT, token),)
            out = respond(rewriting, edits(form, fill), body, charset)
            fresh = Rewriting(max_bytes=1 << 20, replay_bytes=0)
            expected = respond(fresh, edits(filled(form, fill), ()), body, charset)
            assert out == expected
            if shop_has_it:
                assert out.count(CSRF_SLOT.encode(charset)[-20:]) >= 1
    assert rewriting._plans.replays.hits >= 1


def test_the_token_is_in_the_page_and_the_placeholder_is_not() -> None:
    rewriting = Rewriting(max_bytes=1 << 20, replay_bytes=1 << 20)
    body = page("saldi").encode()
    for token in ("t" * 43, "u" * 43, "t" * 43):
        out = respond(
            rewriting, edits(FORM.format(slot=CSRF_SLOT), ((CSRF_SLOT, token),)), body, "utf-8"
        )
        assert out.count(token.encode()) == 2 and CSRF_SLOT.encode() not in out
    assert rewriting._plans.replays.hits >= 2


@given(token=st.one_of(st.text(B64, min_size=43, max_size=43), st.text(max_size=12)))
def test_the_browsers_entry_has_the_value(token: str) -> None:
    """``/_edge/decide``'s JSON entry for a filled block is the one for the block
    with the value in it (and the entry kept for the block serves every visitor)."""
    form = FORM.format(slot=CSRF_SLOT)
    edit = edits(form, ((CSRF_SLOT, token),))[0]
    expected = edits(filled(form, ((CSRF_SLOT, token),)), ())[0]
    assert _encode_entry(edit, "a", "#form") == _encode_entry(expected, "a", "#form")
    entry = msgspec.json.decode(_encode_entry(edit, "a", "#form") + b"}")
    assert entry["html"] == filled(form, ((CSRF_SLOT, token),))


@given(token=st.text(B64, min_size=1, max_size=43))
def test_the_links_of_a_filled_block_are_those_of_the_block_the_visitor_gets(token: str) -> None:
    fill = ((CSRF_SLOT, token),)
    plain = FORM.format(slot=CSRF_SLOT) + '<a href="/c/scarpe-donna">scarpe</a>'
    in_link = plain + f'<a href="/p/{CSRF_SLOT}/x">mine</a>'
    assert _links(in_link, "/") != _links(filled(in_link, fill), "/")  # (it matters there)
    for content in (plain, in_link):
        edit = SlotEdit("form", "form", Edit("#form", "append", content), fill=fill)
        assert _edit_links(edit, "/") == _links(filled(content, fill), "/")


def test_a_forms_etag_share_is_the_same_in_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The placeholder is new in every process; the block's share of the ETag is not
    (a visitor's ETag holds across replicas and restarts), and another block's is
    another."""
    from edge import activities

    here = activities._form_digest(FORM.format(slot=CSRF_SLOT))
    other_slot = "edge-csrf-" + "0" * 24
    monkeypatch.setattr(activities, "CSRF_SLOT", other_slot)
    activities._form_digest.cache_clear()
    assert activities._form_digest(FORM.format(slot=other_slot)) == here
    assert activities._form_digest(FORM.format(slot=other_slot) + "<p>more</p>") != here
    activities._form_digest.cache_clear()

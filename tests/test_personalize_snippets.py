from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edge.personalize.catalog import Catalog, ItemFacts
from edge.personalize.offers import offer_state
from edge.personalize.profiling import default_questions
from edge.personalize.snippets import (
    LIBRARY,
    Snippets,
    accept_languages,
    choose_language,
    sample_context,
    visitor_context,
)
from edge.profiles.model import Item, new_profile

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_750_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(tmp_path: Path, files: dict[str, str], **kw: object) -> Snippets:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return Snippets(tmp_path, library=None, **kw)  # type: ignore[arg-type]


def test_shipped_library_is_the_repository_copy_and_checks_clean() -> None:
    repo = sorted(p.name for p in (ROOT / "snippets").glob("*.html"))
    shipped = sorted(p.name for p in LIBRARY.glob("*.html"))
    assert repo == shipped
    for expected in (
        "hero_vip.html",
        "hero_vip.it.html",
        "hero_lapsed.html",
        "hero_newsletter.html",
        "hero_campaign.html",
        "cart_reminder.html",
        "timed_offer.html",
        "profile_form.html",
        "preview_badge.html",
    ):
        assert expected in shipped
    missing = Snippets(ROOT / "nonexistent-dir")
    assert [str(p) for p in missing.check()] == [
        f"{ROOT / 'nonexistent-dir'}: error: no such directory"
    ]
    assert missing.render("preview_badge", sample_context())  # the library still serves
    assert Snippets(LIBRARY, library=None).check() == []
    for language in ("en", "it"):
        assert Snippets(library=LIBRARY).check(sample_context(language)) == []


def test_every_shipped_snippet_renders_in_both_languages() -> None:
    snippets = Snippets(library=LIBRARY)
    for language in ("en", "it"):
        context = sample_context(language)
        for name in (
            "hero_vip",
            "hero_lapsed",
            "hero_newsletter",
            "hero_campaign",
            "cart_reminder",
            "timed_offer",
            "profile_form",
            "preview_badge",
        ):
            html = snippets.render(name, context)
            assert html and html.strip(), (name, language)


def test_accept_language() -> None:
    assert accept_languages("it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7") == ["it-it", "it", "en-us", "en"]
    assert accept_languages("en;q=0.5, de-CH, fr;q=0") == ["de-ch", "en", "de"]
    assert accept_languages("*, es;q=0.1") == ["es"]
    assert accept_languages(None) == [] and accept_languages("x;q=abc") == []
    assert choose_language("de-DE, it;q=0.5") == "it"
    assert choose_language("de", default="it") == "it"


def test_language_variant_and_fallback(tmp_path: Path) -> None:
    s = make(tmp_path, {"hero.html": "hello", "hero.it.html": "ciao", "hero.pt-br.html": "olá"})
    assert s.render("hero.html", {}, accept_language="it-IT,it;q=0.9") == "ciao"
    assert s.render("hero", {}, accept_language="fr, it;q=0.5") == "ciao"
    assert s.render("hero", {}, accept_language="de") == "hello"
    assert s.render("hero", {}, accept_language="pt-BR") == "olá"
    assert s.render("hero", {}) == "hello"
    assert s.render("hero", {"language": "it"}) == "ciao"
    assert s.render("hero", {}, languages=["it"]) == "ciao"


def test_merchant_file_replaces_library_file(tmp_path: Path) -> None:
    (tmp_path / "preview_badge.html").write_text("mine", encoding="utf-8")
    s = Snippets(tmp_path)
    assert s.render("preview_badge.html", {}) == "mine"
    assert "Go to your cart" in s.render("cart_reminder.html", sample_context())


def test_autoescape(tmp_path: Path) -> None:
    s = make(tmp_path, {"b.html": "<p>{{ first_name }} {{ page.city }}</p>"})
    out = s.render("b", {"first_name": "<script>alert(1)</script>", "page": {"city": '"&'}})
    assert out == "<p>&lt;script&gt;alert(1)&lt;/script&gt; &#34;&amp;</p>"


def test_trait_with_script_is_escaped_in_shipped_snippets() -> None:
    profile = new_profile("v", NOW)
    profile.traits.custom["first_name"] = "<script>x()</script>"
    profile.cart.items = [Item("p1", price=5.0)]
    catalog = Catalog({"p1": ItemFacts("p1", name="<img src=x onerror=y>", url='/p/"x')})
    context = visitor_context(profile, now=NOW, catalog=catalog)
    out = Snippets(library=LIBRARY).render("cart_reminder", context) or ""
    assert "<script>" not in out and "&lt;script&gt;x()" in out
    assert "<img" not in out and 'href="/p/&#34;x"' in out


@pytest.mark.parametrize(
    "source",
    [
        "{{ cart.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ page.get.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{% set x = segments.append('vip') %}{{ segments }}",
        "{{ page.update({'a': 1}) }}",
    ],
)
def test_sandbox_blocks_python_internals(tmp_path: Path, source: str, caplog) -> None:
    s = make(tmp_path, {"evil.html": source})
    context = {"cart": object(), "page": {"a": 0}, "segments": ["x"]}
    with caplog.at_level(logging.WARNING, logger="edge.snippets"):
        out = s.render("evil", context)
    assert out is None or ("class" not in out and "module" not in out and "function" not in out)
    assert context == {"cart": context["cart"], "page": {"a": 0}, "segments": ["x"]}


def test_failing_template_returns_none_and_logs_file_and_line(tmp_path: Path, caplog) -> None:
    s = make(
        tmp_path,
        {
            "bad.html": "line one\n{{ missing_variable }}\n",
            "broken.html": "ok\n\n{% if x %}never closed\n",
            "div.html": "{{ 1 // zero }}",
        },
    )
    with caplog.at_level(logging.WARNING, logger="edge.snippets"):
        assert s.render("bad", {}) is None
        assert s.render("broken", {"x": 1}) is None
        assert s.render("div", {"zero": 0}) is None
        assert s.render("nowhere", {}) is None
    log = caplog.text
    assert "bad.html:2:" in log and "missing_variable" in log
    assert "broken.html:3:" in log or "broken.html:4:" in log
    assert "ZeroDivisionError" in log
    assert "nowhere.html: no such snippet" in log


def test_same_failure_is_logged_once_a_minute(tmp_path: Path, caplog) -> None:
    clock = Clock()
    s = make(tmp_path, {"bad.html": "{{ nope }}"}, clock=clock)
    with caplog.at_level(logging.WARNING, logger="edge.snippets"):
        for _ in range(5):
            assert s.render("bad", {}) is None
        clock.t += 61
        assert s.render("bad", {}) is None
    assert caplog.text.count("nope") == 2


def test_check_reports_every_problem_with_line(tmp_path: Path) -> None:
    s = make(
        tmp_path,
        {
            "ok.html": "{{ first_name }}",
            "syntax.html": "a\nb\n{% for x in %}",
            "typo.html": "{% if cart %}\n{{ frist_name }}{% endif %}",
            "notes.txt": "{% broken",
        },
    )
    problems = {p.file.rsplit("/", 1)[-1]: p for p in s.check()}
    assert set(problems) == {"syntax.html", "typo.html"}
    assert problems["syntax.html"].line == 3
    assert problems["typo.html"].line == 2 and "frist_name" in problems["typo.html"].message
    assert str(problems["syntax.html"]).startswith(str(tmp_path / "syntax.html") + ":3: ")


def test_compiled_once_and_reloaded_when_file_changes(tmp_path: Path) -> None:
    clock = Clock()
    s = make(tmp_path, {"hero.html": "one"}, clock=clock)
    assert s.render("hero", {}) == "one"
    template = s.template("hero")
    assert s.template("hero") is template  # cached
    path = tmp_path / "hero.html"
    path.write_text("two", encoding="utf-8")
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 5))
    assert s.render("hero", {}) == "one"  # checked at most once per interval
    clock.t += 2
    assert s.render("hero", {}) == "two"
    (tmp_path / "hero.it.html").write_text("due", encoding="utf-8")
    clock.t += 2
    assert s.render("hero", {}, languages=["it"]) == "due"
    path.unlink()
    clock.t += 2
    assert s.render("hero", {}) is None


def test_visitor_context() -> None:
    profile = new_profile("v", NOW)
    profile.customer_id = "c9"
    profile.traits.custom["name"] = "Giulia Bianchi"
    profile.cart.items = [Item("p1", "scarpe-donna", "Lunaria", 0.0, 2), Item("zz", price=3.5)]
    catalog = Catalog({"p1": ItemFacts("p1", price=89.9, name="Décolleté", url="/p/d")})
    question = default_questions()["city"]
    context = visitor_context(
        profile,
        now=NOW,
        language="it",
        catalog=catalog,
        segments={"vip", "big"},
        page={"path": "/", "campaign": "saldi"},
        offer=offer_state({}, "o", 3600, NOW),
        question=question,
        csrf="tok",
        return_to="/c/x",
    )
    assert context["first_name"] == "Giulia" and context["known"]
    cart = context["cart"]
    assert cart.count == 3 and cart.value == 183.3
    assert cart.items[0] == {
        "id": "p1",
        "name": "Décolleté",
        "url": "/p/d",
        "price": 89.9,
        "quantity": 2,
        "total": 179.8,
        "category": "scarpe-donna",
        "brand": "Lunaria",
    }
    assert cart.items[1]["name"] == "zz" and cart.items[1]["url"] is None
    assert context["offer"] == {
        "deadline": NOW + 3600,
        "deadline_iso": "2025-06-15T16:06:40Z",
        "seconds_left": 3600,
    }
    assert context["question"]["text"] == "In che città vivi?"
    assert context["form"] == {
        "action": "/_edge/profile-form",
        "csrf": "tok",
        "return_to": "/c/x",
        "error": "",
    }
    assert context["segments"] == ["big", "vip"]
    empty = visitor_context(None, now=NOW)
    assert empty["cart"].items == [] and empty["offer"] is None and empty["first_name"] == ""


def test_shipped_snippets_content() -> None:
    s = Snippets(library=LIBRARY)
    context = sample_context("it")
    cart = s.render("cart_reminder", context) or ""
    assert 'href="/cart"' in cart and "Décolleté Aurora" in cart and "329,90\xa0€" in cart
    offer = s.render("timed_offer", context) or ""
    assert f'data-deadline="{context["offer"]["deadline"]}"' in offer
    assert "data-edge-countdown" in offer and "<script" not in offer
    form = s.render("profile_form", context) or ""
    assert 'action="/_edge/profile-form"' in form and 'method="post"' in form
    assert 'name="return_to" value="/"' in form and 'name="question" value="gender"' in form
    assert 'value="female"' in form and "<script" not in form
    badge = s.render("preview_badge", sample_context("en")) or ""
    assert "Preview: segments lapsed, vip — not tracked" in badge
    hero = s.render("hero_vip", sample_context("en")) or ""
    assert "Welcome back, Giulia." in hero
    assert "Che bello rivederti, Giulia." in (s.render("hero_vip", context) or "")
    campaign = s.render("hero_campaign", context) or ""
    assert "Saldi" in campaign
    nothing = visitor_context(None, now=NOW)
    assert (s.render("cart_reminder", nothing) or "").strip() == ""
    assert (s.render("timed_offer", nothing) or "").strip() == ""
    assert (s.render("profile_form", nothing) or "").strip() == ""


def test_italian_heroes_do_not_presume_the_visitor_s_gender() -> None:
    # "Ci sei mancata" said to every lapsed customer, men included: the Italian heroes
    # greet in words that agree with no gender, named or not.
    s = Snippets(library=LIBRARY)
    named = sample_context("it")
    anonymous = visitor_context(None, now=NOW, language="it")
    lapsed = [s.render("hero_lapsed", c, languages=["it"]) or "" for c in (named, anonymous)]
    assert "Ci mancavi, Giulia." in lapsed[0] and "Ci mancavi." in lapsed[1]
    vip = [s.render("hero_vip", c, languages=["it"]) or "" for c in (named, anonymous)]
    assert "Che bello rivederti, Giulia." in vip[0] and "Che bello rivederti." in vip[1]
    for html in lapsed + vip:
        assert not any(w in html for w in ("mancata", "mancato", "Bentornata", "Bentornato"))


def test_static_countdown_script_has_no_inline_dependency() -> None:
    js = (ROOT / "static" / "edge.js").read_text(encoding="utf-8")
    assert "[data-edge-countdown]" in js and "data-deadline" in js and "setInterval" in js


def test_renders_are_cached_by_the_values_a_template_reads(tmp_path: Path) -> None:
    (tmp_path / "hello.html").write_text("Hello {{ first_name or 'you' }}!", encoding="utf-8")
    (tmp_path / "lucky.html").write_text("{{ [1, 2, 3] | random }}", encoding="utf-8")
    snippets = Snippets(tmp_path, library=None)
    anna = sample_context() | {"first_name": "Anna"}
    assert snippets.render("hello", anna) == "Hello Anna!"
    assert snippets.render("hello", anna | {"now": 1}) == "Hello Anna!"  # other values: a hit
    assert len(snippets._rendered) == 1
    assert snippets.render("hello", anna | {"first_name": "Bruno"}) == "Hello Bruno!"
    assert snippets.render("hello", anna | {"first_name": "<b>"}) == "Hello &lt;b&gt;!"
    assert len(snippets._rendered) == 3
    snippets.render("lucky", anna)
    assert len(snippets._rendered) == 3  # a template using random is never cached

"""The snippets link to the shop's own URLs: `links` in their context, from the page
map's literal patterns and `[shop] links`, and each cart item's product page as the
catalog learned it. The shipped snippets render the demo's links from the
repository's rules/, and Oscar's from its rule files (tests/shops/oscar/rules/),
without an edit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.personalize.catalog import Catalog, ItemFacts, LearnedCatalog
from edge.personalize.snippets import Snippets, visitor_context
from edge.profiles.model import Item, Profile
from edge.rules import load_rules
from edge.rules.ruleset import RuleSet, compile_text
from edge.rules.shop import LINK_NAMES

ROOT = Path(__file__).resolve().parent.parent
OSCAR_THEME = ROOT / "tests" / "shops" / "oscar" / "rules" / "theme.toml"
SNIPPETS = Snippets(ROOT / "snippets", library=None)
LINKED = ("cart_reminder", "hero_vip", "hero_lapsed", "hero_campaign", "hero_newsletter")


def demo_rules() -> RuleSet:
    ruleset, errors = load_rules(ROOT / "rules")
    assert ruleset is not None, errors
    return ruleset


def hrefs(html: str | None) -> list[str]:
    assert html is not None
    return re.findall(r'href="([^"]*)"', html)


def rendered(ruleset: RuleSet, catalog: Catalog, language: str) -> dict[str, list[str]]:
    """Each linked snippet's links, for a visitor with one product in the cart."""
    profile = Profile(visitor_id="v1")
    profile.cart.items = [Item("p1", "shoes", "", 89.0, 1)]
    context = visitor_context(
        profile,
        now=1_700_000_000,
        language=language,
        catalog=catalog,
        page={"path": "/", "type": "home", "campaign": "june"},
        shop=ruleset.shop,
    )
    return {n: hrefs(SNIPPETS.render(n, context, languages=[language])) for n in LINKED}


@pytest.mark.parametrize("language", ["en", "it"])
def test_the_demo_keeps_its_links(language: str) -> None:
    ruleset = demo_rules()
    catalog = Catalog({"p1": ItemFacts("p1", "scarpe-donna", "", 89.0, "Aurora", "/p/aurora")})
    assert rendered(ruleset, catalog, language) == {
        "cart_reminder": ["/p/aurora", "/cart"],
        "hero_vip": ["/c/scarpe-donna", "/account"],
        "hero_lapsed": ["/", "/account"],
        "hero_campaign": ["/"],
        "hero_newsletter": ["/"],
    }


@pytest.mark.parametrize("language", ["en", "it"])
def test_the_same_snippets_link_to_oscars_pages(language: str) -> None:
    """Oscar's page map: the basket at /basket/, home /; no account link in the rules
    (its button is left out), the VIP collection falls back to home; the product's URL
    as its page taught it (a whole URL: its path, the visitor stays on this host)."""
    ruleset = compile_text(OSCAR_THEME.read_text(encoding="utf-8"), str(OSCAR_THEME))
    learned = LearnedCatalog()
    learned.learn(
        ItemFacts(
            "p1",
            "Shoes",
            "",
            89.0,
            "Ferri Leather Boot",
            "http://shop.test/catalogue/ferri-leather-boot_1/",
        )
    )
    assert rendered(ruleset, learned, language) == {
        "cart_reminder": ["/catalogue/ferri-leather-boot_1/", "/basket/"],
        "hero_vip": ["/"],
        "hero_lapsed": ["/"],
        "hero_campaign": ["/"],
        "hero_newsletter": ["/"],
    }
    # With [shop] links the merchant names the rest, or replaces a page type's.
    extra = '\n[shop]\nlinks = { account = "/accounts/", cart = "/basket/?from=edge" }\n'
    ruleset = compile_text(OSCAR_THEME.read_text(encoding="utf-8") + extra, str(OSCAR_THEME))
    links = rendered(ruleset, learned, language)
    assert links["hero_vip"] == ["/", "/accounts/"]
    assert links["cart_reminder"][-1] == "/basket/?from=edge"


def test_links_from_the_page_map_and_the_shop_table() -> None:
    ruleset = compile_text(
        '[page_types]\nhome = ["/", "/catalogue/"]\ncart = "/basket/"\n'
        'checkout = "/checkout/*"\nproduct = "/p/{product}"\nblog = ["/blog/*", "/blog/"]\n'
        '[shop]\nlinks = { account = "https://accounts.example/me", "gift-cards" = "/gift/" }\n'
    )
    links = dict(ruleset.shop.links)
    assert {n: links[n] for n in LINK_NAMES} == {
        "home": "/",  # the first literal pattern
        "category": None,
        "product": None,  # a pattern, not a link
        "search": None,
        "cart": "/basket/",
        "checkout": None,
        "account": "https://accounts.example/me",
    }
    assert links["blog"] == "/blog/" and links["gift-cards"] == "/gift/"
    # with no rules at all: home, and the names a snippet guards
    context = visitor_context(None, now=0)
    assert context["links"]["home"] == "/" and context["links"]["cart"] is None


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ('links = { cart = "basket" }', "shop.toml:2:11", "link `cart`: `basket` is not a path"),
        (
            'links = { cart = "/b/", account = "/a/{id}" }',
            "shop.toml:2:25",
            "link `account`: `/a/{id}` is not a path",
        ),
        ("links = { cart = 3 }", "shop.toml:2:1", "[shop] `links`: expected `str`, got `int`"),
        ('link = { cart = "/b/" }', "shop.toml:2:1", "unknown key `link` in [shop]"),
    ],
)
def test_a_bad_link_is_an_error_at_its_place(table: str, where: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        compile_text(f"[shop]\n{table}\n", "shop.toml")
    report = str(raised.value)
    assert f"{where}: error: {message}" in report, report

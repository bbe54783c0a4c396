"""The blocks cache (edge/activities.py ``Blocks``): a snippet rendered from the cache is
the very render the library makes from the whole context, whatever the visitor, page,
language, offer or question; a change of anything the template reads misses. And the
profiling form's next question, found without making the set of known traits, is the
one the set gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.activities import CSRF_SLOT, Activities, PageActivities
from edge.caches import LRU
from edge.forms import ERROR_COOKIE
from edge.identity import Identity
from edge.personalize.catalog import ItemFacts, LearnedCatalog
from edge.personalize.offers import OfferState, offer_state
from edge.personalize.profiling import default_questions, known_traits, next_question
from edge.personalize.snippets import Snippets, offer_view, visitor_context
from edge.profiles.model import Item, Profile
from tests._hypothesis import examples
from tests.conftest import ROOT

NOW = 1_796_191_200
SNIPPETS = ROOT / "snippets"
NAMES = (
    "hero_lapsed",
    "hero_vip",
    "hero_campaign",
    "hero_newsletter",
    "cart_reminder",
    "timed_offer",
    "profile_form",
)
QUESTIONS = default_questions()
CATALOG = LearnedCatalog()
for _facts in (
    ItemFacts("p1", "scarpe-donna", "Lunaria", 89.9, "Décolleté Aurora", "/p/aurora"),
    ItemFacts("p2", "borse", "Valdarno", 120.0, "Borsa Arno", "https://shop.example/p/arno"),
    ItemFacts("p3", "camicie", "", None, "", ""),
):
    CATALOG.learn(_facts)

# One cache for every example: a key that left out something the template reads would
# give one example's block to another, and the comparison below would see it.
SHARED = Activities(Snippets(SNIPPETS), Identity(["blocks-secret"]), catalog=CATALOG)
UNCACHED = Snippets(SNIPPETS)
UNCACHED._rendered = LRU(0)  # (keeps nothing: every render is made)

items = st.builds(
    Item,
    product_id=st.sampled_from(["p1", "p2", "p3", "p9"]),
    category=st.sampled_from(["", "scarpe-donna"]),
    price=st.sampled_from([0.0, 19.5, 89.9]),
    quantity=st.integers(1, 3),
    name=st.sampled_from(["", "Cart name"]),
)


@st.composite
def profiles(draw: st.DrawFn) -> Profile | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    profile = Profile(visitor_id="v1", customer_id=draw(st.sampled_from(["", "c1"])))
    name = draw(st.sampled_from(["", "Giulia", "Anna <b>"]))
    if name:
        profile.traits.custom["first_name"] = name
    profile.traits.gender = draw(st.sampled_from(["", "female"]))
    if draw(st.booleans()):
        profile.answers["age_band"] = draw(st.sampled_from(["", "25-34", "declined"]))
    profile.cart.items = draw(st.lists(items, max_size=4))
    return profile


@st.composite
def views(draw: st.DrawFn) -> dict[str, Any]:
    offer = None
    if draw(st.booleans()):
        first = draw(st.sampled_from([NOW - 7200, NOW - 3600, NOW - 60]))
        offer = offer_state({"o": first}, "o", 86_400, NOW)
    error = draw(st.sampled_from(["", "gender:Pick one", "age_band:Too old?"]))
    return {
        "name": draw(st.sampled_from(NAMES)),
        "profile": draw(profiles()),
        "visitor_id": draw(st.sampled_from(["", "v1", "v2"])),
        "language": draw(st.sampled_from(["en", "it"])),
        "segments": draw(st.lists(st.sampled_from(["vip", "lapsed", "prospect"]), unique=True)),
        "page": {
            "path": draw(st.sampled_from(["/", "/c/scarpe-donna"])),
            "type": draw(st.sampled_from(["home", "category"])),
            **draw(st.sampled_from([{}, {"campaign": "saldi"}, {"campaign": "bf"}])),
            "channel": draw(st.sampled_from(["", "email"])),
        },
        "return_to": draw(st.sampled_from(["/", "/c/scarpe-donna?page=2"])),
        "cookies": {ERROR_COOKIE: error} if error else {},
        "preview": draw(st.booleans()),
        "offer": offer,
    }


def page_activities(activities: Activities, view: dict[str, Any]) -> PageActivities:
    return PageActivities(
        activities,
        profile=view["profile"],
        visitor_id=view["visitor_id"] or None,
        now=NOW,
        language=view["language"],
        segments=view["segments"],
        page=view["page"],
        return_to=view["return_to"],
        cookies=view["cookies"],
        preview=view["preview"],
        questions=QUESTIONS,
    )


def cached(view: dict[str, Any]) -> str | None:
    page = page_activities(SHARED, view)
    return page._render(view["name"], page._next_question(), view["offer"])


def uncached(view: dict[str, Any]) -> str | None:
    """The library's render from the whole context, as the page made it before."""
    profile, visitor_id = view["profile"], view["visitor_id"]
    question = None
    if profile is not None or visitor_id:
        known = profile or Profile(visitor_id=visitor_id)
        question = next_question(known, QUESTIONS, known=known_traits(known))
    error_trait, _, error_text = view["cookies"].get(ERROR_COOKIE, "").partition(":")
    context = visitor_context(
        profile,
        now=NOW,
        language=view["language"],
        catalog=CATALOG,
        segments=view["segments"],
        page=view["page"],
        question=question,
        form_error=error_text if question is not None and error_trait == question.trait else "",
        csrf=CSRF_SLOT if visitor_id and question else "",
        return_to=view["return_to"],
        preview=view["preview"],
    )
    context["form"]["action"] = "/_edge/profile-form"
    offer: OfferState | None = view["offer"]
    if offer is not None:
        context = context | {"offer": offer_view(offer)}
    return UNCACHED.render(view["name"], context, languages=[view["language"]])


@settings(max_examples=examples(300), deadline=None)
@given(views())
def test_a_block_from_the_cache_is_the_render_of_its_context(view: dict[str, Any]) -> None:
    assert cached(view) == uncached(view)
    assert cached(view) == uncached(view)  # (and again, now surely from the cache)


def base_view(name: str, **changes: Any) -> dict[str, Any]:
    profile = Profile(visitor_id="v1")
    profile.traits.custom["first_name"] = "Giulia"
    profile.cart.items = [Item("p1", quantity=1)]
    view: dict[str, Any] = {
        "name": name,
        "profile": profile,
        "visitor_id": "v1",
        "language": "en",
        "segments": ["lapsed"],
        "page": {"path": "/", "type": "home", "channel": ""},
        "return_to": "/",
        "cookies": {},
        "preview": False,
        "offer": offer_state({"o": NOW - 60}, "o", 86_400, NOW),
    }
    return view | changes


def test_a_change_of_what_the_template_reads_misses() -> None:
    activities = Activities(Snippets(SNIPPETS), Identity(["s"]), catalog=CATALOG)

    def render(view: dict[str, Any]) -> str | None:
        page = page_activities(activities, view)
        return page._render(view["name"], page._next_question(), view["offer"])

    first = render(base_view("cart_reminder"))
    assert first is not None and "Giulia" in first and "Aurora" in first
    assert render(base_view("cart_reminder")) is first  # the cached string itself
    other = Profile(visitor_id="v1")
    other.traits.custom["first_name"] = "Anna"
    other.cart.items = [Item("p1", quantity=2)]
    assert "Anna" in (render(base_view("cart_reminder", profile=other)) or "")
    assert "Giulia" in (render(base_view("cart_reminder", language="it")) or "")
    assert render(base_view("cart_reminder", language="it")) != first
    # The catalog learns a new name for the product: the block follows.
    catalog = LearnedCatalog()
    catalog.learn(ItemFacts("p1", "scarpe-donna", "Lunaria", 89.9, "Aurora", "/p/aurora"))
    activities = Activities(Snippets(SNIPPETS), Identity(["s"]), catalog=catalog)
    assert "Aurora" in (render(base_view("cart_reminder")) or "")
    catalog.learn(ItemFacts("p1", name="Aurora II"))
    assert "Aurora II" in (render(base_view("cart_reminder")) or "")
    # The offer's clock moves: another countdown.
    later = offer_state({"o": NOW - 3700}, "o", 86_400, NOW)
    assert render(base_view("timed_offer")) != render(base_view("timed_offer", offer=later))
    # The next question changes with what the visitor told.
    told = Profile(visitor_id="v1")
    told.traits.gender = "female"
    asked_gender = render(base_view("profile_form"))
    asked_age = render(base_view("profile_form", profile=told))
    assert asked_gender is not None and 'value="gender"' in asked_gender
    assert asked_age is not None and 'value="age_band"' in asked_age
    # Another question set (a rule set reloaded) empties the cache.
    assert len(activities.blocks) > 0
    page_activities(activities, base_view("hero_lapsed")).activities.blocks.generation({}, catalog)
    assert len(activities.blocks) == 0


traits = st.sampled_from(["gender", "age_band", "birth_year", "city", "interest", "shoe_size"])


@settings(max_examples=examples(300), deadline=None)
@given(
    st.dictionaries(traits, st.sampled_from(["", "x", "declined"]), max_size=4),
    st.dictionaries(traits, st.sampled_from(["", "y", 0, False]), max_size=3),
    st.sampled_from([None, 1990]),
    st.sampled_from(["", "female"]),
    st.sampled_from(["", "Milano"]),
)
def test_the_next_question_is_the_one_the_known_set_gives(
    answers: dict[str, str],
    custom: dict[str, Any],
    birth_year: int | None,
    gender: str,
    city: str,
) -> None:
    profile = Profile(visitor_id="v1", answers=answers)
    profile.traits.custom.update(custom)
    profile.traits.birth_year = birth_year
    profile.traits.gender = gender
    profile.traits.city = city
    questions = default_questions([("shoes", {"en": "Shoes"})])
    for result in (None, (True,) * 8, (False,) * 8):
        assert next_question(profile, questions, result=result) == next_question(
            profile, questions, known=known_traits(profile), result=result
        )


@settings(max_examples=examples(200), deadline=None)
@given(
    st.text(alphabet="ab/%2F+-é", max_size=12),
    st.one_of(st.sampled_from(["hero", "banner"]), st.text(max_size=12)),
)
def test_the_remembered_answers_are_the_computed_ones(value: str, placement: str) -> None:
    """(The decode of ``?path=`` and the holdout hash are remembered by their arguments.)"""
    import hashlib
    from urllib.parse import unquote_plus

    from edge.browser import _unquoted
    from edge.placements import in_holdout

    assert _unquoted(value) == unquote_plus(value) == _unquoted(value)
    for share in (0.1, 0.5):
        digest = hashlib.blake2b(f"{placement}\0{value}".encode(), digest_size=8).digest()
        expected = bool(value) and int.from_bytes(digest, "big") / 2**64 < share
        assert (
            in_holdout(value, placement, share) == expected == in_holdout(value, placement, share)
        )


def test_an_exposure_token_keeps_its_format() -> None:
    """Tokens already in browsers stay valid: msgpack ``[visitor, placement, arm, ts]``
    and the first 16 bytes of its HMAC-SHA256 under ``exposure:``, base64url."""
    import base64
    import hashlib
    import hmac

    import msgspec

    from edge.browser import check_token, token

    identity = Identity(["token-secret", "older-secret"])
    text = token(identity, "v1", "hero-lapsed", "default", NOW)
    payload = msgspec.msgpack.encode(["v1", "hero-lapsed", "default", NOW])
    tag = hmac.new(b"token-secret", b"exposure:" + payload, hashlib.sha256).digest()[:16]
    b64 = base64.urlsafe_b64encode
    assert text == b64(payload).rstrip(b"=").decode() + "." + b64(tag).rstrip(b"=").decode()
    assert check_token(identity, text, "v1", NOW + 5).placement == "hero-lapsed"


def test_the_decide_endpoints_tokens_follow_a_rotated_secret() -> None:
    from edge.browser import BrowserDecide, check_token

    identity = Identity(["first-secret"])
    endpoint = BrowserDecide(None, None, None, None, identity, str)  # type: ignore[arg-type]
    first = endpoint._token("v1", "hero", "default", NOW)
    assert check_token(Identity(["first-secret"]), first, "v1", NOW).arm == "default"
    identity.__init__(["second-secret"])  # type: ignore[misc]  # as a reload rotates it
    second = endpoint._token("v1", "hero", "default", NOW)
    assert check_token(Identity(["second-secret"]), second, "v1", NOW).arm == "default"
    assert second != first

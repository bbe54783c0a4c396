"""A/B/n placements (issue 16): variants in the rule files and their errors, the
assignment of a unit (a known customer, else a visitor) to the holdout or a variant
by weight, its stability, the split the report checks, the decision's arms and who
is not measured (previews, QA); then a real `edge serve` in front of the demo shop:
each variant renders, and one customer's two cookies see the same arm."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge.app import EdgeApp, create_app
from edge.cli import main
from edge.config import Config, ConfigError, load_config
from edge.decide import Decision
from edge.lift import srm_p
from edge.personalize.snippets import Snippets
from edge.placements import HOLDOUT_ARM, assign, choose, in_holdout, split, unit_key
from edge.preview import Preview
from edge.profiles import events as ev
from edge.profiles.model import Profile
from edge.request import RequestHead
from edge.rules import compile_text, load_rules
from edge.rules.spec import Variant
from tests.conftest import ROOT, EdgeProcess, fetch, start_edge
from tests.test_activities import BROWSER, Visitor, hero, start_shop, stop, wait_for

KEYS = [f"visitor-{n}" for n in range(30_000)]
"""A fixed set of unit keys: the same counts on every run."""
WARM, BOLD, CALM = (Variant(name=n, snippet=f"{n}.html") for n in ("warm", "bold", "calm"))


def weighted(*pairs: tuple[Variant, float]) -> list[Variant]:
    return [msgspec.structs.replace(v, weight=w) for v, w in pairs]


def arms(placement: str, holdout: float, variants: list[Variant]) -> list[str]:
    return [assign(key, placement, holdout, variants) for key in KEYS]


# --- assignment -------------------------------------------------------------------------

SPLIT_RULES = """
[slots.hero]
select = "#hero"

[[placements]]
id = "hero-ab"
slot = "hero"
holdout = 0.1
variants = [
  { name = "warm", snippet = "warm.html", weight = 1 },
  { name = "bold", snippet = "bold.html", weight = 2 },
  { name = "calm", snippet = "calm.html" },
]

[[placements]]
id = "plain"
slot = "hero"
snippet = "plain.html"
holdout = 0.25
"""


def test_split_is_the_holdout_and_each_variant_by_weight() -> None:
    ruleset = compile_text(SPLIT_RULES)
    ab, plain = ruleset.placements
    assert split(ab.spec) == pytest.approx(
        {"holdout": 0.1, "warm": 0.225, "bold": 0.45, "calm": 0.225}
    )
    assert split(plain.spec) == {"holdout": 0.25, "default": 0.75}
    assert [v.name for v in ab.variants] == ["warm", "bold", "calm"]
    assert [(v.name, v.snippet) for v in plain.variants] == [("default", "plain.html")]


def test_units_split_by_weight_pass_the_chi_square_and_a_wrong_split_is_flagged() -> None:
    ab = compile_text(SPLIT_RULES).placements[0]
    counts = Counter(arms("hero-ab", 0.1, list(ab.variants)))
    configured = split(ab.spec)
    observed = [counts[arm] for arm in configured]
    assert sum(observed) == len(KEYS)
    assert srm_p(observed, list(configured.values())) > 0.001
    # what the merchant would see had the variants been split evenly: a mismatch
    even = {"holdout": 0.1, "warm": 0.3, "bold": 0.3, "calm": 0.3}
    assert srm_p(observed, [even[arm] for arm in configured]) < 0.001
    # and a holdout share that is not the configured one
    wrong = [counts[HOLDOUT_ARM]] + [round(c * 0.8) for c in observed[1:]]
    assert srm_p(wrong, list(configured.values())) < 0.001


def test_a_placement_without_variants_holds_out_exactly_as_before() -> None:
    ruleset = compile_text(SPLIT_RULES)
    plain = ruleset.placements[1]
    for key in KEYS[:2000]:
        [choice] = choose(
            [plain], ruleset.slots, page_type="", profile=None, now=0, holdout_key=key
        )
        assert choice.held_out == in_holdout(key, "plain", 0.25)
        assert choice.arm == ("holdout" if choice.held_out else "default")
        assert (choice.variant is None) == choice.held_out
        assert assign(key, "plain", 0.25, plain.variants) == choice.arm


def test_a_unit_keeps_its_arm_and_a_new_weight_moves_only_what_it_must() -> None:
    before = arms("hero-ab", 0.1, weighted((WARM, 1), (BOLD, 1), (CALM, 1)))
    assert before == arms("hero-ab", 0.1, weighted((WARM, 1), (BOLD, 1), (CALM, 1)))
    # the variants' order is not part of it
    assert before == arms("hero-ab", 0.1, weighted((CALM, 1), (WARM, 1), (BOLD, 1)))

    # bold's weight doubled: units move into bold only, and about as many as must:
    # its share outside the holdout goes from 1/3 to 1/2, a sixth of those units
    after = arms("hero-ab", 0.1, weighted((WARM, 1), (BOLD, 2), (CALM, 1)))
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert {b for _a, b in moved} == {"bold"}
    outside = sum(a != HOLDOUT_ARM for a in before)
    assert abs(len(moved) / outside - 1 / 6) < 0.01

    # weight lowered again: the same units go back, nothing else moves
    assert arms("hero-ab", 0.1, weighted((WARM, 1), (BOLD, 1), (CALM, 1))) == before

    # a fourth variant takes its quarter from the three, in proportion
    fourth = Variant(name="fresh", snippet="fresh.html")
    added = arms("hero-ab", 0.1, weighted((WARM, 1), (BOLD, 1), (CALM, 1), (fourth, 1)))
    moved = [(a, b) for a, b in zip(before, added, strict=True) if a != b]
    assert {b for _a, b in moved} == {"fresh"}
    assert abs(len(moved) / outside - 1 / 4) < 0.01
    assert max(Counter(a for a, _b in moved).values()) - min(
        Counter(a for a, _b in moved).values()
    ) < 0.1 * len(moved)

    # a larger holdout takes units from the variants; none moves between variants
    held_more = arms("hero-ab", 0.2, weighted((WARM, 1), (BOLD, 1), (CALM, 1)))
    for a, b in zip(before, held_more, strict=True):
        assert a == b or (b == HOLDOUT_ARM and a != HOLDOUT_ARM)


def test_placements_split_units_independently() -> None:
    variants = weighted((WARM, 1), (BOLD, 1))
    one = arms("hero-a", 0.0, variants)
    other = arms("hero-b", 0.0, variants)
    together = Counter(zip(one, other, strict=True))
    # independent halves: each pair of arms about a quarter of the units
    assert srm_p([together[p] for p in sorted(together)], [1, 1, 1, 1]) > 0.001


def test_the_unit_is_the_customer_when_known() -> None:
    assert unit_key("v1", None) == "v1"
    assert unit_key("v1", Profile(visitor_id="v1")) == "v1"
    assert unit_key("v1", Profile(visitor_id="v1", customer_id="4711")) == "cust:4711"
    # a preview (no unit): no holdout, the first variant
    assert assign("", "hero-ab", 0.9, weighted((WARM, 1), (BOLD, 5))) == "warm"


# --- the rule files ---------------------------------------------------------------------

THEME = '[slots.hero]\nselect = "[data-edge-slot=hero]"\n'


def check(tmp_path: Path, placements: str) -> list[str]:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "theme.toml").write_text(THEME)
    (rules / "placements.toml").write_text(placements)
    snippets = tmp_path / "snippets"
    snippets.mkdir(exist_ok=True)
    for name in ("warm", "bold"):
        (snippets / f"{name}.html").write_text(f"<b>{name}</b>")
    ruleset, errors = load_rules(rules, snippets=Snippets(snippets).names())
    assert (ruleset is None) == bool(errors)
    prefix = str(rules / "placements.toml") + ":"
    return [str(e).removeprefix(prefix) for e in errors]


HEAD = '[[placements]]\nid = "ab"\nslot = "hero"\n'


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        (
            '{ name = "warm", snippet = "warm.html" },\n  { name = "bold", snippet = "bolt.html" },',
            [
                "6:20: error: no snippet `bolt.html` in the snippets directory or the shipped library",
                "help: did you mean `bold.html`?",
            ],
        ),
        (
            '{ name = "warm", snippet = "warm.html" },\n  { name = "warm", snippet = "bold.html" },',
            [
                "6:5: error: two variants of this placement are named `warm`",
                "help: give each variant its own name",
            ],
        ),
        (
            '{ name = "warm", snippet = "warm.html", weight = 0 },\n  { name = "bold", snippet = "bold.html" },',
            [
                "5:43: error: variant 1 `warm` has weight 0: a weight is a positive share",
                "help: write e.g. weight = 1",
            ],
        ),
        (
            '{ name = "warm", snippet = "warm.html" },\n  { name = "bold", weight = -2, snippet = "bold.html" },',
            ["6:20: error: variant 2 `bold` has weight -2"],
        ),
        (
            '{ name = "warm", snippet = "warm.html" },\n  { name = "bold" },',
            [
                "6:3: error: variant 2 `bold` shows a `snippet` or sets a `sort` (one of them)",
                'help: e.g. { name = "warm", snippet = "hero_vip.html" }',
            ],
        ),
        (
            '{ name = "warm", snippet = "warm.html", sort = "price asc" },',
            ["5:20: error: variant 1 `warm` shows a `snippet` or sets a `sort` (one of them)"],
        ),
        (
            '{ snippet = "warm.html" },',
            ["5:3: error: variant 1 has no `name`", 'help: name it, e.g. { name = "warm", ... }'],
        ),
        (
            '{ name = "holdout", snippet = "warm.html" },',
            ["5:5: error: `holdout` is the control group's name"],
        ),
        (
            '{ name = "cheap", sort = "price up" },',
            ["5:21: error: unknown sort `price up`", "help: did you mean `price asc`?"],
        ),
    ],
)
def test_each_bad_variant_is_an_error_at_its_place(
    tmp_path: Path, variants: str, expected: list[str]
) -> None:
    [error] = check(tmp_path, HEAD + "variants = [\n  " + variants + "\n]\n")
    for part in expected:
        assert part in error, error


def test_a_placement_with_a_snippet_and_variants_is_an_error(tmp_path: Path) -> None:
    [error] = check(
        tmp_path,
        HEAD + 'snippet = "warm.html"\nvariants = [{ name = "bold", snippet = "bold.html" }]\n',
    )
    assert error.startswith("4:1: error: a placement has `snippet`/`sort` or `variants`, not both")
    assert "help: move it into a variant" in error


def test_variants_as_tables_and_a_good_placement(tmp_path: Path) -> None:
    [error] = check(
        tmp_path,
        HEAD
        + '\n[[placements.variants]]\nname = "warm"\nsnippet = "warm.html"\n'
        + '\n[[placements.variants]]\nname = "bold"\nsnippet = "bolt.html"\nweight = 3\n'
        + '\n[[placements]]\nid = "next"\nslot = "hero"\nsnippet = "bold.html"\n',
    )
    assert error.startswith("11:1: error: no snippet `bolt.html`"), error
    assert (
        check(
            tmp_path,
            HEAD
            + 'holdout = 0.2\naction = "replace"\nvariants = [\n'
            + '  { name = "warm", snippet = "warm.html", weight = 2 },  # the "control" copy\n'
            + '  { name = "bold", snippet = "bold.html", action = "append" },\n'
            + '  { name = "cheap", sort = ["price asc"] },\n]\n',
        )
        == []
    )


def test_qa_settings_are_checked() -> None:
    assert Config().qa_cookie == "edge_qa" and Config().qa_visitors == []
    config = load_config(environ={"EDGE_QA_VISITORS": "v1, cust:4711", "EDGE_QA_COOKIE": "qa"})
    assert config.qa_visitors == ["v1", "cust:4711"] and config.qa_cookie == "qa"
    with pytest.raises(ConfigError, match="qa_cookie must be a cookie name"):
        load_config(environ={"EDGE_QA_COOKIE": "q a"})


# --- decisions, in process --------------------------------------------------------------

DECIDE_RULES = """
[page_types]
home = "/"

[slots.hero]
select = "#hero"
pages = ["home"]

[[placements]]
id = "hero-ab"
slot = "hero"
holdout = 0.2
action = "replace"
variants = [
  { name = "warm", snippet = "warm.html" },
  { name = "bold", snippet = "bold.html", action = "append" },
]
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> EdgeApp:
    work = tmp_path_factory.mktemp("decide")
    (work / "rules").mkdir()
    (work / "rules" / "placements.toml").write_text(DECIDE_RULES)
    (work / "snippets").mkdir()
    for name in ("warm", "bold"):
        (work / "snippets" / f"{name}.html").write_text(f"<b>{name.upper()}</b>")
    config = Config(
        upstream="http://127.0.0.1:9",  # never asked: nothing is proxied here
        rules=str(work / "rules"),
        snippets=str(work / "snippets"),
        store=f"sqlite:{work / 'profiles.db'}",
        secret="variants",
        qa_visitors=["cust:qa-customer"],
    )
    app = create_app(config)
    assert app.rules.ok, app.rules.errors
    return app


def scope(cookie: str = "") -> dict[str, Any]:
    headers = [(k.lower().encode(), v.encode()) for k, v in BROWSER.items()]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


def decide(app: EdgeApp, cookie: str = "", preview: Preview | None = None) -> tuple[Decision, str]:
    head = RequestHead.parse(scope(cookie))
    exchange, _personalize = app.respond.visit(head)
    decision = asyncio.run(
        app.decider.decide(head, exchange.visit, exchange.page, exchange.touch, preview)
    )
    assert decision is not None
    assert exchange.visit.visitor_id is not None
    return decision, exchange.visit.visitor_id


def test_the_decision_names_each_placements_arm_and_shows_its_variant(app: EdgeApp) -> None:
    variants = app.rules.ruleset.placements[0].variants
    seen = set()
    for _ in range(60):
        decision, visitor_id = decide(app)
        arm = assign(visitor_id, "hero-ab", 0.2, variants)
        assert decision.arms == {"hero-ab": arm} and decision.measured
        seen.add(arm)
        if arm == HOLDOUT_ARM:
            assert decision.held_out == ["hero-ab"] and decision.edits == []
            continue
        [edit] = [e for e in decision.edits if e.placement]
        # each variant its snippet, and its own action (else the placement's)
        assert edit.edit.content == f"<b>{arm.upper()}</b>"
        assert edit.edit.action == {"warm": "replace", "bold": "append"}[arm]
    assert seen == {"holdout", "warm", "bold"}


def test_previews_and_qa_visitors_see_placements_but_are_not_measured(app: EdgeApp) -> None:
    preview = Preview(frozenset(), int(time.time()) + 60)
    decision, _ = decide(app, preview=preview)
    assert not decision.measured and decision.arms == {"hero-ab": "warm"}  # the first variant
    decision, _ = decide(app, cookie="edge_qa=1")
    assert not decision.measured and decision.arms["hero-ab"] in ("holdout", "warm", "bold")

    # a listed customer, on a cookie of theirs: the unit is the customer, who is QA
    visit = app.respond.visit(RequestHead.parse(scope()))[0].visit
    cookie = app.visitors.cookie_header(visit)[1].decode().split(";", 1)[0]
    assert visit.visitor_id is not None
    identify = ev.Identify(anonymous_id=visit.visitor_id, user_id="qa-customer")
    asyncio.run(app.profiles.record(None, [identify], ev.Source.SHOP))
    decision, seen_as = decide(app, cookie=cookie)
    assert seen_as == visit.visitor_id and not decision.measured
    arm = assign("cust:qa-customer", "hero-ab", 0.2, app.rules.ruleset.placements[0].variants)
    assert decision.arms == {"hero-ab": arm}
    # anyone else is measured
    assert decide(app)[0].measured
    # a reload (SIGHUP) applies new QA settings: no QA cookie, no listed customer
    assert app.reload(msgspec.structs.replace(app.config, qa_cookie="", qa_visitors=[])) == []
    assert decide(app, cookie="edge_qa=1")[0].measured
    assert decide(app, cookie=cookie)[0].measured
    app.reload(msgspec.structs.replace(app.config, qa_cookie="edge_qa", qa_visitors=["x"]))
    assert not decide(app, cookie="edge_qa=1")[0].measured


# --- a real edge serve --------------------------------------------------------------------

SIGNING = "variants-ingest-secret"
SERVE_PLACEMENTS = """
[[placements]]
id = "hero-ab"
slot = "home-hero"
holdout = 0.2
variants = [
  { name = "warm", snippet = "ab_warm.html", weight = 1 },
  { name = "bold", snippet = "ab_bold.html", weight = 1 },
]
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    work = tmp_path_factory.mktemp("serve")
    rules = work / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "placements.toml").write_text(SERVE_PLACEMENTS)
    snippets = work / "snippets"
    snippets.mkdir()
    (snippets / "ab_warm.html").write_text('<p class="ab-warm">Warm welcome, {{ language }}</p>')
    (snippets / "ab_bold.html").write_text('<p class="ab-bold">BOLD OFFER</p>')
    proc, url = start_shop()
    edge = start_edge(
        url,
        env={
            "EDGE_RULES": str(rules),
            "EDGE_SNIPPETS": str(snippets),
            "EDGE_INGEST_SECRET": SIGNING,
            "EDGE_TRACK": "true",
        },
    )
    yield edge
    edge.stop()
    stop(proc)


def signed_ingest(port: int, *events: dict[str, Any]) -> None:
    body = json.dumps({"events": list(events)}).encode()
    stamp = str(int(time.time()))
    tag = hmac.new(SIGNING.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Edge-Signature": f"t={stamp},v1={tag}"}
    reply = fetch(port, "/_edge/ingest", "POST", headers, body)
    assert reply.status == 200, reply.body


def shown_arm(page: str) -> str:
    block = hero(page)
    if "ab-warm" in block:
        return "warm"
    if "ab-bold" in block:
        return "bold"
    assert "edge-" not in block, block
    return HOLDOUT_ARM


VARIANTS = [WARM, BOLD]


@pytest.mark.slow
def test_each_variant_renders_through_edge_serve(served: EdgeProcess) -> None:
    seen: dict[str, str] = {}
    for _ in range(80):
        visitor = Visitor(served.port)
        page = visitor.page("/")
        arm = shown_arm(page)
        assert arm == assign(visitor.id, "hero-ab", 0.2, VARIANTS)
        assert arm == shown_arm(visitor.page("/"))  # and again on the next page
        seen.setdefault(arm, hero(page))
        if len(seen) == 3:
            break
    assert set(seen) == {"holdout", "warm", "bold"}
    assert "Warm welcome, en" in seen["warm"] and "BOLD OFFER" in seen["bold"]


@pytest.mark.slow
def test_one_customers_two_cookies_see_the_same_arm(served: EdgeProcess) -> None:
    laptop, phone = Visitor(served.port), Visitor(served.port)
    laptop.arrive("/")
    phone.arrive("/")
    own = {assign(v.id, "hero-ab", 0.2, VARIANTS) for v in (laptop, phone)}
    # a customer whose arm is shown and differs from at least one cookie's own
    customer = next(
        c
        for c in (f"customer-{n}" for n in range(1000))
        if (arm := assign(f"cust:{c}", "hero-ab", 0.2, VARIANTS)) != HOLDOUT_ARM and own != {arm}
    )
    expected = assign(f"cust:{customer}", "hero-ab", 0.2, VARIANTS)
    signed_ingest(
        served.port, {"event": "Identify", "anonymous_id": laptop.id, "user_id": customer}
    )
    signed_ingest(
        served.port,
        {
            "event": "Order Completed",
            "anonymous_id": phone.id,
            "user_id": customer,
            "order_id": f"{customer}-1",
            "total": 80.0,
            "ts": int(time.time()) - 3600,
            "products": [],
        },
    )
    for visitor in (laptop, phone):
        wait_for(lambda v=visitor: shown_arm(v.page("/")) == expected)
        assert shown_arm(visitor.page("/")) == expected


def test_edge_check_and_explain_name_the_variants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    placements = HEAD + 'variants = [\n  { name = "warm", snippet = "warm.html" },\n'
    check(tmp_path, placements + '  { name = "cheap", sort = "price asc", weight = 0 },\n]\n')
    rules, snippets = tmp_path / "rules", tmp_path / "snippets"
    assert main(["check", str(rules), "--snippets", str(snippets)]) == 1
    err = capsys.readouterr().err
    assert "placements.toml:6:41: error: variant 2 `cheap` has weight 0" in err, err
    (rules / "placements.toml").write_text(
        placements + '  { name = "cheap", sort = "price asc", weight = 2 },\n]\n'
    )
    assert main(["check", str(rules), "--snippets", str(snippets)]) == 0
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"profile": {"visitor_id": "v", "visits": 1}}))
    assert main(["explain", "--profile", str(profile), "--rules", str(rules)]) == 0
    out = capsys.readouterr().out
    assert "hero: ab -> warm: warm.html, cheap: sort ['price asc']" in out, out

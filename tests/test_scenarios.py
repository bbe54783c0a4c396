"""Scenarios (``[[scenarios]]``): the shipped library driven by an injected clock through
the real Activator (segments, journeys, payload templates), the engine's rules (exit,
late steps, consent, idempotency keys), and the checks a merchant sees (file, line,
column, suggestions) for scenarios and payload templates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.activation import Activator
from edge.activation.checks import check_scenarios, unknown_destinations
from edge.activation.journeys import message_id
from edge.activation.payloads import Payloads
from edge.profiles import events as ev
from edge.profiles.model import DAY, Journey, Profile, Traits, decode, encode
from edge.profiles.outbox import PENDING, OutMessage
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import GuardedStore
from edge.rules import LIBRARY_DIR, LiveRules, compile_text
from edge.shipped import SNIPPETS
from tests._hypothesis import examples
from tests.test_profiles import IDENTITY

T = 1_800_000_000 + 12_345  # not on a day's boundary
HOUR = 3600


class Clock:
    def __init__(self, now: int = T) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> LiveRules:
    """The shipped segments and scenarios, as a merchant copies them."""
    directory = tmp_path_factory.mktemp("rules")
    for name in ("segments.toml", "scenarios.toml", "shop.toml"):
        shutil.copy(LIBRARY_DIR / name, directory / name)
    live = LiveRules(directory)
    assert live.ok, live.errors
    assert "cart_recovery" in live.ruleset.scenarios
    return live


@pytest.fixture
def activator(rules: LiveRules) -> Activator:
    return Activator(rules, clock=Clock(), traits=("city",))


def apply(
    profile: Profile, event: ev.BaseEvent, now: int, activator: Activator
) -> list[OutMessage]:
    """One write: the event applied, then the activation hook (as the store runs it)."""
    ev.apply(profile, event, now, ev.Source.SHOP)
    return activator.after(profile, None, now)


def until(profile: Profile, end: int, activator: Activator) -> list[tuple[int, OutMessage]]:
    """The due loop up to *end*: the profile touched at each due time it asks for."""
    sent = []
    while profile.due and profile.due <= end:
        now = profile.due
        sent += [(now, m) for m in activator.after(profile, None, now)]
    return sent


def body(message: OutMessage) -> dict[str, Any]:
    return json.loads(message.body)


def scenario_of(message: OutMessage) -> str:
    return body(message).get("type", body(message).get("scenario", ""))


def add_to_cart(ts: int, product: str = "sku-1", price: float = 40.0) -> ev.ProductAdded:
    return ev.ProductAdded(product_id=product, price=price, quantity=1, ts=ts)


def order(i: int, ts: int, total: float = 50.0) -> ev.OrderCompleted:
    return ev.OrderCompleted(order_id=f"o{i}", total=total, ts=ts)


def customer(orders: list[tuple[int, float]], activator: Activator) -> Profile:
    """A profile with these (time, total) orders, each written through the activation
    at its own time (its journeys follow)."""
    profile = Profile(visitor_id="v-1", customer_id="c-1", email_hash="h" * 16)
    profile.traits = Traits(city="Milano", custom={"email": "ann@example.com"})
    for i, (ts, total) in enumerate(orders):
        apply(profile, order(i, ts, total), ts, activator)
    return profile


# --- cart recovery ---------------------------------------------------------------------


def test_cart_recovery_fires_at_4h_and_not_before(activator: Activator) -> None:
    profile = Profile(visitor_id="v-cart")
    assert apply(profile, add_to_cart(T), T, activator) == []
    assert profile.journeys["cart_recovery"].due == T + 4 * HOUR
    assert profile.due and profile.due <= T + 4 * HOUR
    assert until(profile, T + 4 * HOUR - 1, activator) == []
    assert activator.after(profile, None, T + 4 * HOUR - 1) == []
    sent = until(profile, T + 4 * HOUR, activator)
    assert [(at, scenario_of(m)) for at, m in sent] == [(T + 4 * HOUR, "cart_recovery")]
    message = sent[0][1]
    payload = body(message)
    assert message.destination == "esp" and message.visitor == "v-cart"
    assert message.coupon_pool == "" and payload["coupon"] == ""
    assert payload["step"] == "reminder" and payload["discount_percent"] == 0
    assert [i["product_id"] for i in payload["items"]] == ["sku-1"]
    assert payload["cart_value"] == 40.0 and payload["currency"] == "EUR"


def test_cart_recovery_second_step_is_5_percent_if_nothing_happened(
    activator: Activator,
) -> None:
    profile = Profile(visitor_id="v-cart2")
    apply(profile, add_to_cart(T), T, activator)
    sent = until(profile, T + 10 * DAY, activator)
    assert [(at - T, body(m)["step"]) for at, m in sent] == [
        (4 * HOUR, "reminder"),
        (48 * HOUR, "discount"),
    ]
    second = sent[1][1]
    assert body(second)["discount_percent"] == 5
    assert body(second)["coupon"] == "__EDGE_COUPON__"
    assert second.coupon_pool == "cart_5"
    assert profile.journeys["cart_recovery"].done
    assert profile.due == 0 or profile.due > T + 10 * DAY


def test_no_cart_recovery_after_an_order(activator: Activator) -> None:
    profile = Profile(visitor_id="v-bought")
    apply(profile, add_to_cart(T), T, activator)
    assert until(profile, T + 2 * HOUR, activator) == []
    apply(profile, order(1, T + 2 * HOUR, 40.0), T + 2 * HOUR, activator)
    assert profile.journeys["cart_recovery"].done
    assert until(profile, T + 30 * DAY, activator) == []


def test_an_order_after_the_reminder_cancels_the_discount(activator: Activator) -> None:
    profile = Profile(visitor_id="v-late-buyer")
    apply(profile, add_to_cart(T), T, activator)
    assert len(until(profile, T + 5 * HOUR, activator)) == 1
    apply(profile, order(1, T + 6 * HOUR, 40.0), T + 6 * HOUR, activator)
    assert until(profile, T + 30 * DAY, activator) == []


def test_a_changed_cart_starts_it_again(activator: Activator) -> None:
    profile = Profile(visitor_id="v-browsing")
    apply(profile, add_to_cart(T), T, activator)
    apply(profile, add_to_cart(T + 3 * HOUR, "sku-2"), T + 3 * HOUR, activator)
    sent = until(profile, T + 8 * HOUR, activator)
    assert [at for at, _ in sent] == [T + 7 * HOUR]
    assert [i["product_id"] for i in body(sent[0][1])["items"]] == ["sku-1", "sku-2"]


def test_a_checkout_left_gets_the_checkout_reminder_instead(activator: Activator) -> None:
    profile = Profile(visitor_id="v-checkout")
    apply(profile, add_to_cart(T), T, activator)
    apply(profile, ev.CheckoutStarted(ts=T + 600), T + 600, activator)
    assert profile.journeys["cart_recovery"].done
    sent = until(profile, T + 10 * DAY, activator)
    assert [(at - T, body(m)["step"]) for at, m in sent] == [(600 + HOUR, "reminder")]
    assert sent[0][1].id == message_id("checkout_recovery", 0, "v-checkout", T + 600)


def test_cart_recovery_waits_24h_for_regular_customers(activator: Activator) -> None:
    profile = customer(
        [(T - 100 * DAY, 60.0), (T - 50 * DAY, 60.0), (T - 20 * DAY, 60.0)], activator
    )
    apply(profile, add_to_cart(T), T, activator)
    assert until(profile, T + 24 * HOUR - 1, activator) == []
    sent = until(profile, T + 4 * DAY, activator)
    assert [(at - T, body(m)["step"]) for at, m in sent] == [
        (24 * HOUR, "reminder"),
        (72 * HOUR, "discount"),
    ]


# --- reactivation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "percent"),
    [
        ([(T, 200.0)], 5),  # one order
        ([(T - 300 * DAY, 60.0), (T, 200.0)], 10),  # two orders
        ([(T - 300 * DAY, 500.0), (T, 200.0)], 10),  # 700 spent: by count still 10
        ([(T - 300 * DAY - i * DAY, 30.0) for i in range(4)] + [(T, 200.0)], 15),  # five
        ([(T - 300 * DAY, 900.0), (T, 200.0)], 15),  # 1,100 spent
    ],
)
def test_reactivation_tiers_by_order_count_and_value(
    activator: Activator, history: list[tuple[int, float]], percent: int
) -> None:
    profile = customer(sorted(history), activator)
    sent = [
        (at, m)
        for at, m in until(profile, T + 400 * DAY, activator)
        if "reactivation" in scenario_of(m)
    ]
    assert [(at - T) // DAY for at, _ in sent] == [90, 180, 365]
    assert {body(m)["discount_percent"] for _, m in sent} == {percent}
    assert all(m.coupon_pool == "reactivation" for _, m in sent)
    assert body(sent[0][1])["orders"]["last_value"] == 200.0


def test_reactivation_needs_a_last_order_over_150(activator: Activator) -> None:
    profile = customer([(T, 150.0)], activator)
    assert profile.journeys["reactivation"].done  # the trigger seen, its `when` false
    assert until(profile, T + 400 * DAY, activator) == []


def test_a_new_order_ends_reactivation(activator: Activator) -> None:
    profile = customer([(T, 300.0)], activator)
    assert len(until(profile, T + 100 * DAY, activator)) == 1
    apply(profile, order(9, T + 120 * DAY, 40.0), T + 120 * DAY, activator)
    assert profile.journeys["reactivation"].done
    assert until(profile, T + 600 * DAY, activator) == []


def test_a_step_overdue_past_late_is_skipped(activator: Activator) -> None:
    """An imported order 120 days old: the 3-month step is 30 days overdue (late is
    14d) and skipped; the 6-month one is sent on time."""
    profile = Profile(visitor_id="v-imported")
    apply(profile, order(1, T - 120 * DAY, 250.0), T, activator)
    assert profile.journeys["reactivation"].step == 1
    sent = until(profile, T + 300 * DAY, activator)
    assert [(at - (T - 120 * DAY)) // DAY for at, _ in sent] == [180, 365]


# --- segments, consent, payloads, ids -----------------------------------------------------


def test_prospect_welcome_until_the_first_order(activator: Activator) -> None:
    profile = Profile(visitor_id="v-new", traits=Traits(registered=T))
    assert activator.after(profile, None, T) == []
    assert profile.journeys["prospect_welcome"].trigger == T
    sent = until(profile, T + 5 * DAY, activator)
    assert [(at - T, body(m)["step"]) for at, m in sent] == [
        (600, "welcome"),
        (3 * DAY, "best_sellers"),
    ]
    apply(profile, order(1, T + 6 * DAY, 40.0), T + 6 * DAY, activator)
    assert profile.journeys["prospect_welcome"].done
    assert [scenario_of(m) for _, m in until(profile, T + 30 * DAY, activator)] == []


def test_an_old_prospect_gets_no_welcome_when_activation_starts(activator: Activator) -> None:
    profile = Profile(visitor_id="v-old", traits=Traits(registered=T - 365 * DAY))
    assert activator.after(profile, None, T) == []
    assert "prospect" in profile.segments and profile.journeys["prospect_welcome"].done
    assert until(profile, T + 30 * DAY, activator) == []


def test_only_visitors_with_consent_are_activated(activator: Activator) -> None:
    refused = Profile(visitor_id="v-no", consent=False)
    apply(refused, add_to_cart(T), T, activator)
    assert refused.journeys == {}
    assert until(refused, T + 10 * DAY, activator) == []
    assert activator.after(refused, None, T + 10 * DAY) == []
    withdrawn = Profile(visitor_id="v-withdrawn")
    apply(withdrawn, add_to_cart(T), T, activator)
    assert withdrawn.journeys
    withdrawn.consent = False
    assert activator.after(withdrawn, None, T + HOUR) == []
    assert withdrawn.journeys == {}
    assert until(withdrawn, T + 10 * DAY, activator) == []


def test_the_payload_carries_only_the_allowed_traits(rules: LiveRules) -> None:
    allowed = ("city", "custom.email")
    for traits, shown in [((), {}), (("city",), {"city": "Milano"})]:
        activator = Activator(rules, clock=Clock(), traits=traits)
        profile = customer([], activator)
        apply(profile, add_to_cart(T), T, activator)
        (_, message), *_ = until(profile, T + 4 * HOUR, activator)
        visitor = body(message)["visitor"]
        assert visitor["traits"] == shown
        assert visitor["email_hash"] == "h" * 16 and visitor["customer_id"] == "c-1"
        assert b"ann@example.com" not in message.body
    activator = Activator(rules, clock=Clock(), traits=lambda: allowed)  # a live setting
    profile = customer([], activator)
    apply(profile, add_to_cart(T), T, activator)
    (_, message), *_ = until(profile, T + 4 * HOUR, activator)
    assert body(message)["visitor"]["traits"] == {
        "city": "Milano",
        "custom.email": "ann@example.com",
    }


def test_the_same_step_always_has_the_same_id(activator: Activator) -> None:
    """A store may run a write twice (a retried transaction), two replicas may touch
    the same due profile: the step's message is the same message."""
    profile = Profile(visitor_id="v-twice")
    apply(profile, add_to_cart(T), T, activator)
    saved = encode(profile)
    first = activator.after(decode(saved), None, T + 4 * HOUR)
    again = activator.after(decode(saved), None, T + 4 * HOUR + 30)
    assert len(first) == 1 and [m.id for m in first] == [m.id for m in again]
    assert first[0].id == message_id("cart_recovery", 0, "v-twice", T)
    done = decode(saved)
    activator.after(done, None, T + 4 * HOUR)
    assert activator.after(done, None, T + 4 * HOUR) == []  # a step runs once
    other = Profile(visitor_id="v-other")
    apply(other, add_to_cart(T), T, activator)
    ids = {first[0].id, *(m.id for _, m in until(other, T + 4 * HOUR, activator))}
    later = decode(saved)
    apply(later, add_to_cart(T + HOUR, "sku-9"), T + HOUR, activator)
    ids |= {m.id for _, m in until(later, T + 5 * HOUR, activator)}
    assert len(ids) == 3  # another visitor, another trigger: other ids


def test_a_journey_outlives_an_edit_of_its_scenario(activator: Activator) -> None:
    """A journey whose scenario lost its steps (or was removed) ends quietly."""
    profile = Profile(visitor_id="v-edited")
    apply(profile, add_to_cart(T), T, activator)
    profile.journeys["cart_recovery"].step = 7
    profile.journeys["gone"] = Journey("gone", 0, T, T + HOUR, T)
    assert activator.after(profile, None, T + 5 * HOUR) == []
    assert profile.journeys["cart_recovery"].done and "gone" not in profile.journeys


def test_journeys_survive_the_store_encoding(activator: Activator) -> None:
    profile = Profile(visitor_id="v-stored")
    apply(profile, add_to_cart(T), T, activator)
    again = decode(encode(profile))
    assert again.journeys == profile.journeys and again.due == profile.due


# --- checks ----------------------------------------------------------------------------

BAD = """\
[segments.regular_customer]
when = "orders >= 3"

[[scenarios]]
id = "cart_recovery"
trigger = { event = "cart_lef" }
exit = ["ordr"]
tiers = [
  { when = "orderz >= 5", discount = 15 },
  { discount = 5 },
]

[[scenarios.steps]]
after = "4 hours"
instead = [{ when = "regular_custmer", after = "24h" }]
action = { webhook = "esp", template = "cart_reminder.json" }

[[scenarios.steps]]
after = "2h"
when = "cart.itemz >= 1"
action = { webhook = "esp", template = "cart_reminder.json" }

[[scenarios]]
id = "welcome"
trigger = { enter = "regular_customr" }

[[scenarios.steps]]
after = "1h"
action = { webhook = "esp", template = "welcome.json" }

[[scenarios]]
id = "typo"
trigger = { event = "order" }

[[scenarios.steps]]
after = "1h"
action = { webhook = "esp", tempate = "welcome.json" }
"""


def errors_of(text: str) -> list[str]:
    """Each error as `edge check` prints it, starting with its file:line:column."""
    with pytest.raises(ValueError) as caught:
        compile_text(text, file="bad.toml")
    first, *rest = str(caught.value).split("\nbad.toml:")
    return [first, *(f"bad.toml:{e}" for e in rest)]


def test_scenario_errors_name_the_line_the_column_and_the_fix() -> None:
    expected = [
        ("6:22", "unknown event `cart_lef`", "did you mean `cart_left`?"),
        ("7:10", "unknown exit `ordr`", "did you mean `order`?"),
        ("9:13", "unknown name `orderz`", "did you mean `orders`?"),
        ("14:1", "`4 hours` is not a duration", 'write e.g. "4h"'),
        ("15:22", "unknown name `regular_custmer`", "did you mean `regular_customer`?"),
        ("20:9", "unknown field `cart.itemz`", "did you mean `cart.items`?"),
        ("25:22", "unknown segment `regular_customr`", "did you mean `regular_customer`?"),
        ("37:29", "unknown key `tempate`", "did you mean `template`?"),
    ]
    errors = errors_of(BAD)
    assert len(errors) == len(expected), "\n".join(errors)
    for where, message, help in expected:
        found = [e for e in errors if message in e]
        assert found, f"{message} not in:\n" + "\n".join(errors)
        assert found[0].startswith(f"bad.toml:{where}: error:"), found[0]
        assert help in found[0]


def test_steps_out_of_order_and_a_tier_that_hides_the_others() -> None:
    text = """\
[[scenarios]]
id = "x"
trigger = { event = "order" }
tiers = [{ discount = 5 }, { when = "orders >= 2", discount = 10 }]

[[scenarios.steps]]
after = "2d"
action = { webhook = "esp", template = "welcome.json" }

[[scenarios.steps]]
after = "1d"
action = { webhook = "esp", template = "welcome.txt" }
"""
    errors = "\n".join(errors_of(text))
    assert "bad.toml:4:1: error: scenario `x`: a tier without `when` must come last" in errors
    assert ":11:1: error: scenario `x`: step 2 comes before step 1" in errors
    assert ":12:1: error: scenario `x`: `action.template` is not a template name" in errors


def test_edge_check_finds_templates_that_do_not_render_json(tmp_path: Path) -> None:
    webhooks = tmp_path / "webhooks"
    webhooks.mkdir()
    (webhooks / "bare.json").write_text('{"visitor": {{ visitor.id }}}')
    (webhooks / "broken.json").write_text('{"visitor": {{ visitor.id | tojson }},}')
    (webhooks / "good.json").write_text('{"visitor": {{ visitor.id | tojson }}}')
    ruleset = compile_text(
        """\
[[scenarios]]
id = "x"
trigger = { event = "order" }

[[scenarios.steps]]
after = "1d"
action = { webhook = "esp", template = "god.json" }
""",
        file="x.toml",
    )
    errors = [str(e) for e in check_scenarios(ruleset, tmp_path)]
    assert any("bare.json" in e and "tojson" in e for e in errors), errors
    assert any("broken.json" in e and "does not render valid JSON" in e for e in errors), errors
    assert not any("good.json:" in e for e in errors)
    missing = [e for e in errors if "god.json" in e]
    assert missing and missing[0].startswith("x.toml:7:41: error:")
    assert "did you mean `good.json`?" in missing[0]
    assert (
        Payloads(webhooks).render("good.json", {"visitor": {"id": 'a"b'}})
        == b'{"visitor": "a\\"b"}'
    )


def test_unknown_destinations_are_warnings(rules: LiveRules) -> None:
    warnings = unknown_destinations(rules.ruleset, ["esp"])
    assert warnings and all(w.severity == "warning" for w in warnings)
    assert {w.message.split("`")[3] for w in warnings} == {"crm"}
    assert unknown_destinations(rules.ruleset, ["esp", "crm"]) == []


def test_the_shipped_library_checks_clean(capsys: pytest.CaptureFixture[str]) -> None:
    from edge.rules_cli import check

    assert check(LIBRARY_DIR, str(SNIPPETS)) == 0
    out = capsys.readouterr()
    assert "7 scenarios" in out.out and "error" not in out.err


# --- through the store ------------------------------------------------------------------


async def test_cart_recovery_through_a_sqlite_store(rules: LiveRules, tmp_path: Path) -> None:
    """The Activator as edge serve runs it: in the store's write, its message in the
    outbox of the same transaction, the profile found again through the due index at
    4 hours (the due loop's pass, driven by hand)."""
    store = GuardedStore(SQLiteStore(tmp_path / "p.db"), write_timeout=10.0)
    service = ProfileService(store, IDENTITY.email_hash, cache_ttl=0.001)
    service.activation = Activator(rules, clock=Clock())
    try:
        added = ev.ProductAdded(product_id="sku-1", price=25.0)
        await service.record("v-store", [added], ev.Source.BROWSER, now=T)

        async def due_pass(now: int) -> None:
            due = await store.due_keys(until=now, limit=100)
            if due:
                await service.touch(due, now)

        for now in range(T, T + 4 * HOUR, 30 * 60):
            await due_pass(now)
        assert await store.outbox_list(PENDING, 10) == []
        await due_pass(T + 4 * HOUR)
        (row,) = await store.outbox_list(PENDING, 10)
        assert row.message.id == message_id("cart_recovery", 0, "v-store", T)
        assert body(row.message)["items"][0]["product_id"] == "sku-1"
        assert row.message.not_before == T + 4 * HOUR
        bought = ev.OrderCompleted(order_id="o1", total=25.0, anonymous_id="v-store")
        await service.record(None, [bought], ev.Source.SHOP, now=T + 5 * HOUR)
        profile = await service.load("v-store")
        assert profile is not None and profile.order_count == 1
        assert profile.journeys["cart_recovery"].done
        for now in range(T + 5 * HOUR, T + 5 * DAY, 6 * HOUR):
            await due_pass(now)
        assert len(await store.outbox_list(PENDING, 10)) == 1
    finally:
        await store.close()


def test_edge_serve_refuses_a_webhook_to_no_destination(
    rules: LiveRules, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.app import create_app
    from edge.config import Config, ConfigError, Destination
    from edge.profiles.store import MemoryStore

    monkeypatch.setenv("EDGE_DEST_ESP_SECRET", "s3cret")
    esp = Destination(url="https://esp.example/hook", secret_env="EDGE_DEST_ESP_SECRET")
    config = Config(
        upstream="http://127.0.0.1:9",
        rules=str(rules.directory),
        activation=True,
        destinations={"esp": esp},
    )
    with pytest.raises(ConfigError, match=r"scenarios\.toml:\d+: .*no destination `crm`"):
        create_app(config, MemoryStore())


def test_edge_explain_shows_the_journeys(
    rules: LiveRules, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.config import Config
    from edge.rules_cli import explain

    activator = Activator(rules, clock=Clock())
    profile = Profile(visitor_id="v-explained")
    apply(profile, add_to_cart(T), T, activator)
    saved = tmp_path / "profile.json"
    saved.write_bytes(msgspec.json.encode(profile))
    assert explain(rules.directory, Config(), None, str(saved), None, "") == 0
    out = capsys.readouterr().out
    assert "   cart_recovery  step 1 of 2 (reminder) due " in out
    assert "   reactivation  not started" in out


# --- by property ------------------------------------------------------------------------

Step = tuple[str, int]  # (what the visitor does, hours after the previous one)
histories = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "checkout", "order", "wait"]), st.integers(0, 60)),
    max_size=12,
)
FIRST_STEP = {"cart_recovery": 4 * HOUR, "checkout_recovery": HOUR}


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories)
def test_any_history_sends_each_step_once_on_time_and_never_after_an_order(
    activator: Activator, history: list[Step]
) -> None:
    """Whatever a visitor does, woken whenever the due index says: a message is never
    sent twice, never before its step's delay from its trigger, and a cart or checkout
    message never after an order that followed its trigger."""
    profile = Profile(visitor_id="v-any")
    now, sent, moments = T, [], []
    for what, hours in history:
        sent += until(profile, now + hours * HOUR, activator)
        now += hours * HOUR
        event = {
            "add": add_to_cart(now, f"sku-{now % 3}"),
            "remove": ev.ProductRemoved(product_id=f"sku-{now % 3}", ts=now),
            "checkout": ev.CheckoutStarted(ts=now),
            "order": order(now, now, 40.0),
        }.get(what)
        if event is not None:
            moments.append(now)
            sent += [(now, m) for m in apply(profile, event, now, activator)]
    sent += until(profile, now + 30 * DAY, activator)
    assert len({m.id for _, m in sent}) == len(sent)
    orders = [o.ts for o in profile.orders]
    for at, message in sent:
        for sid, delay in FIRST_STEP.items():
            for step in (0, 1):
                found = [t for t in moments if message_id(sid, step, "v-any", t) == message.id]
                if found:
                    assert at - found[0] >= delay
                    # (an order in the very second a message went out came after it)
                    assert not [o for o in orders if found[0] <= o < at]


def test_a_cart_line_without_a_name_takes_the_catalogues(rules: LiveRules) -> None:
    """A cart seen in the shop's add-to-cart requests has ids and prices, no names: the
    payload names each product as the catalogue does (what an e-mail shows)."""
    names = {"sku-1": "Borsa Valdarno"}
    activator = Activator(rules, clock=Clock(), names=lambda pid: names.get(pid, ""))
    profile = Profile(visitor_id="v-named")
    apply(profile, add_to_cart(T), T, activator)
    apply(profile, add_to_cart(T + 1, product="sku-unknown"), T + 1, activator)
    (_, message), *_ = until(profile, T + 5 * HOUR, activator)
    items = {i["product_id"]: i["name"] for i in body(message)["items"]}
    assert items == {"sku-1": "Borsa Valdarno", "sku-unknown": ""}

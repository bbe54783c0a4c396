"""The rule language: parsing, type checking, merchant errors with line and column,
escape attempts, cycles, reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edge.pages import Page
from edge.profiles.model import Profile
from edge.rules import LiveRules, RequestInfo, build_context, compile_segments, load_rules
from edge.rules.compiler import check
from edge.rules.lang import MAX_DEPTH, LangError, parse, render

NOW = 1_790_000_000


def errors_of(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "shop.toml").write_text(text)
    ruleset, errors = load_rules(tmp_path)
    assert ruleset is None
    return [str(e) for e in errors]


def lang_error(source: str, segments: tuple[str, ...] = ()) -> LangError:
    try:
        check(source, parse(source), segments)
    except LangError as e:
        return e
    except ExceptionGroup as group:
        first = group.exceptions[0]
        assert isinstance(first, LangError)
        return first
    raise AssertionError(f"no error for {source!r}")


@pytest.mark.parametrize(
    ("source", "canonical"),
    [
        ("orders_within(30d) >= 3", "(orders_within(30d) >= 3)"),
        ("a and b or not c", "((a and b) or not (c))"),
        ("1 + 2 * 3 - -4", "((1 + (2 * 3)) - -4)"),
        ("(1 + 2) * 3", "((1 + 2) * 3)"),
        ("x in ['a', \"b\"]", '(x in ["a", "b"])'),
        ("x not in [1, 2,]", "(x not in [1, 2])"),
        ("now >= 2026-12-01", "(now >= 2026-12-01)"),
        ("90s + 15m + 4h + 30d + 2w", "((((90s + 15m) + 4h) + 30d) + 2w)"),
        ("traits.tier == true", "(traits.tier == true)"),
        ("1.5e3 > 2", "(1500.0 > 2)"),
        (
            "not visits > 1 and orders < 2 or customer",
            "((not ((visits > 1)) and (orders < 2)) or customer)",
        ),
        (
            "-visits * 2 + 3 / -orders < 4 - 1 - 1",
            "(((-(visits) * 2) + (3 / -(orders))) < ((4 - 1) - 1))",
        ),
        ("a or b and not c in [1] or d", "((a or (b and not ((c in [1])))) or d)"),
        ("x not in [1] and not y", "((x not in [1]) and not (y))"),
        ("(visits == 1) not in [1]", "((visits == 1) not in [1])"),
        ("not not x == -1", "not (not ((x == -1)))"),
    ],
)
def test_parse(source: str, canonical: str) -> None:
    assert render(parse(source)) == canonical


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os')", "names starting with `_`"),
        ("orders.__class__", "names starting with `_`"),
        ("cart.items.real", "unknown field"),
        ("'x'.upper()", "expected the end"),
        ("lambda: 1", "`lambda` is not part"),
        ("[x for x in y]", "`for` is not part"),
        ("import os", "`import` is not part"),
        ("10**999 > 1", "`**` (power)"),
        ("1e999 > 1", "too large"),
        ("9" * 400 + " > 1", "too large"),
        ("(" * 10_000 + "1" + ")" * 10_000, "characters long"),
        ("(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1), "nested more than"),
        ("not " * 500 + "true", "nested more than"),
        ("- " * 500 + "1 > 0", "nested more than"),
        ("1" + " + 1" * 800 + " > 0", "nested more than"),
        ("x" * 1_000_000, "characters long"),
        ("open('/etc/passwd')", "not part"),
        ("eval('1')", "not part"),
        ("getattr(cart, 'items')", "unknown function"),
        ("a.b(1)", "cannot be called"),
        ("visits = 3", "compare with `==`"),
        ("1 < visits < 3", "do not chain"),
        ("x in [1] == y", "do not chain"),
        ("visits == 1 not in [1]", "expected the end"),
        ("orders_within(30x) > 1", "unknown duration unit"),
        ("'unclosed", "not closed"),
        ("'escaped quote\\'", "not closed"),
        ("", "empty"),
        ("café == 'x'", "unexpected character `é`"),
        ("orders > ٣", "unexpected character `٣`"),
        ("orders >= 1 &", "unexpected character `&`"),
    ],
)
def test_escape_attempts_and_syntax_are_clean_errors(source: str, message: str) -> None:
    error = lang_error(source)
    assert message in error.message + error.help


@pytest.mark.parametrize(
    ("source", "message", "help"),
    [
        (
            "order_within(30d) >= 3",
            "unknown function `order_within`",
            "did you mean `orders_within`?",
        ),
        ("orderz >= 3", "unknown name `orderz`", "did you mean `orders`?"),
        ("cart.age > 3", "cannot compare a duration with a number", "such as `3d`"),
        ("utm.medium == 3", "cannot compare a string with a number", ""),
        ("orders_within(30) > 1", "takes a duration, not a number", "`30d`"),
        ("orders_within(30d, 2) > 1", "takes 1 argument, got 2", "orders_within(duration)"),
        ("distance_km(1) < 3", "takes 2 arguments, got 1", ""),
        ("orders_within(visits * 1d) > 1", "must be written as a value", ""),
        ("orders_within(30d)", "must be true or false", "`orders_within(30d) >= 1`"),
        ("orders and vip", "`and` needs true or false", "`orders >= 1`"),
        ("customer < true", "cannot order", ""),
        ("utm.medium in ['a', 1]", "one type", ""),
        ("visits in 3", "needs a list", ""),
        ("now > 30d", "cannot compare a date with a duration", "durations"),
        ("has(vip)", "takes a field, not a segment", ""),
        ("orders(1) > 1", "`orders` is not a function", ""),
        ("date('2026-13-45') < now", "not a date", ""),
        ("cart.age + 'x' > 1h", "cannot compute duration + string", ""),
    ],
)
def test_type_and_name_errors(source: str, message: str, help: str) -> None:
    error = lang_error(source, ("vip",))
    assert message in error.message
    assert help in error.help


def test_merchant_error_format_line_column_and_caret(tmp_path: Path) -> None:
    text = (
        "# shop rules\n"
        "[segments.frequent_30d]\n"
        'label = "Bought often"\n'
        'when  = "orders_within(30d) >= 3"\n'
        "\n"
        "[segments.busy]\n"
        'when = "order_within(30d) >= 3"\n'
        "\n"
        "[segments.later]\n"
        "when = '''\n"
        "  visits >= 1 and\n"
        "  cart.age > 3'''\n"
        "\n"
        "[segments.escaped]\n"
        'when = "utm.campaign == \\"bf\\" and foo"\n'
    )
    errors = errors_of(tmp_path, text)
    assert len(errors) == 3  # all errors of the file, not only the first
    assert errors[0] == (
        f"{tmp_path}/shop.toml:7:9: error: segment `busy`: unknown function `order_within`\n"
        '    when = "order_within(30d) >= 3"\n'
        "            ^^^^^^^^^^^^\n"
        "  help: did you mean `orders_within`?"
    )
    assert errors[1].startswith(
        f"{tmp_path}/shop.toml:12:3: error: segment `later`: cannot compare"
    )
    assert "      ^^^^^^^^^^^^" in errors[1]
    # the \" escapes shift the raw column of `foo`: 6 raw characters for 4 decoded
    assert errors[2].startswith(
        f"{tmp_path}/shop.toml:15:36: error: segment `escaped`: unknown name"
    )


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "[segments.a]\nwhen = 'true'\ncolour = 'red'\n",
            ":3:1:",
            "unknown key `colour` in segment `a`",
        ),
        ("[segments.a]\nwhen = 3\n", ":2:1:", "`when`: expected `str`, got `int`"),
        ("[segments.a]\nlabel = 'x'\n", ":1:1:", "segment `a` needs `when`"),
        ("[segments.a]\nwhen = = 'true'\n", ":2:8:", "invalid TOML"),
        ("[segment.a]\nwhen = 'true'\n", ":1:1:", "unknown table `segment`"),
        ("[segments.orders]\nwhen = 'true'\n", ":1:1:", "built-in name"),
        ("[segments.big-spender]\nwhen = 'true'\n", ":1:1:", "must be letters"),
        (
            "[segments.a]\nwhen = 'b'\n[segments.b]\nwhen = 'c'\n[segments.c]\nwhen = 'a'\n",
            ":2:1:",
            "in a circle: a -> b -> c -> a",
        ),
        ("[segments.a]\nwhen = 'a'\n", ":2:1:", "in a circle: a -> a"),
        (
            "[slots.hero]\nselect = '#hero'\n[[placements]]\nslot = 'heroo'\nsnippet = 'x.html'\n",
            ":4:1:",
            "unknown slot `heroo`",
        ),
        ("[[placements]]\nslot = 'hero'\nsort = 'price up'\n", ":3:1:", "unknown sort `price up`"),
        (
            "[[placements]]\nslot = 'hero'\nsnippet = 'a.html'\nsort = 'pin'\n",
            ":3:1:",
            "one of them",
        ),
        ("[[placements]]\nslot = 'h'\nsnippet = 'a'\nholdout = 1.5\n", ":4:1:", "`holdout`"),
        (
            "[[placements]]\nslot = 'h'\nsnippet = 'a'\nsegment = 'nobody'\n",
            ":4:1:",
            "unknown segment",
        ),
        (
            "[[placements]]\nslot = 'h'\nsnippet = 'a'\nwhen = 'orderz > 1'\n",
            ":4:9:",
            "unknown name `orderz`",
        ),
        (
            "[[placements]]\nslot = 'h'\nsnippet = 'a'\ncap = {views = 3, per = 'daily'}\n",
            ":4:1:",
            "`cap.per`",
        ),
        (
            "[[placements]]\nslot = 'h'\nsnippet = 'a'\nstart = 2026-12-01\nend = 2026-11-01\n",
            ":5:1:",
            "`end` is not after `start`",
        ),
        ("[slots.list]\nselect = 'ol'\nitem_link = '/p/.*'\n", ":3:1:", "item_link"),
        ("[page_types]\ncategory = 'c/{slug}'\n", ":2:1:", "must start with `/`"),
        ("[page_types]\nproduct = ['/p/{id}', '/p/{1d}']\n", ":2:1:", "`{1d}` is not a name"),
        ("[page_types]\n  product = '/p/{id}/{id}'\n", ":2:3:", "names `{id}` twice"),
        ("[page_types]\nproduct = '/p/{id'\n", ":2:1:", "unmatched `{` or `}`"),
        ("[page_types]\nproduct = 3\n", ":2:1:", "needs a URL pattern"),
        ("segments = 3\n", ":1:1:", "`segments` has the wrong shape"),
    ],
)
def test_every_kind_of_file_error(tmp_path: Path, text: str, where: str, message: str) -> None:
    errors = errors_of(tmp_path, text)
    assert any(where in e and message in e for e in errors), errors


def test_duplicate_segment_across_files_names_both(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("[segments.vip]\nwhen = 'true'\n")
    (tmp_path / "b.toml").write_text("\n[segments.vip]\nwhen = 'false'\n")
    ruleset, errors = load_rules(tmp_path)
    assert ruleset is None
    assert f"{tmp_path}/b.toml:2:1" in str(errors[0])
    assert f"defined twice: here and at {tmp_path}/a.toml:1" in str(errors[0])


def test_full_file_with_placements_slots_and_page_types(tmp_path: Path) -> None:
    (tmp_path / "shop.toml").write_text(
        "[segments.vip]\nwhen = 'orders >= 1'\n"
        "[slots.home-hero]\nselect = '[data-edge-slot=home-hero]'\n"
        "[slots.category-products]\nselect = 'ol.products'\nitem_id = 'data-product-id'\n"
        "[page_types]\ncategory = '/c/{slug}'\nproduct = ['/p/{id}', '/product/*']\n"
        "[[placements]]\nslot = 'home-hero'\nsegment = 'vip'\nsnippet = 'hero_vip.html'\n"
        "holdout = 0.1\ncap = {views = 3, per = '1d'}\noffer_ttl = '48h'\npriority = 5\n"
        "[[placements]]\nslot = 'category-products'\nwhen = \"page.type == 'category'\"\n"
        "sort = ['pin', 'affinity']\npin = ['p1']\nstart = 2026-01-01T00:00:00Z\n"
        "[[placements]]\nslot = 'home-hero'\nsnippet = 'everyone.html'\n"
    )
    ruleset, errors = load_rules(tmp_path)
    assert not errors and ruleset is not None
    assert ruleset.pages.type_of("/c/shoes") == "category"
    assert ruleset.pages.type_of("/product/a/b") == "product"
    assert ruleset.pages.page("/p/x") == Page("product", {"id": "x"})
    assert ruleset.pages.type_of("/cart") == ""  # the rule files' map is the only one
    assert ruleset.pages.type_of("/nowhere") == ""
    p = Profile(visitor_id="v", order_count=1)
    ctx = build_context(p, RequestInfo(page_type="category"), NOW)
    assert [r.id for r in ruleset.eligible(ctx)] == [
        "home-hero.vip",
        "category-products.line19",
        "home-hero.everyone",
    ]
    early = build_context(p, RequestInfo(page_type="category"), 1_700_000_000)
    assert "category-products.line19" not in [r.id for r in ruleset.eligible(early)]


def test_missing_values_never_match() -> None:
    rules = compile_segments(
        {
            "gt": "age > 3",
            "ne": "age != 3",
            "not_gt": "not (age > 3)",
            "not_in": "geo.country not in ['IT']",
            "arith": "age + 1 > 0 or age * 0 == 0",
            "div0": "visits / 0 == 0 or not (visits / 0 >= 0)",
            "has_age": "has(age)",
        }
    )
    assert rules.matching(build_context(None, None, NOW)) == {"not_gt", "div0"}


def test_reload_keeps_old_rules_on_invalid_edit(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text("[segments.vip]\nwhen = 'orders >= 1'\n")
    live = LiveRules(tmp_path)
    assert live.ok and live.ruleset.segment_names == ("vip",)
    assert not live.reload()  # nothing changed
    old = live.ruleset
    path.write_text("[segments.vip]\nwhen = 'order >= 1'\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert not live.reload()
    assert live.ruleset is old and not live.ok
    assert "did you mean `orders`?" in str(live.errors[0])
    path.write_text("[segments.vip]\nwhen = 'orders >= 2'\n[segments.new]\nwhen = 'true'\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert live.reload() and live.ok
    assert live.ruleset.segment_names == ("vip", "new")


def test_invalid_first_load_serves_nothing(tmp_path: Path) -> None:
    (tmp_path / "shop.toml").write_text("[segments.vip]\nwhen = 'nope'\n")
    live = LiveRules(tmp_path)
    assert not live.ok and live.errors and live.ruleset.segment_names == ()


def test_the_rule_files_page_types_are_the_only_map(tmp_path: Path) -> None:
    (tmp_path / "shop.toml").write_text("[page_types]\ncategory = '/shop/{category}'\n")
    ruleset, errors = load_rules(tmp_path)
    assert not errors and ruleset is not None
    assert ruleset.page_types == {"category": ["/shop/{category}"]}
    assert ruleset.pages.page("/shop/shoes") == Page("category", {"category": "shoes"})
    assert ruleset.pages.type_of("/c/shoes") == ""  # no demo shop's patterns underneath
    assert ruleset.pages.type_of("/cart") == ""


def test_no_page_types_before_any_rules_load(tmp_path: Path) -> None:
    (tmp_path / "shop.toml").write_text("[segments.vip]\nwhen = 'nope'\n")
    live = LiveRules(tmp_path)
    assert not live.ok and live.ruleset.pages.type_of("/p/x") == ""


def test_a_slot_on_a_page_type_nothing_defines_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "theme.toml").write_text(
        "[page_types]\nhome = '/'\ncategory = '/c/{slug}'\n"
        "[slots.hero]\nselect = '#hero'\npages = ['home', 'categroy']\n"
    )
    ruleset, errors = load_rules(tmp_path)
    assert ruleset is None
    (error,) = errors
    assert f"{tmp_path}/theme.toml:6:1" in str(error)
    assert "slot `hero`: no page type `categroy`" in str(error)
    assert "did you mean `category`?" in str(error)


def test_the_shipped_theme_maps_every_demo_page(tmp_path: Path) -> None:
    from edge.rules import LIBRARY_DIR

    ruleset, errors = load_rules(LIBRARY_DIR)
    assert not errors and ruleset is not None
    pages = ruleset.pages
    assert pages.page("/p/borsa-tessa") == Page("product", {"product": "borsa-tessa"})
    assert pages.type_of("/c/scarpe-donna") == "category"
    assert pages.type_of("/order/A-1") == "order-complete"
    assert [pages.type_of(p) for p in ("/", "/search", "/cart", "/checkout")] == [
        "home",
        "search",
        "cart",
        "checkout",
    ]


def test_an_entry_that_does_not_decode_leaves_the_others_checked(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        "[segments.a]\nwhen = 'true'\ncolour = 'red'\n"
        "[segments.b]\nwhen = 'orderz > 1'\n[slots.h]\nselect = 'div'\n"
        "[[placements]]\nslot = 'h'\nsnippet = 'a'\nstart = 2026-11-27\nsegment = 'c'\n",
    )
    assert [e.split(": error: ")[1].split("\n")[0] for e in errors] == [
        "unknown key `colour` in segment `a`",
        "segment `b`: unknown name `orderz`",
        "unknown segment `c`",
    ]


def test_a_condition_written_twice_is_reported_at_each_place(tmp_path: Path) -> None:
    # Checked once, placed twice: the raw columns differ (quotes, an escape).
    errors = errors_of(
        tmp_path,
        "[segments.a]\nwhen = 'orderz > 1'\n"
        '[segments.b]\nwhen = "orderz \\u003e 1 and orderz > 1"\n'
        '[segments.c]\n  when = "orderz \\u003e 1 and orderz > 1"\n',
    )
    assert [e.split(": error")[0].removeprefix(f"{tmp_path}/shop.toml") for e in errors] == [
        ":2:9",
        ":4:9",
        ":4:29",
        ":6:11",
        ":6:31",
    ]


def test_a_long_chain_of_segments_loads() -> None:
    # Each segment uses the one before, written in reverse: ordering them is no deeper
    # for Python than one segment.
    chain = {f"s{i}": f"s{i - 1} or visits > {i}" for i in range(2000, 0, -1)} | {
        "s0": "visits > 0"
    }
    rules = compile_segments(chain)
    assert rules.segment_names[:3] == ("s0", "s1", "s2")
    assert rules.matching(build_context(Profile(visitor_id="v", visits=1), None, NOW)) == set(chain)


def test_a_dropped_rule_set_is_freed_at_once() -> None:
    # Nothing in a rule set refers back to it, so a reload frees the old one without
    # waiting for (and feeding) the cyclic collector: only the generated function and
    # its globals form a cycle.
    import gc

    gc.collect()
    gc.disable()
    try:
        rules = compile_segments(
            {f"s{i}": f"visits > {i} or s{i - 1}" for i in range(1, 50)} | {"s0": "orders >= 1"}
        )
        del rules
        assert gc.collect() < 20
    finally:
        gc.enable()


def test_a_product_pattern_may_call_its_one_capture_anything(tmp_path: Path) -> None:
    (tmp_path / "theme.toml").write_text(
        "[page_types]\nproduct = '/p/{id}'\ncategory = '/c/{slug}'\n"
        "catalogue = '/catalogue/{slug}_{pk}/'\n"
    )
    ruleset, errors = load_rules(tmp_path)
    assert not errors and ruleset is not None
    product = ruleset.pages.page("/p/borsa-tessa")
    assert product is not None and product.ref("product") == "borsa-tessa"
    category = ruleset.pages.page("/c/scarpe")
    assert category is not None and category.ref("category") == "scarpe"
    other = ruleset.pages.page("/catalogue/boot_7/")
    assert other is not None and other.ref("product") == ""  # two captures, neither named


def test_a_product_pattern_with_several_captures_names_the_product(tmp_path: Path) -> None:
    (tmp_path / "theme.toml").write_text("[page_types]\nproduct = '/catalogue/{slug}_{pk}/'\n")
    ruleset, errors = load_rules(tmp_path)
    assert ruleset is None
    (error,) = errors
    assert f"{tmp_path}/theme.toml:2:1" in str(error)
    assert "captures `{slug}`, `{pk}` but not `{product}`" in str(error)
    assert "'/catalogue/{slug}_{product}/'" in str(error)

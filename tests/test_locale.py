"""The shop's money, time and language: `[shop]` in the rule files, Babel's formats in
snippets, the shop's clock in conditions and schedules, and the page language (URL,
then `<html lang>`, then Accept-Language) through a real `edge serve`."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.languages import PageLanguages, declared_language, pick
from edge.personalize.snippets import Snippets, formats_for, visitor_context
from edge.rules.functions import Context
from edge.rules.ruleset import compile_sources, compile_text
from edge.rules.shop import Shop
from tests.conftest import EdgeProcess, fetch, serving, start_edge

ROME = ZoneInfo("Europe/Rome")
NEW_YORK = ZoneInfo("America/New_York")


def shop(**settings: str) -> Shop:
    lines = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
    return compile_text("[shop]\n" + lines).shop


def render(template: str, language: str, the_shop: Shop, tmp_path: Path) -> str:
    (tmp_path / "t.html").write_text(template, encoding="utf-8")
    snippets = Snippets(tmp_path, library=None)
    context = visitor_context(None, now=0, language=language, shop=the_shop)
    out = snippets.render("t", context, languages=[language])
    assert out is not None
    return out


# --- money and dates ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "currency", "language", "expected"),
    [
        ("it_IT", "EUR", "it", "1.234,56\xa0€"),
        ("en_US", "USD", "en", "$1,234.56"),
        ("en_GB", "GBP", "en", "£1,234.56"),
        ("ja_JP", "JPY", "ja", "￥1,235"),  # no decimals in yen
        # an English page of an Italian shop: English words, Italian digits (en_IT)
        ("it_IT", "EUR", "en", "1.234,56\xa0€"),
    ],
)
def test_money_is_written_the_locale_way(
    locale: str, currency: str, language: str, expected: str, tmp_path: Path
) -> None:
    the_shop = shop(locale=locale, currency=currency)
    assert render("{{ 1234.56|money }}", language, the_shop, tmp_path) == expected


def test_money_in_another_currency_and_bad_values(tmp_path: Path) -> None:
    the_shop = shop(locale="en_US", currency="USD")
    out = render('{{ 10|money("EUR") }}|{{ "x"|money }}|{{ none|money }}', "en", the_shop, tmp_path)
    assert out == "€10.00||"


def test_without_a_locale_the_page_language_decides(tmp_path: Path) -> None:
    the_shop = shop(currency="EUR")
    assert render("{{ 89.9|money }}", "it", the_shop, tmp_path) == "89,90\xa0€"
    assert render("{{ 89.9|money }}", "en", the_shop, tmp_path) == "€89.90"
    assert formats_for("en", the_shop).locale == "en"
    assert formats_for("en", shop(locale="it_IT")).locale == "en_IT"
    assert formats_for("it", shop(locale="it_IT")).locale == "it_IT"


def test_dates_are_on_the_shop_clock_in_the_page_locale(tmp_path: Path) -> None:
    noon_utc = int(dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC).timestamp())
    template = (
        f'{{{{ {noon_utc}|datetime("short") }}}}|{{{{ {noon_utc}|date("long") }}}}|'
        f'{{{{ {noon_utc}|time("HH:mm") }}}}|{{{{ {noon_utc}|clock("%H:%M") }}}}'
    )
    rome = shop(locale="it_IT", timezone="Europe/Rome")
    assert render(template, "it", rome, tmp_path) == "01/12/26, 13:00|1 dicembre 2026|13:00|13:00"
    york = shop(locale="en_US", currency="USD", timezone="America/New_York")
    assert (
        render(template, "en", york, tmp_path)
        == "12/1/26, 7:00\u202fAM|December 1, 2026|07:00|07:00"
    )
    tokyo = shop(locale="ja_JP", currency="JPY", timezone="Asia/Tokyo")
    assert render(template, "ja", tokyo, tmp_path).endswith("|21:00|21:00")


def test_the_shipped_timed_offer_shows_its_deadline_on_the_shop_clock() -> None:
    snippets = Snippets(library=Path(__file__).resolve().parent.parent / "snippets")
    deadline = int(dt.datetime(2026, 12, 1, 17, 30, tzinfo=dt.UTC).timestamp())
    offer = {"deadline": deadline, "deadline_iso": "", "seconds_left": 3600}
    rome = shop(locale="it_IT", timezone="Europe/Rome")
    for language, expected in (
        ("it", "fino alle 18:30 del 01/12/26"),
        ("en", "until 18:30 on 01/12/2026"),
    ):
        context = visitor_context(None, now=0, language=language, shop=rome) | {"offer": offer}
        html = snippets.render("timed_offer", context, languages=[language]) or ""
        assert expected in " ".join(html.split()), html


# --- the shop's clock in rules ----------------------------------------------------------


def at(zone: dt.tzinfo, *when: int) -> float:
    return dt.datetime(*when, tzinfo=zone).timestamp()  # type: ignore[misc]


def ctx_at(now: float, zone: dt.tzinfo) -> Context:
    ctx = Context(None, now=now)
    ctx.zone = zone
    return ctx


RULES = """
[shop]
timezone = "{zone}"

[segments.evening]
when = "hour >= 18"

[segments.weekend]
when = "weekday >= 6"

[segments.christmas_eve]
when = "now >= 2026-12-24T18:00 and now < date(\\"2026-12-25\\")"

[segments.after_utc_noon]
when = "now >= date(\\"2026-12-24T12:00:00+00:00\\")"

[slots.hero]
select = "#hero"

[[placements]]
slot = "hero"
snippet = "hero_vip.html"
start = 2026-11-27T00:00:00
end = 2026-11-28T00:00:00

[[placements]]
slot = "hero"
id = "utc-offset"
snippet = "hero_vip.html"
start = 2026-11-27T00:00:00Z
"""


def test_time_conditions_read_the_shop_clock() -> None:
    rome = compile_text(RULES.format(zone="Europe/Rome"))
    utc = compile_text(RULES.format(zone="UTC"))
    # 17:30 UTC is 18:30 in Rome: evening there, not yet in UTC
    now = at(dt.UTC, 2026, 12, 24, 17, 30)
    assert "evening" in rome.matching(ctx_at(now, rome.shop.zone))
    assert "evening" not in utc.matching(ctx_at(now, utc.shop.zone))
    # ... and Christmas Eve from 18:00 Rome time, until midnight Rome time
    assert "christmas_eve" in rome.matching(ctx_at(now, rome.shop.zone))
    assert "christmas_eve" not in utc.matching(ctx_at(now, utc.shop.zone))
    late = at(ROME, 2026, 12, 25, 0, 30)
    assert "christmas_eve" not in rome.matching(ctx_at(late, rome.shop.zone))
    assert "christmas_eve" in utc.matching(ctx_at(late, utc.shop.zone))  # 23:30 UTC
    # a date with its own offset is that instant in any zone
    noon = at(dt.UTC, 2026, 12, 24, 12, 0)
    assert "after_utc_noon" in rome.matching(ctx_at(noon, rome.shop.zone))
    assert "after_utc_noon" not in rome.matching(ctx_at(noon - 1, rome.shop.zone))
    # Saturday 00:30 in Rome is still Friday in New York
    saturday = at(ROME, 2026, 12, 5, 0, 30)
    assert "weekend" in rome.matching(ctx_at(saturday, ROME))
    york = compile_text(RULES.format(zone="America/New_York"))
    assert "weekend" not in york.matching(ctx_at(saturday, NEW_YORK))


def test_a_schedule_without_an_offset_is_on_the_shop_clock() -> None:
    rome = compile_text(RULES.format(zone="Europe/Rome"))
    utc = compile_text(RULES.format(zone="UTC"))
    scheduled = {p.id: p for p in rome.placements}["hero.everyone"]
    assert scheduled.start == at(ROME, 2026, 11, 27)
    assert scheduled.end == at(ROME, 2026, 11, 28)
    # 23:30 UTC on the 26th is 00:30 on the 27th in Rome: on in Rome, not yet in UTC
    now = at(dt.UTC, 2026, 11, 26, 23, 30)
    assert scheduled.scheduled(now)
    assert not {p.id: p for p in utc.placements}["hero.everyone"].scheduled(now)
    # 23:30 Rome time on the 27th: still on in Rome; in UTC (22:30) too
    assert scheduled.scheduled(at(ROME, 2026, 11, 27, 23, 30))
    assert not scheduled.scheduled(at(ROME, 2026, 11, 28, 0, 30))
    # with an offset (Z) the zone does not move it
    assert {p.id: p for p in rome.placements}["utc-offset"].start == at(dt.UTC, 2026, 11, 27)
    eligible = rome.eligible(ctx_at(now, ROME))
    assert [p.id for p in eligible] == ["hero.everyone"]


# --- [shop] checked at load -------------------------------------------------------------


def errors_of(*files: tuple[str, str]) -> list[str]:
    ruleset, errors = compile_sources(list(files))
    assert ruleset is None
    return [str(e) for e in errors]


def test_bad_shop_settings_are_reported_with_place_and_fix() -> None:
    text = """[shop]
currency = "EUX"
locale = "it_IX"
timezone = "Europe/Rom"
languages = ["it", "english!"]
language_path = "/{lng}/*"
colour = "blue"
"""
    found = errors_of(("rules/shop.toml", text))
    joined = "\n".join(found)
    assert "rules/shop.toml:2:1: error: unknown currency `EUX`" in joined
    assert "did you mean `EUR`?" in joined
    assert "rules/shop.toml:3:1: error: unknown locale `it_IX`" in joined
    assert "did you mean `it_IT`?" in joined
    assert "rules/shop.toml:4:1: error: unknown time zone `Europe/Rom`" in joined
    assert "did you mean `Europe/Rome`?" in joined
    assert "rules/shop.toml:5:1: error: `english!` is not a language tag" in joined
    assert "rules/shop.toml:6:1: error: pattern `/{lng}/*` has no `{lang}`" in joined
    assert "rules/shop.toml:7:1: error: unknown key `colour` in [shop]" in joined
    assert len(found) == 6


def test_shop_is_declared_once_and_with_the_right_types() -> None:
    found = errors_of(
        ("rules/a.toml", '[shop]\ncurrency = "EUR"\n'),
        ("rules/b.toml", '# b\n[shop]\ntimezone = "UTC"\n'),
    )
    assert found[0].startswith(
        "rules/b.toml:2:1: error: [shop] is defined twice: here and at rules/a.toml:1"
    )
    found = errors_of(("rules/a.toml", '[shop]\ncurrency = "EUR"\nlanguages = "it"\n'))
    assert found[0].startswith("rules/a.toml:3:1: error: [shop] `languages`: expected `array`")
    found = errors_of(("rules/a.toml", '[shop]\nlanguage_path = "/{lang}/*"\n'))
    assert "`language_path` needs `languages`" in found[0]


# --- the page language ---------------------------------------------------------------------


def test_declared_language_and_memory() -> None:
    assert declared_language(b'<!doctype html>\n<html class="no-js" lang="it-IT">') == "it-it"
    assert declared_language(b"<!DOCTYPE html><HTML LANG=en><head>") == "en"
    assert declared_language(b"<html><head lang='fr'>") == ""
    assert declared_language(b'<html lang="<script>">') == ""
    assert pick("it-it", ("it", "en")) == "it" and pick("pt-br", ("it",)) == ""
    memory = PageLanguages(maxsize=2)
    assert memory.of("/a") == ""
    memory.learn("/a", "it")
    assert memory.of("/a") == "it" and memory.of("/new") == "it"  # the site's latest
    memory.learn("/b", "en")
    assert memory.of("/a") == "it" and memory.of("/new") == "en"
    memory.learn("/a", "en")
    assert memory.of("/a") == ""  # varies: the browser decides
    memory.learn("/c", "it")  # bounded: /a is forgotten
    assert memory.of("/a") == "it"


class _Pages(BaseHTTPRequestHandler):
    """A shop whose pages declare their language: /it/..., /en/..., /varies alternates,
    any other page is Italian."""

    flip = itertools.cycle(["it", "en"])

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/en/"):
            lang = "en"
        elif path == "/varies":
            lang = next(self.flip)
        else:
            lang = "it"
        body = (
            f'<!doctype html><html lang="{lang}"><head><title>x</title></head>'
            f"<body><p>{lang} page</p></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    rules = tmp_path_factory.mktemp("rules")
    (rules / "shop.toml").write_text(
        """[shop]
currency = "EUR"
locale = "it_IT"
languages = ["it", "en"]
language_path = ["/{lang}/*"]

[slots.page]
select = "body"
action = "prepend"

[[placements]]
slot = "page"
snippet = "language.html"
""",
        encoding="utf-8",
    )
    snippets = tmp_path_factory.mktemp("snippets")
    (snippets / "language.html").write_text(
        '<p id="shown">EN {{ language }} {{ 1234.5|money }}</p>', encoding="utf-8"
    )
    (snippets / "language.it.html").write_text(
        '<p id="shown">IT {{ language }} {{ 1234.5|money }}</p>', encoding="utf-8"
    )
    with serving(_Pages) as url:
        proc = start_edge(url, env={"EDGE_RULES": str(rules), "EDGE_SNIPPETS": str(snippets)})
        yield proc
        proc.stop()


def shown(edge: EdgeProcess, path: str, accept_language: str) -> str:
    headers = {"Accept": "text/html", "Accept-Language": accept_language}
    reply = fetch(edge.port, path, headers=headers)
    assert reply.status == 200
    m = re.search(r'<p id="shown">([^<]*)</p>', reply.body.decode())
    assert m is not None, reply.body[:300]
    return m.group(1)


def test_the_page_language_comes_from_the_url_then_html_lang(multilingual: EdgeProcess) -> None:
    # nothing declared yet: the browser's language among the shop's
    assert shown(multilingual, "/p/1", "en-US,en;q=0.9") == "EN en 1.234,50\xa0€"
    # that page declared <html lang="it">: from now on it is Italian for everyone
    assert shown(multilingual, "/p/1", "en-US,en;q=0.9") == "IT it 1.234,50\xa0€"
    # a page not seen yet: the language the shop's pages declared last
    assert shown(multilingual, "/p/2", "en") == "IT it 1.234,50\xa0€"
    # the URL says it, whatever the browser prefers
    assert shown(multilingual, "/en/p/1", "it-IT,it") == "EN en 1.234,50\xa0€"
    assert shown(multilingual, "/it/p/1", "en") == "IT it 1.234,50\xa0€"
    # a path whose pages declare one language, then another: the browser decides there
    shown(multilingual, "/varies", "en")
    shown(multilingual, "/varies", "en")
    assert shown(multilingual, "/varies", "en") == "EN en 1.234,50\xa0€"
    assert shown(multilingual, "/varies", "it") == "IT it 1.234,50\xa0€"

"""The merchant's rule tools on the command line: check, explain, segments."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.demo.seed import seed
from edge.identity import Identity
from edge.profiles.service import ProfileService
from edge.profiles.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent


def test_check_the_shipped_rules_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "rules"), "--snippets", str(ROOT / "snippets")]) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "segments" in out and "placements" in out and "slots" in out


def test_check_reports_every_error_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "shop.toml").write_text(
        "[segments.vipp]\n"
        'label = "x"\n'
        "when = \"order_within(30d) >= 3 and cart.items > 'a'\"\n"
        "\n"
        "[slots.hero]\n"
        'select = "div >> p"\n'
        "\n"
        "[[placements]]\n"
        'slot = "hero"\n'
        'segment = "vipp"\n'
        'snippet = "hero_vipp.html"\n',
        encoding="utf-8",
    )
    assert main(["check", str(tmp_path), "--snippets", str(ROOT / "snippets")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'shop.toml'}:3:9: error:" in err
    assert "did you mean `orders_within`?" in err
    assert "cannot compare a number with a string" in err
    assert f"{tmp_path / 'shop.toml'}:5: error: slot `hero`" in err
    assert "did you mean `hero_vip.html`?" in err
    assert "4 errors" in err


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "p.db"

    async def fill() -> None:
        store = SQLiteStore(db)
        await seed(ProfileService(store, Identity(["s"]).email_hash))
        await store.close()

    asyncio.run(fill())
    monkeypatch.setenv("EDGE_STORE", f"sqlite:{db}")
    monkeypatch.setenv("EDGE_SECRET", "s")
    monkeypatch.chdir(tmp_path)
    return db


def test_segments_counts_members(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["segments", "--rules", str(ROOT / "rules")]) == 0
    out = capsys.readouterr().out
    assert "310 stored profiles" in out
    vip = next(line for line in out.splitlines() if line.startswith("vip "))
    assert int(vip.split()[1]) > 0
    assert "nobody is in" not in out
    assert "depend on the request" in out and "mobile" in out


def test_explain_shows_the_values_that_decided(
    seeded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "cust:demo-0001", "--rules", str(ROOT / "rules")]) == 0
    out = capsys.readouterr().out
    assert "frequent_30d" in out and "orders_within(30d) = " in out
    assert (
        main(
            [
                "explain",
                "cust:demo-0001",
                "--rules",
                str(ROOT / "rules"),
                "--url",
                "/?utm_medium=email",
            ]
        )
        == 0
    )
    assert "yes  from_newsletter" in capsys.readouterr().out
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"profile": {"visitor_id": "v", "visits": 1}}))
    assert main(["explain", "--profile", str(profile), "--rules", str(ROOT / "rules")]) == 0
    assert "no   vip" in capsys.readouterr().out
    assert main(["explain", "nobody-here", "--rules", str(ROOT / "rules")]) == 1


def test_explain_says_which_placements_a_slot_s_pages_keep_off_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"profile": {"visitor_id": "v", "visits": 1}}))
    rules = ["--profile", str(profile), "--rules", str(ROOT / "rules")]
    # the newsletter hero's slot is on home pages only; the top banner is everywhere
    assert main(["explain", *rules, "--url", "/c/scarpe-donna?utm_medium=email"]) == 0
    out = capsys.readouterr().out
    here, _, elsewhere = out.partition("not on this page")
    assert "placements that apply on this `category` page" in here
    assert "home-hero: hero-newsletter" not in here
    assert "home-hero: hero-newsletter" in elsewhere and "is only on: home" in elsewhere
    assert main(["explain", *rules, "--url", "/?utm_medium=email"]) == 0
    out = capsys.readouterr().out
    assert "placements that apply on this `home` page" in out
    here, _, elsewhere = out.partition("not on this page")
    assert "home-hero: hero-newsletter" in here and "category-products" in elsewhere
    # without a page, each placement says where its slot is
    assert main(["explain", *rules]) == 0
    assert "give --url for one page" in capsys.readouterr().out

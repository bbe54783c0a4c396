"""SIGHUP reloads the configuration and the rules of a running ``edge serve`` (same
process, requests in flight finish); a broken configuration keeps the old one serving;
SIGTERM still drains (issue 15)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, Reply, fetch, start_edge

WAIT = 10.0
"""Longest a test waits for a reload to show (a bound, not an assertion)."""

RULES = """
[slots.page]
select = "body"
action = "prepend"

[[placements]]
slot = "page"
when = "geo.country == '{country}'"
snippet = "near.html"
"""


def _write_config(path: Path, **settings: object) -> None:
    lines = []
    for name, value in settings.items():
        text = str(value).lower() if isinstance(value, bool) else repr(value)
        lines.append(f"{name} = {text}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _until(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _near(proc: EdgeProcess, country: str) -> bool:
    page = fetch(proc.port, "/page", headers={"X-Geo-Country": country})
    assert page.status == 200
    return b"<p id=near>" in page.body


def _ingest(proc: EdgeProcess, token: str) -> Reply:
    return fetch(
        proc.port,
        "/_edge/ingest",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        body=b'{"events": []}',
    )


@pytest.fixture
def shop_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "theme.toml").write_text(RULES.format(country="IT"))
    (tmp_path / "snippets").mkdir()
    (tmp_path / "snippets" / "near.html").write_text("<p id=near>Vicino a te</p>")
    return tmp_path


@pytest.fixture
def reloading(upstream: TestUpstream, shop_dir: Path) -> Iterator[EdgeProcess]:
    _write_config(
        shop_dir / "edge.toml",
        rules=str(shop_dir / "rules"),
        snippets=str(shop_dir / "snippets"),
        trust_geo=False,
        max_header_bytes=4096,
    )
    proc = start_edge(upstream.url, "--config", str(shop_dir / "edge.toml"))
    yield proc
    proc.stop()


@pytest.mark.slow
def test_sighup_applies_new_rules_and_settings_in_the_same_process(
    reloading: EdgeProcess, shop_dir: Path
) -> None:
    assert not _near(reloading, "IT")  # geo headers not trusted yet
    big_cookie = {"Cookie": "c=" + "x" * 6000}
    assert fetch(reloading.port, "/page", headers=big_cookie).status == 431
    assert _ingest(reloading, "rotated").status == 503  # no ingest token yet

    # a request in flight when the signal comes
    in_flight: list[Reply] = []
    slow = threading.Thread(target=lambda: in_flight.append(fetch(reloading.port, "/slow")))
    slow.start()
    time.sleep(0.3)

    (shop_dir / "rules" / "theme.toml").write_text(RULES.format(country="FR"))
    _write_config(
        shop_dir / "edge.toml",
        rules=str(shop_dir / "rules"),
        snippets=str(shop_dir / "snippets"),
        trust_geo=True,
        max_header_bytes=16384,
        ingest_token="rotated",
        host="0.0.0.0",  # cannot change in a running process
    )
    reloading.proc.send_signal(signal.SIGHUP)

    assert _until(lambda: _near(reloading, "FR")), "the new rule and trust_geo never showed"
    assert not _near(reloading, "IT")
    assert fetch(reloading.port, "/page", headers=big_cookie).status == 200
    assert _ingest(reloading, "rotated").status == 200
    assert _ingest(reloading, "wrong").status == 401
    slow.join(WAIT)
    assert [r.status for r in in_flight] == [200] and in_flight[0].body == b"late"
    assert reloading.proc.poll() is None  # the same process, serving on its port

    assert reloading.stop() == 0
    log = reloading.proc.stderr.read().decode() if reloading.proc.stderr else ""
    assert "needs a restart: host (keeping the running value)" in log
    assert "configuration reloaded" in log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("broken", "named"),
    [
        ("trust_geo = maybe\n", "edge.toml"),
        ("max_header_bytes = 10\n", "max_header_bytes must be at least 1024"),
        ("tracks = true\n", "unknown key 'tracks'"),
    ],
)
def test_a_broken_configuration_on_sighup_is_one_line_and_the_old_one_serves_on(
    upstream: TestUpstream, shop_dir: Path, broken: str, named: str
) -> None:
    config = shop_dir / "edge.toml"
    _write_config(
        config,
        rules=str(shop_dir / "rules"),
        snippets=str(shop_dir / "snippets"),
        trust_geo=True,
    )
    proc = start_edge(upstream.url, "--config", str(config))
    try:
        assert _near(proc, "IT")
        config.write_text(config.read_text() + broken, encoding="utf-8")
        proc.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)  # the log checked below shows the signal was handled
        assert proc.proc.poll() is None
        assert _near(proc, "IT")  # the old settings and rules serve on
    finally:
        assert proc.stop() == 0
    log = proc.proc.stderr.read().decode() if proc.proc.stderr else ""
    refused = [line for line in log.splitlines() if "reload refused" in line]
    assert len(refused) == 1 and named in refused[0], log
    assert "Traceback" not in log


@pytest.mark.slow
def test_sigterm_still_drains_in_flight_requests(upstream: TestUpstream) -> None:
    proc = start_edge(upstream.url, env={"EDGE_TRACK": "false"})
    replies: list[Reply] = []
    slow = threading.Thread(target=lambda: replies.append(fetch(proc.port, "/slow")))
    slow.start()
    time.sleep(0.3)
    proc.proc.send_signal(signal.SIGHUP)  # survives it
    time.sleep(0.2)
    assert proc.proc.poll() is None
    assert proc.stop(signal.SIGTERM) == 0
    slow.join(WAIT)
    assert [r.status for r in replies] == [200]


@pytest.mark.slow
def test_sighup_gives_new_requests_a_new_upstream_pool_with_the_new_timeouts(
    upstream: TestUpstream, tmp_path: Path
) -> None:
    config = tmp_path / "edge.toml"
    _write_config(config, read_timeout=1.0, track=False)
    proc = start_edge(upstream.url, "--config", str(config))
    try:
        assert fetch(proc.port, "/slow").status == 504  # the shop takes 3 s
        assert fetch(proc.port, "/page").status == 200  # a pooled connection, kept idle
        _write_config(config, read_timeout=10.0, track=False)
        proc.proc.send_signal(signal.SIGHUP)
        assert _until(lambda: fetch(proc.port, "/slow").status == 200)
        assert fetch(proc.port, "/page").status == 200
    finally:
        assert proc.stop() == 0


def test_every_setting_is_either_applied_by_a_reload_or_named_as_needing_a_restart() -> None:
    """A new setting must be sorted into one or the other (README, "Limits, timeouts and
    signals", lists the restart ones)."""
    from edge.app import LIVE_SETTINGS
    from edge.config import FIELDS

    assert set(FIELDS) >= LIVE_SETTINGS
    assert set(FIELDS) - LIVE_SETTINGS == {
        "host",
        "port",
        "store",
        "catalog",
        "replay_cache_bytes",
        "profile_cache_ttl",
        "session_cookie",
        "logout_paths",
        # the store's guard is built around the store at start
        "store_timeout_ms",
        "store_write_timeout_ms",
        "store_breaker_failures",
        "store_breaker_cooldown",
        # the activation's loops and destinations are built at start
        "activation",
        "activation_interval",
        "destinations",
    }

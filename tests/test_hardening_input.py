"""Input that reaches a header or a number: redirects, signatures, traits, replays,
the profiling form's return path. Each through a real ``edge serve`` with raw bytes."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from edge.identity import Identity
from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, fetch, start_edge

pytestmark = pytest.mark.slow

TOKEN = "input-token"
SIGNING = "input-signing-secret"


def raw(port: int, request: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    """Send *request* byte for byte; the status, headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


def location(port: int, host: bytes, *extra: bytes) -> str | None:
    request = b"GET /redirect-self HTTP/1.1\r\nHost: " + host + b"\r\n"
    request += b"".join(line + b"\r\n" for line in extra)
    status, headers, _ = raw(port, request + b"Connection: close\r\n\r\n")
    if status != 302:
        return None  # refused before the shop (a 400 from the server): nothing reflected
    return headers["location"][0]


@pytest.fixture(scope="module")
def trusting(upstream: TestUpstream) -> Iterator[EdgeProcess]:
    proc = start_edge(
        upstream.url,
        env={
            "EDGE_TRUST_FORWARDED": "true",
            "EDGE_INGEST_TOKEN": TOKEN,
            "EDGE_INGEST_SECRET": SIGNING,
        },
    )
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    "host",
    [
        b"evil.example/?",
        b"evil.example?x=",
        b"evil.example#",
        b"user@evil.example",
        b"shop.example\\@evil.example",
        b"shop.example:80@evil.example",
        b"shop.example:notaport",
        b"[::1",
        b"shop example",
    ],
)
def test_a_malformed_host_never_names_the_redirect(trusting: EdgeProcess, host: bytes) -> None:
    found = location(trusting.port, host)
    assert found == "/cart?x=1"  # the path alone: the browser stays on its own origin


def test_a_well_formed_host_still_names_the_redirect(trusting: EdgeProcess) -> None:
    assert location(trusting.port, b"shop.example:8443") == "http://shop.example:8443/cart?x=1"
    assert location(trusting.port, b"[::1]:8000") == "http://[::1]:8000/cart?x=1"
    # ... for this request only: no shared cache keeps it
    request = b"GET /redirect-self HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"
    assert raw(trusting.port, request)[1]["cache-control"] == ["private"]
    other = b"GET /redirect-away HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"
    assert "cache-control" not in raw(trusting.port, other)[1]  # not ours to change


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [
        (b"https", "https"),
        (b"HTTPS", "https"),
        (b"https, http", "https"),
        (b"https://evil.example/?", "http"),
        (b"javascript", "http"),
        (b"", "http"),
    ],
)
def test_only_http_or_https_is_taken_from_x_forwarded_proto(
    trusting: EdgeProcess, proto: bytes, scheme: str
) -> None:
    found = location(trusting.port, b"shop.example", b"X-Forwarded-Proto: " + proto)
    assert found == f"{scheme}://shop.example/cart?x=1"


def test_allowed_hosts_and_public_url(upstream: TestUpstream) -> None:
    allowed = start_edge(upstream.url, env={"EDGE_ALLOWED_HOSTS": "shop.example,.shop.example"})
    public = start_edge(
        upstream.url,
        env={"EDGE_PUBLIC_URL": "https://www.shop.example", "EDGE_ALLOWED_HOSTS": "other.example"},
    )
    try:
        assert location(allowed.port, b"shop.example:8000") == "http://shop.example:8000/cart?x=1"
        assert location(allowed.port, b"M.Shop.Example") == "http://M.Shop.Example/cart?x=1"
        assert location(allowed.port, b"evil.example") == "/cart?x=1"
        assert location(allowed.port, b"evilshop.example") == "/cart?x=1"
        # public_url wins over Host and allowed_hosts; the redirect may be cached then
        assert location(public.port, b"evil.example") == "https://www.shop.example/cart?x=1"
        request = b"GET /redirect-self HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert "cache-control" not in raw(public.port, request)[1]
    finally:
        allowed.stop()
        public.stop()


# --- the shop's signed ingest ---------------------------------------------------------


def signed(body: bytes, stamp: str | None = None) -> dict[str, str]:
    stamp = stamp or str(int(time.time()))
    tag = hmac.new(SIGNING.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Edge-Signature": f"t={stamp},v1={tag}", "Content-Type": "application/json"}


def ingest(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    reply = fetch(port, "/_edge/ingest", "POST", headers, body)
    return reply.status, json.loads(reply.body)


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        ("t=" + "9" * 5000 + ",v1=" + "0" * 64, "longer than 512"),
        ("t=" + "9" * 400 + ",v1=" + "0" * 64, "t must be the unix time"),
        ("t=-5,v1=" + "0" * 64, "t must be the unix time"),
        ("t=1700000000,v1=zz", "v1 must be"),
        ("t=1,v1=" + "0" * 64, "away from the sidecar's clock"),
        ("t=1," * 200, "longer than"),
    ],
)
def test_a_malformed_signature_is_a_clear_401(
    trusting: EdgeProcess, signature: str, reason: str
) -> None:
    status, problem = ingest(trusting.port, b'{"events": []}', {"X-Edge-Signature": signature})
    assert status == 401 and reason in problem["message"]


def visitor(port: int) -> tuple[str, str]:
    """A new visitor's cookie and id, after two pages (the profile is stored)."""
    reply = fetch(port, "/page")
    cookie = next(v for v in reply.all("set-cookie") if v.startswith("edge_vid="))
    cookie = cookie.split(";")[0]
    fetch(port, "/page", headers={"Cookie": cookie})
    return cookie, cookie.removeprefix("edge_vid=").split(".")[0]


def opens(port: int, cookie: str) -> int:
    reply = fetch(port, "/_edge/profile", headers={"Cookie": cookie})
    profile = json.loads(reply.body)["profile"] or {}
    return sum(profile.get("email_open_days", {}).values())


def test_a_replayed_signature_applies_nothing_a_resigned_resend_does(
    trusting: EdgeProcess,
) -> None:
    cookie, vid = visitor(trusting.port)
    event = {"event": "Email Opened", "anonymous_id": vid, "campaign": "june"}
    body = json.dumps({"events": [event]}).encode()
    headers = signed(body)
    assert ingest(trusting.port, body, headers)[0] == 200
    assert opens(trusting.port, cookie) == 1
    status, problem = ingest(trusting.port, body, headers)  # the same request, replayed
    assert (
        status == 409 and problem["error"] == "replayed" and "sign it again" in problem["message"]
    )
    assert opens(trusting.port, cookie) == 1
    # a deliberate resend, signed again: applied (an event without an id counts again) ...
    stamp = str(int(time.time()) - 1)
    assert ingest(trusting.port, body, signed(body, stamp))[0] == 200
    assert opens(trusting.port, cookie) == 2
    # ... and with an event id, idempotent as always
    body = json.dumps({"events": [{**event, "event_id": "open-1"}]}).encode()
    assert ingest(trusting.port, body, signed(body))[0] == 200
    assert ingest(trusting.port, body, signed(body, str(int(time.time()) - 2)))[0] == 200
    assert opens(trusting.port, cookie) == 3


@pytest.mark.parametrize(
    ("traits", "field"),
    [
        ('{"birth_year": 1e300}', "traits.birth_year"),
        ('{"birth_year": 1e400}', "traits"),  # refused as it is read: "Number out of range"
        ('{"birth_year": 1980.5}', "traits.birth_year"),
        ('{"birth_year": 1066}', "traits.birth_year"),
        ('{"birth_year": "9' + "9" * 5000 + '"}', "traits.birth_year"),
        ('{"registered": 1e300}', "traits.registered"),
        ('{"latitude": 1e300}', "traits.latitude"),
        ('{"longitude": "-181"}', "traits.longitude"),
        ('{"lifetime_points": 1e300}', "traits.lifetime_points"),
    ],
)
def test_out_of_range_numeric_traits_are_a_422_naming_the_field(
    trusting: EdgeProcess, traits: str, field: str
) -> None:
    body = b'{"events": [{"event": "Identify", "user_id": "u1", "traits": %s}]}' % traits.encode()
    status, problem = ingest(trusting.port, body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 422 and f"events[0].{field}" in problem["message"]


def test_sane_numeric_traits_are_stored(trusting: EdgeProcess) -> None:
    traits = {"birth_year": 1980, "registered": 1_700_000_000, "latitude": 45.4, "longitude": 9.2}
    body = json.dumps({"events": [{"event": "Identify", "user_id": "u2", "traits": traits}]})
    status, _ = ingest(trusting.port, body.encode(), {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200


# --- the profiling form's return path, and cookies of any bytes -------------------------


def form(port: int, fields: dict[str, str], cookie: str = "") -> tuple[int, str]:
    body = urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    reply = fetch(port, "/_edge/profile-form", "POST", headers, body)
    return reply.status, reply.header("location") or ""


@pytest.mark.parametrize(
    ("return_to", "location_"),
    [
        ("/caffè?tazza=ü", "/caff%C3%A8?tazza=%C3%BC"),
        ("/prodotti/€", "/prodotti/%E2%82%AC"),
        ("/a\\b", "/a%5Cb"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/\u0085evil", "/"),
    ],
)
def test_return_to_goes_back_as_a_safe_ascii_path(
    trusting: EdgeProcess, return_to: str, location_: str
) -> None:
    assert form(trusting.port, {"return_to": return_to}) == (303, location_)
    cookie, vid = visitor(trusting.port)  # a known visitor with a valid form token
    csrf = Identity(["test-secret"]).mac("profile-form", vid.encode())
    fields = {"return_to": return_to, "csrf": csrf, "question": "nope"}
    assert form(trusting.port, fields, cookie) == (303, location_)


def test_cookies_of_any_bytes_are_not_an_error(upstream: TestUpstream, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "theme.toml").write_text(
        '[slots.page]\nselect = "body"\naction = "prepend"\n\n'
        '[[placements]]\nslot = "page"\nwhen = "visits >= 1"\nsnippet = "hi.html"\n'
    )
    (tmp_path / "hi.html").write_text("<p id=hi>hi</p>")
    proc = start_edge(
        upstream.url,
        env={
            "EDGE_RULES": str(rules),
            "EDGE_SNIPPETS": str(tmp_path),
            "EDGE_SESSION_COOKIE": "sessionid",
        },
    )
    try:
        cookie, _ = visitor(proc.port)
        for bad in (b"edge_preview=a.\xc3\xa9", b"edge_sess=\xc3\xa9" + b"x" * 41):
            request = b"GET /page HTTP/1.1\r\nHost: shop.example\r\nCookie: " + cookie.encode()
            request += b"; sessionid=s; " + bad + b"\r\nConnection: close\r\n\r\n"
            status, _, _ = raw(proc.port, request)
            assert status == 200
        # and a preview link of such bytes in its query
        status, _, _ = raw(
            proc.port,
            b"GET /page?edge_preview=a.%C3%A9\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert status in (200, 400)  # the server may refuse raw non-ASCII in a target
    finally:
        proc.stop()


async def test_both_stores_claim_a_signature_once_across_their_users(
    redis_url: str, tmp_path: Path
) -> None:
    from edge.profiles.redis import RedisStore
    from edge.profiles.sqlite import SQLiteStore

    path = tmp_path / "p.db"
    pairs = [
        (SQLiteStore(path), SQLiteStore(path)),  # two processes' stores on one file
        (RedisStore(redis_url, prefix="once-test:"), RedisStore(redis_url, prefix="once-test:")),
    ]
    try:
        for one, other in pairs:
            assert await one.claim_once("sig:abc", 600) is True
            assert await other.claim_once("sig:abc", 600) is False  # a replica sees it
            await one.release_once("sig:abc")  # not applied: the sender may retry as is
            assert await other.claim_once("sig:abc", 600) is True
            assert await one.claim_once("sig:abc", 600) is False
    finally:
        for one, other in pairs:
            await one.close()
            await other.close()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EDGE_PUBLIC_URL": "https://shop.example/shop?x=1"}, "public_url"),
        ({"EDGE_PUBLIC_URL": "shop.example"}, "public_url"),
        ({"EDGE_ALLOWED_HOSTS": "https://shop.example"}, "allowed_hosts"),
        ({"EDGE_ALLOWED_HOSTS": "shop.example:8000"}, "allowed_hosts"),
        ({"EDGE_SESSION_COOKIE": "session id"}, "session_cookie"),
        ({"EDGE_LOGOUT_PATHS": "accounts/logout"}, "logout_paths"),
    ],
)
def test_the_new_settings_are_checked_naming_the_setting(env: dict[str, str], named: str) -> None:
    from edge.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=named) as caught:
        load_config(config_file=None, environ=env)
    assert "\n" not in str(caught.value)


def test_a_logout_pattern_that_cannot_compile_is_one_line_at_start(tmp_path: Path) -> None:
    from edge.app import EdgeApp
    from edge.config import ConfigError, load_config
    from edge.profiles.store import MemoryStore

    config = load_config(
        config_file=None,
        environ={"EDGE_UPSTREAM": "http://127.0.0.1:1", "EDGE_LOGOUT_PATHS": "/a/{x"},
    )
    with pytest.raises(ConfigError, match=re.escape("logout_paths: pattern `/a/{x`")):
        EdgeApp(config, MemoryStore())

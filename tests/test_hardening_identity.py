"""A linked visitor cookie on a shared device: logout rotates it, the profile endpoint
shows a customer's profile only with the shop session bound to the browser.

Through a real ``edge serve`` in front of a small shop of the test's own, which does
what a shop integration does: on login it sends ``Identify`` (and the customer's
order history) to ``/_edge/ingest`` with the visitor id read from the ``edge_vid``
cookie, then sets its session cookie; on logout it deletes it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from edge.identity import Identity
from edge.visitors import Visit, Visitors, _session_set
from tests.conftest import EdgeProcess, Reply, fetch, serving, start_edge

pytestmark = pytest.mark.slow

TOKEN = "ingest-token-for-identity-tests"
RULES = """
[slots.page]
select = "body"
action = "prepend"

[[placements]]
slot = "page"
when = "orders_within(30d) >= 1"
snippet = "buyer.html"
"""


class Shop(BaseHTTPRequestHandler):
    edge_port = 0

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _cookies(self) -> dict[str, str]:
        out = {}
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            out[name] = value
        return out

    def do_GET(self) -> None:
        if self.path in ("/accounts/logout/", "/account/close"):
            # Django's logout: the session flushed, its cookie deleted, back home
            expired = 'sessionid=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/'
            self._send(302, [("Location", "/"), ("Set-Cookie", expired)])
            return
        if self.path == "/signout":  # a logout that leaves the session cookie alone
            self._send(302, [("Location", "/")])
            return
        if self.path == "/accounts/logout/get":  # logging out takes a POST: refused
            self._send(405, [("Allow", "POST")])
            return
        page = b"<!doctype html><html><head><title>Shop</title></head><body><p>Hi</p></body></html>"
        self._send(200, [("Content-Type", "text/html; charset=utf-8")], page)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        user = self.rfile.read(length).decode().removeprefix("user=")
        visitor = self._cookies().get("edge_vid", "")
        batch = {
            "events": [
                {"event": "Identify", "anonymous_id": visitor, "user_id": user},
                {
                    "event": "Order Completed",
                    "user_id": user,
                    "order_id": f"{user}-1",
                    "total": 120.0,
                    "ts": int(time.time()) - 86_400,
                },
            ]
        }
        reply = fetch(
            self.edge_port,
            "/_edge/ingest",
            "POST",
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            json.dumps(batch).encode(),
        )
        assert reply.status == 200, reply.body
        session = secrets.token_hex(16)
        cookie = f"sessionid={session}; expires=Fri, 01 Jan 2100 00:00:00 GMT; HttpOnly; Path=/"
        self._send(302, [("Location", "/"), ("Set-Cookie", cookie)])


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    root: Path = tmp_path_factory.mktemp("identity")
    (root / "rules").mkdir()
    (root / "rules" / "theme.toml").write_text(RULES)
    (root / "snippets").mkdir()
    (root / "snippets" / "buyer.html").write_text("<p id=buyer>Welcome back, buyer</p>")
    with serving(Shop) as url:
        proc = start_edge(
            url,
            env={
                "EDGE_INGEST_TOKEN": TOKEN,
                "EDGE_SESSION_COOKIE": "sessionid",
                "EDGE_LOGOUT_PATHS": "/accounts/logout/*, /signout",
                "EDGE_RULES": str(root / "rules"),
                "EDGE_SNIPPETS": str(root / "snippets"),
            },
        )
        Shop.edge_port = proc.port
        yield proc
        proc.stop()


def set_cookie(reply: Reply, name: str) -> str | None:
    """The value *reply* sets for cookie *name* ("" when it deletes it), None if unset."""
    for header in reply.all("set-cookie"):
        cookie, _, _ = header.partition(";")
        key, _, value = cookie.partition("=")
        if key == name:
            return "" if "Max-Age=0" in header else value
    return None


class Browser:
    """A cookie jar: what the sidecar and the shop set, sent back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.jar: dict[str, str] = {}

    def __call__(self, path: str, method: str = "GET", body: bytes | None = None) -> Reply:
        cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        headers = {"Cookie": cookie} if cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        reply = fetch(self.port, path, method, headers, body)
        for header in reply.all("set-cookie"):
            name, _, rest = header.partition(";")[0].partition("=")
            if "Max-Age=0" in header or (name == "sessionid" and rest == '""'):
                self.jar.pop(name, None)
            else:
                self.jar[name] = rest
        return reply

    def profile(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self("/_edge/profile").body)


def logged_in(port: int, user: str) -> Browser:
    browser = Browser(port)
    browser("/page")
    browser("/login", "POST", f"user={user}".encode())
    assert {"edge_vid", "edge_sess", "sessionid"} <= browser.jar.keys()
    return browser


def test_the_customer_sees_their_profile_with_the_session_the_shop_set(edge: EdgeProcess) -> None:
    browser = logged_in(edge.port, "c-1")
    seen = browser.profile()["profile"]
    assert seen["customer_id"] == "c-1" and seen["order_count"] == 1
    assert b"id=buyer" in browser("/page").body  # personalized as the customer


def test_a_stale_linked_cookie_alone_shows_and_erases_nothing_of_the_customer(
    edge: EdgeProcess,
) -> None:
    browser = logged_in(edge.port, "c-2")
    stale = Browser(edge.port)  # the visitor cookie alone, as a copy of the jar might hold it
    stale.jar = {"edge_vid": browser.jar["edge_vid"]}
    shown = stale.profile()
    assert shown["profile"] is None and shown["linked"] is True
    assert "log in" in shown["message"]
    erased = stale("/_edge/profile", "DELETE")
    assert json.loads(erased.body)["erased"] is False
    assert set_cookie(erased, "edge_vid") == ""  # this browser is forgotten...
    assert browser.profile()["profile"]["order_count"] == 1  # ...the customer is not
    # the shop's backend (its ingest token) may read it for its own "my data" page
    cookie = {"Cookie": f"edge_vid={browser.jar['edge_vid']}"}
    for auth, shown in ((f"Bearer {TOKEN}", True), ("Bearer wrong", False)):
        reply = fetch(edge.port, "/_edge/profile", headers={**cookie, "Authorization": auth})
        assert (json.loads(reply.body)["profile"] is not None) is shown

    # another session value (made up, or another customer's) with the binding: rotated
    forged = Browser(edge.port)
    forged.jar = {**browser.jar, "sessionid": secrets.token_hex(16)}
    reply = forged("/_edge/profile")
    assert json.loads(reply.body)["profile"] is None
    assert set_cookie(reply, "edge_vid") == "" and set_cookie(reply, "edge_sess") == ""


def test_logout_rotates_the_visitor_cookie(edge: EdgeProcess) -> None:
    browser = logged_in(edge.port, "c-3")
    old = dict(browser.jar)
    out = browser("/accounts/logout/")
    assert out.status == 302
    assert set_cookie(out, "edge_vid") not in (None, "", old["edge_vid"])
    assert set_cookie(out, "edge_sess") == ""
    assert "private" in (out.header("cache-control") or "")
    # the next visitor on this device: an anonymous profile, no customer segments
    page = browser("/page")
    assert b"id=buyer" not in page.body
    fresh = browser.profile()["profile"]
    assert fresh is None or not fresh.get("customer_id")
    # the old cookie with the old session no longer exists in the browser; copied back
    # without the session, it shows nothing
    stale = Browser(edge.port)
    stale.jar = {"edge_vid": old["edge_vid"], "edge_sess": old["edge_sess"]}
    assert stale.profile()["profile"] is None
    # logging in again binds the new id: the customer sees their profile again
    browser("/login", "POST", b"user=c-3")
    assert browser.profile()["profile"]["customer_id"] == "c-3"


@pytest.mark.parametrize(
    "path",
    [
        "/signout",  # a configured logout path (the shop leaves its cookie alone)
        "/account/close",  # not configured, but the shop deletes its session cookie
    ],
)
def test_every_logout_the_sidecar_can_see_rotates(edge: EdgeProcess, path: str) -> None:
    browser = logged_in(edge.port, "c-4")
    old = browser.jar["edge_vid"]
    reply = browser(path)
    assert set_cookie(reply, "edge_vid") not in (None, "", old)
    assert b"id=buyer" not in browser("/page").body


def test_a_session_that_ended_unseen_rotates_on_the_next_request(edge: EdgeProcess) -> None:
    browser = logged_in(edge.port, "c-5")
    old = browser.jar["edge_vid"]
    del browser.jar["sessionid"]  # expired in the browser, or cleared by the shop's JS
    page = browser("/page")
    assert set_cookie(page, "edge_vid") not in (None, "", old)
    assert set_cookie(page, "edge_sess") == ""
    assert b"id=buyer" not in page.body


def test_anonymous_visitors_keep_their_cookie(edge: EdgeProcess) -> None:
    browser = Browser(edge.port)
    browser("/page")
    first = browser.jar["edge_vid"]
    browser("/page")
    assert browser.jar["edge_vid"] == first
    deadline = time.monotonic() + 20  # events are flushed every 50 ms; a loaded machine
    while browser.profile()["profile"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert browser.profile()["profile"]["visits"] == 1


def test_session_cookies_are_read_from_set_cookie() -> None:
    assert _session_set(b"sessionid=abc; Path=/; HttpOnly", "sessionid") == ("abc", None)
    assert _session_set(b"sessionid=abc; Max-Age=60", "sessionid") == ("abc", 60)
    assert _session_set(b"other=abc; Max-Age=60", "sessionid") is None
    value, age = _session_set(  # type: ignore[misc]
        b'sessionid=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/', "sessionid"
    )
    assert value == "" and age is not None and age < 0
    assert _session_set(b"sessionid=x; expires=garbage", "sessionid") == ("x", None)


def test_a_binding_holds_only_for_its_visitor_and_session() -> None:
    identity = Identity(["s1"])
    tag = identity.session_binding("v1", "sess")
    assert identity.session_bound("v1", "sess", tag)
    assert not identity.session_bound("v2", "sess", tag)
    assert not identity.session_bound("v1", "other", tag)
    assert not identity.session_bound("v1", "", tag)
    rotated = Identity(["s2", "s1"])  # a rotated secret still verifies old bindings
    assert rotated.session_bound("v1", "sess", tag)


def test_another_login_without_a_logout_moves_the_browser_not_the_customer(
    edge: EdgeProcess,
) -> None:
    browser = logged_in(edge.port, "c-6")
    # the next person logs in on the same browser, the first never logged out
    browser("/login", "POST", b"user=c-7")
    cookie = {"Cookie": f"edge_vid={browser.jar['edge_vid']}", "Authorization": f"Bearer {TOKEN}"}
    now = json.loads(fetch(edge.port, "/_edge/profile", headers=cookie).body)["profile"]
    # the browser is c-7's now, and nothing of c-6's came along
    assert now["customer_id"] == "c-7" and now["order_count"] == 1
    # c-6 on a browser of their own: their profile whole, not absorbed into c-7
    first = logged_in(edge.port, "c-6").profile()["profile"]
    assert first["customer_id"] == "c-6" and first["order_count"] == 1
    assert browser.jar["edge_vid"].split(".")[0] not in first["aliases"]


def test_a_logout_the_shop_refuses_rotates_nothing(edge: EdgeProcess) -> None:
    browser = logged_in(edge.port, "c-8")
    old = browser.jar["edge_vid"]
    refused = browser("/accounts/logout/get")  # a link from another site, say
    assert refused.status == 405 and set_cookie(refused, "edge_vid") is None
    assert browser.jar["edge_vid"] == old
    assert browser.profile()["profile"]["customer_id"] == "c-8"


def test_the_last_set_cookie_of_the_session_counts() -> None:
    visitors = Visitors(Identity(["s1"]), session_cookie="sessionid")
    renewed = Visit("v1", new=False, secure=False, consent=True)
    out = visitors.session_headers(
        renewed,
        200,
        [(b"set-cookie", b'sessionid=""; Max-Age=0'), (b"set-cookie", b"sessionid=new; Path=/")],
    )
    assert renewed.visitor_id == "v1" and not renewed.rotated  # a new session, no logout
    assert [v.split(b"=")[0] for _, v in out] == [b"edge_sess"]
    ended = Visit("v1", new=False, secure=True, consent=True)
    out = visitors.session_headers(
        ended, 200, [(b"set-cookie", b"sessionid=x"), (b"set-cookie", b"sessionid=; Max-Age=0")]
    )
    assert ended.rotated and ended.visitor_id != "v1"
    assert out[0][1].startswith(b"edge_vid=") and b"Secure" in out[0][1]

"""The profiling form's endpoint, through a real `edge serve`, without JavaScript."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.forms import csrf_token, safe_return
from edge.identity import Identity
from tests._upstream import TestUpstream
from tests.conftest import EdgeProcess, fetch, start_edge
from tests.test_visitors import profile, visitor_cookie, wait_for

IDENTITY = Identity(["test-secret"])  # what start_edge gives the sidecar


@pytest.fixture
def tracked(upstream: TestUpstream) -> Iterator[EdgeProcess]:
    proc = start_edge(upstream.url)
    yield proc
    proc.stop()


def post_form(port: int, fields: dict[str, str], cookie: str = "") -> object:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    return fetch(port, "/_edge/profile-form", "POST", headers, urlencode(fields).encode())


def test_an_answer_is_stored_and_the_visitor_goes_back(tracked: EdgeProcess) -> None:
    cookie = visitor_cookie(fetch(tracked.port, "/page"))
    fetch(tracked.port, "/page", headers={"Cookie": cookie})  # the profile exists from now
    visitor_id = cookie.split("=", 1)[1].split(".")[0]
    fields = {
        "question": "gender",
        "answer": "female",
        "return_to": "/c/scarpe-donna?page=2",
        "csrf": csrf_token(IDENTITY, visitor_id),
    }
    reply = post_form(tracked.port, fields, cookie)
    assert reply.status == 303  # type: ignore[attr-defined]
    assert reply.header("location") == "/c/scarpe-donna?page=2"  # type: ignore[attr-defined]
    wait_for(lambda: profile(tracked.port, cookie).get("answers") == {"gender": "female"})

    # a bad answer goes back with the reason, and stores nothing
    bad = post_form(tracked.port, {**fields, "question": "age_band", "answer": "old"}, cookie)
    assert bad.status == 303  # type: ignore[attr-defined]
    assert any(c.startswith("edge_form_error=age_band") for c in bad.all("set-cookie"))  # type: ignore[attr-defined]
    # declining is an answer: the question is not asked again
    post_form(tracked.port, {**fields, "question": "age_band", "skip": "1"}, cookie)
    wait_for(lambda: profile(tracked.port, cookie)["answers"].get("age_band") == "-")


def test_forged_or_foreign_posts_change_nothing(tracked: EdgeProcess) -> None:
    cookie = visitor_cookie(fetch(tracked.port, "/page"))
    fetch(tracked.port, "/page", headers={"Cookie": cookie})
    wait_for(lambda: profile(tracked.port, cookie) is not None)
    fields = {"question": "gender", "answer": "male", "return_to": "/", "csrf": "forged"}
    assert post_form(tracked.port, fields, cookie).status == 403  # type: ignore[attr-defined]
    # without a cookie there is nobody to store it for: back to the page, nothing kept
    assert post_form(tracked.port, fields).status == 303  # type: ignore[attr-defined]
    assert "answers" not in profile(tracked.port, cookie)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/cart", "/cart"),
        ("/c/x?y=1#top", "/c/x?y=1#top"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/a\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
    ],
)
def test_return_to_stays_on_the_site(value: str, expected: str) -> None:
    assert safe_return(value) == expected


@given(
    visitor_id=st.text(max_size=40),
    secrets=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3),
)
def test_the_form_token_is_the_identity_mac_of_the_visitor(
    visitor_id: str, secrets: list[str]
) -> None:
    """The token is the one ``Identity.mac`` makes (the format tokens already in
    browsers have: tests/test_identity.py), checks under every secret, and is another
    visitor's or another secret's no longer."""
    identity = Identity(secrets)
    token = csrf_token(identity, visitor_id)
    assert token == identity.mac("profile-form", visitor_id.encode())
    assert token == csrf_token(identity, visitor_id)  # (the keyed HMAC is not consumed)
    assert identity.check_mac("profile-form", visitor_id.encode(), token)
    assert csrf_token(identity, visitor_id + "x") != token
    assert csrf_token(Identity(["a secret longer than any drawn", *secrets]), visitor_id) != token

"""The visitor cookie's tag, computed with the key's pads hashed once, equals the
standard library's HMAC-SHA256 (the cookies signed before stay valid)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from edge.identity import Identity, _Keyed


@given(st.binary(max_size=200), st.binary(max_size=8), st.binary(max_size=300))
def test_keyed_tag_is_hmac_sha256(key: bytes, prefix: bytes, message: bytes) -> None:
    expected = hmac.new(key, prefix + message, hashlib.sha256).digest()
    keyed = _Keyed(key, prefix)
    assert keyed.digest(message) == expected
    assert keyed.digest(message) == expected  # (the pads are copied, never consumed)


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_cookie_is_the_standard_hmac_and_old_secrets_verify(first: str, second: str) -> None:
    old = Identity([second])
    rotated = Identity([first, second])
    visitor_id = rotated.new_visitor_id()
    mac = hmac.new(first.encode(), b"vid:" + visitor_id.encode(), hashlib.sha256).digest()
    tag = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert rotated.sign(visitor_id) == f"{visitor_id}.{tag}"
    assert rotated.verify(rotated.sign(visitor_id)) == visitor_id
    assert rotated.verify(old.sign(visitor_id)) == visitor_id  # a rotated-out secret's
    if first != second:
        assert old.verify(rotated.sign(visitor_id)) is None
    tampered = rotated.sign(visitor_id)[:-1] + ("A" if not tag.endswith("A") else "B")
    assert rotated.verify(tampered) is None


@given(
    st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3),
    st.text(max_size=20),
    st.binary(max_size=200),
)
def test_mac_is_the_standard_hmac_and_checks_under_every_secret(
    secrets: list[str], purpose: str, message: bytes
) -> None:
    """``Identity.mac`` (from the keyed objects, copied) is the standard HMAC-SHA256 of
    ``purpose:message`` under the signing secret (tags already out stay valid), the
    keyed objects are not consumed, and ``check_mac`` takes any secret's tag."""
    identity = Identity(secrets)
    digest = hmac.digest(secrets[0].encode(), purpose.encode() + b":" + message, "sha256")
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert identity.mac(purpose, message) == expected
    assert identity.mac(purpose, message) == expected
    for secret in secrets:
        assert identity.check_mac(purpose, message, Identity([secret]).mac(purpose, message))
    assert not identity.check_mac(purpose, message + b"x", expected)

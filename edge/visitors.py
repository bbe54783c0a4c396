"""Who is asking: the visitor behind a request, from the signed cookie and consent.

:meth:`Visitors.begin` reads the signed visitor cookie and the consent cookie from
the request's head (microseconds, no I/O): a returning visitor, a new one (who gets
the cookie with the response), or nobody to track (no consent, tracking off, a
crawler). Without consent nothing is recorded and no cookie is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.identity import VISITOR_COOKIE, Identity
from edge.request import RequestHead, is_crawler

__all__ = ["Visit", "Visitors", "answers_a_page"]


@dataclass(slots=True)
class Visit:
    visitor_id: str | None
    """None without consent (or with tracking off): nothing is stored."""
    new: bool
    secure: bool
    consent: bool
    crawler: bool = False


class Visitors:
    def __init__(
        self, identity: Identity, *, track: bool = True, trust_forwarded: bool = False
    ) -> None:
        self.identity = identity
        self.track = track
        self.trust_forwarded = trust_forwarded
        """Believe ``X-Forwarded-Proto`` (a TLS terminator in front): anyone else
        could send it."""

    def begin(self, head: RequestHead) -> Visit:
        # Secure behind a trusted TLS terminator too: the cookie then gets Secure.
        secure = head.scheme == "https" or (
            self.trust_forwarded and head.forwarded_proto == b"https"
        )
        if head.user_agent and is_crawler(head.user_agent):
            return Visit(None, False, secure, False, crawler=True)
        cookies = head.cookies
        consent = self.identity.has_consent(cookies)
        if not (consent and self.track):
            return Visit(None, False, secure, consent)
        signed = cookies.get(VISITOR_COOKIE)
        visitor_id = self.identity.verify(signed) if signed is not None else None
        if visitor_id is None:
            return Visit(self.identity.new_visitor_id(), True, secure, consent)
        return Visit(visitor_id, False, secure, consent)

    def cookie_header(self, visit: Visit) -> tuple[bytes, bytes]:
        """The Set-Cookie header giving a new visitor their signed id."""
        assert visit.visitor_id is not None
        return (
            b"set-cookie",
            self.identity.set_cookie_header(visit.visitor_id, secure=visit.secure),
        )


def answers_a_page(head: RequestHead, status: int, content_type: bytes) -> bool:
    """Whether a response answers a request for a page: an HTML page (whatever its
    status), or a redirect answering a navigation (a campaign link the shop redirects,
    say). A new visitor's cookie rides only on these, and the landing campaign is read
    from them; an image or a stylesheet fetched without a cookie (a CDN's origin pull)
    stays cacheable and anonymous, redirected or not."""
    if content_type.startswith(b"text/html"):
        return True
    return 300 <= status < 400 and head.method == "GET" and head.navigates

"""Who is asking: the visitor behind a request, from the signed cookie and consent.

:meth:`Visitors.begin` reads the signed visitor cookie and the consent cookie from
the request's head (microseconds, no I/O): a returning visitor, a new one (who gets
the cookie with the response), or nobody to track (no consent, tracking off, a
crawler). Without consent nothing is recorded and no cookie is set.

**A shared device.** When the shop names the customer behind a visitor id (an
``Identify`` with ``anonymous_id``), that id points at the customer's profile for good
(every later shop event about it lands there). The 400-day visitor cookie must not
carry the customer with it once they log out, so with ``session_cookie`` (the shop's
login session cookie) and ``logout_paths`` set:

- the sidecar binds the visitor cookie to the session the shop sets on this browser:
  whenever a response sets ``session_cookie``, an ``edge_sess`` cookie goes with it,
  a tag over (visitor id, hash of the session value), living as long as the shop's
  cookie (:meth:`Visitors.session_headers`);
- the browser gets a **new anonymous visitor id** (the old one's link is left behind,
  on the server only) when the shop accepts a request for a logout path (answers it
  below 400), when a response deletes the
  session cookie, or when its ``edge_sess`` no longer matches the session cookie it
  sends (the session ended or changed without the sidecar seeing the logout). From
  then on the pages are personalized for an anonymous visitor;
- ``/_edge/profile`` shows or erases a profile linked to a customer (or an email)
  only to a request whose session cookie matches its ``edge_sess``
  (:attr:`Visit.session_bound`); a linked visitor cookie alone shows nothing and its
  DELETE forgets the browser (a new id) without erasing the customer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from edge.identity import SESSION_BINDING_COOKIE, VISITOR_COOKIE, Identity
from edge.pages import compile_pattern
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
    session: str = ""
    """The shop's session cookie in the request ("" without one, or not configured)."""
    session_bound: bool = False
    """The request's ``edge_sess`` binds this visitor to that very session: the shop
    gave this session to this browser (see the module docstring)."""
    rotated: bool = False
    """The browser's visitor id was replaced by a new anonymous one on this request
    (a logout): the new cookie goes out with whatever the response is."""
    bound: bool = False
    """The request carried an ``edge_sess`` cookie (cleared when the id rotates)."""
    logout: bool = False
    """The request is for one of the shop's logout paths: the id rotates when the
    shop accepts it (a status below 400)."""


class Visitors:
    def __init__(
        self,
        identity: Identity,
        *,
        track: bool = True,
        trust_forwarded: bool = False,
        session_cookie: str = "",
        logout_paths: Sequence[str] = (),
    ) -> None:
        self.identity = identity
        self.track = track
        self.trust_forwarded = trust_forwarded
        """Believe ``X-Forwarded-Proto`` (a TLS terminator in front): anyone else
        could send it."""
        self.session_cookie = session_cookie
        self._logout = [compile_pattern(p) for p in logout_paths]

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
            visit = Visit(self.identity.new_visitor_id(), True, secure, consent)
            visit.bound = SESSION_BINDING_COOKIE in cookies
            return visit
        visit = Visit(visitor_id, False, secure, consent)
        if self.session_cookie or self._logout:
            self._check_session(visit, head, cookies)
        return visit

    def _check_session(self, visit: Visit, head: RequestHead, cookies: dict[str, str]) -> None:
        """Whether the visitor's shop session is the one bound to its cookie; a new
        anonymous id on a logout, or when the bound session is gone."""
        assert visit.visitor_id is not None
        if self.session_cookie:
            visit.session = cookies.get(self.session_cookie, "")
            tag = cookies.get(SESSION_BINDING_COOKIE)
            if tag:
                visit.bound = True
                visit.session_bound = self.identity.session_bound(
                    visit.visitor_id, visit.session, tag
                )
                if not visit.session_bound:
                    self.rotate(visit)  # the session the shop gave this browser ended
                    return
        visit.logout = any(p.fullmatch(head.path) for p in self._logout)

    def rotate(self, visit: Visit) -> None:
        """Give *visit*'s browser a new anonymous visitor id (a logout): the old id
        stays linked to its customer on the server, and this browser no longer holds
        it."""
        visit.visitor_id = self.identity.new_visitor_id()
        visit.new = True
        visit.rotated = True
        visit.session_bound = False

    def session_headers(
        self, visit: Visit, status: int, headers: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """The Set-Cookie headers a response to *visit* needs, once the shop's own
        status and headers are known: a new visitor id when the shop accepted a
        logout (one of its logout paths answered below 400, or its session cookie
        deleted), the ``edge_sess`` binding when it set its session cookie, the
        binding cleared when the id rotated."""
        out: list[tuple[bytes, bytes]] = []
        if visit.visitor_id is None:
            return out
        if visit.logout and not visit.new and status < 400:
            self.rotate(visit)  # a refused logout (a 405 to a GET, a 403) changes nothing
            out.append(self.cookie_header(visit))
        if not self.session_cookie:
            return out
        binding: tuple[str, int | None] | None = None
        ended = False
        for name, value in headers:  # the last Set-Cookie of the session cookie counts
            if name == b"set-cookie":
                found = _session_set(value, self.session_cookie)
                if found is not None:
                    ended = not found[0] or (found[1] is not None and found[1] <= 0)
                    binding = None if ended else found
        if ended and not visit.new:  # the shop ended its session: a logout
            self.rotate(visit)
            out.append(self.cookie_header(visit))
        if binding is not None:
            out.append(
                (
                    b"set-cookie",
                    self.identity.binding_cookie_header(
                        visit.visitor_id, binding[0], secure=visit.secure, max_age=binding[1]
                    ),
                )
            )
        elif visit.new and visit.bound:  # a binding for an id this browser no longer has
            out.append((b"set-cookie", self.identity.clear_binding_header(secure=visit.secure)))
        return out

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


_MAX_AGE = re.compile(rb"(?i)max-age\s*=\s*(-?\d{1,12})")
_EXPIRES = re.compile(rb"(?i)expires\s*=\s*([^;]{1,64})")


def _session_set(header: bytes, name: str) -> tuple[str, int | None] | None:
    """``(value, max_age)`` when a Set-Cookie header sets the cookie *name* (max_age
    None: a session cookie; 0 or less: deleted), else None."""
    first, _, attributes = header.partition(b";")
    cookie, eq, value = first.partition(b"=")
    if not eq or cookie.strip().decode("latin-1") != name:
        return None
    text = value.strip().strip(b'"').decode("latin-1")
    age = _MAX_AGE.search(attributes)
    if age is not None:
        return text, int(age.group(1))
    expires = _EXPIRES.search(attributes)
    if expires is not None:
        try:
            when = parsedate_to_datetime(expires.group(1).decode("latin-1").strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return text, None
        return text, int(when.timestamp() - time.time())
    return text, None

"""The dynamic profiling form's protocol: where it posts, its token, its error cookie.

The form (``snippets/profile_form.html``) asks one question at a time and posts
``question``, ``answer`` (or ``skip=1``), ``return_to`` and ``csrf`` to
``POST /_edge/profile-form`` (:class:`edge.ingest.ProfileForm`), which stores the
answer and sends the visitor back to the page with a 303, so the next page asks the
next question. A bad answer goes back too, with the reason in a short-lived cookie
the next render shows beside the same question (:func:`form_error`), and the page
that shows it clears it (:data:`ERROR_COOKIE_CLEAR`).

``csrf`` is a MAC of the visitor id under the sidecar's secret: another site cannot
post answers into a visitor's profile (the cookie is ``SameSite=Lax`` as well).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote, unquote

from edge.identity import Identity

FORM_PATH: Final = "/_edge/profile-form"
ERROR_COOKIE: Final = "edge_form_error"
ERROR_COOKIE_CLEAR: Final = f"{ERROR_COOKIE}=; Path=/; Max-Age=0"
"""The Set-Cookie value that ends the error's display (once a page has shown it)."""
BODY_LIMIT: Final = 8 * 1024
_SAFE_PATH: Final = re.compile(r"^/(?![/\\])[^\x00-\x20\x7f-\x9f]*$")
_PATH_SAFE: Final = "/?#[]@!$&'()*+,;=:%~"
"""Kept as they are in a return path (RFC 3986 reserved characters, and ``%`` so an
encoded path is not encoded twice); a backslash or a non-ASCII character is encoded."""


def csrf_token(identity: Identity, visitor_id: str) -> str:
    return identity.mac("profile-form", visitor_id.encode())


def safe_return(value: str) -> str:
    """Only a path on this site, as ASCII: never an absolute URL (an open redirect),
    nothing a browser would read as one (``//host``, ``/\\host``, a scheme, control
    characters), and any other character percent-encoded so it can go in a
    ``Location`` header; "/" for anything else."""
    if len(value) > 2048 or not _SAFE_PATH.fullmatch(value):
        return "/"
    return quote(value, safe=_PATH_SAFE)


def form_error(cookies: Mapping[str, str]) -> tuple[str, str]:
    """``(question, message)`` from the error cookie, or empty strings."""
    raw = cookies.get(ERROR_COOKIE, "")
    if not raw:
        return "", ""
    question, _, message = unquote(raw).partition(":")
    return question, message[:200]


def error_cookie(question: str, message: str) -> str:
    """The Set-Cookie value that shows *message* beside *question* on the next page."""
    value = quote(f"{question}:{message}", safe="")
    return f"{ERROR_COOKIE}={value}; Path=/; Max-Age=300; HttpOnly; SameSite=Lax"

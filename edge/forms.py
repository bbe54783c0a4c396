"""``POST /_edge/profile-form``: the dynamic profiling form's answers, without JavaScript.

The form (``snippets/profile_form.html``) asks one question at a time and posts
``question``, ``answer`` (or ``skip=1``), ``return_to`` and ``csrf``. The answer is
validated against the question, stored on the visitor's own profile as a ``Profile
Form Answered`` event (a behavioural fact, like the browser's own events: it never
touches the shop's CRM traits), and the visitor goes back to the page with a 303, so
the next page asks the next question. A bad answer goes back too, with the reason in
a short-lived cookie the next render shows beside the same question.

``csrf`` is a MAC of the visitor id under the sidecar's secret: another site cannot
post answers into a visitor's profile (the cookie is ``SameSite=Lax`` as well).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, quote, unquote

from starlette.requests import Request
from starlette.responses import Response

from edge.identity import Identity, parse_cookies
from edge.personalize.profiling import DECLINED, AnswerError, Question, default_questions
from edge.profiles import events as ev
from edge.profiles.service import ProfileService
from edge.visitors import Visitors

log = logging.getLogger("edge.forms")

FORM_PATH: Final = "/_edge/profile-form"
ERROR_COOKIE: Final = "edge_form_error"
BODY_LIMIT: Final = 8 * 1024
_SAFE_PATH: Final = re.compile(r"^/(?![/\\])[^\x00-\x20\x7f]*$")


def csrf_token(identity: Identity, visitor_id: str) -> str:
    return identity.mac("profile-form", visitor_id.encode())


def safe_return(value: str) -> str:
    """Only a path on this site: never an absolute URL (an open redirect)."""
    if len(value) <= 2048 and _SAFE_PATH.match(value):
        return value
    return "/"


def form_error(cookies: Mapping[str, str]) -> tuple[str, str]:
    """``(question, message)`` from the error cookie, or empty strings."""
    raw = cookies.get(ERROR_COOKIE, "")
    if not raw:
        return "", ""
    question, _, message = unquote(raw).partition(":")
    return question, message[:200]


class ProfileForm:
    def __init__(
        self,
        identity: Identity,
        profiles: ProfileService,
        visitors: Visitors,
        questions: Mapping[str, Question] | None = None,
    ) -> None:
        self.identity = identity
        self.profiles = profiles
        self.visitors = visitors
        self.questions = questions if questions is not None else default_questions()

    async def handle(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > BODY_LIMIT:
                return Response("form too large", status_code=413, media_type="text/plain")
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        back = safe_return(fields.get("return_to", "/"))
        visit = self.visitors.begin(request.scope)
        if visit.visitor_id is None or visit.new:
            # No consent, a crawler, or no cookie yet: nothing may be stored.
            return _back(back)
        expected = csrf_token(self.identity, visit.visitor_id)
        if not hmac.compare_digest(fields.get("csrf", "").encode(), expected.encode()):
            return Response(
                "This form has expired: go back, reload the page and answer again.",
                status_code=403,
                media_type="text/plain; charset=utf-8",
                headers={"cache-control": "no-store"},
            )
        question = self.questions.get(fields.get("question", ""))
        if question is None:
            return _back(back)
        language = fields.get("lang", "en")[:8]
        try:
            answer = DECLINED if fields.get("skip") else question.validate(fields.get("answer", ""))
        except AnswerError as exc:
            response = _back(back)
            value = quote(f"{question.trait}:{exc.text(language)}", safe="")
            response.headers.append(
                "set-cookie", f"{ERROR_COOKIE}={value}; Path=/; Max-Age=300; HttpOnly; SameSite=Lax"
            )
            return response
        event = ev.ProfileFormAnswered(question=question.trait, answer=answer)
        try:
            await self.profiles.record(visit.visitor_id, [event], ev.Source.BROWSER)
        except Exception as exc:  # the visitor still gets their page back
            log.error("profile form answer not stored: %s", type(exc).__name__)
        response = _back(back)
        if ERROR_COOKIE in parse_cookies(request.headers.get("cookie", "")):
            response.headers.append("set-cookie", f"{ERROR_COOKIE}=; Path=/; Max-Age=0")
        return response


def _back(path: str) -> Response:
    return Response(status_code=303, headers={"location": path, "cache-control": "no-store"})

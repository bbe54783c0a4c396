"""Events arriving over HTTP: from the browser (``/_edge/events``), from the shop
(``/_edge/ingest``), from the profiling form (``/_edge/profile-form``), and the
visitor's own profile (``/_edge/profile``).

Both event endpoints answer 2xx only after the store committed the batch, so an
acknowledged event survives a killed process. A browser batch is the visitor's own
claim: it may only carry behavioural events about the cookie's visitor; anything
else refuses the whole batch with 403 and changes nothing. The shop authenticates
with a bearer token or an HMAC-SHA256 signature of the body (header
``X-Edge-Signature: t=<unix time>,v1=<hex>`` over ``"<t>." + body``, five minutes of
clock skew allowed), both compared in constant time; a signed request is applied once
(see :meth:`EventEndpoints._apply_once`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.browser import BadToken, check_token
from edge.caches import Expiring
from edge.config import Config
from edge.forms import (
    BODY_LIMIT,
    ERROR_COOKIE,
    ERROR_COOKIE_CLEAR,
    csrf_token,
    error_cookie,
    safe_return,
)
from edge.headers import bearer, same_token
from edge.identity import Identity
from edge.personalize.profiling import DECLINED, AnswerError, Question, default_questions
from edge.profiles import events as ev
from edge.profiles.model import Profile
from edge.profiles.service import ProfileService, UnknownVisitor
from edge.profiles.store import StoreUnavailable
from edge.recorder import Recorder
from edge.request import RequestHead, read_body
from edge.rules import LiveRules
from edge.visitors import Visitors

log = logging.getLogger("edge.ingest")

BROWSER_BODY_LIMIT: Final = 64 * 1024
BROWSER_BATCH_LIMIT: Final = 100
INGEST_BODY_LIMIT: Final = 4 * 1024 * 1024
INGEST_BATCH_LIMIT: Final = 5_000
SIGNATURE_TOLERANCE: Final = 300
_BURST: Final = 30.0
_REFILL_PER_SECOND: Final = 5.0


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[ev.Event]


_decode_batch = msgspec.json.Decoder(Batch).decode
_no_store = {"cache-control": "no-store"}


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=_no_store)


_BAD_ANONYMOUS_ID = (
    "events[%d].anonymous_id: a whole edge_vid cookie value whose signature does not "
    "verify (changed, or signed with another secret); send the visitor id (the part of "
    "the cookie before the '.') or the cookie value exactly as the sidecar set it. "
    "Nothing in the batch was stored"
)
_RETRY = "the batch was not stored; retry it (event ids keep retries idempotent)"


def _problem(status: int, error: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "message": message}


def _unavailable(exc: Exception) -> JSONResponse:
    log.error("profile store failed, batch not acknowledged: %s", type(exc).__name__)
    response = _error(503, "store_unavailable", _RETRY)
    response.headers["retry-after"] = "1"
    return response


class EventEndpoints:
    def __init__(
        self,
        config: Config,
        identity: Identity,
        profiles: ProfileService,
        recorder: Recorder,
        visitors: Visitors,
    ) -> None:
        self.config = config
        self.identity = identity
        self.profiles = profiles
        self.recorder = recorder
        self.visitors = visitors
        self.questions: Callable[[], Mapping[str, Question]] = default_questions
        """The serving profiling questions: an answer the browser snippet sends as an
        event is checked as the form's POST checks it (app wiring sets the rules')."""
        # A bucket left alone for _BURST / _REFILL_PER_SECOND seconds is full again,
        # exactly as if it had never been made: it can expire then.
        self._buckets: Expiring[str, tuple[float, float]] = Expiring(
            100_000, _BURST / _REFILL_PER_SECOND
        )

    def routes(self) -> list[Route]:
        return [
            Route("/_edge/ingest", self.ingest, methods=["POST"]),
            Route("/_edge/profile", self.profile, methods=["GET", "DELETE"]),
        ]

    def _allow(self, visitor_id: str) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(visitor_id)
        tokens, last = (_BURST, now) if bucket is None else bucket
        tokens = min(_BURST, tokens + (now - last) * _REFILL_PER_SECOND)
        if tokens < 1:
            self._buckets[visitor_id] = (tokens, now)
            return False
        self._buckets[visitor_id] = (tokens - 1, now)
        return True

    async def browser_events(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``POST /_edge/events`` as raw ASGI: it is the sidecar's busiest endpoint, and
        starlette's request/response objects would cost a fifth of its CPU."""
        if scope["method"] != "POST":
            status, payload = 405, {"error": "method_not_allowed", "message": "use POST"}
        else:
            status, payload = await self._browser_batch(scope, receive)
        headers = [(b"cache-control", b"no-store")]
        body = b""
        if payload is not None:  # (a 204 has no body)
            body = msgspec.json.encode(payload)
            headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", str(len(body)).encode()))
        if status == 503:
            headers.append((b"retry-after", b"1"))
        elif status == 405:
            headers.append((b"allow", b"POST"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _browser_batch(
        self, scope: dict[str, Any], receive: Any
    ) -> tuple[int, dict[str, Any] | None]:
        head = RequestHead.parse(scope)
        if _global_privacy_control(head):
            return 204, None  # Global Privacy Control: nothing is recorded
        visit = self.visitors.begin(head)
        if not visit.consent:
            return 204, None
        if visit.visitor_id is None or visit.new:
            return _problem(403, "no_visitor", "events need the visitor cookie set by a page view")
        if not self._allow(visit.visitor_id):
            return _problem(429, "rate_limited", "too many event batches; slow down")
        body = await read_body(head, receive, BROWSER_BODY_LIMIT)
        if body is None:
            return _problem(413, "too_large", f"a batch may be at most {BROWSER_BODY_LIMIT} bytes")
        try:
            batch = _decode_browser_batch(body)
        except msgspec.DecodeError as exc:
            return _problem(422, "invalid", str(exc))
        if len(batch.events) > BROWSER_BATCH_LIMIT:
            return _problem(
                413, "too_many", f"a batch may hold at most {BROWSER_BATCH_LIMIT} events"
            )
        problem = _check_beacons(self.identity, batch.events, visit.visitor_id) or _check_answers(
            batch.events, self.questions()
        )
        if problem:
            return _problem(422, "invalid", problem)
        try:
            if any(type(e) in ev.PLACEMENT_BEACONS for e in batch.events):
                # (the exposure a beacon tells of may still wait in the write queue)
                await self.recorder.settle(visit.visitor_id)
            await self.recorder.write(visit.visitor_id, batch.events, ev.Source.BROWSER)
        except ev.NotAllowed as exc:
            return _problem(403, "not_allowed", str(exc))
        except Exception as exc:  # the store failed: not acknowledged, the sender retries
            log.error("profile store failed, batch not acknowledged: %s", type(exc).__name__)
            return _problem(503, "store_unavailable", _RETRY)
        return 202, {"accepted": len(batch.events)}

    def _authenticated(self, request: Request, body: bytes) -> tuple[str, str]:
        """``("", replay name)`` when the shop's credentials hold (the name is the
        signature's, "" for a bearer token), else ``(why not, "")``."""
        given = bearer(request.headers.get("authorization", ""))
        token = self.config.ingest_token
        if token and given is not None:
            if same_token(given, token):
                return "", ""
            return "wrong bearer token", ""
        secret = self.config.ingest_secret
        signature = request.headers.get("x-edge-signature", "")
        if not (secret and signature):
            return "missing bearer token or X-Edge-Signature", ""
        stamp, tag, problem = _signature_fields(signature)
        if problem:
            return problem, ""
        if abs(time.time() - int(stamp)) > SIGNATURE_TOLERANCE:
            return (
                f"X-Edge-Signature: t is more than {SIGNATURE_TOLERANCE} s away from the "
                "sidecar's clock (sign with the current unix time; check the clocks)",
                "",
            )
        expected = hmac.new(
            secret.encode(), stamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected.encode(), tag.encode()):
            return "X-Edge-Signature: v1 does not match the body signed with ingest_secret", ""
        return "", "sig:" + tag

    async def ingest(self, request: Request) -> Response:
        if not (self.config.ingest_token or self.config.ingest_secret):
            return _error(
                503, "ingest_disabled", "set ingest_token or ingest_secret to accept shop events"
            )
        body = await read_body(RequestHead.parse(request.scope), request.receive, INGEST_BODY_LIMIT)
        if body is None:
            return _error(413, "too_large", f"a batch may be at most {INGEST_BODY_LIMIT} bytes")
        problem, once = self._authenticated(request, body)
        if problem:
            return _error(401, "unauthorized", problem)
        try:
            batch = _decode_batch(body)
        except msgspec.DecodeError as exc:
            return _error(422, "invalid", str(exc))
        if len(batch.events) > INGEST_BATCH_LIMIT:
            return _error(413, "too_many", f"a batch may hold at most {INGEST_BATCH_LIMIT} events")
        for i, event in enumerate(batch.events):
            if not (event.user_id or event.email or event.anonymous_id):
                return _error(422, "invalid", f"events[{i}]: needs user_id, email or anonymous_id")
            if event.anonymous_id:
                visitor_id = self.identity.subject_id(event.anonymous_id)
                if visitor_id is None:
                    return _error(400, "bad_anonymous_id", _BAD_ANONYMOUS_ID % i)
                event.anonymous_id = visitor_id
            if isinstance(event, ev.Identify):
                problem = _traits_problem(event.traits)
                if problem:
                    return _error(422, "invalid", f"events[{i}].traits.{problem}")
        return await self._apply_once(batch, once)

    async def _apply_once(self, batch: Batch, once: str) -> Response:
        """Apply a shop batch; a signed one only once.

        Why a replay cache rather than requiring ids: orders always count once (their
        ``order_id`` is required), but an email open, a coupon or an identify need no
        ``event_id``, and a shop's tracker often has none to send; requiring one would
        refuse what existing integrations send. So the signature itself is the id: a
        signed request seen within the tolerance window (older ones fail the clock
        check) is refused with 409 and changes nothing; a sender that sends a batch
        again signs it again (a new ``t``, a new signature), as a deliberate resend,
        and its ``event_id``/``order_id`` keep that idempotent. The name is kept in
        the store (both SQLite and Redis), so every replica refuses a replay, and
        released when the batch could not be stored, so the sender may retry as is."""
        if once:
            try:
                fresh = await self.profiles.store.claim_once(once, 2 * SIGNATURE_TOLERANCE)
            except Exception as exc:  # the store failed: not acknowledged, the sender retries
                return _unavailable(exc)
            if not fresh:
                return _error(
                    409,
                    "replayed",
                    "this signed request was received before and applied; nothing changed. "
                    "To send a batch again, sign it again (a new t)",
                )
        try:
            await self.recorder.write(None, batch.events, ev.Source.SHOP)
        except (UnknownVisitor, ValueError, OverflowError) as exc:
            await self._release(once)
            return _error(422, "invalid", str(exc))
        except Exception as exc:  # the store failed: not acknowledged, the sender retries
            await self._release(once)
            return _unavailable(exc)
        return JSONResponse({"accepted": len(batch.events)}, headers=_no_store)

    async def _release(self, once: str) -> None:
        if once:
            try:
                await self.profiles.store.release_once(once)
            except Exception as exc:  # the sender re-signs, as after any 409
                log.warning("could not release a signed request's claim: %s", type(exc).__name__)

    async def profile(self, request: Request) -> Response:
        """``GET``/``DELETE /_edge/profile`` (:meth:`_profile`); a store that is away
        (deadline, breaker) is a 503 to retry, not a 500."""
        try:
            return await self._profile(request)
        except StoreUnavailable as exc:
            log.warning("profile endpoint: store unavailable (%s)", exc.reason)
            response = _error(503, "store_unavailable", "the profile store is away; ask again")
            response.headers["retry-after"] = "1"
            return response

    async def _profile(self, request: Request) -> Response:
        """The visitor's own profile, shown or erased. A profile linked to a customer
        (or an email) only with the shop session bound to this browser (see
        :mod:`edge.visitors`) or to the shop's own backend (its ingest token): a
        visitor cookie alone, left on a shared device after a
        logout, shows nothing of the customer and erases only this browser's id."""
        visit = self.visitors.begin(RequestHead.parse(request.scope))
        erase = request.method == "DELETE"
        if visit.visitor_id is None or visit.new:
            response = JSONResponse(
                {"erased": False} if erase else {"profile": None}, headers=_no_store
            )
            if visit.rotated:  # its bound session is gone: this browser's id goes too
                self._forget_browser(response, visit.secure)
            return response
        profile = await self.profiles.load(visit.visitor_id)
        confirmed = visit.session_bound or self._shop_asks(request)
        if profile is not None and _linked(profile, visit.visitor_id) and not confirmed:
            message = (
                "this browser's visitor id is linked to a customer account: log in to "
                "the shop on this browser to see or erase that profile"
            )
            if erase:
                message = "this browser's visitor id was forgotten; " + message
            response = JSONResponse(
                {"erased": False, "forgotten": True, "message": message}
                if erase
                else {"profile": None, "linked": True, "message": message},
                headers=_no_store,
            )
            if erase:
                self._forget_browser(response, visit.secure)
            return response
        if erase:
            erased = await self.profiles.erase(visit.visitor_id)
            response = JSONResponse({"erased": erased}, headers=_no_store)
            self._forget_browser(response, visit.secure)
            return response
        return Response(
            b'{"profile":' + msgspec.json.encode(profile) + b"}",
            media_type="application/json",
            headers={"cache-control": "private, no-store"},
        )

    def _shop_asks(self, request: Request) -> bool:
        """Whether the shop itself asks, with the credentials of ``/_edge/ingest``
        (``Authorization: Bearer <ingest_token>``, or ``X-Edge-Signature`` over the empty
        body with ``ingest_secret``; constant time): its backend may read a logged-in
        customer's profile for its own "my data" page, passing the visitor's cookie along."""
        if not (request.headers.get("authorization") or request.headers.get("x-edge-signature")):
            return False
        problem, _ = self._authenticated(request, b"")
        return not problem

    def _forget_browser(self, response: Response, secure: bool) -> None:
        """The visitor cookie and its session binding cleared: a new id next time."""
        response.raw_headers.append(
            (b"set-cookie", self.identity.clear_cookie_header(secure=secure))
        )
        response.raw_headers.append(
            (b"set-cookie", self.identity.clear_binding_header(secure=secure))
        )


def _global_privacy_control(head: RequestHead) -> bool:
    """``Sec-GPC: 1``: the visitor asked not to be tracked (globalprivacycontrol.org)."""
    return any(name == b"sec-gpc" and value.strip() == b"1" for name, value in head.headers)


def _decode_browser_batch(body: bytes) -> Batch:
    """``{"events": [...]}``; also, for trackers that send them so, a bare array,
    ``{"batch": [...]}`` and ``"type"`` naming each event in place of ``"event"``."""
    try:
        return _decode_batch(body)
    except msgspec.DecodeError as exc:
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise exc from None
        if isinstance(data, dict) and len(data) == 1 and ("batch" in data or "events" in data):
            data = data.get("batch", data.get("events"))
        if not isinstance(data, list):
            raise exc from None
        renamed = [
            {("event" if k == "type" else k): v for k, v in e.items()}
            if isinstance(e, dict) and "event" not in e
            else e
            for e in data
        ]
        try:
            return msgspec.convert({"events": renamed}, Batch)
        except msgspec.ValidationError as again:
            raise msgspec.DecodeError(str(again)) from None


def _check_beacons(identity: Identity, events: list[ev.Event], visitor_id: str) -> str:
    """What is wrong with the batch's placement beacons ("" when nothing): each needs
    the exposure token /_edge/decide gave this visitor, which names its placement."""
    now = int(time.time())
    for i, event in enumerate(events):
        if type(event) not in ev.PLACEMENT_BEACONS:
            continue
        assert isinstance(event, ev.PlacementViewed | ev.PlacementClicked)
        if not event.token:
            return (
                f"events[{i}].token: a {ev.event_name(event)!r} needs the token /_edge/decide gave"
            )
        try:
            exposure = check_token(identity, event.token, visitor_id, now)
        except BadToken as exc:
            return f"events[{i}].{exc}. Nothing in the batch was stored"
        event.placement_id = exposure.placement
    return ""


def _check_answers(events: list[ev.Event], questions: Mapping[str, Question]) -> str:
    """What is wrong with the batch's profiling answers ("" when nothing): each must
    answer a question the rules ask, with an answer the question accepts (or the
    decline), exactly as the form's POST; the answer is stored as the form stores it."""
    for i, event in enumerate(events):
        if type(event) is not ev.ProfileFormAnswered:
            continue
        question = questions.get(event.question)
        if question is None:
            return f"events[{i}].question: no profiling question asks for {event.question!r}"
        try:
            event.answer = question.validate(event.answer)
        except AnswerError as exc:
            return f"events[{i}].answer: {exc.text('en')}. Nothing in the batch was stored"
    return ""


_MAX_SIGNATURE: Final = 512
_STAMP_DIGITS: Final = 12
_HEX: Final = frozenset("0123456789abcdef")


def _signature_fields(header: str) -> tuple[str, str, str]:
    """``(t, v1, "")`` from an ``X-Edge-Signature`` header, or ``("", "", why)``:
    read defensively (a bounded header, a bounded number of digits) before anything
    is converted or computed."""
    if len(header) > _MAX_SIGNATURE:
        return "", "", f"X-Edge-Signature is longer than {_MAX_SIGNATURE} characters"
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    stamp = fields.get("t", "")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _STAMP_DIGITS):
        return "", "", "X-Edge-Signature: t must be the unix time in seconds (digits only)"
    tag = fields.get("v1", "").lower()
    if len(tag) != 64 or not _HEX.issuperset(tag):
        return "", "", "X-Edge-Signature: v1 must be the HMAC-SHA256 in hex (64 digits)"
    return stamp, tag, ""


_YEAR_MIN: Final = 1900
_COORDINATE: Final = {"latitude": 90.0, "longitude": 180.0}
_CUSTOM_LIMIT: Final = 1e15


def _traits_problem(traits: Mapping[str, Any]) -> str:
    """What is wrong with an Identify's numeric traits ("" when nothing): the field
    and the fix. Numbers must be finite and in range, so none overflows the stored
    profile (an int of 300 digits) or turns into infinity in a rule."""
    for key, value in traits.items():
        if value is None or isinstance(value, bool):
            continue
        if key == "birth_year":
            year = _number(value)
            this_year = time.gmtime().tm_year
            if year is None or year != int(year) or not _YEAR_MIN <= year <= this_year:
                return (
                    f"birth_year: must be a whole year between {_YEAR_MIN} and {this_year}, "
                    f"got {str(value)[:40]!r}"
                )
        elif key == "registered":
            stamp = _number(value)
            if stamp is None or stamp != int(stamp) or not 0 <= stamp <= 10_000_000_000:
                return f"registered: must be a unix time in seconds, got {str(value)[:40]!r}"
        elif key in _COORDINATE:
            limit = _COORDINATE[key]
            degrees = _number(value)
            if degrees is None or not -limit <= degrees <= limit:
                return (
                    f"{key}: must be a number of degrees between {-limit:g} and {limit:g}, "
                    f"got {str(value)[:40]!r}"
                )
        elif isinstance(value, float) and not (
            math.isfinite(value) and abs(value) <= _CUSTOM_LIMIT
        ):
            return f"{key}: a number must be finite and at most {_CUSTOM_LIMIT:g}, got {value!r}"
    return ""


def _number(value: object) -> float | None:
    """A trait's value as a finite number (a numeric string too), else None."""
    if isinstance(value, str):
        if len(value) > 40:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    number = float(value) if abs(value) < 1e300 else math.inf
    return number if math.isfinite(number) else None


def _linked(profile: Profile, visitor_id: str) -> bool:
    """Whether *profile*, loaded for *visitor_id*, is a customer's (or an email's)
    rather than this visitor's anonymous one."""
    return bool(profile.customer_id or profile.email_hash or profile.visitor_id != visitor_id)


class ProfileForm:
    """``POST /_edge/profile-form``: the profiling form's answer, without JavaScript.
    Validated against its question and stored on the visitor's own profile as a
    ``Profile Form Answered`` event (a behavioural fact, like the browser's own
    events: it never touches the shop's CRM traits); the visitor goes back to the
    page with a 303 (see :mod:`edge.forms`)."""

    def __init__(
        self,
        identity: Identity,
        recorder: Recorder,
        visitors: Visitors,
        questions: Mapping[str, Question] | None = None,
        rules: LiveRules | None = None,
    ) -> None:
        self.identity = identity
        self.recorder = recorder
        self.visitors = visitors
        self.rules = rules
        self._questions = questions
        """Fixed questions (tests); else the serving rule set's ``[questions]``."""

    @property
    def questions(self) -> Mapping[str, Question]:
        if self._questions is not None:
            return self._questions
        if self.rules is not None:
            return self.rules.ruleset.questions
        return default_questions()

    async def handle(self, request: Request) -> Response:
        head = RequestHead.parse(request.scope)
        body = await read_body(head, request.receive, BODY_LIMIT)
        if body is None:
            return Response("form too large", status_code=413, media_type="text/plain")
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        back = safe_return(fields.get("return_to", "/"))
        visit = self.visitors.begin(head)
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
            response.headers.append("set-cookie", error_cookie(question.trait, exc.text(language)))
            return response
        event = ev.ProfileFormAnswered(question=question.trait, answer=answer)
        try:
            await self.recorder.write(visit.visitor_id, [event], ev.Source.BROWSER)
        except Exception as exc:  # the visitor still gets their page back
            log.error("profile form answer not stored: %s", type(exc).__name__)
        response = _back(back)
        if ERROR_COOKIE in head.cookies:
            response.headers.append("set-cookie", ERROR_COOKIE_CLEAR)
        return response


def _back(path: str) -> Response:
    return Response(status_code=303, headers={"location": path, "cache-control": "no-store"})

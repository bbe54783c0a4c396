"""The ASGI application, wired from the configuration: starlette routes for the
sidecar's own ``/_edge/*`` space, and the raw ASGI request path (:mod:`edge.respond`)
for everything the shop answers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge import logs, metrics, report
from edge.activation.checks import unknown_destinations
from edge.activation.delivery import Delivery, destinations_from
from edge.activation.loop import ActivationLoops, activator_for
from edge.activities import Activities
from edge.admin import AdminPage
from edge.browser import ASSET, DECIDE_PATH, BrowserDecide, ShortCached, script_tag
from edge.carts import READERS as CART_READERS
from edge.carts import read_mini_cart
from edge.config import Config, ConfigError
from edge.decide import Decider
from edge.forms import FORM_PATH
from edge.headers import bearer, same_token
from edge.identity import Identity
from edge.ingest import EventEndpoints, ProfileForm
from edge.logs import AccessLog
from edge.metrics import MetricsEndpoint
from edge.observe import Observer, host_of
from edge.pages import PatternError
from edge.passthrough import Passthrough
from edge.personalize.catalog import Catalog, CatalogError, LearnedCatalog
from edge.personalize.snippets import Snippets
from edge.profiles.backends import guarded, served_store
from edge.profiles.events import set_attribution_window
from edge.profiles.service import ProfileService
from edge.profiles.stats import average_order_value
from edge.profiles.store import Store, StoreUnavailable
from edge.proxy import Proxy
from edge.reading import Reading
from edge.recorder import Recorder
from edge.request import sidecar_path
from edge.respond import Responder
from edge.rewriting import Rewriting
from edge.rules import LiveRules, ShopStats, rules_directory
from edge.shipped import STATIC
from edge.snapshots import DailySnapshots
from edge.visitors import Visitors

log = logging.getLogger("edge.app")

STATIC_DIR = STATIC
"""The browser snippet and its styles, served at ``/_edge/static/``: the repository's
``static/`` (in an installed package, its copy: :mod:`edge.shipped`)."""

Scope = dict[str, Any]


class EdgeApp:
    """Builds the sidecar from its configuration, and dispatches on the path:
    ``/_edge`` and below to the sidecar's own endpoints, the rest to the shop."""

    def __init__(self, config: Config, store: Store | None = None, *, fast: bool = True) -> None:
        self.config = config
        secret = config.secret
        self._random_secret = secrets.token_urlsafe(32)
        if not secret:
            secret = self._random_secret
            log.warning(
                "no secret configured (EDGE_SECRET): visitor cookies signed with a random "
                "secret will not survive a restart"
            )
        self.identity = identity = Identity(
            [secret, *config.previous_secrets],
            consent_cookie=config.consent_cookie,
            consent_values=config.consent_values,
        )
        # Every call behind its deadline and the circuit breaker (edge/profiles/store.py),
        # each call and the breaker's state counted in edge_store_* (edge/metrics.py).
        self.store = guarded(store if store is not None else served_store(config), config)
        self.store.observer = metrics
        self.profiles = ProfileService(
            self.store, identity.email_hash, cache_ttl=config.profile_cache_ttl
        )
        self.recorder = Recorder(self.profiles)
        try:
            self.visitors = Visitors(
                identity,
                track=config.track,
                trust_forwarded=config.trust_forwarded,
                session_cookie=config.session_cookie,
                logout_paths=config.logout_paths,
            )
        except PatternError as exc:
            raise ConfigError(f"logout_paths: {exc}") from None
        self.snippets = Snippets(config.snippets)
        self.rules = LiveRules(*rules_directory(config.rules), snippets=self.snippets.names)
        try:
            catalog = Catalog.load(Path(config.catalog)) if config.catalog else None
        except CatalogError as exc:
            raise ConfigError(f"catalog: {exc}") from None
        # What the shop's own pages teach, over the optional feed (edge/reading.py):
        # product and category pages (facts), the cart and order-complete pages (carts).
        learned = LearnedCatalog(catalog)
        self.reading = Reading(learned, self.store)
        for page_type, reader in CART_READERS.items():
            self.reading.register(page_type, reader)
        self.reading.register_mini_cart(read_mini_cart, besides=CART_READERS)
        self.observer = observer_for(config, learned, self.rules)
        self.decider = Decider(
            self.rules,
            self.profiles,
            self.recorder,
            Activities(self.snippets, identity, catalog=learned, stylesheet=config.stylesheet),
            languages=config.languages or ["en"],
            shop=ShopStats(avg_order_value=config.avg_order_value),
            trust_geo=config.trust_geo,
            qa_cookie=config.qa_cookie,
            qa_visitors=config.qa_visitors,
            report_segments=config.report_segments,
            browser_pages=config.browser_pages,
        )
        self.proxy = Proxy(config)
        self.respond = Responder(
            self.proxy,
            self.visitors,
            self.observer,
            self.recorder,
            self.decider,
            Rewriting(
                max_bytes=config.personalize_max_bytes, replay_bytes=config.replay_cache_bytes
            ),
            self.rules,
            identity,
            self.reading,
        )
        self.respond.access_log = access_log_for(config)
        self.respond.snippet_tag = snippet_tags(config)
        self.passthrough = Passthrough(self.respond) if fast else None
        """The requests the app only forwards, served below ASGI by edge.http1 (*fast*
        false: every request through the ASGI app, as tests/test_passthrough.py compares)."""
        self._tasks: set[asyncio.Task[None]] = set()
        """The periodic jobs running (one that ends, cancelled say, leaves the set)."""
        self.startup_hooks: list[Callable[[EdgeApp], Awaitable[None]]] = []
        self.metrics = MetricsEndpoint(config.metrics_token)
        self.events = endpoints = EventEndpoints(
            config, identity, self.profiles, self.recorder, self.visitors
        )
        self.browser_decide = BrowserDecide(
            self.decider,
            self.visitors,
            self.observer,
            self.recorder,
            identity,
            lambda: self.config.stylesheet,
        )
        self.profile_form = ProfileForm(identity, self.recorder, self.visitors, rules=self.rules)
        endpoints.questions = lambda: self.profile_form.questions
        # The merchant's page, off (404) while admin_token is unset (read at each
        # request: a reload may set it); segment sizes are counted once a day either
        # way (edge/snapshots.py).
        self.admin = AdminPage(lambda: self.config, self.store, self.rules)
        self.snapshots = DailySnapshots(
            self.store,
            lambda: self.rules.ruleset if self.rules.loaded else None,
            lambda: self.decider.shop,
        )
        self.activation = self._activation(config)
        self.sidecar = Starlette(
            routes=[
                Route(FORM_PATH, self.profile_form.handle, methods=["POST"]),
                Route("/_edge/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/_edge/readyz", self.readyz, methods=["GET", "HEAD"]),
                Route("/_edge/metrics", self.metrics, methods=["GET"]),
                Route("/_edge/report.json", self.report_json, methods=["GET"]),
                Mount(
                    "/_edge/static", ShortCached(StaticFiles(directory=STATIC_DIR)), name="static"
                ),
                *endpoints.routes(),
                *self.admin.routes(),
            ],
            lifespan=self._lifespan,
        )
        self.sidecar.add_exception_handler(404, _not_found)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "lifespan":
            await self.sidecar(scope, receive, send)
        elif not sidecar_path(path):
            await self.respond(scope, receive, send)
        elif scope["type"] != "http":
            await self.sidecar(scope, receive, send)
        else:
            await self._own(scope, receive, send, path)

    async def _own(self, scope: Scope, receive: Any, send: Any, path: str) -> None:
        """The sidecar's own endpoints, with a request id (the client's ``X-Request-Id``
        when well formed, else a new one; in the response and in this request's log
        lines) and, when the access log is on, a line with outcome ``sidecar``."""
        rid = logs.request_id(list(scope["headers"]))
        logs.REQUEST_ID.set(rid)

        def with_id(message: dict[str, Any]) -> Any:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            return send(message)

        if path == "/_edge/events":
            handler = self.events.browser_events
        elif path == DECIDE_PATH:
            handler = self.browser_decide
        elif _ASSET_PATH.fullmatch(path):
            handler = ASSET
        else:
            handler = self.sidecar
        access_log = self.respond.access_log
        if access_log is None:
            await handler(scope, receive, with_id)
            return
        started = time.perf_counter()
        sent = logs.Sent(with_id)
        try:
            await handler(scope, receive, sent.send)
        finally:
            seconds = time.perf_counter() - started
            client = scope.get("client") or ("", 0)
            raw = scope.get("raw_path") or path.encode("latin-1", "replace")
            access_log.write(
                sent,
                rid,
                scope.get("method", ""),
                raw.split(b"?", 1)[0],
                client[0] or "",
                time.time() - seconds,
                seconds,
                -1.0,
                "sidecar" if sent.status < 500 else "error",
            )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        log.info("proxying to %s", self.config.upstream)
        for hook in self.startup_hooks:
            await hook(self)
        await self.reading.load()
        jobs = [self.rules.watch(), self._save_learned_every(LEARNED_SAVE_EVERY)]
        if self.config.avg_order_value is None:
            jobs.append(self._shop_stats_every(SHOP_STATS_EVERY))
        jobs += [self.snapshots.run(), self.admin.sampler.run()]
        if self.activation is not None:
            jobs += [self.activation.run_due(), self.activation.run_delivery()]
        for job in jobs:
            self._start(job)
        yield
        for task in list(self._tasks):
            task.cancel()
        await self.recorder.flush()
        with contextlib.suppress(Exception):
            await self.reading.save()
        self.proxy.pool.close()
        if self.activation is not None:
            await self.activation.delivery.close()
        await self.store.close()

    def _activation(self, config: Config) -> ActivationLoops | None:
        """With ``activation`` on: the activation in every profile write, and the due
        and delivery loops (edge/activation/); a destination's secret missing from the
        environment stops the start."""
        if not config.activation:
            return None
        self.profiles.activation = activator_for(
            self.rules,
            snippets=lambda: self.config.snippets,
            traits=lambda: self.config.export_traits,
            names=self._product_name,
        )
        delivery = Delivery(self.store, destinations_from(config))
        for problem in unknown_destinations(self.rules.ruleset, config.destinations):
            raise ConfigError(f"{problem.file}:{problem.line}: {problem.message}; {problem.help}")
        return ActivationLoops(
            self.profiles, self.store, delivery, interval=config.activation_interval
        )

    def _product_name(self, product_id: str) -> str:
        """A product's name as the catalogue knows it (feed, or the shop's pages)."""
        facts = self.reading.catalog.get(product_id)
        return facts.name if facts is not None else ""

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    async def readyz(self, request: Request) -> Response:
        """Ready when the shop answers and the store does (a ping within the page path's
        deadline, the circuit breaker closed). The public answer says which check
        failed in a few words; the details (rule files and lines, the store's error)
        need the admin token."""
        reachable = await self.proxy.pool.probe()
        store, store_detail = await self._store_check()
        errors = self.rules.errors
        files = len({e.file for e in errors})
        checks: dict[str, Any] = {
            "upstream": "ok" if reachable else "unreachable",
            "store": store,
            "config": "ok",
            "rules": "ok" if not errors else f"error in {files} file{'s' if files > 1 else ''}",
        }
        ready = reachable and store == "ok"
        body: dict[str, Any] = {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            # Rule errors leave the sidecar ready: the rules that were serving keep serving.
            "reasons": [f"{name}: {value}" for name, value in checks.items() if value != "ok"],
        }
        if self._is_admin(request):
            body["store"] = store_detail
            body["rule_errors"] = [str(e) for e in errors[:20]]
        return JSONResponse(
            body, status_code=200 if ready else 503, headers={"cache-control": "no-store"}
        )

    async def _store_check(self) -> tuple[str, dict[str, Any]]:
        """(``ok``, ``timeout``, ``error`` or ``breaker open``; the details)."""
        breaker = self.store.breaker
        try:
            await self.store.ping()
            verdict = "ok"
        except StoreUnavailable as exc:
            verdict = "breaker open" if exc.reason == "open" else exc.reason
        detail = {
            "breaker": breaker.state,
            "consecutive_failures": breaker.failures,
            "last_error": breaker.last_error,
            "read_timeout_ms": round(self.store.read_timeout * 1000),
        }
        return verdict, detail

    async def report_json(self, request: Request) -> Response:
        """The report (edge/report.py) behind ``admin_token``: 404 while it is unset,
        401 without it; ``?since=DATE`` and ``?placement=ID`` as ``edge report``'s."""
        if not self.config.admin_token:
            return JSONResponse({"error": "not found"}, status_code=404)
        if not self._is_admin(request):
            return JSONResponse({"error": "admin token required"}, status_code=401)
        return await report_response(request, self.store, self.rules.ruleset, self.config)

    def _is_admin(self, request: Request) -> bool:
        token = self.config.admin_token
        if not token:
            return False
        given = bearer(request.headers.get("authorization", ""))
        if given is None:
            given = request.headers.get("x-edge-admin-token", "")
        return same_token(given, token)

    def _start(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save_learned_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.reading.save()
            except Exception as exc:
                log.warning("learned products not saved: %s", exc)

    async def _shop_stats_every(self, seconds: float) -> None:
        while self.config.avg_order_value is None:  # a reload may set it
            try:
                average = await average_order_value(self.store)
                self.decider.shop = ShopStats(avg_order_value=average)
            except Exception as exc:
                log.warning("shop statistics not updated: %s", exc)
            await asyncio.sleep(seconds)

    def reload(self, config: Config) -> list[str]:
        """Serve *config* from now on (SIGHUP: edge.toml and EDGE_* read again) and the
        rule files as they are now. Requests in flight finish with what they started
        with. Settings that cannot change in a running process keep their old value
        and are returned (and logged) by name."""
        old = self.config
        changed = [f for f in old.__struct_fields__ if getattr(old, f) != getattr(config, f)]
        restart = [f for f in changed if f not in LIVE_SETTINGS]
        if restart:
            log.warning("needs a restart: %s (keeping the running value)", ", ".join(restart))
            config = msgspec.structs.replace(config, **{f: getattr(old, f) for f in restart})
        snippets = Snippets(config.snippets) if "snippets" in changed else self.snippets
        # Opened again on every reload (logrotate: move the file, then SIGHUP); a file
        # that cannot be opened refuses the reload.
        old_log = self.respond.access_log
        access_log = access_log_for(config) if config.access_log != "off" else None
        if {"secret", "previous_secrets", "consent_cookie", "consent_values"} & set(changed):
            # In place: every part holding the identity sees the new keys at once. With
            # no secret configured the random one made at start stays.
            secret = config.secret or self._random_secret
            self.identity.__init__(  # type: ignore[misc]
                [secret, *config.previous_secrets],
                consent_cookie=config.consent_cookie,
                consent_values=config.consent_values,
            )
        self.visitors.track = config.track
        self.visitors.trust_forwarded = config.trust_forwarded
        set_attribution_window(config.attribution_seconds)
        self.events.config = config
        self.snippets = self.decider.activities.snippets = snippets
        self.rules.snippets = snippets.names
        self.decider.activities.stylesheet = config.stylesheet
        self.decider.languages = tuple(config.languages or ["en"])
        self.decider.trust_geo = config.trust_geo
        self.decider.set_qa(config.qa_cookie, config.qa_visitors)
        self.decider.report_segments = tuple(config.report_segments)
        self.decider.browser_pages = frozenset(config.browser_pages)
        if config.avg_order_value is not None:
            self.decider.shop = ShopStats(avg_order_value=config.avg_order_value)
        elif old.avg_order_value is not None:
            self._start(self._shop_stats_every(SHOP_STATS_EVERY))
        self.respond.rewriting.max_bytes = config.personalize_max_bytes
        self.respond.snippet_tag = snippet_tags(config)
        self.respond.access_log = access_log
        if old_log is not None:
            old_log.close()
        self.metrics.__init__(config.metrics_token)  # type: ignore[misc]
        if _PROXY_SETTINGS & set(changed):
            self._swap_proxy(config)
        if "rules" in changed:
            self.rules.directory, self.rules.only = rules_directory(config.rules)
        self.rules.reload()
        logging.getLogger().setLevel(config.log_level.upper())
        self.config = config
        applied = [f for f in changed if f in LIVE_SETTINGS]
        log.info("configuration reloaded%s", f" ({', '.join(applied)})" if applied else "")
        return restart

    def _swap_proxy(self, config: Config) -> None:
        """A new upstream pool for new requests; the old one's connections close once
        idle (now, and after the graceful timeout for those still in use)."""
        old = self.proxy
        self.proxy = self.respond.proxy = Proxy(config)
        self.observer.shop_host = observer_for(config).shop_host
        old.pool.close()
        asyncio.get_running_loop().call_later(config.graceful_timeout, old.pool.close)


async def _not_found(_request: Request, _exc: Exception) -> Response:
    return JSONResponse(
        {
            "error": "not_found",
            "message": "No such sidecar endpoint. /_edge/ is reserved for shop-edge.",
        },
        status_code=404,
        headers={"cache-control": "no-store"},
    )


_PROXY_SETTINGS: Final = frozenset(
    {"upstream", "upstream_host", "public_url", "trust_forwarded", "allowed_hosts"}
    | {"connect_timeout", "read_timeout", "pool_size"}
)
_ACCESS_LOG_SETTINGS: Final = frozenset({"access_log", "access_log_file", "access_log_client_ip"})
LIVE_SETTINGS: Final = (
    _PROXY_SETTINGS
    | _ACCESS_LOG_SETTINGS
    | {
        "metrics_token",
        "admin_token",
        "secret",
        "previous_secrets",
        "consent_cookie",
        "consent_values",
        "track",
        "ingest_token",
        "ingest_secret",
        "rules",
        "snippets",
        "stylesheet",
        "languages",
        "trust_geo",
        "qa_cookie",
        "qa_visitors",
        "report_segments",
        "avg_order_value",
        "attribution_window",
        "export_traits",  # read by `edge export` and each scenario payload
        "personalize_max_bytes",
        "browser_pages",
        "inject_snippet",
        "log_level",
        # the server's (edge/server.py, applied by `edge serve`'s reload)
        "graceful_timeout",
        "max_header_bytes",
        "header_timeout",
        "body_timeout",
        "keepalive_timeout",
        "max_connections",
    }
)
"""Settings a reload applies to the running sidecar. Any other (the listening address,
the store, the catalog feed, the caches' sizes, the session binding, ...) was built into
the process at start: a reload logs it as needing a restart and keeps its old value."""
_ASSET_PATH: Final = re.compile(r"/_edge/edge\.[0-9a-f]{10}\.js")
"""The browser snippet's versioned URL (edge/browser.py)."""
SHOP_STATS_EVERY: Final = 900.0
LEARNED_SAVE_EVERY: Final = 60.0
"""How often the products learned from the shop's pages are written to the store."""


def observer_for(
    config: Config, catalog: Catalog | None = None, rules: LiveRules | None = None
) -> Observer:
    """What the sidecar sees, for this shop: the cart actions of the rules serving (or
    the demo shop's forms)."""
    return Observer(
        *([lambda: rules.ruleset.carts] if rules is not None else []),
        shop_host=host_of(urlsplit(config.public_url).netloc) if config.public_url else "",
        catalog=catalog,
    )


def snippet_tags(config: Config) -> Callable[[tuple[str, ...]], str] | None:
    """The browser snippet's script tag by the page's slots (None: ``inject_snippet``
    off), with the consent cookie's name and values when one is configured."""
    if not config.inject_snippet:
        return None
    consent = {
        "consent_cookie": config.consent_cookie,
        "consent_values": tuple(config.consent_values),
    }
    return functools.lru_cache(maxsize=64)(lambda slots: script_tag(slots, **consent))


def access_log_for(config: Config) -> AccessLog | None:
    if config.access_log == "off":
        return None
    try:
        return AccessLog(config.access_log, config.access_log_file, config.access_log_client_ip)
    except OSError as exc:
        raise ConfigError(
            f"access_log_file: cannot open {config.access_log_file}: {exc.strerror}"
        ) from None


def create_app(config: Config, store: Store | None = None) -> EdgeApp:
    return EdgeApp(config, store)


async def report_response(request: Request, store: Store, ruleset: Any, config: Config) -> Response:
    """``GET /_edge/report.json`` (the caller checked the admin token): the units first
    exposed since ``?since=DATE`` (default 30 days), ``?placement=ID`` alone,
    ``?segment=NAME``: the placements' breakdown by that segment only."""
    today = dt.datetime.now(dt.UTC).date()
    text = request.query_params.get("since", "")
    try:
        since = dt.date.fromisoformat(text) if text else today - dt.timedelta(days=30)
    except ValueError:
        return JSONResponse({"error": f"since: expected a date like {today}"}, status_code=400)
    since_day = report.day_number(since)
    try:
        rows = await store.report_rows(since_day)
    except StoreUnavailable as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    return JSONResponse(
        report.build(
            rows,
            ruleset.placements,
            since_day=since_day,
            window_seconds=config.attribution_seconds,
            now=time.time(),
            only=request.query_params.get("placement") or None,
            segment=request.query_params.get("segment") or None,
            segment_order=ruleset.segment_names,
        )
    )

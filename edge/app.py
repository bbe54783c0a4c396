"""The ASGI application: starlette routes for the sidecar's own ``/_edge/*`` space,
and a raw ASGI catch-all that proxies everything else to the shop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.config import Config, ConfigError
from edge.forms import FORM_PATH, ProfileForm
from edge.identity import Identity
from edge.ingest import EventEndpoints
from edge.observe import CartAction, Observer
from edge.page import Personalizer, load_catalog
from edge.personalize.catalog import CatalogError
from edge.personalize.snippets import Snippets
from edge.profiles.service import ProfileService
from edge.profiles.store import Store
from edge.proxy import Proxy, Scope
from edge.rules import LIBRARY_DIR, LiveRules, ShopStats
from edge.rules.ruleset import LIBRARY_SEGMENTS
from edge.visitors import Visitors

log = logging.getLogger("edge.app")

EDGE_PREFIX = "/_edge"
STATIC_DIR = (Path(__file__).parent / "static").resolve()
"""The browser snippet and its styles, served at ``/_edge/static/``: in the source
tree a symbolic link to ``static/``, in an installed package a copy (package data)."""


class EdgeApp:
    """Dispatches on the path: ``/_edge`` and below to the sidecar, the rest upstream."""

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        secret = config.secret
        if not secret:
            secret = secrets.token_urlsafe(32)
            log.warning(
                "no secret configured (EDGE_SECRET): visitor cookies signed with a random "
                "secret will not survive a restart"
            )
        self.identity = Identity(
            [secret, *config.previous_secrets],
            consent_cookie=config.consent_cookie,
            consent_values=config.consent_values,
        )
        self.store = store if store is not None else open_store(config.store)
        self.profiles = ProfileService(self.store, self.identity.email_hash)
        self.visitors = Visitors(
            self.identity, self.profiles, observer_for(config), track=config.track
        )
        self.rules = LiveRules(*rules_directory(config.rules))
        self.snippets = Snippets(config.snippets)
        try:
            catalog = load_catalog(config.catalog)
        except CatalogError as exc:
            raise ConfigError(f"catalog: {exc}") from None
        self.visitors.observer.catalog = catalog
        self.personalizer = Personalizer(
            self.rules,
            self.snippets,
            self.profiles,
            self.visitors,
            self.identity,
            self.visitors.observer,
            catalog=catalog,
            languages=config.languages or ["en"],
            shop=ShopStats(avg_order_value=config.avg_order_value),
            stylesheet=config.stylesheet,
        )
        self.proxy = Proxy(config, self.visitors, self.personalizer)
        self._tasks: list[asyncio.Task[None]] = []
        self.startup_hooks: list[Callable[[EdgeApp], Awaitable[None]]] = []
        self.events = endpoints = EventEndpoints(
            config, self.identity, self.profiles, self.visitors
        )
        self.profile_form = ProfileForm(self.identity, self.profiles, self.visitors)
        self.sidecar = Starlette(
            routes=[
                Route(FORM_PATH, self.profile_form.handle, methods=["POST"]),
                Route("/_edge/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/_edge/readyz", self.readyz, methods=["GET", "HEAD"]),
                Mount("/_edge/static", StaticFiles(directory=STATIC_DIR), name="static"),
                *endpoints.routes(),
            ],
            lifespan=self._lifespan,
        )
        self.sidecar.add_exception_handler(404, _not_found)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if path == "/_edge/events" and scope["type"] == "http":
            await self.events.browser_events(scope, receive, send)
        elif scope["type"] == "lifespan" or (
            path.startswith(EDGE_PREFIX)
            and path[len(EDGE_PREFIX) : len(EDGE_PREFIX) + 1] in ("", "/")
        ):
            await self.sidecar(scope, receive, send)
        else:
            await self.proxy(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        log.info("proxying to %s", self.config.upstream)
        for hook in self.startup_hooks:
            await hook(self)
        self._tasks = [asyncio.ensure_future(self.rules.watch())]
        if self.config.avg_order_value is None:
            self._tasks.append(asyncio.ensure_future(self._shop_stats_every(SHOP_STATS_EVERY)))
        yield
        for task in self._tasks:
            task.cancel()
        await self.visitors.flush()
        self.proxy.pool.close()
        await self.store.close()

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    async def readyz(self, _request: Request) -> Response:
        reachable = await self.proxy.pool.probe()
        checks: dict[str, Any] = {
            "upstream": "ok" if reachable else "unreachable",
            "config": "ok",
            "rules": "ok" if self.rules.ok else "errors",
        }
        body: dict[str, Any] = {"status": "ready" if reachable else "not ready", "checks": checks}
        if self.rules.errors:
            # Still ready: the rules that were serving keep serving; say what is wrong.
            body["rule_errors"] = [str(e) for e in self.rules.errors[:20]]
        return JSONResponse(
            body, status_code=200 if reachable else 503, headers={"cache-control": "no-store"}
        )

    async def _shop_stats_every(self, seconds: float) -> None:
        while True:
            try:
                self.personalizer.shop = await shop_stats(self.store)
            except Exception as exc:
                log.warning("shop statistics not updated: %s", exc)
            await asyncio.sleep(seconds)


async def _not_found(_request: Request, _exc: Exception) -> Response:
    return JSONResponse(
        {
            "error": "not_found",
            "message": "No such sidecar endpoint. /_edge/ is reserved for shop-edge.",
        },
        status_code=404,
        headers={"cache-control": "no-store"},
    )


SHOP_STATS_EVERY: Final = 900.0


async def shop_stats(store: Store) -> ShopStats:
    """Shop-wide figures the rules compare a visitor against (``shop.*``), from every
    stored profile; yields to the loop between batches."""
    spent = 0.0
    orders = 0
    keys = await store.keys()
    for i, key in enumerate(keys):
        profile = await store.get(key)
        if profile is not None:
            spent += profile.lifetime_spent
            orders += profile.order_count
        if i % 500 == 499:
            await asyncio.sleep(0)
    return ShopStats(avg_order_value=round(spent / orders, 2) if orders else None)


def rules_directory(configured: str) -> tuple[Path, tuple[str, ...] | None]:
    """The merchant's rule directory; without one, the shipped library's segments
    (its placements map the demo shop's theme, not this shop's)."""
    path = Path(configured)
    if path.is_dir():
        return path, None
    log.info("no rule directory %s: the shipped segment library, no placements", path)
    return LIBRARY_DIR, LIBRARY_SEGMENTS


def observer_for(config: Config) -> Observer:
    """The page-type patterns and cart forms from config, or the demo shop's."""
    kwargs: dict[str, Any] = {}
    if config.page_types:
        kwargs["page_types"] = config.page_types
    if config.cart_actions:
        kwargs["cart_actions"] = tuple(
            CartAction(a.method.upper(), a.path, a.action, a.product_field, a.quantity_field)
            for a in config.cart_actions
        )
    return Observer(**kwargs)


def open_store(spec: str) -> Store:
    """``sqlite:PATH`` or ``redis://...`` -> a store."""
    if spec.startswith("sqlite:"):
        from edge.profiles.sqlite import SQLiteStore

        return SQLiteStore(spec.removeprefix("sqlite:") or "edge-data/profiles.db")
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from edge.profiles.redis import RedisStore

        return RedisStore(spec)
    if spec == "memory":
        from edge.profiles.store import MemoryStore

        return MemoryStore()
    raise ConfigError(f"store: expected sqlite:PATH, redis://HOST:PORT/DB or memory, got {spec!r}")


def create_app(config: Config, store: Store | None = None) -> EdgeApp:
    return EdgeApp(config, store)

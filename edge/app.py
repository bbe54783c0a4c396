"""The ASGI application: starlette routes for the sidecar's own ``/_edge/*`` space,
and a raw ASGI catch-all that proxies everything else to the shop."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.config import Config, ConfigError
from edge.forms import FORM_PATH, ProfileForm
from edge.identity import Identity
from edge.ingest import EventEndpoints
from edge.observe import CartAction, Observer
from edge.profiles.service import ProfileService
from edge.profiles.store import Store
from edge.proxy import Proxy, Scope
from edge.visitors import Visitors

log = logging.getLogger("edge.app")

EDGE_PREFIX = "/_edge"


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
        self.proxy = Proxy(config, self.visitors)
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
        yield
        await self.visitors.flush()
        self.proxy.pool.close()
        await self.store.close()

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    async def readyz(self, _request: Request) -> Response:
        reachable = await self.proxy.pool.probe()
        checks = {"upstream": "ok" if reachable else "unreachable", "config": "ok"}
        return JSONResponse(
            {"status": "ready" if reachable else "not ready", "checks": checks},
            status_code=200 if reachable else 503,
            headers={"cache-control": "no-store"},
        )


async def _not_found(_request: Request, _exc: Exception) -> Response:
    return JSONResponse(
        {
            "error": "not_found",
            "message": "No such sidecar endpoint. /_edge/ is reserved for shop-edge.",
        },
        status_code=404,
        headers={"cache-control": "no-store"},
    )


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

"""The ASGI application: starlette routes for the sidecar's own ``/_edge/*`` space,
and a raw ASGI catch-all that proxies everything else to the shop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.config import Config
from edge.proxy import Proxy, Scope

log = logging.getLogger("edge.app")

EDGE_PREFIX = "/_edge"


class EdgeApp:
    """Dispatches on the path: ``/_edge`` and below to the sidecar, the rest upstream."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.proxy = Proxy(config)
        self.sidecar = Starlette(
            routes=[
                Route("/_edge/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/_edge/readyz", self.readyz, methods=["GET", "HEAD"]),
            ],
            lifespan=self._lifespan,
        )
        self.sidecar.add_exception_handler(404, _not_found)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "lifespan" or (
            path.startswith(EDGE_PREFIX)
            and path[len(EDGE_PREFIX) : len(EDGE_PREFIX) + 1] in ("", "/")
        ):
            await self.sidecar(scope, receive, send)
        else:
            await self.proxy(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        log.info("proxying to %s", self.config.upstream)
        yield
        self.proxy.pool.close()

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


def create_app(config: Config) -> EdgeApp:
    return EdgeApp(config)

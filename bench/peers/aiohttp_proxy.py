"""Peer for the proxy benchmark: a minimal bare-ASGI reverse proxy.

The "best plain Python stack" to compare `edge serve` against: no framework, a
pooled keep-alive ``aiohttp.ClientSession`` as the upstream client, uvicorn with
uvloop + httptools, no Server/Date headers added, request and response bodies
streamed chunk by chunk (never buffered whole).

Usage: python bench/peers/aiohttp_proxy.py --upstream http://127.0.0.1:8080 --port 8000
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 §7.6.1 hop-by-hop fields, plus ones the client/server stacks set themselves.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
CHUNK = 64 * 1024


class AiohttpProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.proxy(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(
                    limit=256, limit_per_host=256, keepalive_timeout=60, ttl_dns_cache=None
                )
                self.session = aiohttp.ClientSession(
                    connector=connector,
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.session is not None, "lifespan startup did not run"
        url = self.upstream + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k not in HOP_BY_HOP and k != b"host"
        ]
        client = scope.get("client")
        if client:
            headers.append(("X-Forwarded-For", client[0]))

        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])

        async def body_stream() -> Any:
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        try:
            resp_cm = self.session.request(
                scope["method"],
                url,
                headers=headers,
                data=body_stream() if has_body else None,
                allow_redirects=False,
                compress=None,
            )
            async with resp_cm as resp:
                out_headers = [
                    (k.lower(), v) for k, v in resp.raw_headers if k.lower() not in HOP_BY_HOP
                ]
                await send(
                    {"type": "http.response.start", "status": resp.status, "headers": out_headers}
                )
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except aiohttp.ClientError as exc:
            body = f"bad gateway: {exc.__class__.__name__}\n".encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(
        AiohttpProxy(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        server_header=False,
        date_header=False,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()

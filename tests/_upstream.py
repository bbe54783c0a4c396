"""A byte-exact test upstream: a raw asyncio HTTP/1.1 server in a thread.

Written by hand (not with a framework) so each route controls its exact bytes on the
wire: chunk boundaries, a reset mid-response, a body delimited by EOF, duplicate
headers in a given order. Every request it receives is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field

PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>Negozio</title></head><body>"
    + "".join(
        f'<li class="product" data-product-id="p{i}">Scarpa n°{i} — € {i},90</li>\n'
        for i in range(900)
    )
    + "</body></html>"
).encode()
LARGE = hashlib.shake_256(b"large").digest(6 * 1024 * 1024)


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class TestUpstream:
    __test__ = False
    port: int = 0
    received: list[Received] = field(default_factory=list)
    slow_seconds: float = 3.0

    def start(self) -> TestUpstream:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main() -> None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
            ready.set()
            await self._server.serve_forever()

        def run() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(main())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        def cancel() -> None:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()

        self._loop.call_soon_threadsafe(cancel)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
                request = Received(method, target, headers, b"")  # type: ignore[arg-type]
                length = request.header("content-length")
                if request.header("transfer-encoding") == "chunked":
                    body = bytearray()
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        body += await reader.readexactly(size + 2)
                        del body[-2:]
                        if size == 0:  # its CRLF (no trailers) was read above
                            break
                    request.body = bytes(body)
                elif length:
                    request.body = await reader.readexactly(int(length))
                self.received.append(request)
                keep = await self._respond(request, writer)
                await writer.drain()
                if not keep:
                    writer.close()
                    return
        except (ConnectionError, asyncio.CancelledError):
            return

    async def _respond(self, request: Received, writer: asyncio.StreamWriter) -> bool:
        path, _, _query = request.target.partition("?")
        head_only = request.method == "HEAD"

        def send(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bool:
            lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if not head_only:
                writer.write(body)
            return True

        if path == "/page":
            return send(
                "200 OK",
                [
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Length", str(len(PAGE))),
                    ("ETag", '"page-v1"'),
                    ("Cache-Control", "public, max-age=60"),
                    ("X-Shop", "demo"),
                ],
                PAGE,
            )
        if path == "/gzip":
            body = gzip.compress(PAGE, mtime=0)
            return send(
                "200 OK",
                [
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Encoding", "gzip"),
                    ("Vary", "Accept-Encoding"),
                    ("Content-Length", str(len(body))),
                ],
                body,
            )
        if path == "/cookies":
            return send(
                "200 OK",
                [
                    ("Set-Cookie", "cart=p1:2; Path=/; HttpOnly"),
                    ("Set-Cookie", "session=abc; Path=/; Secure"),
                    ("Set-Cookie", "lang=it; Path=/"),
                    ("Content-Length", "2"),
                ],
                b"ok",
            )
        if path == "/redirect-self":
            return send(
                "302 Found",
                [("Location", f"http://127.0.0.1:{self.port}/cart?x=1"), ("Content-Length", "0")],
            )
        if path == "/redirect-away":
            return send(
                "301 Moved Permanently",
                [("Location", "https://payments.example/checkout"), ("Content-Length", "0")],
            )
        if path == "/redirect-relative":
            return send("303 See Other", [("Location", "/cart"), ("Content-Length", "0")])
        if path == "/chunked":
            if head_only:
                return send("200 OK", [("Transfer-Encoding", "chunked")])
            send("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
            for piece in (b"first ", b"second ", b"third"):
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            return True
        if path == "/large":
            return send(
                "200 OK",
                [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(LARGE)))],
                LARGE,
            )
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            reason = {
                204: "No Content",
                304: "Not Modified",
                404: "Not Found",
                500: "Oops",
                418: "I'm a teapot",
            }
            if code in (204, 304):
                return send(f"{code} {reason[code]}", [("ETag", '"x"')])
            body = f"status {code}".encode()
            return send(f"{code} {reason[code]}", [("Content-Length", str(len(body)))], body)
        if path == "/echo":
            body = json.dumps(
                {
                    "method": request.method,
                    "target": request.target,
                    "headers": request.headers,
                    "body_sha256": hashlib.sha256(request.body).hexdigest(),
                    "body_length": len(request.body),
                }
            ).encode()
            return send(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                body,
            )
        if path == "/eof":
            send(
                "200 OK",
                [("Content-Type", "text/plain"), ("Connection", "close")],
                b"until the end",
            )
            return False
        if path == "/hop":
            return send(
                "200 OK",
                [
                    ("Connection", "keep-alive, X-Secret-Hop"),
                    ("Keep-Alive", "timeout=5"),
                    ("X-Secret-Hop", "drop me"),
                    ("Proxy-Authenticate", "Basic"),
                    ("X-End-To-End", "keep me"),
                    ("Content-Length", "2"),
                ],
                b"ok",
            )
        if path == "/slow":
            await asyncio.sleep(self.slow_seconds)
            return send("200 OK", [("Content-Length", "4")], b"late")
        if path == "/reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            writer.transport.abort()
            return False
        if path == "/truncated":
            send("200 OK", [("Content-Length", "100")], b"only part")
            await writer.drain()
            writer.transport.abort()
            return False
        if path == "/hold":
            # Headers now, body after a pause: an in-flight request for shutdown tests.
            send("200 OK", [("Content-Length", "4")])
            await writer.drain()
            await asyncio.sleep(1.0)
            writer.write(b"done")
            return True
        return send("404 Not Found", [("Content-Length", "9")], b"not found")

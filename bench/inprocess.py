"""The in-process parts of ``bench/instructions.py``: the virtual clock, ASGI calls
into the app, its lifespan, waiting for what a request left running, the in-process
upstreams (the shop's snapshots; ``/`` new on every response for the ``new page``
mode) and the 500-visitor mix's visitors. See that script's docstring for why each is
as it is; everything here runs inside the process callgrind counts."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Any

START = 1_796_191_200.0  # 2026-12-02 06:00 UTC: the virtual clock's first instant
MODE_SPAN = 3600.0  # each sidecar's clock starts this much after the previous one's
STEP = 0.001  # virtual seconds per request
WRITE_BEHIND = 0.06  # s: a little more than the sidecar's 50 ms write-behind delay
MIX_VISITORS = 500
MIX_ID = "instructions-mix-{:05d}"  # 22 characters, like a real visitor id
FRESH_TOKEN = b'<meta name="csrf-token" content="%016x">'
"""What the upstream adds to ``/`` in the ``new page`` mode, a new value on every response."""


# --------------------------------------------------------------------------- the clock


class VirtualClock:
    """``time.time``, ``time.monotonic`` and ``time.perf_counter`` that move only when
    :meth:`tick` or :meth:`start` says so. Installed before ``edge`` is imported, so
    the defaults its caches capture (``timer=time.monotonic``) are this clock too."""

    def __init__(self) -> None:
        self.now = 0.0

    def install(self) -> None:
        time.time = lambda: START + self.now
        time.monotonic = time.perf_counter = lambda: 1000.0 + self.now

    def start(self, mode_index: int) -> None:
        """A sidecar's first instant: the same in every process, whatever ran before."""
        self.now = max(self.now, mode_index * MODE_SPAN)

    def tick(self) -> None:
        self.now += STEP

    def skip_to(self, instant: float) -> None:
        """Move on to *instant* (virtual seconds since the first sidecar's start)."""
        self.now = max(self.now, instant)


# --------------------------------------------------------------------------- ASGI calls


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_scope(
    method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> dict[str, Any]:
    """A scope as uvicorn makes it for a request from a browser on this machine."""
    raw = [(b"host", b"127.0.0.1:8000")]
    raw += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
    }


async def call(app: Any, scope: dict[str, Any], body: bytes = b"") -> Answer:
    """One request through *app*; the client never disconnects."""
    messages: list[dict[str, Any]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if asked:
            await asyncio.get_running_loop().create_future()  # the visitor stays
        asked = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    return Answer(
        start["status"],
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])],
        b"".join(m.get("body", b"") for m in messages[1:]),
    )


class Lifespan:
    """Drives an app's ASGI lifespan. After start-up the app's own timer tasks (the
    rules watcher) are stopped: they cost by the second, not by the request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        before = asyncio.all_tasks()
        self.task = asyncio.ensure_future(
            self.app(scope | {"state": {}}, self.inbox.get, self.replies.put)
        )
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await self.replies.get()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"start-up failed: {reply.get('message', reply)}")
        timers = asyncio.all_tasks() - before - {self.task}
        for task in timers:
            task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        reply = await self.replies.get()
        if reply["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"shutdown failed: {reply.get('message', reply)}")
        assert self.task is not None
        await self.task


async def settle(baseline: set[asyncio.Task[Any]]) -> None:
    """Wait for every task a request left behind (the write-behind flush of its events)
    to end, so that its cost lands in that request and nowhere else."""
    me = asyncio.current_task()
    first = True
    while True:
        left = [t for t in asyncio.all_tasks() if t is not me and t not in baseline]
        if not left:
            return
        if first:
            # Once they have taken their first step (the flush sets its timer, on the loop's
            # real clock), block past the flush's delay: the loop then finds the timer due
            # on its next turn, every time (waiting for it in the loop, the wake-up falls
            # before or after the timer's millisecond: one turn more or less).
            asyncio.get_running_loop().call_soon(time.sleep, WRITE_BEHIND)
            first = False
        done, _ = await asyncio.wait(left, timeout=60)
        if not done:
            raise RuntimeError(f"tasks still running 60 s after a request: {left}")


# --------------------------------------------------------------------------- the upstreams


class Upstream(asyncio.Protocol):
    """The shop: answers ``GET path`` with its snapshot, keep-alive HTTP/1.1, in one
    write. In the measured process, so that when its answer arrives does not depend
    on another process's timing; its share (a find, a split, a write) is in every row."""

    def __init__(self, responses: dict[bytes, bytes]) -> None:
        self.responses = responses
        self.buffer = b""
        self.transport: Any = None

    @staticmethod
    def responses_for(pages: dict[str, bytes]) -> dict[bytes, bytes]:
        from personalize import UPSTREAM_HEADERS

        out = {}
        for path, page in pages.items():
            head = {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Length": str(len(page)),
                "ETag": f'"{len(page):x}-snapshot"',
                **UPSTREAM_HEADERS,
            }
            lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
            out[path.encode()] = f"HTTP/1.1 200 OK\r\n{lines}\r\n".encode() + page
        return out

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # The whole answer in the socket at once (not 16 KB now, the rest when writable).
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:  # GETs: no bodies
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1]
            self.transport.write(self.responses.get(target, NOT_FOUND))


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class FreshUpstream(Upstream):
    """The ``new page`` mode's shop: ``/`` carries a new token in its head on every
    response (as a shop that puts a per-visitor CSRF token in every page), so no
    response is the page of the one before: it cannot be replayed."""

    def __init__(self, responses: dict[bytes, bytes], page: bytes) -> None:
        from personalize import UPSTREAM_HEADERS

        super().__init__(responses)
        head = {  # no ETag: the page is new every time
            "Content-Type": "text/html; charset=utf-8",
            "Content-Length": str(len(page) + len(FRESH_TOKEN % 0)),
            **UPSTREAM_HEADERS,
        }
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        marker = page.index(b"<head>") + len(b"<head>")
        self.before = f"HTTP/1.1 200 OK\r\n{lines}\r\n".encode() + page[:marker]
        self.after = page[marker:]
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1]
            if target == b"/":
                self.count += 1
                self.transport.write(self.before + FRESH_TOKEN % self.count + self.after)
            else:
                self.transport.write(self.responses.get(target, NOT_FOUND))


# --------------------------------------------------------------------------- the mix


@dataclass
class MixVisitor:
    """One of the mix's visitors: what they send, when their profile was last read or
    written (virtual seconds), and their page views so far."""

    headers: dict[str, str]
    touched: float = 0.0
    views: int = 0


def mix_visitors() -> list[str]:
    """The mix's visitor ids: fixed, none held out of a placement by the rules."""
    from personalize import held_out

    ids: list[str] = []
    i = 0
    while len(ids) < MIX_VISITORS:
        candidate = MIX_ID.format(i)
        i += 1
        if not held_out(candidate):
            ids.append(candidate)
    return ids


def store_reads() -> int:
    """Profile reads from the store so far (the ``get`` calls the guarded store tells
    ``edge_store_seconds`` about; reads the profile cache answers are not)."""
    from edge import metrics

    timing = metrics._store_timings.get("get")
    return sum(timing.counts) if timing is not None else 0

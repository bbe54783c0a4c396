"""What the sidecar writes for its operator: the access log, the request id, and error
lines that stay one line each and do not repeat themselves under load.

* **Request id**: a client's ``X-Request-Id`` is kept when it is well formed (1 to 64
  characters of ``A-Z a-z 0-9 . _ : + = / -``), else replaced by a new one (16 hex
  digits); it goes upstream (the shop's logs can join on it), comes back on the
  response, and is in the access log line and in every log line written while the
  request is served (``request_id=…``, :data:`REQUEST_ID`).
* **Access log** (``access_log = "text"`` or ``"json"``, ``"off"``): one line per request
  to the shop: time, request id, method, path *without the query string*, status,
  body bytes sent, duration ms, outcome (as ``edge_requests_total`` counts it) and
  upstream ms (time to the response head); the client address only with
  ``access_log_client_ip``. No cookies, no query strings, no headers. Written without
  waiting (:class:`AccessLog`): a destination that stops taking lines never stalls
  serving; past ``PENDING_LIMIT`` bytes waiting, lines are dropped and counted
  (``edge_access_log_dropped_total``).
* **Error lines** (:func:`configure`): one line per record, ``time level logger: message``;
  an exception is ``(Type: message at edge/file.py:line in function)``, its full
  traceback only at ``log_level = "debug"``. A warning or error repeated within
  ``REPEAT_WINDOW`` seconds (same logger, same message template, same exception type)
  is written once; the next one after the window says how many were held back.

A leaf beside :mod:`edge.metrics` (it imports only that): any layer may log.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import re
import stat
import sys
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Literal

import msgspec

from edge import metrics

__all__ = [
    "REQUEST_ID",
    "AccessLog",
    "Sent",
    "configure",
    "request_id",
]

REQUEST_ID: Final[contextvars.ContextVar[bytes]] = contextvars.ContextVar(
    "edge_request_id", default=b""
)
"""The request id of the request being served (empty outside one)."""

_HEADER: Final = b"x-request-id"
_WELL_FORMED: Final = re.compile(rb"[A-Za-z0-9._:+=/-]{1,64}").fullmatch


def request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request's id: the client's ``X-Request-Id`` when well formed, else a new one
    put in *headers* (the list forwarded upstream) in place of what the client sent."""
    for name, value in headers:
        if name == _HEADER:
            if _WELL_FORMED(value):
                return value
            headers[:] = [(n, v) for n, v in headers if n != _HEADER]
            break
    made = b"%016x" % _bits(64)
    headers.append((_HEADER, made))
    return made


_ids: Final = random.Random(os.urandom(16))
_bits: Final = _ids.getrandbits
"""New request ids: 64 bits of a generator seeded from the system's randomness at start
(and in a forked child). An id names a request in the logs and is no secret (a client's
own is taken as it is): the system's randomness for each cost a system call a request."""
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(16)))


class Sent:
    """An ASGI ``send`` that notes the status and the body bytes sent (for the access
    log), and the request's timings and outcome."""

    __slots__ = ("body_bytes", "send", "status", "upstream")

    def __init__(self, send: Callable[[dict[str, Any]], Any]) -> None:
        self.status = 0
        self.body_bytes = 0
        self.upstream = -1.0
        """Seconds to the upstream's response head (negative: none came)."""

        # A closure, not __call__: a third cheaper per message (measured in Ir).
        def counted(message: dict[str, Any]) -> Any:
            if message["type"] == "http.response.body":
                self.body_bytes += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                self.status = message["status"]
            return send(message)  # the awaitable itself: no extra coroutine per message

        self.send = counted
        """The ``send`` to use instead of the server's."""


Format = Literal["off", "text", "json"]
PENDING_LIMIT: Final = 1 << 20
"""Bytes of access log kept while the destination takes none (a full pipe); past that,
lines are dropped and counted."""


class _AccessRecord(msgspec.Struct, omit_defaults=True):
    time: str
    request_id: str
    method: str
    path: str
    status: int
    bytes: int
    duration_ms: float
    outcome: str
    upstream_ms: float | None = None
    client: str = ""


class AccessLog:
    """The access log: to stderr (*path* empty) or appended to the file *path*.

    Each line is written when its request ends, one ``write`` without waiting: to a
    pipe or a terminal through a descriptor of its own in non-blocking mode, so a
    reader that stops reading never stalls serving (what it does not take waits, up
    to ``PENDING_LIMIT`` bytes, then lines are dropped and counted)."""

    def __init__(self, format: Format, path: str = "", client_ip: bool = False) -> None:
        self.format = format
        self.client_ip = client_ip
        self.path = path
        # Opened now, so a wrong path is an error at start (OSError, naming the file).
        self.fd = (
            os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640) if path else _stderr()
        )
        self._pending = b""
        self._torn = False

    def ended(
        self,
        sent: Sent,
        rid: bytes,
        method: str,
        path: bytes,
        client: str,
        began: float,
        outcome: str,
    ) -> None:
        """``write`` for a request that began at ``time.perf_counter()`` *began* and has
        just ended, its upstream time taken from *sent*."""
        seconds = time.perf_counter() - began
        self.write(
            sent, rid, method, path, client, time.time() - seconds, seconds, sent.upstream, outcome
        )

    def write(
        self,
        sent: Sent,
        rid: bytes,
        method: str,
        path: bytes,
        client: str,
        started: float,
        seconds: float,
        upstream: float,
        outcome: str,
    ) -> None:
        """Write one request's line: *started* is the wall-clock time it came,
        *seconds* its duration, *upstream* the time to the upstream's response head
        (negative: none came)."""
        line = self.line(
            started,
            rid,
            method,
            path,
            sent.status,
            sent.body_bytes,
            seconds,
            outcome,
            upstream,
            client if self.client_ip else "",
        )
        data = self._pending + line if self._pending else line
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the destination is gone: nothing to keep lines for
            written = len(data)
            metrics.ACCESS_LOG_DROPPED.value += data.count(b"\n")
        rest = data[written:]
        # Whether what is left starts in the middle of a line the destination has begun.
        torn = data[written - 1] != 10 if written else self._torn
        if len(rest) > PENDING_LIMIT:
            keep = rest.find(b"\n") + 1 if torn else 0  # a begun line is finished
            metrics.ACCESS_LOG_DROPPED.value += rest.count(b"\n", keep)
            rest = rest[:keep]
        self._pending = rest
        self._torn = torn and bool(rest)

    def line(
        self,
        started: float,
        rid: bytes,
        method: str,
        path: bytes,
        status: int,
        size: int,
        seconds: float,
        outcome: str,
        upstream: float,
        client: str,
    ) -> bytes:
        second, ms = _stamp(started)
        if path.translate(None, _PRINTABLE):  # a space, a control or a non-ASCII byte
            path = path.decode("latin-1").encode("unicode_escape").replace(b" ", b"%20")
        if self.format == "json":
            record = _AccessRecord(
                time=f"{second.decode()}.{ms:03d}Z",
                request_id=rid.decode("ascii"),
                method=method,
                path=path.decode("ascii"),
                status=status,
                bytes=size,
                duration_ms=round(seconds * 1000, 2),
                outcome=outcome,
                upstream_ms=round(upstream * 1000, 2) if upstream >= 0 else None,
                client=client,
            )
            return msgspec.json.encode(record) + b"\n"
        # One bytes %-format: every conversion in one C call, nothing to encode after.
        if upstream >= 0:
            text = _TEXT % (
                second, ms, rid, method.encode(), path, status, size,
                seconds * 1000, outcome.encode(), upstream * 1000,
            )  # fmt: skip
        else:
            text = _TEXT_NO_UPSTREAM % (
                second, ms, rid, method.encode(), path, status, size,
                seconds * 1000, outcome.encode(),
            )  # fmt: skip
        if client:
            return text + b" client=" + client.encode() + b"\n"
        return text + b"\n"

    def close(self) -> None:
        if self._pending:
            with contextlib.suppress(OSError):
                os.write(self.fd, self._pending)
            self._pending = b""
        if self.fd != 2:
            os.close(self.fd)
        self.fd = -1


def _stderr() -> int:
    """A descriptor for stderr that never blocks: a pipe's or a terminal's is opened
    again (a description of its own, non-blocking without touching fd 2's); a file
    is written through fd 2 itself (a file never blocks, and a second description
    would write at its own offset); anything else (a socket), fd 2 as it is."""
    try:
        mode = os.fstat(2).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            return os.open("/proc/self/fd/2", os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    except OSError:
        pass
    return 2


_TEXT: Final = b"%s.%03dZ %s %s %s %d %d %.1fms %s upstream=%.1fms"
_TEXT_NO_UPSTREAM: Final = b"%s.%03dZ %s %s %s %d %d %.1fms %s upstream=-"
_PRINTABLE: Final = bytes(range(0x21, 0x7F))
_second: list[Any] = [-1, b""]
"""The last second written, and its text (lines come in bursts within a second)."""


def _stamp(seconds: float) -> tuple[bytes, int]:
    """``2026-12-07T06:49:26`` (UTC) and the milliseconds."""
    whole = int(seconds)
    if whole != _second[0]:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)).encode()]
    return _second[1], int((seconds - whole) * 1000)


# --------------------------------------------------------------------- error lines

REPEAT_WINDOW: Final = 10.0
"""Seconds during which a warning or error repeated is held back (and counted)."""
_MAX_KEYS: Final = 1024


def _where(tb: TracebackType | None) -> str:
    frames = traceback.extract_tb(tb) if tb is not None else []
    if not frames:
        return ""
    frame = frames[-1]
    filename = frame.filename.replace(os.sep, "/")
    cut = filename.rfind("/edge/")
    short = filename[cut + 1 :] if cut >= 0 else filename.rsplit("/", 1)[-1]
    return f" at {short}:{frame.lineno} in {frame.name}"


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class OneLineFormatter(logging.Formatter):
    """``time level logger: message (Type: text at file:line in function) request_id=…``,
    one line; with *tracebacks* (debug level) the full traceback follows."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        line = self.formatMessage(record)
        exc_info = record.exc_info
        if exc_info and exc_info[0] is not None:
            exc = exc_info[1]
            line += f" ({exc_info[0].__name__}: {exc}{_where(exc_info[2])})"
        repeats = getattr(record, "repeats", 0)
        if repeats:
            line += f" [held back: {repeats} more like this within {REPEAT_WINDOW:.0f} s; the last]"
        rid = getattr(record, "request_id", b"")
        if rid:
            line += " request_id=" + rid.decode("ascii")
        line = _one_line(line)
        if self.tracebacks and exc_info and exc_info[0] is not None:
            line += "\n" + self.formatException(exc_info)
        return line


class _Seen:
    __slots__ = ("held", "record", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.held = 0
        self.record: logging.LogRecord | None = None


class RepeatLimitingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes a warning or error once per ``REPEAT_WINDOW`` and
    counts its repeats: the first one after the window (or, when it stops repeating,
    the next line written, or the end) says how many were held back."""

    def __init__(self, stream: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(stream)
        self.clock = clock
        self._seen: dict[tuple[Any, ...], _Seen] = {}

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        record.request_id = REQUEST_ID.get()
        if record.levelno < logging.WARNING:
            return bool(super().handle(record))
        now = self.clock()
        self._summaries(now)
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, str(record.msg), exc)
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < REPEAT_WINDOW:
            seen.held += 1
            seen.record = record
            metrics.LOG_REPEATS_SUPPRESSED.inc()
            return False
        if len(self._seen) >= _MAX_KEYS:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = _Seen(now)
        return bool(super().handle(record))

    def _summaries(self, now: float) -> None:
        """Write the held-back counts of messages whose window has passed."""
        for key, seen in list(self._seen.items()):
            if now - seen.since >= REPEAT_WINDOW:
                del self._seen[key]
                if seen.held and seen.record is not None:
                    seen.record.repeats = seen.held
                    super().handle(seen.record)

    def close(self) -> None:
        self._summaries(float("inf"))
        super().close()


def configure(level: str = "info", stream: Any = None) -> logging.Handler:
    """The root logger's one handler: one line per record, repeats held back."""
    handler = RepeatLimitingHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(OneLineFormatter(tracebacks=level.lower() == "debug"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, RepeatLimitingHandler):  # ours, from an earlier call
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler

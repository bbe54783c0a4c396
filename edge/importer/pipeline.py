"""One import from start to end: reading feeds applying, then the writes.

Two halves, pipelined. *Reading* (:func:`read`: the file's records through their
kind's parser) turns the file into batches of events and bad lines, in file order.
*Applying* (:class:`~edge.importer.bulk.Bulk`) takes each batch as it comes, and when
the file is done, writes.

Files of ``SEPARATE_READER_BYTES`` or more are read in a second process (``fork``,
about 10 ms; ``forkserver`` costs ~0.2 s and re-imports the main module), which sends
the batches as msgpack over a pipe; smaller ones are read in this process, through the
very same reading and applying code, so both give identical results. The reading
process reads orders early (see :mod:`edge.importer.orders`), so applying keeps pace
with reading; should an order turn out scattered, it says so (:class:`Restart`) and
reads the file again with every order held to the end (nothing is written before
reading ends, so starting over is safe). A reader that crashes, or a Ctrl-C, leaves
the store as it was, and the reader is stopped, never left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import multiprocessing
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Final

import msgspec

from edge.identity import Identity
from edge.importer.bulk import CHUNK, SHARED_CHUNK, Bulk, BulkStore
from edge.importer.formats import (
    BATCH,
    KINDS,
    Record,
    Rows,
    Source,
    check_columns,
    detect_kind,
    normal_record,
    open_records,
)
from edge.importer.orders import Orders, Scattered
from edge.importer.progress import Progress
from edge.importer.records import Bad, Batch, Customers, Emails, Events, Parser
from edge.importer.report import ImportFailed, ImportReport, LineError
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import Activation

SEPARATE_READER_BYTES: Final = 1_000_000
"""Files this big or bigger are read in a second process (~13,000 item rows): below
that, starting it costs more than it saves."""
PIPE_BYTES: Final = 1 << 20
"""The pipe from the reading process holds this much (Linux's default limit for
unprivileged processes): room for a few batches, so it reads on while one is applied."""
HELD_BATCHES: Final = 16
"""The reading process drops the batches it sent this many at a time (see
:func:`_read_for`): about 15 MB held."""
PARSERS: Final[dict[str, type[Parser]]] = {
    "orders": Orders,
    "customers": Customers,
    "emails": Emails,
    "events": Events,
}


# --- the entry point -----------------------------------------------------------------


def import_file(
    path: Path,
    *,
    store: BulkStore,
    identity: Identity,
    kind: str | None = None,
    strict: bool = False,
    progress: bool | None = None,
    now: int | None = None,
    chunk: int | None = None,
    separate_reader: bool | None = None,
    activation: Activation | None = None,
) -> ImportReport:
    """Import *path* into *store*. Raises :class:`ImportFailed` for a file that cannot
    be imported at all; bad lines are in the report instead. Runs on the caller's
    thread (from async code, in an executor). *store*: a SQLite or Redis store (its
    ``bulk()`` session). *chunk*: events per transaction (None: ``CHUNK`` for SQLite,
    ``SHARED_CHUNK`` for Redis). *separate_reader*: read the file in a second process
    (None: when it has ``SEPARATE_READER_BYTES`` or more). *activation*: runs on every
    profile written (``edge.activation``), its messages enqueued in the same writes."""
    if chunk is None:
        chunk = CHUNK if isinstance(store, SQLiteStore) else SHARED_CHUNK
    # Nothing here makes cycles, and the cyclic GC would rescan the many long-lived
    # objects over and over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with _interruptible():
            return _import(
                path,
                store,
                identity,
                kind,
                strict,
                progress,
                now,
                chunk,
                separate_reader,
                activation,
            )
    finally:
        if collecting:
            gc.enable()


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt at once. Under ``asyncio.run`` (the CLI) the
    first one would only cancel the running task, which this synchronous import does
    not notice until it has finished (and written everything)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:  # (None: set outside Python, cannot be put back)
            signal.signal(signal.SIGINT, previous)


def _import(
    path: Path,
    store: BulkStore,
    identity: Identity,
    kind: str | None,
    strict: bool,
    progress: bool | None,
    now: int | None,
    chunk: int,
    separate_reader: bool | None,
    activation: Activation | None = None,
) -> ImportReport:
    started = time.perf_counter()
    path = Path(path)
    now = int(time.time()) if now is None else now
    show = sys.stderr.isatty() if progress is None else progress
    if kind is not None and kind not in KINDS:
        raise ImportFailed(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if not path.is_file():
        raise ImportFailed(f"{path}: no such file")
    if isinstance(store, SQLiteStore) and store.path == ":memory:":
        raise ImportFailed("bulk import needs an SQLite file, not :memory:")

    size = path.stat().st_size
    opened, lines, errors, bulk = _read_and_apply(
        path,
        kind,
        separate=size >= SEPARATE_READER_BYTES if separate_reader is None else separate_reader,
        strict=strict,
        size=size,
        show=show,
        start=lambda: Bulk(store, identity.email_hash, now, activation),
    )
    try:
        report = ImportReport(
            kind=opened.kind,
            lines=lines,
            applied_events=0,
            orders=0,
            skipped_duplicates=0,
            errors=errors,
            seconds=0.0,
            path=str(path),
            kind_reason=opened.reason,
            strict=strict,
            notes=opened.notes,
        )
        if strict and errors:
            report.applied = False
            report.seconds = time.perf_counter() - started
            return report
        applying = Progress("applying", len(bulk.units), "", enabled=show)
        try:
            bulk.write(strict=strict, size=chunk, progress=applying)
        finally:
            applying.close()
    finally:
        bulk.close()
    report.applied_events = bulk.applied
    report.orders = bulk.orders
    report.skipped_duplicates = bulk.skipped
    report.seconds = time.perf_counter() - started
    return report


def _read_and_apply(
    path: Path,
    kind: str | None,
    *,
    separate: bool,
    strict: bool,
    size: int,
    show: bool,
    start: Callable[[], Bulk],
) -> tuple[Opened, int, list[LineError], Bulk]:
    """Read *path*, applying each batch in memory as it comes (with *strict*, only
    until the first bad line). Returns the kind, the lines read, the bad lines in file
    order, and what was applied, for the caller to write and close."""
    bulk = start()
    errors: list[LineError] = []
    lines = 0
    reading = Progress("reading", size, "B", enabled=show)
    try:
        with _reading(path, kind, separate=separate) as (opened, batches):
            for batch in batches:
                if isinstance(batch, Restart):  # (nothing is written yet)
                    bulk.close()
                    bulk = start()
                    errors, lines = [], 0
                    continue
                lines += batch.lines
                errors += batch.errors
                if not (strict and errors):  # --strict with a bad line: only reading on
                    bulk.add(batch.units)
                reading.add(batch.position - reading.done)
    except BaseException:
        bulk.close()
        raise
    finally:
        reading.close()
    errors.sort(key=lambda e: e.line)
    return opened, lines, errors, bulk


# --- reading: the file as batches of events and bad lines ------------------------------


class Opened(msgspec.Struct, tag=True):
    """The file's kind, and why; first from reading."""

    kind: str
    reason: str
    notes: list[str]


class Restart(msgspec.Struct, tag=True):
    """Forget the batches so far: the file is read again from the start (an order's
    rows turned out to be apart, see :class:`~edge.importer.orders.Scattered`)."""


class Done(msgspec.Struct, tag=True):
    """The reading process read the whole file."""


class Failed(msgspec.Struct, tag=True):
    """The reading process stopped: the file cannot be imported, or a crash."""

    message: str
    whole_file: bool
    """An :class:`ImportFailed` (else a crash: *message* is its traceback)."""


_messages: Final = msgspec.msgpack.Decoder(Opened | Batch | Restart | Done | Failed)


def read(path: Path, kind: str | None, *, early: bool = False) -> tuple[Opened, Iterator[Batch]]:
    """Open *path* and choose its kind (raising :class:`ImportFailed` when it cannot be
    imported), then read it batch by batch. *early*: an order of item rows goes out as
    soon as a row of another order follows, not at the end of the file (the batches
    raise :class:`~edge.importer.orders.Scattered` if one of its rows comes later)."""
    source = open_records(path)
    try:
        columns = source.columns
        if kind is not None:
            chosen, reason = kind, "given"
        else:
            chosen, reason = detect_kind(path, columns)
        check_columns(chosen, columns, source.is_csv)
    except BaseException:
        source.records.close()
        raise
    if source.is_csv and source.delimiter == ";":
        reason += ", semicolon-separated"
    parser = PARSERS[chosen](columns)
    if isinstance(parser, Orders):
        parser.early = early
        if parser.items and source.is_csv:
            parser.read_cells()
    normalise = not source.is_csv and chosen != "events"  # JSON objects as CSV rows
    return Opened(chosen, reason, parser.notes), _batches(source, parser, normalise)


def _batches(source: Source, parser: Parser, normalise: bool) -> Iterator[Batch]:
    row = parser.row
    make_record = source.record if source.is_csv and not parser.reads_cells else None
    lines = 0

    def one(line: int, record: Record | list[str] | LineError) -> None:
        if isinstance(record, LineError):
            parser.errors.append(record)
            return
        if make_record is not None:
            record = make_record(record)  # type: ignore[arg-type]
        elif normalise:
            record = normal_record(record)  # type: ignore[arg-type]
        try:
            row(line, record)  # type: ignore[arg-type]
        except Bad as bad:
            parser.errors.append(LineError(line, bad.message))

    try:
        for line, record in source.records:
            if type(record) is not Rows:
                lines += 1
                one(line, record)
            elif make_record is None and parser.rows(line, record):
                lines += len(record)
            else:  # row by row after all
                for at, cells in enumerate(record, line):
                    if any(cells):
                        lines += 1
                        one(at, cells)
            if lines >= BATCH:
                yield parser.batch(lines, source.position())
                lines = 0
        parser.finish()
        yield parser.batch(lines, source.position())
    finally:
        source.records.close()


@contextlib.contextmanager
def _reading(
    path: Path, kind: str | None, *, separate: bool
) -> Iterator[tuple[Opened, Iterator[Batch | Restart]]]:
    """The file's kind and its batches, read in this process or in a second one."""
    if not separate:
        opened, batches = read(path, kind)
        with contextlib.closing(batches):
            yield opened, batches
        return
    # fork: the child starts in ~10 ms with everything imported; it only reads the file
    # and sends bytes (no SQLite connection, no lock the parent's threads share).
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux
        with contextlib.suppress(OSError):  # (above /proc/sys/fs/pipe-max-size)
            fcntl.fcntl(sender.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    reader = context.Process(
        target=_read_for, args=(sender, path, kind), name="edge import: reading", daemon=True
    )
    interrupted = _start(reader)
    sender.close()
    finished = False

    def batches() -> Iterator[Batch | Restart]:
        nonlocal finished
        while not isinstance(message := _receive(receiver), Done):
            if isinstance(message, Opened):
                raise RuntimeError("edge import: the reader opened the file twice")
            yield message
        finished = True

    try:
        if interrupted:
            signal.raise_signal(signal.SIGINT)  # now that the reader is there to be stopped
        opened = _receive(receiver)
        if not isinstance(opened, Opened):
            raise RuntimeError(f"edge import: unexpected {type(opened).__name__} from the reader")
        yield opened, batches()
    finally:
        receiver.close()  # a reader still sending gets EPIPE
        if not finished:
            reader.terminate()
        reader.join(5)
        if reader.is_alive():
            reader.kill()
            reader.join()


def _start(reader: BaseProcess) -> bool:
    """Start *reader* with Ctrl-C held back; returns whether one came meanwhile. (Raised
    during the fork, a KeyboardInterrupt is swallowed by an at-fork hook, or leaves a
    reader that nobody stops.)"""
    if threading.current_thread() is not threading.main_thread() or not callable(
        signal.getsignal(signal.SIGINT)
    ):
        reader.start()  # (no KeyboardInterrupt here, or a handler that cannot be put back)
        return False
    came: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        reader.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    return bool(came)


def _receive(receiver: Connection) -> Opened | Batch | Restart | Done:
    try:
        data = receiver.recv_bytes()
    except EOFError:
        raise RuntimeError("edge import: the reading process ended before the file did") from None
    message = _messages.decode(data)
    if isinstance(message, Failed):
        if message.whole_file:
            raise ImportFailed(message.message)
        raise RuntimeError(f"edge import: the reading process failed:\n{message.message}")
    return message


def _read_for(sender: Connection, path: Path, kind: str | None) -> None:
    """The reading process: :func:`read`'s messages, msgpack-encoded, to the parent.
    Orders go out early; if that turns out wrong, the file is read again."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    encode = msgspec.msgpack.Encoder().encode
    try:
        try:
            opened, batches = read(path, kind, early=True)
            sender.send_bytes(encode(opened))
            try:
                held: list[Batch] = []
                for batch in batches:
                    sender.send_bytes(encode(batch))
                    # Freed one by one while the next is made, sent batches leave
                    # pymalloc's pools holed and reading slows (bench/README.md).
                    held.append(batch)
                    if len(held) >= HELD_BATCHES:
                        held.clear()
            except Scattered:
                sender.send_bytes(encode(Restart()))
                for batch in read(path, kind)[1]:
                    sender.send_bytes(encode(batch))
            end: Done | Failed = Done()
        except ImportFailed as exc:
            end = Failed(str(exc), whole_file=True)
        except Exception:
            end = Failed(traceback.format_exc(), whole_file=False)
        sender.send_bytes(encode(end))
    except OSError:
        pass  # the parent stopped listening (it is stopping us)
    finally:
        sender.close()

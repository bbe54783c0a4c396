"""``edge import FILE``: the shop's orders, customers and email events from files.

Formats: CSV with a header row (comma or semicolon, auto-detected), JSON Lines
(``.jsonl``/``.ndjson``, one object per line) and ``.json`` holding one array of
objects. The kind comes from ``--kind``, else from the file name (``orders``,
``customers``, ``emails``, ``events``...), else from the columns; the report says
which was chosen and why.

Kinds and their columns (names are case-insensitive; ``date`` may stand for ``ts``):

- ``orders``: ``order_id``, ``user_id|email|anonymous_id``, ``ts|date`` (ISO 8601
  date or datetime, UTC when no offset is given, or unix seconds), ``total``,
  ``coupon?``. Either one row per order (optional ``products``, a JSON array of
  ``{"product_id", "category", "brand", "price", "quantity"}``) or one row per line
  item (``product_id, category?, brand?, price?, quantity?, name?``): rows with the
  same ``order_id`` anywhere in the file make one order; they must agree on the
  customer, time, total and coupon (``total`` may be left out: it is then the sum of
  ``price * quantity``). Other columns are ignored (and named in the report).
- ``customers``: ``user_id|email``, ``anonymous_id?`` (merges that visitor's
  anonymous profile into the customer's), the traits ``birth_year, age_band, gender,
  city, country, latitude, longitude, language, registered``; any other column is a
  custom trait. An empty cell leaves the stored value alone. One row makes one
  ``Identify`` event.
- ``emails``: ``user_id|email|anonymous_id``, ``ts|date``, ``type`` (``sent`` or
  ``opened``), ``campaign?``, ``event_id?`` -> ``Email Sent`` / ``Email Opened``.
- ``events``: JSON only, each object exactly an event of the vocabulary
  (``{"event": "Order Completed", ...}``, see :mod:`edge.profiles.events`).

Every line is converted through the declared event types, so a bad value is reported
as msgspec words it, with the physical line (1-based; the CSV header is line 1):
``orders.csv:17: total: Expected float, got "12,5€"``. An order is applied whole or
not at all: when one of its item rows is bad, its other rows are reported too.

Applying: without ``--strict`` the good lines are applied (one transaction per
``CHUNK`` orders/rows) and the bad ones reported; with ``--strict`` a file with any bad
line applies nothing, and a good file is applied in one transaction. Exit status
(:meth:`ImportReport.exit_code`): 0 when every line was good, 1 when any line was bad
(whether or not the good ones were applied); problems with the file as a whole
(unreadable, unknown kind, missing columns) raise :class:`ImportFailed` (the CLI
exits 2).

Idempotent: orders are claimed by order id, every other event by its ``event_id``;
rows without one get a stable id derived from their content (kind and normalised
fields), so importing a file twice changes nothing the second time.

How it is fast
--------------

Two halves, pipelined. *Reading* (CSV/JSON parsing, checking every value against the
event types, grouping item rows into orders) turns the file into batches of events
and bad lines, in file order. *Applying* takes each batch as it comes: it reads from
the store whatever profiles, aliases and claims the batch needs and has not read yet
(a few ``IN (...)`` statements), and applies the events to those profiles in memory,
with the same keys, stitching and claim rules as
:class:`~edge.profiles.service.ProfileService`. Only when the file is done does it
write: the events are grouped (those sharing a customer, email, visitor id, a profile
they resolve to, or an order/event id belong together; groups are independent), the
groups packed into chunks of about ``CHUNK`` events, and each chunk is one transaction
that writes each of its changed profiles once, with their aliases and claims.

Files of ``SEPARATE_READER_BYTES`` or more are read in a second process (``fork``,
about 10 ms; ``forkserver`` costs ~0.2 s and re-imports the main module), which sends
the batches as msgpack over a pipe; smaller ones are read in this process, through
the very same reading and applying code, so both give identical results. The reading
process lets an order of item rows go as soon as a row of another order follows
(exports list an order's items together), so applying keeps pace with reading; should
one of its rows come later after all, it says so and reads the file again with every
order held to the end (nothing is written before reading ends, so starting over is
safe). A reader that crashes, or a Ctrl-C, leaves the store as it was, and the reader
is stopped, never left behind.

Reading before writing is safe against other writers (a running sidecar): the bulk
session notes SQLite's ``data_version`` when it opens. If no other connection has
committed by the time a chunk's transaction begins, everything read is still what is
stored and the computed profiles are written as they are. Otherwise each group's reads
are compared with what is stored now, and a group whose profiles, aliases or claims
changed is computed again inside the transaction from the stored state (the same
code, reading through the transaction).

Measured with ``bench/importer.py`` (100,000 orders as 250,349 item rows, 19 MB, into
a fresh file) on the 2-core development machine, which other benchmarks share:

- before (parse everything, then plan and apply chunk by chunk in one process):
  9.6-11.9 s, 8,400-10,400 orders/s with the machine otherwise idle; 10.6-12.3 s
  while other jobs ran;
- then: 4.7-5.8 s, 17,200-21,300 orders/s idle (the same machine's speed varies by
  ~20% from hour to hour); 8.2-10.3 s (9,700-12,300/s) while another job kept one
  core busy;
- now: 4.4-5.0 s, 19,800-22,700 orders/s idle. The reading process ~3.1-3.7 s of
  CPU, this one ~2.5 s applying while the file is read, then ~1.1 s writing. The
  reading process is the long pole, and applying must follow file order, so a third
  process reading half the file would gain little.

Besides the second process, what took time off (found with cProfile and cachegrind
instruction counts): CSV item rows read by column, with no record per row (an eighth
of reading); one conversion per order rather than one per item row; the profile math
(``events.py``: no re-sort through a lambda, no call per counted item: a quarter of
applying); chunks in key order (in file order every chunk rewrote most of the
profiles table's pages: 2.5 times the WAL); one WAL checkpoint, copied alongside the
next chunks, instead of one with an fsync after every commit (0.7 s); claims inserted
by one statement (``json_each``: a third of the time); and the next chunk encoded
while SQLite writes the last (it lets go of the GIL). CSV lines without a quote are
parsed a block at a time (:class:`_CsvLines`) and an order's run of item rows taken at
once, product records made by a dict display rather than ``dict(zip())``: 15% fewer
instructions reading (cachegrind, 15,000 orders), 9% for a whole import in one process.
Those lines are cut with ``str.split`` rather than the csv module (9% fewer again).
Reading early, the orders whole within a block go out at once, with no group gathered,
queued and closed. The pipe from the reading process holds 1 MB, so it reads on while
a batch is applied (it waited at each send: 0.5 s in all). And it drops the batches it
sent sixteen at a time: freed one by one, while the next were made, they left
pymalloc's pools holed and reading took ~18% longer for the same instructions.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import gc
import hashlib
import io
import json
import math
import multiprocessing
import re
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, compress, islice, pairwise
from multiprocessing.connection import Connection
from operator import itemgetter, ne
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import msgspec

from edge.identity import Identity
from edge.profiles import events as ev
from edge.profiles.model import Profile, decode, new_profile
from edge.profiles.service import customer_key, email_key
from edge.profiles.sqlite import BulkSession, SQLiteStore, Writes, prepare
from edge.profiles.store import Profiles

_T = TypeVar("_T")

KINDS: Final = ("orders", "customers", "emails", "events")
CHUNK: Final = 20_000
"""Orders (or rows of other kinds) per transaction without ``--strict``, about (a group
is not split): the profiles are computed before the transaction begins, so each holds
SQLite's write lock a moment only (~0.2 s), and an interrupted import leaves whole
chunks written."""
SEPARATE_READER_BYTES: Final = 1_000_000
"""Files this big or bigger are read in a second process (~13,000 item rows): below
that, starting it costs more than it saves."""
BATCH: Final = 2_000
"""Records per batch from reading to applying, about."""
PIPE_BYTES: Final = 1 << 20
"""The pipe from the reading process holds this much (Linux's default limit for
unprivileged processes)."""
HELD_BATCHES: Final = 16
"""The reading process drops the batches it sent this many at a time (see
:func:`_read_for`): about 15 MB held."""
_BLOCK_BYTES: Final = 1 << 20
"""A CSV file is read and decoded this much at a time."""
MAX_ERRORS_SHOWN: Final = 50

_SUBJECT: Final = ("user_id", "email", "anonymous_id")
_PRODUCT_FIELDS: Final = ("product_id", "category", "brand", "price", "quantity", "name")
_ORDER_FIELDS: Final = frozenset(
    {"order_id", *_SUBJECT, "ts", "total", "coupon", "products", *_PRODUCT_FIELDS}
)
_EMAIL_FIELDS: Final = frozenset({*_SUBJECT, "ts", "type", "campaign", "event_id"})
_EMAIL_TYPES: Final = {
    "sent": ev.EmailSent,
    "send": ev.EmailSent,
    "email sent": ev.EmailSent,
    "opened": ev.EmailOpened,
    "open": ev.EmailOpened,
    "email opened": ev.EmailOpened,
}
_NAME_HINTS: Final = (
    ("order", "orders"),
    ("customer", "customers"),
    ("contact", "customers"),
    ("user", "customers"),
    ("email", "emails"),
    ("mail", "emails"),
    ("newsletter", "emails"),
    ("event", "events"),
)
_NUMBER: Final = re.compile(r"[+-]?\d+(\.\d*)?")
_AT: Final = re.compile(r"^(.*) - at `(.*)`$", re.S)


# --- the report ----------------------------------------------------------------------


@dataclass(frozen=True)
class LineError:
    line: int
    """Physical line in the file, 1-based (the CSV header is line 1)."""
    message: str


@dataclass
class ImportReport:
    kind: str
    lines: int
    """Records read (CSV rows without the header, JSON objects)."""
    applied_events: int
    """Events that changed profiles (duplicates not counted)."""
    orders: int
    """Orders among them."""
    skipped_duplicates: int
    """Events already imported before (or twice in this file): counted once."""
    errors: list[LineError]
    seconds: float
    path: str = ""
    kind_reason: str = ""
    """How the kind was chosen: given, from the file name, from the columns."""
    strict: bool = False
    applied: bool = True
    """False when ``--strict`` refused the file because of a bad line."""
    notes: list[str] = field(default_factory=list)

    def exit_code(self) -> int:
        """0 when every line was good, 1 when any was bad (applied or not)."""
        return 1 if self.errors else 0

    def format_report(self, max_errors: int = MAX_ERRORS_SHOWN) -> str:
        name = Path(self.path).name or "input"
        out = [f"{name}: {self.lines:,} lines, kind {self.kind} ({self.kind_reason})"]
        out += [f"{name}: note: {note}" for note in self.notes]
        for error in self.errors[:max_errors]:
            out.append(f"{name}:{error.line}: {error.message}")
        if len(self.errors) > max_errors:
            out.append(f"{name}: ... and {len(self.errors) - max_errors:,} more bad lines")
        bad_lines = len({e.line for e in self.errors})
        if not self.applied:
            out.append(f"--strict: nothing applied: {bad_lines:,} bad line{'s' * (bad_lines != 1)}")
            return "\n".join(out)
        rate = self.orders / self.seconds if self.seconds > 0 else 0.0
        speed = f" ({rate:,.0f} orders/s)" if self.orders else ""
        out.append(
            f"applied {self.applied_events:,} events ({self.orders:,} orders), "
            f"{self.skipped_duplicates:,} duplicates skipped, {bad_lines:,} bad lines, "
            f"{self.seconds:.2f} s{speed}"
        )
        return "\n".join(out)


class ImportFailed(Exception):
    """The file as a whole cannot be imported (unreadable, unknown kind, missing
    columns); nothing was applied."""


# --- the entry point -----------------------------------------------------------------


def import_file(
    path: Path,
    *,
    store: SQLiteStore,
    identity: Identity,
    kind: str | None = None,
    strict: bool = False,
    progress: bool | None = None,
    now: int | None = None,
    chunk: int = CHUNK,
    separate_reader: bool | None = None,
) -> ImportReport:
    """Import *path* into *store*. Raises :class:`ImportFailed` for a file that cannot
    be imported at all; bad lines are in the report instead. Runs on the caller's
    thread (from async code, in an executor). *separate_reader*: read the file in a
    second process (None: when it has ``SEPARATE_READER_BYTES`` or more)."""
    # Hundreds of thousands of long-lived small objects make the cyclic GC rescan
    # them over and over (a third of the time); nothing here makes cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with _interruptible():
            return _import(
                path, store, identity, kind, strict, progress, now, chunk, separate_reader
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
    store: SQLiteStore,
    identity: Identity,
    kind: str | None,
    strict: bool,
    progress: bool | None,
    now: int | None,
    chunk: int,
    separate_reader: bool | None,
) -> ImportReport:
    started = time.perf_counter()
    path = Path(path)
    now = int(time.time()) if now is None else now
    show = sys.stderr.isatty() if progress is None else progress
    if kind is not None and kind not in KINDS:
        raise ImportFailed(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if not path.is_file():
        raise ImportFailed(f"{path}: no such file")
    if store.path == ":memory:":
        raise ImportFailed("bulk import needs an SQLite file, not :memory:")

    size = path.stat().st_size
    separate = size >= SEPARATE_READER_BYTES if separate_reader is None else separate_reader
    bulk = _Bulk(store, identity.email_hash, now)
    try:
        errors: list[LineError] = []
        lines = 0
        reading = _Progress("reading", size, "B", enabled=show)
        try:
            with _reading(path, kind, separate=separate) as (opened, batches):
                for batch in batches:
                    if isinstance(batch, _Restart):  # (nothing is written yet)
                        bulk.close()
                        bulk = _Bulk(store, identity.email_hash, now)
                        errors, lines = [], 0
                        continue
                    lines += batch.lines
                    errors += batch.errors
                    if not (strict and errors):  # --strict with a bad line: only reading on
                        bulk.add(batch.units)
                    reading.add(batch.position - reading.done)
        finally:
            reading.close()
        errors.sort(key=lambda e: e.line)
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

        applying = _Progress("applying", len(bulk.units), "", enabled=show)
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


# --- reading: the file as batches of events and bad lines ------------------------------


class _Unit(msgspec.Struct, array_like=True):
    """One event and the file's lines it came from (an order's item rows: several)."""

    lines: list[int]
    event: ev.Event


class _Opened(msgspec.Struct, tag=True):
    """The file's kind, and why; first from reading."""

    kind: str
    reason: str
    notes: list[str]


class _Batch(msgspec.Struct, tag=True):
    """What the next records held, in file order."""

    units: list[_Unit]
    errors: list[LineError]
    lines: int
    """Records read for this batch."""
    position: int
    """Bytes of the file read so far (for the progress bar)."""


class _Rows(list[list[str]]):
    """CSV rows of consecutive lines, each stripped and one cell per column (a row may
    have no cell filled: one read on its own is skipped)."""


class _Restart(msgspec.Struct, tag=True):
    """Forget the batches so far: the file is read again from the start (an order's
    rows turned out to be apart, see :class:`_Scattered`)."""


class _Done(msgspec.Struct, tag=True):
    """The reading process read the whole file."""


class _Failed(msgspec.Struct, tag=True):
    """The reading process stopped: the file cannot be imported, or a crash."""

    message: str
    whole_file: bool
    """An :class:`ImportFailed` (else a crash: *message* is its traceback)."""


_messages: Final = msgspec.msgpack.Decoder(_Opened | _Batch | _Restart | _Done | _Failed)


def _read(path: Path, kind: str | None, *, early: bool = False) -> tuple[_Opened, Iterator[_Batch]]:
    """Open *path* and choose its kind (raising :class:`ImportFailed` when it cannot be
    imported), then read it batch by batch. *early*: an order of item rows goes out as
    soon as a row of another order follows, not at the end of the file (the batches
    raise :class:`_Scattered` if one of its rows comes later after all)."""
    source = _open_records(path)
    try:
        columns = source.columns
        if kind is not None:
            chosen, reason = kind, "given"
        else:
            chosen, reason = _detect_kind(path, columns)
        _check_columns(chosen, columns, source.is_csv)
    except BaseException:
        source.records.close()
        raise
    if source.is_csv and source.delimiter == ";":
        reason += ", semicolon-separated"
    parser = _PARSERS[chosen](columns)
    if isinstance(parser, _Orders):
        parser.early = early
        if parser.items and source.is_csv:
            parser.read_cells()
    normalise = not source.is_csv and chosen != "events"  # JSON objects as CSV rows
    return _Opened(chosen, reason, parser.notes), _batches(source, parser, normalise)


def _batches(source: _Source, parser: _Parser, normalise: bool) -> Iterator[_Batch]:
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
            record = _normal_record(record)  # type: ignore[arg-type]
        try:
            row(line, record)  # type: ignore[arg-type]
        except _Bad as bad:
            parser.errors.append(LineError(line, bad.message))

    try:
        for line, record in source.records:
            if type(record) is not _Rows:
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
) -> Iterator[tuple[_Opened, Iterator[_Batch | _Restart]]]:
    """The file's kind and its batches, read in this process or in a second one."""
    if not separate:
        opened, batches = _read(path, kind)
        with contextlib.closing(batches):
            yield opened, batches
        return
    # fork: the child starts in ~10 ms with everything imported; it only reads the file
    # and sends bytes (no SQLite connection, no lock the parent's threads share).
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux
        # A batch is ~200 KB and a pipe holds 64 KB: the reader waited at every send
        # until the batch before was applied (0.5 s of 4 for 100,000 orders). With room
        # for a few batches it reads on meanwhile.
        with contextlib.suppress(OSError):  # (above /proc/sys/fs/pipe-max-size)
            fcntl.fcntl(sender.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    reader = context.Process(
        target=_read_for, args=(sender, path, kind), name="edge import: reading", daemon=True
    )
    reader.start()
    sender.close()
    finished = False

    def batches() -> Iterator[_Batch | _Restart]:
        nonlocal finished
        while not isinstance(message := _receive(receiver), _Done):
            if isinstance(message, _Opened):
                raise RuntimeError("edge import: the reader opened the file twice")
            yield message
        finished = True

    try:
        opened = _receive(receiver)
        if not isinstance(opened, _Opened):
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


def _receive(receiver: Connection) -> _Opened | _Batch | _Restart | _Done:
    try:
        data = receiver.recv_bytes()
    except EOFError:
        raise RuntimeError("edge import: the reading process ended before the file did") from None
    message = _messages.decode(data)
    if isinstance(message, _Failed):
        if message.whole_file:
            raise ImportFailed(message.message)
        raise RuntimeError(f"edge import: the reading process failed:\n{message.message}")
    return message


def _read_for(sender: Connection, path: Path, kind: str | None) -> None:
    """The reading process: :func:`_read`'s messages, msgpack-encoded, to the parent.
    Orders go out early; if that turns out wrong, the file is read again."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    encode = msgspec.msgpack.Encoder().encode
    try:
        try:
            opened, batches = _read(path, kind, early=True)
            sender.send_bytes(encode(opened))
            try:
                held: list[_Batch] = []
                for batch in batches:
                    sender.send_bytes(encode(batch))
                    # Sent batches are dropped HELD_BATCHES at a time, not one by one:
                    # freed one by one while the next is made, their objects leave
                    # pymalloc's pools holed, the next batches' objects land scattered
                    # in them, and reading took ~18% longer (100,000 orders: median
                    # 4.0 s against 3.3 s; the same instructions, by cachegrind).
                    held.append(batch)
                    if len(held) >= HELD_BATCHES:
                        held.clear()
            except _Scattered:
                sender.send_bytes(encode(_Restart()))
                for batch in _read(path, kind)[1]:
                    sender.send_bytes(encode(batch))
            end: _Done | _Failed = _Done()
        except ImportFailed as exc:
            end = _Failed(str(exc), whole_file=True)
        except Exception:
            end = _Failed(traceback.format_exc(), whole_file=False)
        sender.send_bytes(encode(end))
    except OSError:
        pass  # the parent stopped listening (it is stopping us)
    finally:
        sender.close()


Record = dict[str, Any]


@dataclass
class _Source:
    columns: list[str]
    """CSV header, or the keys of the first JSON object."""
    records: Generator[tuple[int, Record | list[str] | _Rows | LineError], None, None]
    """JSON objects; CSV rows as their cells (stripped, one per column; several at once
    as :class:`_Rows`, numbered from the given line): see ``record``."""
    is_csv: bool
    position: Callable[[], int]
    """Bytes of the file read so far."""
    delimiter: str = ","
    record: Callable[[list[str]], Record] = dict
    """A CSV row's cells as a record: the named columns that are not empty."""


def _normal_column(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def _open_records(path: Path) -> _Source:
    suffix = path.suffix.lower()
    try:
        with path.open("rb") as f:
            head = f.read(65_536)
    except OSError as exc:
        raise ImportFailed(f"{path}: {exc.strerror or exc}") from None
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if suffix in (".jsonl", ".ndjson") or (suffix != ".csv" and first == b"{"):
        return _jsonl_records(path)
    if suffix == ".json" or first == b"[":
        return _json_array_records(path)
    return _csv_records(path, head)


def _position(f: IO[bytes], size: int) -> Callable[[], int]:
    return lambda: size if f.closed else f.tell()


class _CsvLines:
    """A CSV file's physical lines, as the csv module reads a file opened with
    ``newline=""`` (ended by ``\\n``, ``\\r\\n`` or ``\\r``), decoded a block of bytes at
    a time. Iterating gives one line (for ``csv.reader``: a quoted field may span
    lines); :meth:`peek` and :meth:`skip` hand out the rest of the block at once, for
    rows parsed in bulk. ``consumed``: lines handed out so far."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._lines: list[str] = []
        self._at = 0
        self._rest = b""
        self._started = False
        self._bad: UnicodeDecodeError | None = None
        self.consumed = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        if self._at == len(self._lines) and not self._fill():
            raise StopIteration
        line = self._lines[self._at]
        self._at += 1
        self.consumed += 1
        return line

    def peek(self, most: int) -> list[str]:
        """Up to *most* of the next lines, from the current block only ([]: no more)."""
        if self._at == len(self._lines) and not self._fill():
            return []
        return self._lines[self._at : self._at + most]

    def skip(self, n: int) -> None:
        self._at += n
        self.consumed += n

    def _fill(self) -> bool:
        """The next block of lines; False at the end (raises UnicodeDecodeError where the
        file stops being UTF-8, once the lines before it are handed out)."""
        while self._bad is None:
            data = self._f.read(_BLOCK_BYTES)
            data, eof = self._rest + data, not data
            if not self._started and (len(data) >= 3 or eof):
                data = data.removeprefix(b"\xef\xbb\xbf")
                self._started = True
            # After the last line end; a "\r" as the last byte may be half a "\r\n".
            # (Cutting at "\n" alone read a file with bare "\r" ends, as old Macs
            # and Excel's "CSV (Macintosh)" write them, into memory whole.)
            cut = (
                len(data)
                if eof
                else max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
            )
            if not cut:
                if eof:
                    break
                self._rest = data  # no line ends yet: read on
                continue
            data, self._rest = data[:cut], data[cut:]
            try:
                text = data.decode()
            except UnicodeDecodeError as exc:
                self._bad = exc
                text = data[: exc.start].decode()
            lines = io.StringIO(text, newline="").readlines()
            if self._bad is not None and lines and not lines[-1].endswith(("\n", "\r")):
                lines.pop()  # the start of the line that is not UTF-8
            self._lines, self._at = lines, 0
            if lines:
                return True
        if self._bad is not None:
            bad, self._bad = self._bad, None
            self._lines, self._at = [], 0
            raise bad
        return False


_BLANKS: Final = " \t\x0b\x0c\x1c\x1d\x1e\x1f"
"""The ASCII characters str.strip() removes, besides line ends."""


def _padded(text: str, delimiter: str) -> bool:
    """Whether a cell of these CSV lines (without quotes) may have blanks around it
    (a few scans of the text: a regular expression took a second for 19 MB)."""
    if not text.isascii():
        return True  # (to be sure: many other characters are blanks too)
    for blank in _BLANKS:
        if blank in text and (
            text.startswith(blank)
            or text.endswith(blank)
            or any(
                pair in text
                for pair in (blank + delimiter, delimiter + blank, blank + "\n", blank + "\r")
            )
            or any(pair in text for pair in ("\n" + blank, "\r" + blank))
        ):
            return True
    return False


def _split_rows(lines: list[str], text: str, delimiter: str, width: int) -> list[list[str]]:
    """CSV *lines* without a quote (*text*: the lines joined) as rows of cells, as
    ``csv.reader`` gives them (raising its ``csv.Error`` where it would). Without
    quotes a row is its line cut at the delimiter: ``str.split`` does that five times
    as fast as the csv module's parser, which looks at every character."""
    limit = csv.field_size_limit()
    if width < 2 or (len(text) > limit and max(map(len, lines)) > limit):
        return list(csv.reader(lines, delimiter=delimiter))  # (blank lines; huge fields)
    rows = [line.rstrip("\r\n").split(delimiter) for line in lines]
    if [""] in rows:  # a blank line: the csv module gives no cell at all
        rows = [[] if row == [""] else row for row in rows]
    return rows


def _csv_records(path: Path, head: bytes) -> _Source:
    sample = head.decode("utf-8-sig", errors="replace")
    header_line = sample.splitlines()[0] if sample.strip() else ""
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;").delimiter
    except csv.Error:
        delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    if delimiter not in header_line and (";" if delimiter == "," else ",") in header_line:
        delimiter = ";" if delimiter == "," else ","
    f = path.open("rb")
    lines = _CsvLines(f)
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                header = [_normal_column(c) for c in row]
                break
    except (csv.Error, UnicodeDecodeError) as exc:
        f.close()
        raise ImportFailed(f"{path}: cannot read the header: {exc}") from None
    if not header:
        f.close()
        raise ImportFailed(f"{path}: empty file, no header row")
    named = [c for c in header if c]
    if len(set(named)) != len(named):
        dupes = sorted({c for c in named if named.count(c) > 1})
        f.close()
        raise ImportFailed(f"{path}: the header repeats columns: {', '.join(dupes)}")

    unnamed = "" in header
    width = len(header)

    def record(cells: list[str]) -> Record:
        found = dict(zip(compress(header, cells), filter(None, cells)))  # noqa: B905
        if unnamed:
            found.pop("", None)
        return found

    def fit(line: int, row: list[str]) -> list[str] | LineError | None:
        """A row's cells, stripped, one per column (None: a blank row)."""
        cells = list(map(str.strip, row))
        if not any(cells):
            return None
        if len(cells) > width:
            if "".join(cells[width:]):
                return LineError(line, f"{len(row)} fields, the header has {width}")
            del cells[width:]
        elif len(cells) < width:
            cells += [""] * (width - len(cells))
        return cells

    def records() -> Generator[tuple[int, list[str] | _Rows | LineError], None, None]:
        # Lines without a quote are rows by themselves: parsed a block at a time, and
        # given out as one _Rows when they fit the header as they are. A line with a
        # quote is read by the reader on its own (its field may go on for lines).
        try:
            while True:
                try:
                    block = lines.peek(BATCH)
                except UnicodeDecodeError as exc:
                    line = lines.consumed + 1
                    yield line, LineError(line, f"not UTF-8: {exc.reason}")
                    return
                if not block:
                    return
                quoted = next((n for n, text in enumerate(block) if '"' in text), None)
                if quoted is not None:
                    del block[quoted:]
                slow = 1
                if block:
                    first = lines.consumed + 1
                    text = "".join(block)
                    try:
                        rows = _split_rows(block, text, delimiter, width)
                    except csv.Error:  # (a field over the size limit, say): row by row
                        slow = len(block)
                    else:
                        lines.skip(len(block))
                        if _padded(text, delimiter):
                            rows = [list(map(str.strip, row)) for row in rows]
                        if all(map(width.__eq__, map(len, rows))):
                            yield first, _Rows(rows)
                        else:
                            for line, row in enumerate(rows, first):
                                if (cells := fit(line, row)) is not None:
                                    yield line, cells
                        continue
                until = lines.consumed + slow
                while lines.consumed < until:  # through the reader, then blocks again
                    line = lines.consumed + 1
                    try:
                        row = next(reader)
                    except StopIteration:
                        return
                    except csv.Error as exc:
                        yield line, LineError(line, f"cannot parse the CSV line: {exc}")
                        continue
                    except UnicodeDecodeError as exc:
                        yield line, LineError(line, f"not UTF-8: {exc.reason}")
                        return
                    if (cells := fit(line, row)) is not None:
                        yield line, cells
        finally:
            f.close()

    return _Source(
        header,
        records(),
        is_csv=True,
        position=_position(f, path.stat().st_size),
        delimiter=delimiter,
        record=record,
    )


def _jsonl_records(path: Path) -> _Source:
    f = path.open("rb")
    numbered = enumerate(f, start=1)
    first: list[tuple[int, bytes]] = []
    columns: list[str] = []
    for number, raw in numbered:
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        first.append((number, raw))
        if raw.strip():
            try:
                obj = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                obj = None
            if isinstance(obj, dict):
                columns = list(obj)
            break

    def records() -> Generator[tuple[int, Record | list[str] | LineError], None, None]:
        try:
            for number, raw in [*first, *numbered]:
                if not raw.strip():
                    continue
                try:
                    obj = msgspec.json.decode(raw)
                except msgspec.DecodeError as exc:
                    yield number, LineError(number, f"invalid JSON: {exc}")
                    continue
                if not isinstance(obj, dict):
                    yield number, LineError(number, "expected a JSON object")
                    continue
                yield number, obj
        finally:
            f.close()

    return _Source(columns, records(), is_csv=False, position=_position(f, path.stat().st_size))


def _json_array_records(path: Path) -> _Source:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed(f"{path}: {exc}") from None
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\r\n]*")
    pos = ws.match(text).end()  # type: ignore[union-attr]
    if text[pos : pos + 1] != "[":
        raise ImportFailed(f"{path}: expected a JSON array of objects")
    pos += 1
    items: list[tuple[int, Record | list[str] | LineError]] = []
    line, counted = 1, 0
    while True:
        pos = ws.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] == "]":
            break
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ImportFailed(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        items.append(
            (line, obj if isinstance(obj, dict) else LineError(line, "expected an object"))
        )
        pos = ws.match(text, end).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] == ",":
            pos += 1
        elif text[pos : pos + 1] != "]":
            where = line + text.count("\n", counted, pos)
            raise ImportFailed(f"{path}:{where}: invalid JSON: expected ',' or ']'")
    columns = list(next((r for _, r in items if isinstance(r, dict)), {}))
    size = path.stat().st_size
    return _Source(columns, (item for item in items), is_csv=False, position=lambda: size)


# --- kinds ---------------------------------------------------------------------------


def _detect_kind(path: Path, columns: Sequence[str]) -> tuple[str, str]:
    cols = {_normal_column(c) for c in columns}
    by_columns = _kind_from_columns(cols)
    stem = path.name.lower()
    for hint, kind in _NAME_HINTS:
        if hint in stem and (not cols or _fits(kind, cols)):
            return kind, "from the file name"
    if by_columns:
        return by_columns, "from the columns"
    raise ImportFailed(
        f"{path.name}: cannot tell whether this is orders, customers, emails or events "
        f"(columns: {', '.join(columns) or 'none'}); pass --kind"
    )


def _kind_from_columns(cols: set[str]) -> str | None:
    if "event" in cols:
        return "events"
    if "order_id" in cols:
        return "orders"
    if "type" in cols and cols & {"ts", "date"}:
        return "emails"
    if cols & {"user_id", "email"}:
        return "customers"
    return None


def _fits(kind: str, cols: set[str]) -> bool:
    return {
        "orders": "order_id" in cols,
        "customers": bool(cols & {"user_id", "email"}) and "order_id" not in cols,
        "emails": "type" in cols,
        "events": "event" in cols,
    }[kind]


def _check_columns(kind: str, columns: Sequence[str], is_csv: bool) -> None:
    if kind == "events":
        if is_csv:
            raise ImportFailed("events are imported from JSON Lines (.jsonl), not CSV")
        return
    if not is_csv:
        return  # JSON objects may differ per line: checked per line
    cols = set(columns)
    missing: list[str] = []
    if not cols & {"user_id", "email", "anonymous_id"}:
        missing.append("user_id|email" + ("" if kind == "customers" else "|anonymous_id"))
    if kind == "customers" and not cols & {"user_id", "email"}:
        missing[-1:] = ["user_id|email"]
    if kind in ("orders", "emails") and not cols & {"ts", "date"}:
        missing.append("ts|date")
    if kind == "orders":
        if "order_id" not in cols:
            missing.append("order_id")
        if "total" not in cols and "product_id" not in cols:
            missing.append("total")
    if kind == "emails" and "type" not in cols:
        missing.append("type")
    if missing:
        raise ImportFailed(f"{kind}: missing columns: {', '.join(dict.fromkeys(missing))}")


class _Scattered(Exception):
    """An order closed early has another row after all (:func:`_read`)."""


class _Bad(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _explain(message: str, data: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """msgspec's words, with the column's name and the offending value."""
    match = _AT.match(message)
    if match is None:
        missing = re.match(r"Object missing required field `(.+)`", message)
        if missing:
            name = missing.group(1)
            return f"{names.get(name, name)}: missing"
        unknown = re.match(r"Object contains unknown field `(.+)`", message)
        if unknown:
            return f"{unknown.group(1)}: unknown field"
        return message.replace("`", "")
    text, where = match.groups()
    text = text.replace("`", "")
    if where.startswith("key` in `"):
        where = where.removeprefix("key` in `")
        text = f"key {text[0].lower()}{text[1:]}"
    path = where.removeprefix("$").removeprefix(".")
    top = re.match(r"\w+", path)
    name = top.group(0) if top else path
    if top and path == name and name in data:
        value = data[name]
        shown = _show(value)
        if ", got " in text:
            text = re.sub(r", got \w+$", f", got {shown}", text)
        elif text.startswith("Expected"):
            text += f", got {shown}"
    label = names.get(name, name) + path[len(name) :] if top else path or "value"
    if label.startswith("traits[...]") or label.startswith("traits."):
        label = "trait" + label.removeprefix("traits")
    return f"{label}: {text}"


def _convert(
    data: Mapping[str, Any], type_: type[_T], names: Mapping[str, str], *, strict: bool = False
) -> _T:
    try:
        return msgspec.convert(data, type_, strict=strict)
    except msgspec.ValidationError as exc:
        raise _Bad(_explain(str(exc), data, names)) from None


def _parse_ts(value: Any, name: str) -> int:
    if isinstance(value, str):  # (the common case first)
        text = value.strip()
        if text[4:5] != "-" and _NUMBER.fullmatch(text):  # (not a date: YYYY-...)
            return int(float(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return int(moment.timestamp())
    elif isinstance(value, bool):
        raise _Bad(f"{name}: expected an ISO 8601 date or datetime or unix seconds, got {value}")
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and math.isfinite(value):
        return int(value)
    raise _Bad(f"{name}: expected an ISO 8601 date or datetime or unix seconds, got {_show(value)}")


def _normal_record(record: Record) -> Record:
    """JSON objects as CSV rows: normalised keys, stripped strings, no empty values."""
    out: Record = {}
    for key, value in record.items():
        if value is None:
            continue
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        out[_normal_column(str(key))] = value
    return out


def _derive_id(kind: str, event: ev.BaseEvent) -> str:
    """A stable id for a row without one: same content, same id, counted once."""
    if event.email:
        event = msgspec.structs.replace(event, email=event.email.strip().lower())
    digest = hashlib.sha256(kind.encode() + b"\0" + msgspec.json.encode(event)).hexdigest()
    return f"import:{digest[:40]}"


class _Parser:
    """Records of one kind into units (in file order) and bad lines."""

    kind: str
    reads_cells = False
    """CSV rows go to :meth:`row` as their cells rather than as records."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = [_normal_column(c) for c in columns]
        self.notes: list[str] = []
        self.ready: list[_Unit] = []
        """Units complete, in file order, not yet in a batch."""
        self.errors: list[LineError] = []
        """Bad lines not yet in a batch."""
        self._ts_cache: dict[Any, int] = {}

    def row(self, line: int, record: Record) -> None:
        """Read one record: its unit goes to ``ready`` (possibly later, with the rest of
        its order); raises :class:`_Bad` when the record itself is bad."""
        raise NotImplementedError

    def rows(self, line: int, rows: list[list[str]]) -> bool:
        """Read CSV *rows* (of lines *line*, *line* + 1...) in one go if they are all
        good as far as this can tell at once; False (nothing read): row by row."""
        return False

    def finish(self) -> None:
        """The file is read: everything still held back goes out."""

    def batch(self, lines: int, position: int) -> _Batch:
        batch = _Batch(self.ready, self.errors, lines, position)
        self.ready = []
        self.errors = []
        return batch

    def ts(self, record: Record, *, required: bool) -> tuple[int | None, str]:
        name = "ts" if "ts" in record else "date"
        value = record.get(name)
        if value is None:
            if required:
                raise _Bad("ts: missing (a ts or date column is needed)")
            return None, name
        return self.timestamp(value, name), name

    def timestamp(self, value: Any, name: str) -> int:
        """:func:`_parse_ts`, remembered (exports repeat their dates)."""
        try:
            found = self._ts_cache.get(value)
        except TypeError:  # not hashable
            return _parse_ts(value, name)
        if found is None:
            found = _parse_ts(value, name)
            if len(self._ts_cache) < 1_000_000 and isinstance(value, str | int):
                self._ts_cache[value] = found
        return found

    @staticmethod
    def subject(record: Record) -> dict[str, Any]:
        found = {k: record[k] for k in _SUBJECT if k in record}
        if not found:
            raise _Bad("needs a user_id, email or anonymous_id")
        return found

    def ignore_others(self, known: frozenset[str]) -> None:
        extra = [c for c in self.columns if c and c not in known and c != "date"]
        if extra:
            self.notes.append(f"columns ignored: {', '.join(extra)}")


_HEAD_FIELDS: Final = ("order_id", *_SUBJECT, "ts", "date", "total", "coupon")
_MISSING: Final = (None, "")
"""What a missing column reads as: None from a record, "" from a CSV row's cells."""


def _record_maker(names: Sequence[str]) -> Callable[[Sequence[str]], Record]:
    """cells -> {name: cell, ...}, by a dict display: three times as fast as
    ``dict(zip(names, cells))`` (a record per imported item)."""
    if not set(names) <= set(_PRODUCT_FIELDS):
        raise ValueError(f"not product fields: {names}")  # (only ours go into the code)
    body = ", ".join(f"{name!r}: cells[{n}]" for n, name in enumerate(names))
    return eval(f"lambda cells: {{{body}}}")  # type: ignore[no-any-return]


def _head_record(head: tuple[Any, ...]) -> Record:
    """An item row's order columns (as in :data:`_HEAD_FIELDS`) as a record again."""
    return {
        name: value for name, value in zip(_HEAD_FIELDS, head, strict=True) if value not in _MISSING
    }


class _OrderGroup:
    """One order: its item rows as read, until the last one is in."""

    __slots__ = ("bad", "closed", "good", "heads", "items", "lines", "order_id", "unit")

    def __init__(self, order_id: Any) -> None:
        self.order_id = order_id
        self.lines: list[int] = []
        """Every row of the order."""
        self.good: list[int] = []
        """The rows naming a customer, with their order columns (:data:`_HEAD_FIELDS`,
        None where missing) and product columns."""
        self.heads: list[tuple[Any, ...]] = []
        self.items: list[Record | tuple[str, ...]] = []
        self.bad: dict[int, str] = {}
        """Row -> what is wrong with it."""
        self.closed = False
        self.unit: _Unit | None = None
        """Once closed: the order's event, or None when it has bad lines."""


class _Orders(_Parser):
    kind = "orders"

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__(columns)
        self.ignore_others(_ORDER_FIELDS | {"event"})
        self.items = "product_id" in self.columns
        self.groups: dict[Any, _OrderGroup] = {}
        """Orders whose rows may still come, by order id."""
        self.queue: deque[_OrderGroup] = deque()
        """Orders not yet out, in file order (of their first row): each waits for the
        ones before it, so units go out sorted by their first line."""
        self.early = False
        """Close an order when a row of another one follows (see :func:`_read`)."""
        self.closed_early: set[Any] = set()
        self._last: _OrderGroup | None = None
        """The order of the last item row."""

    def read_cells(self) -> None:
        """A CSV of item rows: each row's cells are read by column, no record made (an
        eighth of the reading time)."""
        columns = self.columns
        after = len(columns)  # the None appended to a row's cells: a column not there
        self._head_cells = itemgetter(
            *(columns.index(f) if f in columns else after for f in _HEAD_FIELDS)
        )
        self._product_names = [f for f in _PRODUCT_FIELDS if f in columns]
        self._product_record = _record_maker(self._product_names)
        at = [columns.index(f) for f in self._product_names]
        self._product_cells: Callable[[list[Any]], tuple[str, ...]] = (
            itemgetter(*at) if len(at) > 1 else lambda cells: (cells[at[0]],)
        )
        self._order_cell = itemgetter(columns.index("order_id"))
        subject = [columns.index(f) for f in _SUBJECT if f in columns]
        self._subject_cells = itemgetter(*subject)
        self._nobody: Any = ("",) * len(subject) if len(subject) > 1 else ""
        self.reads_cells = True
        self.row = self._item_cells  # type: ignore[method-assign]
        self.rows = self._item_rows  # type: ignore[method-assign]

    def head(self, values: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, str]]:
        """An order's own columns (:data:`_HEAD_FIELDS`, None or "" where missing)
        checked and named as OrderCompleted has them, and which column the time came
        from."""
        order_id, user_id, email, anonymous_id, ts, date, total, coupon = values
        data: dict[str, Any] = {}
        if user_id not in _MISSING:
            data["user_id"] = user_id
        if email not in _MISSING:
            data["email"] = email
        if anonymous_id not in _MISSING:
            data["anonymous_id"] = anonymous_id
        if not data:
            raise _Bad("needs a user_id, email or anonymous_id")
        name, value = ("ts", ts) if ts not in _MISSING else ("date", date)
        if value in _MISSING:
            raise _Bad("ts: missing (a ts or date column is needed)")
        data["ts"] = self.timestamp(value, name)
        if order_id not in _MISSING:
            data["order_id"] = order_id
        if total not in _MISSING:
            data["total"] = total
        if coupon not in _MISSING:
            data["coupon"] = coupon
        return data, {"ts": name}

    def row(self, line: int, record: Record) -> None:
        if not (self.items or "product_id" in record):  # JSON: item rows per line
            data, names = self.head(tuple(map(record.get, _HEAD_FIELDS)))
            products = record.get("products")
            if isinstance(products, str):
                try:
                    products = msgspec.json.decode(products)
                except msgspec.DecodeError as exc:
                    raise _Bad(f"products: invalid JSON: {exc}") from None
            if products is not None:
                data["products"] = products
            unit = _Unit([line], _convert(data, ev.OrderCompleted, names))
            if self.early and self._last is not None and not self._last.closed:
                self._close_early(self._last)
            if self.queue:
                group = _OrderGroup(None)
                group.closed, group.unit = True, unit
                self.queue.append(group)
            else:
                self.ready.append(unit)
            return
        head = tuple(map(record.get, _HEAD_FIELDS))
        if head[0] is None:
            raise _Bad("order_id: missing")
        self._item(
            line,
            head,
            head[1] is not None or head[2] is not None or head[3] is not None,
            {k: record[k] for k in _PRODUCT_FIELDS if k in record},
        )

    def _item_cells(self, line: int, cells: list[Any]) -> None:
        """:meth:`row` for a CSV row of an item, by its cells ("" where empty)."""
        cells.append(None)
        head = self._head_cells(cells)
        if not head[0]:
            raise _Bad("order_id: missing")
        # The product columns are kept as cells: made records in one go when the order
        # is complete (:meth:`_records`).
        self._item(line, head, bool(head[1] or head[2] or head[3]), self._product_cells(cells))

    def _item_rows(self, first: int, rows: list[list[Any]]) -> bool:
        """:meth:`rows` for item rows: each order's run of rows as :meth:`_item` would
        take them one by one (all of them with an order id and a customer)."""
        ids = list(map(self._order_cell, rows))
        if "" in ids or self._nobody in map(self._subject_cells, rows):
            return False
        for cells in rows:
            cells.append(None)  # (see read_cells)
        heads = list(map(self._head_cells, rows))
        items = list(map(self._product_cells, rows))
        starts = [0, *compress(range(1, len(ids)), map(ne, islice(ids, 1, None), ids)), len(ids)]
        runs = list(pairwise(starts))

        def gather(start: int, end: int) -> None:
            self._items(range(first + start, first + end), heads[start:end], items[start:end])

        if not self.early or len(runs) < 3:
            for start, end in runs:
                gather(start, end)
            return True
        # Reading early, every run but the first (it may go on an order of the rows
        # before) and the last (the next rows may go on it) is a whole order, made at
        # once: no group gathered, queued and closed (a tenth of reading).
        first_run, *middle, last_run = runs
        gather(*first_run)
        self._close_early(self._last)  # type: ignore[arg-type]  # (another order follows)
        for start, end in middle:
            order_id = ids[start]
            if not (self.queue or order_id in self.closed_early or order_id in self.groups):
                lines = list(range(first + start, first + end))
                unit = self._whole_order(lines, heads[start:end], items[start:end])
                if unit is not None:
                    self.closed_early.add(order_id)
                    self.ready.append(unit)
                    continue
            gather(start, end)  # the whole story
            self._close_early(self._last)  # type: ignore[arg-type]
        gather(*last_run)
        return True

    def _group(self, order_id: Any) -> _OrderGroup:
        """The rows gathered so far for *order_id* (a new group at its first row), made
        the last one seen."""
        group = self.groups.get(order_id)
        if group is None:
            if order_id in self.closed_early:
                raise _Scattered(order_id)
            if self.early and self._last is not None and not self._last.closed:
                self._close_early(self._last)
            group = self.groups[order_id] = _OrderGroup(order_id)
            self.queue.append(group)
        self._last = group
        return group

    def _items(
        self, lines: range, heads: list[tuple[Any, ...]], items: list[tuple[str, ...]]
    ) -> None:
        """:meth:`_item` for consecutive rows of one order, all naming a customer."""
        group = self._group(heads[0][0])
        group.lines += lines
        group.good += lines
        group.heads += heads
        group.items += items

    def _item(
        self, line: int, head: tuple[Any, ...], named: bool, item: Record | tuple[str, ...]
    ) -> None:
        """One row per item: the order's rows may be anywhere in the file; its own
        columns (*head*) and products are checked once it is complete. *named*: the
        row names a customer."""
        group = self._group(head[0])
        group.lines.append(line)
        if named:
            group.good.append(line)
            group.heads.append(head)
            group.items.append(item)
        else:
            group.bad[line] = "needs a user_id, email or anonymous_id"

    def _close_early(self, group: _OrderGroup) -> None:
        self.closed_early.add(group.order_id)
        self._close(group)

    def finish(self) -> None:
        for group in list(self.groups.values()):
            self._close(group)

    def _close(self, group: _OrderGroup) -> None:
        del self.groups[group.order_id]
        group.closed = True
        group.unit = self._order(group)
        queue = self.queue
        while queue and queue[0].closed:
            unit = queue.popleft().unit
            if unit is not None:
                self.ready.append(unit)

    def _order(self, group: _OrderGroup) -> _Unit | None:
        """The order's event, or None with every one of its lines reported."""
        if not group.bad and (unit := self._good_order(group)) is not None:
            return unit
        products = self._products(group)
        if group.bad:
            bad = ", ".join(map(str, sorted(group.bad)))
            for line in group.lines:
                self.errors.append(
                    LineError(line, group.bad[line])
                    if line in group.bad
                    else LineError(
                        line, f"order {group.order_id}: not applied, line {bad} of it is bad"
                    )
                )
            return None
        try:
            data, names = self._agreed(group)
            data["products"] = products
            if "total" not in data:
                data["total"] = round(sum(p.price * p.quantity for p in products), 2)
            event = _convert(data, ev.OrderCompleted, names)
        except _Bad as bad:
            self.errors += [LineError(line, bad.message) for line in group.lines]
            return None
        return _Unit(group.lines, event)

    def _good_order(self, group: _OrderGroup) -> _Unit | None:
        """The common case in one conversion: rows that agree, a total, every value
        good. None when anything is off: :meth:`_order` then finds out what."""
        return self._whole_order(group.lines, group.heads, group.items)

    def _whole_order(
        self, lines: list[int], heads: list[tuple[Any, ...]], items: list[Record | tuple[str, ...]]
    ) -> _Unit | None:
        """:meth:`_good_order` for the rows of an order, each naming a customer."""
        first = heads[0]
        if heads.count(first) != len(heads):
            return None
        try:
            data, _ = self.head(first)
        except _Bad:
            return None
        if "total" not in data:
            return None
        data["products"] = self._records(items)
        try:
            return _Unit(lines, msgspec.convert(data, ev.OrderCompleted, strict=False))
        except msgspec.ValidationError:
            return None

    def _records(self, items: list[Record | tuple[str, ...]]) -> list[Record]:
        """An order's product columns as records (a CSV's are kept as cells)."""
        if not items or isinstance(items[0], dict):
            return items  # type: ignore[return-value]
        names = self._product_names
        if "" in chain.from_iterable(items):  # empty cells: left out
            return [dict(zip(compress(names, cells), filter(None, cells))) for cells in items]  # type: ignore[arg-type]  # noqa: B905
        return list(map(self._product_record, items))  # type: ignore[arg-type]

    def _products(self, group: _OrderGroup) -> list[ev.Product]:
        """The order's products; a bad one's row goes to ``group.bad``."""
        products = []
        for line, item in zip(group.good, self._records(group.items), strict=True):
            try:
                products.append(_convert(item, ev.Product, {}))
            except _Bad as bad:
                group.bad[line] = bad.message
        return products

    def _agreed(self, group: _OrderGroup) -> tuple[dict[str, Any], dict[str, str]]:
        """The order's columns, which all its rows must agree on."""
        first = group.heads[0]
        if group.heads.count(first) == len(group.heads):
            return self.head(first)
        parsed: list[dict[str, Any]] = []
        for head in group.heads:
            try:
                parsed.append(self.head(head)[0])
            except _Bad:
                parsed.append(_head_record(head))
        problems = [
            name
            for name in ("user_id", "email", "anonymous_id", "ts", "total", "coupon")
            if any(data.get(name) != parsed[0].get(name) for data in parsed)
        ]
        if not problems:
            return self.head(first)
        raise _Bad(
            f"order {group.order_id}: its rows (lines {', '.join(map(str, group.lines))}) "
            f"disagree on {', '.join(problems)}"
        )


class _Customers(_Parser):
    kind = "customers"
    _numeric: Final = {"birth_year": int, "latitude": float, "longitude": float}

    def row(self, line: int, record: Record) -> None:
        data: dict[str, Any] = {k: record[k] for k in _SUBJECT if k in record}
        if not data.keys() & {"user_id", "email"}:
            raise _Bad("needs a user_id or email")
        names: dict[str, str] = {}
        if "ts" in record:
            data["ts"], names["ts"] = self.ts(record, required=False)
        if "event_id" in record:
            data["event_id"] = record["event_id"]
        traits: dict[str, Any] = {}
        for key, value in record.items():
            if key in _SUBJECT or key in ("ts", "event_id"):
                continue
            if key == "registered":
                value = _parse_ts(value, key)
            elif key in self._numeric:
                value = self._number(key, value)
            traits[key] = value
        data["traits"] = traits
        event = _convert(data, ev.Identify, names)
        try:  # a value the profile would refuse is this line's error, not the batch's
            ev.apply(new_profile("check", 0), event, 0, ev.Source.SHOP)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        if event.event_id is None:
            event.event_id = _derive_id(self.kind, event)
        self.ready.append(_Unit([line], event))

    def _number(self, key: str, value: Any) -> float | int:
        wanted = self._numeric[key]
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number) or (wanted is int and not number.is_integer()):
                raise ValueError
        except (TypeError, ValueError):
            raise _Bad(f"{key}: Expected {wanted.__name__}, got {_show(value)}") from None
        return int(number) if wanted is int else number


class _Emails(_Parser):
    kind = "emails"

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__(columns)
        self.ignore_others(_EMAIL_FIELDS | {"event"})

    def row(self, line: int, record: Record) -> None:
        data = self.subject(record)
        kind = record.get("type")
        type_ = _EMAIL_TYPES.get(kind.strip().lower()) if isinstance(kind, str) else None
        if type_ is None:
            raise _Bad(f'type: expected "sent" or "opened", got {_show(kind)}')
        data["ts"], ts_name = self.ts(record, required=True)
        for name in ("campaign", "event_id"):
            if name in record:
                data[name] = record[name]
        event = _convert(data, type_, {"ts": ts_name})
        if event.event_id is None:
            event.event_id = _derive_id(self.kind, event)
        self.ready.append(_Unit([line], event))


class _Events(_Parser):
    kind = "events"

    def row(self, line: int, record: Record) -> None:
        event: ev.BaseEvent = _convert(record, ev.Event, {}, strict=True)  # type: ignore[arg-type]
        if not (event.user_id or event.email or event.anonymous_id):
            raise _Bad("needs a user_id, email or anonymous_id (shop events name their subject)")
        if isinstance(event, ev.Identify):
            try:
                ev.apply(new_profile("check", 0), event, 0, ev.Source.SHOP)
            except ValueError as exc:
                raise _Bad(str(exc)) from None
        if event.event_id is None and not isinstance(event, ev.OrderCompleted):
            event.event_id = _derive_id(self.kind, event)
        self.ready.append(_Unit([line], event))


_PARSERS: Final[dict[str, type[_Parser]]] = {
    "orders": _Orders,
    "customers": _Customers,
    "emails": _Emails,
    "events": _Events,
}


# --- applying in bulk ----------------------------------------------------------------
#
# The two functions below are ProfileService's rules for one shop event, written as
# pure functions over a dict of profiles (see the refactor note in the reply / TODO:
# move them into edge/profiles/service.py and have _record_shop_event use them).


def shop_event_keys(
    event: ev.BaseEvent, email_hash: str, resolve: Callable[[str], str | None]
) -> tuple[str, list[str], list[str]]:
    """(key, absorb, extra_aliases) for a shop event: which profile it changes, which
    profiles merge into that one, and which aliases point at it afterwards. The same
    rules as ``ProfileService._record_shop_event``."""
    email_alias = email_key(email_hash) if email_hash else None
    if event.user_id:
        key = customer_key(event.user_id)
    elif email_alias:
        key = resolve(email_alias) or email_alias
    elif event.anonymous_id:
        key = resolve(event.anonymous_id) or event.anonymous_id
    else:
        raise ValueError("each shop event needs user_id, email or anonymous_id")
    absorb: list[str] = []
    for alias in (event.anonymous_id, email_alias):
        if alias:
            other = resolve(alias) or alias
            if other != key and other not in absorb:
                absorb.append(other)
    extra = [a for a in (event.anonymous_id, email_alias) if a]
    return key, absorb, extra


def apply_shop_event(
    profiles: Profiles,
    key: str,
    absorb: Sequence[str],
    event: ev.BaseEvent,
    *,
    now: int,
    duplicate: bool,
    email_hash: str,
    extra_aliases: Sequence[str],
) -> tuple[Profile, list[str]]:
    """Apply one shop event to *profiles* in place (the mutation of
    ``ProfileService._apply`` for one event): merge the absorbed profiles, apply the
    event unless it is a *duplicate*, record customer id, email hash and aliases.
    Returns the profile and the keys that were merged away (now None)."""
    profile = profiles.get(key) or new_profile(key, now)
    merged: list[str] = []
    for other_key in absorb:
        other = profiles.get(other_key)
        if other is not None:
            ev.merge(profile, other)
            profiles[other_key] = None
            merged.append(other_key)
    if not duplicate:
        ev.apply(profile, event, now, ev.Source.SHOP)
    if event.user_id:
        profile.customer_id = event.user_id
    if email_hash:
        profile.email_hash = email_hash
    profile.aliases = sorted(set(profile.aliases) | {a for a in extra_aliases if a != key})
    profiles[key] = profile
    return profile, merged


def _claim(event: ev.BaseEvent) -> str:
    """As ``edge.profiles.service._claim``."""
    if isinstance(event, ev.OrderCompleted):
        return f"order:{event.order_id}"
    if event.event_id:
        return f"event:{event.event_id}"
    return ""


class _Changes:
    """Shop events applied in file order to the profiles they touch, with the keys,
    stitching and claim rules of ProfileService. Each profile, alias and claim is read
    once, through *store*, and kept as read (to check it later); the profiles change in
    memory, and which ones changed is kept (to write them)."""

    def __init__(
        self, now: int, email_hash: Callable[[ev.BaseEvent], str], store: BulkSession
    ) -> None:
        self.now = now
        self.email_hash = email_hash
        self._store = store
        self.profiles: Profiles = {}
        self.blobs: dict[str, bytes | None] = {}
        """Each profile as read (None: not stored)."""
        self.stored_aliases: dict[str, str | None] = {}
        """Each alias as read: the key it pointed at."""
        self.stored_claims: dict[str, bool] = {}
        """Each claim as read: whether it had been recorded before."""
        self.overlay: dict[str, str | None] = {}
        """Aliases these events moved (or removed)."""
        self.fresh: set[str] = set()
        """Claims first applied here."""
        self.touched: dict[str, None] = {}
        self.deleted: dict[str, None] = {}
        self.duplicates = bytearray()
        """Per event applied, in order: 1 when it had been applied before (skipped)."""
        self.applied = 0
        self.orders = 0
        self.skipped = 0

    def resolve(self, alias: str) -> str | None:
        if alias in self.overlay:
            return self.overlay[alias]
        return self.stored_aliases.get(alias)

    def load(self, units: Sequence[_Unit]) -> None:
        """Read what *units* need that was not read yet: the aliases they name, every
        profile they may change or absorb (a superset of what shop_event_keys returns,
        resolved the same way), and their claims."""
        email_hash = self.email_hash
        aliases: dict[str, None] = {}
        claims: dict[str, None] = {}
        for unit in units:
            event = unit.event
            if event.email:
                aliases[email_key(email_hash(event))] = None
            if event.anonymous_id:
                aliases[event.anonymous_id] = None
            if claim := _claim(event):
                claims[claim] = None
        if wanted := [a for a in aliases if a not in self.stored_aliases]:
            found = self._store.aliases(wanted)
            for alias in wanted:
                self.stored_aliases[alias] = found.get(alias)
        if wanted := [c for c in claims if c not in self.stored_claims]:
            recorded = self._store.claims(wanted)
            for claim in wanted:
                self.stored_claims[claim] = claim in recorded
        keys: dict[str, None] = {}
        resolve = self.resolve
        for unit in units:
            event = unit.event
            if event.user_id:
                keys[customer_key(event.user_id)] = None
            if event.email:
                alias = email_key(email_hash(event))
                keys[resolve(alias) or alias] = None
            if event.anonymous_id:
                keys[resolve(event.anonymous_id) or event.anonymous_id] = None
        if wanted := [k for k in keys if k not in self.profiles]:
            found_blobs = self._store.blobs(wanted)
            for key in wanted:
                blob = self.blobs[key] = found_blobs.get(key)
                self.profiles[key] = decode(blob) if blob is not None else None

    def apply(self, units: Sequence[_Unit]) -> None:
        """Apply *units* (loaded) in order."""
        profiles = self.profiles
        touched = self.touched
        deleted = self.deleted
        fresh = self.fresh
        stored = self.stored_claims
        duplicates = self.duplicates
        now = self.now
        for unit in units:
            event = unit.event
            claim = _claim(event)
            duplicate = bool(claim) and (stored[claim] or claim in fresh)
            duplicates.append(duplicate)
            if duplicate:
                self.skipped += 1
            else:
                self.applied += 1
                if type(event) is ev.OrderCompleted:
                    self.orders += 1
            if event.user_id and not event.email and not event.anonymous_id:
                # The common case, short: a customer id only, so nothing to resolve,
                # absorb or alias (what apply_shop_event would do, without the work).
                key = customer_key(event.user_id)
                profile = profiles[key]
                if profile is None:
                    profile = profiles[key] = new_profile(key, now)
                if duplicate:
                    if profile.customer_id == event.user_id:
                        continue
                else:
                    ev.apply(profile, event, now, ev.Source.SHOP)
                    if claim:
                        fresh.add(claim)
                profile.customer_id = event.user_id
                touched[key] = None
                deleted.pop(key, None)
                continue
            email_hash = self.email_hash(event)
            key, absorb, extra = shop_event_keys(event, email_hash, self.resolve)
            for name in (key, *absorb):
                if name not in profiles:
                    raise RuntimeError(f"import: profile {name!r} was not loaded")
            before = {k: profiles[k] for k in absorb}
            old_profile = profiles[key]
            old_state = (
                (old_profile.customer_id, old_profile.email_hash, old_profile.aliases)
                if old_profile is not None
                else None
            )
            profile, merged = apply_shop_event(
                profiles,
                key,
                absorb,
                event,
                now=now,
                duplicate=duplicate,
                email_hash=email_hash,
                extra_aliases=extra,
            )
            if claim and not duplicate:
                fresh.add(claim)
            for gone in merged:
                deleted[gone] = None
                touched.pop(gone, None)
                old = before[gone]
                for alias in (gone, *(old.aliases if old else ())):
                    self.overlay[alias] = None
            if (
                not duplicate
                or merged
                or old_state != (profile.customer_id, profile.email_hash, profile.aliases)
            ):
                touched[key] = None  # (a re-imported event changes nothing: no write)
            deleted.pop(key, None)
            for alias in profile.aliases:
                self.overlay[alias] = key

    def recount(self, indexes: Sequence[int], units: Sequence[_Unit], duplicates: bytes) -> None:
        """The events at *indexes* were applied again elsewhere, with these outcomes."""
        for n, unit, duplicate in zip(indexes, units, duplicates, strict=True):
            order = isinstance(unit.event, ev.OrderCompleted)
            if self.duplicates[n] != duplicate:
                self.duplicates[n] = duplicate
                change = -1 if duplicate else 1
                self.applied += change
                self.skipped -= change
                self.orders += change if order else 0

    def result(self) -> Profiles:
        """What to write: removed profiles first (the store deletes a removed profile's
        alias rows, and must not delete the ones just written for the survivor)."""
        out: Profiles = dict.fromkeys(self.deleted)
        for key in self.touched:
            out[key] = self.profiles[key]
        return out

    def new_claims(self) -> list[str]:
        return [claim for claim, recorded in self.stored_claims.items() if not recorded]


class _Bulk:
    """The import's events: applied (:class:`_Changes`) batch by batch as they are
    read, written at the end in chunks of independent groups (see the module doc)."""

    def __init__(self, store: SQLiteStore, email_hash: Callable[[str], str], now: int) -> None:
        self.now = now
        self._email_hash = email_hash
        self._hashes: dict[str, str] = {}
        self._session = store.bulk()
        self.changes = _Changes(now, self.email_hash, self._session)
        self.units: list[_Unit] = []
        self._names: list[str] = []
        """Per unit: one name of its group."""
        self._parent: dict[str, str] = {}
        self._sizes: dict[str, int] = {}
        """Group (by its root name) -> events in it."""
        self._firsts: dict[str, int] = {}
        """Group -> its first event."""
        self._claimants: dict[str, int] = {}
        """Claim -> the first unit with it."""
        self._chunk_of: dict[str, int] = {}
        """Group -> the chunk it is written in (once reading is done)."""

    @property
    def applied(self) -> int:
        return self.changes.applied

    @property
    def orders(self) -> int:
        return self.changes.orders

    @property
    def skipped(self) -> int:
        return self.changes.skipped

    def close(self) -> None:
        self._session.close()

    def email_hash(self, event: ev.BaseEvent) -> str:
        if not event.email:
            return ""
        found = self._hashes.get(event.email)
        if found is None:
            found = self._hashes[event.email] = self._email_hash(event.email)
        return found

    def add(self, units: list[_Unit]) -> None:
        """Apply *units*, the next ones in file order, in memory."""
        if not units:
            return
        self.changes.load(units)
        self._link(units)
        self.changes.apply(units)
        self.units += units

    def _find(self, name: str) -> str:
        parent = self._parent
        root = name
        while (up := parent.get(root, root)) != root:
            root = up
        while name != root:
            parent[name], name = root, parent.get(name, name)
        return root

    def _link(self, units: list[_Unit]) -> None:
        """Group the events so each profile is written once per import: events that
        share a customer, email, visitor id, a profile they resolve to in the store, or
        an order/event id belong together (and whatever one group changes, no other
        group reads)."""
        stored = self.changes.stored_aliases
        parent = self._parent
        sizes = self._sizes
        firsts = self._firsts
        find = self._find
        claimants = self._claimants
        index = len(self._names)
        for unit in units:
            event = unit.event
            names: list[str] = []
            if event.user_id:
                names.append(customer_key(event.user_id))
            if event.email:
                alias = email_key(self.email_hash(event))
                names.append(alias)
                if key := stored[alias]:
                    names.append(key)
            if event.anonymous_id:
                names.append(event.anonymous_id)
                if key := stored[event.anonymous_id]:
                    names.append(key)
            if claim := _claim(event):
                first = claimants.setdefault(claim, index)
                if first != index:
                    names.append(self._names[first])  # the same order twice: first one wins
            root = find(names[0])
            for name in names[1:]:
                other = find(name)
                if other != root:
                    parent[other] = root
                    if other in sizes:  # two groups become one
                        sizes[root] = sizes.get(root, 0) + sizes.pop(other)
                        earliest = firsts.pop(other)
                        firsts[root] = min(firsts.get(root, earliest), earliest)
            sizes[root] = sizes.get(root, 0) + 1
            firsts.setdefault(root, index)
            self._names.append(names[0])
            index += 1

    def write(self, *, strict: bool, size: int, progress: _Progress) -> None:
        """Write what changed: the groups, in the order of their first profile's key,
        packed into chunks of about *size* events, one transaction each (with *strict*:
        one in all). In key order, each chunk's profiles fill their own stretch of the
        table's pages: in file order every chunk rewrote most of them (2.5 times the
        WAL, 0.7 s more for 100,000 orders)."""
        names = self._names
        sizes = self._sizes
        firsts = self._firsts
        events: list[int] = []
        """Per chunk: how many events."""
        current = 0
        for root in sorted(sizes, key=lambda root: names[firsts[root]]):
            self._chunk_of[root] = len(events)
            current += sizes[root]
            if current >= size:
                events.append(current)
                current = 0
        if current:
            events.append(current)

        changes = self.changes
        chunk = self._chunk
        results: list[Profiles] = [{} for _ in events]
        for key in changes.deleted:
            results[chunk(key)][key] = None
        for key in changes.touched:
            results[chunk(key)][key] = changes.profiles[key]
        claims: list[list[str]] = [[] for _ in events]
        for claim, recorded in changes.stored_claims.items():
            if not recorded:
                claims[chunk(names[self._claimants[claim]])].append(claim)
        for some in claims:
            some.sort()  # the claims' pages filled in turn (~25% faster than file order)

        def commit(part: Sequence[int], writes: list[Writes]) -> None:
            session = self._session
            with session.transaction():
                for n, rows in zip(part, writes, strict=True):
                    stale = self._stale(n) if session.others_wrote() else set()
                    if not stale:
                        session.store(rows)
                    else:
                        self._write_around(results[n], claims[n], stale)

        # SQLite lets go of the GIL while it works: a transaction is written on another
        # thread while this one encodes the next, and what is committed is copied into
        # the database file on a third meanwhile (else 0.3 s at the end for 100,000).
        parts = [range(len(events))] if strict else [[n] for n in range(len(events))]
        with (
            ThreadPoolExecutor(1, thread_name_prefix="edge-import-writer") as writer,
            ThreadPoolExecutor(1, thread_name_prefix="edge-import-checkpoint") as copier,
        ):
            writing: Future[None] | None = None
            copying: Future[None] | None = None
            in_writing = 0
            for part in parts:
                writes = [prepare(results[n], claims[n]) for n in part]
                if writing is not None:
                    writing.result()
                    progress.add(in_writing)
                    if copying is None or copying.done():
                        copying = copier.submit(self._session.checkpoint)
                writing = writer.submit(commit, part, writes)
                in_writing = sum(events[n] for n in part)
            if writing is not None:
                writing.result()
                progress.add(in_writing)

    def _chunk(self, name: str) -> int:
        found = self._chunk_of.get(self._find(name))
        if found is None:
            raise RuntimeError(f"import: {name!r} belongs to no group")
        return found

    def _stale(self, n: int) -> set[str]:
        """The groups of chunk *n* whose reads another writer has changed since: their
        profiles, aliases or claims are not what is stored now."""
        find = self._find
        chunk = self._chunk
        changes = self.changes
        stale: set[str] = set()
        keys = [key for key in changes.blobs if chunk(key) == n]
        stored = self._session.blobs(keys)
        stale.update(find(k) for k in keys if stored.get(k) != changes.blobs[k])
        aliases = [alias for alias in changes.stored_aliases if chunk(alias) == n]
        pointing = self._session.aliases(aliases)
        stale.update(find(a) for a in aliases if pointing.get(a) != changes.stored_aliases[a])
        claimant = {c: self._names[i] for c, i in self._claimants.items()}
        claims = [c for c in changes.stored_claims if chunk(claimant[c]) == n]
        recorded = self._session.claims(claims)
        stale.update(
            find(claimant[c]) for c in claims if (c in recorded) != changes.stored_claims[c]
        )
        return stale

    def _write_around(self, result: Profiles, claims: list[str], stale: set[str]) -> None:
        """Write the chunk's groups as computed, except the *stale* ones: those are
        computed again from what is stored now (in this transaction, so they see it)."""
        find = self._find
        names = self._names
        self._session.write(
            {k: p for k, p in result.items() if find(k) not in stale},
            [c for c in claims if find(names[self._claimants[c]]) not in stale],
        )
        again = [n for n, name in enumerate(names) if find(name) in stale]
        units = [self.units[n] for n in again]
        redo = _Changes(self.now, self.email_hash, self._session)
        redo.load(units)
        redo.apply(units)
        self._session.write(redo.result(), redo.new_claims())
        self.changes.recount(again, units, redo.duplicates)


# --- progress ------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr: count, rate, ETA. Silent when disabled."""

    def __init__(
        self, label: str, total: int, unit: str, *, enabled: bool, stream: IO[str] | None = None
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.enabled = enabled and total > 0
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.perf_counter()
        self._shown = 0.0
        self._width = 0

    def add(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        moment = time.perf_counter()
        if moment - self._shown >= 0.1 or self.done >= self.total:
            self._shown = moment
            self._draw(moment)

    def _draw(self, moment: float) -> None:
        elapsed = max(moment - self.started, 1e-9)
        done = min(self.done, self.total)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = int(20 * done / self.total)
        bar = "#" * filled + "-" * (20 - filled)
        if self.unit == "B":
            count = f"{done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB  {rate / 1e6:,.1f} MB/s"
        else:
            count = f"{done:,}/{self.total:,}  {rate:,.0f}/s"
        text = f"{self.label:9} [{bar}] {count}  ETA {eta:,.0f}s"
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

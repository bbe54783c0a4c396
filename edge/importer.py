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

Speed: the file is parsed first, then applied in bulk through
:meth:`SQLiteStore.transact_many`: one store job per chunk reads every profile the
chunk touches once, applies the chunk's events in file order with the same key,
stitching and claim rules as :class:`~edge.profiles.service.ProfileService`, and
writes each touched profile once.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import math
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import msgspec

from edge.identity import Identity
from edge.profiles import events as ev
from edge.profiles.model import Profile, new_profile
from edge.profiles.service import customer_key, email_key
from edge.profiles.sqlite import SQLiteStore
from edge.profiles.store import Mutation, Profiles

KINDS: Final = ("orders", "customers", "emails", "events")
CHUNK: Final = 20_000
"""Orders (or rows of other kinds) per transaction without ``--strict``: each commit
checkpoints the WAL, so fewer, larger transactions are faster (5,000 costs ~15%)."""
MAX_ERRORS_SHOWN: Final = 50

_T = TypeVar("_T")
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
) -> ImportReport:
    """Import *path* into *store*. Raises :class:`ImportFailed` for a file that cannot
    be imported at all; bad lines are in the report instead. Runs on the caller's
    thread (from async code, in an executor)."""
    # Hundreds of thousands of long-lived small objects make the cyclic GC rescan
    # them over and over (a third of the time); nothing here makes cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _import(path, store, identity, kind, strict, progress, now, chunk)
    finally:
        if collecting:
            gc.enable()


def _import(
    path: Path,
    store: SQLiteStore,
    identity: Identity,
    kind: str | None,
    strict: bool,
    progress: bool | None,
    now: int | None,
    chunk: int,
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
    reading = _Progress("reading", size, "B", enabled=show)
    source = _open_records(path, reading)
    columns = source.columns
    if kind is not None:
        chosen, reason = kind, "given"
    else:
        chosen, reason = _detect_kind(path, columns)
    _check_columns(chosen, columns, source.is_csv)
    if source.is_csv and source.delimiter == ";":
        reason += ", semicolon-separated"

    parser = _PARSERS[chosen](identity, columns)
    normalise = not source.is_csv and chosen != "events"  # JSON objects as CSV rows
    units: list[_Unit] = []
    errors: list[LineError] = []
    lines = 0
    for line, record in source.records:
        lines += 1
        if isinstance(record, LineError):
            errors.append(record)
            continue
        try:
            unit = parser.row(line, _normal_record(record) if normalise else record)
        except _Bad as bad:
            errors.append(LineError(line, bad.message))
            continue
        if unit is not None:
            units.append(unit)
    for item in parser.finish():
        if isinstance(item, LineError):
            errors.append(item)
        else:
            units.append(item)
    reading.close()
    units.sort(key=lambda u: u.lines[0])  # file order (grouped orders: their first row)
    errors.sort(key=lambda e: e.line)
    report = ImportReport(
        kind=chosen,
        lines=lines,
        applied_events=0,
        orders=0,
        skipped_duplicates=0,
        errors=errors,
        seconds=0.0,
        path=str(path),
        kind_reason=reason,
        strict=strict,
        notes=parser.notes,
    )
    if strict and errors:
        report.applied = False
        report.seconds = time.perf_counter() - started
        return report

    bulk = _Bulk(store, identity.email_hash, now)
    applying = _Progress("applying", len(units), "", enabled=show)
    try:
        chunks = bulk.plan(units, chunk)
        del units
        if strict:
            store.transact_many(bulk.jobs(chunks, applying))
        else:
            for part in chunks:
                store.transact_many(bulk.jobs([part], applying))
    finally:
        bulk.close()
        applying.close()
    report.applied_events = bulk.applied
    report.orders = bulk.orders
    report.skipped_duplicates = bulk.skipped
    report.seconds = time.perf_counter() - started
    return report


# --- reading records -----------------------------------------------------------------


Record = dict[str, Any]


@dataclass
class _Source:
    columns: list[str]
    """CSV header, or the keys of the first JSON object."""
    records: Iterator[tuple[int, Record | LineError]]
    is_csv: bool
    delimiter: str = ","


def _normal_column(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def _open_records(path: Path, progress: _Progress) -> _Source:
    suffix = path.suffix.lower()
    try:
        with path.open("rb") as f:
            head = f.read(65_536)
    except OSError as exc:
        raise ImportFailed(f"{path}: {exc.strerror or exc}") from None
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if suffix in (".jsonl", ".ndjson") or (suffix != ".csv" and first == b"{"):
        return _jsonl_records(path, progress)
    if suffix == ".json" or first == b"[":
        return _json_array_records(path, progress)
    return _csv_records(path, head, progress)


def _counting(lines: Iterable[_T], progress: _Progress) -> Iterator[_T]:
    for line in lines:
        progress.add(len(line))  # type: ignore[arg-type]
        yield line


def _csv_records(path: Path, head: bytes, progress: _Progress) -> _Source:
    sample = head.decode("utf-8-sig", errors="replace")
    header_line = sample.splitlines()[0] if sample.strip() else ""
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;").delimiter
    except csv.Error:
        delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    if delimiter not in header_line and (";" if delimiter == "," else ",") in header_line:
        delimiter = ";" if delimiter == "," else ","
    f = path.open(encoding="utf-8-sig", newline="", errors="strict")
    lines: Iterable[str] = _counting(f, progress) if progress.enabled else f
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] = []
    header_at = 0
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                header = [_normal_column(c) for c in row]
                header_at = reader.line_num
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

    def records() -> Iterator[tuple[int, Record | LineError]]:
        width = len(header)
        previous = header_at
        strip = str.strip
        unnamed = "" in header
        try:
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    line = previous + 1
                    previous = reader.line_num
                    yield line, LineError(line, f"cannot parse the CSV line: {exc}")
                    continue
                except UnicodeDecodeError as exc:
                    line = previous + 1
                    yield line, LineError(line, f"not UTF-8: {exc.reason}")
                    return
                line = previous + 1
                previous = reader.line_num
                cells = list(map(strip, row))
                if not "".join(cells):
                    continue
                if len(cells) > width:
                    if "".join(cells[width:]):
                        yield line, LineError(line, f"{len(row)} fields, the header has {width}")
                        continue
                    del cells[width:]
                elif len(cells) < width:
                    cells += [""] * (width - len(cells))
                record: Record = {
                    name: value for name, value in zip(header, cells, strict=True) if value
                }
                if unnamed:
                    record.pop("", None)
                yield line, record
        finally:
            f.close()

    return _Source(header, records(), is_csv=True, delimiter=delimiter)


def _jsonl_records(path: Path, progress: _Progress) -> _Source:
    f = path.open("rb")
    lines: Iterable[bytes] = _counting(f, progress) if progress.enabled else f
    numbered = enumerate(lines, start=1)
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

    def records() -> Iterator[tuple[int, Record | LineError]]:
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

    return _Source(columns, records(), is_csv=False)


def _json_array_records(path: Path, progress: _Progress) -> _Source:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed(f"{path}: {exc}") from None
    progress.add(len(text))
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\r\n]*")
    pos = ws.match(text).end()  # type: ignore[union-attr]
    if text[pos : pos + 1] != "[":
        raise ImportFailed(f"{path}: expected a JSON array of objects")
    pos += 1
    items: list[tuple[int, Record | LineError]] = []
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
    return _Source(columns, iter(items), is_csv=False)


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


class _Bad(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Unit:
    lines: list[int]
    event: ev.BaseEvent


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
    if isinstance(value, bool):
        raise _Bad(f"{name}: expected an ISO 8601 date or datetime or unix seconds, got {value}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return int(float(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return int(moment.timestamp())
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
    kind: str

    def __init__(self, identity: Identity, columns: Sequence[str]) -> None:
        self.identity = identity
        self.columns = [_normal_column(c) for c in columns]
        self.notes: list[str] = []
        self._ts_cache: dict[Any, int] = {}

    def row(self, line: int, record: Record) -> _Unit | None:
        raise NotImplementedError

    def finish(self) -> Iterable[_Unit | LineError]:
        return ()

    def ts(self, record: Record, *, required: bool) -> tuple[int | None, str]:
        name = "ts" if "ts" in record else "date"
        value = record.get(name)
        if value is None:
            if required:
                raise _Bad("ts: missing (a ts or date column is needed)")
            return None, name
        try:
            return self._ts_cache[value], name
        except (KeyError, TypeError):
            pass
        ts = _parse_ts(value, name)
        if len(self._ts_cache) < 1_000_000 and isinstance(value, str | int):
            self._ts_cache[value] = ts
        return ts, name

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


class _OrderGroup:
    __slots__ = ("bad", "heads", "lines", "products")

    def __init__(self) -> None:
        self.lines: list[int] = []
        self.heads: list[dict[str, Any]] = []
        """Each item row's order columns, as read."""
        self.products: list[ev.Product] = []
        self.bad: list[int] = []


class _Orders(_Parser):
    kind = "orders"

    def __init__(self, identity: Identity, columns: Sequence[str]) -> None:
        super().__init__(identity, columns)
        self.ignore_others(_ORDER_FIELDS | {"event"})
        self.items = "product_id" in self.columns
        self.groups: dict[Any, _OrderGroup] = {}

    def head(self, record: Record) -> tuple[dict[str, Any], dict[str, str]]:
        data = self.subject(record)
        ts, ts_name = self.ts(record, required=True)
        data["ts"] = ts
        for name in ("order_id", "total", "coupon"):
            if name in record:
                data[name] = record[name]
        return data, {"ts": ts_name}

    def row(self, line: int, record: Record) -> _Unit | None:
        if not (self.items or "product_id" in record):  # JSON: item rows per line
            data, names = self.head(record)
            products = record.get("products")
            if isinstance(products, str):
                try:
                    products = msgspec.json.decode(products)
                except msgspec.DecodeError as exc:
                    raise _Bad(f"products: invalid JSON: {exc}") from None
            if products is not None:
                data["products"] = products
            return _Unit([line], _convert(data, ev.OrderCompleted, names))
        # One row per item: the order's own columns are checked once per order, when
        # the whole file has been read (its rows may be anywhere).
        head = {k: record[k] for k in _HEAD_FIELDS if k in record}
        order_id = head.get("order_id")
        if order_id is None:
            raise _Bad("order_id: missing")
        group = self.groups.get(order_id)
        if group is None:
            group = self.groups[order_id] = _OrderGroup()
        group.lines.append(line)
        try:
            if "user_id" not in head and "email" not in head and "anonymous_id" not in head:
                raise _Bad("needs a user_id, email or anonymous_id")
            item = {k: record[k] for k in _PRODUCT_FIELDS if k in record}
            product = _convert(item, ev.Product, {})
        except _Bad:
            group.bad.append(line)
            raise
        group.heads.append(head)
        group.products.append(product)
        return None

    def finish(self) -> Iterator[_Unit | LineError]:
        for order_id, group in self.groups.items():
            if group.bad:
                bad = ", ".join(map(str, group.bad))
                for line in group.lines:
                    if line not in group.bad:
                        yield LineError(
                            line, f"order {order_id}: not applied, line {bad} of it is bad"
                        )
                continue
            try:
                data, names = self._agreed(order_id, group)
                data["products"] = group.products
                if "total" not in data:
                    data["total"] = round(sum(p.price * p.quantity for p in group.products), 2)
                event = _convert(data, ev.OrderCompleted, names)
            except _Bad as bad:
                for line in group.lines:
                    yield LineError(line, bad.message)
                continue
            yield _Unit(group.lines, event)
        self.groups.clear()

    def _agreed(self, order_id: Any, group: _OrderGroup) -> tuple[dict[str, Any], dict[str, str]]:
        """The order's columns, which all its rows must agree on."""
        first = group.heads[0]
        if len(group.heads) == 1 or all(head == first for head in group.heads):
            return self.head(first)
        parsed: list[dict[str, Any]] = []
        for head in group.heads:
            try:
                parsed.append(self.head(head)[0])
            except _Bad:
                parsed.append(head)
        problems = [
            name
            for name in ("user_id", "email", "anonymous_id", "ts", "total", "coupon")
            if any(data.get(name) != parsed[0].get(name) for data in parsed)
        ]
        if not problems:
            return self.head(first)
        raise _Bad(
            f"order {order_id}: its rows (lines {', '.join(map(str, group.lines))}) "
            f"disagree on {', '.join(problems)}"
        )


class _Customers(_Parser):
    kind = "customers"
    _numeric: Final = {"birth_year": int, "latitude": float, "longitude": float}

    def row(self, line: int, record: Record) -> _Unit | None:
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
        return _Unit([line], event)

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

    def __init__(self, identity: Identity, columns: Sequence[str]) -> None:
        super().__init__(identity, columns)
        self.ignore_others(_EMAIL_FIELDS | {"event"})

    def row(self, line: int, record: Record) -> _Unit | None:
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
        return _Unit([line], event)


class _Events(_Parser):
    kind = "events"

    def row(self, line: int, record: Record) -> _Unit | None:
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
        return _Unit([line], event)


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


class _Bulk:
    """Applies chunks of events through ``transact_many``: one job per chunk loads
    every profile the chunk may touch, applies its events in file order, and writes
    each changed profile once."""

    def __init__(self, store: SQLiteStore, email_hash: Callable[[str], str], now: int) -> None:
        self.now = now
        self._email_hash = email_hash
        self._hashes: dict[str, str] = {}
        self._conn = sqlite3.connect(store.path, timeout=30)
        self.overlay: dict[str, str | None] = {}
        """Aliases written (or removed) by this import, possibly not yet committed."""
        self._db_aliases: dict[str, str | None] = {}
        self._progress = _Progress("", 0, "", enabled=False)
        self.applied = 0
        self.orders = 0
        self.skipped = 0

    def close(self) -> None:
        self._conn.close()

    def email_hash(self, event: ev.BaseEvent) -> str:
        if not event.email:
            return ""
        found = self._hashes.get(event.email)
        if found is None:
            found = self._hashes[event.email] = self._email_hash(event.email)
        return found

    def resolve(self, alias: str) -> str | None:
        if alias in self.overlay:
            return self.overlay[alias]
        return self._db_aliases.get(alias)

    def _load_aliases(self, aliases: Iterable[str]) -> None:
        wanted = [a for a in dict.fromkeys(aliases) if a not in self.overlay]
        self._db_aliases = dict.fromkeys(wanted)
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            marks = ",".join("?" * len(part))
            for alias, key in self._conn.execute(
                f"SELECT alias, key FROM aliases WHERE alias IN ({marks})", part
            ):
                self._db_aliases[alias] = key

    def plan(self, units: list[_Unit], size: int) -> list[list[_Unit]]:
        """Group the events so each profile is read and written once per import:
        events that share a customer, email, visitor id, a profile they resolve to,
        or an order/event id form one group (kept in file order, and never split
        across transactions); groups are independent of each other, so they are
        packed into chunks of about *size* events in order of first appearance."""
        names: list[list[str]] = []
        aliases: list[str] = []
        claimed: dict[str, int] = {}
        for unit in units:
            if claim := _claim(unit.event):
                claimed[claim] = claimed.get(claim, 0) + 1
        for unit in units:
            event = unit.event
            mine: list[str] = []
            if event.user_id:
                mine.append(customer_key(event.user_id))
            if event.email:
                alias = email_key(self.email_hash(event))
                mine.append(alias)
                aliases.append(alias)
            if event.anonymous_id:
                mine.append(event.anonymous_id)
                aliases.append(event.anonymous_id)
            if (claim := _claim(event)) and claimed[claim] > 1:
                mine.append("\0" + claim)  # the same order twice: first one wins
            names.append(mine)
        self._load_aliases(aliases)
        resolved = {a: k for a, k in self._db_aliases.items() if k is not None}
        parent: dict[str, str] = {}

        def find(name: str) -> str:
            root = name
            while (up := parent.get(root, root)) != root:
                root = up
            while name != root:
                parent[name], name = root, parent.get(name, name)
            return root

        for mine in names:
            if resolved:
                mine.extend(resolved[a] for a in mine if a in resolved)
            if len(mine) == 1:
                continue
            root = find(mine[0])
            for name in mine[1:]:
                other = find(name)
                if other != root:
                    parent[other] = root
        groups: dict[str, list[_Unit]] = {}
        for unit, mine in zip(units, names, strict=True):
            root = find(mine[0])
            group = groups.get(root)
            if group is None:
                groups[root] = [unit]
            else:
                group.append(unit)
        chunks: list[list[_Unit]] = []
        current: list[_Unit] = []
        for group in groups.values():
            current.extend(group)
            if len(current) >= size:
                chunks.append(current)
                current = []
        if current:
            chunks.append(current)
        return chunks

    def jobs(
        self, chunks: Iterable[list[_Unit]], progress: _Progress
    ) -> Iterator[tuple[Sequence[str], Iterable[str], Mutation]]:
        """Lazily, so each chunk's keys are resolved after the previous one ran."""
        self._progress = progress
        for chunk in chunks:
            yield self._job(chunk)

    def _job(self, chunk: list[_Unit]) -> tuple[Sequence[str], Iterable[str], Mutation]:
        aliases: list[str] = []
        for unit in chunk:
            event = unit.event
            if event.email:
                aliases.append(email_key(self.email_hash(event)))
            if event.anonymous_id:
                aliases.append(event.anonymous_id)
        self._load_aliases(aliases)
        # Every profile an event of the chunk may change or absorb (a superset of
        # what shop_event_keys returns, resolved against the same aliases).
        keys: dict[str, None] = {}
        claims: dict[str, None] = {}
        resolve = self.resolve
        for unit in chunk:
            event = unit.event
            if event.user_id:
                keys[customer_key(event.user_id)] = None
            if event.email:
                alias = email_key(self.email_hash(event))
                keys[resolve(alias) or alias] = None
            if event.anonymous_id:
                keys[resolve(event.anonymous_id) or event.anonymous_id] = None
            if claim := _claim(event):
                claims[claim] = None

        def mutation(current: Profiles, seen: set[str]) -> Profiles:
            profiles = dict(current)
            touched: dict[str, None] = {}
            deleted: dict[str, None] = {}
            fresh: set[str] = set()
            for n, unit in enumerate(chunk, start=1):
                if n % 1000 == 0:
                    self._progress.add(1000)
                event = unit.event
                claim = _claim(event)
                duplicate = bool(claim) and (claim in seen or claim in fresh)
                if event.user_id and not event.email and not event.anonymous_id:
                    # The common case, short: a customer id only, so nothing to resolve,
                    # absorb or alias (what apply_shop_event would do, without the work).
                    key = customer_key(event.user_id)
                    profile = profiles[key]
                    if profile is None:
                        profile = profiles[key] = new_profile(key, self.now)
                    if duplicate:
                        self.skipped += 1
                        if profile.customer_id == event.user_id:
                            continue
                    else:
                        ev.apply(profile, event, self.now, ev.Source.SHOP)
                        self.applied += 1
                        if isinstance(event, ev.OrderCompleted):
                            self.orders += 1
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
                    now=self.now,
                    duplicate=duplicate,
                    email_hash=email_hash,
                    extra_aliases=extra,
                )
                if duplicate:
                    self.skipped += 1
                else:
                    self.applied += 1
                    if isinstance(event, ev.OrderCompleted):
                        self.orders += 1
                    if claim:
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
            self._progress.add(len(chunk) % 1000)
            # Deletions first: the store deletes a removed profile's alias rows, and
            # must not delete the ones just written that now point at the survivor.
            out: Profiles = dict.fromkeys(deleted)
            for key in touched:
                out[key] = profiles[key]
            return out

        return list(keys), list(claims), mutation


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

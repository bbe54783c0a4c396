"""The file: its format and its kind.

Formats: CSV with a header row (comma or semicolon, sniffed; lines ended by ``\\n``,
``\\r\\n`` or a bare ``\\r``), JSON Lines (one object per line) and a JSON array of
objects, each read as records numbered by their physical line. The kind of records
comes from ``--kind``, else from the file name, else from the columns.

CSV is read a block of bytes at a time (:class:`CsvLines`). Lines without a quote,
nearly all of an export, are rows by themselves: cut with ``str.split`` a block at a
time and handed out together (:class:`Rows`); a line with a quote goes through the csv
module on its own, since its field may go on for lines.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from edge.importer.report import ImportFailed, LineError

KINDS: Final = ("orders", "customers", "emails", "events")
BATCH: Final = 2_000
"""Records per batch from reading to applying, about; CSV rows come this many at once."""
_BLOCK_BYTES: Final = 1 << 20
"""A CSV file is read and decoded this much at a time."""
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
_BLANKS: Final = " \t\x0b\x0c\x1c\x1d\x1e\x1f"
"""The ASCII characters str.strip() removes, besides line ends."""

Record = dict[str, Any]


class Rows(list[list[str]]):
    """CSV rows of consecutive lines, each stripped and one cell per column (a row may
    have no cell filled: one read on its own is skipped)."""


Item = Record | list[str] | Rows | LineError
"""What a file gives per line: a JSON object, a CSV row's cells, CSV rows from this
line on, or a bad line."""


@dataclass
class Source:
    columns: list[str]
    """CSV header, or the keys of the first JSON object."""
    records: Generator[tuple[int, Item], None, None]
    """JSON objects; CSV rows as their cells (stripped, one per column; several at once
    as :class:`Rows`, numbered from the given line): see ``record``."""
    is_csv: bool
    position: Callable[[], int]
    """Bytes of the file read so far."""
    delimiter: str = ","
    record: Callable[[list[str]], Record] = dict
    """A CSV row's cells as a record: the named columns that are not empty."""


def normal_column(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def normal_record(record: Record) -> Record:
    """JSON objects as CSV rows: normalised keys, stripped strings, no empty values."""
    out: Record = {}
    for key, value in record.items():
        if value is None:
            continue
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        out[normal_column(str(key))] = value
    return out


def open_records(path: Path) -> Source:
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


# --- CSV -------------------------------------------------------------------------------


class CsvLines:
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

    def __iter__(self) -> CsvLines:
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
            # Cut after the last line end, bare "\r" too (old Macs' and Excel's "CSV
            # (Macintosh)"), but a "\r" as the last byte may be half a "\r\n".
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


def padded(text: str, delimiter: str) -> bool:
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


def split_rows(lines: list[str], text: str, delimiter: str, width: int) -> list[list[str]]:
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


def _delimiter(head: bytes) -> str:
    """Comma or semicolon, whichever the start of the file (*head*) is written with."""
    sample = head.decode("utf-8-sig", errors="replace")
    header_line = sample.splitlines()[0] if sample.strip() else ""
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;").delimiter
    except csv.Error:
        delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    if delimiter not in header_line and (";" if delimiter == "," else ",") in header_line:
        delimiter = ";" if delimiter == "," else ","
    return delimiter


def _header(path: Path, reader: Any) -> list[str]:
    """The first row with a cell filled, as column names (raises :class:`ImportFailed`
    when there is none or it repeats a name)."""
    header: list[str] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                header = [normal_column(c) for c in row]
                break
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ImportFailed(f"{path}: cannot read the header: {exc}") from None
    if not header:
        raise ImportFailed(f"{path}: empty file, no header row")
    named = [c for c in header if c]
    if len(set(named)) != len(named):
        dupes = sorted({c for c in named if named.count(c) > 1})
        raise ImportFailed(f"{path}: the header repeats columns: {', '.join(dupes)}")
    return header


def _csv_records(path: Path, head: bytes) -> Source:
    delimiter = _delimiter(head)
    f = path.open("rb")
    lines = CsvLines(f)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = _header(path, reader)
    except ImportFailed:
        f.close()
        raise
    unnamed = "" in header

    def record(cells: list[str]) -> Record:
        found = dict(zip(compress(header, cells), filter(None, cells)))  # noqa: B905
        if unnamed:
            found.pop("", None)
        return found

    return Source(
        header,
        _csv_rows(f, lines, reader, delimiter, len(header)),
        is_csv=True,
        position=_position(f, path.stat().st_size),
        delimiter=delimiter,
        record=record,
    )


def _csv_rows(
    f: IO[bytes], lines: CsvLines, reader: Any, delimiter: str, width: int
) -> Generator[tuple[int, list[str] | Rows | LineError], None, None]:
    """The rows after the header: lines without a quote a block at a time (one
    :class:`Rows` when they fit the header as they are), a line with a quote through
    *reader*, then blocks again."""
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
                rows = _split_block(lines, block, delimiter, width)
                if rows is not None:
                    yield from rows
                    continue
                slow = len(block)  # (a field over the size limit, say): row by row
            if (yield from _parsed_rows(lines, reader, slow, width)):
                return
    finally:
        f.close()


def _split_block(
    lines: CsvLines, block: list[str], delimiter: str, width: int
) -> list[tuple[int, list[str] | Rows | LineError]] | None:
    """The next lines, *block* (without a quote), cut into rows and taken from *lines*;
    None (nothing taken) where the csv module would refuse them."""
    first = lines.consumed + 1
    text = "".join(block)
    try:
        rows = split_rows(block, text, delimiter, width)
    except csv.Error:
        return None
    lines.skip(len(block))
    if padded(text, delimiter):
        rows = [list(map(str.strip, row)) for row in rows]
    if all(map(width.__eq__, map(len, rows))):
        return [(first, Rows(rows))]
    fitted = ((line, _fit(line, row, width)) for line, row in enumerate(rows, first))
    return [(line, cells) for line, cells in fitted if cells is not None]


def _parsed_rows(
    lines: CsvLines, reader: Any, count: int, width: int
) -> Generator[tuple[int, list[str] | LineError], None, bool]:
    """The rows of the next *count* lines, through *reader*; returns True where the
    file ends (or stops being UTF-8)."""
    until = lines.consumed + count
    while lines.consumed < until:
        line = lines.consumed + 1
        try:
            row = next(reader)
        except StopIteration:
            return True
        except csv.Error as exc:
            yield line, LineError(line, f"cannot parse the CSV line: {exc}")
            continue
        except UnicodeDecodeError as exc:
            yield line, LineError(line, f"not UTF-8: {exc.reason}")
            return True
        if (cells := _fit(line, row, width)) is not None:
            yield line, cells
    return False


def _fit(line: int, row: list[str], width: int) -> list[str] | LineError | None:
    """A row's cells, stripped, one per column of a header *width* wide (None: a blank
    row)."""
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


# --- JSON ------------------------------------------------------------------------------


def _jsonl_records(path: Path) -> Source:
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

    def records() -> Generator[tuple[int, Item], None, None]:
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

    return Source(columns, records(), is_csv=False, position=_position(f, path.stat().st_size))


def _json_array_records(path: Path) -> Source:
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
    items: list[tuple[int, Item]] = []
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
    return Source(columns, (item for item in items), is_csv=False, position=lambda: size)


# --- kinds -----------------------------------------------------------------------------


def detect_kind(path: Path, columns: Sequence[str]) -> tuple[str, str]:
    """The kind of records in *path*, and why: from the file name, else the columns."""
    cols = {normal_column(c) for c in columns}
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


def check_columns(kind: str, columns: Sequence[str], is_csv: bool) -> None:
    """Raise :class:`ImportFailed` when a CSV file lacks a column its kind needs."""
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

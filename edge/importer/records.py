"""Records into events: every value checked through the declared event types.

A record (a CSV row, a JSON object) becomes one event of :mod:`edge.profiles.events`
by msgspec's conversion, so a bad value is reported in msgspec's words with the
column's name and the value: ``total: Expected float, got "12,5€"``. A parser per kind
turns records into :class:`Unit` s (an event and its lines) in file order, and bad
lines into :class:`LineError` s; orders, whose item rows must be gathered, have their
own module (:mod:`edge.importer.orders`).

Rows without an event id get one derived from their content (:func:`derive_id`), so
importing a file twice counts each row once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec

from edge.importer.formats import Record, normal_column
from edge.importer.report import LineError
from edge.profiles import events as ev
from edge.profiles.model import new_profile

_T = TypeVar("_T")

SUBJECT: Final = ("user_id", "email", "anonymous_id")
_EMAIL_FIELDS: Final = frozenset({*SUBJECT, "ts", "type", "campaign", "event_id"})
_EMAIL_TYPES: Final = {
    "sent": ev.EmailSent,
    "send": ev.EmailSent,
    "email sent": ev.EmailSent,
    "opened": ev.EmailOpened,
    "open": ev.EmailOpened,
    "email opened": ev.EmailOpened,
}
_NUMBER: Final = re.compile(r"[+-]?\d+(\.\d*)?")
_AT: Final = re.compile(r"^(.*) - at `(.*)`$", re.S)


class Unit(msgspec.Struct, array_like=True):
    """One event and the file's lines it came from (an order's item rows: several)."""

    lines: list[int]
    event: ev.Event


class Batch(msgspec.Struct, tag=True):
    """What the next records held, in file order."""

    units: list[Unit]
    errors: list[LineError]
    lines: int
    """Records read for this batch."""
    position: int
    """Bytes of the file read so far (for the progress bar)."""


class Bad(Exception):
    """This record is bad: *message* says why, for its line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def show(value: Any) -> str:
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
        shown = show(value)
        if ", got " in text:
            text = re.sub(r", got \w+$", f", got {shown}", text)
        elif text.startswith("Expected"):
            text += f", got {shown}"
    label = names.get(name, name) + path[len(name) :] if top else path or "value"
    if label.startswith("traits[...]") or label.startswith("traits."):
        label = "trait" + label.removeprefix("traits")
    return f"{label}: {text}"


def convert(
    data: Mapping[str, Any], type_: type[_T], names: Mapping[str, str], *, strict: bool = False
) -> _T:
    """*data* as a *type_* (raising :class:`Bad`); *names*: field -> the column it came
    from, where they differ."""
    try:
        return msgspec.convert(data, type_, strict=strict)
    except msgspec.ValidationError as exc:
        raise Bad(_explain(str(exc), data, names)) from None


def parse_ts(value: Any, name: str) -> int:
    """Unix seconds from an ISO 8601 date or datetime (UTC without an offset) or unix
    seconds; *name*: the column, for the error."""
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
        raise Bad(f"{name}: expected an ISO 8601 date or datetime or unix seconds, got {value}")
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and math.isfinite(value):
        return int(value)
    raise Bad(f"{name}: expected an ISO 8601 date or datetime or unix seconds, got {show(value)}")


@functools.lru_cache(maxsize=4096)
def _text_ts(text: str) -> int | None:
    """:func:`parse_ts` of a text (None: not a time), remembered: exports repeat their
    dates, an order's item rows its time."""
    try:
        return parse_ts(text, "")
    except Bad:
        return None


def timestamp(value: Any, name: str) -> int:
    """:func:`parse_ts`, with a text's answer remembered."""
    if type(value) is str and (found := _text_ts(value)) is not None:
        return found
    return parse_ts(value, name)


def derive_id(kind: str, event: ev.BaseEvent) -> str:
    """A stable id for a row without one: same content, same id, counted once."""
    if event.email:
        event = msgspec.structs.replace(event, email=event.email.strip().lower())
    digest = hashlib.sha256(kind.encode() + b"\0" + msgspec.json.encode(event)).hexdigest()
    return f"import:{digest[:40]}"


def _checked(event: ev.Identify) -> None:
    """A trait the profile would refuse is this line's error, not the batch's."""
    try:
        ev.apply(new_profile("check", 0), event, 0, ev.Source.SHOP)
    except ValueError as exc:
        raise Bad(str(exc)) from None


class Parser:
    """Records of one kind into units (in file order) and bad lines."""

    kind: str
    reads_cells = False
    """CSV rows go to :meth:`row` as their cells rather than as records."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = [normal_column(c) for c in columns]
        self.notes: list[str] = []
        self.ready: list[Unit] = []
        """Units complete, in file order, not yet in a batch."""
        self.errors: list[LineError] = []
        """Bad lines not yet in a batch."""

    def row(self, line: int, record: Record) -> None:
        """Read one record: its unit goes to ``ready`` (possibly later, with the rest of
        its order); raises :class:`Bad` when the record itself is bad."""
        raise NotImplementedError

    def rows(self, line: int, rows: list[list[str]]) -> bool:
        """Read CSV *rows* (of lines *line*, *line* + 1...) in one go if they are all
        good as far as this can tell at once; False (nothing read): row by row."""
        return False

    def finish(self) -> None:
        """The file is read: everything still held back goes out."""

    def batch(self, lines: int, position: int) -> Batch:
        batch = Batch(self.ready, self.errors, lines, position)
        self.ready = []
        self.errors = []
        return batch

    @staticmethod
    def ts(record: Record, *, required: bool) -> tuple[int | None, str]:
        """The record's time (``ts``, else ``date``), and the column it came from."""
        name = "ts" if "ts" in record else "date"
        value = record.get(name)
        if value is None:
            if required:
                raise Bad("ts: missing (a ts or date column is needed)")
            return None, name
        return timestamp(value, name), name

    @staticmethod
    def subject(record: Record) -> dict[str, Any]:
        found: dict[str, Any] = {k: record[k] for k in SUBJECT if k in record}
        if not found:
            raise Bad("needs a user_id, email or anonymous_id")
        return found

    def ignore_others(self, known: frozenset[str]) -> None:
        extra = [c for c in self.columns if c and c not in known and c != "date"]
        if extra:
            self.notes.append(f"columns ignored: {', '.join(extra)}")


class Customers(Parser):
    kind = "customers"
    _numeric: Final = {"birth_year": int, "latitude": float, "longitude": float}

    def row(self, line: int, record: Record) -> None:
        data: dict[str, Any] = {k: record[k] for k in SUBJECT if k in record}
        if not data.keys() & {"user_id", "email"}:
            raise Bad("needs a user_id or email")
        names: dict[str, str] = {}
        if "ts" in record:
            data["ts"], names["ts"] = self.ts(record, required=False)
        if "event_id" in record:
            data["event_id"] = record["event_id"]
        traits: dict[str, Any] = {}
        for key, value in record.items():
            if key in SUBJECT or key in ("ts", "event_id"):
                continue
            if key == "registered":
                value = parse_ts(value, key)
            elif key in self._numeric:
                value = self._number(key, value)
            traits[key] = value
        data["traits"] = traits
        event = convert(data, ev.Identify, names)
        _checked(event)
        if event.event_id is None:
            event.event_id = derive_id(self.kind, event)
        self.ready.append(Unit([line], event))

    def _number(self, key: str, value: Any) -> float | int:
        wanted = self._numeric[key]
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number) or (wanted is int and not number.is_integer()):
                raise ValueError
        except (TypeError, ValueError):
            raise Bad(f"{key}: Expected {wanted.__name__}, got {show(value)}") from None
        return int(number) if wanted is int else number


class Emails(Parser):
    kind = "emails"

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__(columns)
        self.ignore_others(_EMAIL_FIELDS | {"event"})

    def row(self, line: int, record: Record) -> None:
        data = self.subject(record)
        kind = record.get("type")
        type_ = _EMAIL_TYPES.get(kind.strip().lower()) if isinstance(kind, str) else None
        if type_ is None:
            raise Bad(f'type: expected "sent" or "opened", got {show(kind)}')
        data["ts"], ts_name = self.ts(record, required=True)
        for name in ("campaign", "event_id"):
            if name in record:
                data[name] = record[name]
        event = convert(data, type_, {"ts": ts_name})
        if event.event_id is None:
            event.event_id = derive_id(self.kind, event)
        self.ready.append(Unit([line], event))


class Events(Parser):
    kind = "events"

    def row(self, line: int, record: Record) -> None:
        event: ev.BaseEvent = convert(record, ev.Event, {}, strict=True)  # type: ignore[arg-type]
        if not (event.user_id or event.email or event.anonymous_id):
            raise Bad("needs a user_id, email or anonymous_id (shop events name their subject)")
        if isinstance(event, ev.Identify):
            _checked(event)
        if event.event_id is None and not isinstance(event, ev.OrderCompleted):
            event.event_id = derive_id(self.kind, event)
        self.ready.append(Unit([line], event))

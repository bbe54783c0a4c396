"""Orders: one row per order, or one row per item gathered into orders.

Item rows with the same ``order_id`` anywhere in the file make one order; they must
agree on the customer, time, total and coupon, and an order is applied whole or not at
all: when one of its rows is bad, its other rows are reported too. The orders go out
in the file order of their first row.

A CSV of item rows is read by column: no record per row, an order's run of rows taken
at once and converted in one go when it is good (the common case), and looked at row
by row only when something is off. Read *early* (in the reading process, see
:mod:`edge.importer.pipeline`), an order goes out as soon as a row of another order
follows, as exports list an order's items together; should one of its rows come later
after all, :class:`Scattered` is raised and the file is read again the patient way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from itertools import chain, compress, islice, pairwise
from operator import itemgetter, ne
from typing import Any, Final

import msgspec

from edge.importer.formats import Record
from edge.importer.records import SUBJECT, Bad, Parser, Unit, convert, timestamp
from edge.importer.report import LineError
from edge.profiles import events as ev

_PRODUCT_FIELDS: Final = ("product_id", "category", "brand", "price", "quantity", "name")
_ORDER_FIELDS: Final = frozenset(
    {"order_id", *SUBJECT, "ts", "total", "coupon", "products", *_PRODUCT_FIELDS}
)
_HEAD_FIELDS: Final = ("order_id", *SUBJECT, "ts", "date", "total", "coupon")
"""An order's own columns, as an item row's *head* holds them."""
_MISSING: Final = (None, "")
"""What a missing column reads as: None from a record, "" from a CSV row's cells."""


class Scattered(Exception):
    """An order closed early has another row after all."""


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


class OrderGroup:
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
        self.unit: Unit | None = None
        """Once closed: the order's event, or None when it has bad lines."""


class Orders(Parser):
    kind = "orders"

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__(columns)
        self.ignore_others(_ORDER_FIELDS | {"event"})
        self.items = "product_id" in self.columns
        self.groups: dict[Any, OrderGroup] = {}
        """Orders whose rows may still come, by order id."""
        self.queue: deque[OrderGroup] = deque()
        """Orders not yet out, in file order (of their first row): each waits for the
        ones before it, so units go out sorted by their first line."""
        self.early = False
        """Close an order when a row of another one follows."""
        self.closed_early: set[Any] = set()
        self._last: OrderGroup | None = None
        """The order of the last item row."""

    def read_cells(self) -> None:
        """A CSV of item rows: each row's cells are read by column, no record made."""
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
        subject = [columns.index(f) for f in SUBJECT if f in columns]
        self._subject_cells = itemgetter(*subject)
        self._nobody: Any = ("",) * len(subject) if len(subject) > 1 else ""
        self.reads_cells = True
        self.row = self._item_cells  # type: ignore[method-assign, assignment]
        self.rows = self._item_rows  # type: ignore[method-assign, assignment]

    @staticmethod
    def head(values: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, str]]:
        """An order's own columns (:data:`_HEAD_FIELDS`, None or "" where missing)
        checked and named as OrderCompleted has them, and which column the time came
        from. (In this order: it decides which bad value is reported first.)"""
        order_id, user_id, email, anonymous_id, ts, date, total, coupon = values
        data: dict[str, Any] = {} if user_id in _MISSING else {"user_id": user_id}
        if email not in _MISSING:
            data["email"] = email
        if anonymous_id not in _MISSING:
            data["anonymous_id"] = anonymous_id
        if not data:
            raise Bad("needs a user_id, email or anonymous_id")
        ts_name, value = ("ts", ts) if ts not in _MISSING else ("date", date)
        if value in _MISSING:
            raise Bad("ts: missing (a ts or date column is needed)")
        data["ts"] = timestamp(value, ts_name)
        if order_id not in _MISSING:
            data["order_id"] = order_id
        if total not in _MISSING:
            data["total"] = total
        if coupon not in _MISSING:
            data["coupon"] = coupon
        return data, {"ts": ts_name}

    def row(self, line: int, record: Record) -> None:
        if not (self.items or "product_id" in record):  # JSON: item rows per line
            self._whole_row(line, record)
            return
        head = tuple(map(record.get, _HEAD_FIELDS))
        if head[0] is None:
            raise Bad("order_id: missing")
        self._item(
            line,
            head,
            head[1] is not None or head[2] is not None or head[3] is not None,
            {k: record[k] for k in _PRODUCT_FIELDS if k in record},
        )

    def _whole_row(self, line: int, record: Record) -> None:
        """:meth:`row` for a row that is a whole order (its products inside, if any)."""
        data, names = self.head(tuple(map(record.get, _HEAD_FIELDS)))
        products = record.get("products")
        if isinstance(products, str):
            try:
                products = msgspec.json.decode(products)
            except msgspec.DecodeError as exc:
                raise Bad(f"products: invalid JSON: {exc}") from None
        if products is not None:
            data["products"] = products
        unit = Unit([line], convert(data, ev.OrderCompleted, names))
        if self.early and self._last is not None and not self._last.closed:
            self._close_early(self._last)
        if self.queue:
            group = OrderGroup(None)
            group.closed, group.unit = True, unit
            self.queue.append(group)
        else:
            self.ready.append(unit)

    def _item_cells(self, line: int, cells: list[Any]) -> None:
        """:meth:`row` for a CSV row of an item, by its cells ("" where empty)."""
        cells.append(None)
        head = self._head_cells(cells)
        if not head[0]:
            raise Bad("order_id: missing")
        # The product columns stay cells until the order is complete (:meth:`_records`).
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
        # once: no group gathered, queued and closed.
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

    def _group(self, order_id: Any) -> OrderGroup:
        """The rows gathered so far for *order_id* (a new group at its first row), made
        the last one seen."""
        group = self.groups.get(order_id)
        if group is None:
            if order_id in self.closed_early:
                raise Scattered(order_id)
            if self.early and self._last is not None and not self._last.closed:
                self._close_early(self._last)
            group = self.groups[order_id] = OrderGroup(order_id)
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

    def _close_early(self, group: OrderGroup) -> None:
        self.closed_early.add(group.order_id)
        self._close(group)

    def finish(self) -> None:
        for group in list(self.groups.values()):
            self._close(group)

    def _close(self, group: OrderGroup) -> None:
        del self.groups[group.order_id]
        group.closed = True
        group.unit = self._order(group)
        queue = self.queue
        while queue and queue[0].closed:
            unit = queue.popleft().unit
            if unit is not None:
                self.ready.append(unit)

    def _order(self, group: OrderGroup) -> Unit | None:
        """The order's event, or None with every one of its lines reported."""
        good = None if group.bad else self._whole_order(group.lines, group.heads, group.items)
        if good is not None:
            return good
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
            event = convert(data, ev.OrderCompleted, names)
        except Bad as bad:
            self.errors += [LineError(line, bad.message) for line in group.lines]
            return None
        return Unit(group.lines, event)

    def _whole_order(
        self, lines: list[int], heads: list[tuple[Any, ...]], items: list[Record | tuple[str, ...]]
    ) -> Unit | None:
        """The common case in one conversion: the rows of an order, each naming a
        customer, that agree, with a total, every value good. None when anything is
        off: :meth:`_order` then finds out what."""
        first = heads[0]
        if heads.count(first) != len(heads):
            return None
        try:
            data, _ = self.head(first)
        except Bad:
            return None
        if "total" not in data:
            return None
        data["products"] = self._records(items)
        try:
            return Unit(lines, msgspec.convert(data, ev.OrderCompleted, strict=False))
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

    def _products(self, group: OrderGroup) -> list[ev.Product]:
        """The order's products; a bad one's row goes to ``group.bad``."""
        products = []
        for line, item in zip(group.good, self._records(group.items), strict=True):
            try:
                products.append(convert(item, ev.Product, {}))
            except Bad as bad:
                group.bad[line] = bad.message
        return products

    def _agreed(self, group: OrderGroup) -> tuple[dict[str, Any], dict[str, str]]:
        """The order's columns, which all its rows must agree on."""
        first = group.heads[0]
        if group.heads.count(first) == len(group.heads):
            return self.head(first)
        parsed: list[dict[str, Any]] = []
        for head in group.heads:
            try:
                parsed.append(self.head(head)[0])
            except Bad:
                parsed.append(_head_record(head))
        problems = [
            name
            for name in ("user_id", "email", "anonymous_id", "ts", "total", "coupon")
            if any(data.get(name) != parsed[0].get(name) for data in parsed)
        ]
        if not problems:
            return self.head(first)
        raise Bad(
            f"order {group.order_id}: its rows (lines {', '.join(map(str, group.lines))}) "
            f"disagree on {', '.join(problems)}"
        )

"""``edge import``: CSV lines read a block at a time give the rows, line numbers and bad
lines that reading them one by one through the csv module gives."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.identity import Identity
from edge.importer import LineError, formats, import_file
from edge.profiles.sqlite import SQLiteStore

HEADER = "order_id,user_id,date,total,product_id,category,price,quantity"
ROWS = [
    "o1,u1,2024-06-01,30,p1,shoes,10,1",
    "o1,u1,2024-06-01,30,p2,socks,10,2",
    "o2, u2 ,2024-06-02,5,p3,hats,5,1",  # blanks around a cell
    "",  # blank line
    ",,,,,,,",  # no cells at all
    'o3,u3,2024-06-03,7,p4,"bags, small",7,1',  # a quoted delimiter
    'o4,u4,2024-06-04,8,p5,"two',  # a quoted field over two lines
    'lines",8,1',
    "o5,u5,2024-06-05,9,p6,belts,9,1,extra",  # a field too many
    "o6,u6,2024-06-06,9,p7,belts,9,1,,",  # empty fields too many: dropped
    "o7,u7,2024-06-07,9,p8",  # too few: padded
    "o8,u8,2024-06-08,9,p9,caf\u00e9\u00a0,9,1",  # a non-ASCII blank at the end
    "o9,\tu9,2024-06-09,9,p10,x,9,1",
]


def reference(path: Path) -> list[tuple[int, list[str] | LineError]]:
    """The rows as the csv module reads the file line by line (the reading before
    blocks), with the same stripping, padding and checks."""
    out: list[tuple[int, list[str] | LineError]] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        width = len(header)
        previous = reader.line_num
        for row in reader:
            line = previous + 1
            previous = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if len(cells) > width:
                if "".join(cells[width:]):
                    out.append(
                        (line, LineError(line, f"{len(row)} fields, the header has {width}"))
                    )
                    continue
                del cells[width:]
            cells += [""] * (width - len(cells))
            out.append((line, cells))
    return out


def read(path: Path) -> list[tuple[int, list[str] | LineError]]:
    source = formats.open_records(path)
    out: list[tuple[int, Any]] = []
    for line, item in source.records:
        if isinstance(item, formats.Rows):
            # (as the parser takes them when it cannot take all at once)
            out += [(line + n, list(cells)) for n, cells in enumerate(item) if any(cells)]
        else:
            out.append((line, item))
    return out


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_blocks_read_as_the_csv_module_reads_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, newline: str
) -> None:
    monkeypatch.setattr(formats, "_BLOCK_BYTES", block)
    monkeypatch.setattr(formats, "BATCH", 3)
    path = tmp_path / "orders.csv"
    rows = ROWS * 3
    path.write_bytes(("\ufeff" + newline.join([HEADER, *rows])).encode())  # (no last newline)
    got = read(path)
    assert got == reference(path)
    assert {line for line, item in got if isinstance(item, LineError)} == {10, 23, 36}


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_lines_are_read_a_block_at_a_time_whatever_ends_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: str
) -> None:
    monkeypatch.setattr(formats, "_BLOCK_BYTES", 4096)
    path = tmp_path / "orders.csv"
    lines = [HEADER, *(f"o{n},u1,2024-06-01,1,p1,x,1,1" for n in range(5000))]
    path.write_bytes(newline.join(lines).encode())
    with path.open("rb") as f:
        reader = formats.CsvLines(f)
        assert next(reader) == HEADER + newline
        assert f.tell() <= 2 * 4096  # not the whole 150 KB file
        assert [line.rstrip("\r\n") for line in reader] == lines[1:]


def test_not_utf8_is_reported_at_its_line_and_reading_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formats, "_BLOCK_BYTES", 1 << 20)
    path = tmp_path / "orders.csv"
    good = "".join(f"o{n},u1,2024-06-01,1,p1,x,1,1\n" for n in range(2, 500)).encode()
    path.write_bytes(f"{HEADER}\n".encode() + good + b"o500,u1,\xff,1,p1,x,1,1\n" + good)
    got = read(path)
    assert [line for line, _ in got] == list(range(2, 501))  # the good lines before it
    assert got[-1] == (500, LineError(500, "not UTF-8: invalid start byte"))


def test_import_with_small_blocks_gives_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = "\n".join([HEADER, *ROWS]) + "\n"
    path = tmp_path / "orders.csv"
    path.write_text(rows, encoding="utf-8")
    results = []
    for block in (1 << 20, 5):
        monkeypatch.setattr(formats, "_BLOCK_BYTES", block)
        store = SQLiteStore(tmp_path / f"profiles-{block}.db")
        identity = Identity(["test-secret"])
        report = import_file(path, store=store, identity=identity, progress=False, now=1)
        stored = store._reader.execute("SELECT key, data FROM profiles ORDER BY key").fetchall()
        store._reader.close()
        store._writer.close()
        results.append((report.orders, [(e.line, e.message) for e in report.errors], stored))
    assert results[0] == results[1]
    orders, errors, stored = results[0]
    assert orders == 8 and [line for line, _ in errors] == [10] and len(stored) == 8


_CELL = st.text(st.sampled_from("ab1 ;,\t\x00é"), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(_CELL, min_size=0, max_size=5), min_size=1, max_size=8),
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\r", ""]), min_size=8, max_size=8),
    delimiter=st.sampled_from([",", ";"]),
    width=st.integers(1, 5),
)
def test_lines_without_quotes_split_as_the_csv_module_reads_them(
    rows: list[list[str]], ends: list[str], delimiter: str, width: int
) -> None:
    # Lines as _CsvLines gives them: each with its own end (the last may have none).
    lines = [delimiter.join(row) + end for row, end in zip(rows, ends, strict=False)]
    lines = [line for line in lines[:-1] if line[-1:] in ("\n", "\r")] + lines[-1:]
    lines = [line for line in lines if "\r" not in line.rstrip("\r\n")]
    if not lines:
        return
    text = "".join(lines)
    assert formats.split_rows(lines, text, delimiter, width) == list(
        csv.reader(lines, delimiter=delimiter)
    )

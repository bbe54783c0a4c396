"""Errors a merchant sees, and finding where in a rule file they are.

``tomllib`` gives values, not positions, so positions are found again in the raw
text: a table's header line, a key's line inside it, and for an expression the raw
position of each character of the (possibly escaped) TOML string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(slots=True)
class RuleError:
    file: str
    line: int
    """1-based; 0 when the error is about the file as a whole."""
    column: int
    message: str
    text: str = ""
    """The source line shown under the message."""
    length: int = 1
    help: str = ""
    severity: str = "error"
    """``error`` (the rule set is not loaded) or ``warning`` (it is, and this is
    probably not what was meant)."""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        out = [f"{where}: {self.severity}: {self.message}"]
        if self.text:
            shown = self.text.replace("\t", " ")
            out.append("    " + shown)
            width = max(1, min(self.length, len(shown) - self.column + 1))
            out.append("    " + " " * (self.column - 1) + "^" * width)
        if self.help:
            out.append(f"  help: {self.help}")
        return "\n".join(out)


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_QUOTED = r"(?:\"{name}\"|'{name}'|{name})"


_HEADER = re.compile(r"^\s*\[(?:\[\s*([^\[\]]+?)\s*\]\]|([^\[\]]+)\])")
"""``[[kind]]`` (group 1) or ``[kind.name]`` (group 2)."""
_DOT = re.compile(r"\s*\.\s*")
_KEY = re.compile(r"""^(\s*)(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=""")


class Locator:
    """Positions in one rule file's text. The table headers are indexed in one pass
    over the lines, on first use, and the keys of a table when one is first looked
    up in it, so finding the place of every entry of a large file stays linear (and
    what only errors need is not done for a file without errors)."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.lines = text.splitlines()
        self._starts: list[int] | None = None
        self._headers: dict[str, int] | None = None
        self._arrays: dict[str, list[int]] = {}
        self._keys: dict[int, dict[str, tuple[int, int]] | None] = {}
        """Header line -> {key: (line, column)} of the keys of that table (None until
        one is looked up)."""

    @property
    def starts(self) -> list[int]:
        """The offset of each line's first character."""
        if self._starts is None:
            self._starts = [0]
            self._starts += [match.end() for match in re.finditer(r"\n", self.text)]
        return self._starts

    def error(
        self, line: int, column: int, message: str, length: int = 1, help: str = ""
    ) -> RuleError:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return RuleError(self.file, line, column, message, text, length, help)

    def toml_error(self, message: str) -> RuleError:
        match = _TOML_POSITION.search(message)
        clean = _TOML_POSITION.sub("", message).strip()
        if not match:
            return RuleError(self.file, 0, 0, f"invalid TOML: {clean}")
        line, column = int(match.group(1)), int(match.group(2))
        return self.error(line, column, f"invalid TOML: {clean}")

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column), both 1-based, of a character offset into the text."""
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self.starts[lo] + 1

    def _index(self) -> dict[str, int]:
        if self._headers is None:
            headers: dict[str, int] = {}
            lines = self.lines
            for i in [i for i, line in enumerate(lines) if line.lstrip()[:1] == "["]:
                self._keys[i + 1] = None
                m = _HEADER.match(lines[i])
                if m is None:
                    continue
                array, table = m.groups()
                if array is not None:
                    self._arrays.setdefault(array, []).append(i + 1)
                    continue
                table = table.strip()
                if "." in table:
                    table = _DOT.sub(".", table)
                if '"' in table or "'" in table:
                    table = table.replace('"', "").replace("'", "")
                headers.setdefault(table, i + 1)
            self._headers = headers
        return self._headers

    def _table_keys(self, header: int) -> dict[str, tuple[int, int]]:
        """{key: (line, column)} of the keys of the table whose header is on line
        *header* (an indexed header line): the lines up to the next header."""
        keys = self._keys[header]
        if keys is None:
            keys = self._keys[header] = {}
            for i in range(header, len(self.lines)):
                line = self.lines[i]
                if line.lstrip()[:1] == "[":
                    break
                m = _KEY.match(line)
                if m:
                    name = next(g for g in m.groups()[1:] if g is not None)
                    keys.setdefault(name, (i + 1, len(m.group(1)) + 1))
        return keys

    def table(self, kind: str, name: str | None = None, index: int | None = None) -> int:
        """Line (1-based) of ``[kind.name]``, the *index*-th ``[[kind]]`` or ``[kind]``;
        0 if not found."""
        headers = self._index()
        if index is not None:
            found = self._arrays.get(kind, [])
            return found[index] if index < len(found) else 0
        found = headers.get(kind if name is None else f"{kind}.{name}")
        if found:
            return found
        if name is None:
            pattern = re.compile(rf"^\s*\[\s*{re.escape(kind)}\s*\]")
        else:
            quoted = _QUOTED.format(name=re.escape(name))
            pattern = re.compile(rf"^\s*\[\s*{re.escape(kind)}\s*\.\s*{quoted}\s*\]")
        for i, line in enumerate(self.lines):
            if pattern.match(line):
                return i + 1
        return 0

    def key(self, header: int, key: str) -> tuple[int, int]:
        """(line, column) of ``key =`` in the table starting at line *header*; the
        header itself if the key is not found there."""
        if not header:
            return 1, 1
        self._index()
        if header in self._keys:
            return self._table_keys(header).get(key, (header, 1))
        # Not a table header (the top of the file): look at the lines that follow.
        pattern = re.compile(rf"^(\s*){_QUOTED.format(name=re.escape(key))}\s*=")
        for i in range(header, len(self.lines)):
            line = self.lines[i]
            if re.match(r"^\s*\[", line):
                break
            match = pattern.match(line)
            if match:
                return i + 1, len(match.group(1)) + 1
        return header, 1

    def string_offsets(self, line: int, column: int) -> list[int] | None:
        """For the TOML string value of the ``key =`` at (line, column): the raw text
        offset of each character of the decoded string, plus one past its end."""
        start = self.starts[line - 1] + column - 1
        eq = self.text.find("=", start)
        if eq < 0:
            return None
        pos = eq + 1
        while pos < len(self.text) and self.text[pos] in " \t":
            pos += 1
        text = self.text
        for delim in ('"""', "'''", '"', "'"):
            if text.startswith(delim, pos):
                break
        else:
            return None
        i = pos + len(delim)
        multi = len(delim) == 3
        if multi and text.startswith("\n", i):
            i += 1
        elif multi and text.startswith("\r\n", i):
            i += 2
        offsets: list[int] = []
        basic = delim[0] == '"'
        while i < len(text):
            if text.startswith(delim, i):
                break
            ch = text[i]
            if not multi and ch == "\n":
                break
            if basic and ch == "\\":
                nxt = text[i + 1 : i + 2]
                if nxt == "u":
                    offsets.append(i)
                    i += 6
                elif nxt == "U":
                    offsets.append(i)
                    i += 10
                elif multi and nxt in (" ", "\t", "\n", "\r"):
                    i += 1  # line-ending backslash: skip the whitespace that follows
                    while i < len(text) and text[i] in " \t\r\n":
                        i += 1
                else:
                    offsets.append(i)
                    i += 2
                continue
            offsets.append(i)
            i += 1
        offsets.append(i)
        return offsets

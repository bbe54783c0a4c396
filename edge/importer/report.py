"""What ``edge import`` tells the operator: the report, a bad line, a file that cannot
be imported at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

MAX_ERRORS_SHOWN: Final = 50


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

"""The import's progress bars on stderr."""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
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

"""The rule set that is serving, and the watcher that swaps in a new one.

``LiveRules`` polls the rule directory: ``reload()`` swaps in a new rule set only if it
is valid, otherwise the errors are kept for the log and ``/_edge/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from edge.rules.errors import RuleError
from edge.rules.ruleset import (
    LIBRARY_DIR,
    LIBRARY_SEGMENTS,
    RuleSet,
    compile_sources,
    load_rules,
    rule_files,
)

log = logging.getLogger("edge.rules")


class LiveRules:
    """The rule set that is serving, reloaded when the files change.

    ``reload()`` compares file names, sizes and mtimes, then content hashes; a valid
    edit is swapped in at once (one assignment), an invalid one leaves the serving
    rules in place and its errors in ``errors``. Every rule set's pages are its files'
    ``[page_types]`` (the empty rule set served before any file loads has none).

    *snippets* lists the snippet files there are: the placements' are checked against
    them, and a change in the list counts as a change of the files (a placement
    refused for a snippet not yet written loads once the snippet is there)."""

    def __init__(
        self,
        directory: str | Path,
        only: Sequence[str] | None = None,
        snippets: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.only = only
        self.snippets = snippets
        self._snippet_names: frozenset[str] | None = None
        empty, _ = compile_sources(())
        assert empty is not None  # no files, no errors
        self.ruleset: RuleSet = empty
        self.errors: list[RuleError] = []
        self.loaded = False
        self._stat: tuple[Any, ...] | None = None
        self._digest = ""
        self.reload()

    @property
    def ok(self) -> bool:
        """Serving the current files (for readiness)."""
        return self.loaded and not self.errors

    def _stats(self) -> tuple[Any, ...]:
        try:
            paths = rule_files(self.directory, self.only)
            files = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
        except OSError:
            files = ()
        return files, self._list_snippets()

    def _list_snippets(self) -> frozenset[str] | None:
        if self.snippets is None:
            return None
        try:
            self._snippet_names = frozenset(self.snippets())
        except OSError as exc:  # kept as they were: the snippets' loader will say it
            log.warning("rules: cannot list the snippets: %s", exc)
        return self._snippet_names

    def reload(self) -> bool:
        """Load the files if they changed; True if a new rule set is now serving."""
        stat = self._stats()
        if stat == self._stat:
            return False
        self._stat = stat
        digest = hashlib.sha256(repr(sorted(stat[1] or ())).encode())
        for path in rule_files(self.directory, self.only):
            with contextlib.suppress(OSError):
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        if digest.hexdigest() == self._digest:
            return False
        self._digest = digest.hexdigest()
        ruleset, errors = load_rules(self.directory, self.only, self._snippet_names)
        if ruleset is None:
            self.errors = errors
            for error in errors:
                log.error("%s", error)
            if self.loaded:
                log.error("rules: kept the rules that were serving (%d errors)", len(errors))
            return False
        self.ruleset = ruleset
        self.errors = []
        self.loaded = True
        for warning in ruleset.warnings:
            log.warning("%s", warning)
        log.info(
            "rules: %d segments, %d placements loaded",
            len(ruleset.segments),
            len(ruleset.placements),
        )
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the directory every *interval* seconds (run it as a task)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload()
            except Exception:  # a reload must never stop the watcher
                log.exception("rules: reload failed")


def rules_directory(configured: str) -> tuple[Path, tuple[str, ...] | None]:
    """The merchant's rule directory; without one, the shipped library's segments
    (its placements map the demo shop's theme, not this shop's)."""
    path = Path(configured)
    if path.is_dir():
        return path, None
    log.info("no rule directory %s: the shipped segment library, no placements", path)
    return LIBRARY_DIR, LIBRARY_SEGMENTS

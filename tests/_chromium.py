"""Debian's Chromium for the browser tests, driven by Playwright (which cannot download
browsers of its own here): :func:`launched` starts one, and the ``browser`` fixture
(made available to every module by tests/conftest.py) gives a module one launch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
MISSING = "needs Debian's chromium at /usr/bin/chromium (tests/run.sh installs it)"
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)


@contextmanager
def launched() -> Iterator[Browser]:
    """A headless Chromium, closed after."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
            timeout=30_000,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(MISSING)
    with launched() as chromium:
        yield chromium

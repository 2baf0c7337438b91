"""Debian's Chromium driven by Playwright, for the dashboard's tests: the browser, a page's
console errors, and where screenshots go."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT

CHROMIUM = "/usr/bin/chromium"


def artifact(name: str) -> Path:
    """Where a test leaves files for a human to look at: PREDQ_TEST_ARTIFACTS, or test-artifacts/
    (ignored by git) at the repository root."""
    directory = Path(os.environ.get("PREDQ_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def launch() -> Iterator[Any]:
    """A headless Chromium (never a browser `playwright install` fetched), closed afterwards."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


class Console:
    """Every console error and uncaught exception of a page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error"
                else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

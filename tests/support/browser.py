"""Debian's headless Chromium driven by Playwright (never a browser `playwright install`
fetched), for the pages the API serves (the dashboard, /docs): the browser, a page's console
errors and CSP violations, and where tests leave screenshots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT

CHROMIUM = "/usr/bin/chromium"
#: Runs before any script of a page (Playwright injects it, the page's CSP does not apply):
#: every Content-Security-Policy violation is kept, whether or not Chromium logs it.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium, or a skipped test where there is none."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """Every console error, uncaught exception and CSP violation of a page."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self._errors: list[str] = []
        page.add_init_script(WATCH_CSP)
        page.on("console", lambda msg: self._errors.append(msg.text) if msg.type == "error"
                else None)
        page.on("pageerror", lambda exc: self._errors.append(f"uncaught: {exc}"))

    @property
    def errors(self) -> list[str]:
        violations = self.page.evaluate("window.__cspViolations || []")
        return self._errors + [f"CSP: {v}" for v in violations]


def artifact(name: str) -> Path:
    """Where a test leaves files for a human to look at: PREDQ_TEST_ARTIFACTS, or test-artifacts/
    (ignored by git) at the repository root."""
    directory = Path(os.environ.get("PREDQ_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


@contextmanager
def watched_page(browser: Any, width: int = 1280, height: int = 900
                 ) -> Iterator[tuple[Any, Console]]:
    """A new page of `browser` at this viewport, with its Console; closed afterwards."""
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        yield page, Console(page)
    finally:
        page.close()

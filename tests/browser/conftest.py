"""Browser tests: Playwright drives Debian's Chromium against a real Maestro on a local port.

The server is the app on a TCP port of 127.0.0.1 with the runner and scheduler running on the
local BigQuery + GCS (the ``services`` fixture), over the test's PostgreSQL. Playwright's own
browser download is not reachable here, so Chromium is launched by path: ``MAESTRO_CHROMIUM``
or ``chromium`` on the PATH (``make test`` installs Debian's package when it is missing;
scripts/install-chromium.sh). Without it these tests fail, saying so: they are not skipped.

Every page a test opens records its JavaScript errors (``pageerror``) and console errors; any
of them fails the test at teardown. Screenshots go to ``MAESTRO_SCREENSHOTS`` when set (docs/ui/
is made that way: see docs/ui.md), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from maestro.events import Metadata
from maestro.handlers.people.login_links import LoginLinks
from maestro.http.app import create_app

TESTS = Metadata(actor="system:tests")


def chromium_path() -> str:
    path = os.environ.get("MAESTRO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is not installed: run `make test` (it installs Debian's chromium) or "
                    "scripts/install-chromium.sh, or set MAESTRO_CHROMIUM to its path")
    return path


@dataclass
class Site:
    url: str
    runtime: Any
    shots: Path
    browser: Browser
    errors: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    async def page_for(self, user_id: str) -> Page:
        """A new browser (its own cookies) signed in as ``user_id`` with a one-time login link."""
        token, _ = await LoginLinks(self.runtime.store, self.runtime.users, self.runtime.sessions).create(user_id, TESTS)
        context = await self.browser.new_context(viewport={"width": 1280, "height": 900})
        self.contexts.append(context)
        page = await context.new_page()
        self.watch(page)
        await page.goto(f"{self.url}/login/link?token={token}")
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{self.url}/tables")
        return page

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: page error: {exc}"))

        def console(message: Any) -> None:
            # A refused request (a 4xx the test provokes on purpose) is logged by Chromium as a console
            # error "Failed to load resource"; the page handles those itself. Anything else is a bug.
            if message.type == "error" and "Failed to load resource" not in message.text:
                self.errors.append(f"{page.url}: console error: {message.text}")

        page.on("console", console)

    async def shot(self, page: Page, name: str) -> None:
        await page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


@pytest.fixture
async def site(runtime, services, tmp_path: Path) -> AsyncIterator[Site]:
    app = create_app(runtime.settings, runtime=runtime)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    shots = Path(os.environ.get("MAESTRO_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        s = Site(f"http://127.0.0.1:{port}", runtime, shots, browser)
        try:
            yield s
        finally:
            for context in s.contexts:
                await context.close()
            await browser.close()
            await runner.cleanup()
    assert not s.errors, "JavaScript errors on the pages:\n" + "\n".join(s.errors)

"""Browser fixtures: the app on a live local server, Debian's Chromium through Playwright, axe-core.

Chromium is never downloaded: Playwright drives /usr/bin/chromium (`apt-get install chromium`).
Tests here are marked `browser`; tests/conftest.py skips them, with the reason, only where that
binary is missing outside CI. Screenshots go to var/screenshots/ (ignored by git); their paths are
listed at the end of the run.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from werkzeug.serving import BaseWSGIServer, make_server

from consent_service import create_app, runtime
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import Patron, Topic
from tests.conftest import CHROMIUM, NOW

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# WCAG 2.0, 2.1 and 2.2 at levels A and AA, and axe's best practices
AXE_OPTIONS = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa",
                                          "best-practice"]},
    "resultTypes": ["violations"],
}

_taken: list[tuple[str, Path, int]] = []  # (page, screenshot, axe violations), for the summary


@dataclass
class LiveSite:
    """The app served on 127.0.0.1 for a real browser, with helpers to arrange data."""

    app: Flask
    url: str
    topics: list[str] = field(default_factory=list)
    _cards: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def patron(self, *, first_name: str, email: str | None, language: str = "en",
               birth_date: date | None = date(1984, 4, 2), **fields: Any) -> Patron:
        with self.app.app_context():
            ctx = runtime.context(self.app)
            patron = Patron(card_number=f"B{next(self._cards):07d}", first_name=first_name,
                            last_name="Example", email=email,
                            address_key=ctx.address_key(email) if email else None,
                            birth_date=birth_date, preferred_language=language,
                            created_at=NOW, updated_at=NOW, **fields)
            db.session.add(patron)
            db.session.commit()
            db.session.refresh(patron)
            db.session.expunge(patron)
            return patron

    def link(self, kind: LinkKind, patron: Patron, topic: str | None = None) -> str:
        with self.app.app_context():
            return runtime.context(self.app).link(kind, patron.public_id, topic)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LiveSite]:
    """A fresh app and database, served by werkzeug on a free port in a thread. SQLite in memory
    uses one shared connection, so the server thread sees the tables the test fills in."""
    app = create_app({
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": "sqlite://",
        "SECRET_KEY": "browser-test-secret-key",
        "ADDRESS_HASH_KEY": "browser-test-address-hash-key",
        "MAIL_BACKEND": "memory",
        "MAIL_FILE_DIR": str(tmp_path / "mail"),
        "CLOCK": lambda: NOW,
    })
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app)
    url = f"http://127.0.0.1:{server.server_port}"
    app.config["PUBLIC_BASE_URL"] = url  # before the first request builds the service context
    with app.app_context():
        db.create_all()
        for key, name in (("events", "Library events"), ("kids_teens", "Kids & teens")):
            db.session.add(Topic(key=key, name=name, created_at=NOW))
        db.session.commit()
    thread = threading.Thread(target=server.serve_forever, name="live-site", daemon=True)
    thread.start()
    try:
        yield LiveSite(app, url, ["events", "kids_teens"])
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Open browser contexts (a fresh profile each: no cookies) and close them after the test."""
    opened: list[BrowserContext] = []

    def open_context(**options: Any) -> BrowserContext:
        context = browser.new_context(**{"viewport": {"width": 1024, "height": 800}, **options})
        context.set_default_timeout(10_000)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        context.close()


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context().new_page()


@pytest.fixture
def csp_reports(page: Page) -> list[str]:
    """Console errors the page reports (a Content-Security-Policy violation would show here)."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    return errors


@pytest.fixture
def check_page() -> Callable[[Page, str], int]:
    """Save a screenshot of the page as NAME.png and run axe-core on it; assert no violation."""

    def check(page: Page, name: str) -> int:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        results = Axe().run(page, options=AXE_OPTIONS)
        _taken.append((name, path, results.violations_count))
        assert results.violations_count == 0, results.generate_report()
        return results.violations_count

    return check


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _taken:
        return
    terminalreporter.section("browser pages: screenshot and axe-core violations")
    for name, path, violations in _taken:
        terminalreporter.write_line(f"{name:<28} axe violations: {violations}  {path}")

"""Shared fixtures: an app per test on SQLite in memory, or on PostgreSQL when CONSENT_TEST_DATABASE_URL
is set (the schema is built once by the migrations, and every table is emptied after each test)."""

from __future__ import annotations

import contextvars
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from consent_service import configure_migrations, create_app, runtime
from consent_service.domain.tokens import LinkSigner
from consent_service.extensions import db
from consent_service.models import Patron
from consent_service.services.context import ServiceContext
from tests.log_watch import WATCH

POSTGRES_URL = os.environ.get("CONSENT_TEST_DATABASE_URL", "")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CHROMIUM = "/usr/bin/chromium"


def pytest_report_header() -> str:
    return f"database: {'PostgreSQL ' + POSTGRES_URL if POSTGRES_URL else 'SQLite in memory'}"


def pytest_configure(config: pytest.Config) -> None:
    """Watch the logs of the whole run (tests/log_watch.py): every record, with the service's own
    INFO lines, every signed link the run issues and every patron name it stores."""
    _install_log_watch()
    sign = LinkSigner.sign

    def watched_sign(self: LinkSigner, *args: Any, **kwargs: Any) -> str:
        token = sign(self, *args, **kwargs)
        WATCH.tokens.add(token)
        return token

    LinkSigner.sign = watched_sign  # type: ignore[method-assign]

    @event.listens_for(Patron, "before_insert")
    @event.listens_for(Patron, "before_update")
    def _names(mapper: Any, connection: Any, patron: Patron) -> None:
        WATCH.names.update(name for name in (patron.first_name, patron.last_name) if name)


def _install_log_watch() -> None:
    """(Again) put the watch on the root logger: the migrations' env.py configures logging from
    alembic.ini, which replaces the root logger's handlers (on PostgreSQL, in the first test)."""
    root = logging.getLogger()
    if WATCH not in root.handlers:
        root.addHandler(WATCH)
    logging.getLogger("consent_service").setLevel(logging.DEBUG)
    logging.getLogger("consent_service").disabled = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Any:
    WATCH.current = item.nodeid
    _install_log_watch()
    try:
        return (yield)
    finally:
        WATCH.current = "(between tests)"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _install_log_watch()  # after the fixtures: building the schema may have removed it


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The final check: a run whose logs hold a link, a key, an address or a patron's name fails."""
    leaks = WATCH.leaks()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"log watch: {WATCH.records} log records, {len(WATCH.tokens)} links "
                            f"issued, {len(WATCH.names)} patron names, {len(leaks)} leak(s)")
        kinds = Counter(f"{leak.logger} logged {leak.what}" for leak in leaks)
        for kind, count in kinds.most_common():
            reporter.write_line(f"log watch: {count} x {kind}", red=True)
        for leak in leaks[:10]:
            reporter.write_line(f"log watch: LEAK {leak}", red=True)
    if leaks and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the reason, what this machine cannot run: PostgreSQL-only tests on SQLite, and
    browser tests without Debian's chromium, except in CI (CI=true), which installs it: there they
    must run or fail. SQLite-only tests (the soak, issue 15's "embedded database") skip on
    PostgreSQL; CI's PostgreSQL step deselects them (`-m "not sqlite_only"`), where none may skip."""
    no_postgres = pytest.mark.skip(reason="needs PostgreSQL: set CONSENT_TEST_DATABASE_URL")
    only_sqlite = pytest.mark.skip(reason="runs on the embedded database (SQLite) only: unset "
                                          "CONSENT_TEST_DATABASE_URL")
    no_chromium = pytest.mark.skip(reason=f"needs Chromium at {CHROMIUM}: apt-get install chromium")
    chromium_missing = not os.path.exists(CHROMIUM) and not os.environ.get("CI")
    for item in items:
        if not POSTGRES_URL and item.get_closest_marker("postgresql_only"):
            item.add_marker(no_postgres)
        if POSTGRES_URL and item.get_closest_marker("sqlite_only"):
            item.add_marker(only_sqlite)
        if chromium_missing and item.get_closest_marker("browser"):
            item.add_marker(no_chromium)


@pytest.fixture(scope="session")
def _postgres_schema() -> Iterator[None]:
    """Build the schema on PostgreSQL once, through the migrations (so they are tested there too)."""
    if not POSTGRES_URL:
        yield
        return
    from flask_migrate import upgrade

    app = create_app({"SQLALCHEMY_DATABASE_URI": POSTGRES_URL, "TESTING": True})
    configure_migrations(app)
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("drop schema public cascade"))
            conn.execute(text("create schema public"))
        upgrade()
        db.engine.dispose()
    yield


class Clock:
    """The app's clock (the CLOCK setting): a fixed instant a test can move."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    """The app's clock for tests that move time (pass it as CLOCK to `app_factory`)."""
    return Clock(NOW)


def app_config(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": POSTGRES_URL or "sqlite://",
        "SECRET_KEY": "test-secret-key",
        "ADDRESS_HASH_KEY": "test-address-hash-key",
        "PUBLIC_BASE_URL": "https://consent.example.org",
        "MAIL_BACKEND": "memory",
        "MAIL_FILE_DIR": str(tmp_path / "mail"),
    }
    config.update(overrides)
    return config


class ClosingClient(FlaskClient):
    """A test client that serves each request as production does: in its own application context
    (the `session` fixture holds one open for the whole test, and a request made inside it would
    reuse it, carrying `g` — the CSRF token, the chosen language, the outbox's mark — from one request
    to the next), and closing the response as a WSGI server does, so what runs on close (mail sent
    from `response.call_on_close`) has run when the call returns. The test's own session sees the
    committed result once it expires what it holds."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return contextvars.Context().run(super().open, *args, **kwargs)


@pytest.fixture
def app_factory(tmp_path: Any, _postgres_schema: None) -> Iterator[Callable[..., Flask]]:
    """Make an app with extra settings; its database is fresh for the test."""
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app(app_config(tmp_path, **overrides))
        app.test_client_class = ClosingClient
        with app.app_context():
            if not POSTGRES_URL:
                db.create_all()
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            db.session.remove()
            if POSTGRES_URL:
                tables = ", ".join(t.name for t in db.metadata.sorted_tables)
                with db.engine.begin() as conn:
                    conn.execute(text(f"truncate {tables} restart identity cascade"))
            db.engine.dispose()


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """The app's database session, inside an application context."""
    with app.app_context():
        yield db.session


@pytest.fixture
def ctx(app: Flask, session: Session) -> ServiceContext:
    return runtime.context(app)


@pytest.fixture
def make_patron(session: Session, ctx: ServiceContext) -> Callable[..., Patron]:
    """Create and commit a patron; email is normalised and keyed as the import would do."""
    counter = iter(range(1, 1_000_000))

    def make(card: str | None = None, email: str | None = "reader@example.org",
             birth_date: date | None = date(1980, 5, 17), **fields: Any) -> Patron:
        n = next(counter)
        patron = Patron(
            card_number=card or f"2100{n:06d}",
            first_name=fields.pop("first_name", f"Reader{n}"),
            last_name=fields.pop("last_name", "Example"),
            email=email,
            address_key=ctx.address_key(email) if email else None,
            birth_date=birth_date,
            created_at=NOW,
            updated_at=NOW,
            **fields,
        )
        session.add(patron)
        session.commit()
        return patron

    return make

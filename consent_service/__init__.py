"""Consent Service: the library's system of record for what each patron has agreed to."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask

from consent_service import config as settings
from consent_service.extensions import babel, configure_migrations, csrf, db, limiter

STATIC_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: settings, extensions, blueprints, error pages and commands."""
    app = Flask(__name__, instance_relative_config=True, static_folder=STATIC_FOLDER)
    app.config.from_mapping(settings.load(app.instance_path, test_config))
    os.makedirs(app.instance_path, exist_ok=True)
    register_extensions(app)
    register_blueprints(app)
    register_error_pages(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    from consent_service import models  # noqa: F401 - the tables must be known to migrations

    db.init_app(app)
    configure_sqlite_file(app)
    check_connections(app)
    app.cli.add_command(_MigrationCommands(app))
    from consent_service.delivery import dispatch

    dispatch.init_app(app)
    from consent_service.web import i18n, security

    csrf.init_app(app)
    babel.init_app(app, locale_selector=i18n.select_locale)
    register_limiter(app)
    i18n.init_app(app)
    security.init_app(app)
    from consent_service.web import staff

    staff.init_app(app)


class _MigrationCommands(click.Command):
    """`flask db`, standing in for Flask-Migrate's command group until it is run: running it (or
    asking for its help) binds Flask-Migrate and hands over to its group, which replaces this one
    in `app.cli`. Listing the commands imports nothing."""

    def __init__(self, app: Flask) -> None:
        super().__init__("db", help="Perform database migrations.")
        self._app = app

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        configure_migrations(self._app)
        return self._app.cli.commands["db"].make_context(info_name, args, parent, **extra)


def configure_sqlite_file(app: Flask) -> None:
    """A SQLite database file (in-memory databases, one connection, are left as they are):

    - **WAL mode**: readers no longer wait for a writer (one-click requests in two gunicorn
      workers did, by hundreds of milliseconds), and a commit writes the log once instead of a
      rollback journal and the database (a one-click POST took 30 ms, now 14). `synchronous`
      stays FULL, so a commit is as durable as before. WAL needs the database on a local disk,
      not a network share (SQLite's own rule).
    - **Write turns**: connections take the database's write turn before their first write of a
      transaction and hand it over at once when it ends (see `sqlite_writer`): two gunicorn
      workers writing no longer wait in SQLite's busy handler, which sleeps up to 100 ms between
      tries."""
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    from consent_service import sqlite_writer

    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    turn = sqlite_writer.writer_turn(url.database)

    def write_ahead_log(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    def turn_taking_connection(_dialect: Any, _record: Any, _cargs: Any,
                               cparams: dict[str, Any]) -> None:
        timeout = float(cparams.get("timeout", sqlite_writer.DEFAULT_TIMEOUT))
        cparams["factory"] = sqlite_writer.connection_class(turn, timeout)

    with app.app_context():
        event.listen(db.engine, "connect", write_ahead_log)
        event.listen(db.engine, "do_connect", turn_taking_connection)


def check_connections(app: Flask) -> None:
    """PostgreSQL: a pooled connection the server has ended is replaced before a request uses
    it, without a round trip per request (see `connection_check`; SQLAlchemy's `pool_pre_ping`
    sent one). SQLite's connections are files and need no check."""
    from sqlalchemy.engine import make_url

    from consent_service.connection_check import check_postgresql_connections

    if make_url(app.config["SQLALCHEMY_DATABASE_URI"]).get_backend_name() == "postgresql":
        with app.app_context():
            check_postgresql_connections(db.engine)


def register_limiter(app: Flask) -> None:
    """Bind the limiter to its store; a store that cannot be used is refused in one line, which names
    only the store's scheme (its URL may hold a password)."""
    from limits.errors import ConfigurationError

    from consent_service import ratelimit  # noqa: F401 - registers the database:// store

    try:
        limiter.init_app(app)
    except ConfigurationError as error:
        url = app.config["RATELIMIT_STORAGE_URI"]
        shown = url.split("://", 1)[0] + "://…"
        raise settings.UnsafeConfigError(
            f"CONSENT_RATELIMIT_STORAGE_URL={shown} cannot be used: {str(error).replace(url, shown)}"
        ) from None


def register_blueprints(app: Flask) -> None:
    from consent_service.web import health

    app.register_blueprint(health.bp)
    from consent_service.web import public

    app.register_blueprint(public.bp)
    from consent_service.web import webhooks

    app.register_blueprint(webhooks.bp)
    from consent_service.web import guardians

    app.register_blueprint(guardians.bp)
    from consent_service.web import staff

    app.register_blueprint(staff.bp)
    from consent_service.web import staff_admin, staff_marketing, staff_patrons

    app.register_blueprint(staff_patrons.bp)
    app.register_blueprint(staff_marketing.bp)
    app.register_blueprint(staff_admin.bp)
    from consent_service.web import api

    api.init_app(app)


def register_error_pages(app: Flask) -> None:
    from consent_service.web import errors

    errors.init_app(app)


def register_commands(app: Flask) -> None:
    from consent_service import cli

    cli.register(app)

"""`flask demo`: builds the database, loads the demo once, and finishes a run that failed half-way."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from consent_service import create_app
from consent_service.domain import ConsentServiceError
from consent_service.extensions import db
from consent_service.models import ConsentEvent, Patron
from consent_service.services import demo as demo_service
from tests.conftest import app_config


@pytest.fixture
def fresh_app(tmp_path):
    """An app on an empty SQLite file: `demo` must build the schema itself (migrations)."""
    app = create_app(app_config(tmp_path, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
                                MAIL_BACKEND="file"))
    yield app
    with app.app_context():
        db.engine.dispose()


def counts(app):
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(Patron)),
                db.session.scalar(select(func.count()).select_from(ConsentEvent)))


def test_demo_builds_the_database_and_a_second_run_adds_nothing(fresh_app):
    first = fresh_app.test_cli_runner().invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    assert "Demo data is loaded" in first.output and "/guardian/" in first.output
    loaded = counts(fresh_app)
    assert loaded[0] == 6 and loaded[1] > 0

    again = fresh_app.test_cli_runner().invoke(args=["demo"])
    assert again.exit_code == 0, again.output
    assert counts(fresh_app) == loaded


def test_demo_finishes_a_run_that_failed_after_the_import(fresh_app, monkeypatch):
    def crash(*args, **kwargs):
        raise ConsentServiceError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(demo_service, "_demo_decisions", crash)
        failed = fresh_app.test_cli_runner().invoke(args=["demo"])
    assert failed.exit_code == 1 and failed.output.strip().splitlines()[-1] == "Error: disk full"
    assert "Traceback" not in failed.output
    assert counts(fresh_app) == (6, 0)  # the patrons were imported, no decision recorded

    finished = fresh_app.test_cli_runner().invoke(args=["demo"])
    assert finished.exit_code == 0, finished.output
    assert counts(fresh_app)[1] > 0

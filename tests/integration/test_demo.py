"""`flask demo`: builds the database, loads the demo once, and finishes a run that failed half-way."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

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


def test_the_demos_try_lines_and_addresses_work_as_printed(tmp_path):
    """Run as a newcomer does (the virtual environment not activated): every "Try:" command runs
    as printed, and the addresses offered for /preferences are demo patrons'."""
    flask = Path(sys.executable).with_name("flask")
    env = {**os.environ, "CONSENT_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
           "CONSENT_MAIL_FILE_DIR": str(tmp_path / "mail"),
           "PATH": "/usr/bin:/bin"}  # no `flask` on PATH, as before `source .venv/bin/activate`
    env.pop("CONSENT_ENV", None)
    demo = subprocess.run([str(flask), "--app", "consent_service", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)
    lines = demo.stdout.splitlines()
    tries = lines[lines.index("Try:") + 1:]
    assert len(tries) == 5
    for line in tries:
        ran = subprocess.run(shlex.split(line, comments=True), cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert ran.returncode == 0, (line, ran.stderr)
    [offered] = [line for line in lines if "email me a link" in line]
    assert "ana.reyes@example.org" in offered and "okafor.family@example.org" in offered

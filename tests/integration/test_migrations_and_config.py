"""Migrations build the models' schema; CONSENT_* settings are read; unsafe production fails."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from consent_service import create_app
from consent_service.config import DEV_ADDRESS_HASH_KEY, DEV_SECRET_KEY, UnsafeConfigError
from consent_service.extensions import db
from tests.conftest import app_config

REAL_SECRET_KEY = "a-real-secret-key-of-forty-random-characters"
REAL_ADDRESS_HASH_KEY = "a-real-address-hash-key-of-forty-characters"
RETIRED_SECRET_KEY = "a-retired-secret-key-of-forty-characters"
REFUSING = "refusing to start in production: "
PRODUCTION = {
    "CONSENT_ENV": "production",
    "TESTING": True,
    "SQLALCHEMY_DATABASE_URI": "sqlite://",
    "SECRET_KEY": REAL_SECRET_KEY,
    "ADDRESS_HASH_KEY": REAL_ADDRESS_HASH_KEY,
    "PUBLIC_BASE_URL": "https://consent.library.example",
}


@pytest.fixture(autouse=True)
def _no_consent_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings exported in the developer's shell must not change what these tests see."""
    for name in list(os.environ):
        if name.startswith("CONSENT_"):
            monkeypatch.delenv(name)


def flask_command(*args: str, database_url: str,
                  environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `flask --app consent_service ARGS` as an operator would, against `database_url`, with
    `environment`'s CONSENT_* settings and no others."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(environment or {})
    env["CONSENT_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "consent_service", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def production_environment(**changes: str) -> dict[str, str]:
    """The CONSENT_* variables of a safe production deployment, with `changes`."""
    return {
        "CONSENT_ENV": "production",
        "CONSENT_SECRET_KEY": REAL_SECRET_KEY,
        "CONSENT_ADDRESS_HASH_KEY": REAL_ADDRESS_HASH_KEY,
        "CONSENT_PUBLIC_BASE_URL": "https://consent.library.example",
        **changes,
    }


def unreachable_sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'no-such-directory' / 'consent.sqlite3'}"


def unreachable_postgresql() -> str:
    with socket.socket() as probe:  # a port nothing listens on: bound, then released
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql+psycopg://consent@127.0.0.1:{port}/consent"


@pytest.fixture(scope="module")
def upgraded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh SQLite file built by `flask db upgrade` alone."""
    url = f"sqlite:///{tmp_path_factory.mktemp('migrations') / 'consent.sqlite3'}"
    upgrade = flask_command("db", "upgrade", database_url=url)
    assert upgrade.returncode == 0, upgrade.stderr
    return url


def test_only_the_db_commands_import_alembic(upgraded_sqlite: str):
    """Commands other than `db` start without Alembic (a fifth of their start-up), while `db`
    still lists and runs Flask-Migrate's commands."""
    started = subprocess.run(
        [sys.executable, "-c", "import sys; from consent_service import create_app; "
         "create_app().test_cli_runner().invoke(args=['--help']); "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'flask_migrate')))"],
        env={**os.environ, "CONSENT_DATABASE_URL": upgraded_sqlite}, capture_output=True,
        text=True, timeout=120, check=True)
    assert started.stdout.strip() == "[]"
    listed = flask_command("--help", database_url=upgraded_sqlite)
    assert "db  " in listed.stdout and "Perform database migrations." in listed.stdout
    helped = flask_command("db", "--help", database_url=upgraded_sqlite)
    assert helped.returncode == 0 and "upgrade" in helped.stdout and "--x-arg" in helped.stdout
    current = flask_command("db", "current", database_url=upgraded_sqlite)
    assert current.returncode == 0 and "(head)" in current.stdout, current.stderr


def test_upgrade_on_a_fresh_database_builds_every_table_the_models_declare(upgraded_sqlite: str):
    engine = create_engine(upgraded_sqlite)
    try:
        built = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    declared = set(db.metadata.tables)
    missing, undeclared = declared - built, built - declared - {"alembic_version"}
    assert (missing, undeclared) == (set(), set())


def test_migrations_have_no_drift_from_the_models(upgraded_sqlite: str):
    check = flask_command("db", "check", database_url=upgraded_sqlite)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_production_starts_with_real_secrets_and_a_public_url():
    app = create_app(PRODUCTION)
    assert app.config["CONSENT_ENV"] == "production"
    assert app.config["SECRET_KEY"] == REAL_SECRET_KEY


@pytest.mark.parametrize(
    ("setting", "value", "variable"),
    [
        ("SECRET_KEY", DEV_SECRET_KEY, "CONSENT_SECRET_KEY"),
        ("SECRET_KEY", "too-short", "CONSENT_SECRET_KEY"),
        ("ADDRESS_HASH_KEY", DEV_ADDRESS_HASH_KEY, "CONSENT_ADDRESS_HASH_KEY"),
        ("ADDRESS_HASH_KEY", "too-short", "CONSENT_ADDRESS_HASH_KEY"),
        ("PUBLIC_BASE_URL", "http://127.0.0.1:5000", "CONSENT_PUBLIC_BASE_URL"),
        ("PUBLIC_BASE_URL", "http://consent.library.example", "CONSENT_PUBLIC_BASE_URL"),
    ],
)
def test_production_refuses_to_start_and_names_the_setting_to_fix(setting: str, value: str,
                                                                  variable: str):
    with pytest.raises(UnsafeConfigError, match=variable):
        create_app({**PRODUCTION, setting: value})


KEY_ADVICE = "use a random value of 32+ characters"
HASH_KEY_ADVICE = KEY_ADVICE + " (and never change it: suppressed addresses are stored under it)"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"SECRET_KEY_FALLBACKS": [DEV_SECRET_KEY]},
         f"CONSENT_SECRET_KEY_FALLBACKS holds a development key, which is published with the source; "
         f"{KEY_ADVICE}"),
        ({"SECRET_KEY_FALLBACKS": [RETIRED_SECRET_KEY, DEV_ADDRESS_HASH_KEY]},
         f"CONSENT_SECRET_KEY_FALLBACKS holds a development key, which is published with the source; "
         f"{KEY_ADVICE}"),
        ({"SECRET_KEY_FALLBACKS": [RETIRED_SECRET_KEY, "old-short-key"]},
         f"CONSENT_SECRET_KEY_FALLBACKS holds a key shorter than 32 characters; {KEY_ADVICE}"),
        ({"SECRET_KEY": DEV_ADDRESS_HASH_KEY},
         f"CONSENT_SECRET_KEY holds a development key, which is published with the source; "
         f"{KEY_ADVICE}"),
        ({"ADDRESS_HASH_KEY": DEV_SECRET_KEY},
         f"CONSENT_ADDRESS_HASH_KEY holds a development key, which is published with the source; "
         f"{HASH_KEY_ADVICE}"),
        ({"SECRET_KEY": REAL_ADDRESS_HASH_KEY},
         "CONSENT_SECRET_KEY is the same as CONSENT_ADDRESS_HASH_KEY; each needs its own random value"),
        ({"SECRET_KEY_FALLBACKS": [REAL_ADDRESS_HASH_KEY]},
         "CONSENT_SECRET_KEY_FALLBACKS holds CONSENT_ADDRESS_HASH_KEY; link keys and the address hash "
         "key must differ"),
        ({"MAIL_BACKEND": "memory"},
         "CONSENT_MAIL_BACKEND=memory keeps mail in memory and sends none; use sendgrid"),
        ({"RATELIMIT_STORAGE_URI": "memory://"},
         "CONSENT_RATELIMIT_STORAGE_URL=memory:// counts in each process apart, so every worker "
         "multiplies the limits; leave it unset (the service's database) or name a shared store such "
         "as redis://"),
    ],
    ids=["dev-key-as-fallback", "dev-hash-key-as-fallback", "short-fallback", "dev-hash-key-as-secret",
         "dev-secret-as-hash-key", "secret-is-hash-key", "fallback-is-hash-key", "memory-mail",
         "memory-rate-limits"],
)
def test_production_refuses_every_unsafe_key_mail_backend_and_rate_limit_store_in_one_line(
        settings: dict[str, object], message: str):
    with pytest.raises(UnsafeConfigError) as refused:
        create_app({**PRODUCTION, **settings})
    assert str(refused.value) == REFUSING + message


def test_production_with_the_development_key_as_a_fallback_refuses_to_start_from_the_flask_command(
        tmp_path: Path):
    done = flask_command("patrons", "show", "1", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                         environment=production_environment(
                             CONSENT_SECRET_KEY_FALLBACKS=f"{RETIRED_SECRET_KEY},{DEV_SECRET_KEY}"))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"Error: {REFUSING}CONSENT_SECRET_KEY_FALLBACKS holds a development key, which is published "
        f"with the source; {KEY_ADVICE}")


def test_production_from_the_environment_alone_refuses_the_development_key_as_a_fallback(
        monkeypatch: pytest.MonkeyPatch):
    for name, value in production_environment(CONSENT_SECRET_KEY_FALLBACKS=DEV_SECRET_KEY).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UnsafeConfigError) as refused:
        create_app()
    assert str(refused.value).startswith(f"{REFUSING}CONSENT_SECRET_KEY_FALLBACKS holds a development key")


@pytest.mark.parametrize("typed", ["Production", "prod", "production ", "PRODUCTION", "testing"])
def test_a_mistyped_environment_refuses_to_start_instead_of_running_development_mode(
        monkeypatch: pytest.MonkeyPatch, typed: str):
    monkeypatch.setenv("CONSENT_ENV", typed)
    with pytest.raises(UnsafeConfigError) as refused:
        create_app()
    assert str(refused.value) == f"CONSENT_ENV must be development or production, not {typed!r}"


def test_the_flask_command_refuses_a_mistyped_environment_in_one_line(tmp_path: Path):
    done = flask_command("patrons", "show", "1", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                         environment=production_environment(CONSENT_ENV="Production"))
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: CONSENT_ENV must be development or production, not 'Production'"


def test_production_sends_the_session_cookie_only_over_https_and_never_to_scripts():
    client = create_app(PRODUCTION).test_client()
    page = client.get("/preferences", base_url="https://consent.library.example")
    [cookie] = page.headers.getlist("Set-Cookie")
    attributes = [part.strip() for part in cookie.split(";")]
    assert cookie.startswith("session=")
    assert {"Secure", "HttpOnly", "SameSite=Lax"} <= set(attributes)


def test_production_counts_rate_limits_in_its_own_database_and_development_in_memory():
    assert create_app(PRODUCTION).config["RATELIMIT_STORAGE_URI"] == "database://"
    assert create_app({**PRODUCTION, "CONSENT_ENV": "development"}
                      ).config["RATELIMIT_STORAGE_URI"] == "memory://"


def test_the_flask_command_refuses_a_rate_limit_store_it_cannot_use_in_one_line(tmp_path: Path):
    done = flask_command("patrons", "show", "1", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                         environment=production_environment(
                             CONSENT_RATELIMIT_STORAGE_URL="carrier-pigeon://keeper:s3cret@loft"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == ("Error: CONSENT_RATELIMIT_STORAGE_URL=carrier-pigeon://… cannot be used: "
                    "unknown storage scheme : carrier-pigeon://…")


def test_production_from_the_environment_alone_refuses_the_development_secret_key(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONSENT_ENV", "production")
    with pytest.raises(UnsafeConfigError, match="CONSENT_SECRET_KEY"):
        create_app()


def test_settings_are_read_from_consent_environment_variables(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path):
    database_url = f"sqlite:///{tmp_path / 'library.sqlite3'}"
    monkeypatch.setenv("CONSENT_ENV", "production")
    monkeypatch.setenv("CONSENT_DATABASE_URL", database_url)
    monkeypatch.setenv("CONSENT_SECRET_KEY", REAL_SECRET_KEY)
    monkeypatch.setenv("CONSENT_SECRET_KEY_FALLBACKS", f"{RETIRED_SECRET_KEY},{RETIRED_SECRET_KEY}-2")
    monkeypatch.setenv("CONSENT_ADDRESS_HASH_KEY", REAL_ADDRESS_HASH_KEY)
    monkeypatch.setenv("CONSENT_PUBLIC_BASE_URL", "https://consent.library.example/")
    monkeypatch.setenv("CONSENT_MAIL_BACKEND", "sendgrid")
    monkeypatch.setenv("CONSENT_SENDGRID_API_KEY", "SG.test-key")
    monkeypatch.setenv("CONSENT_RATELIMIT_STORAGE_URL", "database://")
    monkeypatch.setenv("CONSENT_SENDGRID_WEBHOOK_MAX_AGE", "600")

    config = create_app().config

    assert config["SQLALCHEMY_DATABASE_URI"] == database_url
    assert config["SECRET_KEY"] == REAL_SECRET_KEY
    assert config["SECRET_KEY_FALLBACKS"] == [RETIRED_SECRET_KEY, f"{RETIRED_SECRET_KEY}-2"]
    assert config["ADDRESS_HASH_KEY"] == REAL_ADDRESS_HASH_KEY
    assert config["PUBLIC_BASE_URL"] == "https://consent.library.example"
    assert config["MAIL_BACKEND"] == "sendgrid"
    assert config["RATELIMIT_STORAGE_URI"] == "database://"
    assert config["SENDGRID_WEBHOOK_MAX_AGE"] == 600


@pytest.mark.parametrize("variable",
                         ["CONSENT_SENDGRID_WEBHOOK_MAX_AGE", "CONSENT_LINK_DAYS_GUARDIAN"])
def test_a_malformed_number_is_refused_in_one_line_naming_its_variable(
        monkeypatch: pytest.MonkeyPatch, variable: str):
    monkeypatch.setenv(variable, "two days")
    with pytest.raises(UnsafeConfigError) as refused:
        create_app()
    message = str(refused.value)
    assert variable in message
    assert "'two days'" in message
    assert "\n" not in message


def test_health_and_readiness_answer_ok_when_the_database_answers(client):
    health = client.get("/healthz")
    ready = client.get("/readyz")
    assert (health.status_code, health.get_json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.get_json()) == (200, {"status": "ok"})


def test_readiness_answers_503_with_a_reason_when_the_database_is_unreachable(tmp_path: Path):
    app = create_app(app_config(tmp_path, SQLALCHEMY_DATABASE_URI=unreachable_sqlite(tmp_path)))
    client = app.test_client()

    ready = client.get("/readyz")
    alive = client.get("/healthz")

    assert ready.status_code == 503
    assert ready.get_json() == {"status": "unavailable", "reason": "database unreachable"}
    assert alive.status_code == 200
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(
    ("command", "database"),
    [
        (("patrons", "show", "NOPE"), "sqlite"),
        (("patrons", "show", "NOPE"), "postgresql"),
        (("export", "contacts", "--purpose", "email_marketing"), "sqlite"),
    ],
)
def test_a_command_against_an_unreachable_database_fails_in_one_line_without_a_traceback(
        tmp_path: Path, command: tuple[str, ...], database: str):
    url = unreachable_sqlite(tmp_path) if database == "sqlite" else unreachable_postgresql()

    result = flask_command(*command, database_url=url)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: database unreachable or not ready: ")


def test_the_flask_command_reports_a_malformed_setting_in_one_line(tmp_path: Path):
    env = {**os.environ, "CONSENT_SENDGRID_WEBHOOK_MAX_AGE": "two days",
           "CONSENT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "consent_service", "patrons", "show", "1"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == ("Error: CONSENT_SENDGRID_WEBHOOK_MAX_AGE must be a whole number, "
                                   "not 'two days'")


def test_a_sqlite_database_file_is_used_in_write_ahead_log_mode(tmp_path: Path):
    """Readers then never wait for a one-click writer in another worker, and a commit writes once."""
    database = tmp_path / "consent.sqlite3"
    app = create_app(app_config(tmp_path, SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}"))
    with app.app_context():
        db.create_all()
        mode = db.session.execute(text("PRAGMA journal_mode")).scalar()
        synchronous = db.session.execute(text("PRAGMA synchronous")).scalar()
        db.session.remove()
        db.engine.dispose()
    assert mode == "wal"
    assert synchronous == 2  # FULL: a committed decision survives a power cut
    with closing(sqlite3.connect(database)) as plain:  # the mode is kept in the file itself
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)

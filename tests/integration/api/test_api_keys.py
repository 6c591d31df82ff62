"""`apikeys create/list/revoke` and what a key lets through: shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select

from consent_service.models import ApiKey
from tests.conftest import NOW
from tests.integration.api.helpers import bearer


def create(runner, *args):  # type: ignore[no-untyped-def]
    return runner.invoke(args=["apikeys", "create", *args])


def test_a_key_is_shown_once_and_only_its_hash_is_stored(runner, session):
    result = create(runner, "ILS nightly", "--scope", "patrons:write", "--scope", "consents:read")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("csk_") and len(key) >= 40
    row = session.scalar(select(ApiKey))
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (row.key_hash, row.prefix, row.name, row.scopes)
    assert key.startswith(row.prefix) and len(row.prefix) == 12
    assert row.scopes == "patrons:write consents:read"
    listing = runner.invoke(args=["apikeys", "list"]).output
    assert key not in listing
    assert "ILS nightly" in listing and row.prefix in listing


def test_the_key_works_as_a_bearer_token(runner, client):
    key = create(runner, "ils", "--scope", "consents:read").stdout.strip().splitlines()[-1]
    assert client.get("/api/v1/events", headers=bearer(key)).status_code == 200


def test_an_unknown_scope_is_refused_naming_the_scopes(runner, session):
    result = create(runner, "ils", "--scope", "patrons:delete")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: unknown scope 'patrons:delete'; the scopes are: patrons:write, consents:read, "
        "consents:write, exports:read, patrons:erase")
    assert session.scalar(select(ApiKey)) is None


def test_a_name_in_use_is_refused(runner):
    assert create(runner, "ils", "--scope", "consents:read").exit_code == 0
    result = create(runner, "ils", "--scope", "exports:read")
    assert result.exit_code == 1
    assert "a key named 'ils' exists already" in result.output


def test_the_list_shows_scopes_creation_last_use_and_revocation(runner, client, make_key, clock):
    key = make_key("consents:read", name="mailer")
    make_key("exports:read", name="reports")
    clock.at = NOW + timedelta(hours=2)
    client.get("/api/v1/events", headers=bearer(key))
    runner.invoke(args=["apikeys", "revoke", "reports"])
    lines = runner.invoke(args=["apikeys", "list"]).output.splitlines()
    assert lines[0].split() == ["name", "prefix", "scopes", "created", "last", "used", "revoked"]
    mailer, reports = lines[1], lines[2]
    assert mailer.startswith("mailer ") and "consents:read" in mailer
    assert mailer.count("2026-06-01 12:00 UTC") == 1  # created; used at 14:00; not revoked
    assert "2026-06-01 14:00 UTC" in mailer and mailer.endswith("-")
    assert reports.startswith("reports ") and reports.endswith("2026-06-01 14:00 UTC")


def test_a_revoked_key_is_refused_from_the_next_request(runner, client, make_key):
    key = make_key("consents:read", name="mailer")
    assert client.get("/api/v1/events", headers=bearer(key)).status_code == 200
    result = runner.invoke(args=["apikeys", "revoke", key[:12]])  # by its prefix
    assert result.exit_code == 0
    assert result.output.startswith(f"API key 'mailer' ({key[:12]}…) revoked")
    response = client.get("/api/v1/events", headers=bearer(key))
    assert response.status_code == 401
    assert response.json["message"] == "the API key is unknown or revoked"
    again = runner.invoke(args=["apikeys", "revoke", "mailer"])
    assert again.exit_code == 0 and "was revoked already" in again.output


def test_revoking_an_unknown_key_fails_in_one_line(runner):
    result = runner.invoke(args=["apikeys", "revoke", "nobody"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: no API key is named 'nobody' or starts 'nobody' (see `apikeys list`)")

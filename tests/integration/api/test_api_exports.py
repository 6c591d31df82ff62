"""`GET /api/v1/exports/contacts`: the same CSV as `flask export contacts`, streamed, and recorded."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.models import ExportManifest, Topic
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW
from tests.integration.api.helpers import bearer

HOME = {"street": "1 Main St", "city": "Golden", "state": "CO", "postal_code": "80401"}


def test_the_csv_is_the_one_the_command_writes(client, runner, key, session, ctx, make_patron,
                                               tmp_path):
    ana = make_patron(first_name="Ana", email="ana@example.org", **HOME)
    sam = make_patron(first_name="=Sam", email="sam@example.org", **HOME)
    make_patron(first_name="Noa", email=None, street="")  # no postal address: left out
    record_decision(session, ctx, DecisionRequest(
        purpose="postal_marketing", decision=Decision.OPT_OUT, source=Source.STAFF_DESK,
        actor=Actor.PATRON, occurred_at=NOW, patron=sam), now=NOW)
    session.commit()

    temporary = set(Path(tempfile.gettempdir()).glob("consent-export-*"))
    response = client.get("/api/v1/exports/contacts?purpose=postal_marketing",
                          headers=bearer(key))
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=contacts-postal_marketing-2026-06-01.csv")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data()
    output = tmp_path / "contacts.csv"
    result = runner.invoke(args=["export", "contacts", "--purpose", "postal_marketing",
                                 "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert body == output.read_bytes()
    assert body.decode().splitlines() == [
        "patron_id,first_name,last_name,email,street,city,state,postal_code",
        f"{ana.public_id},Ana,Example,ana@example.org,1 Main St,Golden,CO,80401"]
    session.expire_all()
    first = session.scalar(select(ExportManifest).order_by(ExportManifest.id))
    assert (first.created_by, first.purpose, first.row_count, first.excluded_counts) == (
        "api:system 1", "postal_marketing", 1, {"no_postal_address": 1, "opted_out": 1})
    assert first.sha256 == hashlib.sha256(body).hexdigest() == response.headers["X-Export-Sha256"]
    assert response.headers["X-Export-Id"] == str(first.id)
    assert set(Path(tempfile.gettempdir()).glob("consent-export-*")) == temporary  # removed


def test_an_email_export_gives_one_row_per_address_with_links(client, key, session, make_patron):
    session.add(Topic(key="events", name="Events", created_at=NOW))
    session.commit()
    ana = make_patron(email="home@example.org")
    make_patron(email="home@example.org")
    response = client.get("/api/v1/exports/contacts",
                          query_string={"purpose": "email_marketing", "topic": "events"},
                          headers=bearer(key))
    header, row = response.get_data(as_text=True).splitlines()
    assert header == ("email,first_name,last_name,preferred_language,patron_id,unsubscribe_url,"
                      "preferences_url")
    assert row.startswith(f"home@example.org,{ana.first_name},Example,en,{ana.public_id},"
                          "https://consent.example.org/unsubscribe/")


def test_an_unknown_purpose_or_topic_is_422_and_records_no_export(client, key, session):
    for query, field in (({"purpose": "telepathy"}, "purpose"),
                         ({"purpose": "email_marketing", "topic": "nope"}, "topic"),
                         ({}, "purpose")):
        response = client.get("/api/v1/exports/contacts", query_string=query,
                              headers=bearer(key))
        assert response.status_code == 422
        assert list(response.json["errors"]["query"]) == [field]
    session.expire_all()
    assert session.scalar(select(ExportManifest)) is None

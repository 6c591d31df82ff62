"""`GET /api/v1/events`: the ledger for downstream systems, a page at a time, with a cursor that
stays put while new events arrive, and no card number or address in it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.extensions import db
from consent_service.models import Patron
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW
from tests.integration.api.helpers import bearer

PURPOSES = ("email_marketing", "postal_marketing", "photo_video", "contact_update")


def decide(session, ctx, patron, purpose, hours_ago, decision="opt_out", commit=True):  # type: ignore[no-untyped-def]
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, decision=Decision(decision), source=Source.STAFF_PHONE,
        actor=Actor.STAFF, occurred_at=NOW - timedelta(hours=hours_ago), patron=patron,
        evidence={"note": "called from 303-555-0100"}), now=NOW)
    if commit:
        session.commit()


def feed(client, key, **query):  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/events", query_string=query, headers=bearer(key))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def test_events_come_in_recording_order_with_opaque_patron_ids_only(client, key, session, ctx,
                                                                   make_patron):
    ana = make_patron(card="1001", email="ana@example.org")
    decide(session, ctx, ana, "photo_video", hours_ago=1)
    decide(session, ctx, ana, "email_marketing", hours_ago=5)  # occurred earlier, recorded later
    page = feed(client, key)
    assert [e["purpose"] for e in page["events"]] == ["photo_video", "email_marketing"]
    assert page["events"][0] == {
        "id": page["events"][0]["id"], "patron_id": ana.public_id, "scope": "patron",
        "purpose": "photo_video", "topic": None, "decision": "opt_out", "source": "staff_phone",
        "actor": "staff", "effective": True, "source_detail": None,
        "occurred_at": (NOW - timedelta(hours=1)).isoformat(), "recorded_at": NOW.isoformat()}
    assert page["events"][1]["scope"] == "address"
    assert page["has_more"] is False
    assert feed(client, key, after=page["next"])["events"] == []
    text = json.dumps(page)
    for private in ("1001", "ana@example.org", "303-555-0100", ana.address_key):
        assert private not in text


def test_pages_follow_the_cursor_and_the_cursor_is_stable_across_new_events(client, key, session,
                                                                           ctx, make_patron):
    patrons = [make_patron() for _ in range(3)]
    for hours, patron in enumerate(patrons):
        decide(session, ctx, patron, "photo_video", hours_ago=hours + 1)
    first = feed(client, key, limit=2)
    assert (len(first["events"]), first["has_more"]) == (2, True)
    decide(session, ctx, patrons[0], "postal_marketing", hours_ago=30)  # arrives between pages
    again = feed(client, key, limit=2)
    assert again == first  # the same page, whatever was recorded since
    second = feed(client, key, after=first["next"], limit=2)
    assert [e["purpose"] for e in second["events"]] == ["photo_video", "postal_marketing"]
    assert second["has_more"] is False
    seen = [e["id"] for e in first["events"] + second["events"]]
    assert len(set(seen)) == 4
    empty = feed(client, key, after=second["next"])
    assert empty == {"events": [], "next": second["next"], "has_more": False}
    decide(session, ctx, patrons[1], "contact_update", hours_ago=2)
    assert [e["purpose"] for e in feed(client, key, after=second["next"])["events"]] == [
        "contact_update"]


def test_the_limit_defaults_to_100_and_is_at_most_1000(client, key, session, ctx, make_patron):
    ana = make_patron()
    for hours in range(105):
        decide(session, ctx, ana, PURPOSES[hours % 2 + 1], hours_ago=200 - hours,
               decision="opt_out" if hours % 4 < 2 else "opt_in")
    page = feed(client, key)
    assert (len(page["events"]), page["has_more"]) == (100, True)
    assert len(feed(client, key, limit=1000)["events"]) == 105
    for limit in ("0", "1001", "99999999999999999999999", "1e3", "ten"):
        response = client.get("/api/v1/events", query_string={"limit": limit},
                              headers=bearer(key))
        assert response.status_code == 422, limit
        assert list(response.json["errors"]["query"]) == ["limit"]


@pytest.mark.parametrize("cursor", ["abc", "-1", "15", "1.5.5", "1.-5", ".5", "1.", "0." + "9" * 19,
                                    "9" * 19 + ".1", "١.٢", "1.5\x00", "1 .5"])
def test_a_cursor_the_feed_did_not_give_out_is_422(client, key, cursor):
    response = client.get("/api/v1/events", query_string={"after": cursor}, headers=bearer(key))
    assert response.status_code == 422
    assert list(response.json["errors"]["query"]) == ["after"]


@pytest.mark.postgresql_only
def test_an_event_committed_late_by_a_long_transaction_is_not_skipped(client, key, session, ctx,
                                                                       make_patron):
    ana, ben = make_patron(), make_patron()
    with Session(db.engine) as import_session:  # a long import, on its own connection
        decide(import_session, ctx, import_session.get(Patron, ana.id), "photo_video",
               hours_ago=2, commit=False)  # inserted first, so the lower id; not committed yet
        decide(session, ctx, ben, "postal_marketing", hours_ago=1)  # committed meanwhile
        during = feed(client, key)
        import_session.commit()
    after = feed(client, key, after=during["next"]) if during["next"] else feed(client, key)
    purposes = [e["purpose"] for e in during["events"] + after["events"]]
    assert sorted(purposes) == ["photo_video", "postal_marketing"]

"""Decisions through the API: record one (`POST /api/v1/decisions`), read those in force, and ask
the eligibility function (`GET /api/v1/eligibility`)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from consent_service.models import Topic
from tests.conftest import NOW
from tests.integration.api.helpers import BEFORE, bearer, decision_body
from tests.integration.public_pages import events


@pytest.fixture
def ana(make_patron):  # type: ignore[no-untyped-def]
    return make_patron(card="1001", email="ana@example.org")


@pytest.fixture
def events_topic(session):  # type: ignore[no-untyped-def]
    session.add(Topic(key="events", name="Events", created_at=NOW))
    session.commit()


def record(client, key, body, **headers):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/decisions", json=body, headers=bearer(key, **headers))


def eligible(client, key, **query):  # type: ignore[no-untyped-def]
    return client.get("/api/v1/eligibility", query_string=query, headers=bearer(key))


def test_a_decision_is_recorded_with_source_api_its_own_time_and_actor_system(client, key, session,
                                                                             ana):
    response = record(client, key, decision_body("1001", source_detail="ILS self-service",
                                                 note="asked at\nthe kiosk"))
    assert response.status_code == 201
    [event] = events(session)
    assert response.json == {
        "recorded": True, "event_id": str(event.id), "effective": True, "changed": True,
        "patron_id": ana.public_id, "purpose": "email_marketing", "topic": None,
        "decision": "opt_out", "actor": "system", "occurred_at": BEFORE}
    assert (event.source, event.actor, event.occurred_at, event.recorded_at) == (
        "api", "system", NOW - timedelta(hours=1), NOW)
    assert event.evidence == {"api_key": key[:12], "source_detail": "ILS self-service",
                              "note": "asked at\nthe kiosk"}


def test_the_actor_and_patron_id_come_from_the_body(client, key, session, ana, events_topic):
    body = {"patron_id": ana.public_id, "purpose": "email_marketing", "topic": "events",
            "decision": "opt_in", "occurred_at": BEFORE, "actor": "patron", "actor_ref": "u-17"}
    response = record(client, key, body)
    assert (response.status_code, response.json["topic"], response.json["actor"]) == (
        201, "events", "patron")
    [event] = events(session)
    assert (event.patron_id, event.topic, event.actor, event.actor_ref) == (
        ana.id, "events", "patron", "u-17")


def test_a_repeat_writes_nothing_and_a_late_decision_does_not_overturn(client, key, session, ana):
    record(client, key, decision_body("1001"))
    again = record(client, key, decision_body("1001"))
    assert (again.status_code, again.json["recorded"], again.json["event_id"]) == (200, False, None)
    late = record(client, key, decision_body(
        "1001", "opt_in", occurred_at=(NOW - timedelta(days=3)).isoformat()))
    assert (late.status_code, late.json["recorded"], late.json["changed"]) == (201, True, False)
    assert eligible(client, key, card_number="1001", purpose="email_marketing").json[
        "reason"] == "opted_out"


def test_a_childs_own_opt_in_is_recorded_but_not_effective(client, key, make_patron):
    make_patron(card="3001", email=None, birth_date=date(2018, 4, 5))
    response = record(client, key, {**decision_body("3001", "opt_in"), "purpose": "photo_video",
                                    "actor": "patron"})
    assert (response.status_code, response.json["effective"], response.json["changed"]) == (
        201, False, False)


@pytest.mark.parametrize(("change", "location", "field", "message"), [
    ({"occurred_at": (NOW + timedelta(hours=1)).isoformat()}, "json", "occurred_at",
     "occurred_at 2026-06-01T13:00:00+00:00 is in the future"),
    ({"occurred_at": "2026-05-01T10:00:00"}, "json", "occurred_at", "Not a valid aware datetime."),
    ({"occurred_at": "99999-01-01T00:00:00Z"}, "json", "occurred_at", "Not a valid datetime."),
    ({"topic": "nope"}, "json", "topic",
     "unknown topic 'nope'; the topics are: none yet (add one with `topics add`)"),
    ({"purpose": "telepathy"}, "json", "purpose", None),
    ({"decision": "maybe"}, "json", "decision", None),
    ({"actor": "robot"}, "json", "actor", None),
    ({"note": "a\x1bb"}, "json", "note",
     "note contains a character that is not allowed: U+001B (control character)"),
    ({"patron_id": "p_x"}, "json", "card_number", "give either card_number or patron_id"),
])
def test_bad_input_gets_422_naming_the_field(client, key, session, ana, change, location, field,
                                             message):
    response = record(client, key, {**decision_body("1001"), **change})
    assert response.status_code == 422
    assert set(response.json["errors"][location]) == {field}
    if message:
        assert response.json["errors"][location][field] == [message]
    assert events(session) == []


def test_an_unknown_patron_is_404(client, key):
    response = record(client, key, decision_body("9999"))
    assert response.status_code == 404
    assert response.json == {"code": 404, "status": "Not Found",
                             "message": "no patron with card number '9999'"}


def test_decisions_in_force_show_source_and_time_by_card_and_by_id(client, key, session, ana,
                                                                   make_patron):
    make_patron(card="1002", email="ana@example.org")  # shares the address
    record(client, key, {**decision_body("1002"), "source_detail": "desk"})
    record(client, key, {**decision_body("1001", "opt_in"), "purpose": "photo_video"})
    by_card = client.get("/api/v1/patrons/1001/decisions", headers=bearer(key))
    assert by_card.status_code == 200
    assert by_card.json == {"patron_id": ana.public_id, "decisions": [
        {"scope": "patron", "purpose": "photo_video", "topic": None, "decision": "opt_in",
         "actor": "system", "source": "api", "occurred_at": BEFORE,
         "recorded_at": NOW.isoformat()},
        {"scope": "address", "purpose": "email_marketing", "topic": None, "decision": "opt_out",
         "actor": "system", "source": "api", "occurred_at": BEFORE,
         "recorded_at": NOW.isoformat()}]}
    by_id = client.get(f"/api/v1/patrons/by-id/{ana.public_id}/decisions", headers=bearer(key))
    assert by_id.json == by_card.json


def test_decisions_of_an_unknown_patron_are_404(client, key):
    assert client.get("/api/v1/patrons/9999/decisions", headers=bearer(key)).status_code == 404
    for path in ("/api/v1/patrons/10%0001/decisions", "/api/v1/patrons/by-id/p_%00/decisions"):
        response = client.get(path, headers=bearer(key))  # PostgreSQL would refuse a NUL
        assert response.status_code == 404, path
        assert "\\x00" in response.json["message"]
    assert client.get("/api/v1/patrons/by-id/p_nobody/decisions",
                      headers=bearer(key)).json["message"] == "no patron with id 'p_nobody'"


def test_eligibility_answers_allowed_and_the_one_reason(client, key, ana, make_patron,
                                                        events_topic):
    answer = eligible(client, key, card_number="1001", purpose="email_marketing", topic="events")
    assert answer.json == {"allowed": True, "reason": None, "patron_id": ana.public_id,
                           "purpose": "email_marketing", "topic": "events"}
    record(client, key, decision_body("1001", topic="events"))
    assert eligible(client, key, patron_id=ana.public_id, purpose="email_marketing",
                    topic="events").json["reason"] == "opted_out"
    assert eligible(client, key, card_number="1001", purpose="email_marketing").json[
        "allowed"] is True  # the other topics are untouched
    child = make_patron(card="3001", birth_date=date(2018, 4, 5))
    assert eligible(client, key, card_number="3001", purpose="photo_video").json == {
        "allowed": False, "reason": "guardian_consent_required", "patron_id": child.public_id,
        "purpose": "photo_video", "topic": None}


@pytest.mark.parametrize(("query", "field"), [
    ({"card_number": "1001", "purpose": "telepathy"}, "purpose"),
    ({"card_number": "1001", "purpose": "postal_marketing", "topic": "events"}, "topic"),
    ({"purpose": "email_marketing"}, "card_number"),
    ({"card_number": "1001"}, "purpose"),
    ({"card_number": "10\x0001", "purpose": "email_marketing"}, "card_number"),
])
def test_eligibility_refuses_bad_queries_with_422(client, key, ana, events_topic, query, field):
    response = eligible(client, key, **query)
    assert response.status_code == 422
    assert set(response.json["errors"]["query"]) == {field}


def test_eligibility_of_an_unknown_patron_is_404(client, key):
    assert eligible(client, key, card_number="9999", purpose="photo_video").status_code == 404


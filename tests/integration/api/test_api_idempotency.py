"""Idempotency-Key on the API's writes: a retry gets the first answer and changes nothing, the
same key for another request is refused (422), keys expire, and a double submit records once."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from consent_service.domain.ledger import Actor, Decision
from consent_service.models import ApiKey, ConsentEvent, IdempotentResponse, Patron
from consent_service.services.api_idempotency import (
    Answer,
    Claim,
    ConcurrentWriteError,
    fingerprint,
    run_once,
)
from consent_service.services.api_keys import authenticate
from consent_service.services.api_ledger import ReportedDecision, record_reported_decision
from consent_service.services.api_patrons import find_patron
from tests.conftest import NOW
from tests.integration.api.helpers import bearer, decision_body


@pytest.fixture
def ana(make_patron):  # type: ignore[no-untyped-def]
    return make_patron(card="1001", email="ana@example.org")


def count(session, model):  # type: ignore[no-untyped-def]
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def post(client, key, body, idempotency_key="order-1"):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/decisions", json=body,
                       headers=bearer(key, **{"Idempotency-Key": idempotency_key}))


def test_a_retry_gets_the_first_answer_and_records_nothing_more(client, key, session, ana):
    first = post(client, key, decision_body("1001"))
    retry = post(client, key, decision_body("1001"))
    assert first.status_code == retry.status_code == 201
    assert retry.get_data() == first.get_data()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert count(session, ConsentEvent) == 1


def test_without_the_header_a_second_post_is_a_second_request(client, key, session, ana):
    client.post("/api/v1/decisions", json=decision_body("1001"), headers=bearer(key))
    again = client.post("/api/v1/decisions", json=decision_body("1001"), headers=bearer(key))
    assert (again.status_code, again.json["recorded"]) == (200, False)


def test_the_same_key_with_another_body_is_refused_with_422(client, key, session, ana):
    post(client, key, decision_body("1001"))
    other = post(client, key, decision_body("1001", "opt_in"))
    assert other.status_code == 422
    assert other.json["errors"] == {"headers": {"Idempotency-Key": [
        "this Idempotency-Key was used for a different request; use a new key for a new request"]}}
    assert count(session, ConsentEvent) == 1


def test_keys_belong_to_their_api_key(client, make_key, session, ana):
    post(client, make_key(), decision_body("1001"))
    other_system = post(client, make_key(), decision_body("1001", "opt_in"))
    assert other_system.status_code == 201  # the same key string, another owner: a new request
    assert count(session, ConsentEvent) == 2


def test_a_key_expires_after_24_hours(client, key, session, clock, ana):
    post(client, key, decision_body("1001"))
    clock.at = NOW + timedelta(hours=23, minutes=59)
    assert post(client, key, decision_body("1001", "opt_in")).status_code == 422
    clock.at = NOW + timedelta(hours=24)
    later = post(client, key, decision_body("1001", "opt_in"))
    assert (later.status_code, later.json["decision"]) == (201, "opt_in")
    assert count(session, IdempotentResponse) == 1


def test_the_lifetime_is_a_setting(app_factory, make_key):  # type: ignore[no-untyped-def]
    assert app_factory(API_IDEMPOTENCY_HOURS=2).config["API_IDEMPOTENCY_HOURS"] == 2


def test_a_batch_retry_writes_nothing_again(client, key, session, clock):
    body = {"patrons": [{"card_number": "1001", "first_name": "Ana"}]}
    headers = bearer(key, **{"Idempotency-Key": "nightly-2026-06-01"})
    first = client.post("/api/v1/patrons:batch", json=body, headers=headers)
    clock.at = NOW + timedelta(hours=1)
    session.execute(update(Patron).values(first_name="Changed"))
    session.commit()
    retry = client.post("/api/v1/patrons:batch", json=body, headers=headers)
    assert retry.json == first.json == {"patrons": [
        {"card_number": "1001", "patron_id": first.json["patrons"][0]["patron_id"],
         "outcome": "created"}]}
    session.expire_all()
    assert session.scalar(select(Patron.first_name)) == "Changed"  # the retry did not run


def test_a_refused_request_is_not_kept_and_its_corrected_retry_runs(client, key, session, ana):
    bad = post(client, key, decision_body("9999"))
    assert bad.status_code == 404
    assert count(session, IdempotentResponse) == 0
    assert post(client, key, decision_body("9999")).status_code == 404


@pytest.mark.parametrize("value", ["", "x" * 256, "clé", "a\tb"])
def test_a_malformed_key_is_422(client, key, ana, value):
    response = post(client, key, decision_body("1001"), idempotency_key=value)
    assert response.status_code == 422
    assert list(response.json["errors"]["headers"]) == ["Idempotency-Key"]


def test_a_double_submit_that_races_records_once(app: Flask, client, key, session, ctx, ana):
    """The second request checks for a stored answer before the first has committed; the first
    then commits, so the second's write fails on the key, is rolled back whole, and it answers
    the first's response."""
    body = decision_body("1001")
    path = "/api/v1/decisions"
    client_id = authenticate(session, key, now=NOW).id
    claim = Claim(client_id, "order-1",
                  fingerprint("POST", path + "?", json.dumps(body).encode()))

    def work() -> Answer:
        # the other submit of the same request, through the API, while this one is under way
        other = client.post(path, data=json.dumps(body), content_type="application/json",
                            headers=bearer(key, **{"Idempotency-Key": "order-1"}))
        assert other.status_code == 201
        patron = find_patron(session, card_number="1001")
        # this one's write differs (were it kept, the ledger would show two events)
        reported = ReportedDecision(purpose="photo_video", decision=Decision.OPT_OUT,
                                    occurred_at=NOW - timedelta(hours=2), actor=Actor.SYSTEM)
        done = record_reported_decision(session, ctx, patron, reported,
                                        api_key_prefix=key[:12], now=NOW)
        assert done.recorded
        return Answer(201, {"event_id": done.event_id})

    answer = run_once(session, claim, work, now=NOW, lifetime=timedelta(hours=24))
    assert answer.replayed is True
    session.expire_all()
    [(event_id, purpose)] = session.execute(select(ConsentEvent.id, ConsentEvent.purpose)).all()
    assert (answer.body["event_id"], purpose) == (str(event_id), "email_marketing")


def test_a_write_that_collides_without_a_key_is_rolled_back_and_reported(session, key):
    """Two requests creating the same record at once: the loser's insert hits a unique index."""

    def work() -> Answer:
        session.add(Patron(card_number="1001", created_at=NOW, updated_at=NOW))
        session.add(ApiKey(name="system 1", prefix="csk_twin", key_hash="0" * 64, scopes="",
                           created_at=NOW))  # the name is taken: this insert fails
        return Answer(201, {})

    with pytest.raises(ConcurrentWriteError, match="nothing was written: send it again"):
        run_once(session, None, work, now=NOW, lifetime=timedelta(hours=24))
    assert count(session, Patron) == 0

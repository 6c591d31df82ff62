"""`PUT /api/v1/patrons/<card>` and `POST /api/v1/patrons:batch`: patron records by the rules of
the CSV import, all or nothing, with the refused fields in a 422 answer."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from consent_service.models import ConsentEvent, GuardianLink, Patron
from consent_service.services.patron_import import import_patrons
from tests.conftest import NOW
from tests.integration.api.helpers import bearer

ANA = {"first_name": "Ana", "last_name": "Reyes", "email": " Ana.Reyes@Example.org ",
       "birth_date": "1980-01-02", "preferred_language": "es", "street": "1 Main St",
       "city": "Denver", "state": "CO", "postal_code": "80202"}


def put(client, key, card, body):  # type: ignore[no-untyped-def]
    return client.put(f"/api/v1/patrons/{card}", json=body, headers=bearer(key))


def batch(client, key, *records):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/patrons:batch", json={"patrons": list(records)},
                       headers=bearer(key))


def patron(session, card):  # type: ignore[no-untyped-def]
    session.expire_all()
    return session.scalar(select(Patron).where(Patron.card_number == card))


def count(session, model):  # type: ignore[no-untyped-def]
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def test_put_creates_a_patron_with_a_normalised_address_and_answers_201(client, key, session,
                                                                        ctx):
    response = put(client, key, "1001", ANA)
    assert response.status_code == 201
    ana = patron(session, "1001")
    assert response.json == {"card_number": "1001", "patron_id": ana.public_id,
                             "outcome": "created"}
    assert (ana.first_name, ana.birth_date, ana.preferred_language, ana.status) == (
        "Ana", date(1980, 1, 2), "es", "active")
    assert ana.email == "ana.reyes@example.org"
    assert ana.address_key == ctx.address_key("ana.reyes@example.org")
    assert ana.created_at == NOW


def test_put_again_updates_what_changed_and_keeps_what_is_left_out(client, key, session, clock):
    put(client, key, "1001", ANA)
    clock.at = NOW + timedelta(days=1)
    assert put(client, key, "1001", ANA).json["outcome"] == "unchanged"
    response = put(client, key, "1001", {"last_name": "Reyes Luna", "street": None})
    assert (response.status_code, response.json["outcome"]) == (200, "updated")
    ana = patron(session, "1001")
    assert (ana.first_name, ana.last_name, ana.street, ana.city) == (
        "Ana", "Reyes Luna", "", "Denver")  # left out: kept; null: cleared
    assert ana.updated_at == NOW + timedelta(days=1)


def test_put_never_changes_a_decision(client, key, session):
    put(client, key, "1001", ANA)
    put(client, key, "1001", {"email": "new@example.org", "status": "inactive"})
    assert count(session, ConsentEvent) == 0


def test_bad_fields_get_422_with_the_import_problems_by_field(client, key, session):
    response = put(client, key, "1001", {**ANA, "email": "ana@", "birth_date": "2090-01-01",
                                         "first_name": "A\u202ena", "preferred_language": "fr"})
    assert response.status_code == 422
    assert response.json["message"] == "the patron record was refused"
    errors = response.json["errors"]["json"]
    assert set(errors) == {"email", "birth_date", "first_name", "preferred_language"}
    assert errors["birth_date"] == ["birth_date is in the future"]
    assert errors["first_name"] == [
        "first_name contains a character that is not allowed: U+202E (RIGHT-TO-LEFT OVERRIDE)"]
    assert errors["preferred_language"] == ["preferred_language 'fr' is not one of: en, es"]
    assert errors["email"][0].startswith("email: not a valid email address")
    assert patron(session, "1001") is None


def test_the_api_refuses_a_row_for_the_same_reasons_as_the_csv_import(client, key, session, ctx,
                                                                      tmp_path):
    record = {"first_name": "x" * 201, "birth_date": "2001-02-30", "guardian_card_number": "404"}
    api = put(client, key, "1001", record).json["errors"]["json"]
    path = tmp_path / "patrons.csv"
    path.write_text("card_number,first_name,birth_date,guardian_card_number\n"
                    f"1001,{'x' * 201},2001-02-30,404\n", encoding="utf-8")
    [problem] = import_patrons(session, ctx, path, now=NOW, skip_invalid=False).problems
    assert {message for messages in api.values() for message in messages} == set(
        problem.message.replace("this file", "this request").split("; "))


def test_a_field_the_import_does_not_know_is_refused(client, key):
    response = put(client, key, "1001", {"first": "Ana"})
    assert response.status_code == 422
    assert response.json["errors"] == {"json": {"first": ["Unknown field."]}}


def test_a_card_number_with_a_control_character_or_too_long_is_refused(client, key, session):
    bad = put(client, key, "10%0101", {"first_name": "Ana"})
    assert bad.status_code == 422
    assert bad.json["errors"] == {"path": {"card_number": [
        "card_number contains a character that is not allowed: U+0001 (control character)"]}}
    long = put(client, key, "9" * 65, {"first_name": "Ana"})
    assert long.json["errors"] == {"path": {"card_number": [
        "card_number is longer than 64 characters"]}}
    assert count(session, Patron) == 0


def test_a_guardian_named_by_card_links_and_asks_for_consent(client, key, session):
    put(client, key, "2001", {"first_name": "Maria", "email": "maria@example.org"})
    response = put(client, key, "2002", {"first_name": "Milo", "birth_date": "2018-04-05",
                                         "guardian_card_number": "2001"})
    assert response.status_code == 201
    child = patron(session, "2002")
    [link] = session.scalars(select(GuardianLink).where(GuardianLink.child_id == child.id))
    assert link.guardian_id == patron(session, "2001").id


def test_a_batch_creates_and_updates_and_answers_each_outcome(client, key, session):
    put(client, key, "1001", ANA)
    response = batch(client, key, {"card_number": "1001", **ANA},
                     {"card_number": "1002", "first_name": "Sam"},
                     {"card_number": "1003", "first_name": "Milo", "birth_date": "2018-04-05",
                      "guardian_card_number": "1002"})
    assert response.status_code == 200
    assert [(p["card_number"], p["outcome"]) for p in response.json["patrons"]] == [
        ("1001", "unchanged"), ("1002", "created"), ("1003", "created")]
    assert response.json["patrons"][1]["patron_id"] == patron(session, "1002").public_id
    assert count(session, GuardianLink) == 1


def test_a_batch_with_a_bad_record_writes_nothing_and_lists_every_problem(client, key, session):
    response = batch(client, key, {"card_number": "1001", "first_name": "Ana"},
                     {"card_number": "1002", "email": "not-an-address"},
                     {"card_number": "1003", "guardian_card_number": "1002"},
                     {"card_number": "1001"})
    assert response.status_code == 422
    assert response.json["message"] == "3 patron record(s) were refused; nothing was written"
    assert response.json["errors"]["json"]["patrons"] == {
        "1": {"email": ["email: not a valid email address: An email address must have an "
                        "@-sign."]},
        "2": {"guardian_card_number": ["guardian_card_number is the card of patrons[1], which is "
                                       "rejected"]},
        "3": {"card_number": ["card_number already appears on patrons[0]"]}}
    assert count(session, Patron) == 0


def test_a_batch_record_needs_a_card_number_and_text_values(client, key):
    response = batch(client, key, {"first_name": "Ana"}, {"card_number": 1002})
    assert response.status_code == 422
    assert response.json["errors"]["json"]["patrons"] == {
        "0": {"card_number": ["Missing data for required field."]},
        "1": {"card_number": ["Not a valid string."]}}


@pytest.mark.parametrize(("size", "status"), [(0, 422), (1000, 200), (1001, 422)])
def test_a_batch_holds_1_to_1000_records(client, key, session, size, status):
    records = [{"card_number": f"3{n:05d}"} for n in range(size)]
    response = batch(client, key, *records)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert count(session, Patron) == (size if status == 200 else 0)

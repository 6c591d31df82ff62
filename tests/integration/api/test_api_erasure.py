"""POST /api/v1/patrons/<card>/erasure: erases as `patrons erase` does, with its own scope; a retry
with the same Idempotency-Key gets the first answer; the address stays opted out."""

from __future__ import annotations

from sqlalchemy import select

from consent_service.models import ErasureRequest, Patron
from tests.integration.api.helpers import bearer, decision_body


def test_the_api_erases_a_patron_and_a_second_call_finds_no_such_card(client, session, make_patron,
                                                                      make_key):
    patron = make_patron(card="3001", email="leaving@example.org", first_name="Imogen")
    old_id = patron.public_id
    key = make_key("patrons:erase", "consents:write", "consents:read")
    assert client.post("/api/v1/decisions", json=decision_body("3001"),
                       headers=bearer(key)).status_code == 201

    erased = client.post("/api/v1/patrons/3001/erasure", json={},
                         headers=bearer(key, **{"Idempotency-Key": "erase-3001"}))
    retried = client.post("/api/v1/patrons/3001/erasure", json={},
                          headers=bearer(key, **{"Idempotency-Key": "erase-3001"}))
    again = client.post("/api/v1/patrons/3001/erasure", json={}, headers=bearer(key))

    assert erased.status_code == 200, erased.json
    assert erased.json["patron_id"] != old_id
    assert erased.json["removed"]["sync job addresses"] == 1
    assert retried.status_code == 200 and retried.json == erased.json
    assert again.status_code == 404
    session.expire_all()
    tombstone = session.get(Patron, patron.id)
    assert (tombstone.first_name, tombstone.email, tombstone.public_id) == (
        "", None, erased.json["patron_id"])
    [task] = session.scalars(select(ErasureRequest)).all()
    assert (task.requested_by, task.done_by) == ("api", f"api:{key[:len(task.done_by) - 4]}")
    newcomer = make_patron(card="3002", email="leaving@example.org")
    eligibility = client.get("/api/v1/eligibility?card_number=3002&purpose=email_marketing",
                             headers=bearer(key))
    assert newcomer.id != patron.id
    assert eligibility.json["allowed"] is False and eligibility.json["reason"] == "opted_out"

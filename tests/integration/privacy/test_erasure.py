"""Erasure: a patron with a rich history is erased, and no personal value of theirs is left in any
column of any table; the ledger still verifies; other patrons are untouched; the address stays
opted out for a later import."""

from __future__ import annotations

import csv
import warnings
from datetime import date, timedelta

import pytest
from sqlalchemy import MetaData, select
from sqlalchemy.exc import SAWarning

from consent_service.domain.evidence import link_evidence
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import (
    ConsentEvent,
    ErasureRequest,
    GuardianLink,
    OutboxMessage,
    Patron,
    WebhookBatch,
)
from consent_service.services.api_keys import create_api_key
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.unsubscribe import (
    open_unsubscribe_link,
    save_unsubscribe_feedback,
    unsubscribe,
)
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token
from tests.integration.sendgrid_fixtures import batch_bytes, sendgrid_event

CARD = "Z99001"
EMAIL = "zeldarine.q@example.net"
PERSON = {"first_name": "Zeldarine", "last_name": "Quobbleworth", "email": EMAIL,
          "birth_date": "1979-04-23", "street": "17 Juniper Hollow Rd", "city": "Larkspur",
          "state": "CO", "postal_code": "80118"}
# Every value the erasure must remove, as it could be stored (the IP is kept truncated to its /24).
ERASED = ["Zeldarine", "Quobbleworth", EMAIL, CARD, "Juniper Hollow", "Larkspur", "1979-04-23",
          "198.51.100", "ZeldaBrowser", "phoned about", "too much mail", "borrower-77123"]


@pytest.fixture
def app(app_factory, clock):
    # Mail waits in the outbox for the worker, so it still holds its recipient when erasure comes.
    return app_factory(CLOCK=clock, SENDGRID_WEBHOOK_VERIFY=False, MAIL_DISPATCH="worker")


def every_text_value(session):
    """(table, column, value as text) for every value of every column of every table, read from the
    database's own catalog so no table or column is forgotten."""
    metadata = MetaData()
    with warnings.catch_warnings():  # the name indexes on lower(...) are not reflected; no matter
        warnings.simplefilter("ignore", SAWarning)
        metadata.reflect(bind=db.engine)
    for table in metadata.sorted_tables:
        for row in session.execute(select(table)).mappings():
            for column, value in row.items():
                if value is None:
                    continue
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                yield table.name, column, text


def found(session, values):
    lowered = [v.lower() for v in values]
    return sorted({(table, column, value) for table, column, text in every_text_value(session)
                   for value, low in zip(values, lowered, strict=True) if low in text.lower()})


def subject_history(session, ctx, client, runner, make_patron):
    """The patron, made through the API with an Idempotency-Key, with: an unsubscribe from a link
    (network and browser kept) and its feedback text, a staff note, a preference link emailed, a
    guardian request sent to their address for a child, and a SendGrid webhook batch naming them."""
    _, key = create_api_key(session, "ils", ("patrons:write",), now=NOW)
    created = client.put(f"/api/v1/patrons/{CARD}", json=PERSON,
                         headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "ils-1"})
    assert created.status_code == 201, created.text
    patron = session.scalar(select(Patron).where(Patron.card_number == CARD))
    patron.ils_id = "borrower-77123"  # the ILS's own id, as an ILS import keeps it
    session.commit()

    token = ctx.signer.sign(LinkKind.UNSUBSCRIBE, patron.public_id, None, None)
    link = open_unsubscribe_link(session, ctx, token, now=NOW)
    unsubscribe(session, ctx, link, source=Source.UNSUBSCRIBE_LINK,
                evidence=link_evidence("198.51.100.77", "ZeldaBrowser/9", "tok-z"), now=NOW)
    assert save_unsubscribe_feedback(session, open_unsubscribe_link(session, ctx, token, now=NOW),
                                     reason_code="other", text="too much mail, Zeldarine", now=NOW)
    record_decision(session, ctx, DecisionRequest(
        purpose="postal_marketing", decision=Decision.OPT_OUT, source=Source.STAFF_PHONE,
        actor=Actor.STAFF, occurred_at=NOW, patron=patron, actor_ref="1",
        evidence={"staff": "desk@library.example", "note": "Zeldarine phoned about mail"}), now=NOW)
    session.commit()

    page = client.get("/preferences")
    assert client.post("/preferences", data={"csrf_token": csrf_token(page.text), "email": EMAIL},
                       environ_base={"REMOTE_ADDR": "198.51.100.77"}).status_code == 200
    child = make_patron(card="K77001", email=None, birth_date=date(2019, 3, 3), first_name="Pip")
    linked = runner.invoke(args=["guardians", "link", child.card_number, "--guardian-email", EMAIL])
    assert linked.exit_code == 0, linked.output
    delivered = sendgrid_event("delivered", EMAIL.upper(), NOW - timedelta(minutes=5),
                               sg_event_id="sg-z-1", patron_id=patron.public_id)
    assert client.post("/webhooks/sendgrid", data=batch_bytes([delivered]),
                       content_type="application/json").status_code in (200, 204)
    session.expire_all()
    return patron, child


def test_erasure_leaves_no_personal_value_anywhere_and_the_ledger_verifies(
        session, ctx, client, runner, make_patron):
    other = make_patron(card="OTHER-1", email="other.reader@example.org", first_name="Ottoline",
                        street="9 Aspen Way", city="Golden", postal_code="80401")
    patron, child = subject_history(session, ctx, client, runner, make_patron)
    before = found(session, ERASED)
    assert {table for table, _, _ in before} >= {
        "patrons", "consent_events", "unsubscribe_feedback", "guardian_links", "guardian_requests",
        "outbox_messages", "webhook_batches", "api_idempotent_responses"}, before
    old_public_id = patron.public_id
    events_before = session.scalar(select(db.func.count()).select_from(ConsentEvent))

    erased = runner.invoke(args=["patrons", "erase", CARD, "--by", "desk@library.example"])

    assert erased.exit_code == 0, erased.output
    assert erased.output.startswith(f"erased card {CARD}: now p_")
    session.expire_all()
    assert found(session, ERASED) == []
    tombstone = session.get(Patron, patron.id)
    assert tombstone.status == "inactive" and tombstone.erased_at == NOW
    assert tombstone.public_id != old_public_id and tombstone.card_number.startswith("erased-")
    # the decisions stay, under the tombstone, with their times and sources; vendor opt-outs added
    events = session.scalars(select(ConsentEvent).where(ConsentEvent.patron_id == patron.id)
                             .order_by(ConsentEvent.id)).all()
    assert session.scalar(select(db.func.count()).select_from(ConsentEvent)) == events_before + 2
    assert [(e.purpose, e.decision, e.source) for e in events][:2] == [
        ("email_marketing", "opt_out", "unsubscribe_link"), ("postal_marketing", "opt_out", "staff_phone")]
    assert {(e.purpose, e.source) for e in events[2:]} == {
        ("contact_update", "erasure"), ("third_party_modeling", "erasure")}
    assert set(events[0].evidence) == {"token_id"} and set(events[0].evidence_digests) == {"ip", "user_agent"}
    # the erased guardian's link to the child is gone; the child is untouched
    assert session.scalars(select(GuardianLink).where(GuardianLink.child_id == child.id)).all() == []
    assert session.get(Patron, child.id).first_name == "Pip"
    # other patrons' data untouched
    assert found(session, ["Ottoline", "other.reader@example.org", "9 Aspen Way"]) != []
    assert session.get(Patron, other.id).email == "other.reader@example.org"
    # the task record says who did it
    [task] = session.scalars(select(ErasureRequest)).all()
    assert (task.status, task.requested_by, task.done_by) == ("done", "cli", "desk@library.example")
    # the webhook batch is kept, without the address
    assert b"erased@invalid.example" in session.scalars(select(WebhookBatch)).one().body
    # mail that was waiting is not sent to the erased address
    assert {(m.template, m.status) for m in session.scalars(select(OutboxMessage))} == {
        ("preferences_link", "failed"), ("guardian_notice", "failed")}
    verify = runner.invoke(args=["ledger", "verify"])
    assert verify.exit_code == 0, verify.output


def test_a_reimported_patron_after_erasure_is_still_opted_out(session, ctx, runner, tmp_path,
                                                              make_patron):
    rows = tmp_path / "patrons.csv"
    with rows.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["card_number", *PERSON])
        writer.writeheader()
        writer.writerow({"card_number": CARD, **PERSON})
    assert runner.invoke(args=["patrons", "import", str(rows)]).exit_code == 0
    patron = session.scalar(select(Patron).where(Patron.card_number == CARD))
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.PREFERENCE_CENTER,
        actor=Actor.PATRON, occurred_at=NOW, patron=patron), now=NOW)
    session.commit()
    assert runner.invoke(args=["patrons", "erase", CARD]).exit_code == 0

    assert runner.invoke(args=["patrons", "import", str(rows)]).exit_code == 0
    session.expire_all()
    again = session.scalar(select(Patron).where(Patron.card_number == CARD))
    assert again.id != patron.id
    excluded = tmp_path / "excluded.csv"
    exported = runner.invoke(args=["export", "contacts", "--purpose", "email_marketing",
                                   "--output", str(tmp_path / "out.csv"), "--excluded", str(excluded)])
    assert exported.exit_code == 0, exported.output
    with excluded.open(newline="", encoding="utf-8") as handle:
        reasons = {row["patron_id"]: row["reason"] for row in csv.DictReader(handle)}
    assert reasons[again.public_id] == "opted_out"
    assert reasons[session.get(Patron, patron.id).public_id] == "inactive"


def test_erasing_an_unknown_or_erased_card_is_one_line_and_changes_nothing(runner, make_patron):
    make_patron(card="E1")
    assert runner.invoke(args=["patrons", "erase", "E1"]).exit_code == 0
    again = runner.invoke(args=["patrons", "erase", "E1"])
    assert again.exit_code == 1 and again.output == "Error: no patron with card number E1\n"

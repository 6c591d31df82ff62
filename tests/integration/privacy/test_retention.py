"""`retention purge`: with the clock, exactly the rows past each limit are removed and nothing else;
a dry run changes nothing; the ledger still verifies afterwards."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from consent_service.domain.evidence import link_evidence
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.extensions import db
from consent_service.models import (
    ConsentEvent,
    ErasureRequest,
    GuardianLink,
    GuardianRequest,
    Patron,
    WebhookBatch,
)
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW

DAY = timedelta(days=1)


@pytest.fixture
def app(app_factory, clock):
    return app_factory(CLOCK=clock, RETENTION_WEBHOOK_BODY_DAYS=30, RETENTION_EVIDENCE_DAYS=365,
                       RETENTION_GUARDIAN_REQUEST_DAYS=30, RETENTION_INACTIVE_PATRON_DAYS=1095)


def batch(session, received, status="processed"):
    row = WebhookBatch(received_at=received, body=b'[{"email":"a@example.org"}]', status=status,
                       available_at=received, event_count=1, counts={})
    session.add(row)
    session.commit()
    return row.id


def decide(session, ctx, patron, at, purpose="postal_marketing", decision="opt_out"):
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, decision=Decision(decision), source=Source.PREFERENCE_CENTER,
        actor=Actor.PATRON, occurred_at=at, patron=patron,
        evidence=link_evidence("203.0.113.5", "Firefox/140", "tok")), now=at)
    session.commit()


def guardian_request(session, child, email, expires, status="pending"):
    link = GuardianLink(child_id=child.id, guardian_email=email, created_at=expires - 14 * DAY)
    session.add(link)
    session.flush()
    request = GuardianRequest(child_id=child.id, guardian_link_id=link.id, to_email=email,
                              notice_version="1", status=status, created_at=expires - 14 * DAY,
                              expires_at=expires, last_sent_at=expires - 14 * DAY,
                              answered_at=expires - DAY if status == "answered" else None)
    session.add(request)
    session.commit()
    return request.id, link.id


@pytest.fixture
def aged(session, ctx, make_patron):
    """Rows just past and just within each limit, at NOW."""
    rows = {
        "old_body": batch(session, NOW - 30 * DAY - timedelta(seconds=1)),
        "young_body": batch(session, NOW - 29 * DAY),
        "unprocessed_body": batch(session, NOW - 90 * DAY, status="failed"),
    }
    reader = make_patron(card="R1")
    decide(session, ctx, reader, NOW - 366 * DAY)
    decide(session, ctx, reader, NOW - 364 * DAY, decision="opt_in")
    rows["old_event"], rows["young_event"] = session.scalars(
        select(ConsentEvent.id).where(ConsentEvent.patron_id == reader.id).order_by(ConsentEvent.id))
    child = make_patron(card="K1", email=None, birth_date=date(2019, 1, 1))
    rows["old_request"], rows["old_link"] = guardian_request(
        session, child, "gone@example.org", NOW - 31 * DAY)
    rows["young_request"], rows["young_link"] = guardian_request(
        session, child, "soon@example.org", NOW - 29 * DAY, status="expired")
    rows["answered_request"], _ = guardian_request(
        session, child, "yes@example.org", NOW - 400 * DAY, status="answered")
    old = NOW - 1095 * DAY - DAY

    def patron(card, updated_at, **fields):
        made = make_patron(card=card, email=f"{card.lower()}@example.org", **fields)
        made.updated_at = updated_at
        session.commit()
        return made.id

    rows["idle"] = patron("I1", old, status="inactive")
    rows["idle_but_decided"] = patron("I2", old, status="inactive")
    decide(session, ctx, session.get(Patron, rows["idle_but_decided"]), NOW - 10 * DAY)
    rows["active_old"] = patron("A1", old)
    rows["inactive_recent"] = patron("I3", NOW - 1094 * DAY, status="inactive")
    return rows


def snapshot(session):
    session.expire_all()
    return {
        "bodies": {b.id: b.body for b in session.scalars(select(WebhookBatch))},
        "evidence": {e.id: dict(e.evidence) for e in session.scalars(select(ConsentEvent))},
        "requests": set(session.scalars(select(GuardianRequest.id))),
        "links": set(session.scalars(select(GuardianLink.id))),
        "patrons": {p.id: (p.card_number, p.first_name, p.erased_at)
                    for p in session.scalars(select(Patron))},
    }


def purge(runner, *options):
    result = runner.invoke(args=["retention", "purge", *options])
    assert result.exit_code == 0, result.output
    return result.output


KINDS = ("webhook batch bodies", "events' IP and user-agent evidence",
         "unanswered guardian requests", "email-only guardian links", "inactive patrons (erased)")


def listing(title, count=1):
    return title + "\n" + "".join(f"  {kind}: {count}\n" for kind in KINDS)


def test_a_dry_run_says_what_would_go_and_changes_nothing(session, runner, aged):
    before = snapshot(session)
    output = purge(runner, "--dry-run")
    assert output == listing("would remove (dry run, nothing written):")
    assert snapshot(session) == before


def test_exactly_the_rows_past_each_limit_are_removed(session, runner, aged):
    before = snapshot(session)
    assert purge(runner) == listing("removed:")
    after = snapshot(session)

    assert {k for k, v in after["bodies"].items() if v is None} == {aged["old_body"]}
    changed = {k for k in before["evidence"] if after["evidence"][k] != before["evidence"][k]}
    assert changed == {aged["old_event"]}
    assert after["evidence"][aged["old_event"]] == {"token_id": "tok"}
    assert after["evidence"][aged["young_event"]]["ip"] == "203.0.113.0/24"
    assert before["requests"] - after["requests"] == {aged["old_request"]}
    assert before["links"] - after["links"] == {aged["old_link"]}
    erased = {k for k, v in after["patrons"].items() if v != before["patrons"][k]}
    assert erased == {aged["idle"]}
    [task] = session.scalars(select(ErasureRequest)).all()
    assert (task.patron_id, task.requested_by, task.done_by) == (aged["idle"], "retention", "retention")

    verify = runner.invoke(args=["ledger", "verify"])
    assert verify.exit_code == 0, verify.output
    assert purge(runner) == listing("removed:", 0)


def test_a_limit_of_zero_keeps_that_kind(app_factory, clock):
    app = app_factory(CLOCK=clock, RETENTION_WEBHOOK_BODY_DAYS=0)
    with app.app_context():
        batch(db.session, NOW - 400 * DAY)
        output = app.test_cli_runner().invoke(args=["retention", "purge"]).output
    assert "  webhook batch bodies: 0\n" in output


def test_a_negative_limit_is_refused_in_one_line(app_factory, clock):
    app = app_factory(CLOCK=clock, RETENTION_EVIDENCE_DAYS=-1)
    result = app.test_cli_runner().invoke(args=["retention", "purge"])
    assert result.exit_code == 1
    assert result.output == ("Error: CONSENT_RETENTION_EVIDENCE_DAYS must be 0 (keep) or more days, "
                             "not -1\n")

"""Fault injection, SendGrid side (issue 15, suite 4): the fake SendGrid fails (5xx), is slower than
the client's timeout, resets connections mid-request and mid-response, and rate-limits (429 with
X-RateLimit-Reset), while the worker sends the mail and suppression changes of a day's workload.
In every case the final state must equal the run without faults, and no message or suppression
change may be lost or carried out twice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from consent_service import runtime
from consent_service.delivery.sender import send_mail_task
from consent_service.extensions import db
from consent_service.models import OutboxMessage, SuppressionSyncJob, Topic
from consent_service.services.outgoing_mail import queue_email
from consent_service.services.sendgrid_sync import push_pending_suppressions
from tests.conftest import NOW, Clock
from tests.fakes.sendgrid_api import FakeSendGrid, WebhookSigner
from tests.integration.sendgrid_fixtures import EVENTS_GROUP, decide
from tests.reliability.fault_scenario import (
    baseline,
    count_sendgrid,
    run_scenario,
    scenario_config,
    sent_mail,
    suppression_writes,
)

# What each fault does to the fake before the worker's first round. The counts are sized to hit
# the mail sends and the suppression calls of the first rounds (about 20 calls in all).
FAULTS: dict[str, Callable[[FakeSendGrid], None]] = {
    "5xx": lambda fake: fake.fail_next(6, status=503),
    "429 with X-RateLimit-Reset": lambda fake: fake.fail_next(4, status=429,
                                                              reset_after_seconds=900),
    "dropped unanswered": lambda fake: fake.drop_next(4),
    "reset mid-request": lambda fake: fake.reset_next(4, during="request"),
    "reset mid-response": lambda fake: fake.reset_next(4, during="response"),
    "slower than the timeout": lambda fake: fake.slow(0.8),
    "30% of calls failing, seeded": lambda fake: fake.failure_rate(0.3, seed=20261203),
}
# A fault after which SendGrid may have done what was asked though the client never heard so: the
# request reached it whole, and its answer was lost. A suppression job tried again reads SendGrid's
# lists first, so it is never carried out twice; SendGrid's Mail Send has no idempotency key and
# nothing to read back, so the outbox sends such a message again (losing it would be worse), with
# the same Message-ID.
UNKNOWN_OUTCOME = {"reset mid-response", "slower than the timeout"}
LOST_ANSWERS = 4  # at most: reset_next(4); a timing-out SendGrid pauses the round after 3 messages

@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()


def test_the_run_without_faults_sends_each_message_and_change_once(app_factory, signer):
    expected = baseline(app_factory, signer)

    assert expected.rounds == 1
    mail, writes = sent_mail(expected.fake), suppression_writes(expected.fake)
    assert len(mail) == 9 and set(mail.values()) == {1}
    assert writes and set(writes.values()) == {1}
    assert expected.state["sendgrid groups"] and expected.state["sendgrid global"]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_after_a_sendgrid_fault_the_final_state_equals_the_run_without_faults(
        app_factory, signer, fault):
    expected = baseline(app_factory, signer)

    run = run_scenario(app_factory, signer, sendgrid_fault=FAULTS[fault])

    assert run.rounds > 1, "the fault was injected and retried"
    compared = [key for key in expected.state if key != "sendgrid mail"]
    assert {key: run.state[key] for key in compared} == {
        key: expected.state[key] for key in compared}
    mail, writes = sent_mail(run.fake), suppression_writes(run.fake)
    expected_mail, expected_writes = sent_mail(expected.fake), suppression_writes(expected.fake)
    assert set(mail) == set(expected_mail), "no message lost"
    assert set(writes) == set(expected_writes), "no suppression change lost"
    assert writes == expected_writes, "no suppression change carried out twice"
    if fault not in UNKNOWN_OUTCOME:
        assert mail == expected_mail, "no message sent twice"
    else:  # a second copy only of a message whose answer was lost: the same message, recognisable
        assert max(mail.values()) <= 2
        assert sum(mail.values()) - len(mail) <= LOST_ANSWERS


@pytest.fixture
def mail_app(app_factory, signer):
    """An app sending through the fake SendGrid, with six messages queued."""
    with FakeSendGrid(api_key="test-key") as fake:
        fake.clock = NOW.timestamp
        app = app_factory(**scenario_config(fake, signer, Clock(NOW)))
        with app.app_context():
            ctx = runtime.context(app)
            for n in range(6):
                queue_email(db.session, ctx, template="preferences_link",
                            to=f"reader{n}@example.org", language="en",
                            context={"links": [{"first_name": "Reader", "url": "https://x/y"}]},
                            category="transactional", now=NOW)
            db.session.commit()
        yield app, fake
        count_sendgrid(fake)
        assert fake.violations == []


def outbox(app):
    with app.app_context():
        rows = [(m.status, m.attempts, m.available_at)
                for m in db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
        db.session.rollback()
    return rows


def test_a_rate_limited_sendgrid_stops_the_round_and_the_message_waits_for_its_reset(mail_app):
    app, fake = mail_app
    fake.fail_next(1, status=429, reset_after_seconds=900)

    with app.app_context():
        assert send_mail_task(app)(NOW) == 0

    assert len(fake.requests) == 1, "nothing more is sent into a rate limit"
    first, *rest = outbox(app)
    assert first == ("pending", 1, NOW + timedelta(seconds=900)), "not before X-RateLimit-Reset"
    assert {row[:2] for row in rest} == {("pending", 0)}


def test_a_sendgrid_slower_than_the_timeout_costs_three_timeouts_a_round_not_one_per_message(
        mail_app):
    app, fake = mail_app
    fake.slow(0.8)

    with app.app_context():
        assert send_mail_task(app)(NOW) == 0
    fake.slow(0)

    assert [row[:2] for row in outbox(app)] == [("pending", 1)] * 3 + [("pending", 0)] * 3
    with app.app_context():
        assert send_mail_task(app)(NOW + timedelta(minutes=2)) == 6


def test_a_suppression_push_whose_answer_was_lost_is_read_back_not_made_again(app_factory, signer):
    with FakeSendGrid(api_key="test-key") as fake:
        fake.add_group(EVENTS_GROUP, "Events")
        app = app_factory(**scenario_config(fake, signer, Clock(NOW)))
        with app.app_context():
            ctx = runtime.context(app)
            db.session.add(Topic(key="events", name="Events", sendgrid_group_id=EVENTS_GROUP,
                                 created_at=NOW))
            db.session.commit()
            decide(db.session, ctx, email="reader@example.org", decision="opt_out",
                   topic="events")
            decide(db.session, ctx, email="other@example.org", decision="opt_out")
            client = runtime.suppression_client(app)
            fake.reset_next(2, during="response")  # both pushes carried out, both answers lost

            push_pending_suppressions(db.session, client, now=NOW)
            later = NOW + timedelta(hours=1)
            push_pending_suppressions(db.session, client, now=later)

            jobs = [(job.status, job.attempts) for job in db.session.scalars(
                select(SuppressionSyncJob).order_by(SuppressionSyncJob.id))]
        assert jobs == [("done", 2), ("done", 2)]
        assert [(r.method, r.path.split("/v3/")[1]) for r in fake.carried_out] == [
            ("POST", "asm/suppressions/global"),
            ("POST", f"asm/groups/{EVENTS_GROUP}/suppressions"),
            ("POST", f"asm/groups/{EVENTS_GROUP}/suppressions/search"),
            ("GET", "asm/suppressions/global/other@example.org"),
        ], "the retry read SendGrid's lists and sent nothing again"
        count_sendgrid(fake)
        assert fake.violations == []

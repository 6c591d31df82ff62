"""The signed SendGrid Event Webhook: who may post, what is kept, and what each event does to the
ledger, however often and in whatever order SendGrid delivers it."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then taken as arguments

from __future__ import annotations

import http.client
import json
import logging
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from werkzeug.serving import make_server

from consent_service.domain.eligibility import Reason
from consent_service.models import (
    AddressDecision,
    AddressSuppression,
    ConsentEvent,
    PatronDecision,
    SendGridEventReceipt,
    SuppressionSyncJob,
    UndeliverableAddress,
    WebhookBatch,
)
from consent_service.services import sendgrid_webhook
from consent_service.services.sendgrid_webhook import process_stored_batches, store_batch
from consent_service.services.standing import load_standings
from tests.conftest import NOW
from tests.fakes.sendgrid_api import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSigner
from tests.integration.sendgrid_fixtures import (  # noqa: F401 - fixtures, used by name
    EVENTS_GROUP,
    UNMAPPED_GROUP,
    app,
    batch_bytes,
    count,
    decide,
    fake_sendgrid,
    post_batch,
    sendgrid_event,
    signer,
    topics,
)

EMAIL = "email_marketing"
MINUTE = timedelta(minutes=1)


def verdict(session, ctx, patron, topic=None):
    session.expire_all()
    return load_standings(session, [patron])[patron.id].verdict(ctx.catalog.get(EMAIL), topic,
                                                                NOW.date())


def address_rows(session):
    session.expire_all()
    return {(row.topic, row.decision, row.occurred_at) for row in session.scalars(
        select(AddressDecision))}


def docs_batch(email, patron_id=None):
    """A batch like the docs' example: mostly engagement events, one unsubscribe, millisecond times,
    some events without sg_message_id, the patron_id custom arg at the top level."""
    extra = {"patron_id": patron_id} if patron_id else {}
    at = NOW - 30 * MINUTE
    return [
        sendgrid_event("processed", email, at, milliseconds=True, sg_event_id="ev-processed",
                       sg_message_id="msg-1.filter0001", **extra),
        sendgrid_event("delivered", email, at + MINUTE, sg_event_id="ev-delivered",
                       response="250 OK", sg_message_id="msg-1.filter0001", **extra),
        sendgrid_event("open", email, at + 2 * MINUTE, sg_event_id="ev-open",
                       useragent="Mozilla/5.0", ip="192.0.2.1", **extra),
        sendgrid_event("click", email, at + 3 * MINUTE, sg_event_id="ev-click",
                       url="https://library.example.org/events", **extra),
        sendgrid_event("deferred", email, at, sg_event_id="ev-deferred", attempt="5", **extra),
        sendgrid_event("unsubscribe", email, at + 4 * MINUTE, milliseconds=True,
                       sg_event_id="ev-unsubscribe", **extra),
    ]


# -- what an accepted batch does ----------------------------------------------------------------


def test_a_signed_batch_from_the_docs_opts_the_address_out_of_all_email(
        app, client, session, ctx, make_patron, signer):
    assert app.config.get("WTF_CSRF_ENABLED", True), "CSRF must be on: SendGrid sends no token"
    patron = make_patron(email="reader@example.org")

    response = post_batch(client, signer, docs_batch("reader@example.org", patron.public_id))

    assert response.status_code == 200
    assert response.json == {"batch": 1, "events": 6, "processed": True}
    assert verdict(session, ctx, patron).reason is Reason.OPTED_OUT
    [event] = session.scalars(select(ConsentEvent)).all()
    assert (event.source, event.actor, event.decision, event.topic) == (
        "sendgrid_webhook", "system", "opt_out", "")
    assert event.occurred_at == NOW - 26 * MINUTE  # the event's own time, read from milliseconds
    assert event.patron_id == patron.id and event.sg_event_id == "ev-unsubscribe"
    batch = session.get(WebhookBatch, 1)
    assert batch.status == "processed" and batch.signed_at == NOW
    assert batch.counts == {"skipped": 5, "applied": 1, "duplicate": 0, "unknown_group": 0,
                            "invalid": 0}


def test_engagement_events_leave_no_trace_but_the_stored_batch(client, session, signer):
    at = NOW - MINUTE
    events = [sendgrid_event(name, "reader@example.org", at, sg_event_id=f"e-{name}")
              for name in ("processed", "delivered", "open", "click", "deferred",
                           "group_unsubscribe_typo")]
    events.append(sendgrid_event("bounce", "reader@example.org", at, type="blocked"))

    assert post_batch(client, signer, events).status_code == 200

    assert count(session, SendGridEventReceipt) == 0
    assert count(session, ConsentEvent) == 0
    assert session.get(WebhookBatch, 1).counts["skipped"] == 7


def test_each_batch_delivered_three_times_is_applied_once(client, session, ctx, make_patron, signer,
                                                          topics):
    patron = make_patron(email="reader@example.org")
    events = [
        sendgrid_event("group_unsubscribe", "reader@example.org", NOW - 5 * MINUTE,
                       asm_group_id=EVENTS_GROUP, sg_event_id="g-1", sg_message_id="m-1"),
        sendgrid_event("spamreport", "other@example.org", NOW - 4 * MINUTE, sg_event_id="s-1"),
        sendgrid_event("bounce", "gone@example.org", NOW - 3 * MINUTE, type="bounce",
                       reason="550 5.1.1 no such user", status="5.1.1"),
    ]

    answers = [post_batch(client, signer, events).json for _ in range(3)]

    assert [answer["processed"] for answer in answers] == [True, True, True]
    assert count(session, ConsentEvent) == 2
    assert count(session, SendGridEventReceipt) == 3
    assert count(session, AddressSuppression) == 1 and count(session, UndeliverableAddress) == 1
    assert [session.get(WebhookBatch, n).counts["duplicate"] for n in (1, 2, 3)] == [0, 3, 3]
    assert verdict(session, ctx, patron, "events").reason is Reason.OPTED_OUT


def test_a_retry_with_a_new_sg_event_id_adds_nothing_to_the_ledger(client, session, signer):
    first = sendgrid_event("unsubscribe", "reader@example.org", NOW - MINUTE, sg_event_id="first",
                           sg_message_id="m-1")
    retried = dict(first, sg_event_id="changed-on-retry")

    post_batch(client, signer, [first])
    post_batch(client, signer, [retried])

    assert count(session, ConsentEvent) == 1
    assert session.get(WebhookBatch, 2).counts["duplicate"] == 1


def test_the_same_event_in_seconds_and_in_milliseconds_is_one_event(client, session, signer):
    at = NOW - MINUTE
    post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", at)])
    post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", at,
                                               milliseconds=True)])

    assert count(session, ConsentEvent) == 1


def test_a_late_group_resubscribe_never_overturns_a_newer_unsubscribe_made_on_our_pages(
        client, session, ctx, make_patron, signer, topics):
    patron = make_patron(email="reader@example.org")
    decide(session, ctx, patron=patron, decision="opt_out", topic="events", at=NOW - 10 * MINUTE)
    session.query(SuppressionSyncJob).delete()
    session.commit()

    post_batch(client, signer, [sendgrid_event(
        "group_resubscribe", "reader@example.org", NOW - 20 * MINUTE, asm_group_id=EVENTS_GROUP)])

    assert verdict(session, ctx, patron, "events").reason is Reason.OPTED_OUT
    assert count(session, ConsentEvent) == 2, "the late event is recorded, not in force"
    [job] = session.scalars(select(SuppressionSyncJob)).all()
    assert job.status == "pending", "SendGrid resubscribed the address: our newer opt-out goes back"


def test_a_newer_group_resubscribe_overturns_an_older_unsubscribe(client, session, ctx, make_patron,
                                                                  signer, topics):
    patron = make_patron(email="reader@example.org")
    decide(session, ctx, patron=patron, decision="opt_out", topic="events", at=NOW - 20 * MINUTE)

    post_batch(client, signer, [sendgrid_event(
        "group_resubscribe", "reader@example.org", NOW - 10 * MINUTE, asm_group_id=EVENTS_GROUP)])

    assert verdict(session, ctx, patron, "events").allowed


def test_patron_id_names_the_patron_when_it_matches_the_address(client, session, make_patron,
                                                               signer):
    named = make_patron(email="family@example.org")
    sharing = make_patron(email="family@example.org")

    post_batch(client, signer, [sendgrid_event("unsubscribe", "Family@Example.org", NOW - MINUTE,
                                               patron_id=named.public_id)])

    [event] = session.scalars(select(ConsentEvent)).all()
    assert event.patron_id == named.id
    assert [row.patron_id for row in session.scalars(select(PatronDecision))] == [named.id]
    assert len(address_rows(session)) == 1, "one decision, the address's, for both patrons"
    assert sharing.id != named.id


def test_a_patron_id_of_someone_at_another_address_is_not_taken(client, session, ctx, make_patron,
                                                                signer):
    elsewhere = make_patron(email="elsewhere@example.org")
    at_address = make_patron(email="shared@example.org")

    post_batch(client, signer, [sendgrid_event("unsubscribe", "shared@example.org", NOW - MINUTE,
                                               patron_id=elsewhere.public_id)])

    [event] = session.scalars(select(ConsentEvent)).all()
    assert event.patron_id is None, "recorded for the address alone"
    assert verdict(session, ctx, at_address).reason is Reason.OPTED_OUT
    assert verdict(session, ctx, elsewhere).allowed


def test_an_unknown_address_still_gets_its_suppression(client, session, ctx, make_patron, signer):
    post_batch(client, signer, [sendgrid_event("spamreport", "stranger@example.org",
                                               NOW - MINUTE)])

    suppression = session.get(AddressSuppression, ctx.address_key("stranger@example.org"))
    assert suppression.reason == "spam_report" and suppression.lifted_at is None
    assert address_rows(session) == {("", "opt_out", NOW - MINUTE)}
    newcomer = make_patron(email="stranger@example.org")
    assert verdict(session, ctx, newcomer).reason is Reason.ADDRESS_SUPPRESSED


def test_a_spam_report_suppresses_until_someone_at_the_address_opts_back_in(
        client, session, ctx, make_patron, signer):
    patron = make_patron(email="reader@example.org")
    post_batch(client, signer, [sendgrid_event("spamreport", "reader@example.org",
                                               NOW - 30 * MINUTE)])
    assert verdict(session, ctx, patron).reason is Reason.ADDRESS_SUPPRESSED

    decide(session, ctx, patron=patron, decision="opt_in", at=NOW - 10 * MINUTE)

    assert verdict(session, ctx, patron).allowed


def test_a_spam_report_older_than_an_opt_in_does_not_suppress_again(client, session, ctx,
                                                                     make_patron, signer):
    patron = make_patron(email="reader@example.org")
    decide(session, ctx, patron=patron, decision="opt_in", at=NOW - 10 * MINUTE)

    post_batch(client, signer, [sendgrid_event("spamreport", "reader@example.org",
                                               NOW - 30 * MINUTE)])

    suppression = session.get(AddressSuppression, ctx.address_key("reader@example.org"))
    assert suppression.lifted_at is not None
    assert verdict(session, ctx, patron).allowed


@pytest.mark.parametrize(("event", "fields", "outcome"), [
    ("bounce", {"type": "bounce", "reason": "550 5.1.1 unknown user"}, "undeliverable"),
    ("bounce", {"type": "blocked", "reason": "550 blocked"}, None),
    ("bounce", {"type": "deferred"}, None),
    ("dropped", {"reason": "Bounced Address"}, "undeliverable"),
    ("dropped", {"reason": "Invalid"}, "undeliverable"),
    ("dropped", {"reason": "Unsubscribed Address"}, "sendgrid_unsubscribed"),
    ("dropped", {"reason": "Spam Reporting Address"}, "spam_report"),
    ("dropped", {"reason": "Invalid SMTPAPI header"}, None),
])
def test_bounces_and_drops_mark_the_address_as_the_reason_says(client, session, ctx, signer, event,
                                                               fields, outcome):
    post_batch(client, signer, [sendgrid_event(event, "reader@example.org", NOW - MINUTE,
                                               **fields)])

    address = ctx.address_key("reader@example.org")
    undeliverable = session.get(UndeliverableAddress, address)
    suppression = session.get(AddressSuppression, address)
    found = ("undeliverable" if undeliverable else suppression.reason if suppression else None)
    assert found == outcome
    assert count(session, ConsentEvent) == 0, "bounces and drops are not decisions"


def test_an_unknown_group_is_counted_and_listed_not_dropped_silently(client, session, signer,
                                                                     topics, runner, caplog):
    caplog.set_level(logging.WARNING)
    post_batch(client, signer, [sendgrid_event("group_unsubscribe", "reader@example.org",
                                               NOW - MINUTE, asm_group_id=UNMAPPED_GROUP)])

    assert session.get(WebhookBatch, 1).counts["unknown_group"] == 1
    assert "mapped to no topic" in caplog.text
    result = runner.invoke(args=["sendgrid", "failures"])
    assert f"unsubscribe group {UNMAPPED_GROUP} is mapped to no topic: 1 event(s)" in result.output


def test_events_that_cannot_act_are_counted_and_the_rest_applied(client, session, signer):
    events = [
        {"event": "unsubscribe", "timestamp": int(NOW.timestamp())},  # no email
        sendgrid_event("unsubscribe", "not an address", NOW - MINUTE),
        sendgrid_event("unsubscribe", "a@example.org", NOW + timedelta(hours=2)),  # future
        sendgrid_event("group_unsubscribe", "a@example.org", NOW - MINUTE),  # no group
        dict(sendgrid_event("unsubscribe", "a@example.org", NOW), timestamp="yesterday"),
        "not an event",
        sendgrid_event("unsubscribe", "b@example.org", NOW - MINUTE),
    ]

    assert post_batch(client, signer, events).json["processed"] is True

    batch = session.get(WebhookBatch, 1)
    assert (batch.counts["invalid"], batch.counts["applied"], batch.counts["skipped"]) == (6, 1, 0)
    assert [item["index"] for item in batch.rejected] == [0, 1, 2, 3, 4, 5]
    assert [item["reason"].split(":")[0] for item in batch.rejected] == [
        "email", "email", "timestamp", "asm_group_id", "timestamp", "not a JSON object but text"]
    assert count(session, ConsentEvent) == 1


# -- one malformed event is rejected alone ----------------------------------------------------------


@pytest.mark.parametrize("malformed", [
    {"asm_group_id": "\u00b2"},  # a digit to str.isdigit, not to int()
    {"asm_group_id": 10**30},
    {"asm_group_id": 2**31},  # one past the largest INTEGER
    {"event": ["group_unsubscribe"]},
    {"sg_event_id": "ev\x00nt"},  # PostgreSQL refuses NUL in text
    {"patron_id": "p\x00"},
    {"sg_message_id": "m\u202e1"},
    {"email": "b\x00@example.org"},
    {"timestamp": 10**400},  # parses as JSON, too large for a float
], ids=lambda fields: ",".join(fields))
def test_one_malformed_event_is_rejected_and_the_rest_of_its_batch_applied(
        client, session, ctx, make_patron, signer, topics, runner, malformed):
    a = make_patron(email="a@example.org")
    b = make_patron(email="b@example.org")
    events = [sendgrid_event("unsubscribe", "a@example.org", NOW, sg_event_id="ev-a"),
              dict(sendgrid_event("group_unsubscribe", "b@example.org", NOW,
                                  asm_group_id=EVENTS_GROUP, sg_event_id="ev-b"), **malformed),
              sendgrid_event("spamreport", "c@example.org", NOW, sg_event_id="ev-c")]

    response = post_batch(client, signer, events)

    assert response.status_code == 200 and response.json["processed"] is True
    assert verdict(session, ctx, a).reason is Reason.OPTED_OUT
    assert verdict(session, ctx, b, "events").allowed, "the malformed event did nothing"
    assert session.get(AddressSuppression, ctx.address_key("c@example.org")) is not None
    batch = session.get(WebhookBatch, 1)
    assert (batch.counts["applied"], batch.counts["invalid"]) == (2, 1)
    [rejected] = batch.rejected
    assert rejected["index"] == 1 and rejected["reason"].startswith(next(iter(malformed)))
    listed = runner.invoke(args=["sendgrid", "failures"]).output
    assert "webhook events rejected (latest batches): 1" in listed
    assert f"batch 1 event [1], received 2026-06-01 12:00 UTC: {rejected['reason']}" in listed


def test_an_integer_too_long_for_python_rejects_its_event_not_the_batch(client, session, ctx,
                                                                       make_patron, signer):
    a = make_patron(email="a@example.org")
    good = batch_bytes([sendgrid_event("unsubscribe", "a@example.org", NOW)])
    bad = batch_bytes([sendgrid_event("group_unsubscribe", "b@example.org", NOW,
                                      asm_group_id=101)]).replace(b"101", b"9" * 5000)
    body = good[:-1] + b"," + bad[1:]  # json.dumps cannot write such an integer itself

    response = post_batch(client, signer, body)

    assert response.status_code == 200 and response.json["processed"] is True
    assert verdict(session, ctx, a).reason is Reason.OPTED_OUT
    assert session.get(WebhookBatch, 1).rejected == [
        {"index": 1, "reason": "asm_group_id: a number, not a group id"}]


def test_a_rejected_event_is_listed_with_its_reason_on_one_line_and_without_its_value(
        client, signer, runner):
    events = [sendgrid_event("unsubscribe", "a@example.org", NOW),
              dict(sendgrid_event("unsubscribe", "b@example.org", NOW),
                   timestamp="secret\nline\x00two")]

    post_batch(client, signer, events)

    listed = runner.invoke(args=["sendgrid", "failures"]).output
    assert "  batch 1 event [1], received 2026-06-01 12:00 UTC: timestamp: text that is not a " \
           "Unix time\n" in listed
    assert "secret" not in listed and "b@example.org" not in listed


def test_a_batch_without_rejected_events_records_none(client, session, signer):
    post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", NOW)])

    assert session.get(WebhookBatch, 1).rejected is None


def test_an_unexpected_failure_applying_one_event_undoes_only_that_event(
        client, session, ctx, make_patron, signer, monkeypatch, caplog):
    a = make_patron(email="a@example.org")
    b = make_patron(email="b@example.org")
    c = make_patron(email="c@example.org")
    real_record = sendgrid_webhook.record_email_decisions

    def fail_after_writing_for_b(session_, ctx_, decisions, **kwargs):
        recorded = real_record(session_, ctx_, decisions, **kwargs)  # b's decision is written
        if any(decision.email == "b@example.org" for decision in decisions):
            raise KeyError("a defect met by this event alone")  # then the failure
        return recorded

    # Met first where the batch's events are applied together, then by b alone when each event
    # is applied on its own.
    monkeypatch.setattr(sendgrid_webhook, "record_email_decisions", fail_after_writing_for_b)
    caplog.set_level(logging.WARNING)
    events = [sendgrid_event("unsubscribe", address, NOW - MINUTE, sg_event_id=f"ev-{address}")
              for address in ("a@example.org", "b@example.org", "c@example.org")]

    response = post_batch(client, signer, events)

    assert response.json["processed"] is True
    assert verdict(session, ctx, a).reason is Reason.OPTED_OUT
    assert verdict(session, ctx, c).reason is Reason.OPTED_OUT
    assert verdict(session, ctx, b).allowed, "b's half-done work was rolled back with its savepoint"
    assert {event.sg_event_id for event in session.scalars(select(ConsentEvent))} == {
        "ev-a@example.org", "ev-c@example.org"}
    assert count(session, SendGridEventReceipt) == 2, "b is not receipted: a replay tries it again"
    batch = session.get(WebhookBatch, 1)
    assert batch.rejected == [{"index": 1, "reason": "not applied: KeyError: 'a defect met by "
                                                     "this event alone'"}]
    assert "event 1 not applied: KeyError" in caplog.text
    assert "b@example.org" not in caplog.text


def test_a_database_outage_while_applying_fails_the_whole_batch_for_a_retry(
        client, session, ctx, make_patron, signer, monkeypatch):
    a = make_patron(email="a@example.org")
    b = make_patron(email="b@example.org")
    real_record = sendgrid_webhook.record_email_decisions

    def outage_at_b(session_, ctx_, decisions, **kwargs):
        if any(decision.email == "b@example.org" for decision in decisions):
            raise OperationalError("insert", {}, Exception("server closed the connection"))
        return real_record(session_, ctx_, decisions, **kwargs)

    monkeypatch.setattr(sendgrid_webhook, "record_email_decisions", outage_at_b)
    events = [sendgrid_event("unsubscribe", "a@example.org", NOW - MINUTE),
              sendgrid_event("unsubscribe", "b@example.org", NOW - MINUTE)]

    response = post_batch(client, signer, events)

    assert response.status_code == 200 and response.json["processed"] is False
    session.expire_all()
    batch = session.get(WebhookBatch, 1)
    assert (batch.status, batch.attempts) == ("failed", 1)
    assert batch.last_error == "OperationalError: (builtins.Exception) server closed the connection"
    assert count(session, ConsentEvent) == 0, "a's released savepoint was not committed alone"
    assert count(session, SendGridEventReceipt) == 0

    monkeypatch.setattr(sendgrid_webhook, "record_email_decisions", real_record)
    assert process_stored_batches(session, ctx, now=NOW + timedelta(minutes=2)) == 1

    assert verdict(session, ctx, a).reason is Reason.OPTED_OUT
    assert verdict(session, ctx, b).reason is Reason.OPTED_OUT


def test_an_event_applied_meanwhile_by_another_process_counts_as_a_duplicate(
        client, session, signer, monkeypatch):
    event = sendgrid_event("unsubscribe", "a@example.org", NOW - MINUTE, sg_event_id="ev-1")
    post_batch(client, signer, [event])
    # The second batch reads the receipts before the first one commits (two requests at once):
    # the unique receipt then refuses the event, which was applied after all.
    monkeypatch.setattr(sendgrid_webhook, "_receipts_for", lambda *args: (set(), set()))

    response = post_batch(client, signer, [event, sendgrid_event("unsubscribe", "b@example.org",
                                                                 NOW - MINUTE)])

    assert response.json["processed"] is True
    batch = session.get(WebhookBatch, 2)
    assert (batch.counts["duplicate"], batch.counts["applied"], batch.counts["invalid"]) == (1, 1, 0)
    assert batch.rejected is None
    assert count(session, ConsentEvent) == 2


def test_the_age_of_each_accepted_batch_is_logged_without_addresses(client, signer, caplog):
    caplog.set_level(logging.INFO)
    post_batch(client, signer, [sendgrid_event("unsubscribe", "private@example.org", NOW)],
               signed_at=NOW - 90 * MINUTE)

    assert "signed 5400 s ago" in caplog.text
    assert "private@example.org" not in caplog.text


# -- who may post ---------------------------------------------------------------------------------


def test_a_batch_signed_with_another_key_is_refused_and_not_stored(client, session):
    forger = WebhookSigner()

    response = post_batch(client, forger, [sendgrid_event("unsubscribe", "a@example.org", NOW)])

    assert response.status_code == 403
    assert response.json["code"] == 403
    assert count(session, WebhookBatch) == 0


def test_a_tampered_body_is_refused(client, session, signer):
    body = batch_bytes([sendgrid_event("open", "a@example.org", NOW)])
    headers = signer.headers(body, str(int(NOW.timestamp())))

    response = client.post("/webhooks/sendgrid", headers=headers, content_type="application/json",
                           data=body.replace(b'"open"', b'"unsubscribe"'))

    assert response.status_code == 403
    assert count(session, WebhookBatch) == 0


def test_the_signature_is_checked_on_the_bytes_as_sent_not_on_reformatted_json(client, session,
                                                                              signer):
    spaced = b'[ {"email": "a@example.org", "event": "unsubscribe", "timestamp": %d} ]' % int(
        NOW.timestamp())

    assert post_batch(client, signer, spaced).status_code == 200
    assert session.get(WebhookBatch, 1).body == spaced


@pytest.mark.parametrize("headers", [
    {SIGNATURE_HEADER: ""},
    {TIMESTAMP_HEADER: ""},
    {SIGNATURE_HEADER: "not base64 at all é"},
    {SIGNATURE_HEADER: "abc"},  # bad base64 padding
    {SIGNATURE_HEADER: "Z2FyYmFnZQ=="},  # base64, not a signature
    {TIMESTAMP_HEADER: "soon"},
])
def test_missing_or_malformed_signatures_are_refused(client, session, signer, headers):
    response = post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", NOW)],
                          headers=headers)

    assert response.status_code == 403
    assert count(session, WebhookBatch) == 0


def test_a_batch_signed_too_long_ago_is_refused(client, session, signer):
    response = post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", NOW)],
                          signed_at=NOW - timedelta(hours=26, seconds=1))

    assert response.status_code == 403
    assert count(session, WebhookBatch) == 0


def test_a_retry_signed_a_day_ago_is_still_accepted(client, signer):
    """SendGrid retries for 24 hours and does not say whether it signs a retry again."""
    response = post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", NOW)],
                          signed_at=NOW - timedelta(hours=25))

    assert response.status_code == 200


def test_a_batch_signed_in_the_future_is_refused(client, session, signer):
    response = post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", NOW)],
                          signed_at=NOW + timedelta(minutes=10))

    assert response.status_code == 403
    assert count(session, WebhookBatch) == 0


def test_a_captured_batch_replayed_inside_the_window_changes_nothing(client, session, ctx,
                                                                     make_patron, signer):
    patron = make_patron(email="reader@example.org")
    captured = batch_bytes([sendgrid_event("unsubscribe", "reader@example.org",
                                           NOW - 2 * MINUTE, sg_event_id="u-1")])
    headers = signer.headers(captured, str(int((NOW - MINUTE).timestamp())))
    client.post("/webhooks/sendgrid", data=captured, headers=headers,
                content_type="application/json")
    decide(session, ctx, patron=patron, decision="opt_in", at=NOW - MINUTE // 2)
    ledger = address_rows(session)

    replayed = client.post("/webhooks/sendgrid", data=captured, headers=headers,
                           content_type="application/json")

    assert replayed.status_code == 200
    assert address_rows(session) == ledger
    assert verdict(session, ctx, patron).allowed
    assert count(session, ConsentEvent) == 2


def test_without_a_key_the_endpoint_refuses(app_factory, signer):
    client = app_factory(SENDGRID_WEBHOOK_PUBLIC_KEY="").test_client()

    response = post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", NOW)])

    assert response.status_code == 503
    assert response.json["message"] == "webhook verification is not configured"


def test_a_key_that_is_not_a_public_key_is_refused_as_not_configured(app_factory, signer):
    client = app_factory(SENDGRID_WEBHOOK_PUBLIC_KEY="bm90IGEga2V5").test_client()

    response = post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", NOW)])

    assert response.status_code == 503


def test_verification_switched_off_for_development_takes_unsigned_batches(app_factory):
    app = app_factory(SENDGRID_WEBHOOK_PUBLIC_KEY="", SENDGRID_WEBHOOK_VERIFY=False,
                      CLOCK=lambda: NOW)

    response = app.test_client().post(
        "/webhooks/sendgrid", content_type="application/json",
        data=batch_bytes([sendgrid_event("unsubscribe", "a@example.org", NOW)]))

    assert response.status_code == 200
    with app.app_context():
        from consent_service.extensions import db
        assert db.session.get(WebhookBatch, 1).signed_at is None


# -- bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"garbage", b'{"event": "unsubscribe"}', b'"[]"',
                                  b"[" * 100_000 + b"]" * 100_000])
def test_a_signed_body_that_is_not_a_json_array_is_refused(client, session, signer, body):
    response = post_batch(client, signer, body)

    assert response.status_code == 400
    assert response.is_json
    assert count(session, WebhookBatch) == 0


def test_an_empty_array_is_accepted(client, signer):
    assert post_batch(client, signer, []).json == {"batch": 1, "events": 0, "processed": True}


def test_a_body_over_the_limit_is_refused_by_its_length(app_factory, signer):
    client = app_factory(SENDGRID_WEBHOOK_MAX_BYTES=1000, CLOCK=lambda: NOW,
                         SENDGRID_WEBHOOK_PUBLIC_KEY=signer.public_key_base64).test_client()
    events = [sendgrid_event("open", f"r{n}@example.org", NOW) for n in range(20)]

    response = post_batch(client, signer, events)

    assert response.status_code == 413
    assert response.is_json


@pytest.mark.parametrize(("size", "status"), [(999, 200), (1000, 200), (1001, 413), (5000, 413)])
def test_a_chunked_body_without_a_length_is_refused_as_too_large_only_past_the_limit(
        app_factory, signer, size, status):
    """A real HTTP/1.1 request with Transfer-Encoding: chunked, to a live server: the test client
    always sends a Content-Length, so it cannot show this."""
    app = app_factory(SENDGRID_WEBHOOK_MAX_BYTES=1000, CLOCK=lambda: NOW,
                      SENDGRID_WEBHOOK_PUBLIC_KEY=signer.public_key_base64)
    body = b"[" + b" " * (size - 2) + b"]"  # a valid, signed, empty batch of `size` bytes
    headers = signer.headers(body, str(int(NOW.timestamp())))
    headers["Content-Type"] = "application/json"

    with live_server(app) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/webhooks/sendgrid", body=iter([body[:400], body[400:]]),
                           headers=headers, encode_chunked=True)
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()

    assert response.status == status
    if status == 413:
        assert answer["message"] == "batches are limited to 1000 bytes"
    with app.app_context():
        from consent_service.extensions import db
        assert count(db.session, WebhookBatch) == (1 if status == 200 else 0)


@contextmanager
def live_server(app):
    """Serve `app` with werkzeug's server on a free port of 127.0.0.1 while inside."""
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, name="webhook-server", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


# -- nothing lost ---------------------------------------------------------------------------------


def test_when_the_batch_cannot_be_stored_sendgrid_is_told_to_retry(client, session, signer,
                                                                   monkeypatch):
    def broken_store(*args, **kwargs):
        raise OperationalError("insert", {}, Exception("database is down"))

    monkeypatch.setattr(sendgrid_webhook, "store_batch", broken_store)

    response = post_batch(client, signer, [sendgrid_event("unsubscribe", "a@example.org", NOW)])

    assert response.status_code == 503
    assert count(session, ConsentEvent) == 0


def test_a_batch_whose_processing_failed_is_kept_and_processed_by_the_worker(
        client, session, ctx, make_patron, signer, monkeypatch):
    patron = make_patron(email="reader@example.org")
    real_apply = sendgrid_webhook._apply_events
    calls = []

    def crash_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the process died halfway")
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(sendgrid_webhook, "_apply_events", crash_once)

    response = post_batch(client, signer, [sendgrid_event("unsubscribe", "reader@example.org",
                                                          NOW - MINUTE)])

    assert response.status_code == 200 and response.json["processed"] is False
    batch = session.get(WebhookBatch, 1)
    assert (batch.status, batch.attempts, batch.last_error) == (
        "failed", 1, "RuntimeError: the process died halfway")
    assert count(session, ConsentEvent) == 0
    assert process_stored_batches(session, ctx, now=NOW) == 0, "not before its backoff"

    assert process_stored_batches(session, ctx, now=NOW + timedelta(minutes=2)) == 1

    session.expire_all()
    assert session.get(WebhookBatch, 1).status == "processed"
    assert verdict(session, ctx, patron).reason is Reason.OPTED_OUT


def test_an_accepted_batch_is_stored_and_applied_in_one_commit(client, session, ctx, make_patron,
                                                              signer):
    # Each commit is a sync to disk on SQLite: the batch and what it did go in together.
    patron = make_patron(email="reader@example.org")
    commits = []
    engine = session.get_bind()
    listener = lambda connection: commits.append(1)  # noqa: E731
    event.listen(engine, "commit", listener)
    try:
        response = post_batch(client, signer, [sendgrid_event("unsubscribe", "reader@example.org",
                                                              NOW - MINUTE)])
    finally:
        event.remove(engine, "commit", listener)

    assert response.status_code == 200 and response.json["processed"] is True
    assert len(commits) == 1
    batch = session.get(WebhookBatch, 1)
    assert (batch.status, batch.attempts, batch.counts["applied"]) == ("processed", 1, 1)
    assert verdict(session, ctx, patron).reason is Reason.OPTED_OUT


def test_a_batch_that_cannot_be_committed_is_not_stored_and_sendgrid_is_told_to_retry(
        client, session, ctx, make_patron, signer, monkeypatch):
    patron = make_patron(email="reader@example.org")
    body = [sendgrid_event("unsubscribe", "reader@example.org", NOW - MINUTE, sg_event_id="ev-1")]
    real_commit = session.commit
    failures = []

    def commit_fails_once():
        if not failures:
            failures.append(1)
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))
        real_commit()

    monkeypatch.setattr(session, "commit", commit_fails_once)

    response = post_batch(client, signer, body)

    assert response.status_code == 503
    assert failures and count(session, WebhookBatch) == 0
    assert count(session, ConsentEvent) == 0 and count(session, SendGridEventReceipt) == 0
    assert post_batch(client, signer, body).json["processed"] is True, "SendGrid's retry"
    assert verdict(session, ctx, patron).reason is Reason.OPTED_OUT
    assert count(session, ConsentEvent) == 1


def test_a_batch_stored_by_a_process_that_then_died_is_processed_by_the_worker(session, ctx):
    body = batch_bytes([sendgrid_event("unsubscribe", "reader@example.org", NOW - MINUTE)])
    store_batch(session, body, event_count=1, signed_at=NOW, now=NOW)

    assert process_stored_batches(session, ctx, now=NOW) == 1
    assert process_stored_batches(session, ctx, now=NOW) == 0

    assert count(session, ConsentEvent) == 1


def test_verification_is_switched_off_only_by_an_explicit_setting_and_never_in_production():
    from consent_service import config

    assert config.from_environment({"CONSENT_SENDGRID_WEBHOOK_VERIFY": "false"}) == {
        "SENDGRID_WEBHOOK_VERIFY": False}
    assert config.from_environment({"CONSENT_SENDGRID_WEBHOOK_VERIFY": "yes please"}) == {
        "SENDGRID_WEBHOOK_VERIFY": True}
    production = {"CONSENT_ENV": "production", "SECRET_KEY": "s" * 40,
                  "ADDRESS_HASH_KEY": "a" * 40, "PUBLIC_BASE_URL": "https://consent.example.org",
                  "SENDGRID_WEBHOOK_VERIFY": False}
    with pytest.raises(config.UnsafeConfigError, match="CONSENT_SENDGRID_WEBHOOK_VERIFY"):
        config.check_production(production)

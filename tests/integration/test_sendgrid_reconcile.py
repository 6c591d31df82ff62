"""Reconciliation: what SendGrid knows and the ledger missed is recorded as it happened there; what
SendGrid missed is pushed; a second run right after finds nothing."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then taken as arguments

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from consent_service.domain.eligibility import Reason
from consent_service.models import (
    AddressSuppression,
    ConsentEvent,
    SuppressionSyncJob,
    UndeliverableAddress,
)
from consent_service.sendgrid import suppressions
from consent_service.services.sendgrid_reconcile import reconcile_suppressions
from consent_service.services.sendgrid_sync import push_pending_suppressions
from consent_service.services.standing import load_standings
from tests.conftest import NOW
from tests.integration.sendgrid_fixtures import (  # noqa: F401 - fixtures, used by name
    EVENTS_GROUP,
    NEWS_GROUP,
    UNMAPPED_GROUP,
    app,
    decide,
    fake_sendgrid,
    signer,
    suppression_client,
    topics,
)

HOUR = timedelta(hours=1)
T = int(NOW.timestamp())


def reconcile_and_push(session, ctx, client):
    report = reconcile_suppressions(session, ctx, client, now=NOW)
    while push_pending_suppressions(session, client, now=NOW):
        pass
    return report


def events(session):
    session.expire_all()
    return session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()


def verdict(session, ctx, patron, topic=None):
    session.expire_all()
    return load_standings(session, [patron])[patron.id].verdict(
        ctx.catalog.get("email_marketing"), topic, NOW.date())


def test_what_the_ledger_missed_is_recorded_with_sendgrids_own_time(
        session, ctx, make_patron, fake_sendgrid, suppression_client, topics):
    reader = make_patron(email="reader@example.org")
    fake_sendgrid.add_global_unsubscribe("reader@example.org", created=T - 7200)
    fake_sendgrid.add_group_suppression(EVENTS_GROUP, "grouped@example.org", created=T - 3600)
    fake_sendgrid.add_spam_report("spam@example.org", created=T - 600)
    fake_sendgrid.add_bounce("gone@example.org", created=T - 60, reason="550 no such user")

    report = reconcile_and_push(session, ctx, suppression_client)

    assert dict(report.missed) == {"global unsubscribes": 1, "group unsubscribes": 1,
                                   "spam reports": 1, "bounces": 1}
    recorded = {(e.address_key, e.topic, e.decision, e.occurred_at, e.source)
                for e in events(session)}
    assert recorded == {
        (ctx.address_key("reader@example.org"), "", "opt_out", NOW - 2 * HOUR,
         "sendgrid_reconcile"),
        (ctx.address_key("grouped@example.org"), "events", "opt_out", NOW - HOUR,
         "sendgrid_reconcile"),
        (ctx.address_key("spam@example.org"), "", "opt_out", NOW - timedelta(minutes=10),
         "sendgrid_reconcile"),
    }
    assert verdict(session, ctx, reader).reason is Reason.OPTED_OUT
    suppression = session.get(AddressSuppression, ctx.address_key("spam@example.org"))
    assert (suppression.reason, suppression.suppressed_at) == ("spam_report",
                                                               NOW - timedelta(minutes=10))
    assert session.get(UndeliverableAddress, ctx.address_key("gone@example.org")).reason == (
        "550 no such user")
    assert "spam@example.org" in fake_sendgrid.global_unsubscribes, "the spam report's opt-out"


def test_what_sendgrid_missed_is_pushed(session, ctx, make_patron, fake_sendgrid,
                                        suppression_client, topics):
    reader = make_patron(email="reader@example.org")
    decide(session, ctx, patron=reader, decision="opt_out", topic="news")
    decide(session, ctx, email="stranger@example.org", decision="opt_out")
    session.query(SuppressionSyncJob).update({"status": "failed", "last_error": "lost"})
    session.commit()

    report = reconcile_and_push(session, ctx, suppression_client)

    assert dict(report.behind) == {"group suppressions missing": 1,
                                   "global unsubscribes missing": 1}
    assert report.queued == 2 and not report.missed
    assert fake_sendgrid.group_suppressions[NEWS_GROUP] == {"reader@example.org"}
    assert "stranger@example.org" in fake_sendgrid.global_unsubscribes


def test_an_older_sendgrid_entry_is_recorded_but_our_newer_opt_in_wins_on_both_sides(
        session, ctx, make_patron, fake_sendgrid, suppression_client, topics):
    reader = make_patron(email="reader@example.org")
    fake_sendgrid.add_group_suppression(EVENTS_GROUP, "reader@example.org", created=T - 7200)
    decide(session, ctx, patron=reader, decision="opt_in", topic="events", at=NOW - HOUR)
    session.query(SuppressionSyncJob).delete()
    session.commit()

    report = reconcile_and_push(session, ctx, suppression_client)

    assert report.missed["group unsubscribes"] == 1
    assert report.behind["group suppressions to remove"] == 1
    assert verdict(session, ctx, reader, "events").allowed
    assert fake_sendgrid.group_suppressions[EVENTS_GROUP] == set()


def test_entries_we_pushed_ourselves_are_not_recorded_again(session, ctx, make_patron,
                                                           fake_sendgrid, suppression_client,
                                                           topics):
    reader = make_patron(email="reader@example.org")
    two_hours_ago = NOW - 2 * HOUR
    decide(session, ctx, patron=reader, decision="opt_out", topic="events", at=two_hours_ago,
           recorded_at=two_hours_ago)
    fake_sendgrid.clock = lambda: (two_hours_ago + timedelta(seconds=5)).timestamp()
    push_pending_suppressions(session, suppression_client, now=two_hours_ago)
    # the patron changes their mind on our pages; the push of that has not happened yet
    decide(session, ctx, patron=reader, decision="opt_in", topic="events", at=NOW - HOUR,
           recorded_at=NOW - HOUR)
    before = len(events(session))

    report = reconcile_and_push(session, ctx, suppression_client)

    assert len(events(session)) == before
    assert dict(report.behind) == {"group suppressions to remove": 1}
    assert fake_sendgrid.group_suppressions[EVENTS_GROUP] == set()


def test_an_old_decision_imported_after_our_push_is_not_overturned_by_reconciliation(
        session, ctx, make_patron, fake_sendgrid, suppression_client, topics):
    """A historic opt-in imported today is older than today's SendGrid entry, which we made."""
    reader = make_patron(email="reader@example.org")
    decide(session, ctx, patron=reader, decision="opt_out", topic="events",
           at=NOW - 400 * 24 * HOUR, recorded_at=NOW - 3 * HOUR)
    fake_sendgrid.clock = lambda: (NOW - 3 * HOUR).timestamp()
    push_pending_suppressions(session, suppression_client, now=NOW - 3 * HOUR)
    decide(session, ctx, patron=reader, decision="opt_in", topic="events",
           at=NOW - 300 * 24 * HOUR, recorded_at=NOW - HOUR)

    report = reconcile_and_push(session, ctx, suppression_client)

    assert not report.missed
    assert verdict(session, ctx, reader, "events").allowed
    assert fake_sendgrid.group_suppressions[EVENTS_GROUP] == set()


def test_a_sendgrid_unsubscribe_newer_than_our_opt_in_is_recorded_and_kept(
        session, ctx, make_patron, fake_sendgrid, suppression_client, topics):
    reader = make_patron(email="reader@example.org")
    decide(session, ctx, patron=reader, decision="opt_out", topic="events", at=NOW - 3 * HOUR)
    decide(session, ctx, patron=reader, decision="opt_in", topic="events", at=NOW - 2 * HOUR)
    push_pending_suppressions(session, suppression_client, now=NOW)
    # the webhook that told of this unsubscribe was lost
    fake_sendgrid.add_group_suppression(EVENTS_GROUP, "reader@example.org", created=T - 3600)

    report = reconcile_and_push(session, ctx, suppression_client)

    assert dict(report.missed) == {"group unsubscribes": 1}
    assert verdict(session, ctx, reader, "events").reason is Reason.OPTED_OUT
    assert fake_sendgrid.group_suppressions[EVENTS_GROUP] == {"reader@example.org"}


def test_running_it_twice_in_a_row_finds_no_drift_the_second_time(
        session, ctx, make_patron, fake_sendgrid, suppression_client, topics, monkeypatch):
    monkeypatch.setattr(suppressions, "PAGE_SIZE", 10)  # the lists below take three pages
    for n in range(25):
        fake_sendgrid.add_global_unsubscribe(f"global{n:02}@example.org", created=T - 100 - n)
    fake_sendgrid.add_group_suppression(NEWS_GROUP, "news@example.org", created=T - 500)
    fake_sendgrid.add_group_suppression(UNMAPPED_GROUP, "overdue@example.org", created=T - 500)
    fake_sendgrid.add_spam_report("spam@example.org", created=T - 400)
    fake_sendgrid.add_bounce("gone@example.org", created=T - 300)
    reader = make_patron(email="reader@example.org")
    decide(session, ctx, patron=reader, decision="opt_out", topic="events")
    decide(session, ctx, email="global03@example.org", decision="opt_in", at=NOW - HOUR / 2)
    session.query(SuppressionSyncJob).update({"status": "failed"})
    session.commit()

    first = reconcile_and_push(session, ctx, suppression_client)
    ledger = len(events(session))
    second = reconcile_and_push(session, ctx, suppression_client)

    assert first.missed["global unsubscribes"] == 25
    assert first.total == 25 + 1 + 1 + 1 + 1 + 1  # + group, spam, bounce, events push, stale global
    assert second.total == 0
    assert second.lines()[0] == "no drift: SendGrid and the ledger agree"
    assert len(events(session)) == ledger
    assert dict(second.unmapped_groups) == {UNMAPPED_GROUP: 1}
    offsets = [r.query.get("offset") for r in fake_sendgrid.requests
               if r.path == "/v3/suppression/unsubscribes"]
    assert offsets == [["0"], ["10"], ["20"]] * 2


def test_reconcile_command_prints_the_drift_then_none(fake_sendgrid, runner, topics):
    fake_sendgrid.add_global_unsubscribe("reader@example.org", created=T - 60)

    first = runner.invoke(args=["sendgrid", "reconcile"])
    second = runner.invoke(args=["sendgrid", "reconcile"])

    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[:3] == [
        "drift: 1", "  recorded from SendGrid, global unsubscribes: 1",
        "  addresses queued for a push: 0"]
    assert second.output.splitlines()[0] == "no drift: SendGrid and the ledger agree"

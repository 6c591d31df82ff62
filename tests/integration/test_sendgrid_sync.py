"""Pushing the ledger's email decisions to SendGrid: the latest state per address, batched, retried
when SendGrid is unavailable, parked when it refuses, each job sent once."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then taken as arguments

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from consent_service.domain.suppression_state import desired_suppressions
from consent_service.extensions import db
from consent_service.models import SuppressionSyncJob
from consent_service.sendgrid.client import SendGridApi
from consent_service.sendgrid.suppressions import SuppressionClient
from consent_service.services.sendgrid_addresses import address_state, topic_groups
from consent_service.services.sendgrid_sync import push_pending_suppressions
from tests.conftest import NOW
from tests.fakes.sendgrid_api import FakeSendGrid
from tests.integration.sendgrid_fixtures import (  # noqa: F401 - fixtures, used by name
    API_KEY,
    EVENTS_GROUP,
    NEWS_GROUP,
    app,
    decide,
    fake_sendgrid,
    signer,
    suppression_client,
    topics,
)

HOUR = timedelta(hours=1)


def jobs(session):
    session.expire_all()
    return session.scalars(select(SuppressionSyncJob).order_by(SuppressionSyncJob.id)).all()


def on_sendgrid(fake: FakeSendGrid, email: str) -> tuple[bool, set[int]]:
    """Whether SendGrid has the address on its global list, and the groups suppressing it."""
    groups = {group for group, emails in fake.group_suppressions.items() if email in emails}
    return email in fake.global_unsubscribes, groups


def writes(fake: FakeSendGrid) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests if r.method in ("POST", "DELETE")
            and not r.path.endswith("/search")]


def push_until_settled(session, client, *, start=NOW, rounds=60):
    """Run the sender as a worker would, the clock moving past every backoff; bounded."""
    now = start
    for _ in range(rounds):
        push_pending_suppressions(session, client, now=now)
        if not any(job.status in ("pending", "sending") for job in jobs(session)):
            return now
        now += 2 * HOUR
    raise AssertionError("the outbox did not settle")


def test_a_topic_opt_out_puts_the_address_in_the_groups_suppressions(
        session, ctx, make_patron, fake_sendgrid, suppression_client, topics):
    patron = make_patron(email="reader@example.org")
    decide(session, ctx, patron=patron, decision="opt_out", topic="events")

    assert push_pending_suppressions(session, suppression_client, now=NOW) == 1

    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, {EVENTS_GROUP})
    [job] = jobs(session)
    assert (job.status, job.attempts, job.finished_at) == ("done", 1, NOW)
    assert push_pending_suppressions(session, suppression_client, now=NOW) == 0


def test_all_email_out_then_in_again_restores_each_topics_own_decision(
        session, ctx, make_patron, fake_sendgrid, suppression_client, topics):
    patron = make_patron(email="reader@example.org")
    decide(session, ctx, patron=patron, decision="opt_out", topic="events", at=NOW - 4 * HOUR)
    push_pending_suppressions(session, suppression_client, now=NOW)
    decide(session, ctx, patron=patron, decision="opt_out", at=NOW - 3 * HOUR)
    push_pending_suppressions(session, suppression_client, now=NOW)
    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (True, {EVENTS_GROUP})

    decide(session, ctx, patron=patron, decision="opt_in", at=NOW - 2 * HOUR)
    decide(session, ctx, patron=patron, decision="opt_out", topic="news", at=NOW - HOUR)
    push_pending_suppressions(session, suppression_client, now=NOW)

    # events: the opt-in to all email is newer than the events opt-out; news: its opt-out is newer
    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, {NEWS_GROUP})


def test_many_changes_to_one_address_are_sent_once_as_the_latest_state(
        session, ctx, make_patron, fake_sendgrid, suppression_client, topics):
    patron = make_patron(email="reader@example.org")
    for hours_ago, decision in ((5, "opt_out"), (4, "opt_in"), (3, "opt_out"), (2, "opt_in"),
                                (1, "opt_out")):
        decide(session, ctx, patron=patron, decision=decision, topic="events",
               at=NOW - hours_ago * HOUR)
    assert len(jobs(session)) == 1

    push_pending_suppressions(session, suppression_client, now=NOW)

    assert writes(fake_sendgrid) == [("POST", f"/v3/asm/groups/{EVENTS_GROUP}/suppressions")]
    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, {EVENTS_GROUP})


def test_opt_outs_of_many_addresses_go_in_one_call(session, ctx, fake_sendgrid,
                                                   suppression_client, topics):
    emails = [f"reader{n:02}@example.org" for n in range(30)]
    for email in emails:
        decide(session, ctx, email=email, decision="opt_out", topic="events")

    assert push_pending_suppressions(session, suppression_client, now=NOW) == 30

    [call] = fake_sendgrid.requests
    assert sorted(call.json["recipient_emails"]) == emails
    assert fake_sendgrid.group_suppressions[EVENTS_GROUP] == set(emails)


def test_an_opt_in_removes_only_what_sendgrid_has(session, ctx, fake_sendgrid, suppression_client,
                                                 topics):
    fake_sendgrid.add_group_suppression(EVENTS_GROUP, "back@example.org")
    decide(session, ctx, email="back@example.org", decision="opt_in", topic="events")
    decide(session, ctx, email="never@example.org", decision="opt_in", topic="events")

    push_pending_suppressions(session, suppression_client, now=NOW)

    assert writes(fake_sendgrid) == [
        ("DELETE", f"/v3/asm/groups/{EVENTS_GROUP}/suppressions/back@example.org")]
    assert on_sendgrid(fake_sendgrid, "back@example.org") == (False, set())


def test_where_nobody_decided_sendgrids_entries_are_left_alone(session, ctx, fake_sendgrid,
                                                              suppression_client, topics):
    """An entry we have no decision for is an unsubscribe we have not heard of yet."""
    fake_sendgrid.add_global_unsubscribe("reader@example.org")
    fake_sendgrid.add_group_suppression(NEWS_GROUP, "reader@example.org")
    decide(session, ctx, email="reader@example.org", decision="opt_out", topic="events")

    push_pending_suppressions(session, suppression_client, now=NOW)

    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (True, {EVENTS_GROUP, NEWS_GROUP})


def test_a_rate_limited_push_waits_for_sendgrids_reset_without_sleeping(
        session, ctx, fake_sendgrid, suppression_client, topics):
    decide(session, ctx, email="reader@example.org", decision="opt_out", topic="events")
    fake_sendgrid.fail_next(1, status=429, reset_after_seconds=120)

    assert push_pending_suppressions(session, suppression_client, now=NOW) == 1

    [job] = jobs(session)
    reset = NOW + timedelta(seconds=120)
    assert (job.status, job.attempts, job.available_at) == ("pending", 1, reset)
    assert "HTTP 429" in job.last_error
    early = reset - timedelta(seconds=1)
    assert push_pending_suppressions(session, suppression_client, now=early) == 0
    assert push_pending_suppressions(session, suppression_client, now=reset) == 1
    assert jobs(session)[0].status == "done"
    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, {EVENTS_GROUP})


@pytest.mark.parametrize("failure", ["500", "dropped", "timeout"])
def test_an_unavailable_sendgrid_means_a_retry_with_backoff(session, ctx, fake_sendgrid, topics,
                                                           failure):
    client = SuppressionClient(SendGridApi(API_KEY, fake_sendgrid.url, timeout=0.2))
    decide(session, ctx, email="reader@example.org", decision="opt_out", topic="events")
    if failure == "500":
        fake_sendgrid.fail_next(1, status=500)
    elif failure == "dropped":
        fake_sendgrid.drop_next(1)
    else:
        fake_sendgrid.slow(0.5)

    push_pending_suppressions(session, client, now=NOW)
    fake_sendgrid.slow(0)

    [job] = jobs(session)
    assert job.status == "pending" and job.attempts == 1
    assert NOW + timedelta(seconds=15) <= job.available_at <= NOW + timedelta(seconds=30)
    push_pending_suppressions(session, client, now=job.available_at)
    assert jobs(session)[0].status == "done"
    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, {EVENTS_GROUP})


def test_backoff_grows_with_each_failed_try(session, ctx, fake_sendgrid, suppression_client,
                                           topics):
    decide(session, ctx, email="reader@example.org", decision="opt_out", topic="events")
    waits = []
    now = NOW
    for _ in range(4):
        fake_sendgrid.fail_next(1, status=503)
        push_pending_suppressions(session, suppression_client, now=now)
        job = jobs(session)[0]
        waits.append((job.available_at - now).total_seconds())
        now = job.available_at

    assert [15 <= w <= 30 for w in waits[:1]] == [True]
    assert all(60 * 2 ** (n - 1) / 2 <= wait <= 60 * 2 ** (n - 1)
               for n, wait in enumerate(waits[1:], start=1))


def test_a_refused_push_is_parked_as_failed_and_listed(session, ctx, fake_sendgrid,
                                                       suppression_client, topics, runner):
    decide(session, ctx, email="reader@example.org", decision="opt_out", topic="events")
    fake_sendgrid.fail_next(1, status=400)

    push_pending_suppressions(session, suppression_client, now=NOW)

    [job] = jobs(session)
    assert (job.status, job.finished_at) == ("failed", NOW)
    assert "HTTP 400" in job.last_error
    listed = runner.invoke(args=["sendgrid", "failures"])
    assert f"job {job.id} failed after 1 attempt(s): " in listed.output
    assert "1 failed" in listed.output

    decide(session, ctx, email="reader@example.org", decision="opt_out", at=NOW - HOUR / 2)
    assert [j.status for j in jobs(session)] == ["failed", "pending"], "a new change is sent anew"


def test_one_refused_address_does_not_hold_back_the_others(session, ctx, fake_sendgrid,
                                                           suppression_client, topics):
    decide(session, ctx, email="first@example.org", decision="opt_out", topic="events")
    decide(session, ctx, email="second@example.org", decision="opt_out", topic="events")
    fake_sendgrid.fail_next(2, status=400)  # the batch, then the first address alone

    push_pending_suppressions(session, suppression_client, now=NOW)

    assert [job.status for job in jobs(session)] == ["failed", "done"]
    assert fake_sendgrid.group_suppressions[EVENTS_GROUP] == {"second@example.org"}


def test_a_job_for_an_erased_address_is_closed_with_a_note(session, fake_sendgrid,
                                                          suppression_client):
    session.add(SuppressionSyncJob(address_key="k" * 64, email=None, created_at=NOW,
                                   available_at=NOW))
    session.commit()

    assert push_pending_suppressions(session, suppression_client, now=NOW) == 1

    [job] = jobs(session)
    assert (job.status, job.last_error) == ("done", "no email address to push (erased)")
    assert fake_sendgrid.requests == []


def test_a_decision_made_while_its_address_is_being_sent_is_sent_next(
        session, ctx, fake_sendgrid, suppression_client, topics):
    decide(session, ctx, email="reader@example.org", decision="opt_out", topic="events",
           at=NOW - 2 * HOUR)

    class DecidingMidway(SuppressionClient):
        def suppress_in_group(self, group_id, emails):
            decide(session, ctx, email="reader@example.org", decision="opt_in", topic="events",
                   at=NOW - HOUR)
            super().suppress_in_group(group_id, emails)

    push_pending_suppressions(session, DecidingMidway(suppression_client._api), now=NOW)
    assert [job.status for job in jobs(session)] == ["done", "pending"]
    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, {EVENTS_GROUP})

    push_pending_suppressions(session, suppression_client, now=NOW)

    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, set())


def test_a_job_left_sending_by_a_worker_that_died_is_taken_up_after_its_lease(
        session, ctx, fake_sendgrid, suppression_client, topics):
    decide(session, ctx, email="reader@example.org", decision="opt_out", topic="events")
    [job] = jobs(session)
    job.status, job.attempts, job.available_at = "sending", 1, NOW + timedelta(minutes=15)
    session.commit()

    assert push_pending_suppressions(session, suppression_client, now=NOW) == 0
    assert push_pending_suppressions(session, suppression_client,
                                     now=NOW + timedelta(minutes=15)) == 1
    assert jobs(session)[0].attempts == 2
    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, {EVENTS_GROUP})


def test_with_30_percent_of_calls_failing_sendgrid_still_ends_equal_to_the_ledger(
        session, ctx, fake_sendgrid, suppression_client, topics):
    emails = [f"reader{n:02}@example.org" for n in range(40)]
    for n, email in enumerate(emails):
        if n % 4 == 1:  # SendGrid has suppressions our newer opt-ins must undo
            fake_sendgrid.add_global_unsubscribe(email)
            fake_sendgrid.add_group_suppression(EVENTS_GROUP, email)
        plan = [("opt_out", "events"), ("opt_out", None), ("opt_in", None), ("opt_out", "news")]
        for step, (decision, topic) in enumerate(plan[: 1 + n % 4]):
            decide(session, ctx, email=email, decision=decision, topic=topic,
                   at=NOW - timedelta(hours=10 - step))
    fake_sendgrid.failure_rate(0.3, seed=20260601)

    push_until_settled(session, suppression_client)

    fake_sendgrid.failure_rate(0)
    assert {job.status for job in jobs(session)} == {"done"}
    groups = topic_groups(session)
    for email in emails:
        want = desired_suppressions(address_state(session, ctx.address_key(email)), groups)
        listed_global, listed_groups = on_sendgrid(fake_sendgrid, email)
        assert want.global_unsubscribe in (None, listed_global), email
        for group_id, suppressed in want.groups:
            assert (group_id in listed_groups) is suppressed, email
    assert max(job.attempts for job in jobs(session)) > 1, "failures happened and were retried"


def test_sync_command_pushes_and_prints_what_is_left(session, ctx, fake_sendgrid, topics, runner):
    decide(session, ctx, email="reader@example.org", decision="opt_out", topic="events")

    result = runner.invoke(args=["sendgrid", "sync"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == ("pushed 1 job(s); waiting: 0 due now, 0 later (0 after a "
                                     "failed try); failed: 0")
    assert on_sendgrid(fake_sendgrid, "reader@example.org") == (False, {EVENTS_GROUP})


def test_sync_command_without_an_api_key_says_so(app_factory):
    result = app_factory(SENDGRID_API_KEY="").test_cli_runner().invoke(args=["sendgrid", "sync"])

    assert result.exit_code == 1
    assert "set CONSENT_SENDGRID_API_KEY" in result.output


@pytest.mark.postgresql_only
def test_two_workers_on_postgresql_send_each_job_exactly_once(app, session, ctx, fake_sendgrid,
                                                              topics):
    emails = [f"reader{n:03}@example.org" for n in range(120)]
    for email in emails:
        decide(session, ctx, email=email, decision="opt_out", topic="events")
    fake_sendgrid.slow(0.005)
    rounds = len(emails) // (2 * 7) + 3
    in_step = threading.Barrier(2, timeout=30)
    taken: dict[int, list[int]] = {0: [], 1: []}
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        """Claim at the same moment as the other worker, round after round."""
        client = SuppressionClient(SendGridApi(API_KEY, fake_sendgrid.url, timeout=5))
        try:
            with app.app_context():
                for _ in range(rounds):
                    in_step.wait()
                    taken[number].append(
                        push_pending_suppressions(db.session, client, now=NOW, limit=7))
                db.session.remove()
        except BaseException as error:  # surfaced below, in the test's thread
            errors.append(error)
            in_step.abort()

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sum(taken[0]) + sum(taken[1]) == len(emails)
    assert sum(taken[0]) and sum(taken[1]), "both workers took jobs"
    sent = [email for r in fake_sendgrid.requests if r.method == "POST"
            for email in r.json["recipient_emails"]]
    assert sorted(sent) == emails, "every address sent, none twice"
    assert {(job.status, job.attempts) for job in jobs(session)} == {("done", 1)}

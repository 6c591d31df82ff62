"""Pushing the ledger's email decisions to SendGrid's suppression lists, through the outbox of
suppression sync jobs: the latest state per address, each job sent once, nothing dropped."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from consent_service.domain.suppression_state import DesiredSuppressions
from consent_service.models import SendGridEventReceipt, SuppressionSyncJob, WebhookBatch
from consent_service.sendgrid.client import (
    SendGridRejectedError,
    SendGridUnavailableError,
    retry_at,
)
from consent_service.sendgrid.suppressions import SuppressionClient
from consent_service.services.decisions import queue_suppression_sync
from consent_service.services.sendgrid_addresses import desired_for, topic_groups

logger = logging.getLogger(__name__)

# A claimed job is leased: if its worker dies mid-push, another may take it after this long.
LEASE = timedelta(minutes=15)
# After this many SendGrid calls in a row that failed and are worth retrying, the round stops.
_FAILURES_BEFORE_PAUSE = 3


@dataclass(frozen=True)
class _Claimed:
    id: int
    address: str
    email: str | None
    attempts: int


@dataclass
class _Result:
    """What became of one claimed job in this round."""

    retry: SendGridUnavailableError | None = None
    refused: str | None = None
    note: str | None = None


@dataclass
class _Call:
    """One SendGrid call and the jobs (by id) that need it to succeed."""

    run: Callable[[], object]
    jobs: list[int]
    split: Callable[[], list[_Call]] | None = None  # single-address calls, if SendGrid refuses many


@dataclass
class _Plan:
    desired: dict[int, DesiredSuppressions] = field(default_factory=dict)  # the state in force
    to_send: dict[int, DesiredSuppressions] = field(default_factory=dict)  # what SendGrid lacks
    results: dict[int, _Result] = field(default_factory=dict)


def push_pending_suppressions(session: Session, client: SuppressionClient, *, now: datetime,
                              limit: int = 500, rng: random.Random | None = None) -> int:
    """Push to SendGrid the email state in force for up to `limit` addresses whose jobs are due.

    Rules: the job only names the address, and the state is read when the job runs, so many changes
    to one address cost one push (coalescing). Opt-outs are added before opt-ins are removed, and
    group additions are batched. A 429, a 5xx, a timeout or a dropped connection reschedules the job
    with exponential backoff and jitter, never before SendGrid's X-RateLimit-Reset (nothing sleeps);
    any other 4xx parks the job as `failed` with SendGrid's error (`flask sendgrid failures`). Jobs
    are claimed with FOR UPDATE SKIP LOCKED and leased, so several workers never send one job twice.
    If the state changed while it was being sent, the address is queued again. A job without an
    address (erased since) is closed with a note. A job tried before (its answer may have been lost
    to a timeout, a reset connection or a killed worker, after SendGrid carried it out) first reads
    what SendGrid has and sends only what is missing, so a lost answer never makes a change twice.
    Commits twice: the claim, then the outcome.
    Returns how many jobs were taken up.
    """
    claimed = _claim(session, now, limit)
    if not claimed:
        return 0
    plan = _plan(session, claimed)
    _skip_what_sendgrid_has(client, claimed, plan)
    _send(client, claimed, plan)
    _finish(session, claimed, plan, now, rng)
    return len(claimed)


def _claim(session: Session, now: datetime, limit: int) -> list[_Claimed]:
    due = or_(SuppressionSyncJob.status == "pending", SuppressionSyncJob.status == "sending")
    jobs = session.scalars(
        select(SuppressionSyncJob).where(due, SuppressionSyncJob.available_at <= now)
        .order_by(SuppressionSyncJob.available_at, SuppressionSyncJob.id)
        .limit(limit).with_for_update(skip_locked=True)).all()
    claimed = []
    for job in jobs:
        job.status = "sending"
        job.attempts += 1
        job.available_at = now + LEASE
        claimed.append(_Claimed(job.id, job.address_key, job.email, job.attempts))
    session.commit()
    return claimed


def _plan(session: Session, claimed: list[_Claimed]) -> _Plan:
    """Read the state in force for the claimed addresses; one job per address goes ahead."""
    plan = _Plan()
    groups = topic_groups(session)
    desired = desired_for(session, sorted({job.address for job in claimed}), groups)
    session.commit()  # end the read before talking to SendGrid
    leading: dict[str, int] = {}
    for job in claimed:
        plan.results[job.id] = _Result()
        if job.email is None:
            plan.results[job.id].note = "no email address to push (erased)"
        elif job.address in leading:
            plan.results[job.id].note = f"coalesced into job {leading[job.address]}"
        else:
            leading[job.address] = job.id
            plan.desired[job.id] = plan.to_send[job.id] = desired[job.address]
    return plan


def _skip_what_sendgrid_has(client: SuppressionClient, claimed: list[_Claimed],
                            plan: _Plan) -> None:
    """For jobs tried before, leave out of `plan.to_send` the entries SendGrid already has: one
    search per group, one read per global entry. First tries read nothing. If SendGrid cannot be
    read, the retried jobs wait for the next round; if it refuses the reads, they are sent whole."""
    retried = [job for job in claimed if job.attempts > 1 and job.id in plan.to_send and job.email]
    if not retried:
        return
    adding: dict[int, list[str]] = {}
    for job in retried:
        for group_id, suppressed in plan.to_send[job.id].groups:
            if suppressed:
                adding.setdefault(group_id, []).append(job.email or "")
    try:
        present = {group_id: client.suppressed_in_group(group_id, emails)
                   for group_id, emails in sorted(adding.items())}
        for job in retried:
            email = job.email or ""
            wanted = plan.to_send[job.id]
            global_entry = wanted.global_unsubscribe
            if global_entry is not None and client.globally_unsubscribed(email) is global_entry:
                global_entry = None
            groups = tuple((group_id, suppressed) for group_id, suppressed in wanted.groups
                           if not (suppressed and email.lower() in present.get(group_id, ())))
            plan.to_send[job.id] = DesiredSuppressions(global_entry, groups)
    except SendGridUnavailableError as error:
        for job in retried:
            plan.results[job.id].retry = error
            plan.to_send.pop(job.id, None)
    except SendGridRejectedError:
        for job in retried:
            plan.to_send[job.id] = plan.desired[job.id]


def _send(client: SuppressionClient, claimed: list[_Claimed], plan: _Plan) -> None:
    email_of = {job.id: job.email or "" for job in claimed}
    calls = _calls(client, plan.to_send, email_of)
    failures_in_a_row = 0
    pending = list(calls)
    while pending:
        call = pending.pop(0)
        live = [job for job in call.jobs if plan.results[job].retry is None
                and plan.results[job].refused is None]
        if not live:
            continue
        try:
            call.run()
            failures_in_a_row = 0
        except SendGridUnavailableError as error:
            failures_in_a_row += 1
            for job in live:
                plan.results[job].retry = error
            if error.rate_limited or failures_in_a_row >= _FAILURES_BEFORE_PAUSE:
                _defer_rest(pending, plan, error)
                logger.info("SendGrid sync paused: %s", "rate limited" if error.rate_limited
                            else "SendGrid is failing")
                return
        except SendGridRejectedError as error:
            if call.split is not None and len(live) > 1:
                pending[0:0] = call.split()  # find the one address SendGrid refuses
                continue
            for job in live:
                plan.results[job].refused = str(error)


def _defer_rest(pending: list[_Call], plan: _Plan, error: SendGridUnavailableError) -> None:
    for call in pending:
        for job in call.jobs:
            result = plan.results[job]
            if result.retry is None and result.refused is None:
                result.retry = error


def _calls(client: SuppressionClient, desired: dict[int, DesiredSuppressions],
           email_of: dict[int, str]) -> list[_Call]:
    """The SendGrid calls that bring the addresses to their desired state: additions first (an
    opt-out must not wait behind an opt-in), then removals."""
    add_global: list[int] = []
    remove_global: list[int] = []
    add_group: dict[int, list[int]] = {}
    remove_group: dict[int, list[int]] = {}
    for job, state in desired.items():
        if state.global_unsubscribe is True:
            add_global.append(job)
        elif state.global_unsubscribe is False:
            remove_global.append(job)
        for group_id, suppressed in state.groups:
            (add_group if suppressed else remove_group).setdefault(group_id, []).append(job)

    def adding(run: Callable[[list[str]], object], jobs: list[int]) -> _Call:
        def split() -> list[_Call]:
            return [_Call(lambda job=job: run([email_of[job]]), [job]) for job in jobs]
        return _Call(lambda: run([email_of[job] for job in jobs]), jobs, split)

    calls = []
    if add_global:
        calls.append(adding(client.unsubscribe_globally, add_global))
    for group_id, jobs in sorted(add_group.items()):
        calls.append(adding(lambda emails, g=group_id: client.suppress_in_group(g, emails), jobs))
    for group_id, jobs in sorted(remove_group.items()):
        calls.append(_Call(_remover(client, group_id, jobs, email_of), jobs))
    for job in remove_global:
        calls.append(_Call(lambda job=job: client.resubscribe_globally(email_of[job]), [job]))
    return calls


def _remover(client: SuppressionClient, group_id: int, jobs: Sequence[int],
             email_of: dict[int, str]) -> Callable[[], None]:
    """Search the group once for these addresses, then delete only those in it (one call each)."""
    def run() -> None:
        emails = [email_of[job] for job in jobs]
        for email in sorted(client.suppressed_in_group(group_id, emails)):
            client.unsuppress_in_group(group_id, email)
    return run


def _finish(session: Session, claimed: list[_Claimed], plan: _Plan, now: datetime,
            rng: random.Random | None) -> None:
    jobs = {job.id: job for job in session.scalars(
        select(SuppressionSyncJob).where(SuppressionSyncJob.id.in_([c.id for c in claimed])))}
    pushed: dict[str, tuple[str, DesiredSuppressions]] = {}
    done = retried = refused = 0
    for claim in claimed:
        job, result = jobs[claim.id], plan.results[claim.id]
        if result.retry is not None:
            retried += 1
            _reschedule(session, job, result.retry, now, rng)
        elif result.refused is not None:
            refused += 1
            job.status, job.finished_at, job.last_error = "failed", now, result.refused[:1000]
        else:
            done += 1
            job.status, job.finished_at, job.last_error = "done", now, result.note
            if claim.id in plan.desired and claim.email:
                pushed[claim.address] = (claim.email, plan.desired[claim.id])
    if pushed:
        now_desired = desired_for(session, sorted(pushed), topic_groups(session))
        for address, (email, sent) in pushed.items():
            if now_desired[address] != sent:  # a decision arrived while we were sending
                queue_suppression_sync(session, address, email, now)
    session.commit()
    logger.info("SendGrid sync: %d done, %d to retry, %d refused", done, retried, refused)


def _reschedule(session: Session, job: SuppressionSyncJob, error: SendGridUnavailableError,
                now: datetime, rng: random.Random | None) -> None:
    """Back to pending after the backoff, or merged into a newer pending job for the address."""
    when = retry_at(job.attempts, now, error.reset_at, rng=rng)
    job.last_error = str(error)[:1000]
    newer = session.scalar(select(SuppressionSyncJob).where(
        SuppressionSyncJob.address_key == job.address_key, SuppressionSyncJob.status == "pending",
        SuppressionSyncJob.id != job.id).limit(1))
    if newer is None:
        job.status, job.available_at = "pending", when
        return
    job.status, job.finished_at = "done", now
    job.last_error = f"coalesced into job {newer.id} after: {str(error)[:900]}"
    newer.available_at = max(newer.available_at, when)
    newer.attempts = max(newer.attempts, job.attempts)
    if newer.email is None:
        newer.email = job.email


@dataclass(frozen=True)
class SyncStatus:
    """The outbox and the webhook's backlog at a glance, for `flask sendgrid failures`."""

    pending_due: int
    pending_later: int
    retrying: int
    failed_jobs: list[tuple[int, int, str]]  # (job id, attempts, error)
    waiting_batches: list[tuple[int, str, int, str]]  # (batch id, status, attempts, error)
    unknown_groups: list[tuple[int, int]]  # (asm group id, events)


def sync_status(session: Session, *, now: datetime, limit: int = 50) -> SyncStatus:
    """What is waiting or failed: suppression jobs, webhook batches not yet processed, and events
    naming unsubscribe groups that no topic is mapped to (map them with `topics add
    --sendgrid-group`, then run `sendgrid reconcile`)."""
    job = SuppressionSyncJob
    pending = job.status.in_(("pending", "sending"))
    due = session.scalar(select(func.count()).where(pending, job.available_at <= now)) or 0
    later = session.scalar(select(func.count()).where(pending, job.available_at > now)) or 0
    retrying = session.scalar(select(func.count()).where(pending, job.attempts > 0)) or 0
    failed = [(row.id, row.attempts, row.last_error or "") for row in session.scalars(
        select(job).where(job.status == "failed").order_by(job.id).limit(limit))]
    batches = [(row.id, row.status, row.attempts, row.last_error or "") for row in session.scalars(
        select(WebhookBatch).where(WebhookBatch.status != "processed")
        .order_by(WebhookBatch.id).limit(limit))]
    receipt = SendGridEventReceipt
    unknown = [(int(group), int(count)) for group, count in session.execute(
        select(receipt.asm_group_id, func.count()).where(receipt.outcome == "unknown_group")
        .group_by(receipt.asm_group_id).order_by(receipt.asm_group_id))]
    session.commit()
    return SyncStatus(due, later, retrying, failed, batches, unknown)


@dataclass(frozen=True)
class RejectedEvent:
    """An event of a batch that was not applied: where it is in the stored body, and why."""

    batch_id: int
    received_at: datetime
    index: int  # its position in the batch's JSON array, from 0
    reason: str


def rejected_events(session: Session, *, batches: int = 20) -> list[RejectedEvent]:
    """The events rejected in the latest `batches` batches that had any, newest batch first (each
    batch's own events in order). The batch's stored body still holds each event as received, until
    retention removes it."""
    rows = session.execute(
        select(WebhookBatch.id, WebhookBatch.received_at, WebhookBatch.rejected)
        .where(WebhookBatch.rejected.is_not(None))
        .order_by(WebhookBatch.id.desc()).limit(batches)).all()
    found = [RejectedEvent(batch_id, received_at, int(item["index"]), str(item["reason"]))
             for batch_id, received_at, rejected in rows for item in rejected or []]
    session.rollback()  # read only: end the read transaction
    return found

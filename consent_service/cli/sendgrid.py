"""Keeping SendGrid and the ledger in step: push, reconcile, list what has not gone through."""

from __future__ import annotations

from typing import Any

import click

from consent_service import runtime
from consent_service.cli.common import ServiceGroup, progress_bar
from consent_service.extensions import db

sendgrid = ServiceGroup("sendgrid", help="Keep SendGrid and the ledger in step.")


_PUSH_ROUNDS = 10_000  # a bound on one command's rounds; each round takes up to 500 jobs


def _push_due_suppressions(client: Any) -> int:
    """Push suppression jobs round after round until none is due; how many were taken up."""
    from consent_service.services.sendgrid_sync import push_pending_suppressions

    taken = 0
    for _ in range(_PUSH_ROUNDS):
        handled = push_pending_suppressions(db.session, client, now=runtime.now())
        if not handled:
            break
        taken += handled
    return taken


def _echo_sync_status(taken: int) -> None:
    from consent_service.services.sendgrid_sync import sync_status

    status = sync_status(db.session, now=runtime.now())
    click.echo(f"pushed {taken} job(s); waiting: {status.pending_due} due now, "
               f"{status.pending_later} later ({status.retrying} after a failed try); "
               f"failed: {len(status.failed_jobs)}"
               + (" (see `flask sendgrid failures`)" if status.failed_jobs else ""))


@sendgrid.command("sync")
def sendgrid_sync() -> None:
    """Push every due suppression change to SendGrid now, once, and print what is left."""
    _echo_sync_status(_push_due_suppressions(runtime.suppression_client()))


@sendgrid.command("reconcile")
def sendgrid_reconcile() -> None:
    """Compare SendGrid's suppression lists with the ledger, record what the ledger missed, push
    what SendGrid missed, and print the drift by kind (none, when run again right after)."""
    from consent_service.services.sendgrid_reconcile import READ_STEPS, reconcile_suppressions

    client = runtime.suppression_client(read_attempts=5)
    entries = [0]

    def read(step: str, count: int) -> None:
        entries[0] += count
        advance(1)

    with progress_bar(len(READ_STEPS), "Reading SendGrid's lists", "entries",
                      measure=lambda: entries[0]) as advance:
        report = reconcile_suppressions(db.session, runtime.context(), client, now=runtime.now(),
                                        on_read=read)
    for line in report.lines():
        click.echo(line)
    _echo_sync_status(_push_due_suppressions(client))


@sendgrid.command("failures")
def sendgrid_failures() -> None:
    """List what has not gone through: suppression jobs SendGrid refused, jobs waiting to retry,
    webhook batches not processed, events naming a group no topic is mapped to, and webhook events
    rejected (by batch and index in its stored body, with the reason)."""
    from consent_service.services.sendgrid_sync import rejected_events, sync_status

    status = sync_status(db.session, now=runtime.now())
    click.echo(f"suppression jobs: {status.pending_due} due, {status.pending_later} waiting "
               f"({status.retrying} after a failed try), {len(status.failed_jobs)} failed")
    for job_id, attempts, error in status.failed_jobs:
        click.echo(f"  job {job_id} failed after {attempts} attempt(s): {error}")
    click.echo(f"webhook batches not processed: {len(status.waiting_batches)}")
    for batch_id, state, attempts, error in status.waiting_batches:
        click.echo(f"  batch {batch_id} {state} after {attempts} attempt(s): {error or '-'}")
    for group_id, events in status.unknown_groups:
        click.echo(f"unsubscribe group {group_id} is mapped to no topic: {events} event(s) "
                   "(map it with `flask topics add KEY --name NAME --sendgrid-group ID`, then run "
                   "`flask sendgrid reconcile`)")
    rejected = rejected_events(db.session)
    click.echo(f"webhook events rejected (latest batches): {len(rejected)}")
    for event in rejected[:50]:
        click.echo(f"  batch {event.batch_id} event [{event.index}], received "
                   f"{event.received_at:%Y-%m-%d %H:%M} UTC: {event.reason}")
    if len(rejected) > 50:
        click.echo(f"  ... and {len(rejected) - 50} more")

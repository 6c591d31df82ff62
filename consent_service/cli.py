"""`flask --app consent_service …` commands: thin over the services; a one-line reason on failure."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app, has_app_context
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from consent_service import runtime
from consent_service.domain import ConsentServiceError
from consent_service.domain.purposes import VENDOR_PURPOSES
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the service's errors into one line and a non-zero exit, never a traceback. Nothing is left
    half-written: use cases commit once, and the session is rolled back here (or by the app context's
    teardown, when the error leaves the command's context first)."""
    try:
        yield
    except ConsentServiceError as exc:
        _rollback()
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        _rollback()
        raise click.ClickException(f"database unreachable or not ready: {_first_line(exc)}") from None
    except SQLAlchemyError as exc:
        _rollback()
        raise click.ClickException(f"database error, nothing was written: {_first_line(exc)}") from None
    except OSError as exc:
        _rollback()
        where = f": {exc.filename}" if exc.filename else ""
        raise click.ClickException(f"{exc.strerror or exc}{where}") from None


def _rollback() -> None:
    if has_app_context():
        db.session.rollback()


class ServiceGroup(AppGroup):
    """A command group whose commands fail with `one_line_errors`."""

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


patrons = ServiceGroup("patrons", help="Patron records: import from the ILS, show one.")
consents = ServiceGroup("consents", help="Load historic consent decisions.")
topics = ServiceGroup("topics", help="Email topics and their SendGrid unsubscribe groups.")
export = ServiceGroup("export", help="Eligible-contact exports for the marketing team.")
links = ServiceGroup("links", help="Print signed links for a patron.")
sendgrid = ServiceGroup("sendgrid", help="Keep SendGrid and the ledger in step.")
guardians = ServiceGroup("guardians", help="Parents and guardians: consent requests for children.")


@contextmanager
def _progress(path: Path, label: str) -> Iterator[Callable[[], None]]:
    """A progress bar over the data rows of a CSV file, shown only on a terminal."""
    with path.open("rb") as counted:
        total = max(sum(1 for _ in counted) - 1, 0)
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield lambda: bar.update(1)


def _run_import(importer: Callable[..., Any], file: Path, skip_invalid: bool, allow_partial: bool,
                label: str) -> None:
    """Run a CSV import with a progress bar; print the notes on its columns, each problem with its
    line, then the summary."""
    with _progress(file, label) as tick:
        report = importer(db.session, runtime.context(), file, now=runtime.now(),
                          skip_invalid=skip_invalid, allow_partial=allow_partial, on_row=tick)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    for problem in report.problems:
        click.echo(f"line {problem.line}: {problem.message}", err=True)
    click.echo(report.summary())
    if report.problems and not skip_invalid:
        raise click.ClickException(f"{len(report.problems)} invalid row(s); nothing was written")


@patrons.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Write the good rows and list the bad ones.")
@click.option("--allow-partial", is_flag=True,
              help="Import even when the header has a column that looks misspelt (it is ignored) "
                   "or no known column but card_number.")
def patrons_import(file: Path, skip_invalid: bool, allow_partial: bool) -> None:
    """Create or update patrons from the ILS's CSV export (by card number). Never changes a consent
    decision. Atomic unless --skip-invalid: any bad row and nothing is written. Unknown columns are
    ignored and listed; one that looks like a misspelt known column refuses the file unless
    --allow-partial."""
    from consent_service.services.patron_import import import_patrons

    _run_import(import_patrons, file, skip_invalid, allow_partial, "Importing patrons")


@patrons.command("show")
@click.argument("card")
def patrons_show(card: str) -> None:
    """Print one patron as JSON: public id, decisions in force, eligibility per purpose and topic."""
    from consent_service.services.patrons import describe_patron

    click.echo(json.dumps(describe_patron(db.session, runtime.context(), card, now=runtime.now()),
                          indent=2, ensure_ascii=False))


@consents.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Record the good rows and list the bad ones.")
@click.option("--allow-partial", is_flag=True,
              help="Import even when the header has a column that looks misspelt (it is ignored).")
def consents_import(file: Path, skip_invalid: bool, allow_partial: bool) -> None:
    """Record historic decisions (paper forms, a previous system), keeping their time, source and
    actor. Unknown columns are ignored and listed; one that looks like a misspelt known column
    refuses the file unless --allow-partial."""
    from consent_service.services.consent_import import import_consents

    _run_import(import_consents, file, skip_invalid, allow_partial, "Importing decisions")


@topics.command("add")
@click.argument("key")
@click.option("--name", required=True, help="What patrons see in English, e.g. 'Kids & teens'.")
@click.option("--name-es", default=None, help="What patrons see in Spanish, e.g. 'Niños y jóvenes'.")
@click.option("--sendgrid-group", type=int, default=None, help="The SendGrid unsubscribe group id.")
def topics_add(key: str, name: str, name_es: str | None, sendgrid_group: int | None) -> None:
    """Add an email topic (or update its names and group)."""
    from consent_service.services.topics import add_topic

    topic = add_topic(db.session, key=key, name=name, sendgrid_group_id=sendgrid_group,
                      names={"es": name_es} if name_es is not None else None, now=runtime.now())
    spanish = f" / {topic.names['es']}" if topic.names and "es" in topic.names else ""
    click.echo(f"topic {topic.key}: {topic.name}{spanish} "
               f"(SendGrid group {topic.sendgrid_group_id or 'none'})")


@export.command("contacts")
@click.option("--purpose", required=True, help="A purpose key, e.g. email_marketing.")
@click.option("--topic", default=None, help="An email topic key; without it, all library email.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the CSV (default: standard output).")
@click.option("--excluded", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every left-out patron with the reason.")
@click.option("--by", "created_by", default="cli", show_default=True, help="Who asked, for the manifest.")
def export_contacts_command(purpose: str, topic: str | None, output: Path | None,
                            excluded: Path | None, created_by: str) -> None:
    """Stream the patrons who may be contacted for a purpose (one row per address for email)."""
    from consent_service.services.export import export_contacts

    manifest = export_contacts(db.session, runtime.context(), purpose=purpose, topic=topic,
                               output=output, excluded=excluded, created_by=created_by, now=runtime.now(),
                               chunk_size=current_app.config["EXPORT_CHUNK_SIZE"])
    left_out = ", ".join(f"{k} {v}" for k, v in sorted(manifest.excluded_counts.items())) or "none"
    click.echo(f"exported {manifest.row_count} row(s); left out: {left_out}; "
               f"sha256 {manifest.sha256}; manifest {manifest.id}", err=True)


def _link_command(kind: LinkKind, with_topic: bool) -> Callable[..., None]:
    def command(card: str, topic: str | None = None) -> None:
        from consent_service.services.patrons import link_for_card

        click.echo(link_for_card(db.session, runtime.context(), kind, card, topic))

    command.__doc__ = f"Print a signed {kind.value} link for the patron with this card number."
    command = click.argument("card")(command)
    if with_topic:
        command = click.option("--topic", default=None, help="Stop only this topic.")(command)
    return command


links.command("unsubscribe")(_link_command(LinkKind.UNSUBSCRIBE, with_topic=True))
links.command("preferences")(_link_command(LinkKind.PREFERENCES, with_topic=False))


@links.command("guardian")
@click.argument("child_card")
def links_guardian(child_card: str) -> None:
    """Print a fresh guardian link for the child's open consent request; when there is none and
    the child needs one, a request is made (and its notice emailed) for their guardian."""
    from consent_service.services.guardians.staff import guardian_link_for_card

    click.echo(guardian_link_for_card(db.session, runtime.context(), child_card, now=runtime.now()))


@guardians.command("link")
@click.argument("child_card")
@click.option("--guardian-card", default=None, help="The guardian's library card number.")
@click.option("--guardian-email", default=None, help="The guardian's email address (no card yet).")
def guardians_link(child_card: str, guardian_card: str | None, guardian_email: str | None) -> None:
    """Link a guardian to a child (staff and API linking) and, when the child needs it, email the
    guardian a request for consent."""
    from consent_service.domain.addresses import mask_email
    from consent_service.services.guardians.staff import link_guardian

    linked = link_guardian(db.session, runtime.context(), child_card, guardian_card=guardian_card,
                           guardian_email=guardian_email, now=runtime.now())
    done = "linked" if linked.created else "already linked"
    if linked.request is None:
        click.echo(f"{done}; no consent request (the child needs none, or the guardian has no "
                   "email address)")
    else:
        click.echo(f"{done}; consent request {linked.request.public_id} sent to "
                   f"{mask_email(linked.request.to_email or '')}")


@guardians.command("remind")
def guardians_remind() -> None:
    """Email every pending, unexpired consent request again, with a fresh link."""
    from consent_service.services.guardians.lifecycle import remind_guardians

    sent = remind_guardians(db.session, runtime.context(), now=runtime.now())
    click.echo(f"sent {sent} reminder(s)")


@guardians.command("expire")
def guardians_expire() -> None:
    """Expire unanswered requests past their date and delete the contact details collected for
    them (run it daily)."""
    from consent_service.services.guardians.lifecycle import expire_guardian_requests

    expired = expire_guardian_requests(db.session, now=runtime.now())
    click.echo(f"expired {expired.requests} request(s); deleted {expired.guardian_emails} "
               "guardian email address(es)")


@guardians.command("tasks")
def guardians_tasks() -> None:
    """List guardians' open requests for a child's data or its erasure, oldest first."""
    from consent_service.services.guardians.staff import family_tasks

    tasks = family_tasks(db.session)
    for task in tasks:
        click.echo(f"{task.id}\t{task.kind}\tchild {task.child_card} ({task.child_first_name})"
                   f"\tguardian {task.guardian}\tasked {task.created_at:%Y-%m-%d %H:%M} UTC")
    if not tasks:
        click.echo("no open requests")


@guardians.command("done")
@click.argument("task_id", type=int)
def guardians_done(task_id: int) -> None:
    """Mark a guardian's request for a child's data or its erasure as done."""
    from consent_service.services.guardians.staff import close_family_task

    task = close_family_task(db.session, task_id, now=runtime.now())
    click.echo(f"request {task.id} ({task.kind}) done")


@guardians.command("verify-id")
@click.argument("child_card")
@click.option("--guardian", required=True, help="The guardian's card number or linked email.")
@click.option("--purpose", required=True, type=click.Choice(VENDOR_PURPOSES),
              help="The vendor sharing the guardian allows.")
@click.option("--staff", required=True, help="Who checked the guardian's ID.")
def guardians_verify_id(child_card: str, guardian: str, purpose: str, staff: str) -> None:
    """Record a guardian's consent to vendor sharing for a child under 13, given in person after
    staff checked their ID (CONSENT_GUARDIAN_VENDOR_METHOD=id_check; until the staff pages)."""
    from consent_service.services.guardians.staff import record_id_check

    record_id_check(db.session, runtime.context(), child_card, guardian=guardian, purpose=purpose,
                    staff=staff, now=runtime.now())
    click.echo(f"recorded: {purpose} allowed for patron {child_card.strip()} by their guardian "
               f"(ID checked by {staff.strip()})")


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
    from consent_service.services.sendgrid_reconcile import reconcile_suppressions

    client = runtime.suppression_client(read_attempts=5)
    report = reconcile_suppressions(db.session, runtime.context(), client, now=runtime.now())
    for line in report.lines():
        click.echo(line)
    _echo_sync_status(_push_due_suppressions(client))


@sendgrid.command("failures")
def sendgrid_failures() -> None:
    """List what has not gone through: suppression jobs SendGrid refused, jobs waiting to retry,
    webhook batches not processed, events naming a group no topic is mapped to, and webhook events
    rejected (by batch and index in its stored body, with the reason)."""
    from consent_service.services.sendgrid_sync import sync_status
    from consent_service.services.sendgrid_webhook import rejected_events

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


@click.command("worker")
@with_appcontext
@click.option("--idle-seconds", type=float, default=5.0, show_default=True,
              help="How long to wait after a round that found nothing to do.")
@click.option("--once", is_flag=True, help="Run one round, then exit (for cron or a check).")
def worker(idle_seconds: float, once: bool) -> None:
    """Send queued mail, push suppression changes to SendGrid, and retry webhook batches whose
    processing failed, until stopped (SIGTERM finishes the current item first). Without a SendGrid
    API key, suppression changes wait in the outbox until one is configured."""
    from consent_service.delivery.worker import run_worker, worker_tasks

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    tasks, warnings = worker_tasks(app)
    for warning in warnings:
        click.echo(warning, err=True)
    run_worker(app, tasks=tasks, idle_seconds=idle_seconds, stop=lambda: False,
               max_rounds=1 if once else None)


@click.command("demo")
@with_appcontext
def demo() -> None:
    """Create the database if needed and load demo patrons, topics and decisions that show the rules."""
    from flask_migrate import upgrade

    from consent_service.services.demo import load_demo

    with one_line_errors():
        upgrade()
        for line in load_demo(db.session, runtime.context(), now=runtime.now(),
                              flask_command=_flask_command()):
            click.echo(line)


def _flask_command() -> str:
    """How to run `flask --app consent_service` as this process was run: plain `flask` when it is
    on PATH (an activated virtual environment), else the path of this environment's `flask`."""
    mine = Path(sys.executable).with_name("flask")
    on_path = shutil.which("flask")
    if on_path is not None and Path(on_path).resolve() == mine.resolve():
        return "flask --app consent_service"
    relative = os.path.relpath(mine)
    shown = relative if not relative.startswith("..") else str(mine)
    return f"{shlex.quote(shown)} --app consent_service"


def register(app: Flask) -> None:
    for group in (patrons, consents, topics, export, links, sendgrid, guardians):
        app.cli.add_command(group)
    app.cli.add_command(demo)
    app.cli.add_command(worker)

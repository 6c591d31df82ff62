"""Parents and guardians: linking, reminders and expiry, staff tasks, ID checks."""

from __future__ import annotations

import click

from consent_service import runtime
from consent_service.cli.common import ServiceGroup
from consent_service.domain.purposes import VENDOR_PURPOSES
from consent_service.extensions import db

guardians = ServiceGroup("guardians", help="Parents and guardians: consent requests for children.")


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

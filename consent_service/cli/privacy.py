"""The ledger's integrity check and the retention limits."""

from __future__ import annotations

import click
from flask import current_app

from consent_service import runtime
from consent_service.cli.common import ServiceGroup
from consent_service.extensions import db

ledger = ServiceGroup("ledger", help="The tamper-evident ledger of consent events.")
retention = ServiceGroup("retention", help="Remove what the retention settings say is kept too long.")


@ledger.command("verify")
def ledger_verify() -> None:
    """Walk every chain of the ledger and check each event's hash against its content and the event
    before it. Prints the first altered, removed or reordered event of each broken chain and exits
    non-zero; prints the counts when all is well. Writes nothing."""
    from consent_service.services.ledger_chain import verify_ledger

    report = verify_ledger(db.session)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    summary = f"{report.events} event(s) in {report.chains} chain(s)"
    if not report.intact:
        raise click.ClickException(f"ledger NOT intact: {len(report.problems)} broken chain(s) "
                                   f"of {summary}")
    click.echo(f"ledger intact: {summary}")


@retention.command("purge")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; write nothing.")
def retention_purge(dry_run: bool) -> None:
    """Apply the CONSENT_RETENTION_* limits: print, by kind, what was removed (or would be)."""
    from consent_service.services.retention import purge, settings_from

    report = purge(db.session, runtime.context(), settings_from(current_app.config), now=runtime.now(),
                   dry_run=dry_run)
    click.echo("would remove (dry run, nothing written):" if dry_run else "removed:")
    for kind, count in report.counts.items():
        click.echo(f"  {kind}: {count}")

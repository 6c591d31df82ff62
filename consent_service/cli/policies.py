"""Policy versions: publish one, list them, announce a material change by email."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from flask import current_app

from consent_service import runtime
from consent_service.cli.common import ServiceGroup
from consent_service.domain.policies import PolicyError, parse_rate
from consent_service.extensions import db

policy = ServiceGroup("policy", help="Privacy policy versions and their change notices.")


def read_summary(file: Path) -> str:
    """The summary file's text (UTF-8); an unreadable file is one line (OSError, see
    one_line_errors), so is one that is not UTF-8."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{file} is not UTF-8 text") from None


@policy.command("publish")
@click.option("--version", "version", required=True, help="The version's name, e.g. 2027-01.")
@click.option("--effective", required=True,
              help="YYYY-MM-DD (the start of that day in the library's time zone; today means "
                   "now), or an ISO 8601 time with an offset. Not in the past, and after the "
                   "latest version's.")
@click.option("--summary", "summary_file", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="A UTF-8 text file: what changed, in a few lines (shown to patrons).")
@click.option("--summary-es", "summary_es_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The same in Spanish (optional; Spanish readers see the English otherwise).")
@click.option("--material", is_flag=True,
              help="A material change: to be announced by email with `policy notify`.")
def policy_publish(version: str, effective: str, summary_file: Path, summary_es_file: Path | None,
                   material: bool) -> None:
    """Publish a policy version: every decision made from its effective time records it."""
    from consent_service.services.policies import parse_effective, publish_policy

    now = runtime.now()
    summary = read_summary(summary_file)
    summaries = {"es": read_summary(summary_es_file)} if summary_es_file else None
    effective_at = parse_effective(effective, runtime.context(), now=now)
    published = publish_policy(db.session, version=version, effective_at=effective_at,
                               summary=summary, summaries=summaries, material=material, now=now)
    kind = "a material change: announce it with `policy notify " + published.version + "`" \
        if published.material else "not material: no notice is sent"
    click.echo(f"policy {published.version} published, in force from "
               f"{published.effective_at.isoformat()}; {kind}")


@policy.command("list")
def policy_list() -> None:
    """Every version, latest first: effective time, material or not, patrons told, summary."""
    from consent_service.services.policies import policy_lines

    lines = policy_lines(db.session)
    if not lines:
        click.echo("no policy versions yet (publish one with `policy publish`)")
        return
    for line in lines:
        material = "material" if line.material else "not material"
        first = line.summary.splitlines()[0] if line.summary else ""
        click.echo(f"{line.version}  effective {line.effective_at.isoformat()}  {material}  "
                   f"told {line.notices}  {first}")


@policy.command("notify")
@click.argument("version")
@click.option("--rate", default=None,
              help="How fast the outbox may send the notices, e.g. 10/second or 300/minute "
                   "(default: CONSENT_POLICY_NOTICE_RATE).")
@click.option("--force", is_flag=True, help="Announce a version that is not marked material.")
@click.option("--batch-size", type=click.IntRange(1, 5000), default=200, show_default=True,
              help="Patrons per transaction: a run stopped midway keeps every finished batch.")
def policy_notify(version: str, rate: str | None, force: bool, batch_size: int) -> None:
    """Email the change notice to every patron who can be told, once each, in their language:
    not marketing, so opt-outs do not matter, but never to an inactive patron, a child under 13,
    or an address that bounced or was reported as spam. Stopped and run again, it queues only for
    the rest. Prints a progress bar on a terminal and the counts at the end."""
    from consent_service.services.policies import count_patrons, notify_policy

    per_second = parse_rate(rate or current_app.config["POLICY_NOTICE_RATE"])
    bar: Any = (click.progressbar(length=count_patrons(db.session), label=f"Policy {version}",
                                  file=sys.stderr) if sys.stderr.isatty() else nullcontext())
    with bar as shown:  # a progress bar on a terminal; else only the counts at the end
        run = notify_policy(db.session, runtime.context(), version, now=runtime.now(),
                            rate=per_second, force=force, batch=batch_size,
                            on_patron=(lambda: shown.update(1)) if shown is not None else None)
    click.echo(run.summary())

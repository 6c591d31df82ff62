"""`flask --app consent_service …` commands: thin over the services; a one-line reason on failure."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from flask import Flask, has_app_context
from flask.cli import AppGroup
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from consent_service import runtime
from consent_service.domain import ConsentServiceError
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


def _now() -> datetime:
    return datetime.now(UTC)


patrons = ServiceGroup("patrons", help="Patron records: import from the ILS, show one.")
consents = ServiceGroup("consents", help="Load historic consent decisions.")
topics = ServiceGroup("topics", help="Email topics and their SendGrid unsubscribe groups.")
export = ServiceGroup("export", help="Eligible-contact exports for the marketing team.")
links = ServiceGroup("links", help="Print signed links for a patron.")


@contextmanager
def _progress(path: Path, label: str) -> Iterator[Callable[[], None]]:
    """A progress bar over the data rows of a CSV file, shown only on a terminal."""
    with path.open("rb") as counted:
        total = max(sum(1 for _ in counted) - 1, 0)
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield lambda: bar.update(1)


def _echo_report(report: Any) -> None:
    for problem in report.problems:
        click.echo(f"line {problem.line}: {problem.message}", err=True)
    click.echo(report.summary())


@patrons.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Write the good rows and list the bad ones.")
def patrons_import(file: Path, skip_invalid: bool) -> None:
    """Create or update patrons from the ILS's CSV export (by card number). Never changes a consent
    decision. Atomic unless --skip-invalid: any bad row and nothing is written."""
    from consent_service.services.patron_import import import_patrons

    with _progress(file, "Importing patrons") as tick:
        report = import_patrons(db.session, runtime.context(), file, now=_now(),
                                skip_invalid=skip_invalid, on_row=tick)
    _echo_report(report)
    if report.problems and not skip_invalid:
        raise click.ClickException(f"{len(report.problems)} invalid row(s); nothing was written")


@patrons.command("show")
@click.argument("card")
def patrons_show(card: str) -> None:
    """Print one patron as JSON: public id, decisions in force, eligibility per purpose and topic."""
    from consent_service.services.patrons import describe_patron

    click.echo(json.dumps(describe_patron(db.session, runtime.context(), card, today=_now().date()),
                          indent=2, ensure_ascii=False))


@consents.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Record the good rows and list the bad ones.")
def consents_import(file: Path, skip_invalid: bool) -> None:
    """Record historic decisions (paper forms, a previous system), keeping their time, source and actor."""
    from consent_service.services.consent_import import import_consents

    with _progress(file, "Importing decisions") as tick:
        report = import_consents(db.session, runtime.context(), file, now=_now(),
                                 skip_invalid=skip_invalid, on_row=tick)
    _echo_report(report)
    if report.problems and not skip_invalid:
        raise click.ClickException(f"{len(report.problems)} invalid row(s); nothing was written")


@topics.command("add")
@click.argument("key")
@click.option("--name", required=True, help="What patrons see, e.g. 'Kids & teens'.")
@click.option("--sendgrid-group", type=int, default=None, help="The SendGrid unsubscribe group id.")
def topics_add(key: str, name: str, sendgrid_group: int | None) -> None:
    """Add an email topic (or update its name and group)."""
    from consent_service.services.topics import add_topic

    topic = add_topic(db.session, key=key, name=name, sendgrid_group_id=sendgrid_group, now=_now())
    click.echo(f"topic {topic.key}: {topic.name} (SendGrid group {topic.sendgrid_group_id or 'none'})")


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
                               output=output, excluded=excluded, created_by=created_by, now=_now())
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


@click.command("demo")
def demo() -> None:
    """Create the database if needed and load demo patrons, topics and decisions that show the rules."""
    from flask_migrate import upgrade

    from consent_service.services.demo import load_demo

    with one_line_errors():
        upgrade()
        for line in load_demo(db.session, runtime.context(), now=_now()):
            click.echo(line)


def register(app: Flask) -> None:
    for group in (patrons, consents, topics, export, links):
        app.cli.add_command(group)
    app.cli.add_command(demo)

"""Patron records, historic decisions, email topics, exports and signed links."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from flask import current_app

from consent_service import runtime
from consent_service.cli.common import ServiceGroup, progress_bar, run_import
from consent_service.domain.export_formats import EXPORT_FORMATS
from consent_service.domain.ils_formats import FORMATS
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.services.csv_input import ENCODINGS

patrons = ServiceGroup("patrons", help="Patron records: import from the ILS, show one.")
consents = ServiceGroup("consents", help="Load historic consent decisions.")
topics = ServiceGroup("topics", help="Email topics and their SendGrid unsubscribe groups.")
export = ServiceGroup("export", help="Eligible-contact exports for the marketing team.")
links = ServiceGroup("links", help="Print signed links for a patron.")


_ENCODING = click.option(
    "--encoding", type=click.Choice(ENCODINGS, case_sensitive=False), default=None,
    help="The file's encoding (default: UTF-8, or Windows-1252 when the file's bytes say so).")


@patrons.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "ils_format", type=click.Choice(["auto", *FORMATS], case_sensitive=False),
              default="auto", show_default=True,
              help="Which system wrote the file; auto tells from the header and says which.")
@_ENCODING
@click.option("--consent-map", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A TOML file saying which ILS fields are opt-ins (README).")
@click.option("--consents-as-of", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
              default=None,
              help="When the ILS's opt-ins were true (default: now), e.g. the export's date.")
@click.option("--skip-invalid", is_flag=True, help="Write the good rows and list the bad ones.")
@click.option("--allow-partial", is_flag=True,
              help="Import even when the header has a column that looks misspelt (it is ignored) "
                   "or no known column but the card number.")
def patrons_import(file: Path, ils_format: str, encoding: str | None, consent_map: Path | None,
                   consents_as_of: datetime | None, skip_invalid: bool,
                   allow_partial: bool) -> None:
    """Create or update patrons from the ILS's CSV export (by card number): our own columns, or
    Koha's, Evergreen's, Sierra's or Polaris's. Changes a consent decision only through
    --consent-map. Atomic unless --skip-invalid: any bad row and nothing is written. Unknown
    columns are ignored and listed; one that looks like a misspelt known column refuses the file
    unless --allow-partial."""
    from consent_service.services.patron_import import import_patrons

    run_import(import_patrons, file, skip_invalid, allow_partial, "Importing patrons",
               ils_format=ils_format.lower(), encoding=encoding, consent_map=consent_map,
               consents_as_of=_aware(consents_as_of))


def _aware(moment: datetime | None) -> datetime | None:
    """A date given without a time zone is taken in the library's."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=ZoneInfo(runtime.context().timezone))


@patrons.command("show")
@click.argument("card")
def patrons_show(card: str) -> None:
    """Print one patron as JSON: public id, decisions in force, eligibility per purpose and topic."""
    from consent_service.services.patrons import describe_patron

    click.echo(json.dumps(describe_patron(db.session, runtime.context(), card, now=runtime.now()),
                          indent=2, ensure_ascii=False))


@patrons.command("erase")
@click.argument("card")
@click.option("--by", "done_by", default="cli", show_default=True,
              help="Who carried it out, for the erasure record.")
def patrons_erase(card: str, done_by: str) -> None:
    """Erase the personal data of the patron with this card number: the record stays as an
    inactive tombstone with its decisions, its address's keyed hash keeps the address's decisions
    and suppressions in force, and SendGrid keeps its suppressions. Prints what was removed."""
    from consent_service.services.erasure import erase_patron, find_patron_to_erase

    session = db.session
    patron = find_patron_to_erase(session, card_number=card)
    erasure = erase_patron(session, runtime.context(), patron, requested_by="cli", done_by=done_by,
                           now=runtime.now())
    removed = ", ".join(f"{kind} {count}" for kind, count in sorted(erasure.counts.items()))
    click.echo(f"erased card {card}: now {erasure.public_id}; removed: {removed or 'the record only'}")


@consents.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_ENCODING
@click.option("--skip-invalid", is_flag=True, help="Record the good rows and list the bad ones.")
@click.option("--allow-partial", is_flag=True,
              help="Import even when the header has a column that looks misspelt (it is ignored).")
def consents_import(file: Path, encoding: str | None, skip_invalid: bool,
                    allow_partial: bool) -> None:
    """Record historic decisions (paper forms, a previous system), keeping their time, source and
    actor. Unknown columns are ignored and listed; one that looks like a misspelt known column
    refuses the file unless --allow-partial."""
    from consent_service.services.consent_import import import_consents

    run_import(import_consents, file, skip_invalid, allow_partial, "Importing decisions",
               encoding=encoding)


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
@click.option("--format", "file_format", type=click.Choice(list(EXPORT_FORMATS), case_sensitive=False),
              default="generic", show_default=True,
              help="Whose columns: ours, or a mailing tool's contact import (email purposes).")
@click.option("--by", "created_by", default="cli", show_default=True, help="Who asked, for the manifest.")
def export_contacts_command(purpose: str, topic: str | None, output: Path | None,
                            excluded: Path | None, file_format: str, created_by: str) -> None:
    """Stream the patrons who may be contacted for a purpose (one row per address for email), in
    our columns or a mailing tool's (sendgrid, mailchimp, constant_contact, libraryaware)."""
    from consent_service.services.export import export_contacts, patrons_to_decide

    with progress_bar(patrons_to_decide(db.session), "Exporting", "patrons") as advance:
        manifest = export_contacts(
            db.session, runtime.context(), purpose=purpose, topic=topic, output=output,
            excluded=excluded, created_by=created_by, now=runtime.now(),
            chunk_size=current_app.config["EXPORT_CHUNK_SIZE"], file_format=file_format.lower(),
            on_chunk=advance)
    left_out = ", ".join(f"{k} {v}" for k, v in sorted(manifest.excluded_counts.items())) or "none"
    click.echo(f"exported {manifest.row_count} row(s) as {manifest.format}; left out: {left_out}; "
               f"sha256 {manifest.sha256}; manifest {manifest.id}", err=True)


@export.command("withdrawals")
@click.argument("export_id", type=int)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the CSV (default: standard output).")
def export_withdrawals_command(export_id: int, output: Path | None) -> None:
    """List the patrons in a vendor export's file who have withdrawn since (CSV: patron_id,
    card_number, withdrawn_at, source, consents_again_since), so the vendor can be asked to delete
    them."""
    from consent_service.services.disclosures import write_withdrawals

    count = write_withdrawals(db.session, export_id, output)
    click.echo(f"{count} patron(s) withdrawn since export {export_id}", err=True)


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

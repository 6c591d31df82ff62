"""Export the patrons who may be contacted, who was left out and why, and a manifest."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from consent_service.domain.export_formats import EMAIL_FIELDS, ExportFormat, export_format
from consent_service.domain.ledger import require_aware
from consent_service.domain.purposes import Channel, Purpose
from consent_service.domain.tokens import LinkKind
from consent_service.models import ExportManifest, Patron
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import checked_topic
from consent_service.services.disclosures import record_exported
from consent_service.services.export_files import (
    Buffer,
    DigestingSink,
    SpreadsheetSafeWriter,
    replaced_when_complete,
    spreadsheet_safe,
    standard_output,
)
from consent_service.services.standing import verdict_query

EMAIL_COLUMNS = EMAIL_FIELDS
CONTACT_COLUMNS = ("patron_id", "first_name", "last_name", "email", "street", "city", "state",
                   "postal_code")
# The excluded file is for the library's own follow-up, never for a vendor: it names the patron.
EXCLUDED_COLUMNS = ("patron_id", "card_number", "first_name", "last_name", "reason")

_PATRON_COLUMNS = (
    Patron.id, Patron.public_id, Patron.card_number, Patron.first_name, Patron.last_name,
    Patron.email, Patron.address_key, Patron.preferred_language, Patron.street, Patron.city,
    Patron.state, Patron.postal_code,
)
_ADDRESS_KEY, _REASON = 6, len(_PATRON_COLUMNS)  # positions in a row of `_verdicts`


@dataclass(frozen=True)
class _Plan:
    """One export asked for: the purpose, the stored topic (None: the whole purpose), the library's
    date, and when it was asked."""

    purpose: Purpose
    topic: str | None
    today: date
    now: datetime
    format: ExportFormat

    @property
    def by_email(self) -> bool:
        return self.purpose.channel is Channel.EMAIL


@dataclass(frozen=True)
class ExportPreview:
    """What an export would hold now, counted without writing anything: its rows, the eligible
    patrons (for email, several may share one row) and how many are left out for each reason."""

    purpose: str
    topic: str | None
    rows: int
    eligible: int
    left_out: dict[str, int]

    @property
    def left_out_total(self) -> int:
        return sum(self.left_out.values())


@dataclass(frozen=True)
class StreamedExport:
    """A download: the file's name and its bytes, produced as they are read. The export is recorded
    (manifest and contained patrons, one commit) before the last bytes are given out; a download
    abandoned before then records nothing."""

    file_name: str
    chunks: Iterator[bytes]


def export_contacts(session: Session, ctx: ServiceContext, *, purpose: str, topic: str | None,
                    output: Path | None, excluded: Path | None, created_by: str, now: datetime,
                    chunk_size: int = 2000, file_format: str = "generic",
                    on_chunk: Callable[[int], None] | None = None) -> ExportManifest:
    """Write the patrons who may be contacted for `purpose` (and `topic`) as CSV, list every patron
    left out with the eligibility function's reason, and record a committed manifest with the
    patrons the file contains.

    Rules:
    - eligibility is the one eligibility function's (`evaluate`), asked for every patron on the
      library's date, in SQL (`standing.verdict_query`, which a property test holds equal to
      asking `evaluate` about each patron alone): `now` taken in `ctx.timezone`
      (America/Denver), not in UTC, so an export run in the evening counts ages and birthdays
      as the library's staff would;
    - email purposes give one row per address: patrons are read in (address key, id) order and
      the address's row shows the first eligible patron at it (the lowest id). Other eligible
      patrons at that address are covered by that row and are neither written again nor listed as
      left out; the ineligible ones are listed with their reason. Patrons with no address key are
      read in a pass of their own and count as having no email (without the key their address's
      decisions cannot be found), so they are left out as `no_email`, or `inactive` when that
      comes first;
    - other purposes give one row per eligible patron, in id order;
    - `patron_id` is always the opaque public id; links carry it, never an email or card number;
    - the excluded file (`patron_id,card_number,first_name,last_name,reason`) is for the library
      to follow up, so it names the patron; the contact file, which may go to a vendor, does not
      carry the card number;
    - in both files, any cell starting with =, +, -, @, a tab or a carriage return gets a leading
      apostrophe (OWASP's advice), so a spreadsheet shows it as text instead of running it as a
      formula. No address that `normalize_email` accepts starts so; one stored before it refused
      them would not be delivered anyway;
    - files are written to a temporary file beside the target (owner-only permissions, as personal
      data should be) and moved into place only when complete, so a failure never leaves a partial
      file that looks finished. `output=None` streams to standard output instead;
    - memory stays flat: patrons are read `chunk_size` at a time from one statement, and rows are
      written as they are decided;
    - the disclosure record: each patron whose row is written is recorded (ExportedPatron: for
      email the address key the row went to, and the decision in force the verdict read), inserted
      a chunk at a time in the manifest's transaction (`record_exported`), so an export is
      recorded whole or not at all.

    The manifest holds the SHA-256 of the bytes written, how many were left out per reason, and the
    file's format (`file_format`, a mailing tool's columns: see `domain/export_formats.py`; the
    rows are the same people in every format). `on_chunk` is told how many patrons each chunk
    decided, for a progress bar (their total is `patrons_to_decide`).

    :raise UnknownPurposeError: for a purpose that is not in the catalog.
    :raise UnknownTopicError: for a topic on a purpose without topics, or one not configured.
    """
    plan = _plan(session, ctx, purpose, topic, now, file_format)
    with ExitStack() as files:
        contacts = DigestingSink(files.enter_context(
            replaced_when_complete(output) if output else standard_output()))
        reasons = None
        if excluded is not None:
            excluded_file = files.enter_context(replaced_when_complete(excluded))
            reasons = SpreadsheetSafeWriter(DigestingSink(excluded_file))
            reasons.writerow(EXCLUDED_COLUMNS)
        manifest = _new_manifest(session, plan, created_by, output.name if output else None)
        for decided in _write(session, ctx, plan, manifest, contacts, reasons, chunk_size):
            if on_chunk is not None:  # a database error still leaves no file behind: the files
                on_chunk(decided)     # close after this loop

    session.commit()
    return manifest


def stream_contacts(session: Session, ctx: ServiceContext, *, purpose: str, topic: str | None,
                    created_by: str, now: datetime, chunk_size: int = 2000,
                    file_format: str = "generic") -> StreamedExport:
    """The contact file of `export_contacts` (same rules, columns and bytes), produced a chunk of
    patrons at a time for a download, and recorded as an export by `created_by` when the whole file
    is produced: the manifest and the contained patrons are committed before the last bytes are
    given out, and a download abandoned before then is rolled back (nothing recorded).

    :raise UnknownPurposeError: for a purpose that is not in the catalog (before any byte).
    :raise UnknownTopicError: for a topic on a purpose without topics, or one not configured.
    """
    plan = _plan(session, ctx, purpose, topic, now, file_format)
    file_name = "-".join(["contacts", plan.purpose.key, *([plan.topic] if plan.topic else []),
                          *([] if plan.format.name == "generic" else [plan.format.name]),
                          plan.today.isoformat()]) + ".csv"

    def chunks() -> Iterator[bytes]:
        buffer, held = Buffer(), b""  # the latest bytes wait until the export is committed
        try:
            manifest = _new_manifest(session, plan, created_by, file_name)
            for _ in _write(session, ctx, plan, manifest, DigestingSink(buffer), None, chunk_size):
                if buffer.pending():
                    if held:
                        yield held
                    held = buffer.take()
            session.commit()
        except BaseException:
            session.rollback()
            raise
        yield held + buffer.take()

    return StreamedExport(file_name, chunks())


def patrons_to_decide(session: Session) -> int:
    """How many patrons an export decides about (all of them): a progress bar's total."""
    return session.scalar(select(func.count()).select_from(Patron)) or 0


def preview_contacts(session: Session, ctx: ServiceContext, *, purpose: str, topic: str | None,
                     now: datetime, chunk_size: int = 2000) -> ExportPreview:
    """How many rows an export for `purpose` (and `topic`) would have now, how many patrons are
    eligible and how many are left out for each reason: the export's own batch eligibility, a
    chunk at a time (a few queries per chunk, never one per patron); nothing is written.

    :raise UnknownPurposeError: for a purpose that is not in the catalog.
    :raise UnknownTopicError: for a topic on a purpose without topics, or one not configured.
    """
    plan = _plan(session, ctx, purpose, topic, now)
    left_out: Counter[str] = Counter()
    rows = eligible = 0
    represented: str | None = None
    for chunk in _verdicts(session, plan, chunk_size):
        for row in chunk:
            reason, address_key = row[_REASON], row[_ADDRESS_KEY]
            if reason is not None:
                left_out[reason] += 1
                continue
            eligible += 1
            if not plan.by_email or address_key != represented:
                represented = address_key
                rows += 1
    return ExportPreview(plan.purpose.key, plan.topic, rows, eligible, dict(sorted(left_out.items())))


def _plan(session: Session, ctx: ServiceContext, purpose: str, topic: str | None,
          now: datetime, file_format: str = "generic") -> _Plan:
    chosen = ctx.catalog.get(purpose)
    topic_key = checked_topic(session, chosen.key, chosen.has_topics, topic) or None
    written_as = export_format(file_format, by_email=chosen.channel is Channel.EMAIL)
    return _Plan(chosen, topic_key, ctx.today(require_aware(now, "now")), now, written_as)


def _new_manifest(session: Session, plan: _Plan, created_by: str,
                  file_name: str | None) -> ExportManifest:
    """The export's manifest, flushed for its id; `_write` completes it."""
    manifest = ExportManifest(
        created_by=created_by, created_at=plan.now, purpose=plan.purpose.key, topic=plan.topic,
        row_count=0, excluded_counts={}, sha256="", file_name=file_name, format=plan.format.name,
    )
    session.add(manifest)
    session.flush()
    return manifest


def _write(session: Session, ctx: ServiceContext, plan: _Plan, manifest: ExportManifest,
           contacts: DigestingSink, reasons: SpreadsheetSafeWriter | None,
           chunk_size: int) -> Iterator[int]:
    """Write the contact rows (and the left-out patrons to `reasons`) and record the patrons
    written (one bulk write every `_DISCLOSED_AT_ONCE` chunks), yielding after each chunk how
    many patrons it decided; then complete the manifest.

    Each chunk comes from the database already decided (`verdict_query`), so per patron Python
    only sorts the row into its file: the cells that can hold a formula (names, email, card,
    language, ids) go through `spreadsheet_safe`, the links only when the public base URL would
    need it (they all start with it), and each file's rows are written by `csv.writer` in one
    call per chunk."""
    rows = SpreadsheetSafeWriter(contacts)
    if not plan.by_email:
        rows.writerow(CONTACT_COLUMNS)
    elif plan.format.header:
        rows.writerow(plan.format.header_names)
    safe, export_id, by_email = spreadsheet_safe, manifest.id, plan.by_email
    unsubscribe, preferences = _linker(ctx, LinkKind.UNSUBSCRIBE, plan.topic), _linker(
        ctx, LinkKind.PREFERENCES, None)
    in_format = _in_format(plan.format)
    left_out: Counter[str] = Counter()
    row_count = 0
    represented: str | None = None  # the address whose row is written already
    contained: list[tuple[int, int, str | None, int | None]] = []
    for chunk in _verdicts(session, plan, chunk_size):
        written: list[Sequence[str]] = []
        excluded: list[Sequence[str]] = []
        for (patron_id, public_id, card_number, first_name, last_name, email, address_key,
             language, street, city, state, postal_code, reason, event_id) in chunk:
            if reason is not None:
                left_out[reason] += 1
                if reasons is not None:
                    excluded.append((safe(public_id), safe(card_number), safe(first_name),
                                     safe(last_name), reason))
            elif by_email:
                if address_key == represented:
                    continue  # covered by the address's row
                represented = address_key
                written.append(in_format((
                    safe(email), safe(first_name), safe(last_name), safe(language),
                    safe(public_id), unsubscribe(public_id), preferences(public_id))))
                contained.append((export_id, patron_id, address_key, event_id))
            else:
                written.append((safe(public_id), safe(first_name), safe(last_name), safe(email),
                                safe(street), safe(city), safe(state), safe(postal_code)))
                contained.append((export_id, patron_id, None, event_id))
        row_count += len(written)
        if len(contained) >= _DISCLOSED_AT_ONCE * chunk_size:
            _record(session, contained)
        rows.write_safe_rows(written)
        rows.flush()
        if reasons is not None:
            reasons.write_safe_rows(excluded)
            reasons.flush()
        yield len(chunk)
    _record(session, contained)
    if reasons is not None:
        reasons.flush()
    manifest.row_count = row_count
    manifest.excluded_counts = dict(sorted(left_out.items()))
    manifest.sha256 = contacts.hexdigest()
    session.flush()


_DISCLOSED_AT_ONCE = 16  # chunks of disclosure rows written together, in patron id order


def _record(session: Session, contained: list[tuple[int, int, str | None, int | None]]) -> None:
    """Write the disclosure rows held, in patron id order, and forget them. Rows come in address
    order, which is random in the patron id: sorted, each index takes them nearly in order
    (SQLite: 0.48 s for 76,000 rows in address order, 0.24 s sorted), and PostgreSQL checks the
    foreign key on the patrons in index order."""
    contained.sort()
    record_exported(session, contained)
    contained.clear()


def _linker(ctx: ServiceContext, kind: LinkKind, topic: str | None) -> Callable[[str], str]:
    """Links of this kind by public id, made spreadsheet-safe only if their start (the public base
    URL) needs it: nothing after it can start a formula or hold a carriage return."""
    link = ctx.linker(kind, topic)
    if spreadsheet_safe(ctx.public_base_url) == ctx.public_base_url:
        return link
    return lambda public_id: spreadsheet_safe(link(public_id))


def _in_format(chosen: ExportFormat) -> Callable[[tuple[str, ...]], Sequence[str]]:
    """An email row's cells (in `EMAIL_FIELDS` order, each already a string) as the format's
    columns: `ExportFormat.row` without a dictionary per row."""
    if chosen.columns == tuple((field, field) for field in EMAIL_FIELDS):
        return lambda cells: cells
    pick = itemgetter(*(EMAIL_FIELDS.index(ours) for _, ours in chosen.columns))
    if chosen.blank_as_space:
        return lambda cells: tuple(value or " " for value in pick(cells))
    return pick


def _verdicts(session: Session, plan: _Plan,
              chunk_size: int) -> Iterator[Sequence[tuple[Any, ...]]]:
    """Every patron with their verdict, a chunk at a time, in the order the export needs: rows of
    `_PATRON_COLUMNS`, the reason they are left out (None: eligible) and the event of the
    decision in force that the verdict read (`verdict_query`: the eligibility rules in SQL,
    proven equal to `evaluate`; one statement per chunk)."""
    query = verdict_query(plan.purpose, plan.topic, plan.today, _PATRON_COLUMNS)
    if not plan.by_email:
        yield from _read(session, query.order_by(Patron.id), chunk_size)
        return
    yield from _read(session, query.where(Patron.address_key.is_not(None)).order_by(
        Patron.address_key, Patron.id), chunk_size)
    yield from _read(session, query.where(Patron.address_key.is_(None)).order_by(Patron.id),
                     chunk_size)


def _read(session: Session, query: Select[Any],
          chunk_size: int) -> Iterator[Sequence[tuple[Any, ...]]]:
    """The query's rows, `chunk_size` at a time, from one statement read as it goes (on
    PostgreSQL a server-side cursor, FETCHed a chunk at a time; SQLite's cursor steps through
    the result), in the session's transaction, so that each chunk's disclosure rows are written
    between reads. One statement instead of a query per chunk: PostgreSQL planned each page
    anew (10 ms) and merge-joined each from the start of the decisions tables. The values are
    the export's own (purpose, topic, dates), written into the statement by SQLAlchemy's
    literal rendering, and the rows are the driver's tuples: every column is a text or an
    integer, which need no conversion."""
    connection = session.connection()
    sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    driver = cast(Any, connection.connection.driver_connection)
    cursor = (driver.cursor(name="export_verdicts") if connection.dialect.name == "postgresql"
              else driver.cursor())
    try:
        cursor.execute(sql)
        while chunk := cursor.fetchmany(chunk_size):
            yield chunk
    finally:
        cursor.close()

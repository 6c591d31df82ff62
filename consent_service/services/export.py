"""Export the patrons who may be contacted, who was left out and why, and a manifest."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Row, Select, func, null, select, tuple_
from sqlalchemy.orm import Session

from consent_service.domain.eligibility import AddressStatus, Verdict, evaluate
from consent_service.domain.export_formats import EMAIL_FIELDS, ExportFormat, export_format
from consent_service.domain.ledger import Key, Ruling, require_aware, resolve
from consent_service.domain.purposes import Channel, Purpose
from consent_service.domain.tokens import LinkKind
from consent_service.models import ExportedPatron, ExportManifest, Patron
from consent_service.services.bulk import insert_rows
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import checked_topic
from consent_service.services.export_files import (
    Buffer,
    DigestingSink,
    SpreadsheetSafeWriter,
    replaced_when_complete,
    standard_output,
)
from consent_service.services.standing import (
    BatchDecisions,
    load_decisions,
    patron_facts,
    within,
)

EMAIL_COLUMNS = EMAIL_FIELDS
CONTACT_COLUMNS = ("patron_id", "first_name", "last_name", "email", "street", "city", "state",
                   "postal_code")
# The excluded file is for the library's own follow-up, never for a vendor: it names the patron.
EXCLUDED_COLUMNS = ("patron_id", "card_number", "first_name", "last_name", "reason")

_PATRON_COLUMNS = (
    Patron.id, Patron.public_id, Patron.card_number, Patron.status, Patron.birth_date,
    Patron.email, Patron.address_key, Patron.first_name, Patron.last_name, Patron.preferred_language,
    Patron.street, Patron.city, Patron.state, Patron.postal_code,
)
_EXPORTED = ExportedPatron.__table__  # inserted with `insert_rows`: no ORM object per row


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


class _Decided(NamedTuple):
    """One patron as the export sees them: the verdict's reason (None: eligible), whether their
    row is written (for email, only the first eligible patron at an address), and the decision in
    force that the verdict read."""

    patron: Row[Any]
    reason: str | None
    written: bool
    decision_event_id: int | None


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
    - eligibility is only ever `load_standings` + `Standing.verdict`, asked for every patron on
      the library's date: `now` taken in `ctx.timezone` (America/Denver), not in UTC, so an export
      run in the evening counts ages and birthdays as the library's staff would;
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
    - memory stays flat: patrons are read `chunk_size` at a time by keyset pagination, and rows are
      written as they are decided;
    - the disclosure record: each patron whose row is written is recorded (ExportedPatron: for
      email the address key the row went to, and the decision in force the verdict read), inserted
      a chunk at a time in the manifest's transaction, so an export is recorded whole or not at all.

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
    for chunk in _decided(session, plan, chunk_size):
        for one in chunk:
            if one.reason is not None:
                left_out[one.reason] += 1
            else:
                eligible += 1
                rows += one.written
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
    """Write the contact rows (and the left-out patrons to `reasons`), insert the patrons written a
    chunk at a time (one executemany each), yielding after each chunk how many patrons it decided;
    then complete the manifest."""
    rows = SpreadsheetSafeWriter(contacts)
    if not plan.by_email:
        rows.writerow(CONTACT_COLUMNS)
    elif plan.format.header:
        rows.writerow(plan.format.header_names)
    left_out: Counter[str] = Counter()
    row_count = 0
    for chunk in _decided(session, plan, chunk_size):
        contained: list[dict[str, Any]] = []
        for one in chunk:
            patron = one.patron
            if one.reason is not None:
                left_out[one.reason] += 1
                if reasons is not None:
                    reasons.writerow((patron.public_id, patron.card_number, patron.first_name,
                                      patron.last_name, one.reason))
            elif one.written:
                rows.writerow(_email_row(ctx, patron, plan) if plan.by_email
                              else _contact_row(patron))
                contained.append({
                    "export_id": manifest.id, "patron_id": patron.id,
                    "address_key": patron.address_key if plan.by_email else None,
                    "decision_event_id": one.decision_event_id,
                })
        if contained:
            insert_rows(session, _EXPORTED, contained)
            row_count += len(contained)
        rows.flush()
        if reasons is not None:
            reasons.flush()
        yield len(chunk)
    if reasons is not None:
        reasons.flush()
    manifest.row_count = row_count
    manifest.excluded_counts = dict(sorted(left_out.items()))
    manifest.sha256 = contacts.hexdigest()
    session.flush()


def _decided(session: Session, plan: _Plan, chunk_size: int) -> Iterator[list[_Decided]]:
    """Every patron decided, a chunk at a time, in the order the export needs.

    Each chunk's decisions are read in four queries (`load_decisions`), and each patron is asked
    of the one eligibility function, `evaluate`, with what `load_standings` would give. A patron
    with no decision of their own or their address's is decided by their facts and their
    address's status alone: those verdicts are kept by those inputs, so the function is asked
    once per distinct (facts, status), not once per patron (at a million patrons, a few
    thousand times instead of a million)."""
    purpose, topic, today = plan.purpose, plan.topic, plan.today
    if plan.by_email:
        with_address = select(*_PATRON_COLUMNS).where(Patron.address_key.is_not(None))
        no_email = (null().label("email") if c is Patron.email else c for c in _PATRON_COLUMNS)
        without_address = select(*no_email).where(Patron.address_key.is_(None))
        pages = [_pages(session, with_address, (Patron.address_key, Patron.id), chunk_size),
                 _pages(session, without_address, (Patron.id,), chunk_size)]
    else:
        pages = [_pages(session, select(*_PATRON_COLUMNS), (Patron.id,), chunk_size)]
    # by (status, birth date, has email, has postal address, address status): what `patron_facts`
    # reads of a patron, and the address's status
    undecided: dict[tuple[str, date | None, bool, bool, AddressStatus], Verdict] = {}
    no_decisions: dict[Key, Ruling] = {}
    represented: str | None = None  # the address whose row is written already
    for chunks in pages:
        for chunk in chunks:
            found = _chunk_decisions(session, plan, chunk)
            decided: list[_Decided] = []
            for patron in chunk:
                (patron_id, _, _, status, birth_date, email, address_key, _, _, _, street, city,
                 _, postal_code) = patron
                key = address_key or ""
                address = found.address_status(key)
                own = found.own.get(patron_id, no_decisions)
                at_address = found.by_address.get(key, no_decisions)
                if own or at_address:
                    facts = patron_facts(status, birth_date, email, street, city, postal_code)
                    verdict = evaluate(purpose, topic, facts, own, at_address, address, today)
                else:
                    inputs = (status, birth_date, bool(email),
                              bool(street and city and postal_code), address)
                    verdict = undecided.get(inputs)
                    if verdict is None:
                        facts = patron_facts(status, birth_date, email, street, city, postal_code)
                        verdict = evaluate(purpose, topic, facts, own, at_address, address, today)
                        undecided[inputs] = verdict
                if verdict.reason is not None:
                    decided.append(_Decided(patron, verdict.reason.value, False, None))
                    continue
                written = not plan.by_email or address_key != represented
                if written and plan.by_email:
                    represented = address_key
                in_force = resolve(at_address if plan.by_email else own, purpose.key, topic)
                decided.append(_Decided(patron, None, written,
                                        int(in_force.event_ref) if in_force else None))
            yield decided


def _chunk_decisions(session: Session, plan: _Plan, chunk: Sequence[Row[Any]]) -> BatchDecisions:
    """The decisions (of the export's purpose) of a chunk's patrons and their addresses, read by
    the ranges the chunk covers: patrons with an address come in address order (their own
    decisions are those of the patrons with an address in that range), the others in id order
    (they have no address). Only an email export reads addresses' decisions and statuses: no
    other channel's verdict reads them."""
    first, last = chunk[0], chunk[-1]
    if plan.by_email and first.address_key is not None:
        keys = within(first.address_key, last.address_key)
        in_range = select(Patron.id).where(keys(Patron.address_key)).scalar_subquery()
        return load_decisions(session, lambda column: column.in_(in_range), keys,
                              [plan.purpose.key])
    return load_decisions(session, within(first.id, last.id), None, [plan.purpose.key])


def _pages(session: Session, query: Select[Any], keys: Sequence[ColumnElement[Any]],
           chunk_size: int) -> Iterator[Sequence[Row[Any]]]:
    """The query's rows in `keys` order, `chunk_size` at a time, each page starting after the last
    row of the one before (keyset pagination: no OFFSET, so every page costs the same)."""
    query = query.order_by(*keys).limit(chunk_size)
    after: tuple[Any, ...] | None = None
    connection = session.connection()  # plain rows: the ORM's result machinery is not needed
    while True:
        page = query if after is None else query.where(tuple_(*keys) > tuple_(*after))
        chunk = connection.execute(page).all()
        if chunk:
            yield chunk
        if len(chunk) < chunk_size:
            return
        after = tuple(chunk[-1]._mapping[key.key] for key in keys)


def _email_row(ctx: ServiceContext, patron: Row[Any], plan: _Plan) -> tuple[str, ...]:
    return plan.format.row({
        "email": patron.email,
        "first_name": patron.first_name,
        "last_name": patron.last_name,
        "preferred_language": patron.preferred_language,
        "patron_id": patron.public_id,
        "unsubscribe_url": ctx.link(LinkKind.UNSUBSCRIBE, patron.public_id, plan.topic),
        "preferences_url": ctx.link(LinkKind.PREFERENCES, patron.public_id),
    })


def _contact_row(patron: Row[Any]) -> tuple[str, ...]:
    return (
        patron.public_id,
        patron.first_name,
        patron.last_name,
        patron.email,
        patron.street,
        patron.city,
        patron.state,
        patron.postal_code,
    )

"""Export the patrons who may be contacted, who was left out and why, and a manifest."""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import ColumnElement, Row, Select, null, select, tuple_
from sqlalchemy.orm import Session

from consent_service.domain.eligibility import Verdict
from consent_service.domain.ledger import require_aware
from consent_service.domain.purposes import Channel, Purpose
from consent_service.domain.tokens import LinkKind
from consent_service.models import ExportManifest, Patron
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import checked_topic
from consent_service.services.standing import load_standings

EMAIL_COLUMNS = ("email", "first_name", "last_name", "preferred_language", "patron_id",
                 "unsubscribe_url", "preferences_url")
CONTACT_COLUMNS = ("patron_id", "first_name", "last_name", "email", "street", "city", "state",
                   "postal_code")
# The excluded file is for the library's own follow-up, never for a vendor: it names the patron.
EXCLUDED_COLUMNS = ("patron_id", "card_number", "first_name", "last_name", "reason")

_PATRON_COLUMNS = (
    Patron.id, Patron.public_id, Patron.card_number, Patron.status, Patron.birth_date,
    Patron.email, Patron.address_key, Patron.first_name, Patron.last_name, Patron.preferred_language,
    Patron.street, Patron.city, Patron.state, Patron.postal_code,
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_contacts(session: Session, ctx: ServiceContext, *, purpose: str, topic: str | None,
                    output: Path | None, excluded: Path | None, created_by: str, now: datetime,
                    chunk_size: int = 2000) -> ExportManifest:
    """Write the patrons who may be contacted for `purpose` (and `topic`) as CSV, list every patron
    left out with the eligibility function's reason, and record a committed manifest.

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
      written as they are decided.

    The manifest holds the SHA-256 of the bytes written and how many were left out per reason.

    :raise UnknownPurposeError: for a purpose that is not in the catalog.
    :raise UnknownTopicError: for a topic on a purpose without topics, or one not configured.
    """
    chosen = ctx.catalog.get(purpose)
    topic_key = checked_topic(session, chosen.key, chosen.has_topics, topic) or None
    today = ctx.today(require_aware(now, "now"))
    by_email = chosen.channel is Channel.EMAIL

    left_out: Counter[str] = Counter()
    row_count = 0
    with ExitStack() as files:
        contacts = _DigestingSink(files.enter_context(
            _replaced_when_complete(output) if output else _standard_output()))
        rows = _SpreadsheetSafeWriter(contacts)
        rows.writerow(EMAIL_COLUMNS if by_email else CONTACT_COLUMNS)
        reasons = None
        if excluded is not None:
            excluded_file = files.enter_context(_replaced_when_complete(excluded))
            reasons = _SpreadsheetSafeWriter(_DigestingSink(excluded_file))
            reasons.writerow(EXCLUDED_COLUMNS)

        represented: str | None = None  # the address whose row is written already
        for patron, verdict in _verdicts(session, chosen, topic_key, today, chunk_size):
            if verdict.reason is not None:
                left_out[verdict.reason.value] += 1
                if reasons is not None:
                    reasons.writerow((patron.public_id, patron.card_number, patron.first_name,
                                      patron.last_name, verdict.reason.value))
            elif not by_email:
                rows.writerow(_contact_row(patron))
                row_count += 1
            elif patron.address_key != represented:
                represented = patron.address_key
                rows.writerow(_email_row(ctx, patron, topic_key))
                row_count += 1

        manifest = ExportManifest(
            created_by=created_by, created_at=now, purpose=chosen.key, topic=topic_key,
            row_count=row_count, excluded_counts=dict(sorted(left_out.items())),
            sha256=contacts.hexdigest(), file_name=output.name if output else None,
        )
        session.add(manifest)
        session.flush()  # a database error here still leaves no file behind
    session.commit()
    return manifest


def spreadsheet_safe(value: str | None) -> str:
    """A text value a spreadsheet shows as text: one that would start a formula gets a leading '."""
    text = value or ""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _verdicts(session: Session, purpose: Purpose, topic: str | None, today: date,
              chunk_size: int) -> Iterator[tuple[Row[Any], Verdict]]:
    """Every patron with their verdict, a chunk at a time, in the order the export needs."""
    if purpose.channel is Channel.EMAIL:
        with_address = select(*_PATRON_COLUMNS).where(Patron.address_key.is_not(None))
        no_email = (null().label("email") if c is Patron.email else c for c in _PATRON_COLUMNS)
        without_address = select(*no_email).where(Patron.address_key.is_(None))
        pages = [_pages(session, with_address, (Patron.address_key, Patron.id), chunk_size),
                 _pages(session, without_address, (Patron.id,), chunk_size)]
    else:
        pages = [_pages(session, select(*_PATRON_COLUMNS), (Patron.id,), chunk_size)]
    for chunks in pages:
        for chunk in chunks:
            standings = load_standings(session, chunk, [purpose.key])
            for patron in chunk:
                yield patron, standings[patron.id].verdict(purpose, topic, today)


def _pages(session: Session, query: Select[Any], keys: Sequence[ColumnElement[Any]],
           chunk_size: int) -> Iterator[Sequence[Row[Any]]]:
    """The query's rows in `keys` order, `chunk_size` at a time, each page starting after the last
    row of the one before (keyset pagination: no OFFSET, so every page costs the same)."""
    query = query.order_by(*keys).limit(chunk_size)
    after: tuple[Any, ...] | None = None
    while True:
        page = query if after is None else query.where(tuple_(*keys) > tuple_(*after))
        chunk = session.execute(page).all()
        if chunk:
            yield chunk
        if len(chunk) < chunk_size:
            return
        after = tuple(chunk[-1]._mapping[key] for key in keys)


def _email_row(ctx: ServiceContext, patron: Row[Any], topic: str | None) -> tuple[str, ...]:
    return (
        patron.email,
        patron.first_name,
        patron.last_name,
        patron.preferred_language,
        patron.public_id,
        ctx.link(LinkKind.UNSUBSCRIBE, patron.public_id, topic),
        ctx.link(LinkKind.PREFERENCES, patron.public_id),
    )


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


class _SpreadsheetSafeWriter:
    """A CSV writer whose every cell goes through `spreadsheet_safe` (None is written empty)."""

    def __init__(self, sink: _DigestingSink) -> None:
        self._writer = csv.writer(sink, lineterminator="\n")

    def writerow(self, cells: Sequence[str | None]) -> None:
        self._writer.writerow([spreadsheet_safe(cell) for cell in cells])


class _DigestingSink:
    """What `csv.writer` writes to: encodes UTF-8 and keeps the SHA-256 of every byte written."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self._digest.update(data)
        self._stream.write(data)
        return len(text)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


@contextmanager
def _replaced_when_complete(target: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside `target`, moved onto it when the block completes and removed if it
    fails."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, before the move
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@contextmanager
def _standard_output() -> Iterator[IO[bytes]]:
    """Standard output as bytes, so the digest is of exactly what was written."""
    sys.stdout.flush()
    stream = sys.stdout.buffer
    yield stream
    stream.flush()

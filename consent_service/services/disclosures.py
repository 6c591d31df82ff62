"""The disclosure record of exports: past exports, who withdrew since a file went to a vendor, and
how opt-ins and opt-outs moved week by week."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Row, Table, case, func, select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import WHOLE_PURPOSE, Actor, Decision, Ruling
from consent_service.domain.purposes import VENDOR_PURPOSES
from consent_service.models import ConsentEvent, ExportedPatron, ExportManifest, Patron, Topic
from consent_service.services.bulk import insert_tuples
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import checked_topic
from consent_service.services.export_files import (
    replaced_when_complete,
    spreadsheet_safe,
    standard_output,
)

WITHDRAWAL_COLUMNS = ("patron_id", "card_number", "withdrawn_at", "source", "consents_again_since")


_EXPORTED_COLUMNS = ("export_id", "patron_id", "address_key", "decision_event_id")


def record_exported(session: Session,
                    rows: Sequence[tuple[int, int, str | None, int | None]]) -> None:
    """Record patrons as contained in an export (`ExportedPatron`: export id, patron id, the
    address key an email row went to, the decision in force the verdict read), in the session's
    transaction, as one bulk write (`bulk.insert_tuples`: COPY on PostgreSQL, the driver's
    `executemany` of the plain tuples on SQLite; no dictionary built per row)."""
    insert_tuples(session, cast(Table, ExportedPatron.__table__), _EXPORTED_COLUMNS, rows)


class UnknownExportError(ConsentServiceError):
    """An export id with no manifest."""


class NotSentToVendorError(ConsentServiceError):
    """A withdrawals list asked for an export whose purpose does not disclose to a vendor."""


@dataclass(frozen=True)
class ExportSummary:
    """A past export as its manifest records it."""

    id: int
    created_at: datetime
    created_by: str
    purpose: str
    topic: str | None
    row_count: int
    sha256: str
    file_name: str | None
    excluded_counts: dict[str, int]

    @property
    def sent_to_vendor(self) -> bool:
        return self.purpose in VENDOR_PURPOSES


@dataclass(frozen=True)
class Withdrawal:
    """A patron in a vendor's file who withdrew since: when they first did (after the decision the
    export relied on) and where, and when they consent again if an opt-in is in force now."""

    patron_id: str
    card_number: str
    withdrawn_at: datetime
    source: str
    consents_again_since: datetime | None


@dataclass(frozen=True)
class WithdrawnSince:
    export: ExportSummary
    withdrawals: list[Withdrawal]


def export_topics(session: Session) -> list[tuple[str, str]]:
    """The email topics an export can be for, as (key, English name), by name."""
    return [(key, name) for key, name in session.execute(select(Topic.key, Topic.name).order_by(Topic.name))]


def recent_exports(session: Session, *, limit: int = 100) -> list[ExportSummary]:
    """The latest `limit` exports, newest first."""
    manifests = session.scalars(
        select(ExportManifest).order_by(ExportManifest.created_at.desc(), ExportManifest.id.desc())
        .limit(limit))
    return [_summary(manifest) for manifest in manifests]


def find_export(session: Session, export_id: int) -> ExportSummary:
    """:raise UnknownExportError: when no export has this id."""
    manifest = session.get(ExportManifest, export_id)
    if manifest is None:
        raise UnknownExportError(f"no export has the id {export_id}")
    return _summary(manifest)


def withdrawn_since(session: Session, export_id: int) -> WithdrawnSince:
    """The patrons in a vendor export's file who have withdrawn since, so the library can ask the
    vendor to delete them. Read from the ledger, not from the projection alone.

    Rules:
    - only patrons the file contained (ExportedPatron) can be listed: someone who had withdrawn
      before the export was left out of it and is never listed;
    - a withdrawal is an effective opt-out for the export's purpose (vendor purposes have no
      topics) that overrides the decision in force which the export read for the patron (None:
      nobody had decided, so any opt-out). Comparing with that decision, not with the export's
      time, makes the list exact at the same instant and for a late record: a paper opt-out dated
      before the export but entered after it is listed (the vendor got someone who had said no),
      and one older than an opt-in the export relied on is not;
    - `withdrawn_at` and `source` are the first such opt-out's (earliest `occurred_at`);
    - a patron who consents again (an opt-in is in force now) is still listed, with the opt-in's
      time: the vendor was told nothing in between, and the library decides what to ask;
    - other ways to become ineligible are not withdrawals: an inactive card (a library record,
      not the patron's wish; the ledger has no event for it), a birthday, an address problem.
      Erasure is not a use case yet; when it is, it must record opt-outs for the vendor purposes.

    :raise UnknownExportError: when no export has this id.
    :raise NotSentToVendorError: when the export's purpose does not disclose to a vendor.
    """
    export = find_export(session, export_id)
    if not export.sent_to_vendor:
        raise NotSentToVendorError(
            f"export {export_id} is for {export.purpose}, which is not sent to a vendor; "
            f"withdrawals are kept for {', '.join(VENDOR_PURPOSES)}")
    events_of_purpose = (ConsentEvent.purpose == export.purpose,
                         ConsentEvent.topic == WHOLE_PURPOSE, ConsentEvent.effective.is_(True))
    opted_out = select(ConsentEvent.patron_id).where(
        *events_of_purpose, ConsentEvent.decision == Decision.OPT_OUT.value)
    rows = session.execute(
        select(ExportedPatron.patron_id, ExportedPatron.decision_event_id, Patron.public_id,
               Patron.card_number, ConsentEvent.id, ConsentEvent.decision, ConsentEvent.occurred_at,
               ConsentEvent.actor, ConsentEvent.source)
        .join(Patron, Patron.id == ExportedPatron.patron_id)
        .join(ConsentEvent, ConsentEvent.patron_id == ExportedPatron.patron_id)
        .where(ExportedPatron.export_id == export_id, ExportedPatron.patron_id.in_(opted_out),
               *events_of_purpose)
        .order_by(ExportedPatron.patron_id, ConsentEvent.id))
    withdrawals = []
    for _, events in groupby(rows, key=lambda row: row.patron_id):
        found = _withdrawal(list(events))
        if found is not None:
            withdrawals.append(found)
    withdrawals.sort(key=lambda w: (w.withdrawn_at, w.card_number))
    return WithdrawnSince(export, withdrawals)


def _withdrawal(events: list[Row[Any]]) -> Withdrawal | None:
    """One exported patron's events for the purpose, in id order: their withdrawal, if any."""
    rulings = {row.id: Ruling(Decision(row.decision), row.occurred_at, Actor(row.actor), str(row.id))
               for row in events}
    relied_on = rulings.get(events[0].decision_event_id)
    opt_outs = [row for row in events if rulings[row.id].decision is Decision.OPT_OUT
                and rulings[row.id].overrides(relied_on)]
    if not opt_outs:
        return None
    first = min(opt_outs, key=lambda row: (row.occurred_at, row.id))
    in_force = max(rulings.values(), key=Ruling.precedence)  # the first of equals, as `fold`
    return Withdrawal(events[0].public_id, events[0].card_number, first.occurred_at, first.source,
                      in_force.occurred_at if in_force.decision is Decision.OPT_IN else None)


def withdrawal_lines(withdrawals: Iterable[Withdrawal]) -> Iterator[str]:
    """The withdrawals as CSV lines (header first; times in UTC, ISO 8601), every cell
    spreadsheet-safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for cells in [WITHDRAWAL_COLUMNS, *(
            (w.patron_id, w.card_number, w.withdrawn_at.isoformat(), w.source,
             w.consents_again_since.isoformat() if w.consents_again_since else "")
            for w in withdrawals)]:
        writer.writerow([spreadsheet_safe(cell) for cell in cells])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def write_withdrawals(session: Session, export_id: int, output: Path | None) -> int:
    """Write `withdrawn_since` as CSV to `output` (whole or not at all) or to standard output;
    return how many patrons are listed. Reads only.

    :raise UnknownExportError: when no export has this id.
    :raise NotSentToVendorError: when the export's purpose does not disclose to a vendor.
    """
    found = withdrawn_since(session, export_id)
    with replaced_when_complete(output) if output else standard_output() as stream:
        for line in withdrawal_lines(found.withdrawals):
            stream.write(line.encode("utf-8"))
    return len(found.withdrawals)


@dataclass(frozen=True)
class WeekMovement:
    """Opt-ins and opt-outs made in one week (Monday to Sunday, the library's days), by source."""

    starts: date
    opt_ins: dict[str, int]
    opt_outs: dict[str, int]


def weekly_movement(session: Session, ctx: ServiceContext, *, purpose: str, topic: str | None,
                    now: datetime, weeks: int = 12) -> list[WeekMovement]:
    """How opt-ins and opt-outs moved for a purpose (a topic: its own decisions and the whole
    purpose's; none: every decision on the purpose) in the last `weeks` weeks, this one included,
    oldest first. Counted in the database, by when each decision was made (`occurred_at`), from
    effective events only (a child's own opt-in changed nothing).

    :raise UnknownPurposeError: for a purpose that is not in the catalog.
    :raise UnknownTopicError: for a topic on a purpose without topics, or one not configured.
    """
    chosen = ctx.catalog.get(purpose)
    topic_key = checked_topic(session, chosen.key, chosen.has_topics, topic)
    today = ctx.today(now)
    monday = today - timedelta(days=today.weekday())
    starts = [monday - timedelta(weeks=weeks - 1 - n) for n in range(weeks)]
    zone = ZoneInfo(ctx.timezone)
    bounds = [datetime.combine(day, time(), tzinfo=zone) for day in [*starts, monday + timedelta(weeks=1)]]
    week = case(*((ConsentEvent.occurred_at < bound, n) for n, bound in enumerate(bounds[1:-1])),
                else_=weeks - 1)
    events = select(week.label("week"), ConsentEvent.decision, ConsentEvent.source).where(
        ConsentEvent.purpose == chosen.key, ConsentEvent.effective.is_(True),
        ConsentEvent.occurred_at >= bounds[0], ConsentEvent.occurred_at < bounds[-1])
    if topic_key:
        events = events.where(ConsentEvent.topic.in_([topic_key, WHOLE_PURPOSE]))
    moved = events.subquery()
    counts: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for number, decision, source, count in session.execute(
            select(moved.c.week, moved.c.decision, moved.c.source, func.count())
            .group_by(moved.c.week, moved.c.decision, moved.c.source)):
        counts[(number, decision)][source] = count
    return [WeekMovement(start, dict(sorted(counts[(n, Decision.OPT_IN.value)].items())),
                         dict(sorted(counts[(n, Decision.OPT_OUT.value)].items())))
            for n, start in enumerate(starts)]


def _summary(manifest: ExportManifest) -> ExportSummary:
    return ExportSummary(manifest.id, manifest.created_at, manifest.created_by, manifest.purpose,
                         manifest.topic, manifest.row_count, manifest.sha256, manifest.file_name,
                         dict(manifest.excluded_counts))

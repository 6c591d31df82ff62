"""Record historic consent decisions from a CSV file (paper forms, a previous system)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import Purpose
from consent_service.models import ConsentEvent, Patron, PatronDecision
from consent_service.services.context import ServiceContext
from consent_service.services.csv_input import CsvRow, ImportReport, read_csv
from consent_service.services.decisions import (
    CLOCK_SKEW,
    DecisionRequest,
    checked_topic,
    record_decision,
)
from consent_service.services.patron_import import CHUNK, load_patrons_by_card

COLUMNS = ("card_number", "purpose", "topic", "decision", "occurred_at", "source", "actor", "note")
REQUIRED = ("card_number", "purpose", "decision", "occurred_at", "actor")
MULTILINE_COLUMNS = ("note",)  # a note may hold line breaks and tabs, as a staff note may
ACTORS = (Actor.PATRON, Actor.GUARDIAN, Actor.STAFF)
SOURCE_LABEL_LIMIT = 64  # a library's own label for where a decision came from

# What makes two events the same decision: patron, purpose, topic, decision, actor, occurred_at.
_EventKey = tuple[int, str, str, str, str, datetime]
_Choice = TypeVar("_Choice", bound=StrEnum)


@dataclass
class ConsentImportReport(ImportReport):
    """Rows recorded in the ledger; rows saying what is in force already; rows the ledger holds
    already but that a later decision overrides."""

    recorded: int = 0
    already_in_force: int = 0
    already_recorded: int = 0

    def counts(self) -> list[tuple[str, int]]:
        return [("recorded", self.recorded), ("already in force", self.already_in_force),
                ("already recorded", self.already_recorded)]


@dataclass
class _DecisionRow:
    """A data row, checked: the request to record and its event's key, or what is wrong."""

    line: int
    request: DecisionRequest | None = None
    key: _EventKey | None = None
    problems: list[str] = field(default_factory=list)


def import_consents(session: Session, ctx: ServiceContext, path: Path, *, now: datetime,
                    skip_invalid: bool, allow_partial: bool = False,
                    on_row: Callable[[], None] | None = None,
                    encoding: str | None = None) -> ConsentImportReport:
    """Record each row's decision through `record_decision`, keeping its time, source and actor.

    Every row is checked first (card, purpose, topic, decision, time with offset and not in the
    future, source, actor), and every problem is reported with its line. Atomic by default: one bad
    row, or one row the ledger refuses, and nothing is written. With `skip_invalid`, the good rows
    are recorded and the bad ones listed. Either way the import commits once, at the end. Every
    value is text `clean_text` allows (a note may hold line breaks); a control character or a bidi
    override rejects its row. A column that looks like a misspelt known one (`notes` for `note`)
    refuses the file unless `allow_partial` (see `read_csv`, which also reads the encodings and
    delimiters Excel writes).

    `source` is one of ours (`Source`), or the library's own label for where a historic decision
    came from (`paper_form`, `registration_form`, `website`...): such a row is recorded under
    source `import` with the label as its `source_detail`, shown wherever the source is, and the
    report notes each label with its count, so that a mistyped source of ours is seen.

    Rows are applied in file order, and since the decision in force is the one that occurred last,
    any order of the same rows gives the same state. Re-running a file records nothing new: a row
    whose decision the patron's record has in force writes nothing (`already in force`), nor does a
    row whose very event (patron, purpose, topic, decision, actor, time) the ledger holds, from an
    earlier run or line, while a later decision is in force (`already recorded`). An empty `source`
    means `import`; the note and the file's name and line go into the evidence.
    """
    report = ConsentImportReport()
    tick = on_row or _no_progress
    csv_file = read_csv(path, required=REQUIRED, known=COLUMNS, multiline=MULTILINE_COLUMNS,
                        allow_partial=allow_partial, encoding=encoding)
    report.notes.extend(csv_file.notes)
    csv_rows = csv_file.rows
    cards = {row.values.get("card_number", "") for row in csv_rows}
    patrons = load_patrons_by_card(session, cards - {""})
    checker = _RowChecker(session, ctx, patrons, now, path.name)
    rows = [checker.check(row) for row in csv_rows]

    if skip_invalid or not any(row.problems for row in rows):
        in_ledger = _events_of(session, [patron.id for patron in patrons.values()])
        for row in rows:
            if row.request is not None and row.key is not None and not row.problems:
                problem = _record(session, ctx, row.request, row.key, in_ledger, report, now)
                if problem:
                    row.problems.append(problem)
            tick()
    else:
        for _ in rows:
            tick()
    for row in rows:
        if row.problems:
            report.reject(row.line, row.problems)
    labels = Counter(row.request.evidence["source_detail"] for row in rows
                     if row.request is not None and "source_detail" in row.request.evidence)
    if labels:
        report.notes.append("sources kept as the library's own labels under `import`: " + ", ".join(
            f"{label} ({count})" for label, count in sorted(labels.items())))
    if report.problems and not skip_invalid:
        session.rollback()
        return ConsentImportReport(problems=report.problems, notes=report.notes)
    session.commit()
    return report


def _no_progress() -> None:
    return None


def _record(session: Session, ctx: ServiceContext, request: DecisionRequest, key: _EventKey,
            in_ledger: set[_EventKey], report: ConsentImportReport, now: datetime) -> str | None:
    """Record one row and count its outcome; the ledger's reason when it refuses the row."""
    if key in in_ledger:
        patron_id, purpose, topic, decision = key[:4]
        in_force = session.get(PatronDecision, (patron_id, purpose, topic))
        if in_force is not None and in_force.decision == decision:
            report.already_in_force += 1
        else:
            report.already_recorded += 1
        return None
    try:
        # record_decision checks everything before it writes, so a refused row leaves no trace.
        recorded = record_decision(session, ctx, request, now=now)
    except ConsentServiceError as exc:
        return str(exc)
    if recorded.written:
        in_ledger.add(key)
        report.recorded += 1
    else:
        report.already_in_force += 1
    return None


def _events_of(session: Session, patron_ids: list[int]) -> set[_EventKey]:
    """The decisions the ledger holds for these patrons, as keys that tell an event's repeat."""
    keys: set[_EventKey] = set()
    ordered = sorted(patron_ids)
    query = select(ConsentEvent.patron_id, ConsentEvent.purpose, ConsentEvent.topic,
                   ConsentEvent.decision, ConsentEvent.actor, ConsentEvent.occurred_at)
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start:start + CHUNK]
        for patron_id, purpose, topic, decision, actor, occurred_at in session.execute(
                query.where(ConsentEvent.patron_id.in_(chunk))):
            keys.add((patron_id, purpose, topic, decision, actor, occurred_at))
    return keys


class _RowChecker:
    """Checks rows against the catalog, the topics and the patrons, remembering topic answers."""

    def __init__(self, session: Session, ctx: ServiceContext, patrons: dict[str, Patron],
                 now: datetime, file_name: str) -> None:
        self._session = session
        self._ctx = ctx
        self._patrons = patrons
        self._now = now
        self._file_name = file_name
        self._topics: dict[tuple[str, str], str | None] = {}  # (purpose, topic) -> problem

    def check(self, row: CsvRow) -> _DecisionRow:
        """The row's request, or its problems. A column whose text was refused is reported once,
        for its character, and not checked further."""
        values = row.values
        problems = list(row.problems)
        dropped: list[str] = []  # "is empty" and the like, for a column absent as it was refused

        def problems_for(column: str) -> list[str]:
            return dropped if column in row.refused else problems

        card = values.get("card_number", "")
        patron = self._patrons.get(card)
        if not card:
            problems_for("card_number").append("card_number is empty")
        elif patron is None:
            problems.append(f"no patron has card number {card!r}")

        purpose = self._purpose(values.get("purpose", ""), problems_for("purpose"))
        topic = values.get("topic", "")
        if purpose is not None and topic:
            problem = self._topic_problem(purpose, topic)
            if problem:
                problems.append(problem)
        decision = _one_of(Decision, "decision", values.get("decision", ""), problems_for("decision"))
        occurred_at = self._occurred_at(values.get("occurred_at", ""), problems_for("occurred_at"))
        source, label = self._source(values.get("source", ""), problems_for("source"))
        actor = _one_of(Actor, "actor", values.get("actor", ""), problems_for("actor"),
                        allowed=ACTORS)
        if (row.refused or problems or patron is None or purpose is None or decision is None
                or occurred_at is None or source is None or actor is None):
            return _DecisionRow(row.line, problems=problems)

        evidence = {"import_file": self._file_name, "line": str(row.line),
                    **({"source_detail": label} if label else {})}
        if values.get("note"):
            evidence["note"] = values["note"]
        request = DecisionRequest(purpose=purpose.key, topic=topic or None, decision=decision,
                                  source=source, actor=actor, occurred_at=occurred_at,
                                  patron=patron, evidence=evidence)
        key = (patron.id, purpose.key, topic, decision.value, actor.value, occurred_at)
        return _DecisionRow(row.line, request, key)

    def _source(self, value: str, problems: list[str]) -> tuple[Source | None, str | None]:
        """One of our sources (empty: `import`), or `import` with the library's own label."""
        for source in Source:
            if source.value == value.lower():
                return source, None
        if not value:
            return Source.IMPORT, None
        if len(value) > SOURCE_LABEL_LIMIT:
            problems.append(f"source is longer than {SOURCE_LABEL_LIMIT} characters")
            return None, None
        return Source.IMPORT, value

    def _purpose(self, key: str, problems: list[str]) -> Purpose | None:
        if not key:
            problems.append("purpose is empty")
            return None
        try:
            return self._ctx.catalog.get(key)
        except ConsentServiceError as exc:
            problems.append(str(exc))
            return None

    def _topic_problem(self, purpose: Purpose, topic: str) -> str | None:
        key = (purpose.key, topic)
        if key not in self._topics:
            try:
                checked_topic(self._session, purpose.key, purpose.has_topics, topic)
            except ConsentServiceError as exc:
                self._topics[key] = str(exc)
            else:
                self._topics[key] = None
        return self._topics[key]

    def _occurred_at(self, text: str, problems: list[str]) -> datetime | None:
        if not text:
            problems.append("occurred_at is empty")
            return None
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            problems.append("occurred_at is not an ISO 8601 date and time")
            return None
        if at.tzinfo is None or at.utcoffset() is None:
            problems.append(
                "occurred_at has no UTC offset (write it like 2024-03-01T10:00:00-07:00)")
            return None
        at = at.astimezone(UTC)
        if at > self._now + CLOCK_SKEW:
            problems.append("occurred_at is in the future")
            return None
        return at


def _one_of(kind: type[_Choice], column: str, value: str, problems: list[str],
            allowed: tuple[_Choice, ...] | None = None) -> _Choice | None:
    """The member of `kind` (or of `allowed`) written `value`, in any case; else a problem."""
    choices = allowed or tuple(kind)
    for choice in choices:
        if choice.value == value.lower():
            return choice
    if value:
        problems.append(f"{column} {value!r} is not one of: {', '.join(c.value for c in choices)}")
    else:
        problems.append(f"{column} is empty")
    return None

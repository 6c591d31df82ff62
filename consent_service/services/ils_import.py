"""Patron files as the ILSs write them: reading one in its system's format, naming guardians by the
ILS's own ids, and the opt-ins the ILS keeps (through a consent map) recorded as decisions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError, ils_formats
from consent_service.domain.consent_map import ConsentRule, decide
from consent_service.domain.ils_formats import IlsFormat
from consent_service.domain.ledger import WHOLE_PURPOSE, Actor, Decision, Source
from consent_service.domain.purposes import Channel
from consent_service.models import AddressDecision, ConsentEvent, Patron, PatronDecision
from consent_service.services.context import ServiceContext
from consent_service.services.csv_input import CsvRow, ImportFileError, open_csv, open_table
from consent_service.services.decisions import DecisionRequest, checked_topic, record_decision

CHUNK = 500
# Columns whose values may hold a line break (a street's second line), in every format.
MULTILINE = frozenset({"street", "address", "address2", "add1_street1", "add1_street2",
                       "streetone", "streettwo"})
NOTE_LINES = 10  # lines named in a note about many rows; the rest are counted


@dataclass
class PatronFile:
    """A patron file read in its system's format: rows in our columns (read as they are asked
    for), each data row's ILS fields (for a consent map) by line, filled as the rows are read, and
    notes for the operator (those about rows complete once every row is read)."""

    format: IlsFormat
    rows: Iterator[CsvRow]
    fields: dict[int, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# Columns naming a guardian by the ILS's own id: such a file is held whole, to resolve them.
_GUARANTOR_COLUMNS = frozenset({"guarantor_id", "guarantorid"})


@contextmanager
def open_patron_file(session: Session, path: Path, *, format_name: str, encoding: str | None,
                     allow_partial: bool, rules: Sequence[ConsentRule] = ()
                     ) -> Iterator[PatronFile]:
    """Read a patron CSV in `format_name` (`auto`: the format whose columns the header holds; see
    `ils_formats.detect`) into our import's columns, checked as `read_csv` checks any file; the
    rows are read as they are asked for (see `open_csv`), so a file of a million patrons is never
    held whole, unless it names guardians by ILS id (below).

    Notes say which format was used and why, and which columns were used; row oddities (several
    addresses in Sierra's EMAIL ADDR) are noted with their lines once the rows are read. A header
    whose only column this import uses is the card number is refused unless `allow_partial`:
    every patron would come in without a name, email or birth date, and count as an adult. Koha's
    `guarantor_id` (and the older `guarantorid`) name the guardian by borrowernumber: resolved to
    a card number within the file, else among patrons imported before (who keep their
    borrowernumber as `ils_id`)."""
    with open_table(path, encoding) as table:
        header = frozenset(name.lower() for name in table.header)
    chosen = ils_formats.detect(header) if format_name == "auto" else ils_formats.get(format_name)
    wanted = {rule.field.lower() for rule in rules} & header
    used = [column for column in chosen.used if column in header]
    how = "detected from its header" if format_name == "auto" else "as --format says"

    def explained(exc: ImportFileError) -> ImportFileError:
        if format_name != "auto" or chosen is ils_formats.GENERIC:
            return exc
        return ImportFileError(f"{exc} (read as {chosen.label}, {how}; pass --format to say which "
                               f"system wrote it)")

    with ExitStack() as stack:
        try:
            csv_file, csv_rows = stack.enter_context(open_csv(
                path, required=chosen.required, known=(*chosen.used, *sorted(wanted)),
                multiline=MULTILINE, allow_partial=allow_partial, encoding=encoding,
                expected=chosen.documented))
        except ImportFileError as exc:
            raise explained(exc) from None
        notes = [f"format {chosen.name} ({chosen.label}), {how}; columns used: {', '.join(used)}",
                 *csv_file.notes]
        if not allow_partial and set(used) <= set(chosen.required):
            raise csv_file.header_error(
                f"{', '.join(chosen.required)} is the only column this import knows, so every "
                f"patron would be imported without name, email or birth date (and count as an "
                f"adult); name the columns as documented, or pass --allow-partial")

        read = PatronFile(chosen, iter(()), notes=notes)
        oddities: dict[str, list[int]] = defaultdict(list)

        def ours() -> Iterator[CsvRow]:
            try:
                for row in csv_rows:
                    theirs = chosen.read(row.values)
                    for note in theirs.notes:
                        oddities[note].append(row.line)
                    if rules:
                        read.fields[row.line] = {
                            **{name.upper(): value for name, value in row.values.items()},
                            **chosen.attributes(row.values)}
                    yield CsvRow(row.line, theirs.values, (*row.problems, *theirs.problems),
                                 row.refused)
            except ImportFileError as exc:
                raise explained(exc) from None
            for note, lines in oddities.items():
                read.notes.append(f"{_lines(lines)}: {note}")

        if header & _GUARANTOR_COLUMNS:
            rows = list(ours())
            _resolve_guarantors(session, rows)
            read.rows = iter(rows)
        else:
            read.rows = ours()
        yield read


def _lines(lines: Sequence[int]) -> str:
    shown = ", ".join(str(line) for line in lines[:NOTE_LINES])
    more = f" and {len(lines) - NOTE_LINES} more" if len(lines) > NOTE_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def _resolve_guarantors(session: Session, rows: list[CsvRow]) -> None:
    """Replace each row's `guardian_ils_id` by the guardian's card number (or a problem)."""
    wanted = {row.values["guardian_ils_id"] for row in rows if row.values.get("guardian_ils_id")}
    if not wanted:
        return
    cards = {row.values["ils_id"]: row.values.get("card_number", "") for row in rows
             if row.values.get("ils_id")}
    missing = sorted(wanted - cards.keys())
    for start in range(0, len(missing), CHUNK):
        chunk = missing[start:start + CHUNK]
        for ils_id, card in session.execute(
                select(Patron.ils_id, Patron.card_number).where(Patron.ils_id.in_(chunk))):
            cards.setdefault(ils_id, card)
    for index, row in enumerate(rows):
        ils_id = row.values.pop("guardian_ils_id", "")
        if not ils_id:
            continue
        if cards.get(ils_id):
            row.values["guardian_card_number"] = cards[ils_id]
        else:
            rows[index] = CsvRow(row.line, row.values, (
                *row.problems, f"the guarantor's borrowernumber {ils_id} is no patron in this file "
                               f"or imported before"), row.refused)


def check_rules(session: Session, ctx: ServiceContext, rules: Iterable[ConsentRule]) -> None:
    """Refuse a consent map naming a purpose or topic that does not exist, before any row."""
    for rule in rules:
        purpose = ctx.catalog.get(rule.purpose)
        checked_topic(session, purpose.key, purpose.has_topics, rule.topic)


@dataclass
class IlsConsents:
    """What the consent map recorded: decisions written, and rows it could not record, by line."""

    recorded: int = 0
    problems: dict[int, list[str]] = field(default_factory=dict)


def record_ils_consents(session: Session, ctx: ServiceContext, rules: Sequence[ConsentRule],
                        rows: Iterable[tuple[int, Patron, dict[str, str]]], *, as_of: datetime,
                        file_name: str, now: datetime) -> IlsConsents:
    """Record what the ILS says through the map, for each (line, patron, ILS fields), by the rules
    of `consent_map.decide`: source `import`, actor patron, the field in `source_detail`, time
    `as_of`. An email decision for a patron without an email address cannot be recorded and is a
    problem on its line."""
    done = IlsConsents()
    batch: list[tuple[int, Patron, dict[str, str]]] = []
    for item in rows:
        batch.append(item)
        if len(batch) == CHUNK:
            _record_batch(session, ctx, rules, batch, as_of, file_name, now, done)
            batch = []
    _record_batch(session, ctx, rules, batch, as_of, file_name, now, done)
    return done


def _record_batch(session: Session, ctx: ServiceContext, rules: Sequence[ConsentRule],
                  batch: list[tuple[int, Patron, dict[str, str]]], as_of: datetime,
                  file_name: str, now: datetime, done: IlsConsents) -> None:
    if not batch:
        return
    last = _last_from_ils(session, [patron.id for _, patron, _ in batch])
    for line, patron, fields in batch:
        for rule in rules:
            said = rule.decision(fields.get(rule.field.upper(), ""))
            if said is None:
                continue
            topic = rule.topic or WHOLE_PURPOSE
            email = ctx.catalog.get(rule.purpose).channel is Channel.EMAIL
            if email and not patron.address_key:
                done.problems.setdefault(line, []).append(
                    f"{rule.field} says {said.value} for {rule.purpose}, but the patron has no "
                    f"email address")
                continue
            in_force = _in_force(session, patron, rule.purpose, topic, email)
            if not decide(said, last.get((patron.id, rule.purpose, topic, rule.detail)), in_force):
                continue
            request = DecisionRequest(
                purpose=rule.purpose, topic=rule.topic, decision=said, source=Source.IMPORT,
                actor=Actor.PATRON, occurred_at=as_of, patron=patron,
                evidence={"source_detail": rule.detail, "import_file": file_name,
                          "line": str(line)})
            try:
                if record_decision(session, ctx, request, now=now).written:
                    done.recorded += 1
            except ConsentServiceError as exc:
                done.problems.setdefault(line, []).append(f"{rule.field}: {exc}")


def _last_from_ils(session: Session, patron_ids: Collection[int]
                   ) -> dict[tuple[int, str, str, str], Decision]:
    """The decision each ILS field last recorded, by (patron id, purpose, topic, source detail)."""
    query = (select(ConsentEvent.patron_id, ConsentEvent.purpose, ConsentEvent.topic,
                    ConsentEvent.decision, ConsentEvent.evidence)
             .where(ConsentEvent.patron_id.in_(sorted(patron_ids)),
                    ConsentEvent.source == Source.IMPORT.value)
             .order_by(ConsentEvent.occurred_at, ConsentEvent.id))
    last: dict[tuple[int, str, str, str], Decision] = {}
    for patron_id, purpose, topic, decision, evidence in session.execute(query):
        detail = (evidence or {}).get("source_detail", "")
        if detail.startswith("ils:"):
            last[(patron_id, purpose, topic, detail)] = Decision(decision)
    return last


def _in_force(session: Session, patron: Patron, purpose: str, topic: str, email: bool
              ) -> Decision | None:
    """The decision in force for the purpose's topic: the later of the topic's and the whole
    purpose's (an email decision is the address's)."""
    if email:
        rows = [session.get(AddressDecision, (patron.address_key, purpose, key))
                for key in {topic, WHOLE_PURPOSE}]
    else:
        rows = [session.get(PatronDecision, (patron.id, purpose, key))
                for key in {topic, WHOLE_PURPOSE}]
    found = [row for row in rows if row is not None]
    if not found:
        return None
    # the later wins; on a tie, the opt-out (the ledger's own rule)
    latest = max(found, key=lambda row: (row.occurred_at, row.decision == Decision.OPT_OUT.value))
    return Decision(latest.decision)

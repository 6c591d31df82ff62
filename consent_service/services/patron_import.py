"""Create or update patrons from the ILS's CSV export and link guardians; no decision changes."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import String, select, text, update
from sqlalchemy.orm import Session

from consent_service.domain.addresses import InvalidEmailError, normalize_email
from consent_service.domain.consent_map import ConsentRule, load_consent_map
from consent_service.domain.ils_formats import GENERIC_COLUMNS
from consent_service.models import GuardianLink, Patron
from consent_service.models.columns import new_guardian_link_id, new_public_id
from consent_service.services.bulk import insert_new_rows, insert_rows, one_of
from consent_service.services.context import ServiceContext
from consent_service.services.csv_input import CsvRow, ImportReport, row_of_values
from consent_service.services.guardians.consent_request import NewLink, request_consent_for_links
from consent_service.services.ils_import import check_rules, open_patron_file, record_ils_consents

COLUMNS = GENERIC_COLUMNS
TEXT_COLUMNS = ("first_name", "last_name", "street", "city", "state", "postal_code", "ils_id")
MULTILINE_COLUMNS = ("street",)  # a street address may hold two lines (`1 Main St` / `Apt 2`)
LANGUAGES = ("en", "es")
STATUSES = ("active", "inactive")
CHUNK = 500  # rows per query and per flush (well under every database's parameter limit)
ANALYZE_AFTER = 10_000  # patrons created by one import, after which PostgreSQL re-reads the table
ANALYZE_DURING = 4_000  # patrons created, after which (and at each doubling) it is re-read during

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MAX_LENGTH: dict[str, int] = {
    column.name: column.type.length
    for column in Patron.__table__.columns
    if isinstance(column.type, String) and column.type.length
}
_MAX_LENGTH["guardian_card_number"] = _MAX_LENGTH["card_number"]
_MAX_LENGTH["guardian_email"] = GuardianLink.__table__.c.guardian_email.type.length


@dataclass
class PatronImportReport(ImportReport):
    """Rows that created a patron, changed one, or found it already as the file says."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    decisions: int | None = None  # recorded through a consent map; None without one

    def counts(self) -> list[tuple[str, int]]:
        shown = [("created", self.created), ("updated", self.updated),
                 ("unchanged", self.unchanged)]
        if self.decisions is not None:
            shown.append(("decisions recorded", self.decisions))
        return shown


@dataclass
class _PatronRow:
    """A data row, parsed: the Patron attributes its columns give, its guardians, what is wrong."""

    line: int
    card: str
    fields: dict[str, Any]
    guardian_card: str | None
    guardian_email: str | None
    problems: list[str] = field(default_factory=list)


def import_patrons(session: Session, ctx: ServiceContext, path: Path, *, now: datetime,
                   skip_invalid: bool, allow_partial: bool = False,
                   on_row: Callable[[], None] | None = None, ils_format: str = "generic",
                   encoding: str | None = None, consent_map: Path | None = None,
                   consents_as_of: datetime | None = None) -> PatronImportReport:
    """Create or update patrons by card number from a CSV file, and link their guardians.

    The file is in our own columns (`generic`), or as an ILS exports it (`ils_format`: koha,
    evergreen, sierra, polaris, or auto to tell from the header; see `ils_import.read_patron_file`),
    read in any encoding and delimiter `open_table` reads. With a `consent_map`, the opt-ins the
    ILS keeps are recorded as decisions (`ils_import.record_ils_consents`, at `consents_as_of`,
    default `now`) after the patrons are written, in the same transaction.

    Every row is checked first, and every problem is reported with its line. Atomic by default: one
    bad row and nothing is written. With `skip_invalid`, the good rows are written and the bad ones
    listed. Either way the import commits once, at the end. Every value is text `clean_text` allows
    (a street may hold a line break); a control character or a bidi override rejects its row.

    The header is checked by `read_csv`: a column that looks like a misspelt known one refuses the
    file, and so does a header whose only known column is `card_number` (it would create patrons
    with no name, address or birth date, who count as adults), unless `allow_partial`.

    A column absent from the header leaves that field as it is; a column present but empty clears it
    (an empty email clears the address key too; an empty language or status means `en` / `active`).
    A changed email moves the patron to the new address's key: email decisions belong to addresses,
    so the old address keeps its own. The import never records or changes a consent decision.

    `guardian_card_number` links the child to that patron, who may be in the database or anywhere in
    the file; `guardian_email` links an address awaiting a patron record. Links are only ever added,
    never duplicated, and links missing from the file are kept. A row whose guardian exists only in
    this file, on a rejected row, is rejected too (with `skip_invalid`, the child is not imported
    without the guardian the file names). A row that creates a guardian link counts as updated.
    A row that changes nothing is `unchanged` and keeps its `updated_at`.

    The file is streamed: rows are read, checked and written a chunk at a time, set-based (see
    `_StreamedImport` and `_write_patrons`), so memory holds neither the file nor an object per
    patron, and the answer is the one checking the whole file at once gives. On PostgreSQL, the
    import ANALYZEs the patrons table as it grows, and an import that created 10,000 patrons or
    more runs ANALYZE again after committing, so the next one finds them by index.
    """
    report = PatronImportReport()
    rules = load_consent_map(consent_map) if consent_map is not None else ()
    check_rules(session, ctx, rules)
    run = _StreamedImport(session, ctx, now=now, skip_invalid=skip_invalid, rules=rules,
                          as_of=consents_as_of or now, file_name=path.name)
    tick = on_row or _no_progress
    try:
        with open_patron_file(session, path, format_name=ils_format, encoding=encoding,
                              allow_partial=allow_partial, rules=rules) as patron_file:
            batch: list[CsvRow] = []
            for row in patron_file.rows:
                batch.append(row)
                if len(batch) == CHUNK:
                    run.add(batch, patron_file.fields, tick)
                    batch = []
            run.add(batch, patron_file.fields, tick)
            run.finish()
    except BaseException:
        session.rollback()  # rows written before a line that is not CSV, say
        raise
    report.notes.extend(patron_file.notes)
    for line, problems in sorted(run.problems.items()):
        report.reject(line, problems)
    if report.problems and not skip_invalid:
        session.rollback()
        return report

    report.created = run.outcomes["created"]
    report.updated = run.outcomes["updated"]
    report.unchanged = run.outcomes["unchanged"]
    if rules:
        report.decisions = run.decisions
        for line, problems in sorted(run.consent_problems.items()):
            report.reject(line, problems)
        if run.consent_problems and not skip_invalid:
            session.rollback()
            return PatronImportReport(problems=report.problems, notes=report.notes)
    session.commit()
    if report.created >= ANALYZE_AFTER and session.get_bind().dialect.name == "postgresql":
        # Fresh statistics: a planner that still counts the table as small scans all of it for
        # each chunk of the next import (measured: 16 s instead of 4.5 s for 20,000 patrons).
        session.execute(text("ANALYZE patrons"))
        session.commit()
    return report


class _StreamedImport:
    """`import_patrons` a chunk of rows at a time, with the checks of `check_patron_rows` across
    the whole file, holding only each card's first line, the rejected lines and the rows that wait
    for a guardian further on in the file.

    A row is settled (good or rejected) once its guardian is: one in the database, or the first
    row of the guardian's card already settled (rejected: the child is rejected too). A row whose
    guardian is not settled yet waits for it; one whose guardian never appears in the file is
    rejected at the end, and rows waiting on each other (a loop of guardians, none rejected) are
    good. Good rows are written as they are settled, in the caller's transaction (`add` writes
    the chunk's, `finish` the rest); in an atomic import, nothing more is written once a row is
    rejected, and the caller rolls back."""

    def __init__(self, session: Session, ctx: ServiceContext, *, now: datetime,
                 skip_invalid: bool, rules: Sequence[ConsentRule], as_of: datetime,
                 file_name: str) -> None:
        self.session, self.ctx, self.now = session, ctx, now
        self.today = ctx.today(now)
        self.skip_invalid = skip_invalid
        self.rules, self.as_of, self.file_name = rules, as_of, file_name
        self.first_line: dict[str, int] = {}  # the first line of each card in the file
        self.rejected: set[int] = set()
        self.problems: dict[int, list[str]] = {}
        self.waiting: dict[str, list[_PatronRow]] = defaultdict(list)  # by guardian card
        self.unsettled: set[int] = set()  # the lines of the rows waiting
        self.unseen: dict[str, list[_PatronRow]] = defaultdict(list)  # rejected, guardian unseen
        self.ready: list[_PatronRow] = []  # settled good, not written yet
        self.outcomes: Counter[str] = Counter()
        self.decisions = 0
        self.consent_problems: dict[int, list[str]] = {}
        self.fields: dict[int, dict[str, str]] = {}  # the ILS fields of rows not written yet
        self.postgresql = session.get_bind().dialect.name == "postgresql"
        self.analyze_at = ANALYZE_DURING

    def add(self, rows: list[CsvRow], fields: dict[int, dict[str, str]],
            tick: Callable[[], None]) -> None:
        """Check a chunk of rows (in file order) and write those settled good. `fields` are
        the rows' ILS fields by line (for the consent map), filled as the file is read."""
        self.fields = fields
        named = {row.values.get(column, "") for row in rows
                 for column in ("card_number", "guardian_card_number")}
        stored = _stored_patrons(self.session, named - {""})
        parsed = [_parse(row, self.ctx, self.today, stored) for row in rows]
        for row in parsed:
            if row.card:
                first = self.first_line.setdefault(row.card, row.line)
                if first != row.line:
                    row.problems.append(f"card_number already appears on {FILE_LINES.row(first)}")
        for row in parsed:
            self._check_guardian(row, row.guardian_card in stored)
        self._write(stored, named)
        for _ in rows:
            tick()

    def finish(self) -> None:
        """Settle the rows still waiting, and write the good ones."""
        missing = ("guardian_card_number is no patron in the database or in this "
                   f"{FILE_LINES.container}")
        for guardian, rows in self.unseen.items():
            if guardian not in self.first_line:
                for row in rows:
                    row.problems.append(missing)
        for guardian in [card for card in self.waiting if card not in self.first_line]:
            for row in self.waiting.pop(guardian):
                self.unsettled.discard(row.line)
                row.problems.append(missing)
                self._settle(row)
        while self.waiting:  # rows waiting on each other: none of them is rejected
            _, rows = self.waiting.popitem()
            for row in rows:
                self.unsettled.discard(row.line)
                self._settle(row)
        self._write({}, set())

    def _check_guardian(self, row: _PatronRow, in_database: bool) -> None:
        guardian = row.guardian_card
        if guardian is None or guardian == row.card or in_database:
            self._settle(row)
            return
        line = self.first_line.get(guardian)
        if row.problems:
            if line is None:
                self.unseen[guardian].append(row)  # for the message, if it never appears
            self._settle(row)
        elif line is None or line > row.line or line in self.unsettled:
            self.unsettled.add(row.line)
            self.waiting[guardian].append(row)
        else:
            self._resolve(row, line)

    def _resolve(self, row: _PatronRow, guardian_line: int) -> None:
        if guardian_line in self.rejected:
            row.problems.append(f"guardian_card_number is the card of "
                                f"{FILE_LINES.row(guardian_line)}, which is rejected")
        self._settle(row)

    def _settle(self, row: _PatronRow) -> None:
        if row.problems:
            self.rejected.add(row.line)
            self.problems[row.line] = row.problems
        else:
            self.ready.append(row)
        if row.card and self.first_line.get(row.card) == row.line:
            for child in self.waiting.pop(row.card, []):
                self.unsettled.discard(child.line)
                self._resolve(child, row.line)

    def _write(self, stored: dict[str, _Stored], queried: Collection[str]) -> None:
        """Write the rows settled good; `stored` holds what the database had of the cards
        `queried` (nothing was written since), so only the other cards are looked up."""
        rows, self.ready = self.ready, []
        if self.problems and not self.skip_invalid:
            rows = []  # nothing is written: the caller rolls back
        named = {card for row in rows for card in (row.card, row.guardian_card) if card}
        stored = {card: stored[card] for card in named if card in stored}
        stored.update(_stored_patrons(self.session, named.difference(queried)))
        checked = CheckedPatronRows(rows, stored)
        self.outcomes.update(write_patron_rows(self.session, self.ctx, checked, now=self.now)
                             .values())
        if self.rules and rows:
            patrons = load_patrons_by_card(self.session, [row.card for row in rows])
            consents = record_ils_consents(
                self.session, self.ctx, self.rules,
                ((row.line, patrons[row.card], self.fields.get(row.line, {})) for row in rows),
                as_of=self.as_of, file_name=self.file_name, now=self.now)
            self.decisions += consents.recorded
            self.consent_problems.update(consents.problems)
        for line in [line for line in self.fields if line not in self.unsettled]:
            del self.fields[line]  # the ILS fields of rows settled
        if self.postgresql and self.outcomes["created"] >= self.analyze_at:
            # The planner, knowing only the table's size before the import, would scan the whole
            # table for each chunk's cards (measured: 403 s instead of ~30 s for 100,000 new
            # patrons). ANALYZE in the transaction counts its own rows; at each doubling, so a
            # few times per import.
            self.session.execute(text("ANALYZE patrons"))
            self.analyze_at *= 2


@dataclass(frozen=True)
class RowPlaces:
    """How problems name the rows' container and another row: a file's lines by default; the API
    names a batch's items."""

    container: str = "file"
    row_format: str = "line {}"

    def row(self, number: int) -> str:
        return self.row_format.format(number)


FILE_LINES = RowPlaces()


@dataclass
class CheckedPatronRows:
    """Rows parsed and checked against each other and the database; nothing written yet."""

    rows: list[_PatronRow]
    stored: dict[str, _Stored]

    def problems(self) -> dict[int, list[str]]:
        """Each rejected row's problems, by its line (or item number)."""
        return {row.line: row.problems for row in self.rows if row.problems}


def record_row(number: int, values: Mapping[str, str]) -> CsvRow:
    """A row that did not come from a file (the API's patron record), read as a CSV row is: each
    known column's value trimmed and checked by `clean_text` (see `read_csv`)."""
    return row_of_values(number, values.items(), COLUMNS, MULTILINE_COLUMNS)


def check_patron_rows(session: Session, ctx: ServiceContext, csv_rows: Sequence[CsvRow], *,
                      now: datetime, places: RowPlaces = FILE_LINES) -> CheckedPatronRows:
    """Parse and check rows as `import_patrons` does (every rule of its docstring but the header's),
    without writing anything: values, lengths, repeated cards, unknown or rejected guardians."""
    named = {row.values.get(column, "") for row in csv_rows
             for column in ("card_number", "guardian_card_number")}
    stored = _stored_patrons(session, named - {""})
    rows = [_parse(row, ctx, ctx.today(now), stored) for row in csv_rows]
    first_by_card = _reject_repeated_cards(rows, places)
    _reject_unknown_guardians(rows, first_by_card, stored, places)
    return CheckedPatronRows(rows, stored)


def write_patron_rows(session: Session, ctx: ServiceContext, checked: CheckedPatronRows, *,
                      now: datetime, on_row: Callable[[], None] | None = None) -> dict[str, str]:
    """Create or update the good rows' patrons and link their guardians, in the caller's
    transaction (flushed, not committed); each good row's outcome by card number: `created`,
    `updated` (a new guardian link counts) or `unchanged`. A guardian newly linked to a child who
    needs their consent is asked for it (the notice is queued)."""
    rows, stored = checked.rows, checked.stored
    outcomes = _write_patrons(session, rows, stored, now, on_row or _no_progress)
    new_links: list[NewLink] = []
    gained = _link_guardians(session, rows, stored, now, new_links)
    linked_only = [stored[card].id for card in gained if outcomes[card] == "unchanged"]
    request_consent_for_links(session, ctx, new_links, now=now)
    for start in range(0, len(linked_only), CHUNK):
        chunk = linked_only[start:start + CHUNK]
        session.execute(update(Patron).where(one_of(session, Patron.id, chunk))
                        .values(updated_at=now))
    for card in gained:
        outcomes[card] = "created" if outcomes[card] == "created" else "updated"
    return outcomes


def _no_progress() -> None:
    return None


@dataclass(frozen=True)
class _Stored:
    """What the import needs to know of a patron already in the database."""

    id: int
    email: str | None


def _stored_patrons(session: Session, cards: Collection[str]) -> dict[str, _Stored]:
    found: dict[str, _Stored] = {}
    query = select(Patron.card_number, Patron.id, Patron.email)
    for chunk in _chunks(cards):
        for card, patron_id, email in session.execute(
                query.where(one_of(session, Patron.card_number, chunk))):
            found[card] = _Stored(patron_id, email)
    return found


def _parse(row: CsvRow, ctx: ServiceContext, today: date, stored: dict[str, _Stored]
           ) -> _PatronRow:
    values = row.values
    problems = list(row.problems)
    for column, value in values.items():
        limit = _MAX_LENGTH.get(column)
        if limit is not None and len(value) > limit:
            problems.append(f"{column} is longer than {limit} characters")

    card = values.get("card_number", "")
    if not card and "card_number" not in row.refused:
        problems.append("card_number is empty")
    fields: dict[str, Any] = {column: values[column] for column in TEXT_COLUMNS if column in values}

    if "email" in values:
        fields["email"] = fields["address_key"] = None
        known = stored[card].email if card in stored else None
        try:
            email = _normalized(values["email"], known)
        except InvalidEmailError as exc:
            problems.append(f"email: {exc}")
        else:
            if email:
                fields["email"], fields["address_key"] = email, ctx.address_key(email)

    if "birth_date" in values:
        fields["birth_date"] = None
        if values["birth_date"]:
            birth_date = _parse_date(values["birth_date"])
            if birth_date is None:
                problems.append("birth_date is not a date written YYYY-MM-DD")
            elif birth_date > today:
                problems.append("birth_date is in the future")
            fields["birth_date"] = birth_date

    for column, allowed in (("preferred_language", LANGUAGES), ("status", STATUSES)):
        if column in values:
            value = values[column].lower() or allowed[0]
            if value not in allowed:
                problems.append(f"{column} {values[column]!r} is not one of: {', '.join(allowed)}")
            fields[column] = value

    guardian_card = values.get("guardian_card_number") or None
    if guardian_card is not None and guardian_card == card:
        problems.append("guardian_card_number is the patron's own card")
    guardian_email = None
    try:
        guardian_email = _normalized(values.get("guardian_email", ""), None)
    except InvalidEmailError as exc:
        problems.append(f"guardian_email: {exc}")
    return _PatronRow(row.line, card, fields, guardian_card, guardian_email, problems)


def _normalized(raw: str, stored: str | None) -> str | None:
    """The address in canonical form (None when empty). An ASCII address that is the stored one but
    for case was checked when it was stored: re-checking 100,000 unchanged addresses is most of
    the time a daily re-import would take."""
    if not raw:
        return None
    if stored is not None and raw.isascii() and raw.lower() == stored:
        return stored
    return normalize_email(raw)


def _parse_date(text: str) -> date | None:
    if not _ISO_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _reject_repeated_cards(rows: list[_PatronRow], places: RowPlaces) -> dict[str, _PatronRow]:
    """The first row of each card number; a later row with that card is a problem on its line."""
    first: dict[str, _PatronRow] = {}
    for row in rows:
        if not row.card:
            continue
        earlier = first.setdefault(row.card, row)
        if earlier is not row:
            row.problems.append(f"card_number already appears on {places.row(earlier.line)}")
    return first


def _chunks(items: Collection[str]) -> Iterator[list[str]]:
    ordered = sorted(items)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start:start + CHUNK]


def load_patrons_by_card(session: Session, cards: Collection[str]) -> dict[str, Patron]:
    """The patrons in the database with these card numbers, by card; one query per chunk."""
    found: dict[str, Patron] = {}
    for chunk in _chunks(cards):
        for patron in session.scalars(
                select(Patron).where(one_of(session, Patron.card_number, chunk))):
            found[patron.card_number] = patron
    return found


def _reject_unknown_guardians(rows: list[_PatronRow], first_by_card: dict[str, _PatronRow],
                              stored: dict[str, _Stored], places: RowPlaces) -> None:
    """A guardian card must be a patron in the database or a card in the file. When the guardian is
    only in the file and its row is rejected, the child's row is rejected too, down a chain of
    guardians if need be."""
    waiting: list[_PatronRow] = []
    for row in rows:
        guardian = row.guardian_card
        if guardian is None or guardian == row.card or guardian in stored:
            continue
        if guardian not in first_by_card:
            row.problems.append(
                f"guardian_card_number is no patron in the database or in this {places.container}")
        elif not row.problems:
            waiting.append(row)
    while True:
        newly_rejected = [row for row in waiting if first_by_card[row.guardian_card or ""].problems]
        if not newly_rejected:
            return
        for row in newly_rejected:
            line = first_by_card[row.guardian_card or ""].line
            row.problems.append(
                f"guardian_card_number is the card of {places.row(line)}, which is rejected")
        waiting = [row for row in waiting if not row.problems]


def _write_patrons(session: Session, rows: list[_PatronRow], stored: dict[str, _Stored],
                   now: datetime, tick: Callable[[], None]) -> dict[str, str]:
    """Create or update the good rows' patrons, a chunk of rows at a time; the outcome of each good
    row by card number. Patrons created are added to `stored`.

    Set-based: per chunk, one query reads the stored values of the columns the rows give, one
    executemany inserts the new patrons and one query reads their ids, and one executemany updates
    the changed ones by primary key; no ORM object is made per patron."""
    outcomes: dict[str, str] = {}
    for start in range(0, len(rows), CHUNK):
        chunk = [row for row in rows[start:start + CHUNK] if not row.problems]
        for _ in range(min(CHUNK, len(rows) - start) - len(chunk)):
            tick()
        current = _stored_fields(session, [row.card for row in chunk if row.card in stored],
                                 {name for row in chunk for name in row.fields})
        created: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for row in chunk:
            values = current.get(row.card)
            if values is None:
                created.append({**_NEW_PATRON, "card_number": row.card,
                                "public_id": new_public_id(), "created_at": now,
                                "updated_at": now, **row.fields})
                outcomes[row.card] = "created"
            else:
                changes = {name: value for name, value in row.fields.items()
                           if values[name] != value}
                if changes:
                    changed.append({"id": stored[row.card].id, **changes, "updated_at": now})
                outcomes[row.card] = "updated" if changes else "unchanged"
            tick()
        if created:
            for card, patron_id, email in _insert_patrons(session, created):
                stored[card] = _Stored(patron_id, email)
        for same_columns in _by_columns(changed):
            session.execute(update(Patron), same_columns)
    return outcomes


_PATRONS = Patron.__table__  # inserted with `insert_rows`: no ORM object per row

# What a patron created from a row holds in the columns the row does not give: the model's defaults.
_NEW_PATRON: dict[str, Any] = {
    column.name: (column.default.arg if column.default is not None and column.default.is_scalar
                  else None)
    for column in Patron.__table__.columns
    if column.name in (*TEXT_COLUMNS, "email", "address_key", "birth_date", "preferred_language",
                       "status")
}


def _insert_patrons(session: Session, rows: list[dict[str, Any]]) -> list[tuple[str, int, str | None]]:
    """Insert these patrons (`insert_rows`: COPY on PostgreSQL, an executemany on SQLite, where
    RETURNING would split it into statements of a few dozen rows); the card number, id and email
    of each, read back by card number. On PostgreSQL that read finds them by index because the
    import ANALYZEs the table as it grows (`_StreamedImport`)."""
    insert_rows(session, _PATRONS, rows)
    query = select(Patron.card_number, Patron.id, Patron.email)
    return [(card, patron_id, email) for card, patron_id, email in session.execute(
        query.where(one_of(session, Patron.card_number, [row["card_number"] for row in rows])))]


def _stored_fields(session: Session, cards: Collection[str], names: Collection[str]
                   ) -> dict[str, dict[str, Any]]:
    """The stored values of the columns `names`, of the patrons with these card numbers, by card."""
    columns = [Patron.__table__.c[name] for name in sorted(names)]
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(cards):
        query = select(Patron.card_number, *columns).where(
            one_of(session, Patron.card_number, chunk))
        for row in session.execute(query):
            found[row[0]] = dict(zip((column.name for column in columns), row[1:], strict=True))
    return found


def _by_columns(changes: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The updates grouped by the columns they set (one executemany per group)."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for change in changes:
        groups.setdefault(frozenset(change), []).append(change)
    return list(groups.values())


def _link_guardians(session: Session, rows: list[_PatronRow], stored: dict[str, _Stored],
                    now: datetime, created: list[NewLink]) -> list[str]:
    """Add the guardian links the good rows name and the database lacks (appended to `created`,
    as rows of their id, child, guardian and guardian email, in the order they were made); the
    children's cards that gained one. The links go in as table rows, a chunk at a time.

    PostgreSQL: one statement a chunk (`insert_new_rows`: ON CONFLICT DO NOTHING RETURNING),
    the links that exist being those the unique constraints refuse; measured, the lookup of the
    links that exist and the read-back of those made took 2 s of an import of 100,000 patrons.
    SQLite: the links that exist are looked up first, the others inserted (`insert_rows`) and
    read back by their public ids."""
    linking = [row for row in rows
               if not row.problems and (row.guardian_card or row.guardian_email)]
    postgresql = session.get_bind().dialect.name == "postgresql"
    by_patron: set[tuple[int, int]] = set()
    by_email: set[tuple[int, str]] = set()
    if not postgresql:
        child_ids = sorted({stored[row.card].id for row in linking})
        query = select(GuardianLink.child_id, GuardianLink.guardian_id,
                       GuardianLink.guardian_email)
        for start in range(0, len(child_ids), CHUNK):
            chunk = child_ids[start:start + CHUNK]
            for child_id, guardian_id, guardian_email in session.execute(
                    query.where(one_of(session, GuardianLink.child_id, chunk))):
                if guardian_id is not None:
                    by_patron.add((child_id, guardian_id))
                if guardian_email is not None:
                    by_email.add((child_id, guardian_email))

    made_by: list[tuple[str, list[str]]] = []  # each linking row's card, its links' public ids
    made: list[dict[str, Any]] = []
    for row in linking:
        child_id = stored[row.card].id
        ids: list[str] = []
        if row.guardian_card:
            guardian_id = stored[row.guardian_card].id
            if (child_id, guardian_id) not in by_patron:
                by_patron.add((child_id, guardian_id))
                ids.append(public_id := new_guardian_link_id())
                made.append({"public_id": public_id, "child_id": child_id,
                             "guardian_id": guardian_id, "guardian_email": None,
                             "created_at": now})
        if row.guardian_email and (child_id, row.guardian_email) not in by_email:
            by_email.add((child_id, row.guardian_email))
            ids.append(public_id := new_guardian_link_id())
            made.append({"public_id": public_id, "child_id": child_id,
                         "guardian_id": None, "guardian_email": row.guardian_email,
                         "created_at": now})
        if ids:
            made_by.append((row.card, ids))
    read_back = select(*[_LINKS.c[column] for column in _NEW_LINK])
    inserted: set[str] = set()
    for start in range(0, len(made), CHUNK):
        chunk = made[start:start + CHUNK]
        if postgresql:
            found = {link.public_id: link
                     for link in insert_new_rows(session, _LINKS, chunk, _NEW_LINK)}
        else:
            insert_rows(session, _LINKS, chunk)
            found = {link.public_id: link for link in session.execute(read_back.where(
                one_of(session, GuardianLink.public_id, [link["public_id"] for link in chunk])))}
        created.extend(found[link["public_id"]] for link in chunk if link["public_id"] in found)
        inserted.update(found)
    return [card for card, ids in made_by if any(public_id in inserted for public_id in ids)]


_LINKS = GuardianLink.__table__  # inserted as table rows: no ORM object per link
_NEW_LINK = ("public_id", "id", "child_id", "guardian_id", "guardian_email")  # a NewLink's columns

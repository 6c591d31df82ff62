"""The API's patron use cases: upsert records by the import's rules, decisions in force, eligibility."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.text import unsafe_character
from consent_service.models import AddressDecision, ConsentEvent, Patron, PatronDecision
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import checked_topic
from consent_service.services.patron_import import (
    COLUMNS,
    RowPlaces,
    check_patron_rows,
    load_patrons_by_card,
    record_row,
    write_patron_rows,
)
from consent_service.services.patrons import PatronNotFoundError, find_by_card
from consent_service.services.standing import PatronLike, load_standing

BATCH_ITEMS = RowPlaces(container="batch", row_format="patrons[{}]")
ONE_RECORD = RowPlaces(container="request", row_format="record {}")
GENERAL = "_schema"  # marshmallow's key for a problem that is not one field's


class PatronRecordsError(ConsentServiceError):
    """Patron records the import's rules refuse; nothing was written. `problems` maps each refused
    record's index to its problems by field."""

    def __init__(self, problems: dict[int, dict[str, list[str]]]) -> None:
        super().__init__("the patron records were refused; see errors")
        self.problems = problems


@dataclass(frozen=True)
class UpsertedPatron:
    """One record's outcome: `created`, `updated` or `unchanged`."""

    card_number: str
    patron_id: str
    outcome: str


@dataclass(frozen=True)
class DecisionInForce:
    """A decision in force for a patron: on their record, or on their email address (`scope`)."""

    scope: str
    purpose: str
    topic: str | None
    decision: str
    actor: str
    source: str
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class PatronDecisions:
    patron_id: str
    decisions: list[DecisionInForce]


@dataclass(frozen=True)
class Eligibility:
    """The eligibility function's answer for one patron, purpose and topic."""

    patron_id: str
    purpose: str
    topic: str | None
    allowed: bool
    reason: str | None


def upsert_patrons(session: Session, ctx: ServiceContext,
                   records: Sequence[Mapping[str, str | None]], *, now: datetime,
                   batch: bool = True) -> list[UpsertedPatron]:
    """Create or update patrons by card number, in the caller's transaction (flushed, not
    committed), by exactly the rules of the CSV import (`import_patrons`): a field left out keeps
    its value, an empty (or null) one clears it; text goes through `clean_text`, addresses through
    `normalize_email`; the guardian links are added and a needed consent request is emailed.

    All or nothing: when any record is refused, nothing is written.

    :raise PatronRecordsError: with every refused record's problems, by index (from 0) and field.
    """
    rows = [record_row(index, {name: value or "" for name, value in record.items()})
            for index, record in enumerate(records)]
    checked = check_patron_rows(session, ctx, rows, now=now,
                                places=BATCH_ITEMS if batch else ONE_RECORD)
    problems = checked.problems()
    if problems:
        raise PatronRecordsError({index: _by_field(found) for index, found in problems.items()})
    outcomes = write_patron_rows(session, ctx, checked, now=now)
    patrons = load_patrons_by_card(session, list(outcomes))
    return [UpsertedPatron(card, patrons[card].public_id, outcomes[card])
            for card in (row.card for row in checked.rows)]


def _by_field(problems: list[str]) -> dict[str, list[str]]:
    """Problems keyed by the field each names first (every import problem starts with one)."""
    fields: dict[str, list[str]] = {}
    for problem in problems:
        head = problem.split(" ", 1)[0].rstrip(":")
        fields.setdefault(head if head in COLUMNS else GENERAL, []).append(problem)
    return fields


def find_patron(session: Session, *, card_number: str | None = None,
                patron_id: str | None = None) -> Patron:
    """The patron with this card number, or else with this opaque public id. An identifier holding
    a character no stored text may hold names nobody (and is never sent to the database, which
    may refuse it: PostgreSQL refuses NUL).

    :raise PatronNotFoundError: no such patron.
    """
    _refuse_unsafe(card_number, patron_id)
    if card_number is not None:
        return find_by_card(session, card_number)
    patron = session.scalar(select(Patron).where(Patron.public_id == (patron_id or "").strip()))
    if patron is None:
        raise PatronNotFoundError(f"no patron with id {patron_id!r}")
    return patron


def find_patron_row(session: Session, *, card_number: str | None = None,
                    patron_id: str | None = None) -> Any:
    """As `find_patron`, the columns eligibility reads (and the public id) rather than an ORM
    object: one prepared statement, read on the session's connection (the eligibility API asks
    this for every request).

    :raise PatronNotFoundError: no such patron.
    """
    _refuse_unsafe(card_number, patron_id)
    by_card = card_number is not None
    row = session.connection().execute(_patron_row(by_card),
                                       {"wanted": (card_number if by_card else patron_id or "")
                                        .strip()}).first()
    if row is None:
        raise PatronNotFoundError(f"no patron with card number {card_number.strip()!r}"
                                  if card_number is not None else f"no patron with id {patron_id!r}")
    return row


def _refuse_unsafe(card_number: str | None, patron_id: str | None) -> None:
    """An identifier holding a character no stored text may hold names nobody, and is never sent
    to the database (which may refuse it: PostgreSQL refuses NUL).

    :raise PatronNotFoundError: for such an identifier.
    """
    wanted = card_number if card_number is not None else patron_id or ""
    if unsafe_character(wanted) is not None:
        what = "card number" if card_number is not None else "id"
        raise PatronNotFoundError(f"no patron with {what} {wanted!r}")


@functools.cache
def _patron_row(by_card: bool) -> Select[Any]:
    """The statement of `find_patron_row`, built once per way of naming the patron."""
    return select(Patron.id, Patron.public_id, Patron.status, Patron.birth_date, Patron.email,
                  Patron.address_key, Patron.street, Patron.city, Patron.postal_code).where(
        (Patron.card_number if by_card else Patron.public_id) == bindparam("wanted"))


class _PatronWithId(PatronLike, Protocol):
    public_id: str


def decisions_in_force(session: Session, patron: Patron) -> PatronDecisions:
    """The decisions in force for a patron with the source and times of the event behind each:
    those on the patron's record, then the email decisions on their address, whoever made them."""
    decisions = [
        _in_force("patron", row, event) for row, event in session.execute(
            select(PatronDecision, ConsentEvent).join(
                ConsentEvent, ConsentEvent.id == PatronDecision.event_id)
            .where(PatronDecision.patron_id == patron.id)
            .order_by(PatronDecision.purpose, PatronDecision.topic))
    ]
    if patron.address_key:
        decisions += [
            _in_force("address", row, event) for row, event in session.execute(
                select(AddressDecision, ConsentEvent).join(
                    ConsentEvent, ConsentEvent.id == AddressDecision.event_id)
                .where(AddressDecision.address_key == patron.address_key)
                .order_by(AddressDecision.purpose, AddressDecision.topic))
        ]
    return PatronDecisions(patron.public_id, decisions)


def _in_force(scope: str, row: PatronDecision | AddressDecision, event: ConsentEvent
              ) -> DecisionInForce:
    return DecisionInForce(scope, row.purpose, row.topic or None, row.decision, row.actor,
                           event.source, row.occurred_at, event.recorded_at)


def eligibility(session: Session, ctx: ServiceContext, patron: _PatronWithId, *, purpose: str,
                topic: str | None, now: datetime) -> Eligibility:
    """May the library contact or use this patron (an ORM Patron, or `find_patron_row`'s row) for
    `purpose` (and `topic`) today? The one eligibility function, on the library's date.

    :raise UnknownPurposeError: a purpose not in the catalog.
    :raise UnknownTopicError: a topic the purpose cannot have, or one not configured.
    """
    chosen = ctx.catalog.get(purpose)
    topic_key = checked_topic(session, chosen.key, chosen.has_topics, topic,
                              known=ctx.known_topics) or None
    standing = load_standing(session, patron, [chosen.key])
    verdict = standing.verdict(chosen, topic_key, ctx.today(now))
    return Eligibility(patron.public_id, chosen.key, topic_key, verdict.allowed,
                       verdict.reason.value if verdict.reason else None)

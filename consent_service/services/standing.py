"""Load what eligibility needs for a batch of patrons, and ask the one eligibility function."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, CompoundSelect, bindparam, literal, null, select, union_all
from sqlalchemy.orm import Session

from consent_service.domain.eligibility import AddressStatus, PatronFacts, Verdict, evaluate
from consent_service.domain.ledger import Actor, Decision, Key, Ruling
from consent_service.domain.purposes import Purpose
from consent_service.models import (
    AddressDecision,
    AddressSuppression,
    PatronDecision,
    UndeliverableAddress,
)

_T = TypeVar("_T")


class PatronLike(Protocol):
    """The columns of a patron that eligibility reads (an ORM Patron or a result row)."""

    id: int
    status: str
    birth_date: date | None
    email: str | None
    address_key: str | None
    street: str
    city: str
    postal_code: str


@dataclass(frozen=True)
class Standing:
    """Everything the eligibility function needs to know about one patron."""

    facts: PatronFacts
    patron_state: dict[Key, Ruling]
    address_state: dict[Key, Ruling]
    address: AddressStatus

    def verdict(self, purpose: Purpose, topic: str | None, today: date) -> Verdict:
        return evaluate(purpose, topic, self.facts, self.patron_state, self.address_state,
                        self.address, today)


_DECISIONS = {decision.value: decision for decision in Decision}
_ACTORS = {actor.value: actor for actor in Actor}


def ruling_from_columns(decision: str, occurred_at: Any, actor: str, event_id: int) -> Ruling:
    """A projection row's ruling, from its columns (as every reader here makes it)."""
    return Ruling(_DECISIONS[decision], occurred_at, _ACTORS[actor], str(event_id))


def _ruling_columns(table: type[PatronDecision] | type[AddressDecision]) -> tuple[Any, ...]:
    return (table.purpose, table.topic, table.decision, table.occurred_at, table.actor,
            table.event_id)


def _padded(values: list[_T]) -> list[_T]:
    """The values, with the last repeated up to a power-of-two length. Each length of an `IN` list is
    a different SQL statement, and SQLite keeps every statement it has prepared (up to 128 per
    connection): padding keeps a long export to a dozen statements, so its memory stays flat."""
    if not values:
        return values
    size = 1 << (len(values) - 1).bit_length()
    return values + [values[-1]] * (size - len(values))


@dataclass(frozen=True)
class BatchDecisions:
    """The decisions and address statuses of a batch of patrons, as eligibility reads them: each
    patron's own decisions by patron id, each address's by address key, and the address keys
    suppressed (a spam report not lifted) or undeliverable."""

    own: dict[int, dict[Key, Ruling]]
    by_address: dict[str, dict[Key, Ruling]]
    suppressed: set[str]
    undeliverable: set[str]

    def address_status(self, address_key: str) -> AddressStatus:
        return _STATUSES[(address_key in self.suppressed, address_key in self.undeliverable)]


_STATUSES = {(suppressed, undeliverable): AddressStatus(suppressed, undeliverable)
             for suppressed in (False, True) for undeliverable in (False, True)}


def patron_facts(status: str, birth_date: date | None, email: str | None, street: str | None,
                 city: str | None, postal_code: str | None) -> PatronFacts:
    """What eligibility knows of a patron record, from its columns."""
    return PatronFacts(active=status == "active", birth_date=birth_date, has_email=bool(email),
                       has_postal_address=bool(street and city and postal_code))


Criterion = Callable[[Any], ColumnElement[bool]]  # a column of patron ids or address keys -> WHERE


def among(values: Collection[Any]) -> Criterion:
    """Rows whose patron id (or address key) is one of `values` (padded: see `_padded`)."""
    padded = _padded(sorted(values))
    return lambda column: column.in_(padded)


def within(first: Any, last: Any) -> Criterion:
    """Rows whose patron id (or address key) is between `first` and `last`, both included: a
    range of the index instead of thousands of bound values, for a batch read in that order."""
    return lambda column: column.between(first, last)


def load_decisions(session: Session, patrons: Criterion, addresses: Criterion | None,
                   purposes: Collection[str] | None = None) -> BatchDecisions:
    """The decisions of the patrons and addresses the criteria select (`among` these ids and keys,
    or `within` a range of them; no addresses: None), and the addresses' statuses, in four
    queries whatever the batch size (keep batches to a few thousand). Decisions of patrons or
    addresses outside the batch may come too and change nothing. `purposes` limits the decisions
    loaded to those purposes. Columns are read, not ORM objects: an export reads the decisions
    of a million patrons this way."""
    own: dict[int, dict[Key, Ruling]] = defaultdict(dict)
    query = select(PatronDecision.patron_id, *_ruling_columns(PatronDecision)).where(
        patrons(PatronDecision.patron_id))
    if purposes is not None:
        query = query.where(PatronDecision.purpose.in_(purposes))
    for patron_id, purpose, topic, decision, occurred_at, actor, event_id in session.execute(query):
        own[patron_id][(purpose, topic)] = Ruling(_DECISIONS[decision], occurred_at,
                                                  _ACTORS[actor], str(event_id))

    by_address: dict[str, dict[Key, Ruling]] = defaultdict(dict)
    suppressed: set[str] = set()
    undeliverable: set[str] = set()
    if addresses is not None:
        query = select(AddressDecision.address_key, *_ruling_columns(AddressDecision)).where(
            addresses(AddressDecision.address_key))
        if purposes is not None:
            query = query.where(AddressDecision.purpose.in_(purposes))
        for key, purpose, topic, decision, occurred_at, actor, event_id in session.execute(query):
            by_address[key][(purpose, topic)] = Ruling(_DECISIONS[decision], occurred_at,
                                                       _ACTORS[actor], str(event_id))
        suppressed = set(session.scalars(
            select(AddressSuppression.address_key).where(
                addresses(AddressSuppression.address_key), AddressSuppression.lifted_at.is_(None))
        ))
        undeliverable = set(session.scalars(
            select(UndeliverableAddress.address_key).where(
                addresses(UndeliverableAddress.address_key))
        ))
    return BatchDecisions(dict(own), dict(by_address), suppressed, undeliverable)


def load_standings(session: Session, patrons: Iterable[PatronLike],
                   purposes: Collection[str] | None = None) -> dict[int, Standing]:
    """The standing of each patron, by patron id, in four queries whatever the batch size (keep
    batches to a few thousand). `purposes` limits the decisions loaded to those purposes."""
    patrons = list(patrons)
    keys = {p.address_key for p in patrons if p.address_key}
    found = load_decisions(session, among({p.id for p in patrons}),
                           among(keys) if keys else None, purposes)
    standings: dict[int, Standing] = {}
    for p in patrons:
        key = p.address_key or ""
        standings[p.id] = Standing(
            patron_facts(p.status, p.birth_date, p.email, p.street, p.city, p.postal_code),
            found.own.get(p.id, {}),
            found.by_address.get(key, {}),
            found.address_status(key),
        )
    return standings


def load_standing(session: Session, patron: PatronLike,
                  purposes: Collection[str] | None = None) -> Standing:
    """The standing of one patron, as `load_standings` gives it, in one statement (a page or an
    API answer about one patron: its decisions, its address's, and the address's suppression and
    undeliverable mark, read together). The statement is built once and run on the session's
    connection (after a flush, as the session's autoflush would), which skips the ORM's handling
    of a statement that loads no ORM object."""
    own: dict[Key, Ruling] = {}
    by_address: dict[Key, Ruling] = {}
    suppressed = undeliverable = False
    parameters: dict[str, object] = {"patron_id": patron.id, "address_key": patron.address_key}
    if purposes is not None:
        parameters["purposes"] = sorted(purposes)
    if session.autoflush:
        session.flush()
    for kind, purpose, topic, decision, actor, occurred_at, event_id in session.connection().execute(
            _one_standing(purposes is not None), parameters):
        if kind == "p" or kind == "a":
            ruling = Ruling(_DECISIONS[decision], occurred_at, _ACTORS[actor], str(event_id))
            (own if kind == "p" else by_address)[(purpose, topic)] = ruling
        elif kind == "s":
            suppressed = True
        else:
            undeliverable = True
    return Standing(patron_facts(patron.status, patron.birth_date, patron.email, patron.street,
                                 patron.city, patron.postal_code),
                    own, by_address, _STATUSES[(suppressed, undeliverable)])


@functools.cache
def _one_standing(by_purpose: bool) -> CompoundSelect:
    """The statement of `load_standing`, built once: rows of (kind, purpose, topic, decision,
    actor, occurred_at, event_id), kind `p` a patron decision, `a` an address decision, `s` a
    suppression in force, `u` an undeliverable mark."""
    patron_id, address = bindparam("patron_id"), bindparam("address_key")
    decisions = []
    for kind, table, subject in (("p", PatronDecision, PatronDecision.patron_id == patron_id),
                                 ("a", AddressDecision, AddressDecision.address_key == address)):
        query = select(literal(kind).label("kind"), table.purpose, table.topic, table.decision,
                       table.actor, table.occurred_at, table.event_id).where(subject)
        if by_purpose:
            query = query.where(table.purpose.in_(bindparam("purposes", expanding=True)))
        decisions.append(query)
    blank = (literal(""), literal(""), literal(""), literal(""), null(), null())
    return union_all(
        *decisions,
        select(literal("s"), *blank).where(AddressSuppression.address_key == address,
                                           AddressSuppression.lifted_at.is_(None)),
        select(literal("u"), *blank).where(UndeliverableAddress.address_key == address),
    )

"""Load what eligibility needs for a batch of patrons, and ask the one eligibility function."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Protocol, TypeVar

from sqlalchemy import CompoundSelect, bindparam, literal, null, select, union_all
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


def _ruling(row: PatronDecision | AddressDecision) -> Ruling:
    return Ruling(Decision(row.decision), row.occurred_at, Actor(row.actor), str(row.event_id))


def _padded(values: list[_T]) -> list[_T]:
    """The values, with the last repeated up to a power-of-two length. Each length of an `IN` list is
    a different SQL statement, and SQLite keeps every statement it has prepared (up to 128 per
    connection): padding keeps a long export to a dozen statements, so its memory stays flat."""
    if not values:
        return values
    size = 1 << (len(values) - 1).bit_length()
    return values + [values[-1]] * (size - len(values))


def load_standings(session: Session, patrons: Iterable[PatronLike],
                   purposes: Collection[str] | None = None) -> dict[int, Standing]:
    """The standing of each patron, by patron id, in four queries whatever the batch size (keep
    batches to a few thousand). `purposes` limits the decisions loaded to those purposes."""
    patrons = list(patrons)
    ids = _padded([p.id for p in patrons])
    keys = _padded(sorted({p.address_key for p in patrons if p.address_key}))

    own: dict[int, dict[Key, Ruling]] = defaultdict(dict)
    query = select(PatronDecision).where(PatronDecision.patron_id.in_(ids))
    if purposes is not None:
        query = query.where(PatronDecision.purpose.in_(purposes))
    for row in session.scalars(query):
        own[row.patron_id][(row.purpose, row.topic)] = _ruling(row)

    by_address: dict[str, dict[Key, Ruling]] = defaultdict(dict)
    suppressed: set[str] = set()
    undeliverable: set[str] = set()
    if keys:
        query = select(AddressDecision).where(AddressDecision.address_key.in_(keys))
        if purposes is not None:
            query = query.where(AddressDecision.purpose.in_(purposes))
        for row in session.scalars(query):
            by_address[row.address_key][(row.purpose, row.topic)] = _ruling(row)
        suppressed = set(session.scalars(
            select(AddressSuppression.address_key).where(
                AddressSuppression.address_key.in_(keys), AddressSuppression.lifted_at.is_(None))
        ))
        undeliverable = set(session.scalars(
            select(UndeliverableAddress.address_key).where(UndeliverableAddress.address_key.in_(keys))
        ))

    standings: dict[int, Standing] = {}
    for p in patrons:
        key = p.address_key or ""
        standings[p.id] = _standing(p, own.get(p.id, {}), by_address.get(key, {}),
                                    suppressed=key in suppressed,
                                    undeliverable=key in undeliverable)
    return standings


def load_standing(session: Session, patron: PatronLike,
                  purposes: Collection[str] | None = None) -> Standing:
    """The standing of one patron, as `load_standings` gives it, in one statement (a page or an
    API answer about one patron: its decisions, its address's, and the address's suppression and
    undeliverable mark, read together)."""
    own: dict[Key, Ruling] = {}
    by_address: dict[Key, Ruling] = {}
    suppressed = undeliverable = False
    parameters: dict[str, object] = {"patron_id": patron.id, "address_key": patron.address_key}
    if purposes is not None:
        parameters["purposes"] = sorted(purposes)
    for kind, purpose, topic, decision, actor, occurred_at, event_id in session.execute(
            _one_standing(purposes is not None), parameters):
        if kind == "p" or kind == "a":
            ruling = Ruling(Decision(decision), occurred_at, Actor(actor), str(event_id))
            (own if kind == "p" else by_address)[(purpose, topic)] = ruling
        elif kind == "s":
            suppressed = True
        else:
            undeliverable = True
    return _standing(patron, own, by_address, suppressed=suppressed, undeliverable=undeliverable)


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


def _standing(p: PatronLike, own: dict[Key, Ruling], by_address: dict[Key, Ruling], *,
              suppressed: bool, undeliverable: bool) -> Standing:
    facts = PatronFacts(
        active=p.status == "active",
        birth_date=p.birth_date,
        has_email=bool(p.email),
        has_postal_address=bool(p.street and p.city and p.postal_code),
    )
    return Standing(facts, own, by_address,
                    AddressStatus(suppressed=suppressed, undeliverable=undeliverable))

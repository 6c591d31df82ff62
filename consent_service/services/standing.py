"""Load what eligibility needs for a batch of patrons, and ask the one eligibility function."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    bindparam,
    case,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from consent_service.domain.eligibility import (
    AddressStatus,
    PatronFacts,
    Reason,
    Verdict,
    born_after,
    evaluate,
)
from consent_service.domain.ledger import WHOLE_PURPOSE, Actor, Decision, Key, Ruling
from consent_service.domain.purposes import Basis, Channel, Purpose
from consent_service.models import (
    AddressDecision,
    AddressSuppression,
    Patron,
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


def load_decisions(session: Session, patrons: Criterion, addresses: Criterion | None,
                   purposes: Collection[str] | None = None) -> BatchDecisions:
    """The decisions of the patrons and addresses the criteria select (`among` these ids and
    keys; no addresses: None), and the addresses' statuses, in four
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


# each actor's place in `Ruling.precedence`, for comparing decisions in SQL
_ACTOR_RANKS = {actor.value: Ruling(Decision.OPT_IN, datetime.min.replace(tzinfo=UTC), actor).precedence()[2]
                for actor in Actor}


@dataclass(frozen=True)
class _InForce:
    """The decision in force for the export's purpose and topic, as SQL columns: what it says,
    who made it and its event (all NULL when nobody decided)."""

    decision: ColumnElement[Any]
    actor: ColumnElement[Any]
    event_id: ColumnElement[Any]


def _in_force(table: type[PatronDecision] | type[AddressDecision], subject: ColumnElement[Any],
              purpose: str, topic: str | None) -> tuple[list[tuple[Any, ColumnElement[bool]]], _InForce]:
    """`resolve` in SQL: the outer joins that bring the whole purpose's decision (and the topic's),
    and the columns of the one in force. The topic's wins only when its precedence (`Ruling.
    precedence`: later, then an opt-out, then the actor's rank) is strictly higher; nobody's
    decision is NULL."""
    name = "patron_id" if table is PatronDecision else "address_key"
    whole = aliased(table)
    joins = [(whole, and_(getattr(whole, name) == subject, whole.purpose == purpose,
                          whole.topic == WHOLE_PURPOSE))]
    if not topic:
        return joins, _InForce(whole.decision, whole.actor, whole.event_id)
    specific = aliased(table)
    joins.append((specific, and_(getattr(specific, name) == subject, specific.purpose == purpose,
                                 specific.topic == topic)))

    def later(a: Any, b: Any) -> ColumnElement[bool]:
        opt_out = (case((a.decision == Decision.OPT_OUT.value, 1), else_=0),
                   case((b.decision == Decision.OPT_OUT.value, 1), else_=0))
        rank = (case(_ACTOR_RANKS, value=a.actor, else_=-1),
                case(_ACTOR_RANKS, value=b.actor, else_=-1))
        return or_(a.occurred_at > b.occurred_at,
                   and_(a.occurred_at == b.occurred_at,
                        or_(opt_out[0] > opt_out[1],
                            and_(opt_out[0] == opt_out[1], rank[0] > rank[1]))))

    topic_wins = and_(specific.decision.is_not(None),
                      or_(whole.decision.is_(None), later(specific, whole)))
    return joins, _InForce(*(case((topic_wins, getattr(specific, column)),
                                  else_=getattr(whole, column))
                             for column in ("decision", "actor", "event_id")))


def verdict_query(purpose: Purpose, topic: str | None, today: date,
                  columns: Sequence[ColumnElement[Any]]) -> Select[Any]:
    """`evaluate` for every patron, in one statement: `columns` of each patron, then the reason
    they are left out (NULL: eligible) and the event of the decision in force that the verdict
    read (the address's for email, the patron's otherwise; NULL when nobody decided). The caller
    adds the order, range and limit. Equal to asking `evaluate` with `load_standings` about each
    patron alone (tests/integration/test_verdict_query.py), except that for an email purpose a
    patron with no address key counts as having no email: without the key their address's
    decisions cannot be found (an export's rule).

    The checks are `evaluate`'s, in its order, as one CASE: inactive; the channel (email present
    and its address deliverable and not suppressed; a complete postal address); an opt-out in
    force; under the purpose's age (`born_after`), the patron's own opt-out or else a guardian's
    opt-in on their record; an opt-in for an opt-in purpose. Decisions are read from the
    projections (`patron_decisions`, `address_decisions`) by their primary keys."""
    by_email = purpose.channel is Channel.EMAIL
    joins, own = _in_force(PatronDecision, Patron.id, purpose.key, topic)
    in_force = own
    checks: list[tuple[ColumnElement[bool], Any]] = [
        (Patron.status != "active", Reason.INACTIVE.value)]
    if by_email:
        address_joins, in_force = _in_force(AddressDecision, Patron.address_key,
                                            purpose.key, topic)
        joins += address_joins
        suppressed, undeliverable = aliased(AddressSuppression), aliased(UndeliverableAddress)
        joins += [(suppressed, and_(suppressed.address_key == Patron.address_key,
                                    suppressed.lifted_at.is_(None))),
                  (undeliverable, undeliverable.address_key == Patron.address_key)]
        checks += [
            (or_(Patron.email.is_(None), Patron.email == "", Patron.address_key.is_(None)),
             Reason.NO_EMAIL.value),
            (undeliverable.address_key.is_not(None), Reason.ADDRESS_UNDELIVERABLE.value),
            (suppressed.address_key.is_not(None), Reason.ADDRESS_SUPPRESSED.value),
        ]
    elif purpose.channel is Channel.POSTAL:
        checks.append((or_(*(or_(column.is_(None), column == "")
                             for column in (Patron.street, Patron.city, Patron.postal_code))),
                       Reason.NO_POSTAL_ADDRESS.value))
    checks.append((in_force.decision == Decision.OPT_OUT.value, Reason.OPTED_OUT.value))
    child = and_(Patron.birth_date.is_not(None),
                 Patron.birth_date > born_after(purpose.guardian_opt_in_under, today))
    checks += [
        (and_(child, own.decision == Decision.OPT_OUT.value), Reason.OPTED_OUT.value),
        (and_(child, or_(own.actor.is_(None), own.actor != Actor.GUARDIAN.value)),
         Reason.GUARDIAN_CONSENT_REQUIRED.value),
        (child, null()),
    ]
    if purpose.basis is Basis.OPT_IN:
        checks.append((or_(in_force.decision.is_(None),
                           in_force.decision != Decision.OPT_IN.value),
                       Reason.NOT_OPTED_IN.value))
    query = select(*columns, case(*checks, else_=null()).label("reason"),
                   in_force.event_id.label("decision_event_id")).select_from(Patron)
    for table, on in joins:
        query = query.outerjoin(table, on)
    return query

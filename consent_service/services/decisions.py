"""Record a consent decision: the one path by which every entry point changes what is in force."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Table, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import (
    WHOLE_PURPOSE,
    Actor,
    Decision,
    InvalidEventError,
    Ruling,
    Source,
    counts,
    require_aware,
)
from consent_service.domain.purposes import Channel
from consent_service.models import (
    AddressDecision,
    AddressSuppression,
    ConsentEvent,
    Patron,
    PatronDecision,
    PolicyVersion,
    SuppressionSyncJob,
    Topic,
)
from consent_service.services.context import ServiceContext
from consent_service.services.ledger_chain import chain_new_events
from consent_service.services.write_turn import begin_writing

CLOCK_SKEW = timedelta(minutes=5)


class UnknownTopicError(ConsentServiceError):
    """A topic that is not configured, or a topic given for a purpose that has none."""


@dataclass(frozen=True)
class DecisionRequest:
    """A decision to record. An email decision needs a patron with an email address, or `email` (an
    address we may not know a patron for, e.g. from SendGrid); `email` wins over the patron's."""

    purpose: str
    decision: Decision
    source: Source
    actor: Actor
    occurred_at: datetime
    topic: str | None = None
    patron: Patron | None = None
    email: str | None = None
    actor_ref: str | None = None
    evidence: Mapping[str, str] = field(default_factory=dict)
    sg_event_id: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What recording did: the event written (None for a duplicate) and which states it changed."""

    event: ConsentEvent | None
    patron_changed: bool = False
    address_changed: bool = False

    @property
    def written(self) -> bool:
        return self.event is not None


NOTHING = Recorded(None)


def record_decision(session: Session, ctx: ServiceContext, request: DecisionRequest, *,
                    now: datetime) -> Recorded:
    """Append the event and bring the projections up to date, in the caller's transaction (the caller
    commits).

    Rules: the decision with the latest `occurred_at` is in force, so a late event is recorded but
    never overturns a newer one; an email decision is the address's, so it is in force for every patron
    at that address, now or later; under 13, only a guardian's opt-in takes effect (the attempt is still
    recorded, marked not effective). A decision equal to the one in force and not newer than it writes
    nothing, nor does a repeated SendGrid event id. A newer repeat of the decision in force is recorded,
    because it moves the decision's time forward: a late, older opposite decision must not overturn what
    the person said last.
    """
    return record_decisions(session, ctx, [request], now=now)[0]


@dataclass
class _Pending:
    """A checked request on its way to the ledger."""

    request: DecisionRequest
    purpose: str
    topic: str
    occurred_at: datetime
    patron: Patron | None
    email: str | None
    address: str | None


def record_decisions(session: Session, ctx: ServiceContext, requests: Sequence[DecisionRequest], *,
                     now: datetime) -> list[Recorded]:
    """Record many decisions in the caller's transaction (the caller commits), with the outcome of
    `record_decision` for each in turn: each sees the ones before it, by every rule of
    `record_decision`. Returns one Recorded per request, in order.

    Set-based: every request is checked before anything is written (a bad one raises, and nothing
    is written); the turns (PostgreSQL) are taken in one statement, in key order; the SendGrid event
    ids, the projections, the suppressions and the policy versions are read once per call; the rules
    run in memory, request by request; then the events are chained and inserted together, and the
    projections upserted, as table rows (one executemany each, not the ORM's unit of work); the
    events returned are the session's own, as if loaded.
    """
    pending = _checked_requests(session, ctx, requests, now)
    _take_turns(session, pending)
    recorded_ids = _recorded_sg_event_ids(session, pending)
    patron_rows = _patron_rows(session, pending)
    address_rows = _address_rows(session, pending)
    policies = _policy_versions(session)

    results: list[Recorded] = [NOTHING] * len(pending)
    # What each request's rules see: the ruling in force per projection key, and the event that
    # put it there (None: the stored row's own).
    patron_state: dict[tuple[int, str, str], tuple[Ruling, ConsentEvent | None]] = {
        key: (ruling, None) for key, ruling in patron_rows.items()}
    address_state: dict[tuple[str, str, str], tuple[Ruling, ConsentEvent | None]] = {
        key: (ruling, None) for key, ruling in address_rows.items()}
    twins: set[tuple[int | None, str, str, str, str, datetime]] = set()
    events: list[ConsentEvent] = []
    written: list[tuple[int, _Pending, ConsentEvent, bool, bool]] = []
    for index, item in enumerate(pending):
        request, patron, address = item.request, item.patron, item.address
        if request.sg_event_id and request.sg_event_id in recorded_ids:
            continue
        effective = counts(request.decision, request.actor, patron.birth_date if patron else None,
                           item.occurred_at)
        ruling = Ruling(request.decision, item.occurred_at, request.actor)
        patron_key = (patron.id, item.purpose, item.topic) if patron else None
        address_key = (address, item.purpose, item.topic) if address else None
        if effective:
            levels = [state.get(key) for state, key in ((patron_state, patron_key),
                                                        (address_state, address_key)) if key]
            if all(_repeats(level[0] if level else None, ruling) for level in levels):
                continue
        else:
            twin = (patron.id if patron else None, item.purpose, item.topic,
                    request.decision.value, request.actor.value, item.occurred_at)
            if twin in twins or _ineffective_twin_exists(session, request, patron, item.topic,
                                                         item.occurred_at):
                continue
            twins.add(twin)
        event = ConsentEvent(
            patron_id=patron.id if patron else None,
            address_key=address,
            purpose=item.purpose,
            topic=item.topic,
            decision=request.decision.value,
            source=request.source.value,
            actor=request.actor.value,
            actor_ref=request.actor_ref,
            policy_version_id=_in_force(policies, item.occurred_at),
            occurred_at=item.occurred_at,
            recorded_at=now,
            effective=effective,
            evidence=dict(request.evidence),
            sg_event_id=request.sg_event_id,
        )
        events.append(event)
        if request.sg_event_id:
            recorded_ids.add(request.sg_event_id)
        patron_changed = address_changed = False
        if effective:
            patron_changed = _rule(patron_state, patron_key, ruling, event)
            address_changed = _rule(address_state, address_key, ruling, event)
        written.append((index, item, event, patron_changed, address_changed))

    if not events:
        return results
    chain_new_events(session, events)
    _insert_events(session, events)
    _put_rulings(session, PatronDecision, patron_state)
    _put_rulings(session, AddressDecision, address_state)
    lifting = [(item.address, event) for _, item, event, _, _ in written
               if event.effective and item.address is not None
               and item.request.decision is Decision.OPT_IN]
    if lifting:
        _lift_suppressions(session, lifting)
    queue_suppression_syncs(session, [(item.address, item.email) for _, item, _, _, changed
                                      in written if changed and item.address], now)
    for index, _, event, patron_changed, address_changed in written:
        results[index] = Recorded(event, patron_changed, address_changed)
    return results


_EVENTS: Table = ConsentEvent.__table__  # type: ignore[assignment]
# Every column an event is inserted with (`txid` is the database's own on PostgreSQL).
_EVENT_COLUMNS = tuple(column.key for column in _EVENTS.columns if column.key not in ("id", "txid"))


def _insert_events(session: Session, events: Sequence[ConsentEvent]) -> None:
    """Insert new, chained events as table rows, in order, by one executemany, and put them in
    the session as if loaded (the unit of work's flush cost about as much as the rest of a
    webhook batch together). The ids come from `_number_on_sqlite` on SQLite and from the
    insert's RETURNING, in the rows' order, on PostgreSQL (with the transaction id the database
    stamps, `txid`)."""
    sqlite = _number_on_sqlite(session, events)
    rows = [{key: getattr(event, key) for key in _EVENT_COLUMNS} for event in events]
    if sqlite:
        for row, event in zip(rows, events, strict=True):
            row["id"], row["txid"] = event.id, 0
        session.execute(_EVENTS.insert(), rows)
    else:
        returned = session.execute(_EVENTS.insert().returning(
            _EVENTS.c.id, _EVENTS.c.txid, sort_by_parameter_order=True), rows).all()
        for event, (event_id, txid) in zip(events, returned, strict=True):
            event.id, event.txid = event_id, txid
    for event in events:
        make_transient_to_detached(event)
    session.add_all(events)


def _number_on_sqlite(session: Session, events: Sequence[ConsentEvent]) -> bool:
    """Give new events their ids on SQLite, so that they are inserted by one executemany; False
    (nothing done) on other databases.

    SQLite does not promise the order of the rows a many-row INSERT … RETURNING hands back, so
    their ids cannot be read back in one statement (PostgreSQL returns them in order). SQLite has
    one writer, and this transaction has written already (the chains' heads), so no other id can
    be taken until it ends: the next ids are the largest one's successors, which SQLite itself
    would have given. `txid` is SQLite's constant 0."""
    if session.get_bind().dialect.name != "sqlite":
        return False
    first = (session.scalar(select(func.max(ConsentEvent.id))) or 0) + 1
    for offset, event in enumerate(events):
        event.id = first + offset
        event.txid = 0
    return True


def _put_rulings(session: Session, model: type[PatronDecision] | type[AddressDecision],
                 state: Mapping[tuple[Any, str, str], tuple[Ruling, ConsentEvent | None]]) -> None:
    """Write the rulings the requests left in force (those with an event) to their projection
    rows, inserted or updated by one upsert executemany; an instance of such a row already in
    the session is expired, so it is read again when next used."""
    table: Table = model.__table__  # type: ignore[assignment]
    subject = table.primary_key.columns.values()[0].key
    rows = [{subject: key[0], "purpose": key[1], "topic": key[2],
             "decision": ruling.decision.value, "actor": ruling.actor.value,
             "occurred_at": ruling.occurred_at, "event_id": event.id}
            for key, (ruling, event) in state.items() if event is not None]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    session.execute(statement.on_conflict_do_update(
        index_elements=[subject, "purpose", "topic"],
        set_={name: statement.excluded[name]
              for name in ("decision", "actor", "occurred_at", "event_id")}), rows)
    for row in rows:
        stale = session.identity_map.get(
            identity_key(model, (row[subject], row["purpose"], row["topic"])))
        if stale is not None:
            session.expire(stale)


def _checked_requests(session: Session, ctx: ServiceContext, requests: Sequence[DecisionRequest],
                      now: datetime) -> list[_Pending]:
    """Each request checked (purpose, topic, time, subject) and its address keyed; raises on the
    first bad one, before anything is written."""
    pending = []
    for request in requests:
        purpose = ctx.catalog.get(request.purpose)
        topic = checked_topic(session, purpose.key, purpose.has_topics, request.topic,
                              known=ctx.known_topics)
        occurred_at = require_aware(request.occurred_at, "occurred_at").astimezone(UTC)
        if occurred_at > now + CLOCK_SKEW:
            raise InvalidEventError(f"occurred_at {occurred_at.isoformat()} is in the future")
        patron = request.patron
        address = email = None
        if purpose.channel is Channel.EMAIL:
            email = request.email or (patron.email if patron else None)
            address = ctx.address_key(email) if email else None
        if patron is None and address is None:
            raise InvalidEventError(
                "a decision needs a patron, or an email address for an email decision")
        pending.append(_Pending(request, purpose.key, topic, occurred_at, patron, email, address))
    return pending


def _rule(state: dict[_K, tuple[Ruling, ConsentEvent | None]], key: _K | None, ruling: Ruling,
          event: ConsentEvent) -> bool:
    """Put the ruling in force at this key (in memory) unless one of higher precedence is there."""
    if key is None:
        return False
    current = state.get(key)
    if current is not None and not ruling.overrides(current[0]):
        return False
    state[key] = (ruling, event)
    return True


def checked_topic(session: Session, purpose: str, has_topics: bool, topic: str | None, *,
                  known: set[str] | None = None) -> str:
    """The stored topic key ("" for the whole purpose); refuses a topic the purpose cannot have or that
    is not configured. `known`: topic keys known to be configured (`ServiceContext.known_topics`):
    topics are only ever added, so a key found once is not looked up again, and the keys read on a
    miss are added to it."""
    if not topic:
        return WHOLE_PURPOSE
    if not has_topics:
        raise UnknownTopicError(f"purpose {purpose!r} has no topics (got topic {topic!r})")
    if known is not None and topic in known:
        return topic
    names = set(session.scalars(select(Topic.key)))
    if known is not None:
        known.update(names)
    if topic not in names:
        raise UnknownTopicError(
            f"unknown topic {topic!r}; the topics are: {', '.join(sorted(names)) or 'none yet'} "
            "(add one with `topics add`)")
    return topic


def _take_turns(session: Session, pending: Sequence[_Pending]) -> None:
    """Wait until no other transaction is deciding for the same address (an email decision) or
    patron (any other), and hold that turn until this transaction ends; the reads that follow
    (projections, chain heads) then see what the last decision committed.

    Without it, two transactions read the decision in force at the same time and both write: the
    first decision at a key fails on the primary key, and a later one can overwrite a newer
    decision committed meanwhile (the projection no longer equals the ledger's fold).

    SQLite: the transaction begins as the database's one writer (`write_turn.begin_writing`,
    `BEGIN IMMEDIATE`) unless the caller has begun it; Python's `sqlite3` would otherwise read
    outside a transaction until the first write. PostgreSQL: a transaction-scoped advisory lock
    on the address's (or patron's) key; one lock per key, all taken in one statement in key order
    (two batches never wait on each other in a circle), and the same lock again within a
    transaction is free, so a decision never waits on itself.
    """
    begin_writing(session)
    if session.get_bind().dialect.name != "postgresql":
        return
    turns = sorted({(_ADDRESS_LOCKS, item.address) if item.address is not None else
                    (_PATRON_LOCKS, str(item.patron.id if item.patron else ""))
                    for item in pending})
    session.execute(text(
        "SELECT count(pg_advisory_xact_lock(space, hashtext(key))) FROM unnest("
        "CAST(:spaces AS integer[]), CAST(:keys AS text[])) WITH ORDINALITY AS t(space, key, n)"),
        {"spaces": [space for space, _ in turns], "keys": [key for _, key in turns]})


_ADDRESS_LOCKS, _PATRON_LOCKS = 1_701_001, 1_701_002  # advisory lock spaces: decisions' turns
_K = TypeVar("_K", tuple[int, str, str], tuple[str, str, str])


def _recorded_sg_event_ids(session: Session, pending: Sequence[_Pending]) -> set[str]:
    """The requests' SendGrid event ids that the ledger holds already."""
    ids = sorted({item.request.sg_event_id for item in pending if item.request.sg_event_id})
    if not ids:
        return set()
    return {found for found in session.scalars(select(ConsentEvent.sg_event_id).where(
        ConsentEvent.sg_event_id.in_(ids))) if found}


def _patron_rows(session: Session, pending: Sequence[_Pending]) -> dict[tuple[Any, str, str], Ruling]:
    """The rulings the patron projection holds at the requests' keys (see `_projection_rows`)."""
    return _projection_rows(session, PatronDecision, PatronDecision.patron_id,
                            {(item.patron.id, item.purpose, item.topic)
                             for item in pending if item.patron})


def _address_rows(session: Session, pending: Sequence[_Pending]
                  ) -> dict[tuple[Any, str, str], Ruling]:
    """The rulings the address projection holds at the requests' keys (see `_projection_rows`)."""
    return _projection_rows(session, AddressDecision, AddressDecision.address_key,
                            {(item.address, item.purpose, item.topic)
                             for item in pending if item.address})


def _projection_rows(session: Session, model: type[PatronDecision] | type[AddressDecision],
                     subject: Any, keys: set[tuple[Any, str, str]]
                     ) -> dict[tuple[Any, str, str], Ruling]:
    """A projection's rulings at `keys` (subject, purpose, topic), read as committed now (after
    taking our turns), as plain rows: one query over the keys' subjects, purposes and topics, the
    rows at other combinations left out."""
    if not keys:
        return {}
    rows = session.execute(select(
        subject, model.purpose, model.topic, model.decision, model.occurred_at, model.actor,
        model.event_id,
    ).where(
        subject.in_(sorted({key[0] for key in keys})),
        model.purpose.in_(sorted({key[1] for key in keys})),
        model.topic.in_(sorted({key[2] for key in keys})),
    ))
    found = {}
    for key_subject, purpose, topic, decision, occurred_at, actor, event_id in rows:
        key = (key_subject, purpose, topic)
        if key in keys:
            found[key] = Ruling(Decision(decision), occurred_at, Actor(actor), str(event_id))
    return found


def _repeats(current: Ruling | None, ruling: Ruling) -> bool:
    """The ruling says what is in force already, and is not newer: recording it would add nothing."""
    return (current is not None and current.decision is ruling.decision
            and not ruling.overrides(current))


def _lift_suppressions(session: Session, opt_ins: Sequence[tuple[str, ConsentEvent]]) -> None:
    """An opt-in made after a spam report, by anyone at the address, ends the suppression (the
    first such opt-in of the requests, in their order)."""
    addresses = sorted({address for address, _ in opt_ins})
    suppressions = {row.address_key: row for row in session.scalars(
        select(AddressSuppression).where(AddressSuppression.address_key.in_(addresses)))}
    for address, event in opt_ins:
        suppression = suppressions.get(address)
        if (suppression and suppression.lifted_at is None
                and suppression.suppressed_at < event.occurred_at):
            suppression.lifted_at = event.recorded_at
            suppression.lifted_by_event_id = event.id


def queue_suppression_sync(session: Session, address: str, email: str | None, now: datetime) -> None:
    """Ask for this address's email state to be pushed to SendGrid, in the caller's transaction. One
    pending job per address: the sender reads the state in force when it runs."""
    queue_suppression_syncs(session, [(address, email)], now)


def queue_suppression_syncs(session: Session, addresses: Sequence[tuple[str, str | None]],
                            now: datetime) -> None:
    """queue_suppression_sync for each (address key, email), in order, reading the pending jobs
    once."""
    if not addresses:
        return
    pending: dict[str, SuppressionSyncJob] = {}
    # By address alone, the status checked here: with the status in the query SQLite reads the
    # (status, available_at) index instead, every pending job of the library (14 ms a one-click
    # with 60,000 waiting), where an address has a handful of jobs.
    for job in session.scalars(select(SuppressionSyncJob).where(
            SuppressionSyncJob.address_key.in_(sorted({address for address, _ in addresses})))):
        if job.status == "pending":
            pending.setdefault(job.address_key, job)
    new: dict[str, dict[str, Any]] = {}
    for address, email in addresses:
        job = pending.get(address)
        if job is not None:
            if job.email is None and email:
                job.email = email
        elif address not in new:
            new[address] = {"address_key": address, "email": email, "created_at": now,
                            "available_at": now}
        elif new[address]["email"] is None and email:
            new[address]["email"] = email
    if new:  # one executemany (an ORM insert would read each new id back)
        session.execute(SuppressionSyncJob.__table__.insert(), list(new.values()))


def _ineffective_twin_exists(session: Session, request: DecisionRequest, patron: Patron | None,
                             topic: str, occurred_at: datetime) -> bool:
    return session.scalar(
        select(ConsentEvent.id).where(
            ConsentEvent.patron_id == (patron.id if patron else None),
            ConsentEvent.purpose == request.purpose,
            ConsentEvent.topic == topic,
            ConsentEvent.decision == request.decision.value,
            ConsentEvent.actor == request.actor.value,
            ConsentEvent.occurred_at == occurred_at,
            ConsentEvent.effective.is_(False),
        ).limit(1)
    ) is not None


def _policy_versions(session: Session) -> list[tuple[datetime, int]]:
    """Every policy version's effective time and id, in order (a handful of rows)."""
    return [(at, id_) for at, id_ in session.execute(
        select(PolicyVersion.effective_at, PolicyVersion.id).order_by(PolicyVersion.effective_at,
                                                                      PolicyVersion.id))]


def _in_force(versions: list[tuple[datetime, int]], at: datetime) -> int | None:
    """The id of the policy version in force when the decision was made (its `occurred_at`, so a
    historic import or a late SendGrid event records the words in force then): the latest whose
    effective time is not after it, as services.policies.policy_in_force."""
    place = bisect_right(versions, at, key=lambda version: version[0])
    return versions[place - 1][1] if place else None

"""Record a consent decision: the one path by which every entry point changes what is in force."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

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
    SuppressionSyncJob,
    Topic,
)
from consent_service.services.context import ServiceContext
from consent_service.services.ledger_chain import chain_new_events
from consent_service.services.policies import policy_in_force

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
    purpose = ctx.catalog.get(request.purpose)
    topic = checked_topic(session, purpose.key, purpose.has_topics, request.topic)
    occurred_at = require_aware(request.occurred_at, "occurred_at").astimezone(UTC)
    if occurred_at > now + CLOCK_SKEW:
        raise InvalidEventError(f"occurred_at {occurred_at.isoformat()} is in the future")
    patron = request.patron
    address = email = None
    if purpose.channel is Channel.EMAIL:
        email = request.email or (patron.email if patron else None)
        address = ctx.address_key(email) if email else None
    if patron is None and address is None:
        raise InvalidEventError("a decision needs a patron, or an email address for an email decision")
    _take_turn(session, address, patron)
    if request.sg_event_id and session.scalar(
        select(ConsentEvent.id).where(ConsentEvent.sg_event_id == request.sg_event_id)
    ):
        return NOTHING

    effective = counts(request.decision, request.actor, patron.birth_date if patron else None, occurred_at)
    ruling = Ruling(request.decision, occurred_at, request.actor)
    # read after taking our turn, as committed now (not as this session may have cached it)
    patron_row = session.get(PatronDecision, (patron.id, purpose.key, topic),
                             populate_existing=True) if patron else None
    address_row = session.get(AddressDecision, (address, purpose.key, topic),
                              populate_existing=True) if address else None
    if effective:
        levels = [row for row, present in ((patron_row, patron), (address_row, address)) if present]
        if all(_repeats(row, ruling) for row in levels):
            return NOTHING
    elif _ineffective_twin_exists(session, request, patron, topic, occurred_at):
        return NOTHING

    event = ConsentEvent(
        patron_id=patron.id if patron else None,
        address_key=address,
        purpose=purpose.key,
        topic=topic,
        decision=request.decision.value,
        source=request.source.value,
        actor=request.actor.value,
        actor_ref=request.actor_ref,
        policy_version_id=_policy_in_force(session, occurred_at),
        occurred_at=occurred_at,
        recorded_at=now,
        effective=effective,
        evidence=dict(request.evidence),
        sg_event_id=request.sg_event_id,
    )
    chain_new_events(session, [event])
    session.add(event)
    session.flush()
    if not effective:
        return Recorded(event)

    patron_changed = address_changed = False
    if patron is not None:
        patron_changed = _apply(session, PatronDecision, patron_row, ruling, event,
                                patron_id=patron.id, purpose=purpose.key, topic=topic)
    if address is not None:
        address_changed = _apply(session, AddressDecision, address_row, ruling, event,
                                 address_key=address, purpose=purpose.key, topic=topic)
        if request.decision is Decision.OPT_IN:
            _lift_suppression(session, address, event)
        if address_changed:
            queue_suppression_sync(session, address, email, now)
    return Recorded(event, patron_changed, address_changed)


def checked_topic(session: Session, purpose: str, has_topics: bool, topic: str | None) -> str:
    """The stored topic key ("" for the whole purpose); refuses a topic the purpose cannot have or that
    is not configured."""
    if not topic:
        return WHOLE_PURPOSE
    if not has_topics:
        raise UnknownTopicError(f"purpose {purpose!r} has no topics (got topic {topic!r})")
    if session.scalar(select(Topic.id).where(Topic.key == topic)) is None:
        known = list(session.scalars(select(Topic.key).order_by(Topic.key)))
        raise UnknownTopicError(
            f"unknown topic {topic!r}; the topics are: {', '.join(known) or 'none yet'} "
            "(add one with `topics add`)")
    return topic


def _row_ruling(row: PatronDecision | AddressDecision) -> Ruling:
    return Ruling(Decision(row.decision), row.occurred_at, Actor(row.actor), str(row.event_id))


def _repeats(row: PatronDecision | AddressDecision | None, ruling: Ruling) -> bool:
    """The ruling says what is in force already, and is not newer: recording it would add nothing."""
    if row is None:
        return False
    current = _row_ruling(row)
    return current.decision is ruling.decision and not ruling.overrides(current)


def _take_turn(session: Session, address: str | None, patron: Patron | None) -> None:
    """On PostgreSQL, wait until no other transaction is deciding for the same address (an email
    decision) or patron (any other), and hold that turn until this transaction ends.

    Without it, two transactions read the decision in force at the same time and both write: the
    first decision at a key fails on the primary key, and a later one can overwrite a newer
    decision committed meanwhile, so the projection no longer equals the ledger's fold. A
    transaction-scoped advisory lock on the address's (or patron's) key makes them take turns;
    SQLite has one writer at a time already. One lock per decision, and the same lock again within
    a transaction is free, so a single decision never waits on itself.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    space, key = (_ADDRESS_LOCKS, address) if address is not None else (
        _PATRON_LOCKS, str(patron.id if patron else ""))
    session.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"),
                    {"space": space, "key": key})


_ADDRESS_LOCKS, _PATRON_LOCKS = 1_701_001, 1_701_002  # advisory lock spaces: decisions' turns


def _apply(session: Session, model: type[PatronDecision] | type[AddressDecision],
           row: PatronDecision | AddressDecision | None, ruling: Ruling, event: ConsentEvent,
           **key: str | int) -> bool:
    """Put the ruling in force at this key unless a ruling of higher precedence is there already."""
    if row is not None and not ruling.overrides(_row_ruling(row)):
        return False
    if row is None:
        row = model(**key)
        session.add(row)
    row.decision = ruling.decision.value
    row.actor = ruling.actor.value
    row.occurred_at = ruling.occurred_at
    row.event_id = event.id
    return True


def _lift_suppression(session: Session, address: str, event: ConsentEvent) -> None:
    """An opt-in made after a spam report, by anyone at the address, ends the suppression."""
    suppression = session.get(AddressSuppression, address)
    if suppression and suppression.lifted_at is None and suppression.suppressed_at < event.occurred_at:
        suppression.lifted_at = event.recorded_at
        suppression.lifted_by_event_id = event.id


def queue_suppression_sync(session: Session, address: str, email: str | None, now: datetime) -> None:
    """Ask for this address's email state to be pushed to SendGrid, in the caller's transaction. One
    pending job per address: the sender reads the state in force when it runs."""
    pending = session.scalar(select(SuppressionSyncJob).where(
        SuppressionSyncJob.address_key == address, SuppressionSyncJob.status == "pending").limit(1))
    if pending is None:
        session.add(SuppressionSyncJob(address_key=address, email=email, created_at=now, available_at=now))
    elif pending.email is None and email:
        pending.email = email


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


def _policy_in_force(session: Session, at: datetime) -> int | None:
    """The id of the policy version in force when the decision was made (its `occurred_at`, so a
    historic import or a late SendGrid event records the words in force then)."""
    policy = policy_in_force(session, at)
    return policy.id if policy is not None else None

"""What SendGrid tells us, applied to the ledger: decisions, address suppressions, undeliverable
addresses. Shared by the Event Webhook and reconciliation; the caller commits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.ledger import Actor, Decision, Key, Ruling, Source, resolve
from consent_service.domain.purposes import EMAIL_PURPOSE
from consent_service.domain.suppression_state import DesiredSuppressions, desired_suppressions
from consent_service.models import (
    AddressDecision,
    AddressSuppression,
    ConsentEvent,
    Patron,
    Topic,
    UndeliverableAddress,
)
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import (
    DecisionRequest,
    Recorded,
    queue_suppression_sync,
    record_decision,
)


def record_email_decision(session: Session, ctx: ServiceContext, *, email: str, address: str,
                          decision: Decision, topic: str | None, occurred_at: datetime,
                          source: Source, patron: Patron | None, evidence: Mapping[str, str],
                          sg_event_id: str | None, now: datetime) -> Recorded:
    """Record a decision SendGrid reports for an address, at the time SendGrid gives.

    It is the address's decision (one event, whoever shares the address), recorded for `patron`
    when the message named a patron at this address, else for the address alone. The ledger's
    ordering rules apply: a late report never overturns a newer decision. When the decision in force
    afterwards is not the reported one, SendGrid now disagrees with the ledger, so the address is
    queued for a push of the ledger's state (the newer decision wins on both sides).
    """
    recorded = record_decision(session, ctx, DecisionRequest(
        purpose=EMAIL_PURPOSE, topic=topic, decision=decision, source=source, actor=Actor.SYSTEM,
        occurred_at=occurred_at, patron=patron, email=email, evidence=evidence,
        sg_event_id=sg_event_id), now=now)
    if not recorded.address_changed:
        in_force = resolve(address_state(session, address), EMAIL_PURPOSE, topic)
        if in_force is None or in_force.decision is not decision:
            queue_suppression_sync(session, address, email, now)
    return recorded


def suppress_address(session: Session, address: str, reason: str, at: datetime) -> bool:
    """Suppress an address from `at` (a spam report). One row per address keeps the latest report
    (at one instant, the greater reason); a report older than the one kept changes nothing. A report
    is lifted by any opt-in at the address made after it, whichever arrived first, so arrival order
    never matters. Returns whether anything changed."""
    row = session.get(AddressSuppression, address)
    if row is not None and (row.suppressed_at, row.reason) >= (at, reason):
        return False
    lifting = session.scalar(
        select(ConsentEvent).where(
            ConsentEvent.address_key == address, ConsentEvent.purpose == EMAIL_PURPOSE,
            ConsentEvent.decision == Decision.OPT_IN.value, ConsentEvent.effective.is_(True),
            ConsentEvent.occurred_at > at,
        ).order_by(ConsentEvent.occurred_at).limit(1))
    if row is None:
        row = AddressSuppression(address_key=address)
        session.add(row)
    row.reason = reason
    row.suppressed_at = at
    row.lifted_at = lifting.recorded_at if lifting else None
    row.lifted_by_event_id = lifting.id if lifting else None
    return True


def mark_undeliverable(session: Session, address: str, reason: str, at: datetime) -> bool:
    """Mark an address undeliverable since `at` (the earliest report is kept, so order does not
    matter). Not a decision: it ends when a patron's address changes. Returns whether it changed."""
    row = session.get(UndeliverableAddress, address)
    reason = reason or "bounced"
    if row is not None and (row.occurred_at, row.reason) <= (at, reason):
        return False
    if row is None:
        row = UndeliverableAddress(address_key=address)
        session.add(row)
    row.reason = reason[:200]
    row.occurred_at = at
    return True


def address_state(session: Session, address: str) -> dict[Key, Ruling]:
    """The email decisions in force at one address."""
    return address_states(session, [address]).get(address, {})


def address_states(session: Session, addresses: list[str]) -> dict[str, dict[Key, Ruling]]:
    """The email decisions in force at each address, by address key."""
    states: dict[str, dict[Key, Ruling]] = {}
    for start in range(0, len(addresses), 1000):
        rows = session.scalars(select(AddressDecision).where(
            AddressDecision.address_key.in_(addresses[start:start + 1000]),
            AddressDecision.purpose == EMAIL_PURPOSE))
        for row in rows:
            states.setdefault(row.address_key, {})[(row.purpose, row.topic)] = Ruling(
                Decision(row.decision), row.occurred_at, Actor(row.actor), str(row.event_id))
    return states


def topic_groups(session: Session) -> dict[str, int]:
    """Topic key -> SendGrid unsubscribe group, for the topics mapped to one."""
    rows = session.execute(select(Topic.key, Topic.sendgrid_group_id)
                           .where(Topic.sendgrid_group_id.is_not(None)))
    return {key: int(group) for key, group in rows}


def desired_for(session: Session, addresses: list[str],
                groups: Mapping[str, int]) -> dict[str, DesiredSuppressions]:
    """The SendGrid state each address should have, from its decisions in force."""
    states = address_states(session, addresses)
    return {address: desired_suppressions(states.get(address, {}), groups) for address in addresses}

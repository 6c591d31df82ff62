"""What SendGrid tells us, applied to the ledger: decisions, address suppressions, undeliverable
addresses. Shared by the Event Webhook and reconciliation; the caller commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    queue_suppression_syncs,
    record_decisions,
)


@dataclass(frozen=True)
class EmailDecision:
    """A decision SendGrid reports for an address (see record_email_decisions)."""

    email: str
    address: str
    decision: Decision
    topic: str | None
    occurred_at: datetime
    source: Source
    patron: Patron | None
    evidence: Mapping[str, str]
    sg_event_id: str | None


def record_email_decision(session: Session, ctx: ServiceContext, *, email: str, address: str,
                          decision: Decision, topic: str | None, occurred_at: datetime,
                          source: Source, patron: Patron | None, evidence: Mapping[str, str],
                          sg_event_id: str | None, now: datetime) -> Recorded:
    """Record a decision SendGrid reports for an address, at the time SendGrid gives (see
    record_email_decisions)."""
    return record_email_decisions(session, ctx, [EmailDecision(
        email, address, decision, topic, occurred_at, source, patron, evidence, sg_event_id)],
        now=now)[0]


def record_email_decisions(session: Session, ctx: ServiceContext,
                           decisions: Sequence[EmailDecision], *, now: datetime) -> list[Recorded]:
    """Record decisions SendGrid reports for addresses, in order, at the times SendGrid gives.

    Each is the address's decision (one event, whoever shares the address), recorded for `patron`
    when the message named a patron at this address, else for the address alone. The ledger's
    ordering rules apply: a late report never overturns a newer decision. When the decision in force
    afterwards is not the reported one, SendGrid now disagrees with the ledger, so the address is
    queued for a push of the ledger's state (the newer decision wins on both sides). Checked once
    after all are recorded: a later report at the same address either changes its state (and
    queues the push itself) or leaves the state the earlier one was checked against.
    """
    if not decisions:
        return []
    recorded = record_decisions(session, ctx, [DecisionRequest(
        purpose=EMAIL_PURPOSE, topic=item.topic, decision=item.decision, source=item.source,
        actor=Actor.SYSTEM, occurred_at=item.occurred_at, patron=item.patron, email=item.email,
        evidence=item.evidence, sg_event_id=item.sg_event_id) for item in decisions], now=now)
    unchanged = [item for item, result in zip(decisions, recorded, strict=True)
                 if not result.address_changed]
    if unchanged:
        states = address_states(session, sorted({item.address for item in unchanged}))
        disagreeing = []
        for item in unchanged:
            in_force = resolve(states.get(item.address, {}), EMAIL_PURPOSE, item.topic)
            if in_force is None or in_force.decision is not item.decision:
                disagreeing.append((item.address, item.email))
        queue_suppression_syncs(session, disagreeing, now)
    return recorded


def suppress_address(session: Session, address: str, reason: str, at: datetime) -> bool:
    """Suppress an address from `at` (a spam report); see suppress_addresses. Returns whether
    anything changed."""
    return bool(suppress_addresses(session, [(address, reason, at)]))


def suppress_addresses(session: Session, reports: Sequence[tuple[str, str, datetime]]) -> set[str]:
    """Suppress addresses, each (address key, reason, at) from `at` (a spam report), in order. One
    row per address keeps the latest report (at one instant, the greater reason); a report older
    than the one kept changes nothing. A report is lifted by any opt-in at the address made after
    it, whichever arrived first, so arrival order never matters. Reads the rows, and the opt-ins
    that lift them, once. Returns the addresses whose row changed."""
    if not reports:
        return set()
    addresses = sorted({address for address, _, _ in reports})
    rows = {row.address_key: row for row in session.scalars(
        select(AddressSuppression).where(AddressSuppression.address_key.in_(addresses)))}
    latest: dict[str, tuple[datetime, str]] = {}
    for address, reason, at in reports:
        row = rows.get(address)
        kept = latest.get(address) or ((row.suppressed_at, row.reason) if row else None)
        if kept is None or (at, reason) > kept:
            latest[address] = (at, reason)
    if not latest:
        return set()
    earliest = min(at for at, _ in latest.values())
    opt_ins: dict[str, list[tuple[datetime, int, datetime]]] = {}
    for address_key, occurred_at, event_id, recorded_at in session.execute(
            select(ConsentEvent.address_key, ConsentEvent.occurred_at, ConsentEvent.id,
                   ConsentEvent.recorded_at).where(
                ConsentEvent.address_key.in_(sorted(latest)),
                ConsentEvent.purpose == EMAIL_PURPOSE,
                ConsentEvent.decision == Decision.OPT_IN.value,
                ConsentEvent.effective.is_(True),
                ConsentEvent.occurred_at > earliest)):
        opt_ins.setdefault(address_key, []).append((occurred_at, event_id, recorded_at))
    for address, (at, reason) in latest.items():
        after = [opt_in for opt_in in opt_ins.get(address, []) if opt_in[0] > at]
        lifting = min(after) if after else None
        row = rows.get(address)
        if row is None:
            row = AddressSuppression(address_key=address)
            session.add(row)
        row.reason = reason
        row.suppressed_at = at
        row.lifted_at = lifting[2] if lifting else None
        row.lifted_by_event_id = lifting[1] if lifting else None
    return set(latest)


def mark_undeliverable(session: Session, address: str, reason: str, at: datetime) -> bool:
    """Mark an address undeliverable since `at`; see mark_undeliverable_addresses. Returns whether
    it changed."""
    return bool(mark_undeliverable_addresses(session, [(address, reason, at)]))


def mark_undeliverable_addresses(session: Session,
                                 marks: Sequence[tuple[str, str, datetime]]) -> set[str]:
    """Mark addresses undeliverable, each (address key, reason, since `at`): the earliest report is
    kept, so order does not matter. Not a decision: it ends when a patron's address changes. Reads
    the rows once; returns the addresses whose row changed."""
    if not marks:
        return set()
    rows = {row.address_key: row for row in session.scalars(
        select(UndeliverableAddress).where(
            UndeliverableAddress.address_key.in_(sorted({address for address, _, _ in marks}))))}
    changed: set[str] = set()
    for address, reason, at in marks:
        row = rows.get(address)
        reason = reason or "bounced"
        if row is not None and (row.occurred_at, row.reason) <= (at, reason):
            continue
        if row is None:
            rows[address] = row = UndeliverableAddress(address_key=address)
            session.add(row)
        row.reason = reason[:200]
        row.occurred_at = at
        changed.add(address)
    return changed


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

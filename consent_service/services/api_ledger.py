"""The API's ledger use cases: record a decision another system reports, and the feed of events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, text, tuple_
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.models import ConsentEvent, Patron
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision

CURSOR_DIGITS = 18  # a transaction id and an event id each fit a signed 64-bit integer


class InvalidCursorError(ConsentServiceError):
    """A feed cursor that this service did not give out."""


@dataclass(frozen=True)
class ReportedDecision:
    """A decision another system reports for a patron, with what it knows of how it was made."""

    purpose: str
    decision: Decision
    occurred_at: datetime
    topic: str | None = None
    actor: Actor = Actor.SYSTEM
    actor_ref: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedDecision:
    """What recording did. `recorded` is False when the decision repeats the one in force and is
    not newer (nothing is written); `effective` is False for an attempt that cannot take effect
    (a child's own opt-in); `changed` tells whether what is in force changed (not for a repeat,
    nor for a late event, which is recorded but does not overturn a newer one)."""

    recorded: bool
    event_id: str | None
    effective: bool | None
    changed: bool
    patron_id: str
    purpose: str
    topic: str | None
    decision: str
    actor: str
    occurred_at: datetime


@dataclass(frozen=True)
class FeedEvent:
    """A ledger event as downstream systems see it: the opaque patron id, never a card number,
    an address or the evidence. `scope` is `address` for an email decision, which is in force for
    every patron at that address."""

    id: str
    patron_id: str | None
    scope: str
    purpose: str
    topic: str | None
    decision: str
    source: str
    actor: str
    effective: bool
    occurred_at: datetime
    recorded_at: datetime
    source_detail: str | None = None  # an imported decision's label (the library's, or ILS field)


@dataclass(frozen=True)
class FeedPage:
    events: list[FeedEvent]
    next: str | None
    has_more: bool


def record_reported_decision(session: Session, ctx: ServiceContext, patron: Patron,
                             reported: ReportedDecision, *, api_key_prefix: str,
                             now: datetime) -> RecordedDecision:
    """Record the decision through `record_decision` with source `api`, in the caller's
    transaction (flushed, not committed), keeping its own `occurred_at` and actor; the evidence
    names the API key by its prefix. Every rule of `record_decision` holds (latest occurred_at
    wins, email decisions are the address's, a child's own opt-in does not count).

    :raise UnknownPurposeError: a purpose not in the catalog.
    :raise UnknownTopicError: a topic the purpose cannot have, or one not configured.
    :raise InvalidEventError: `occurred_at` in the future.
    """
    evidence = {"api_key": api_key_prefix, **reported.evidence}
    recorded = record_decision(session, ctx, DecisionRequest(
        purpose=reported.purpose, decision=reported.decision, source=Source.API,
        actor=reported.actor, occurred_at=reported.occurred_at, topic=reported.topic,
        patron=patron, actor_ref=reported.actor_ref, evidence=evidence), now=now)
    event = recorded.event
    return RecordedDecision(
        recorded=event is not None,
        event_id=str(event.id) if event is not None else None,
        effective=event.effective if event is not None else None,
        changed=recorded.patron_changed or recorded.address_changed,
        patron_id=patron.public_id, purpose=reported.purpose, topic=reported.topic or None,
        decision=reported.decision.value, actor=reported.actor.value,
        occurred_at=reported.occurred_at)


def events_after(session: Session, after: str | None, limit: int) -> FeedPage:
    """Up to `limit` ledger events recorded after the cursor `after` (from the start without one),
    in a stable order: by the transaction that inserted them, then by id. Events are never updated
    or deleted, and an event is served only once every transaction that could still insert an
    event before it has finished, so a cursor stays valid: new events only ever come after the
    last one seen. `next` is the cursor to ask with next time: the last event's, or `after` itself
    when there is nothing new.

    On PostgreSQL ids are handed out when an event is inserted but become visible when its
    transaction commits, so a long transaction (a large import) can commit an event with a lower
    id than one already served. The database stamps each event with its transaction's id (`txid`),
    and the feed serves only events of transactions below the oldest one still running anywhere on
    the server (its snapshot's xmin): those have all finished, and whatever commits later has a
    `txid` at or above it. A long transaction therefore holds the feed back until it ends. On
    SQLite, one writer at a time, ids are already in commit order and `txid` is 0, as it is for
    events from before the column existed.

    The cursor is `"<txid>.<id>"`, which clients treat as opaque.

    :raise InvalidCursorError: a cursor this service did not give out.
    """
    txid, event_id = parse_cursor(after) if after is not None else (0, 0)
    query = (select(ConsentEvent, Patron.public_id)
             .outerjoin(Patron, Patron.id == ConsentEvent.patron_id)
             .where(tuple_(ConsentEvent.txid, ConsentEvent.id) > tuple_(txid, event_id))
             .order_by(ConsentEvent.txid, ConsentEvent.id).limit(limit + 1))
    if session.get_bind().dialect.name == "postgresql":
        # Read before the events (READ COMMITTED takes a snapshot per statement): every
        # transaction below this horizon had finished then, so all it wrote is visible below.
        horizon = session.scalar(text("select pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
        query = query.where(ConsentEvent.txid < horizon)
    rows = session.execute(query).all()
    page = rows[:limit]
    events = [_feed_event(event, public_id) for event, public_id in page]
    cursor = format_cursor(page[-1][0]) if page else after
    return FeedPage(events, cursor, len(rows) > limit)


def format_cursor(event: ConsentEvent) -> str:
    """The cursor that points just after `event`."""
    return f"{event.txid or 0}.{event.id}"


def parse_cursor(text: str) -> tuple[int, int]:
    """The (transaction id, event id) a cursor stands for.

    :raise InvalidCursorError: anything but a cursor this service gives out.
    """
    parts = text.split(".")
    if not (len(parts) == 2 and all(part.isascii() and part.isdigit()
                                    and len(part) <= CURSOR_DIGITS for part in parts)):
        raise InvalidCursorError("not a cursor this feed gave out; pass back a `next` value, or "
                                 "leave `after` out to start from the beginning")
    return int(parts[0]), int(parts[1])


def _feed_event(event: ConsentEvent, public_id: str | None) -> FeedEvent:
    return FeedEvent(
        id=str(event.id), patron_id=public_id,
        scope="address" if event.address_key is not None else "patron",
        purpose=event.purpose, topic=event.topic or None, decision=event.decision,
        source=event.source, actor=event.actor, effective=event.effective,
        occurred_at=event.occurred_at, recorded_at=event.recorded_at,
        source_detail=(event.evidence or {}).get("source_detail"))

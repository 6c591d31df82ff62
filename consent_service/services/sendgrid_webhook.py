"""SendGrid Event Webhook batches: stored and applied to the ledger before they are answered, each
event once however often SendGrid delivers it."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import Decision, Source
from consent_service.domain.sendgrid_events import (
    Action,
    SendGridEvent,
    Suppression,
    fingerprint,
    read_event,
)
from consent_service.domain.text import one_line
from consent_service.models import Patron, SendGridEventReceipt, WebhookBatch
from consent_service.sendgrid.client import retry_at
from consent_service.sendgrid.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookBodyError,
    WebhookSignatureError,
    WebhookVerifier,
    parse_batch,
)
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import CLOCK_SKEW
from consent_service.services.outages import is_database_outage
from consent_service.services.sendgrid_addresses import (
    EmailDecision,
    mark_undeliverable,
    mark_undeliverable_addresses,
    record_email_decisions,
    suppress_address,
    suppress_addresses,
    topic_groups,
)

logger = logging.getLogger(__name__)

# Outcomes counted per batch (WebhookBatch.counts).
SKIPPED = "skipped"  # asks nothing of the ledger (processed, delivered, open, click, ...)
APPLIED = "applied"  # applied to the ledger (which may have found a newer decision in force)
DUPLICATE = "duplicate"  # delivered before: same sg_event_id, or same content
UNKNOWN_GROUP = "unknown_group"  # an asm_group_id no topic is mapped to
INVALID = "invalid"  # malformed, or should act but cannot (kept in WebhookBatch.rejected)
REASON_LENGTH = 200  # a rejected event's reason, on one line
# Receipts are inserted as table rows: the ORM's bulk insert leaves out None values, so receipts
# with and without a group would alternate between two statements, one executemany per run.
_RECEIPTS: Table = SendGridEventReceipt.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class BatchOutcome:
    """What processing a batch did: whether it finished, and its events counted by outcome."""

    batch_id: int
    processed: bool
    counts: dict[str, int]
    error: str | None = None


class BatchRefusedError(ConsentServiceError):
    """A POSTed batch that is not taken (nothing is stored): `status` is the HTTP answer SendGrid
    gets (403 not signed by SendGrid or not recently, 400 not a JSON array), the message says why
    for SendGrid's delivery log."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Received:
    """A batch taken: its id, how many events it held, and whether it was processed at once."""

    batch_id: int
    events: int
    processed: bool


def receive_batch(session: Session, ctx: ServiceContext, body: bytes, headers: Mapping[str, str],
                  *, verifier: WebhookVerifier | None, max_age: timedelta,
                  now: datetime) -> Received:
    """Take a POSTed batch: check its signature against the request's signature and timestamp
    `headers` (`verifier` None: verification is off), read it, store it and apply it in one
    transaction, committed once before SendGrid gets its answer.

    The events are applied inside a savepoint (see process_batch for the rules); when applying
    fails, the savepoint is undone and the stored batch is committed alone, marked failed with its
    error, for the worker to process later (`process_stored_batches`). Either way nothing answered
    200 is lost. When even that commit fails, nothing is stored and the error propagates: SendGrid
    gets a 5xx and sends the batch again.

    :raise BatchRefusedError: unsigned, wrongly or not recently signed (403), or not a JSON array
        (400); nothing is stored.
    :raise SQLAlchemyError: the batch could not be stored (SendGrid should send it again).
    """
    signed = None
    if verifier is not None:
        try:
            signed = verifier.verify(body, headers.get(SIGNATURE_HEADER),
                                     headers.get(TIMESTAMP_HEADER), now=now, max_age=max_age)
        except WebhookSignatureError as error:
            logger.warning("SendGrid webhook refused: %s", error)
            raise BatchRefusedError(
                403, "the batch is not signed by SendGrid, or not recently") from None
    try:
        events = parse_batch(body)
    except WebhookBodyError as error:
        raise BatchRefusedError(400, str(error)) from None
    try:
        batch_id = store_batch(session, body, event_count=len(events),
                               signed_at=signed.signed_at if signed else None, now=now,
                               commit=False)
        batch = session.get(WebhookBatch, batch_id)
        assert batch is not None  # added by this transaction
        batch.attempts = 1
        outcome = _process(session, ctx, batch, events, now)
    except SQLAlchemyError:
        session.rollback()
        raise
    age = f"signed {int(signed.age.total_seconds())} s ago" if signed else "unsigned"
    logger.info("SendGrid batch %d stored: %d event(s), %s", batch_id, len(events), age)
    return Received(batch_id, len(events), outcome.processed)


def store_batch(session: Session, body: bytes, *, event_count: int, signed_at: datetime | None,
                now: datetime, commit: bool = True) -> int:
    """Keep a batch exactly as received, pending, and commit (`commit` False: flush only, in the
    caller's transaction, which then commits it with its outcome). Returns the batch id."""
    batch = WebhookBatch(received_at=now, signed_at=signed_at, body=body, event_count=event_count,
                         status="pending", attempts=0, available_at=now, counts={})
    session.add(batch)
    if commit:
        session.commit()
    else:
        session.flush()
    return batch.id


def process_batch(session: Session, ctx: ServiceContext, batch_id: int, *, now: datetime,
                  events: Sequence[Any] | None = None) -> BatchOutcome | None:
    """Apply a stored batch to the ledger in one transaction, and commit.

    Each actionable event is applied once: a repeat (same `sg_event_id`, or the same address, event,
    time, message and group under a new id) is counted and skipped, so SendGrid's retries and a
    replayed batch change nothing. Events that ask nothing are skipped without database work.

    Each event is judged on its own: one that is malformed, or whose application fails for a reason
    of its own (each is applied inside a savepoint, undone alone), is counted `invalid` and kept in
    `WebhookBatch.rejected` as its index in the batch and a one-line reason, and the rest of the
    batch is applied. A database that cannot be reached (or a failure outside any one event) fails
    the whole batch: nothing of it stays, and the batch is kept with the error and retried later
    (by `process_stored_batches`). Returns None when the batch is processed already or another
    process holds it. `events` saves parsing the body again when the caller has it parsed."""
    batch = session.scalar(select(WebhookBatch).where(
        WebhookBatch.id == batch_id, WebhookBatch.status != "processed",
    ).with_for_update(skip_locked=True))
    if batch is None:
        session.rollback()
        return None
    try:
        # The batch's own row is written first, so the transaction is open before the first
        # savepoint (pysqlite begins a transaction only at a write; a savepoint outside one would
        # commit when released).
        batch.attempts += 1
        session.flush()
        return _process(session, ctx, batch, events, now)
    except SQLAlchemyError as exc:  # the failure could not even be recorded with the batch
        session.rollback()
        error = one_line(_described(exc), 1000)
        _record_failure(session, batch_id, error, now)
        return BatchOutcome(batch_id, False, {}, error)


def _process(session: Session, ctx: ServiceContext, batch: WebhookBatch,
             events: Sequence[Any] | None, now: datetime) -> BatchOutcome:
    """Apply the events of a batch whose row this transaction has written (so the transaction is
    open before the savepoint: pysqlite begins one only at a write, and a savepoint outside one
    would commit when released) inside a savepoint, record the outcome on the row, and commit.
    When applying fails, the savepoint is undone and the batch is committed as failed, with its
    error, for a later attempt (its `attempts` already counts this one). Raises SQLAlchemyError
    when the outcome cannot be committed (the caller rolls back)."""
    try:
        with session.begin_nested():
            if events is None:
                events = _events_of(batch)
            counts, rejected = _apply_events(session, ctx, batch.id, events, now)
    except Exception as exc:  # any failure: keep the batch and its error for the next attempt
        error = one_line(_described(exc), 1000)
        batch.status = "failed"
        batch.last_error = error
        batch.available_at = retry_at(batch.attempts, now)
        session.commit()
        logger.warning("SendGrid batch %d: processing failed, kept for retry: %s", batch.id,
                       type(exc).__name__)
        return BatchOutcome(batch.id, False, {}, error)
    batch.status = "processed"
    batch.processed_at = now
    batch.last_error = None
    batch.counts = dict(counts)
    batch.rejected = [{"index": index, "reason": reason} for index, reason in rejected] or None
    session.commit()
    if counts[UNKNOWN_GROUP]:
        logger.warning("SendGrid batch %d: %d event(s) name an unsubscribe group mapped to no "
                       "topic (see `flask sendgrid failures`)", batch.id, counts[UNKNOWN_GROUP])
    if rejected:
        logger.warning("SendGrid batch %d: %d event(s) rejected, the rest applied (see `flask "
                       "sendgrid failures`)", batch.id, len(rejected))
    return BatchOutcome(batch.id, True, dict(counts))


def process_stored_batches(session: Session, ctx: ServiceContext, *, now: datetime,
                           limit: int = 10) -> int:
    """Process batches stored but not yet processed (their request failed or crashed after storing
    them), oldest first, each in its own transaction; batches held by another process are skipped.
    Returns how many were taken up."""
    ids = list(session.scalars(
        select(WebhookBatch.id).where(
            or_(WebhookBatch.status == "pending", WebhookBatch.status == "failed"),
            WebhookBatch.available_at <= now,
        ).order_by(WebhookBatch.available_at, WebhookBatch.id).limit(limit)))
    session.rollback()
    taken = 0
    for batch_id in ids:
        if process_batch(session, ctx, batch_id, now=now) is not None:
            taken += 1
    return taken


def _events_of(batch: WebhookBatch) -> list[Any]:
    if batch.body is None:
        raise ConsentServiceError(f"batch {batch.id} has no body left to process")
    events = json.loads(batch.body)
    if not isinstance(events, list):
        raise ConsentServiceError(f"batch {batch.id} is not a JSON array")
    return events


def _record_failure(session: Session, batch_id: int, error: str, now: datetime) -> None:
    batch = session.get(WebhookBatch, batch_id)
    if batch is None:
        return
    batch.attempts += 1
    batch.status = "failed"
    batch.last_error = error
    batch.available_at = retry_at(batch.attempts, now)
    session.commit()


@dataclass(frozen=True)
class _Work:
    index: int
    event: SendGridEvent
    address: str
    content_hash: str


def _apply_events(session: Session, ctx: ServiceContext, batch_id: int, raw_events: Sequence[Any],
                  now: datetime) -> tuple[Counter[str], list[tuple[int, str]]]:
    """Apply the events; returns them counted by outcome, and the rejected ones as (index, reason).

    The events that ask nothing (nine in ten) are counted on their name alone and never reach the
    database. The actionable ones are checked against the receipts in one query, then applied
    together (`_apply_together`: one `record_decisions`, the suppressions and undeliverable marks
    read and written once, the receipts inserted by one executemany) inside one savepoint. Events
    at an address that also has a spam report or a drop for a suppressed address in the same batch
    are applied one by one in batch order, as is every event when the savepoint fails (a database
    refusal that belongs to one event), so each is judged on its own as before."""
    counts: Counter[str] = Counter({SKIPPED: 0, APPLIED: 0, DUPLICATE: 0, UNKNOWN_GROUP: 0,
                                    INVALID: 0})
    rejected: list[tuple[int, str]] = []

    def reject(index: int, reason: str) -> None:
        counts[INVALID] += 1
        rejected.append((index, one_line(reason, REASON_LENGTH)))

    work: list[_Work] = []
    for index, raw in enumerate(raw_events):
        try:
            event = read_event(raw)
        except ConsentServiceError as error:
            reject(index, str(error))
            continue
        except Exception as error:  # a defect in reading: this event alone is lost, and logged
            logger.error("SendGrid batch %d: event %d could not be read: %s", batch_id, index,
                         type(error).__name__)
            reject(index, f"could not be read ({type(error).__name__})")
            continue
        if event is None:
            counts[SKIPPED] += 1
            continue
        if event.occurred_at > now + CLOCK_SKEW:
            reject(index, "timestamp: in the future")
            continue
        address = ctx.address_key(event.email)
        work.append(_Work(index, event, address, fingerprint(
            address, event.name, event.occurred_at, event.sg_message_id, event.group_id)))
    if not work:
        return counts, rejected

    seen_hashes, seen_ids = _receipts_for(session, work)
    groups = {group: key for key, group in topic_groups(session).items()}
    named = _named_patrons(session, work)
    fresh: list[_Work] = []
    copies: dict[int, list[_Work]] = {}  # a fresh event's index -> later copies in this batch
    first: dict[str, _Work] = {}
    for item in work:
        event = item.event
        if (event.sg_event_id is not None and event.sg_event_id in seen_ids) \
                or item.content_hash in seen_hashes:
            counts[DUPLICATE] += 1
            continue
        original = first.get(item.content_hash) or (
            first.get("id:" + event.sg_event_id) if event.sg_event_id else None)
        if original is not None:
            counts[DUPLICATE] += 1
            copies.setdefault(original.index, []).append(item)
            continue
        first[item.content_hash] = item
        if event.sg_event_id:
            first["id:" + event.sg_event_id] = item
        fresh.append(item)

    together, alone = _partition(fresh)
    if together:
        try:
            with session.begin_nested():
                counts.update(_apply_together(session, ctx, together, groups, named, batch_id,
                                              now))
        except SQLAlchemyError as error:
            if is_database_outage(error):
                raise
            logger.warning("SendGrid batch %d: applied one event at a time after %s", batch_id,
                           type(error).__name__)
            alone = fresh
        except Exception as error:  # a defect: found again, and kept to its event, one by one
            logger.error("SendGrid batch %d: applied one event at a time after %s", batch_id,
                         type(error).__name__)
            alone = fresh
    for item in alone:
        outcome = _apply_alone(session, ctx, item, groups, named, batch_id, now, reject)
        while outcome is None and copies.get(item.index):
            # refused: its next copy in this batch is tried in its place, as it would have been
            item = copies[item.index].pop(0)
            counts[DUPLICATE] -= 1
            outcome = _apply_alone(session, ctx, item, groups, named, batch_id, now, reject)
        if outcome is not None:
            counts[outcome] += 1
    return counts, rejected


_SUPPRESSING = (Action.SPAM_REPORT, Action.SUPPRESS)
_DECIDING = (Action.OPT_OUT_ALL, Action.SPAM_REPORT, Action.OPT_OUT_TOPIC, Action.OPT_IN_TOPIC)


def _partition(items: list[_Work]) -> tuple[list[_Work], list[_Work]]:
    """The events that can be applied together, and those to apply one by one in batch order: at
    an address where a suppression (spam report, drop for a suppressed address) meets another
    decision or suppression of the same batch, whether an opt-in lifts it depends on their order.
    Everywhere else order within the batch cannot matter beyond what `record_decisions` keeps
    (its requests in batch order), and undeliverable marks keep the earliest whatever the order."""
    acting: Counter[str] = Counter()
    suppressing: set[str] = set()
    for item in items:
        if item.event.action in _DECIDING or item.event.action in _SUPPRESSING:
            acting[item.address] += 1
        if item.event.action in _SUPPRESSING:
            suppressing.add(item.address)
    ordered = {address for address in suppressing if acting[address] > 1}
    together = [item for item in items if item.address not in ordered]
    alone = [item for item in items if item.address in ordered]
    return together, alone


def _apply_together(session: Session, ctx: ServiceContext, items: list[_Work],
                    groups: Mapping[int, str], named: Mapping[str, Patron], batch_id: int,
                    now: datetime) -> Counter[str]:
    """Apply fresh events (see `_partition`) set-based: the outcome of `_apply_alone` for each, in
    a fixed number of statements. Raises on any failure; the caller's savepoint undoes it all."""
    outcomes: Counter[str] = Counter()
    decisions: list[EmailDecision] = []
    suppressions: list[tuple[str, str, datetime]] = []
    marks: list[tuple[str, str, datetime]] = []
    receipts: list[dict[str, Any]] = []
    for item in items:
        event = item.event
        topic, outcome = _topic_of(event, groups)
        outcomes[outcome] += 1
        receipts.append(_receipt(item, batch_id, outcome, now))
        if outcome != APPLIED:
            continue
        if event.action in _DECIDING:
            decisions.append(_email_decision(item, topic, _patron_of(item, named), batch_id))
        if event.action in _SUPPRESSING:
            reason = event.suppression or Suppression.SPAM_REPORT
            suppressions.append((item.address, reason.value, event.occurred_at))
        elif event.action is Action.UNDELIVERABLE:
            marks.append((item.address, event.detail or event.name, event.occurred_at))
    record_email_decisions(session, ctx, decisions, now=now)
    suppress_addresses(session, suppressions)
    mark_undeliverable_addresses(session, marks)
    session.execute(_RECEIPTS.insert(), receipts)
    return outcomes


def _apply_alone(session: Session, ctx: ServiceContext, item: _Work, groups: Mapping[int, str],
                 named: Mapping[str, Patron], batch_id: int, now: datetime,
                 reject: Callable[[int, str], None]) -> str | None:
    """Apply one event inside its own savepoint; its outcome, or None when it was rejected."""
    event = item.event
    topic, outcome = _topic_of(event, groups)
    try:
        with session.begin_nested():
            if outcome == APPLIED:
                _apply(session, ctx, item, topic, _patron_of(item, named), batch_id, now)
            session.execute(_RECEIPTS.insert(), [_receipt(item, batch_id, outcome, now)])
    except IntegrityError:
        if _received(session, item):  # another process applied it meanwhile
            return DUPLICATE
        logger.error("SendGrid batch %d: event %d not applied: IntegrityError", batch_id,
                     item.index)
        reject(item.index, "not applied: the database refused it (IntegrityError)")
        return None
    except SQLAlchemyError as error:
        if is_database_outage(error):
            raise
        logger.error("SendGrid batch %d: event %d not applied: %s", batch_id, item.index,
                     type(error).__name__)
        reject(item.index, f"not applied: the database refused it ({type(error).__name__})")
        return None
    except Exception as error:  # a defect met by this event alone: the others still count
        logger.error("SendGrid batch %d: event %d not applied: %s", batch_id, item.index,
                     type(error).__name__)
        reject(item.index, f"not applied: {_described(error)}")
        return None
    return outcome


def _topic_of(event: SendGridEvent, groups: Mapping[int, str]) -> tuple[str | None, str]:
    """The topic an event's unsubscribe group is mapped to, and whether it can be applied."""
    topic = groups.get(event.group_id) if event.group_id is not None else None
    return topic, UNKNOWN_GROUP if event.group_id is not None and topic is None else APPLIED


def _patron_of(item: _Work, named: Mapping[str, Patron]) -> Patron | None:
    """The patron the message named, if they are at the event's address (else the address alone
    decides: the message named someone else)."""
    patron = named.get(item.event.patron_public_id or "")
    return patron if patron is not None and patron.address_key == item.address else None


def _receipt(item: _Work, batch_id: int, outcome: str, now: datetime) -> dict[str, Any]:
    event = item.event
    return {"content_hash": item.content_hash, "sg_event_id": event.sg_event_id,
            "batch_id": batch_id, "event": event.name, "asm_group_id": event.group_id,
            "occurred_at": event.occurred_at, "received_at": now, "outcome": outcome}


def _described(error: Exception) -> str:
    """The error's type and the first line of its message: a database error's further lines hold the
    statement and its parameters, which may hold addresses."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _received(session: Session, item: _Work) -> bool:
    """Whether a receipt for this event (its content or its sg_event_id) is in the database."""
    conditions = [SendGridEventReceipt.content_hash == item.content_hash]
    if item.event.sg_event_id:
        conditions.append(SendGridEventReceipt.sg_event_id == item.event.sg_event_id)
    return session.scalar(select(SendGridEventReceipt.id).where(or_(*conditions)).limit(1)) is not None


def _apply(session: Session, ctx: ServiceContext, item: _Work, topic: str | None,
           patron: Patron | None, batch_id: int, now: datetime) -> None:
    event = item.event
    if event.action in _DECIDING:
        record_email_decisions(session, ctx, [_email_decision(item, topic, patron, batch_id)],
                               now=now)
    if event.action in _SUPPRESSING:
        reason = event.suppression or Suppression.SPAM_REPORT
        suppress_address(session, item.address, reason.value, event.occurred_at)
    elif event.action is Action.UNDELIVERABLE:
        mark_undeliverable(session, item.address, event.detail or event.name, event.occurred_at)


def _email_decision(item: _Work, topic: str | None, patron: Patron | None,
                    batch_id: int) -> EmailDecision:
    event = item.event
    evidence = {"sendgrid_event": event.name, "webhook_batch": str(batch_id)}
    if event.sg_message_id:
        evidence["sg_message_id"] = event.sg_message_id
    decision = Decision.OPT_IN if event.action is Action.OPT_IN_TOPIC else Decision.OPT_OUT
    return EmailDecision(email=event.email, address=item.address, decision=decision, topic=topic,
                         occurred_at=event.occurred_at, source=Source.SENDGRID_WEBHOOK,
                         patron=patron, evidence=evidence, sg_event_id=event.sg_event_id)


def _receipts_for(session: Session, work: list[_Work]) -> tuple[set[str], set[str]]:
    """The content hashes and sg_event_ids of these events already received."""
    hashes = [item.content_hash for item in work]
    ids = [item.event.sg_event_id for item in work if item.event.sg_event_id]
    seen_hashes: set[str] = set()
    seen_ids: set[str] = set()
    for start in range(0, len(hashes), 500):
        seen_hashes.update(session.scalars(select(SendGridEventReceipt.content_hash).where(
            SendGridEventReceipt.content_hash.in_(hashes[start:start + 500]))))
    for start in range(0, len(ids), 500):
        found = session.scalars(select(SendGridEventReceipt.sg_event_id).where(
            SendGridEventReceipt.sg_event_id.in_(ids[start:start + 500])))
        seen_ids.update(id_ for id_ in found if id_)
    return seen_hashes, seen_ids


def _named_patrons(session: Session, work: list[_Work]) -> dict[str, Patron]:
    """The patrons named by the events' `patron_id` custom arg, by public id."""
    public_ids = sorted({item.event.patron_public_id for item in work
                         if item.event.patron_public_id})
    found: dict[str, Patron] = {}
    for start in range(0, len(public_ids), 500):
        for patron in session.scalars(select(Patron).where(
                Patron.public_id.in_(public_ids[start:start + 500]))):
            found[patron.public_id] = patron
    return found

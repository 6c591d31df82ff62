"""Erasure: removing a patron's personal data everywhere it is held, while keeping what the library
needs to go on honouring their wishes (the ledger's decisions under a tombstone, keyed hashes of
addresses with their decisions, suppressions and undeliverable marks; SendGrid's suppressions)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import VENDOR_PURPOSES
from consent_service.models import (
    ConsentEvent,
    ErasureRequest,
    FamilyRequest,
    GuardianLink,
    GuardianRequest,
    IdempotentResponse,
    OutboxMessage,
    Patron,
    SuppressionSyncJob,
    UnsubscribeFeedback,
    WebhookBatch,
)
from consent_service.models.columns import new_public_id
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.ledger_chain import forget_personal_evidence

TOMBSTONE_PREFIX = "erased-"
ERASED_ADDRESS = b"erased@invalid.example"  # what replaces an erased address in raw webhook bodies
REQUESTERS = ("patron", "guardian", "staff", "api", "cli", "retention")
GUARDIAN_TEMPLATES = ("guardian_notice", "guardian_confirmation")


class ErasureError(ConsentServiceError):
    """An erasure or erasure request that cannot be made (unknown patron, already erased)."""


@dataclass
class Erasure:
    """What an erasure removed, by kind, and the tombstone's new public id."""

    public_id: str
    erased_at: datetime
    counts: dict[str, int] = field(default_factory=dict)


def request_erasure(session: Session, patron: Patron, *, requested_by: str, now: datetime,
                    guardian_link_id: int | None = None) -> tuple[ErasureRequest, bool]:
    """Ask staff to erase a patron (from the preference center, or a guardian for a child): an open
    task, one per patron (asking again while one is open adds nothing). Returns the request and
    whether it is new; commits.

    :raise ErasureError: the patron is already erased.
    """
    if patron.erased_at is not None:
        raise ErasureError("this patron's data has been erased already")
    existing = session.scalar(select(ErasureRequest).where(
        ErasureRequest.patron_id == patron.id, ErasureRequest.status == "open").limit(1))
    if existing is not None:
        return existing, False
    task = ErasureRequest(patron_id=patron.id, requested_by=requested_by,
                          guardian_link_id=guardian_link_id, status="open", created_at=now)
    session.add(task)
    session.commit()
    return task, True


def erase_patron(session: Session, ctx: ServiceContext, patron: Patron, *, requested_by: str,
                 done_by: str, now: datetime) -> Erasure:
    """Erase a patron's personal data; commits once.

    Removes: names, email, postal address, birth date and card number from the patron (the card
    becomes a tombstone, the public id is replaced so old links die, the status is inactive and
    `erased_at` is set); every personal evidence value (IP, user agent, notes, staff and typed
    names) from the patron's events and from events a guardian link of theirs made, keeping the
    digests so the ledger still verifies; unsubscribe feedback text; guardian links to and from
    the patron (the children keep every decision made for them) and the email of their guardian
    requests (a pending one expires); their mail in the outbox (a pending one is not sent); and
    API responses kept for retries that name them. While no other patron has the same address:
    that address in raw webhook bodies and in SendGrid sync jobs, and the guardian mail sent to it.

    Keeps: the ledger's decisions, times and sources under the tombstone; the keyed hash of the
    address with its decisions, suppression and undeliverable mark, so that a later import,
    webhook or API call with the same address cannot mail it again; SendGrid's suppressions (no
    call removes them); the access log and the disclosure record (who was in which export).
    Records an opt-out for each vendor purpose first (source `erasure`), so a vendor export's
    withdrawn-since list asks the vendor to delete the person. Closes the patron's open erasure
    requests, or records a done one, with who carried it out.

    :raise ErasureError: the patron is already erased.
    """
    if patron.erased_at is not None:
        raise ErasureError("this patron's data has been erased already")
    counts: dict[str, int] = {}
    email = patron.email
    links = list(session.scalars(select(GuardianLink).where(or_(
        GuardianLink.child_id == patron.id, GuardianLink.guardian_id == patron.id,
        *([GuardianLink.guardian_email == email] if email else [])))))
    link_refs = [link.public_id for link in links if link.child_id != patron.id]

    for purpose in VENDOR_PURPOSES:
        record_decision(session, ctx, DecisionRequest(
            purpose=purpose, decision=Decision.OPT_OUT, source=Source.ERASURE, actor=Actor.SYSTEM,
            occurred_at=now, patron=patron, evidence={"erasure": "yes"}), now=now)
    session.flush()

    events = list(session.scalars(select(ConsentEvent).where(or_(
        ConsentEvent.patron_id == patron.id,
        *([ConsentEvent.actor_ref.in_(link_refs)] if link_refs else [])))))
    counts["event evidence"] = sum(forget_personal_evidence(event) for event in events)
    counts["unsubscribe feedback"] = session.execute(
        update(UnsubscribeFeedback).where(
            UnsubscribeFeedback.event_id.in_([e.id for e in events if e.patron_id == patron.id]),
            UnsubscribeFeedback.text != "").values(text="")).rowcount

    shared = bool(email) and session.scalar(select(func.count()).select_from(Patron).where(
        Patron.email == email, Patron.id != patron.id, Patron.erased_at.is_(None))) > 0
    guardian_addresses = _guardian_addresses(session, links, patron)
    counts["outbox messages"] = _erase_mail(session, patron, None if shared else email,
                                            guardian_addresses)
    counts.update(_erase_links(session, patron, links, None if shared else email))
    if email and not shared:
        counts["webhook batches"] = _erase_from_webhook_bodies(session, email)
        counts["sync job addresses"] = session.execute(
            update(SuppressionSyncJob).where(SuppressionSyncJob.email == email)
            .values(email=None)).rowcount
    counts["idempotent responses"] = _erase_api_responses(session, patron)

    patron.first_name = patron.last_name = ""
    patron.email = patron.address_key = None
    patron.birth_date = None
    patron.street = patron.city = patron.state = patron.postal_code = ""
    patron.card_number = TOMBSTONE_PREFIX + secrets.token_hex(8)
    patron.ils_id = None
    patron.public_id = new_public_id()
    patron.status = "inactive"
    patron.erased_at = patron.updated_at = now
    _close_requests(session, patron, requested_by=requested_by, done_by=done_by, now=now)
    session.commit()
    return Erasure(patron.public_id, now, {k: v for k, v in counts.items() if v})


def _guardian_addresses(session: Session, links: list[GuardianLink], patron: Patron) -> list[str]:
    """The addresses of a child's guardians, where the mail about the child went."""
    addresses = []
    for link in links:
        if link.child_id != patron.id:
            continue
        if link.guardian_email:
            addresses.append(link.guardian_email)
        elif link.guardian_id is not None:
            guardian = session.get(Patron, link.guardian_id)
            if guardian is not None and guardian.email:
                addresses.append(guardian.email)
    return addresses


def _erase_mail(session: Session, patron: Patron, email: str | None,
                guardian_addresses: list[str]) -> int:
    """Blank the outbox's copies of mail to or about the patron; a pending one is not sent."""
    about_child = [OutboxMessage.template.in_(GUARDIAN_TEMPLATES)
                   & OutboxMessage.to_address.in_(guardian_addresses)
                   & OutboxMessage.text_body.contains(patron.first_name)] \
        if guardian_addresses and patron.first_name else []
    messages = session.scalars(select(OutboxMessage).where(or_(
        OutboxMessage.patron_id == patron.id,
        *([func.lower(OutboxMessage.to_address) == email.lower()] if email else []),
        *about_child)))
    count = 0
    for message in messages:
        count += 1
        message.to_address = None
        message.subject = message.text_body = message.html_body = ""
        message.headers, message.custom_args = {}, {}
        message.patron_id = None
        if message.status == "pending":
            message.status, message.last_error = "failed", "erased before it was sent"
    return count


def _erase_links(session: Session, patron: Patron, links: list[GuardianLink],
                 email: str | None) -> dict[str, int]:
    """Remove the guardian links to and from the patron and the addresses of the guardian
    requests made for them or sent to them; a pending request expires."""
    link_ids = [link.id for link in links]
    requests = list(session.scalars(select(GuardianRequest).where(or_(
        GuardianRequest.child_id == patron.id,
        *([GuardianRequest.guardian_link_id.in_(link_ids)] if link_ids else []),
        *([GuardianRequest.to_email == email] if email else [])))))
    for request in requests:
        request.to_email = None
        if request.status == "pending":
            request.status = "expired"
    if link_ids:
        for model in (GuardianRequest, FamilyRequest, ErasureRequest):
            session.execute(update(model).where(model.guardian_link_id.in_(link_ids))
                            .values(guardian_link_id=None))
        session.execute(delete(GuardianLink).where(GuardianLink.id.in_(link_ids)))
    return {"guardian links": len(link_ids), "guardian requests": len(requests)}


def _erase_from_webhook_bodies(session: Session, email: str) -> int:
    """Replace the address in the raw bodies of SendGrid's webhook batches (and in the reasons kept
    for rejected events): the events there were applied already, or will be, by their address key."""
    pattern = re.compile(re.escape(email.encode()), re.IGNORECASE)
    text_pattern = re.compile(re.escape(email), re.IGNORECASE)
    count = 0
    batches = session.scalars(select(WebhookBatch).where(WebhookBatch.body.is_not(None))
                              .execution_options(yield_per=200))
    for batch in batches:
        body = batch.body or b""
        cleaned = pattern.sub(ERASED_ADDRESS, body)
        rejected = batch.rejected
        if rejected and any(text_pattern.search(str(r.get("reason", ""))) for r in rejected):
            batch.rejected = [{**r, "reason": text_pattern.sub(ERASED_ADDRESS.decode(),
                                                               str(r.get("reason", "")))}
                              for r in rejected]
        if cleaned != body:
            batch.body = cleaned
            count += 1
    return count


def _erase_api_responses(session: Session, patron: Patron) -> int:
    """Drop the API answers kept for retries that name the patron (a retry then repeats the
    write, which the ledger's rules make harmless)."""
    names = [value for value in (patron.card_number, patron.public_id, patron.email) if value]
    if not names:
        return 0
    return session.execute(delete(IdempotentResponse).where(
        or_(*(IdempotentResponse.body.contains(value) for value in names)))).rowcount


def _close_requests(session: Session, patron: Patron, *, requested_by: str, done_by: str,
                    now: datetime) -> None:
    open_requests = list(session.scalars(select(ErasureRequest).where(
        ErasureRequest.patron_id == patron.id, ErasureRequest.status == "open")))
    if not open_requests:
        if requested_by not in REQUESTERS:
            raise ErasureError(f"unknown requester {requested_by!r}")
        open_requests = [ErasureRequest(patron_id=patron.id, requested_by=requested_by,
                                        created_at=now)]
        session.add(open_requests[0])
    for request in open_requests:
        request.status, request.done_at, request.done_by = "done", now, done_by[:200]
    for task in session.scalars(select(FamilyRequest).where(
            FamilyRequest.child_id == patron.id, FamilyRequest.status == "open")):
        task.status, task.done_at = "done", now


def find_patron_to_erase(session: Session, *, card_number: str | None = None,
                         public_id: str | None = None) -> Patron:
    """The patron with this card number or public id.

    :raise ErasureError: no such patron (an erased patron's card number is gone).
    """
    query = select(Patron)
    if card_number is not None:
        query = query.where(Patron.card_number == card_number.strip())
    else:
        query = query.where(Patron.public_id == (public_id or "").strip())
    patron = session.scalar(query)
    if patron is None:
        raise ErasureError(f"no patron with {'card number' if card_number is not None else 'id'} "
                           f"{card_number if card_number is not None else public_id}")
    return patron


@dataclass(frozen=True)
class ErasureTask:
    """An erasure request as staff see it."""

    id: int
    patron_public_id: str
    card_number: str
    first_name: str
    requested_by: str
    status: str
    created_at: datetime
    done_at: datetime | None
    done_by: str | None


def erasure_tasks(session: Session, *, limit: int = 200) -> list[ErasureTask]:
    """Erasure requests, open ones first (oldest first), then the latest done, with who did them."""
    rows = session.execute(
        select(ErasureRequest, Patron).join(Patron, Patron.id == ErasureRequest.patron_id)
        .order_by((ErasureRequest.status == "done"), ErasureRequest.done_at.desc(),
                  ErasureRequest.created_at, ErasureRequest.id).limit(limit))
    return [ErasureTask(task.id, patron.public_id, patron.card_number, patron.first_name,
                        task.requested_by, task.status, task.created_at, task.done_at, task.done_by)
            for task, patron in rows]


def carry_out_request(session: Session, ctx: ServiceContext, request_id: int, *, done_by: str,
                      now: datetime) -> Erasure:
    """Carry out an open erasure request (staff); commits.

    :raise ErasureError: an unknown or closed request.
    """
    task = session.get(ErasureRequest, request_id)
    if task is None or task.status != "open":
        raise ErasureError(f"no open erasure request {request_id}")
    patron = session.get(Patron, task.patron_id)
    if patron is None:
        raise ErasureError(f"no open erasure request {request_id}")
    return erase_patron(session, ctx, patron, requested_by=task.requested_by, done_by=done_by,
                        now=now)

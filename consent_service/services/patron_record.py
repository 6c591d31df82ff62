"""A patron's record as staff see it: decisions in force, eligibility, the ledger, guardians; every
opening of it written to the access log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from consent_service.domain.eligibility import Reason
from consent_service.domain.guardians import guardian_purposes
from consent_service.domain.ledger import age_on
from consent_service.domain.purposes import VENDOR_PURPOSES, Basis, Purpose
from consent_service.models import (
    AddressDecision,
    ConsentEvent,
    GuardianLink,
    GuardianRequest,
    Patron,
    PatronDecision,
    Topic,
)
from consent_service.services.access_log import Access, log_access
from consent_service.services.context import ServiceContext
from consent_service.services.staff_desk import patron_by_public_id
from consent_service.services.standing import load_standings

HISTORY_PAGE_SIZE = 50

PATRON_SCOPE = "patron"  # a decision on the patron's own record
ADDRESS_SCOPE = "address"  # an email decision on the patron's address, whoever made it


@dataclass(frozen=True)
class InForce:
    """A decision in force, with the event that made it: its source, time and staff evidence."""

    scope: str
    purpose: str
    topic: str
    decision: str
    actor: str
    source: str
    occurred_at: datetime
    staff: str
    source_detail: str = ""  # the library's own label, or the ILS field, of an imported decision


@dataclass(frozen=True)
class Eligibility:
    """Whether the patron may be contacted or used for a purpose (and topic) today, and why not."""

    purpose: Purpose
    topic: str | None
    allowed: bool
    reason: Reason | None
    applies: bool = True  # False: a guardian-only purpose for a patron past its age


@dataclass(frozen=True)
class HistoryLine:
    """One event of the ledger about the patron or their email address."""

    scope: str
    purpose: str
    topic: str
    decision: str
    source: str
    actor: str
    occurred_at: datetime
    recorded_at: datetime
    effective: bool
    staff: str
    note: str
    source_detail: str = ""


@dataclass(frozen=True)
class Relative:
    """A guardian or a child linked to the patron: another patron record, or (a guardian not yet
    known as a patron) an email address. `ref` is what an ID check names the guardian by."""

    public_id: str | None
    card_number: str | None
    name: str
    email: str | None
    linked_at: datetime

    @property
    def ref(self) -> str:
        return self.card_number or self.email or ""


@dataclass(frozen=True)
class PendingRequest:
    """A guardian consent request not yet answered, about this patron or one of their children."""

    child_name: str
    child_card: str
    sent_to: str
    created_at: datetime
    last_sent_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class PatronRecord:
    """Everything the staff patron page shows."""

    public_id: str
    card_number: str
    first_name: str
    last_name: str
    email: str | None
    birth_date: date | None
    age: int | None
    status: str
    preferred_language: str
    postal_address: str
    in_force: list[InForce]
    eligibility: list[Eligibility]
    history: list[HistoryLine]
    history_total: int
    history_page: int
    history_pages: int
    guardians: list[Relative]
    children: list[Relative]
    pending: list[PendingRequest]
    id_check_purposes: list[str]  # vendor sharing a guardian decides for this child today
    topic_names: dict[str, str]


def open_patron_record(session: Session, ctx: ServiceContext, public_id: str, *, staff_id: int,
                       now: datetime, history_page: int = 1) -> PatronRecord:
    """The patron's record for the staff page, and an access log entry ("view", this staff member,
    now), committed although the page only reads: library records are confidential, and the log
    is how the library shows who saw one. The ledger history is newest first, HISTORY_PAGE_SIZE
    events a page.

    :raise PatronRecordNotFoundError: for an unknown patron (nothing is logged).
    """
    patron = patron_by_public_id(session, public_id)
    today = ctx.today(now)
    topic_names = dict(session.execute(select(Topic.key, Topic.name).order_by(Topic.key)).all())
    history, total, page, pages = _history(session, patron, history_page)
    guardians = _relatives(session, GuardianLink.child_id == patron.id, "guardian_id")
    deciding = {p.key for p in guardian_purposes(ctx.catalog, patron.birth_date, today)}
    record = PatronRecord(
        public_id=patron.public_id, card_number=patron.card_number,
        first_name=patron.first_name, last_name=patron.last_name, email=patron.email,
        birth_date=patron.birth_date,
        age=age_on(patron.birth_date, today) if patron.birth_date else None,
        status=patron.status, preferred_language=patron.preferred_language,
        postal_address=", ".join(part for part in (patron.street, patron.city, patron.state,
                                                   patron.postal_code) if part),
        in_force=_in_force(session, patron),
        eligibility=_eligibility(session, ctx, patron, list(topic_names), today),
        history=history, history_total=total, history_page=page, history_pages=pages,
        guardians=guardians,
        children=_relatives(session, GuardianLink.guardian_id == patron.id, "child_id"),
        pending=_pending(session, patron),
        id_check_purposes=[key for key in VENDOR_PURPOSES if key in deciding] if guardians else [],
        topic_names=topic_names,
    )
    log_access(session, staff_id, [patron.id], Access.VIEW, now=now)
    session.commit()
    return record


def _in_force(session: Session, patron: Patron) -> list[InForce]:
    lines = []
    levels: list[tuple[str, Any, Any]] = [
        (PATRON_SCOPE, PatronDecision, PatronDecision.patron_id == patron.id)]
    if patron.address_key:
        levels.append((ADDRESS_SCOPE, AddressDecision,
                       AddressDecision.address_key == patron.address_key))
    for scope, model, where in levels:
        rows = session.execute(select(model, ConsentEvent.source, ConsentEvent.evidence)
                               .join(ConsentEvent, ConsentEvent.id == model.event_id)
                               .where(where).order_by(model.purpose, model.topic))
        lines += [InForce(scope, row.purpose, row.topic, row.decision, row.actor, source,
                          row.occurred_at, _evidence(evidence, "staff"),
                          _evidence(evidence, "source_detail"))
                  for row, source, evidence in rows]
    return lines


def _eligibility(session: Session, ctx: ServiceContext, patron: Patron, topics: list[str],
                 today: date) -> list[Eligibility]:
    standing = load_standings(session, [patron])[patron.id]
    age = age_on(patron.birth_date, today) if patron.birth_date else None
    lines = []
    for purpose in ctx.catalog:
        applies = purpose.basis is not Basis.GUARDIAN_ONLY or (
            age is not None and age < purpose.guardian_opt_in_under)
        for topic in [None, *topics] if purpose.has_topics else [None]:
            verdict = standing.verdict(purpose, topic, today)
            lines.append(Eligibility(purpose, topic, verdict.allowed, verdict.reason, applies))
    return lines


def _history(session: Session, patron: Patron,
             page: int) -> tuple[list[HistoryLine], int, int, int]:
    about = ConsentEvent.patron_id == patron.id
    if patron.address_key:
        about = or_(about, ConsentEvent.address_key == patron.address_key)
    total = session.scalar(select(func.count()).select_from(ConsentEvent).where(about)) or 0
    pages = max(1, -(-total // HISTORY_PAGE_SIZE))
    page = min(max(page, 1), pages)
    events = session.scalars(select(ConsentEvent).where(about)
                             .order_by(ConsentEvent.occurred_at.desc(), ConsentEvent.id.desc())
                             .limit(HISTORY_PAGE_SIZE).offset((page - 1) * HISTORY_PAGE_SIZE))
    lines = [HistoryLine(PATRON_SCOPE if event.patron_id == patron.id else ADDRESS_SCOPE,
                         event.purpose, event.topic, event.decision, event.source, event.actor,
                         event.occurred_at, event.recorded_at, event.effective,
                         _evidence(event.evidence, "staff"), _evidence(event.evidence, "note"),
                         _evidence(event.evidence, "source_detail"))
             for event in events]
    return lines, total, page, pages


def _evidence(evidence: dict[str, Any] | None, key: str) -> str:
    value = (evidence or {}).get(key)
    return str(value) if value else ""


def _relatives(session: Session, where: Any, other: str) -> list[Relative]:
    """The links matching `where`, each described by the patron in its `other` column."""
    relatives = []
    for link in session.scalars(select(GuardianLink).where(where).order_by(GuardianLink.id)):
        patron_id = getattr(link, other)
        person = session.get(Patron, patron_id) if patron_id is not None else None
        if person is not None:
            relatives.append(Relative(person.public_id, person.card_number,
                                      f"{person.first_name} {person.last_name}".strip(),
                                      person.email, link.created_at))
        else:
            relatives.append(Relative(None, None, "", link.guardian_email, link.created_at))
    return relatives


def _pending(session: Session, patron: Patron) -> list[PendingRequest]:
    as_guardian = select(GuardianLink.id).where(GuardianLink.guardian_id == patron.id)
    requests = session.execute(
        select(GuardianRequest, Patron.first_name, Patron.last_name, Patron.card_number)
        .join(Patron, Patron.id == GuardianRequest.child_id)
        .where(GuardianRequest.status == "pending",
               or_(GuardianRequest.child_id == patron.id,
                   GuardianRequest.guardian_link_id.in_(as_guardian)))
        .order_by(GuardianRequest.created_at, GuardianRequest.id))
    return [PendingRequest(f"{first} {last}".strip(), card, request.to_email or "",
                           request.created_at, request.last_sent_at, request.expires_at)
            for request, first, last, card in requests]

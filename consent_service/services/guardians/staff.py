"""What staff do for guardians: linking one to a child, a fresh guardian link, the open data and
erasure requests, and vendor-sharing consent after an ID check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from consent_service.domain.addresses import normalize_email
from consent_service.domain.guardians import (
    guardian_purposes,
)
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import VENDOR_PURPOSES
from consent_service.models import FamilyRequest, GuardianLink, GuardianRequest, Patron
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.guardians.choices import (
    NOTICE_VERSION,
    TYPED_NAME_LIMIT,
    DecisionLine,
    GuardianError,
)
from consent_service.services.guardians.consent_request import (
    needs_guardian_request,
    request_guardian_consent,
)
from consent_service.services.guardians.notices import (
    guardian_address,
    guardian_url,
    mark_answered,
    queue_confirmation,
)
from consent_service.services.patrons import find_by_card


@dataclass(frozen=True)
class Linked:
    """What linking a guardian did: the link, whether it is new, and the request it made."""

    link: GuardianLink
    created: bool
    request: GuardianRequest | None


def link_guardian(session: Session, ctx: ServiceContext, child_card: str, *,
                  guardian_card: str | None = None, guardian_email: str | None = None,
                  now: datetime) -> Linked:
    """Link a guardian (a patron by card number, or an email address) to a child, unless they are
    linked already, and ask them for consent when the child needs it; commits.

    :raise GuardianError: without exactly one of a guardian card and a guardian email, or for a
        patron named as their own guardian.
    :raise PatronNotFoundError: for an unknown card.
    :raise InvalidEmailError: for an address that cannot receive mail.
    """
    if (guardian_card is None) == (guardian_email is None):
        raise GuardianError("give either a guardian card number or a guardian email address")
    child = find_by_card(session, child_card)
    if guardian_card is not None:
        guardian = find_by_card(session, guardian_card)
        if guardian.id == child.id:
            raise GuardianError("a patron cannot be their own guardian")
        same = GuardianLink.guardian_id == guardian.id
        fields: dict[str, Any] = {"guardian_id": guardian.id}
    else:
        email = normalize_email(guardian_email or "")
        same = GuardianLink.guardian_email == email
        fields = {"guardian_email": email}
    link = session.scalar(select(GuardianLink).where(GuardianLink.child_id == child.id, same))
    created = link is None
    if link is None:
        link = GuardianLink(child_id=child.id, created_at=now, **fields)
        session.add(link)
        session.flush()
    request = request_guardian_consent(session, ctx, child, link, now=now)
    session.commit()
    return Linked(link, created, request)


def guardian_link_for_card(session: Session, ctx: ServiceContext, child_card: str, *,
                           now: datetime) -> str:
    """A fresh guardian link (absolute URL) for the child's latest open request (pending, or
    answered: answering again is a change); when there is none, a new request is made (and its
    notice sent) for the child's first guardian with an email address. Commits.

    :raise GuardianError: when the child needs no guardian's consent, has no guardian, or no
        guardian with an email address.
    """
    child = find_by_card(session, child_card)
    latest = session.scalar(
        select(GuardianRequest).where(
            GuardianRequest.child_id == child.id, GuardianRequest.guardian_link_id.is_not(None),
            or_(GuardianRequest.status == "answered",
                (GuardianRequest.status == "pending") & (GuardianRequest.expires_at > now)))
        .order_by(GuardianRequest.created_at.desc(), GuardianRequest.id.desc()).limit(1))
    if latest is not None and guardian_purposes(ctx.catalog, child.birth_date,
                                                ctx.today(now)):
        return guardian_url(ctx, latest, child)
    if not needs_guardian_request(session, ctx, child, now=now):
        raise GuardianError(f"patron {child.card_number} needs no guardian's consent")
    links = list(session.scalars(
        select(GuardianLink).where(GuardianLink.child_id == child.id).order_by(GuardianLink.id)))
    if not links:
        raise GuardianError(f"patron {child.card_number} has no guardian linked "
                            "(link one with `flask guardians link`)")
    for link in links:
        request = request_guardian_consent(session, ctx, child, link, now=now)
        if request is not None:
            session.commit()
            return guardian_url(ctx, request, child)
    raise GuardianError(f"no guardian of patron {child.card_number} has an email address")


@dataclass(frozen=True)
class FamilyTask:
    """An open family request as staff see it."""

    id: int
    kind: str
    child_card: str
    child_first_name: str
    guardian: str  # the guardian's card number, or their email address
    created_at: datetime


def family_tasks(session: Session) -> list[FamilyTask]:
    """Open requests for a child's data or its erasure, oldest first."""
    tasks = []
    for task in session.scalars(select(FamilyRequest).where(FamilyRequest.status == "open")
                                .order_by(FamilyRequest.created_at, FamilyRequest.id)):
        child = session.get(Patron, task.child_id)
        link = session.get(GuardianLink, task.guardian_link_id) if task.guardian_link_id else None
        guardian = "-"
        if link is not None and link.guardian_id is not None:
            patron = session.get(Patron, link.guardian_id)
            guardian = f"card {patron.card_number}" if patron else "-"
        elif link is not None:
            guardian = link.guardian_email or "-"
        tasks.append(FamilyTask(task.id, task.kind, child.card_number if child else "-",
                                child.first_name if child else "", guardian, task.created_at))
    return tasks


def close_family_task(session: Session, task_id: int, *, now: datetime) -> FamilyRequest:
    """Mark a family request done (staff have answered it); commits.

    :raise GuardianError: for an unknown or already closed task.
    """
    task = session.get(FamilyRequest, task_id)
    if task is None or task.status != "open":
        raise GuardianError(f"no open family request {task_id}")
    task.status = "done"
    task.done_at = now
    session.commit()
    return task


def record_id_check(session: Session, ctx: ServiceContext, child_card: str, *, guardian: str,
                    purpose: str, staff: str, now: datetime) -> DecisionLine:
    """Record a guardian's consent to share a child's data with vendors, given in person after
    staff checked the guardian's ID: an opt-in by the guardian (source staff_desk, evidence method
    id_check and the staff member's name); a confirmation goes to the guardian's address. Commits.

    `guardian` is the guardian's card number, or the email address they are linked by.

    :raise GuardianError: for a purpose that is not vendor sharing, a child who is 13 or older, a
        guardian not linked to the child, or no staff name.
    """
    if purpose not in VENDOR_PURPOSES:
        raise GuardianError(f"an ID check is for {' or '.join(VENDOR_PURPOSES)}, not {purpose!r}")
    if not staff.strip():
        raise GuardianError("say which staff member checked the ID (--staff)")
    child = find_by_card(session, child_card)
    deciding = guardian_purposes(ctx.catalog, child.birth_date, ctx.today(now))
    if purpose not in {p.key for p in deciding}:
        raise GuardianError(f"patron {child.card_number} is not under 13: sharing with vendors "
                            "is not a guardian's decision")
    link = _link_of(session, child, guardian)
    evidence = {"method": "id_check", "staff": staff.strip()[:TYPED_NAME_LIMIT],
                "guardian_link": link.public_id, "notice_version": NOTICE_VERSION}
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, decision=Decision.OPT_IN, source=Source.STAFF_DESK, actor=Actor.GUARDIAN,
        occurred_at=now, patron=child, actor_ref=link.public_id, evidence=evidence), now=now)
    line = DecisionLine(purpose, None, None, Decision.OPT_IN)
    mark_answered(session, child, link, now)
    language = _guardian_language(session, link, child)
    queue_confirmation(session, ctx, to=guardian_address(session, link), language=language,
                        child=child, link=link, lines=[line], now=now)
    session.commit()
    return line


def _link_of(session: Session, child: Patron, guardian: str) -> GuardianLink:
    text = guardian.strip()
    if "@" in text:
        same = GuardianLink.guardian_email == normalize_email(text)
    else:
        same = GuardianLink.guardian_id == find_by_card(session, text).id
    link = session.scalar(select(GuardianLink).where(GuardianLink.child_id == child.id, same))
    if link is None:
        raise GuardianError(f"{text} is not linked to patron {child.card_number} as a guardian")
    return link


def _guardian_language(session: Session, link: GuardianLink, child: Patron) -> str:
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    return (guardian or child).preferred_language

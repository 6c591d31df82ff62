"""Unanswered requests over time: reminders with fresh links, and expiry that deletes what was
collected to ask."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.guardians import (
    guardian_purposes,
)
from consent_service.models import GuardianLink, GuardianRequest, Patron
from consent_service.services.context import ServiceContext
from consent_service.services.guardians.notices import queue_notice


def remind_guardians(session: Session, ctx: ServiceContext, *, now: datetime) -> int:
    """Send the notice again, with a fresh link, for every pending request that has not expired and
    whose child still needs a guardian; commits. How many were sent."""
    sent = 0
    pending = session.scalars(select(GuardianRequest).where(
        GuardianRequest.status == "pending", GuardianRequest.expires_at > now,
        GuardianRequest.guardian_link_id.is_not(None), GuardianRequest.to_email.is_not(None))
        .order_by(GuardianRequest.id)).all()
    for request in pending:
        child = session.get(Patron, request.child_id)
        link = session.get(GuardianLink, request.guardian_link_id)
        if child is None or link is None or not guardian_purposes(
                ctx.catalog, child.birth_date, ctx.today(now)):
            continue
        queue_notice(session, ctx, request, child, link, now=now, reminder=True)
        request.last_sent_at = now
        sent += 1
    session.commit()
    return sent


@dataclass(frozen=True)
class Expired:
    """What expiring unanswered requests removed."""

    requests: int
    guardian_emails: int


def expire_guardian_requests(session: Session, *, now: datetime) -> Expired:
    """Expire every pending request past its `expires_at` and delete what was collected for it:
    the address it was sent to, and the guardian link itself when it is only an email address and
    none of its requests was answered or is still pending. Commits."""
    due = session.scalars(select(GuardianRequest).where(
        GuardianRequest.status == "pending", GuardianRequest.expires_at <= now)).all()
    link_ids = {request.guardian_link_id for request in due if request.guardian_link_id}
    for request in due:
        request.status = "expired"
        request.to_email = None
    session.flush()
    deleted = 0
    for link_id in sorted(link_ids):
        link = session.get(GuardianLink, link_id)
        if link is None or link.guardian_id is not None:
            continue
        still_used = session.scalar(select(GuardianRequest.id).where(
            GuardianRequest.guardian_link_id == link.id,
            GuardianRequest.status.in_(("pending", "answered"))).limit(1))
        if still_used is not None:
            continue
        for request in session.scalars(select(GuardianRequest).where(
                GuardianRequest.guardian_link_id == link.id)):
            request.guardian_link_id = None
        session.delete(link)
        deleted += 1
    session.commit()
    return Expired(len(due), deleted)

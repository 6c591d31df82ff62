"""Retention: how long the service keeps raw webhook bodies, client evidence, unanswered guardian
requests and inactive patrons' personal data, and the purge that applies those limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger_chain import CLIENT_EVIDENCE
from consent_service.models import (
    ConsentEvent,
    ErasureRequest,
    FamilyRequest,
    GuardianLink,
    GuardianRequest,
    Patron,
    WebhookBatch,
)
from consent_service.services.context import ServiceContext
from consent_service.services.erasure import erase_patron
from consent_service.services.ledger_chain import forget_personal_evidence

BATCH = 1000


@dataclass(frozen=True)
class RetentionSettings:
    """Days each kind of data is kept (0: kept until removed otherwise). See the README for the
    defaults and why."""

    webhook_body_days: int = 30
    evidence_days: int = 365
    guardian_request_days: int = 30
    inactive_patron_days: int = 3 * 365


class RetentionSettingError(ConsentServiceError):
    """A retention limit that is not a whole number of days, 0 or more."""


def settings_from(config: Mapping[str, Any]) -> RetentionSettings:
    """The limits from the app's settings (CONSENT_RETENTION_*).

    :raise RetentionSettingError: a negative limit.
    """
    days = {name: int(config[f"RETENTION_{name.upper()}"])
            for name in ("webhook_body_days", "evidence_days", "guardian_request_days",
                         "inactive_patron_days")}
    for name, value in days.items():
        if value < 0:
            raise RetentionSettingError(f"CONSENT_RETENTION_{name.upper()} must be 0 (keep) or more "
                                        f"days, not {value}")
    return RetentionSettings(**days)


KINDS = ("webhook batch bodies", "events' IP and user-agent evidence",
         "unanswered guardian requests", "email-only guardian links", "inactive patrons (erased)")


@dataclass
class Purged:
    """What a purge removed (or, dry, would remove), by kind, every kind listed."""

    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


def purge(session: Session, ctx: ServiceContext, settings: RetentionSettings, *, now: datetime,
          dry_run: bool = False) -> Purged:
    """Remove what is older than the settings allow:

    - the raw body of a processed SendGrid webhook batch received more than `webhook_body_days`
      ago (its counts, receipts and the events it made stay; a batch still to be processed keeps
      its body);
    - the IP network and user agent kept as evidence on events recorded more than `evidence_days`
      ago, keeping their digests, so the ledger still verifies (the link id, time and source stay);
    - guardian requests left unanswered (pending or expired) whose answer was due more than
      `guardian_request_days` ago, and the email-only guardian links made for them that no answer
      or event used;
    - the personal data of a patron inactive, unchanged and without a new event for
      `inactive_patron_days`, by erasing them (an erasure record with done_by `retention`).

    A dry run counts the same rows and writes nothing. Each erasure commits on its own; the rest
    commits once.
    """
    purged = Purged(dry_run)
    counts = purged.counts
    if settings.webhook_body_days:
        cutoff = now - timedelta(days=settings.webhook_body_days)
        old = (WebhookBatch.body.is_not(None), WebhookBatch.status == "processed",
               WebhookBatch.received_at < cutoff)
        counts[KINDS[0]] = len(session.scalars(select(WebhookBatch.id).where(*old)).all())
        if not dry_run:
            session.execute(update(WebhookBatch).where(*old).values(body=None))
    if settings.evidence_days:
        counts[KINDS[1]] = _forget_client_evidence(
            session, now - timedelta(days=settings.evidence_days), dry_run)
    if settings.guardian_request_days:
        counts[KINDS[2]], counts[KINDS[3]] = _drop_unanswered_requests(
            session, now - timedelta(days=settings.guardian_request_days), dry_run)
    if dry_run:
        session.rollback()
    else:
        session.commit()
    if settings.inactive_patron_days:
        cutoff = now - timedelta(days=settings.inactive_patron_days)
        recent_event = exists().where(ConsentEvent.patron_id == Patron.id,
                                      ConsentEvent.recorded_at >= cutoff)
        idle = list(session.scalars(select(Patron).where(
            Patron.status == "inactive", Patron.erased_at.is_(None), Patron.updated_at < cutoff,
            ~recent_event).order_by(Patron.id)))
        counts[KINDS[4]] = len(idle)
        if not dry_run:
            for patron in idle:
                erase_patron(session, ctx, patron, requested_by="retention", done_by="retention",
                             now=now)
    return purged


def _forget_client_evidence(session: Session, cutoff: datetime, dry_run: bool) -> int:
    count = 0
    last_id = 0
    while True:
        events = session.scalars(select(ConsentEvent).where(
            ConsentEvent.recorded_at < cutoff, ConsentEvent.id > last_id)
            .order_by(ConsentEvent.id).limit(BATCH)).all()
        if not events:
            return count
        for event in events:
            if not CLIENT_EVIDENCE & set(event.evidence or {}):
                continue
            count += 1
            if not dry_run:
                forget_personal_evidence(event, CLIENT_EVIDENCE)
        last_id = events[-1].id
        if not dry_run:
            session.flush()


def _drop_unanswered_requests(session: Session, cutoff: datetime, dry_run: bool) -> tuple[int, int]:
    due = session.scalars(select(GuardianRequest).where(
        GuardianRequest.status.in_(("pending", "expired")), GuardianRequest.expires_at < cutoff)).all()
    link_ids = {request.guardian_link_id for request in due if request.guardian_link_id}
    due_ids = [request.id for request in due]
    links = []
    for link_id in sorted(link_ids):
        link = session.get(GuardianLink, link_id)
        if link is None or link.guardian_id is not None:
            continue
        used = session.scalar(select(GuardianRequest.id).where(
            GuardianRequest.guardian_link_id == link.id, GuardianRequest.id.not_in(due_ids)).limit(1))
        acted = session.scalar(select(ConsentEvent.id).where(
            ConsentEvent.actor_ref == link.public_id).limit(1))
        if used is None and acted is None:
            links.append(link.id)
    if not dry_run and due_ids:
        session.execute(delete(GuardianRequest).where(GuardianRequest.id.in_(due_ids)))
        if links:
            for model in (FamilyRequest, ErasureRequest):
                session.execute(update(model).where(model.guardian_link_id.in_(links))
                                .values(guardian_link_id=None))
            session.execute(delete(GuardianLink).where(GuardianLink.id.in_(links)))
    return len(due_ids), len(links)

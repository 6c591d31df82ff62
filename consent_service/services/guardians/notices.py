"""The mail a guardian gets: the consent request's notice, the "email plus" confirmation, and the
links in them."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Protocol

from babel.dates import format_date
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.guardians import guardian_purposes
from consent_service.domain.ledger import Decision, age_on
from consent_service.domain.purposes import CHILD_AGE, EMAIL_PURPOSE, VENDOR_PURPOSES
from consent_service.domain.tokens import LinkKind
from consent_service.mail.compose import (
    MessageCategory,
    Renderer,
    StencilRenderer,
    render,
    template_language,
)
from consent_service.models import GuardianLink, GuardianRequest, OutboxMessage, Patron
from consent_service.services.context import ServiceContext
from consent_service.services.guardians.choices import DecisionLine, load_topics
from consent_service.services.outgoing_mail import Recipient, outbox_row, queue_email
from consent_service.services.topics import name_in


def guardian_address(session: Session, link: GuardianLink) -> str | None:
    """Where a guardian is written to: the guardian patron's address, else the link's address."""
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    if guardian is not None and guardian.email:
        return guardian.email
    return link.guardian_email


def guardian_url(ctx: ServiceContext, request: NoticeRequest, child: NoticeChild) -> str:
    """A fresh guardian link for the request (it names the child and the request, nothing else)."""
    return ctx.link(LinkKind.GUARDIAN, child.public_id, ref=request.public_id)


def family_url(ctx: ServiceContext, link: GuardianLink) -> str:
    """A fresh family link for the guardian of `link`."""
    return ctx.link(LinkKind.FAMILY, link.public_id)


def _local_date(ctx: ServiceContext, at: datetime, language: str) -> str:
    return _long_date(ctx.today(at), template_language(language))


@functools.lru_cache(maxsize=64)
def _long_date(day: date, language: str) -> str:
    return format_date(day, format="long", locale=language)  # a bulk job asks for few dates


@functools.cache
def notice_renderer() -> StencilRenderer:
    """The renderer of a bulk job's notices, one per process (an import asks for its notices a
    chunk of rows at a time): the values each notice fills in are the names, the guardian link
    and the preference link."""
    return StencilRenderer(("child_first_name", "first_name", "guardian_url", "preferences_url"))


class NoticeChild(Protocol):
    """The columns of a child a notice reads (an ORM Patron or a result row)."""

    public_id: str
    first_name: str
    birth_date: date | None
    email: str | None


class NoticeRequest(Protocol):
    """The columns of a guardian request a notice reads (a GuardianRequest, or a row the bulk
    path inserts)."""

    public_id: str
    to_email: str | None
    language: str
    expires_at: datetime


def queue_notice(session: Session, ctx: ServiceContext, request: GuardianRequest, child: Patron,
                 link: GuardianLink, *, now: datetime, reminder: bool,
                 topics: Sequence[tuple[str, dict[str, str]]] | None = None) -> None:
    """Queue the notice (or reminder) asking the guardian of `link` to decide for `child`
    (`notice_row`; `topics` as `load_topics` gives them, read here when not given)."""
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    if topics is None:
        topics = load_topics(session) if child.email else []
    session.add(OutboxMessage(**notice_row(ctx, request, child, guardian, now=now,
                                           reminder=reminder, topics=topics)))


def notice_row(ctx: ServiceContext, request: NoticeRequest, child: NoticeChild,
               guardian: Recipient | None, *, now: datetime, reminder: bool,
               topics: Sequence[tuple[str, dict[str, str]]],
               renderer: Renderer = render) -> dict[str, Any]:
    """The outbox row of the notice (or reminder) asking `guardian` (a patron, or None for a
    guardian known only by the request's address) to decide for `child` (category notice): what
    a guardian decides for the child today, as `child_choices` offers it (email, one line with
    the topics, only for a child with an address), vendor sharing apart, a fresh guardian link,
    the date the request expires. `renderer` as `outbox_row` takes it."""
    today = ctx.today(now)
    deciding = guardian_purposes(ctx.catalog, child.birth_date, today)
    purposes: list[dict[str, Any]] = []
    for purpose in deciding:
        if purpose.discloses_to_vendor:
            continue
        if purpose.key == EMAIL_PURPOSE:
            if child.email:
                purposes.append({"key": EMAIL_PURPOSE, "topics": [
                    name_in(names, request.language) for _, names in topics]})
        else:
            purposes.append({"key": purpose.key, "topics": []})
    keys = {purpose.key for purpose in deciding}
    vendor_sharing = [
        {"key": purpose, "vendors": [{"name": v.name, "privacy_url": v.privacy_url}
                                     for v in ctx.guardians.vendors_for(purpose)]}
        for purpose in VENDOR_PURPOSES if purpose in keys
    ]
    context = {
        "child_first_name": child.first_name,
        "first_name": guardian.first_name if guardian is not None else "",
        "under_13": child.birth_date is not None and age_on(child.birth_date, today) < CHILD_AGE,
        "purposes": purposes,
        "vendor_sharing": vendor_sharing,
        "vendor_method": ctx.guardians.vendor_method.value,
        "guardian_url": guardian_url(ctx, request, child),
        "link_days": ctx.signer.lifetime_days(LinkKind.GUARDIAN),
        "response_days": ctx.guardians.response_days,
        "respond_by": _local_date(ctx, request.expires_at, request.language),
        "email_only": guardian is None,
        "policy_url": ctx.guardians.policy_url,
        "reminder": reminder,
    }
    return outbox_row(ctx, template="guardian_notice", to=request.to_email or "",
                      language=request.language, context=context,
                      category=MessageCategory.NOTICE.value, now=now, patron=guardian,
                      renderer=renderer)


def queue_confirmation(session: Session, ctx: ServiceContext, *, to: str | None, language: str,
                        child: Patron, link: GuardianLink, lines: Sequence[DecisionLine],
                        now: datetime) -> None:
    """The "email plus" confirmation: the decisions just made, and a family link to change them."""
    if not to or not lines:
        return
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    context = {
        "child_first_name": child.first_name,
        "first_name": guardian.first_name if guardian is not None else "",
        "decisions": [{"purpose": line.purpose,
                       "topic_name": name_in(line.topic_names, language) if line.topic_names
                       else None,
                       "allowed": line.decision is Decision.OPT_IN} for line in lines],
        "family_url": family_url(ctx, link),
        "link_days": ctx.signer.lifetime_days(LinkKind.FAMILY),
        "policy_url": ctx.guardians.policy_url,
    }
    queue_email(session, ctx, template="guardian_confirmation", to=to, language=language,
                context=context, category=MessageCategory.TRANSACTIONAL.value, now=now,
                patron=guardian)


def mark_answered(session: Session, child: Patron, link: GuardianLink, now: datetime) -> None:
    """A guardian who decides for a child answers their pending requests for the child."""
    for request in session.scalars(select(GuardianRequest).where(
            GuardianRequest.child_id == child.id, GuardianRequest.guardian_link_id == link.id,
            GuardianRequest.status == "pending")):
        request.status = "answered"
        request.answered_at = now

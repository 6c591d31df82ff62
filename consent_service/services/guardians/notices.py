"""The mail a guardian gets: the consent request's notice, the "email plus" confirmation, and the
links in them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from babel.dates import format_date
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.ledger import Decision
from consent_service.domain.purposes import EMAIL_PURPOSE, VENDOR_PURPOSES
from consent_service.domain.tokens import LinkKind
from consent_service.mail.compose import MessageCategory, template_language
from consent_service.models import GuardianLink, GuardianRequest, Patron
from consent_service.services.context import ServiceContext
from consent_service.services.guardians.choices import DecisionLine, child_choices
from consent_service.services.outgoing_mail import queue_email
from consent_service.services.standing import Standing
from consent_service.services.topics import name_in


def guardian_address(session: Session, link: GuardianLink) -> str | None:
    """Where a guardian is written to: the guardian patron's address, else the link's address."""
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    if guardian is not None and guardian.email:
        return guardian.email
    return link.guardian_email


def guardian_url(ctx: ServiceContext, request: GuardianRequest, child: Patron) -> str:
    """A fresh guardian link for the request (it names the child and the request, nothing else)."""
    return ctx.link(LinkKind.GUARDIAN, child.public_id, ref=request.public_id)


def family_url(ctx: ServiceContext, link: GuardianLink) -> str:
    """A fresh family link for the guardian of `link`."""
    return ctx.link(LinkKind.FAMILY, link.public_id)


def _local_date(ctx: ServiceContext, at: datetime, language: str) -> str:
    day = ctx.today(at)
    return format_date(day, format="long", locale=template_language(language))


def queue_notice(session: Session, ctx: ServiceContext, request: GuardianRequest, child: Patron,
                  link: GuardianLink, *, now: datetime, reminder: bool,
                  standing: Standing | None = None,
                  topics: Sequence[tuple[str, dict[str, str]]] | None = None) -> None:
    """Queue the notice (or reminder) asking the guardian of `link` to decide for `child`;
    `standing` and `topics` as `child_choices` takes them."""
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    view = child_choices(session, ctx, child, now=now, standing=standing, topics=topics)
    purposes: list[dict[str, Any]] = []
    for choice in view.choices:
        if choice.vendor:
            continue
        if choice.purpose == EMAIL_PURPOSE:
            if not purposes or purposes[-1]["key"] != EMAIL_PURPOSE:
                purposes.append({"key": EMAIL_PURPOSE, "topics": []})
            if choice.topic_names:
                purposes[-1]["topics"].append(name_in(choice.topic_names, request.language))
        else:
            purposes.append({"key": choice.purpose, "topics": []})
    vendor_sharing = [
        {"key": purpose, "vendors": [{"name": v.name, "privacy_url": v.privacy_url}
                                     for v in ctx.guardians.vendors_for(purpose)]}
        for purpose in VENDOR_PURPOSES if any(c.purpose == purpose for c in view.choices)
    ]
    context = {
        "child_first_name": child.first_name,
        "first_name": guardian.first_name if guardian is not None else "",
        "under_13": view.under_13,
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
    queue_email(session, ctx, template="guardian_notice", to=request.to_email or "",
                language=request.language, context=context,
                category=MessageCategory.NOTICE.value, now=now, patron=guardian)


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

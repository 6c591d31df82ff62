"""Look a patron up: their decisions in force and what they may be contacted for, and their links."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import WHOLE_PURPOSE, Key, Ruling, age_on
from consent_service.domain.purposes import EMAIL_PURPOSE
from consent_service.domain.tokens import LinkKind
from consent_service.models import Patron, Topic
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import checked_topic
from consent_service.services.standing import load_standings


class PatronNotFoundError(ConsentServiceError):
    """No patron has that card number."""


def find_by_card(session: Session, card_number: str) -> Patron:
    """The patron with this card number, or PatronNotFoundError."""
    patron = session.scalar(select(Patron).where(Patron.card_number == card_number.strip()))
    if patron is None:
        raise PatronNotFoundError(f"no patron with card number {card_number.strip()!r}")
    return patron


def _decisions(scope: str, state: dict[Key, Ruling]) -> list[dict[str, Any]]:
    return [
        {"scope": scope, "purpose": purpose, "topic": topic or None, "decision": r.decision.value,
         "actor": r.actor.value, "occurred_at": r.occurred_at.isoformat()}
        for (purpose, topic), r in sorted(state.items())
    ]


def describe_patron(session: Session, ctx: ServiceContext, card_number: str, *,
                    now: datetime) -> dict[str, Any]:
    """What staff and other systems may know of a patron's consents: the opaque id, status and age,
    the decisions in force (on the patron's record, and on their email address whoever made them),
    and eligibility for every purpose and every email topic. No name, address or card number."""
    patron = find_by_card(session, card_number)
    today = ctx.today(now)
    standing = load_standings(session, [patron])[patron.id]
    topics = list(session.scalars(select(Topic.key).order_by(Topic.key)))
    eligibility = []
    for purpose in ctx.catalog:
        for topic in [None, *topics] if purpose.has_topics else [None]:
            verdict = standing.verdict(purpose, topic, today)
            eligibility.append({
                "purpose": purpose.key, "topic": topic, "allowed": verdict.allowed,
                "reason": verdict.reason.value if verdict.reason else None,
            })
    return {
        "patron_id": patron.public_id,
        "status": patron.status,
        "age": age_on(patron.birth_date, today) if patron.birth_date else None,
        "has_email": patron.email is not None,
        "decisions": _decisions("patron", standing.patron_state)
        + _decisions("address", standing.address_state),
        "eligibility": eligibility,
    }


def link_for_card(session: Session, ctx: ServiceContext, kind: LinkKind, card_number: str,
                  topic: str | None = None) -> str:
    """An absolute signed link of `kind` for the patron with this card number (a topic is checked)."""
    patron = find_by_card(session, card_number)
    topic_key = checked_topic(session, EMAIL_PURPOSE, True, topic) if topic else WHOLE_PURPOSE
    return ctx.link(kind, patron.public_id, topic_key or None)

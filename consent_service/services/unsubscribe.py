"""Unsubscribe by a signed link: what it stops, the opt-out itself, and why the patron left."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.addresses import mask_email
from consent_service.domain.ledger import Actor, Decision, Ruling, Source, resolve
from consent_service.domain.purposes import EMAIL_PURPOSE
from consent_service.domain.text import UnsafeTextError, clean_text
from consent_service.domain.tokens import LinkClaims, LinkKind
from consent_service.models import Patron, Topic, UnsubscribeFeedback
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.links import open_link
from consent_service.services.standing import load_standing
from consent_service.services.topics import topic_names
from consent_service.services.write_turn import begin_writing

FEEDBACK_REASONS = ("too_many", "not_relevant", "never_signed_up", "other")
FEEDBACK_TEXT_LIMIT = 500


class InvalidFeedbackError(ConsentServiceError):
    """A "tell us why" answer with an unknown reason or too long a text."""


@dataclass(frozen=True)
class UnsubscribeLink:
    """What an unsubscribe link stops, for whom, and whether it is stopped already."""

    patron: Patron
    claims: LinkClaims
    topic: str | None  # None: all library email
    topic_names: Mapping[str, str] | None  # language -> the topic's name
    masked_email: str | None  # None: we have no email address for this patron, so nothing to stop
    stopped: Ruling | None  # the opt-out in force for what the link stops, if there is one


@dataclass(frozen=True)
class Unsubscribed:
    """The outcome of an unsubscribe: the opt-out in force and whether this request recorded it."""

    event_id: int | None
    since: datetime | None
    recorded: bool


def open_unsubscribe_link(session: Session, ctx: ServiceContext, token: str, *,
                          now: datetime) -> UnsubscribeLink:
    """Read an unsubscribe link without changing anything (mail scanners fetch links).

    The link stops one topic, or all library email when it names none. A link naming a topic the
    library no longer has stops all library email: the patron asked to stop something, and the
    page says exactly what will stop. Raises InvalidLinkError / ExpiredLinkError.
    """
    patron, claims = open_link(session, ctx, LinkKind.UNSUBSCRIBE, token, now=now)
    topic_row = (session.scalar(select(Topic).where(Topic.key == claims.topic))
                 if claims.topic else None)
    topic = topic_row.key if topic_row else None
    return UnsubscribeLink(
        patron=patron,
        claims=claims,
        topic=topic,
        topic_names=topic_names(topic_row) if topic_row else None,
        masked_email=mask_email(patron.email) if patron.email else None,
        stopped=_opt_out_in_force(session, patron, topic),
    )


def unsubscribe(session: Session, ctx: ServiceContext, link: UnsubscribeLink, *, source: Source,
                evidence: Mapping[str, str], now: datetime) -> Unsubscribed:
    """Record the patron's opt-out of what the link stops, and commit.

    Idempotent: when an opt-out of it is in force already (this one, an earlier one, or one on all
    library email), nothing is written and the opt-out in force is returned. The opt-out belongs to
    the address, so record_decision also queues the SendGrid suppression in the same transaction.
    A patron without an email address gets nothing to stop and nothing is written.
    """
    if link.masked_email is None:
        return Unsubscribed(None, None, recorded=False)
    in_force = link.stopped  # read when the link was opened, in this request
    if in_force is not None:
        return Unsubscribed(int(in_force.event_ref), in_force.occurred_at, recorded=False)
    begin_writing(session)
    result = record_decision(session, ctx, DecisionRequest(
        purpose=EMAIL_PURPOSE, topic=link.topic, decision=Decision.OPT_OUT, source=source,
        actor=Actor.PATRON, occurred_at=now, patron=link.patron, evidence=evidence,
    ), now=now)
    if result.event is None:
        # Another click on the same address took its turn first (record_decision waits for it on
        # PostgreSQL, begin_writing on SQLite) and recorded this very opt-out: answer with that one.
        in_force = _opt_out_in_force(session, link.patron, link.topic)
        if in_force is None:
            raise ConsentServiceError("the opt-out was not recorded")
        session.commit()
        return Unsubscribed(int(in_force.event_ref), in_force.occurred_at, recorded=False)
    session.commit()
    return Unsubscribed(result.event.id, result.event.occurred_at, recorded=True)


def save_unsubscribe_feedback(session: Session, link: UnsubscribeLink, *, reason_code: str,
                              text: str, now: datetime) -> bool:
    """Keep why the patron unsubscribed, beside the opt-out event in force for what the link stops
    (events are never changed, so the answer is a row of its own), and commit.

    One answer per event: a second answer, or one when no opt-out is in force (the patron has opted
    back in since), is not stored and False is returned. Raises InvalidFeedbackError for an unknown
    reason, a text over 500 characters or one holding a control character (domain.text).
    """
    if reason_code not in FEEDBACK_REASONS:
        raise InvalidFeedbackError(f"unknown reason {reason_code!r}")
    try:
        text = clean_text(text.strip(), field="text", multiline=True)
    except UnsafeTextError as exc:
        raise InvalidFeedbackError(str(exc)) from None
    if len(text) > FEEDBACK_TEXT_LIMIT:
        raise InvalidFeedbackError(f"the text is limited to {FEEDBACK_TEXT_LIMIT} characters")
    in_force = _opt_out_in_force(session, link.patron, link.topic)
    if in_force is None:
        return False
    event_id = int(in_force.event_ref)
    if session.get(UnsubscribeFeedback, event_id) is not None:
        return False
    session.add(UnsubscribeFeedback(event_id=event_id, reason_code=reason_code, text=text,
                                    created_at=now))
    session.commit()
    return True


def _opt_out_in_force(session: Session, patron: Patron, topic: str | None) -> Ruling | None:
    """The email opt-out in force at the patron's address for the topic (or all email), if any."""
    if not patron.email:
        return None
    standing = load_standing(session, patron, purposes=[EMAIL_PURPOSE])
    ruling = resolve(standing.address_state, EMAIL_PURPOSE, topic)
    return ruling if ruling is not None and ruling.decision is Decision.OPT_OUT else None

"""Unsubscribe by a signed link: what it stops, the opt-out itself, and why the patron left."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.addresses import mask_email
from consent_service.domain.ledger import Actor, Decision, Key, Ruling, Source, resolve
from consent_service.domain.purposes import EMAIL_PURPOSE
from consent_service.domain.text import UnsafeTextError, clean_text
from consent_service.domain.tokens import InvalidLinkError, LinkClaims, LinkKind
from consent_service.models import AddressDecision, Patron, Topic, UnsubscribeFeedback
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.standing import load_standing, ruling_from_columns
from consent_service.services.topics import topic_names
from consent_service.services.write_turn import begin_writing

FEEDBACK_REASONS = ("too_many", "not_relevant", "never_signed_up", "other")
FEEDBACK_TEXT_LIMIT = 500


class InvalidFeedbackError(ConsentServiceError):
    """A "tell us why" answer with an unknown reason or too long a text."""


@dataclass(frozen=True)
class LinkPatron:
    """The patron an unsubscribe link names: the columns its page and eligibility read."""

    id: int
    public_id: str
    email: str | None
    address_key: str | None
    preferred_language: str
    status: str
    birth_date: date | None
    street: str
    city: str
    postal_code: str


@dataclass(frozen=True)
class UnsubscribeLink:
    """What an unsubscribe link stops, for whom, and whether it is stopped already."""

    patron: LinkPatron
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
    page says exactly what will stop. Raises ExpiredLinkError for a genuine link past its
    lifetime, InvalidLinkError for one tampered with, signed for another page, or naming a patron
    we do not have (any more), as `links.open_link`.

    One statement reads the patron, the link's topic and the email decisions on the patron's
    address (a mail provider's one-click, repeated, needs nothing else): the opt-out in force is
    `resolve` over them, as over `load_standing`'s address decisions.
    """
    claims = ctx.signer.verify(LinkKind.UNSUBSCRIBE, token, now=now)
    rows = session.connection().execute(
        _link_statement(), {"public_id": claims.patron_id, "topic": claims.topic or ""}).all()
    if not rows:
        raise InvalidLinkError("this link is not valid")
    first = rows[0]
    patron = LinkPatron(first.id, first.public_id, first.email, first.address_key,
                        first.preferred_language, first.status, first.birth_date, first.street,
                        first.city, first.postal_code)
    topic = first.topic_key
    address_state: dict[Key, Ruling] = {
        (EMAIL_PURPOSE, row.decided_topic): ruling_from_columns(
            row.decision, row.occurred_at, row.actor, row.event_id)
        for row in rows if row.decision is not None}
    return UnsubscribeLink(
        patron=patron,
        claims=claims,
        topic=topic,
        topic_names=topic_names(first.topic_name, first.topic_names) if topic else None,
        masked_email=mask_email(patron.email) if patron.email else None,
        stopped=_opt_out_of(address_state, topic) if patron.email else None,
    )


@functools.cache
def _link_statement() -> Select[Any]:
    """`open_unsubscribe_link`'s statement, built once: the patron by public id, the topic by key
    (none: NULL), and the address's email decisions (none: one row of NULLs)."""
    return (
        select(Patron.id, Patron.public_id, Patron.email, Patron.address_key,
               Patron.preferred_language, Patron.status, Patron.birth_date, Patron.street,
               Patron.city, Patron.postal_code, Topic.key.label("topic_key"),
               Topic.name.label("topic_name"), Topic.names.label("topic_names"),
               AddressDecision.topic.label("decided_topic"), AddressDecision.decision,
               AddressDecision.occurred_at, AddressDecision.actor, AddressDecision.event_id)
        .select_from(Patron)
        .outerjoin(Topic, Topic.key == bindparam("topic"))
        .outerjoin(AddressDecision, and_(AddressDecision.address_key == Patron.address_key,
                                         AddressDecision.purpose == EMAIL_PURPOSE))
        .where(Patron.public_id == bindparam("public_id"))
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
    patron = session.get(Patron, link.patron.id)
    if patron is None:  # erased and removed since the link was opened
        raise InvalidLinkError("this link is not valid")
    result = record_decision(session, ctx, DecisionRequest(
        purpose=EMAIL_PURPOSE, topic=link.topic, decision=Decision.OPT_OUT, source=source,
        actor=Actor.PATRON, occurred_at=now, patron=patron, evidence=evidence,
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


def _opt_out_in_force(session: Session, patron: LinkPatron, topic: str | None) -> Ruling | None:
    """The email opt-out in force at the patron's address for the topic (or all email), if any."""
    if not patron.email:
        return None
    standing = load_standing(session, patron, purposes=[EMAIL_PURPOSE])
    return _opt_out_of(standing.address_state, topic)


def _opt_out_of(address_state: Mapping[Key, Ruling], topic: str | None) -> Ruling | None:
    ruling = resolve(address_state, EMAIL_PURPOSE, topic)
    return ruling if ruling is not None and ruling.decision is Decision.OPT_OUT else None

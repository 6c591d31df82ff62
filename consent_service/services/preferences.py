"""The preference center: what a patron decides, what is in force, saving, GPC, links by email."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.addresses import mask_email, normalize_email
from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, Key, Ruling, Source, age_on, resolve
from consent_service.domain.purposes import (
    CHILD_AGE,
    EMAIL_PURPOSE,
    PATRON_PURPOSES,
    Basis,
    Purpose,
    PurposeKey,
)
from consent_service.domain.tokens import LinkKind
from consent_service.mail.compose import MessageCategory
from consent_service.models import ConsentEvent, Patron, PolicyVersion, Topic
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.outgoing_mail import queue_email
from consent_service.services.policies import next_policy, policy_in_force
from consent_service.services.standing import Standing, load_standings
from consent_service.services.topics import topic_names

EMAIL_ROW = "email"  # the row for all library email
TOPIC_ROW_PREFIX = "topic_"  # + topic key: the row for one email topic
# What the page shows beside email: every purpose a patron decides for themself.
OTHER_PURPOSES = tuple(key for key in PATRON_PURPOSES if key != EMAIL_PURPOSE)
GPC_PURPOSE = PurposeKey.THIRD_PARTY_MODELING  # what a Global Privacy Control signal opts out of


@dataclass(frozen=True)
class PreferenceRow:
    """One thing the patron decides on the page, with what is in force for it today.

    `choice` is what the page's control shows: the decision in force, or the purpose's default when
    nobody has decided (an opt-out purpose is on until the person says no). `allowed` and `reason`
    are what eligibility says, which can differ (no postal address on file, a bounced address...).
    """

    key: str
    purpose: str
    topic: str | None
    topic_names: Mapping[str, str] | None  # language -> the topic's name
    choice: Decision
    decided_at: datetime | None  # when the decision in force was made; None: nobody has decided
    allowed: bool
    reason: Reason | None
    changeable: bool  # a child under 13 may only stop what they get


@dataclass(frozen=True)
class GpcStatus:
    """A Global Privacy Control signal honoured for this patron, and their own later choice."""

    honoured_at: datetime
    allowed_again_at: datetime | None


@dataclass(frozen=True)
class Preferences:
    """Everything the preference center shows a patron."""

    patron: Patron
    child: bool  # under 13: a parent or guardian decides; the patron may only opt out
    masked_email: str | None
    rows: list[PreferenceRow]
    gpc: GpcStatus | None
    policy: PolicyVersion | None = None  # the privacy policy in force today
    upcoming: PolicyVersion | None = None  # the next version, published to take effect later


Describe = Callable[[Sequence[PreferenceRow]], list[dict[str, str]]]


def load_preferences(session: Session, ctx: ServiceContext, patron: Patron, *,
                     now: datetime) -> Preferences:
    """What the patron decides here: all library email and each email topic (when we have an email
    address for them), postal mail, photos and video, and the two kinds of vendor sharing. The
    purposes only a guardian decides (a child's online services and programs, a minor's card) are
    left to the guardian's page. Also the privacy policy in force (and the next version, when
    one is published), with what changed."""
    today = ctx.today(now)
    return Preferences(
        patron=patron,
        child=_is_child(patron, today),
        masked_email=mask_email(patron.email) if patron.email else None,
        rows=_rows(session, ctx, patron, today),
        gpc=_gpc_status(session, patron),
        policy=policy_in_force(session, now),
        upcoming=next_policy(session, now),
    )


def honour_gpc(session: Session, ctx: ServiceContext, patron: Patron, *,
               evidence: Mapping[str, str], now: datetime) -> None:
    """Record a Global Privacy Control signal as an opt-out of vendor modeling (source `gpc`), once
    per patron, and commit.

    Once: the first signal is recorded even when an opt-out is in force already (the ledger shows
    the signal was honoured), and later signals write nothing, so a patron who allows modeling
    again on the page after that keeps their own, later choice.
    """
    if _apply_gpc(session, ctx, patron, evidence, now):
        session.commit()


def save_preferences(session: Session, ctx: ServiceContext, patron: Patron,
                     wanted: Mapping[str, Decision], shown: Mapping[str, Decision] | None, *,
                     evidence: Mapping[str, str], gpc: bool, now: datetime,
                     describe: Describe) -> list[PreferenceRow]:
    """Record what the patron changed on the page, queue the confirmation email, and commit once.

    Only rows whose wanted decision differs both from what the page showed (`shown`, row key ->
    decision, as the form carried it; None: what is in force now) and from what is in force now are
    recorded (source `preference_center`, actor patron; record_decision stamps the policy version).
    So an answer left as shown never overturns a decision made since the page was opened (an
    unsubscribe link, a household member, a SendGrid event), and the page then shows what the
    patron submitted. One exception: turning all library email off stops
    every topic, so topic answers are then ignored. Turning it back on starts only the topics the
    form shows on (never one the patron left off). A child under 13 can only opt out.

    With `gpc`, a GPC signal is honoured too (see honour_gpc), after reading what the page showed:
    an answer left as shown does not count as a choice against the signal. Returns the rows whose
    choice changed, as they are now; when there are some and the patron has an email address, a
    `preferences_saved` message listing them (`describe` labels them in the patron's language) is
    queued.
    """
    today = ctx.today(now)
    child = _is_child(patron, today)
    before = {row.key: row for row in _rows(session, ctx, patron, today)}  # what is in force
    if gpc:
        _apply_gpc(session, ctx, patron, evidence, now)

    def changed(key: str) -> Decision | None:
        row, decision = before.get(key), wanted.get(key)
        if row is None or decision is None or not row.changeable:
            return None
        was_shown = shown.get(key, row.choice) if shown is not None else row.choice
        if decision is was_shown or decision is row.choice:
            return None
        return None if child and decision is Decision.OPT_IN else decision

    def decide(purpose: str, topic: str | None, decision: Decision) -> None:
        record_decision(session, ctx, DecisionRequest(
            purpose=purpose, topic=topic, decision=decision, source=Source.PREFERENCE_CENTER,
            actor=Actor.PATRON, occurred_at=now, patron=patron, evidence=evidence), now=now)

    if EMAIL_ROW in before:
        all_email = changed(EMAIL_ROW)
        if all_email is not None:
            decide(EMAIL_PURPOSE, None, all_email)
        topic_rows = [row for row in before.values() if row.topic is not None]
        for row in topic_rows if all_email is not Decision.OPT_OUT else []:
            if all_email is Decision.OPT_IN:
                # all email back on would start every topic: keep off those the form shows off
                if wanted.get(row.key, row.choice) is Decision.OPT_OUT:
                    decide(EMAIL_PURPOSE, row.topic, Decision.OPT_OUT)
            elif (decision := changed(row.key)) is not None:
                decide(EMAIL_PURPOSE, row.topic, decision)
    for key in OTHER_PURPOSES:
        if (decision := changed(key)) is not None:
            decide(key, None, decision)

    after = _rows(session, ctx, patron, today)
    changes = [row for row in after if row.choice is not before[row.key].choice]
    if changes and patron.email:
        queue_email(session, ctx, template="preferences_saved", to=patron.email,
                    language=patron.preferred_language, context={"changes": describe(changes)},
                    category=MessageCategory.TRANSACTIONAL.value, now=now, patron=patron)
    session.commit()
    return changes


def send_preference_links(session: Session, ctx: ServiceContext, raw_email: str, *, language: str,
                          now: datetime) -> None:
    """Email a preference link for each active patron at this address (a household gets one message
    listing each by first name), and commit.

    The message is in the patrons' own language (the one they all prefer), else in `language`
    (the page's, which the person asking chose): a known patron is written to as they asked to be.

    The same work is done whether or not the address is known (normalise, hash, one query), so the
    answer reveals nothing; the message is queued only when someone has the address. Raises
    InvalidEmailError for an address that cannot receive mail.
    """
    email = normalize_email(raw_email)
    patrons = list(session.scalars(
        select(Patron)
        .where(Patron.address_key == ctx.address_key(email), Patron.status == "active")
        .order_by(Patron.first_name, Patron.id)))
    if patrons:
        links: list[dict[str, Any]] = [
            {"first_name": p.first_name, "url": ctx.link(LinkKind.PREFERENCES, p.public_id)}
            for p in patrons
        ]
        own = {p.preferred_language for p in patrons}
        if len(own) == 1:
            language = own.pop()
        queue_email(session, ctx, template="preferences_link", to=email, language=language,
                    context={"links": links}, category=MessageCategory.TRANSACTIONAL.value,
                    now=now, patron=patrons[0] if len(patrons) == 1 else None)
    session.commit()


def _is_child(patron: Patron, today: date) -> bool:
    return patron.birth_date is not None and age_on(patron.birth_date, today) < CHILD_AGE


def _rows(session: Session, ctx: ServiceContext, patron: Patron,
          today: date) -> list[PreferenceRow]:
    standing = load_standings(session, [patron])[patron.id]
    child = _is_child(patron, today)
    rows: list[PreferenceRow] = []
    if patron.email:
        email = ctx.catalog.get(EMAIL_PURPOSE)
        rows.append(_row(EMAIL_ROW, email, None, None, standing, standing.address_state, today,
                         child))
        for topic in session.scalars(select(Topic).order_by(Topic.name)):
            rows.append(_row(TOPIC_ROW_PREFIX + topic.key, email, topic.key,
                             topic_names(topic.name, topic.names), standing,
                             standing.address_state, today, child))
    for key in OTHER_PURPOSES:
        rows.append(_row(key, ctx.catalog.get(key), None, None, standing, standing.patron_state,
                         today, child))
    return rows


def _row(key: str, purpose: Purpose, topic: str | None, names: Mapping[str, str] | None,
         standing: Standing,
         state: Mapping[Key, Ruling], today: date, child: bool) -> PreferenceRow:
    ruling = resolve(state, purpose.key, topic)
    verdict = standing.verdict(purpose, topic, today)
    if child:
        # what the child gets is a guardian's to give; the child can stop what they get
        choice = Decision.OPT_IN if verdict.allowed else Decision.OPT_OUT
    elif verdict.reason is Reason.ADDRESS_SUPPRESSED:
        choice = Decision.OPT_OUT  # a spam report stopped it; saying yes starts it again
    elif ruling is not None:
        choice = ruling.decision
    else:
        choice = Decision.OPT_IN if purpose.basis is Basis.OPT_OUT else Decision.OPT_OUT
    return PreferenceRow(
        key=key, purpose=purpose.key, topic=topic, topic_names=names, choice=choice,
        decided_at=ruling.occurred_at if ruling else None, allowed=verdict.allowed,
        reason=verdict.reason, changeable=verdict.allowed if child else True,
    )


def _apply_gpc(session: Session, ctx: ServiceContext, patron: Patron, evidence: Mapping[str, str],
               now: datetime) -> bool:
    """Record the GPC opt-out unless one was recorded for this patron before; True when written."""
    if _first_gpc_event(session, patron) is not None:
        return False
    result = record_decision(session, ctx, DecisionRequest(
        purpose=GPC_PURPOSE, decision=Decision.OPT_OUT, source=Source.GPC, actor=Actor.PATRON,
        occurred_at=now, patron=patron, evidence=evidence), now=now)
    return result.written


def _first_gpc_event(session: Session, patron: Patron) -> ConsentEvent | None:
    return session.scalar(
        select(ConsentEvent).where(
            ConsentEvent.patron_id == patron.id, ConsentEvent.purpose == GPC_PURPOSE,
            ConsentEvent.source == Source.GPC.value)
        .order_by(ConsentEvent.occurred_at, ConsentEvent.id).limit(1))


def _gpc_status(session: Session, patron: Patron) -> GpcStatus | None:
    first = _first_gpc_event(session, patron)
    if first is None:
        return None
    standing = load_standings(session, [patron], purposes=[GPC_PURPOSE])[patron.id]
    ruling = resolve(standing.patron_state, GPC_PURPOSE, None)
    allowed_again = (ruling is not None and ruling.decision is Decision.OPT_IN
                     and ruling.occurred_at > first.occurred_at)
    return GpcStatus(first.occurred_at, ruling.occurred_at if allowed_again and ruling else None)

"""What a guardian decides for a child: the tick boxes, what is in force for each, and recording
what the guardian changed (the rules: consent_service/services/guardians/__init__.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.guardians import (
    GUARDIAN_ORDER,
    VendorMethod,
    guardian_purposes,
)
from consent_service.domain.ledger import Actor, Decision, Ruling, Source, age_on, resolve
from consent_service.domain.purposes import (
    CHILD_AGE,
    EMAIL_PURPOSE,
    MINOR_CARD_AGE,
    Basis,
    Purpose,
)
from consent_service.models import GuardianLink, Patron, Topic
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.standing import Standing, load_standings
from consent_service.services.topics import topic_names

NOTICE_VERSION = "guardian-2026-11"  # the wording of the notice and pages; change it with them


TYPED_NAME_LIMIT = 200


class GuardianError(ConsentServiceError):
    """A guardian action that cannot be done as asked; the message says why."""


class NotYourChildError(GuardianError):
    """A child the guardian of a family link is not linked to (or no child at all)."""


@dataclass(frozen=True)
class Choice:
    """One tick box about a child: a purpose, or one email topic, and what is in force for it."""

    key: str  # the tick box's value: a purpose key, or "email_marketing:<topic>"
    purpose: str
    topic: str | None
    topic_names: Mapping[str, str] | None  # language -> the topic's name
    vendor: bool  # sharing with vendors: asked apart
    given: bool  # a guardian's opt-in is in force on the child's record
    allowed: bool  # what eligibility says today
    ruling: Ruling | None  # the decision in force on the child's record
    offered: bool  # a guardian may change it on a page (not: vendor sharing awaiting an ID check)


@dataclass(frozen=True)
class ChildChoices:
    """A child as a guardian sees them: what a guardian decides today, and (for a teen) what the
    teen now decides, shown but not changed."""

    child: Patron
    age: int | None
    choices: list[Choice]
    teen_decides: list[Choice]

    @property
    def under_13(self) -> bool:
        return self.age is not None and self.age < CHILD_AGE

    @property
    def minor(self) -> bool:
        return self.age is not None and self.age < MINOR_CARD_AGE


def child_choices(session: Session, ctx: ServiceContext, child: Patron, *,
                  now: datetime, standing: Standing | None = None,
                  topics: Sequence[tuple[str, dict[str, str]]] | None = None) -> ChildChoices:
    """What a guardian decides for `child` today, each with the decision in force on the child's
    record; for a teen under 17 also what the teen decides now. Nothing for 17 and older.

    `standing` (the child's, from `load_standings` with every purpose) and `topics` (from
    `load_topics`) may be given by a caller that loaded them for many children at once."""
    today = ctx.today(now)
    age = age_on(child.birth_date, today) if child.birth_date else None
    if standing is None:
        standing = load_standings(session, [child])[child.id]
    method = ctx.guardians.vendor_method
    if not child.email:
        topics = []
    elif topics is None:
        topics = load_topics(session)
    deciding = guardian_purposes(ctx.catalog, child.birth_date, today)
    choices = [choice for purpose in deciding
               for choice in _purpose_choices(purpose, topics, standing, today, method)]
    teen: list[Choice] = []
    if age is not None and CHILD_AGE <= age < MINOR_CARD_AGE:
        by_key = {purpose.key: purpose for purpose in ctx.catalog}
        decided = {purpose.key for purpose in deciding}
        teen = [choice for key in GUARDIAN_ORDER
                if key in by_key and key not in decided
                and by_key[key].basis is not Basis.GUARDIAN_ONLY
                for choice in _purpose_choices(by_key[key], topics, standing, today, method)]
    return ChildChoices(child, age, choices, teen)


def load_topics(session: Session) -> list[tuple[str, dict[str, str]]]:
    """The configured email topics as the choices show them: key and names, by name."""
    topics = session.scalars(select(Topic).order_by(Topic.name))
    return [(topic.key, topic_names(topic.name, topic.names)) for topic in topics]


def _purpose_choices(purpose: Purpose, topics: Sequence[tuple[str, dict[str, str]]],
                     standing: Standing,
                     today: date, method: VendorMethod) -> list[Choice]:
    """One choice for a purpose; for email, one per topic (or the whole purpose when no topic is
    configured), and none when the child has no email address (`topics` is then empty)."""
    if purpose.key == EMAIL_PURPOSE:
        if not standing.facts.has_email:
            return []
        wanted: list[tuple[str | None, dict[str, str] | None]] = list(topics) or [(None, None)]
    else:
        wanted = [(None, None)]
    choices = []
    for topic, names in wanted:
        ruling = resolve(standing.patron_state, purpose.key, topic)
        given = (ruling is not None and ruling.decision is Decision.OPT_IN
                 and ruling.actor is Actor.GUARDIAN)
        vendor = purpose.discloses_to_vendor
        choices.append(Choice(
            key=f"{purpose.key}:{topic}" if topic else purpose.key, purpose=purpose.key,
            topic=topic, topic_names=names, vendor=vendor, given=given,
            allowed=standing.verdict(purpose, topic, today).allowed, ruling=ruling,
            offered=not vendor or method is VendorMethod.SEPARATE_TICK or given,
        ))
    return choices


@dataclass(frozen=True)
class DecisionLine:
    """A decision a guardian just made, for the page and the confirmation email."""

    purpose: str
    topic: str | None
    topic_names: Mapping[str, str] | None
    decision: Decision


def decide_choices(session: Session, ctx: ServiceContext, child: Patron, link: GuardianLink,
            choices: Iterable[Choice], ticked: Collection[str], shown: Collection[str] | None, *,
            source: Source, evidence: Mapping[str, str], now: datetime) -> list[DecisionLine]:
    """Record the guardian's decision on each offered choice whose tick differs both from what the
    page showed (`shown`: the keys it showed ticked; None: what is in force now) and from what is in
    force now (see the module's rules; vendor sharing awaiting an ID check is not offered)."""
    lines = []
    for choice in choices:
        if not choice.offered:
            continue
        wanted = choice.key in ticked
        was_shown = choice.key in shown if shown is not None else choice.given
        if wanted == was_shown or wanted == choice.given:
            continue
        decision = Decision.OPT_IN if wanted else Decision.OPT_OUT
        record_decision(session, ctx, DecisionRequest(
            purpose=choice.purpose, topic=choice.topic, decision=decision, source=source,
            actor=Actor.GUARDIAN, occurred_at=now, patron=child, actor_ref=link.public_id,
            evidence=evidence), now=now)
        lines.append(DecisionLine(choice.purpose, choice.topic, choice.topic_names, decision))
    return lines


def in_force(choices: Iterable[Choice], lines: Sequence[DecisionLine]) -> list[DecisionLine]:
    """Every offered choice as it stands after `lines` were recorded: a guardian's full answer."""
    made = {(line.purpose, line.topic): line.decision for line in lines}
    return [DecisionLine(choice.purpose, choice.topic, choice.topic_names,
                         made.get((choice.purpose, choice.topic),
                                  Decision.OPT_IN if choice.given else Decision.OPT_OUT))
            for choice in choices if choice.offered]

"""Parents and guardians: consent requests for children, the guardian's answer, the family page.

The rules. Ages are whole years on the library's day (America/Denver), computed on the day asked; a
29 February birthday falls on 1 March in common years.

- Who is asked. When a guardian is linked to an active child under 13, or to an active minor under
  17 whose card has no guardian permission in force (`minor_card` not allowed), a request is made
  and a notice emailed to the guardian: to the guardian patron's address, else the link's email
  address, in the guardian patron's language, else the child's. A guardian with no address cannot
  be asked, so no request is made. A guardian link has at most one pending request.
- What a guardian decides: the purposes the child is still young enough to need a guardian for, on
  the day (`domain.guardians.guardian_purposes`). Under 13: the child's online services, programs,
  card, email (one tick per email topic, offered only when the child has an email address), postal
  mail, photos and video, and, apart, each kind of sharing with vendors. From 13 to 16: the card.
- What an answer records: only what the guardian deliberately changed on a page that showed what
  is in force. Every page (the request page, each child on the family page) shows a box ticked
  exactly when a guardian's opt-in is in force for the child, and carries what it showed (the
  form's `shown` field). On saving, a box left as it was shown records nothing; ticking a box
  shown unticked records an opt-in; unticking a box shown ticked records an opt-out (a withdrawal).
  A change that is already in force when the answer arrives (another guardian made it meanwhile)
  records nothing. So an untouched box never revokes anything: a reminder, a second guardian or a
  re-sent request cannot wipe an earlier yes, and a page opened before another guardian's change
  cannot undo that change. A form without `shown` is compared with what is in force now.
- Vendor sharing for a child under 13 needs its own tick (CONSENT_GUARDIAN_VENDOR_METHOD
  `separate_tick`, the default) or, with `id_check`, staff checking the guardian's ID in person
  (`record_id_check`; a CLI command until staff pages exist). With `id_check` the pages do not
  offer it, but a guardian can still withdraw it on the family page.
- Every decision goes through record_decision: actor guardian, source guardian_page (staff_desk for
  an ID check), actor_ref the guardian link's public id, and evidence: method (`email_plus`, or
  `id_check`), the notice version shown, the typed name and the confirmation tick (on the guardian
  page), the guardian link and request ids, the link's id, the network and user agent.
- Answering again is a change. Either of two guardians may decide; the latest decision stands (the
  ledger's ordering) and both see the same state on their family pages.
- After a guardian decides, a confirmation goes to the same address listing the decisions, with a
  family link to change or withdraw them ("email plus"). A family link shows every child linked to
  the same guardian (the same guardian patron, or the same guardian email address), nobody else.
- Turning 13: the guardian's decisions stay in force until the teen makes their own (the ledger
  keeps them; from the 13th birthday the teen's own decisions count, and the latest stands). The
  guardian-only purposes (online services, programs) no longer apply. A guardian then decides only
  the card, and sees the teen's other decisions.
- Turning 17: `minor_card` no longer applies; a guardian decides nothing more, and the family page
  shows only the young person's first name.
- A request unanswered by its `expires_at` (CONSENT_GUARDIAN_RESPONSE_DAYS, default 14, after it was
  made) expires: the address it was sent to is erased, and a guardian link that is only an email
  address and never answered is deleted. Its guardian link no longer opens.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from babel.dates import format_date
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.addresses import mask_email, normalize_email
from consent_service.domain.guardians import (
    GUARDIAN_ORDER,
    MINOR_CARD,
    VENDOR_PURPOSES,
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
from consent_service.domain.text import UnsafeTextError, clean_text
from consent_service.domain.tokens import ExpiredLinkError, InvalidLinkError, LinkClaims, LinkKind
from consent_service.mail.compose import MessageCategory, template_language
from consent_service.models import FamilyRequest, GuardianLink, GuardianRequest, Patron, Topic
from consent_service.services import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.outgoing_mail import queue_email
from consent_service.services.patrons import find_by_card
from consent_service.services.standing import Standing, load_standings
from consent_service.services.topics import name_in, topic_names

NOTICE_VERSION = "guardian-2026-11"  # the wording of the notice and pages; change it with them
TYPED_NAME_LIMIT = 200
FAMILY_REQUEST_KINDS = ("download", "erasure")
_CHUNK = 500


class GuardianError(ConsentServiceError):
    """A guardian action that cannot be done as asked; the message says why."""


class NotYourChildError(GuardianError):
    """A child the guardian of a family link is not linked to (or no child at all)."""


# -- what a guardian decides for a child --------------------------------------------------------


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
                  now: datetime) -> ChildChoices:
    """What a guardian decides for `child` today, each with the decision in force on the child's
    record; for a teen under 17 also what the teen decides now. Nothing for 17 and older."""
    today = ctx.today(now)
    age = age_on(child.birth_date, today) if child.birth_date else None
    standing = load_standings(session, [child])[child.id]
    method = ctx.guardians.vendor_method
    topics = _topics(session) if child.email else []
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


def _topics(session: Session) -> list[tuple[str, dict[str, str]]]:
    topics = session.scalars(select(Topic).order_by(Topic.name))
    return [(topic.key, topic_names(topic)) for topic in topics]


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


def _decide(session: Session, ctx: ServiceContext, child: Patron, link: GuardianLink,
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


def _in_force(choices: Iterable[Choice], lines: Sequence[DecisionLine]) -> list[DecisionLine]:
    """Every offered choice as it stands after `lines` were recorded: a guardian's full answer."""
    made = {(line.purpose, line.topic): line.decision for line in lines}
    return [DecisionLine(choice.purpose, choice.topic, choice.topic_names,
                         made.get((choice.purpose, choice.topic),
                                  Decision.OPT_IN if choice.given else Decision.OPT_OUT))
            for choice in choices if choice.offered]


# -- the request and its notice -----------------------------------------------------------------


def guardian_address(session: Session, link: GuardianLink) -> str | None:
    """Where a guardian is written to: the guardian patron's address, else the link's address."""
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    if guardian is not None and guardian.email:
        return guardian.email
    return link.guardian_email


def needs_guardian_request(session: Session, ctx: ServiceContext, child: Patron, *,
                           now: datetime) -> bool:
    """Whether linking a guardian to `child` asks them for consent: an active child under 13, or
    an active minor under 17 whose card has no guardian permission in force."""
    if child.status != "active" or child.birth_date is None:
        return False
    today = ctx.today(now)
    age = age_on(child.birth_date, today)
    if age < CHILD_AGE:
        return True
    if age >= MINOR_CARD_AGE:
        return False
    standing = load_standings(session, [child], purposes=[MINOR_CARD])[child.id]
    return not standing.verdict(ctx.catalog.get(MINOR_CARD), None, today).allowed


def request_guardian_consent(session: Session, ctx: ServiceContext, child: Patron,
                             link: GuardianLink, *, now: datetime) -> GuardianRequest | None:
    """Ask the guardian of `link` for their consent for `child`, in the caller's transaction (the
    caller commits): create the request and queue the notice email (category notice).

    Returns the link's pending request if it has one (nothing is sent again), and None when the
    child needs no guardian's consent or the guardian has no email address. The request expires
    CONSENT_GUARDIAN_RESPONSE_DAYS after `now`.
    """
    if not needs_guardian_request(session, ctx, child, now=now):
        return None
    pending = _pending_request(session, link, now)
    if pending is not None:
        return pending
    address = guardian_address(session, link)
    if address is None:
        return None
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    language = guardian.preferred_language if guardian is not None else child.preferred_language
    request = GuardianRequest(
        child_id=child.id, guardian_link_id=link.id, to_email=address,
        language=template_language(language), notice_version=NOTICE_VERSION, status="pending",
        created_at=now, expires_at=now + timedelta(days=ctx.guardians.response_days),
        last_sent_at=now)
    session.add(request)
    session.flush()
    _queue_notice(session, ctx, request, child, link, now=now, reminder=False)
    return request


def request_consent_for_links(session: Session, ctx: ServiceContext,
                              links: Sequence[GuardianLink], *, now: datetime) -> int:
    """`request_guardian_consent` for each of these (new) links, in the caller's transaction;
    how many requests were made. Loads the patrons a chunk at a time."""
    made = 0
    for start in range(0, len(links), _CHUNK):
        chunk = links[start:start + _CHUNK]
        ids = {link.child_id for link in chunk} | {link.guardian_id for link in chunk
                                                   if link.guardian_id is not None}
        patrons = {p.id: p for p in session.scalars(select(Patron).where(Patron.id.in_(ids)))}
        for link in chunk:
            if request_guardian_consent(session, ctx, patrons[link.child_id], link, now=now):
                made += 1
    return made


def _pending_request(session: Session, link: GuardianLink, now: datetime) -> GuardianRequest | None:
    return session.scalar(
        select(GuardianRequest).where(
            GuardianRequest.guardian_link_id == link.id, GuardianRequest.status == "pending",
            GuardianRequest.expires_at > now)
        .order_by(GuardianRequest.created_at.desc(), GuardianRequest.id.desc()).limit(1))


def guardian_url(ctx: ServiceContext, request: GuardianRequest, child: Patron) -> str:
    """A fresh guardian link for the request (it names the child and the request, nothing else)."""
    return ctx.link(LinkKind.GUARDIAN, child.public_id, ref=request.public_id)


def family_url(ctx: ServiceContext, link: GuardianLink) -> str:
    """A fresh family link for the guardian of `link`."""
    return ctx.link(LinkKind.FAMILY, link.public_id)


def _local_date(ctx: ServiceContext, at: datetime, language: str) -> str:
    day = ctx.today(at)
    return format_date(day, format="long", locale=template_language(language))


def _queue_notice(session: Session, ctx: ServiceContext, request: GuardianRequest, child: Patron,
                  link: GuardianLink, *, now: datetime, reminder: bool) -> None:
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    view = child_choices(session, ctx, child, now=now)
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


def _queue_confirmation(session: Session, ctx: ServiceContext, *, to: str | None, language: str,
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


def _mark_answered(session: Session, child: Patron, link: GuardianLink, now: datetime) -> None:
    """A guardian who decides for a child answers their pending requests for the child."""
    for request in session.scalars(select(GuardianRequest).where(
            GuardianRequest.child_id == child.id, GuardianRequest.guardian_link_id == link.id,
            GuardianRequest.status == "pending")):
        request.status = "answered"
        request.answered_at = now


# -- the guardian's page ------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenRequest:
    """A guardian link, verified: the request, its child, its guardian link, the link's claims."""

    request: GuardianRequest
    child: Patron
    link: GuardianLink
    claims: LinkClaims

    @property
    def masked_email(self) -> str | None:
        return mask_email(self.request.to_email) if self.request.to_email else None


def open_guardian_request(session: Session, ctx: ServiceContext, token: str, *,
                          now: datetime) -> OpenRequest:
    """The request a guardian link was issued for.

    :raise ExpiredLinkError: for a link past its 7 days, or a request that has expired.
    :raise InvalidLinkError: for a tampered or wrong-kind link, or one naming a request, child or
        guardian link we do not have (any more) or that do not belong together.
    """
    claims = ctx.signer.verify(LinkKind.GUARDIAN, token, now=now)
    request = session.scalar(select(GuardianRequest).where(
        GuardianRequest.public_id == (claims.ref or ""))) if claims.ref else None
    child = session.get(Patron, request.child_id) if request is not None else None
    link = (session.get(GuardianLink, request.guardian_link_id)
            if request is not None and request.guardian_link_id is not None else None)
    if request is None or child is None or link is None or child.public_id != claims.patron_id:
        raise InvalidLinkError("this link is not valid")
    if request.status == "expired" or (request.status == "pending" and request.expires_at <= now):
        raise ExpiredLinkError("this request has expired")
    return OpenRequest(request, child, link, claims)


def guardian_page_choices(ctx: ServiceContext, view: ChildChoices) -> list[Choice]:
    """The tick boxes of the guardian's page: every choice, except vendor sharing when it needs an
    ID check (then the page says so and offers nothing)."""
    separate_tick = ctx.guardians.vendor_method is VendorMethod.SEPARATE_TICK
    return [choice for choice in view.choices if not choice.vendor or separate_tick]


def answer_guardian_request(session: Session, ctx: ServiceContext, opened: OpenRequest,
                            ticked: Collection[str], shown: Collection[str] | None, *,
                            typed_name: str, confirmed: bool, evidence: Mapping[str, str],
                            now: datetime) -> list[DecisionLine]:
    """Record a guardian's answer, queue the confirmation email, and commit once.

    Needs the confirmation tick ("I am this child's parent or legal guardian") and a typed name
    (GuardianError otherwise, nothing recorded). Records what the guardian changed against what the
    page showed (`shown`; see the module's rules), as the guardian's decision (method email_plus,
    with the notice version, typed name, confirmation, request and guardian link ids); an answer
    that changes nothing records nothing in the ledger. The request is then answered; answering
    again records a change. Returns every choice the page offered as it now stands, which the page
    and the confirmation email list; none when the child needs no guardian now.
    """
    try:
        name = " ".join(clean_text(typed_name, field="name").split())[:TYPED_NAME_LIMIT]
    except UnsafeTextError as exc:
        raise GuardianError(str(exc)) from None
    if not confirmed or not name:
        raise GuardianError("confirm that you are the child's parent or legal guardian and type "
                            "your name")
    request, child, link = opened.request, opened.child, opened.link
    choices = guardian_page_choices(ctx, child_choices(session, ctx, child, now=now))
    if not choices:
        return []
    proof = {**evidence, "method": "email_plus", "notice_version": request.notice_version,
             "typed_name": name, "confirmed_guardian": "yes", "guardian_link": link.public_id,
             "request": request.public_id}
    made = _decide(session, ctx, child, link, choices, ticked, shown,
                   source=Source.GUARDIAN_PAGE, evidence=proof, now=now)
    lines = _in_force(choices, made)
    _mark_answered(session, child, link, now)
    request.status = "answered"
    request.answered_at = now
    _queue_confirmation(session, ctx, to=request.to_email, language=request.language, child=child,
                        link=link, lines=lines, now=now)
    session.commit()
    return lines


# -- the family page ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A family link, verified: the guardian it was made for and every link they have to a child."""

    link: GuardianLink
    guardian: Patron | None
    address: str | None
    language: str
    links: list[GuardianLink]
    claims: LinkClaims

    @property
    def masked_email(self) -> str | None:
        return mask_email(self.address) if self.address else None


def open_family_link(session: Session, ctx: ServiceContext, token: str, *, now: datetime) -> Family:
    """The guardian a family link was issued for, and all their links to children: links to the
    same guardian patron, or (for a guardian known only by email) to the same email address.

    :raise ExpiredLinkError: for a link past its lifetime.
    :raise InvalidLinkError: for a tampered or wrong-kind link, or a guardian link that is gone.
    """
    claims = ctx.signer.verify(LinkKind.FAMILY, token, now=now)
    link = session.scalar(select(GuardianLink).where(GuardianLink.public_id == claims.patron_id))
    if link is None:
        raise InvalidLinkError("this link is not valid")
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    same = (GuardianLink.guardian_id == link.guardian_id if link.guardian_id is not None
            else GuardianLink.guardian_email == link.guardian_email)
    links = list(session.scalars(select(GuardianLink).where(same).order_by(GuardianLink.id)))
    if guardian is not None:
        language = guardian.preferred_language
    else:
        language = session.scalar(
            select(GuardianRequest.language)
            .where(GuardianRequest.guardian_link_id.in_([each.id for each in links]))
            .order_by(GuardianRequest.created_at.desc()).limit(1)) or "en"
    return Family(link, guardian, guardian_address(session, link), language, links, claims)


def family_children(session: Session, ctx: ServiceContext, family: Family, *,
                    now: datetime) -> list[ChildChoices]:
    """Every child of the family, by first name, with what a guardian decides for them today."""
    children = session.scalars(select(Patron).where(
        Patron.id.in_([link.child_id for link in family.links]))
        .order_by(Patron.first_name, Patron.id))
    return [child_choices(session, ctx, child, now=now) for child in children]


def _family_child(session: Session, family: Family,
                  child_public_id: str) -> tuple[Patron, GuardianLink]:
    for link in family.links:
        child = session.get(Patron, link.child_id)
        if child is not None and child.public_id == child_public_id:
            return child, link
    raise NotYourChildError("no such child for this guardian")


def change_family_decisions(session: Session, ctx: ServiceContext, family: Family,
                            child_public_id: str, ticked: Collection[str],
                            shown: Collection[str] | None, *, evidence: Mapping[str, str],
                            now: datetime) -> tuple[Patron, list[DecisionLine]]:
    """Record what a guardian changed for one of their children on the family page (boxes whose
    tick differs from what the page showed, `shown`, and from what is in force; see the module's
    rules), answer their pending request for the child, queue a confirmation to the guardian's
    address when something changed, and commit.

    :raise NotYourChildError: for a child not linked to this guardian; nothing is recorded.
    """
    child, link = _family_child(session, family, child_public_id)
    view = child_choices(session, ctx, child, now=now)
    proof = {**evidence, "method": "email_plus", "notice_version": NOTICE_VERSION,
             "guardian_link": link.public_id, "page": "family"}
    lines = _decide(session, ctx, child, link, view.choices, ticked, shown,
                    source=Source.GUARDIAN_PAGE, evidence=proof, now=now)
    if lines:
        _mark_answered(session, child, link, now)
        _queue_confirmation(session, ctx, to=family.address, language=family.language,
                            child=child, link=link, lines=lines, now=now)
    session.commit()
    return child, lines


def request_child_data(session: Session, ctx: ServiceContext, family: Family,
                       child_public_id: str, kind: str, *, now: datetime
                       ) -> tuple[Patron, FamilyRequest, bool]:
    """Ask staff for a child's data (`download`) or its erasure (`erasure`): an open task, one per
    child and kind (asking again while one is open adds nothing). Returns the child, the task and
    whether it is new; commits.

    :raise NotYourChildError: for a child not linked to this guardian; nothing is created.
    """
    if kind not in FAMILY_REQUEST_KINDS:
        raise GuardianError(f"a request is for a download or an erasure, not {kind!r}")
    child, link = _family_child(session, family, child_public_id)
    existing = session.scalar(select(FamilyRequest).where(
        FamilyRequest.child_id == child.id, FamilyRequest.kind == kind,
        FamilyRequest.status == "open").limit(1))
    if existing is not None:
        return child, existing, False
    task = FamilyRequest(child_id=child.id, guardian_link_id=link.id, kind=kind, status="open",
                         created_at=now)
    session.add(task)
    session.commit()
    return child, task, True


# -- staff and commands -------------------------------------------------------------------------


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
        _queue_notice(session, ctx, request, child, link, now=now, reminder=True)
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
    _mark_answered(session, child, link, now)
    language = _guardian_language(session, link, child)
    _queue_confirmation(session, ctx, to=guardian_address(session, link), language=language,
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

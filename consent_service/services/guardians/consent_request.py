"""A consent request for a child: when one is made, the guardian's page, and the answer."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.addresses import mask_email
from consent_service.domain.guardians import (
    MINOR_CARD,
    VendorMethod,
)
from consent_service.domain.ledger import Source, age_on
from consent_service.domain.purposes import (
    CHILD_AGE,
    MINOR_CARD_AGE,
)
from consent_service.domain.text import UnsafeTextError, clean_text
from consent_service.domain.tokens import ExpiredLinkError, InvalidLinkError, LinkClaims, LinkKind
from consent_service.mail.compose import template_language
from consent_service.models import GuardianLink, GuardianRequest, Patron
from consent_service.models.columns import new_guardian_request_id
from consent_service.services.context import ServiceContext
from consent_service.services.guardians.choices import (
    NOTICE_VERSION,
    TYPED_NAME_LIMIT,
    ChildChoices,
    Choice,
    DecisionLine,
    GuardianError,
    child_choices,
    decide_choices,
    in_force,
    load_topics,
)
from consent_service.services.guardians.notices import (
    guardian_address,
    mark_answered,
    queue_confirmation,
    queue_notice,
)
from consent_service.services.standing import Standing, load_standings

_CHUNK = 500


def needs_guardian_request(session: Session, ctx: ServiceContext, child: Patron, *,
                           now: datetime, standing: Standing | None = None) -> bool:
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
    if standing is None:
        standing = load_standings(session, [child], purposes=[MINOR_CARD])[child.id]
    return not standing.verdict(ctx.catalog.get(MINOR_CARD), None, today).allowed


def request_guardian_consent(session: Session, ctx: ServiceContext, child: Patron,
                             link: GuardianLink, *, now: datetime,
                             standing: Standing | None = None,
                             topics: Sequence[tuple[str, dict[str, str]]] | None = None,
                             new_link: bool = False) -> GuardianRequest | None:
    """Ask the guardian of `link` for their consent for `child`, in the caller's transaction (the
    caller commits): create the request and queue the notice email (category notice).

    Returns the link's pending request if it has one (nothing is sent again), and None when the
    child needs no guardian's consent or the guardian has no email address. The request expires
    CONSENT_GUARDIAN_RESPONSE_DAYS after `now`. `standing` (the child's, every purpose) and
    `topics` may be given by a caller that loaded them for many children at once; `new_link` says
    the link was made in this transaction, so it has no request yet (none is looked for), and the
    request is left for the caller's next flush.
    """
    if not needs_guardian_request(session, ctx, child, now=now, standing=standing):
        return None
    if not new_link:
        pending = _pending_request(session, link, now)
        if pending is not None:
            return pending
    address = guardian_address(session, link)
    if address is None:
        return None
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    language = guardian.preferred_language if guardian is not None else child.preferred_language
    request = GuardianRequest(
        public_id=new_guardian_request_id(), child_id=child.id, guardian_link_id=link.id,
        to_email=address,
        language=template_language(language), notice_version=NOTICE_VERSION, status="pending",
        created_at=now, expires_at=now + timedelta(days=ctx.guardians.response_days),
        last_sent_at=now)
    session.add(request)
    if not new_link:
        session.flush()
    queue_notice(session, ctx, request, child, link, now=now, reminder=False, standing=standing,
                 topics=topics)
    return request


def request_consent_for_links(session: Session, ctx: ServiceContext,
                              links: Sequence[GuardianLink], *, now: datetime) -> int:
    """`request_guardian_consent` for each of these links, made in the caller's transaction (so
    they have no request yet), in that transaction;
    how many requests were made. Loads the patrons, and the children's standings, a chunk at a
    time (a few queries per chunk, not per child); the topics once."""
    made = 0
    topics = load_topics(session) if links else []
    for start in range(0, len(links), _CHUNK):
        chunk = links[start:start + _CHUNK]
        ids = {link.child_id for link in chunk} | {link.guardian_id for link in chunk
                                                   if link.guardian_id is not None}
        patrons = {p.id: p for p in session.scalars(select(Patron).where(Patron.id.in_(ids)))}
        standings = load_standings(session, [patrons[link.child_id] for link in chunk])
        for link in chunk:
            if request_guardian_consent(session, ctx, patrons[link.child_id], link, now=now,
                                        standing=standings[link.child_id], topics=topics,
                                        new_link=True):
                made += 1
        session.flush()
    return made


def _pending_request(session: Session, link: GuardianLink, now: datetime) -> GuardianRequest | None:
    return session.scalar(
        select(GuardianRequest).where(
            GuardianRequest.guardian_link_id == link.id, GuardianRequest.status == "pending",
            GuardianRequest.expires_at > now)
        .order_by(GuardianRequest.created_at.desc(), GuardianRequest.id.desc()).limit(1))


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
    made = decide_choices(session, ctx, child, link, choices, ticked, shown,
                   source=Source.GUARDIAN_PAGE, evidence=proof, now=now)
    lines = in_force(choices, made)
    mark_answered(session, child, link, now)
    request.status = "answered"
    request.answered_at = now
    queue_confirmation(session, ctx, to=request.to_email, language=request.language, child=child,
                        link=link, lines=lines, now=now)
    session.commit()
    return lines

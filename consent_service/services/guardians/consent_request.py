"""A consent request for a child: when one is made, the guardian's page, and the answer."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Protocol

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
from consent_service.services.bulk import insert_rows, one_of
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
    mark_answered,
    notice_renderer,
    notice_row,
    queue_confirmation,
    queue_notice,
)
from consent_service.services.outgoing_mail import queue_emails
from consent_service.services.standing import PatronLike, Standing, load_standings

_CHUNK = 500


def needs_guardian_request(session: Session, ctx: ServiceContext, child: PatronLike, *,
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
                             link: GuardianLink, *, now: datetime) -> GuardianRequest | None:
    """Ask the guardian of `link` for their consent for `child`, in the caller's transaction (the
    caller commits): create the request and queue the notice email (category notice).

    Returns the link's pending request if it has one (nothing is sent again), and None when the
    child needs no guardian's consent or the guardian has no email address. The request is made
    for the guardian patron's address, else the link's, in the guardian patron's language, else
    the child's, and expires CONSENT_GUARDIAN_RESPONSE_DAYS after `now`. For many links made in
    one transaction, `request_consent_for_links` does the same set-based.
    """
    if not needs_guardian_request(session, ctx, child, now=now):
        return None
    pending = _pending_request(session, link, now)
    if pending is not None:
        return pending
    guardian = session.get(Patron, link.guardian_id) if link.guardian_id is not None else None
    values = _request_values(ctx, child, link, guardian, now)
    if values is None:
        return None
    request = GuardianRequest(**values)
    session.add(request)
    session.flush()
    queue_notice(session, ctx, request, child, link, now=now, reminder=False)
    return request


class NewLink(Protocol):
    """A guardian link made in the caller's transaction (a GuardianLink, flushed, or a row of
    these columns)."""

    id: int
    child_id: int
    guardian_id: int | None
    guardian_email: str | None


def request_consent_for_links(session: Session, ctx: ServiceContext, links: Sequence[NewLink],
                              *, now: datetime) -> int:
    """`request_guardian_consent` for each of these links, made in the caller's transaction (so
    they have no request yet), in that transaction, set-based; how many requests were made.

    A chunk of links at a time: one query reads the children and guardians (as rows, not
    objects), one reads the standings of the children whose card may need a guardian's
    permission (13 to 16), and the requests and notices are inserted as table rows
    (`insert_rows`, `queue_emails`); the topics are read once, and the notices rendered by the
    process's `notice_renderer`. The requests and outbox rows are those the per-link path makes,
    ids, random public ids and the links' tokens aside (property tests:
    tests/integration/guardians/test_bulk_notices.py)."""
    if not links:
        return 0
    topics = load_topics(session)
    renderer = notice_renderer()
    today = ctx.today(now)
    made = 0
    for start in range(0, len(links), _CHUNK):
        chunk = links[start:start + _CHUNK]
        ids = {link.child_id for link in chunk} | {link.guardian_id for link in chunk
                                                   if link.guardian_id is not None}
        patrons = {row.id: row for row in session.execute(
            select(*_PATRON_COLUMNS).where(one_of(session, Patron.id, ids)))}
        teens = [child for child in (patrons[link.child_id] for link in chunk)
                 if child.birth_date is not None and child.status == "active"
                 and CHILD_AGE <= age_on(child.birth_date, today) < MINOR_CARD_AGE]
        standings = (load_standings(session, {child.id: child for child in teens}.values(),
                                    purposes=[MINOR_CARD]) if teens else {})
        requests: list[dict[str, Any]] = []
        notices: list[dict[str, Any]] = []
        for link in chunk:
            child = patrons[link.child_id]
            if not needs_guardian_request(session, ctx, child, now=now,
                                          standing=standings.get(child.id)):
                continue
            guardian = patrons[link.guardian_id] if link.guardian_id is not None else None
            values = _request_values(ctx, child, link, guardian, now)
            if values is None:
                continue
            requests.append(values)
            notices.append(notice_row(ctx, SimpleNamespace(**values), child, guardian, now=now,
                                      reminder=False, topics=topics if child.email else [],
                                      renderer=renderer))
        insert_rows(session, _REQUESTS, requests)
        queue_emails(session, notices)
        made += len(requests)
    return made


_REQUESTS = GuardianRequest.__table__  # inserted with `insert_rows`: no ORM object per request
# What the bulk path reads of children (eligibility's columns, for the standings) and guardians.
_PATRON_COLUMNS = (Patron.id, Patron.public_id, Patron.first_name, Patron.birth_date,
                   Patron.status, Patron.email, Patron.preferred_language, Patron.address_key,
                   Patron.street, Patron.city, Patron.postal_code)


def _request_values(ctx: ServiceContext, child: PatronLike, link: NewLink,
                    guardian: Any | None, now: datetime) -> dict[str, Any] | None:
    """The columns of a new pending request to the guardian of `link` (`guardian`, the patron,
    or None) for `child`; None when there is no address to ask at."""
    address = guardian.email if guardian is not None and guardian.email else link.guardian_email
    if address is None:
        return None
    language = guardian.preferred_language if guardian is not None else child.preferred_language
    return {"public_id": new_guardian_request_id(), "child_id": child.id,
            "guardian_link_id": link.id, "to_email": address,
            "language": template_language(language), "notice_version": NOTICE_VERSION,
            "status": "pending", "created_at": now,
            "expires_at": now + timedelta(days=ctx.guardians.response_days),
            "last_sent_at": now}


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

"""The family page: every child linked to a guardian, changing their decisions, a child's data
(downloaded at once, services.patron_data), asking for a child's erasure."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.addresses import mask_email
from consent_service.domain.ledger import Source
from consent_service.domain.tokens import InvalidLinkError, LinkClaims, LinkKind
from consent_service.models import (
    ErasureRequest,
    GuardianLink,
    GuardianRequest,
    Patron,
)
from consent_service.services.context import ServiceContext
from consent_service.services.erasure import request_erasure
from consent_service.services.guardians.choices import (
    NOTICE_VERSION,
    ChildChoices,
    DecisionLine,
    GuardianError,
    NotYourChildError,
    child_choices,
    decide_choices,
)
from consent_service.services.guardians.notices import guardian_address, mark_answered, queue_confirmation

# What a guardian asks staff for from the family page. A child's data is no longer a request: the
# guardian downloads it at once (`family_child` + services.patron_data); older `download` tasks
# stay in the table and on the staff page until done.
FAMILY_REQUEST_KINDS = ("erasure",)


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


def family_child(session: Session, family: Family, child_public_id: str) -> Patron:
    """The child with this public id, when linked to the family's guardian.

    :raise NotYourChildError: for any other patron, or none.
    """
    return _family_child(session, family, child_public_id)[0]


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
    lines = decide_choices(session, ctx, child, link, view.choices, ticked, shown,
                    source=Source.GUARDIAN_PAGE, evidence=proof, now=now)
    if lines:
        mark_answered(session, child, link, now)
        queue_confirmation(session, ctx, to=family.address, language=family.language,
                            child=child, link=link, lines=lines, now=now)
    session.commit()
    return child, lines


def request_child_data(session: Session, ctx: ServiceContext, family: Family,
                       child_public_id: str, kind: str, *, now: datetime
                       ) -> tuple[Patron, ErasureRequest, bool]:
    """Ask for a child's erasure (`erasure`, the one kind a guardian asks staff for: a child's data
    is downloaded from the family page at once): an erasure request, which staff carry out from
    their erasure requests page; one open request per child (asking again while one is open adds
    nothing). Returns the child, the request and whether it is new; commits.

    :raise NotYourChildError: for a child not linked to this guardian; nothing is created.
    """
    if kind not in FAMILY_REQUEST_KINDS:
        raise GuardianError(f"a request is for an erasure, not {kind!r}")
    child, link = _family_child(session, family, child_public_id)
    return (child, *request_erasure(session, child, requested_by="guardian",
                                    guardian_link_id=link.id, now=now))

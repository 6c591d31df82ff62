"""Open a signed link: check it for its kind of page and find the patron it was issued for."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.tokens import InvalidLinkError, LinkClaims, LinkKind
from consent_service.models import Patron
from consent_service.services.context import ServiceContext


def open_link(session: Session, ctx: ServiceContext, kind: LinkKind, token: str, *,
              now: datetime) -> tuple[Patron, LinkClaims]:
    """The patron a link of `kind` was issued for, and what the link says.

    Raises ExpiredLinkError for a genuine link past its lifetime, and InvalidLinkError for one that
    was tampered with, signed for another kind of page, or names a patron we do not have (any more).
    """
    claims = ctx.signer.verify(kind, token, now=now)
    patron = session.scalar(select(Patron).where(Patron.public_id == claims.patron_id))
    if patron is None:
        raise InvalidLinkError("this link is not valid")
    return patron, claims

"""The access log: every look by staff at a patron's record, written as it happens, read by admins."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent_service.domain.addresses import InvalidEmailError, normalize_email
from consent_service.models import Patron, PatronAccess, StaffUser

LOG_PAGE_SIZE = 100


class Access(StrEnum):
    """What a staff member did with a patron's record."""

    VIEW = "view"  # opened the patron page
    PHOTO_ROSTER = "photo_roster"  # checked an event roster that listed the patron


def log_access(session: Session, staff_id: int, patron_ids: Iterable[int], what: Access, *,
               now: datetime) -> None:
    """Add one access log entry per patron, in the caller's transaction (the caller commits, even
    when its page only reads: the log is what proves who saw a confidential record)."""
    session.add_all(PatronAccess(staff_user_id=staff_id, patron_id=patron_id, what=what.value,
                                 at=now) for patron_id in patron_ids)


@dataclass(frozen=True)
class AccessEntry:
    """One line of the access log as an admin reads it."""

    at: datetime
    staff_email: str
    what: str
    patron_public_id: str
    card_number: str
    patron_name: str


@dataclass(frozen=True)
class AccessLogPage:
    """A page of the access log, newest first, and how many entries match in all."""

    entries: list[AccessEntry]
    total: int
    page: int
    pages: int


def read_access_log(session: Session, *, staff_email: str = "", card_number: str = "",
                    page: int = 1) -> AccessLogPage:
    """The access log, newest first, LOG_PAGE_SIZE entries a page, optionally only one staff
    member's (by email) or one patron's (by card number). An unknown email or card matches
    nothing. Reads only."""
    query = (select(PatronAccess, StaffUser.email, Patron.public_id, Patron.card_number,
                    Patron.first_name, Patron.last_name)
             .join(StaffUser, StaffUser.id == PatronAccess.staff_user_id)
             .join(Patron, Patron.id == PatronAccess.patron_id))
    count = select(func.count()).select_from(PatronAccess)
    if staff_email.strip():
        try:
            email = normalize_email(staff_email, strict=False)
        except InvalidEmailError:
            email = staff_email.strip().lower()
        staff_id = session.scalar(select(StaffUser.id).where(StaffUser.email == email))
        query = query.where(PatronAccess.staff_user_id == staff_id)
        count = count.where(PatronAccess.staff_user_id == staff_id)
    if card_number.strip():
        patron_id = session.scalar(select(Patron.id).where(
            Patron.card_number == card_number.strip()))
        query = query.where(PatronAccess.patron_id == patron_id)
        count = count.where(PatronAccess.patron_id == patron_id)
    total = session.scalar(count) or 0
    pages = max(1, -(-total // LOG_PAGE_SIZE))
    page = min(max(page, 1), pages)
    rows = session.execute(query.order_by(PatronAccess.at.desc(), PatronAccess.id.desc())
                           .limit(LOG_PAGE_SIZE).offset((page - 1) * LOG_PAGE_SIZE))
    entries = [AccessEntry(access.at, email, access.what, public_id, card,
                           f"{first} {last}".strip())
               for access, email, public_id, card, first, last in rows]
    return AccessLogPage(entries, total, page, pages)

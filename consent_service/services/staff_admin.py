"""What admins do on the staff pages: staff accounts (list, create, deactivate) and email topics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.models import StaffUser, Topic
from consent_service.services.staff_accounts import (
    StaffAccountError,
    StaffMember,
    create_staff,
    generate_password,
)


@dataclass(frozen=True)
class StaffAccount:
    """A staff account as the admin page lists it (never its password hash)."""

    id: int
    email: str
    role: str
    active: bool
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime


def staff_accounts(session: Session) -> list[StaffAccount]:
    """Every staff account, active ones first, then by email. Reads only."""
    users = session.scalars(select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.email))
    return [StaffAccount(u.id, u.email, u.role, u.active, u.locked_until, u.last_login_at,
                         u.created_at) for u in users]


@dataclass(frozen=True)
class NewAccount:
    """A created account and its generated password, to be shown once and never again."""

    member: StaffMember
    password: str


def create_account(session: Session, email: str, role: str, *, now: datetime) -> NewAccount:
    """Create a staff account with a generated password (see staff_accounts.create_staff, which
    commits and raises for a used address, an unknown role or an address that cannot receive
    mail)."""
    password = generate_password()
    return NewAccount(create_staff(session, email, role, password, now=now), password)


def deactivate_account(session: Session, account_id: int, *, by: StaffMember) -> StaffAccount:
    """Deactivate a staff account: it can no longer sign in, and every login it holds ends at its
    next request. Commits.

    :raise StaffAccountError: for an unknown or already inactive account, or the admin's own (so
        that the library is never left without an admin by mistake).
    """
    user = session.get(StaffUser, account_id)
    if user is None or not user.active:
        raise StaffAccountError(f"no active staff account {account_id}")
    if user.id == by.id:
        raise StaffAccountError("you cannot deactivate your own account")
    user.active = False
    # Its sessions end for good (not only while it is inactive): see staff_accounts.end_sessions.
    user.session_epoch = StaffUser.session_epoch + 1
    session.commit()
    return StaffAccount(user.id, user.email, user.role, user.active, user.locked_until,
                        user.last_login_at, user.created_at)


@dataclass(frozen=True)
class TopicLine:
    """An email topic as the admin page lists it."""

    key: str
    name: str
    name_es: str
    sendgrid_group_id: int | None


def topic_lines(session: Session) -> list[TopicLine]:
    """Every email topic, by key. Reads only."""
    return [TopicLine(t.key, t.name, (t.names or {}).get("es", ""), t.sendgrid_group_id)
            for t in session.scalars(select(Topic).order_by(Topic.key))]

"""Staff accounts: creating them, signing in (argon2 hashes, lockout after repeated failures) and
out (every session of the member ends, server-side)."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.addresses import normalize_email
from consent_service.domain.staff import Permission, Role, may, role_of
from consent_service.models import StaffUser

MIN_PASSWORD_LENGTH = 12
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when no account can sign in, so that a refusal takes as long either way
    (made on first use: nothing is computed at import)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


class StaffAccountError(ConsentServiceError):
    """A staff account that cannot be created or changed as asked; the message says why."""


class LoginRefusedError(ConsentServiceError):
    """A sign-in refused. The message is the same for an unknown address, a wrong password, a
    locked or a disabled account, so that the page reveals none of them."""


@dataclass(frozen=True)
class StaffMember:
    """A signed-in person as the pages see them. `session_epoch` is the account's count of
    sign-outs: a login is good only while the number it began under is still the account's."""

    id: int
    email: str
    role: Role
    session_epoch: int = 0

    def may(self, permission: Permission) -> bool:
        return may(self.role, permission)


def _member(user: StaffUser) -> StaffMember:
    return StaffMember(user.id, user.email, Role(user.role), user.session_epoch)


def create_staff(session: Session, email: str, role: str, password: str, *,
                 now: datetime) -> StaffMember:
    """Create a staff account and commit.

    :raise StaffAccountError: an address already used, or a password under 12 characters.
    :raise UnknownRoleError: a role that is not admin, staff or marketing.
    :raise InvalidEmailError: an address that cannot receive mail.
    """
    address = normalize_email(email)
    chosen = role_of(role)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffAccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(StaffUser.id).where(StaffUser.email == address)) is not None:
        raise StaffAccountError(f"a staff account for {address} exists already")
    user = StaffUser(email=address, password_hash=_HASHER.hash(password), role=chosen.value,
                     active=True, failed_logins=0, created_at=now)
    session.add(user)
    session.commit()
    return _member(user)


def generate_password() -> str:
    """A password for a new account, shown once: 20 random URL-safe characters."""
    return secrets.token_urlsafe(15)


def sign_in(session: Session, email: str, password: str, *, now: datetime,
            lockout_failures: int, lockout: timedelta) -> StaffMember:
    """Check a staff member's address and password, and commit what the attempt changed.

    `lockout_failures` wrong passwords in a row lock the account for `lockout`; while locked, even
    the right password is refused (and does not extend the lock). A success resets the count.

    :raise LoginRefusedError: always with the same message, whatever the reason.
    """
    refused = LoginRefusedError("that email and password do not match an account that can sign in "
                                "now; after several tries an account is locked for a while")
    try:
        address = normalize_email(email)
    except ConsentServiceError:
        address = None
    user = (session.scalar(select(StaffUser).where(StaffUser.email == address))
            if address else None)
    if user is None:
        _verify(_dummy_hash(), password)
        raise refused
    if not user.active or (user.locked_until is not None and user.locked_until > now):
        _verify(_dummy_hash(), password)
        raise refused
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= lockout_failures:
            user.locked_until = now + lockout
            user.failed_logins = 0
        session.commit()
        raise refused
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    session.commit()
    return _member(user)


def find_staff(session: Session, staff_id: int) -> StaffMember | None:
    """The active staff member with this id (a signed-in session's), or None."""
    user = session.get(StaffUser, staff_id)
    return _member(user) if user is not None and user.active else None


def end_sessions(session: Session, staff_id: int) -> None:
    """End every session the staff member holds, on every device, and commit: the account's
    session epoch goes up by one, so a session begun under the old number (the one signing out,
    and any copy of its cookie) is refused from the next request on. One UPDATE, so two
    sign-outs at once both count."""
    session.execute(update(StaffUser).where(StaffUser.id == staff_id)
                    .values(session_epoch=StaffUser.session_epoch + 1))
    session.commit()


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False

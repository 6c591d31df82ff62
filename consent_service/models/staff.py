"""Staff accounts for the staff pages (argon2 password hashes, lockout after repeated failures)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.extensions import db
from consent_service.models.columns import UTCDateTime


class StaffUser(db.Model):
    """A person who signs in to the staff pages; `role` is a domain.staff.Role."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # wrong passwords in a row
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Counts sign-outs: a login keeps the number it began under and ends once it changes, so
    # signing out (or being deactivated) ends every copy of every session the member holds.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

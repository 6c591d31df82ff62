"""Erasure requests: a patron's or a guardian's request to erase a patron's personal data, and the
record of each erasure carried out (by whom, when), which staff see as tasks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.extensions import db
from consent_service.models.columns import UTCDateTime


class ErasureRequest(db.Model):
    """One request to erase a patron (open until carried out), or the record of an erasure staff,
    the API or a command carried out directly (done at once). `done_by` says who carried it out:
    a staff member's email, `api:<key prefix>`, `cli`, or `retention`."""

    __tablename__ = "erasure_requests"
    __table_args__ = (
        CheckConstraint("requested_by in ('patron', 'guardian', 'staff', 'api', 'cli', 'retention')",
                        name="requested_by"),
        CheckConstraint("status in ('open', 'done')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id"), index=True)
    requested_by: Mapped[str] = mapped_column(String(16))
    guardian_link_id: Mapped[int | None] = mapped_column(
        ForeignKey("guardian_links.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_by: Mapped[str | None] = mapped_column(String(200))

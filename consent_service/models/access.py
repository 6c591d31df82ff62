"""Who looked at which patron's record, and when: library records are confidential (C.R.S. 24-90-119)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.extensions import db
from consent_service.models.columns import BigId, UTCDateTime
from consent_service.models.patrons import Patron


class PatronAccess(db.Model):
    """One look by a staff member at a patron's record ("view": the patron page; "photo_roster": a
    roster check that listed them). Rows are only ever inserted."""

    __tablename__ = "patron_access_log"
    __table_args__ = (
        Index("ix_patron_access_log_staff_user_id_at", "staff_user_id", "at"),
        Index("ix_patron_access_log_patron_id_at", "patron_id", "at"),
        CheckConstraint("what in ('view', 'photo_roster')", name="what"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    staff_user_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id"))
    what: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


# The staff search's case-insensitive prefix match on names (`lower(name) LIKE 'ana%'`): the
# pattern operator class lets PostgreSQL use these indexes whatever the database's collation.
Index("ix_patrons_lower_first_name", func.lower(Patron.first_name),
      postgresql_ops={"lower_1": "text_pattern_ops"})
Index("ix_patrons_lower_last_name", func.lower(Patron.last_name),
      postgresql_ops={"lower_1": "text_pattern_ops"})

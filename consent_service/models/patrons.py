"""Patrons and what hangs on them: guardian links and requests, email topics, policy versions."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.extensions import db
from consent_service.models.columns import (
    BigId,
    UTCDateTime,
    new_guardian_link_id,
    new_guardian_request_id,
    new_public_id,
)


class Patron(db.Model):
    __tablename__ = "patrons"
    __table_args__ = (
        Index("ix_patrons_address_key_id", "address_key", "id"),
        CheckConstraint("status in ('active', 'inactive')", name="status"),
        CheckConstraint("preferred_language in ('en', 'es')", name="preferred_language"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    card_number: Mapped[str] = mapped_column(String(64), unique=True)
    # the ILS's own id for the patron (Koha borrowernumber, Sierra record number, Polaris PatronID):
    # how a later file names this patron as a guardian (Koha's guarantor_id)
    ils_id: Mapped[str | None] = mapped_column(String(64), index=True)
    first_name: Mapped[str] = mapped_column(String(200), default="")
    last_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    address_key: Mapped[str | None] = mapped_column(String(64))
    birth_date: Mapped[date | None] = mapped_column(Date)
    preferred_language: Mapped[str] = mapped_column(String(2), default="en")
    street: Mapped[str] = mapped_column(String(300), default="")
    city: Mapped[str] = mapped_column(String(120), default="")
    state: Mapped[str] = mapped_column(String(60), default="")
    postal_code: Mapped[str] = mapped_column(String(20), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when the patron's personal data was erased: the row stays as a tombstone (inactive, card
    # number and public id replaced) that keeps the ledger's decisions (services/erasure.py).
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def has_postal_address(self) -> bool:
        return bool(self.street and self.city and self.postal_code)


class GuardianLink(db.Model):
    """A guardian of a child: a patron record, or an email address until they have one."""

    __tablename__ = "guardian_links"
    __table_args__ = (
        # Named in full: the "uq" convention names only the first column, and PostgreSQL refuses
        # two constraints called uq_guardian_links_child_id.
        UniqueConstraint("child_id", "guardian_id", name="uq_guardian_links_child_id_guardian_id"),
        UniqueConstraint("child_id", "guardian_email",
                         name="uq_guardian_links_child_id_guardian_email"),
        CheckConstraint("guardian_id is not null or guardian_email is not null", name="someone"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # the guardian's opaque id in their links (guardian and family pages); never a name or address
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_guardian_link_id)
    child_id: Mapped[int] = mapped_column(ForeignKey("patrons.id", ondelete="CASCADE"), index=True)
    guardian_id: Mapped[int | None] = mapped_column(
        ForeignKey("patrons.id", ondelete="CASCADE"), index=True
    )
    guardian_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Topic(db.Model):
    """An email topic (events, kids & teens...), each mapped to a SendGrid unsubscribe group."""

    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))  # in English, and for any other language
    names: Mapped[dict[str, str] | None] = mapped_column(JSON)  # language -> name, e.g. {"es": …}
    sendgrid_group_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PolicyVersion(db.Model):
    """A version of the library's privacy policy: from `effective_at` every decision made records
    it (services/decisions.py); `material` changes are announced by email (services/policies.py)."""

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(32), unique=True)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    summary: Mapped[str] = mapped_column(Text, default="")  # what changed, in English
    # what changed in another language, e.g. {"es": …}; the English summary stands in otherwise
    summaries: Mapped[dict[str, str] | None] = mapped_column(JSON)
    material: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PolicyNotice(db.Model):
    """A policy-change notice queued for a patron: one per (version, patron), written in the same
    transaction as the queued message, so that a notice run stopped at any point and run again
    writes only to the rest. The message row may later be gone or its address cleared; this row
    stays as the record that the patron was told."""

    __tablename__ = "policy_notices"
    __table_args__ = (
        UniqueConstraint("policy_version_id", "patron_id",
                         name="uq_policy_notices_policy_version_id_patron_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("policy_versions.id"))
    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id", ondelete="CASCADE"), index=True)
    outbox_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("outbox_messages.id", ondelete="SET NULL"))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime())


class GuardianRequest(db.Model):
    """A request for a guardian's consent for a child: the notice emailed, then answered or expired.
    `to_email` is the address the notice went to (the confirmation goes there too); it is erased
    when the request expires unanswered."""

    __tablename__ = "guardian_requests"
    __table_args__ = (
        Index("ix_guardian_requests_status_expires_at", "status", "expires_at"),
        CheckConstraint("status in ('pending', 'answered', 'expired')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_guardian_request_id)
    child_id: Mapped[int] = mapped_column(ForeignKey("patrons.id", ondelete="CASCADE"), index=True)
    guardian_link_id: Mapped[int | None] = mapped_column(
        ForeignKey("guardian_links.id", ondelete="SET NULL"), index=True)
    to_email: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(2), default="en")
    notice_version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class FamilyRequest(db.Model):
    """A guardian's request, from the family page, for a child's data (download) or its erasure:
    a task for staff until they mark it done."""

    __tablename__ = "family_requests"
    __table_args__ = (
        CheckConstraint("kind in ('download', 'erasure')", name="kind"),
        CheckConstraint("status in ('open', 'done')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("patrons.id", ondelete="CASCADE"), index=True)
    guardian_link_id: Mapped[int | None] = mapped_column(
        ForeignKey("guardian_links.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

"""The database tables: patrons, guardians, topics, the append-only ledger and its projections."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from consent_service.extensions import db

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for the ledger.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_public_id() -> str:
    """An opaque patron id for links, exports and SendGrid: random, never derived from the person."""
    return "p_" + secrets.token_urlsafe(12)


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

    @property
    def has_postal_address(self) -> bool:
        return bool(self.street and self.city and self.postal_code)


class GuardianLink(db.Model):
    """A guardian of a child: a patron record, or an email address until they have one."""

    __tablename__ = "guardian_links"
    __table_args__ = (
        UniqueConstraint("child_id", "guardian_id"),
        UniqueConstraint("child_id", "guardian_email"),
        CheckConstraint("guardian_id is not null or guardian_email is not null", name="someone"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
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
    name: Mapped[str] = mapped_column(String(200))
    sendgrid_group_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PolicyVersion(db.Model):
    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(32), unique=True)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    material: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ConsentEvent(db.Model):
    """One decision, as it was made. Rows are only ever inserted."""

    __tablename__ = "consent_events"
    __table_args__ = (
        Index("ix_consent_events_patron_purpose", "patron_id", "purpose", "topic"),
        Index("ix_consent_events_address_purpose", "address_key", "purpose", "topic"),
        CheckConstraint("decision in ('opt_in', 'opt_out')", name="decision"),
        CheckConstraint("patron_id is not null or address_key is not null", name="subject"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patron_id: Mapped[int | None] = mapped_column(ForeignKey("patrons.id"))
    address_key: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(40))
    topic: Mapped[str] = mapped_column(String(64), default="")
    decision: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(16))
    actor_ref: Mapped[str | None] = mapped_column(String(64))
    policy_version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    effective: Mapped[bool] = mapped_column(Boolean)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sg_event_id: Mapped[str | None] = mapped_column(String(128), unique=True)


class PatronDecision(db.Model):
    """Projection: the decision in force per (patron, purpose, topic); topic "" is the whole purpose."""

    __tablename__ = "patron_decisions"

    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(40), primary_key=True)
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("consent_events.id"))


class AddressDecision(db.Model):
    """Projection: the email decision in force per (address, purpose, topic), whoever made it."""

    __tablename__ = "address_decisions"

    address_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(40), primary_key=True)
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("consent_events.id"))


class AddressSuppression(db.Model):
    """A spam report against an address: no email until someone at the address opts back in."""

    __tablename__ = "address_suppressions"

    address_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    suppressed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lifted_by_event_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("consent_events.id"))


class UndeliverableAddress(db.Model):
    """A hard bounce or invalid address: not a decision; a patron's new address starts clean."""

    __tablename__ = "undeliverable_addresses"

    address_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ExportManifest(db.Model):
    """A record of one contact export: who, when, what, how many, and the file's SHA-256."""

    __tablename__ = "export_manifests"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(40))
    topic: Mapped[str | None] = mapped_column(String(64))
    row_count: Mapped[int] = mapped_column(Integer)
    excluded_counts: Mapped[dict[str, int]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str | None] = mapped_column(String(500))


class OutboxMessage(db.Model):
    """An email, rendered and written in the sender's transaction; sent after commit, exactly once."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_status_available", "status", "available_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    template: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))  # transactional | marketing | notice
    patron_id: Mapped[int | None] = mapped_column(ForeignKey("patrons.id", ondelete="SET NULL"))
    to_address: Mapped[str | None] = mapped_column(String(320))  # cleared once sent
    from_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    custom_args: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    asm_group_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class SuppressionSyncJob(db.Model):
    """An address whose email decisions changed and must be pushed to SendGrid. The job names the
    address only: the sender reads the state in force when it sends, so repeated changes coalesce."""

    __tablename__ = "suppression_sync_jobs"
    __table_args__ = (Index("ix_suppression_sync_jobs_status_available", "status", "available_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address_key: Mapped[str] = mapped_column(String(64), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)

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
    LargeBinary,
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


def new_guardian_link_id() -> str:
    """An opaque id for a guardian link, as a patron's public id is for a patron."""
    return "g_" + secrets.token_urlsafe(12)


def new_guardian_request_id() -> str:
    """An opaque id for a guardian consent request, carried in the guardian's link."""
    return "r_" + secrets.token_urlsafe(12)


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


class UnsubscribeFeedback(db.Model):
    """Why someone unsubscribed, told on the confirmation page: evidence kept beside the insert-only
    event it explains (one answer per event, never changed). The text is free, so erasure and
    retention must treat it as personal data."""

    __tablename__ = "unsubscribe_feedback"
    __table_args__ = (
        CheckConstraint("reason_code in ('too_many', 'not_relevant', 'never_signed_up', 'other')",
                        name="reason_code"),
    )

    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("consent_events.id"), primary_key=True)
    reason_code: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookBatch(db.Model):
    """A SendGrid Event Webhook POST, stored as received before it is answered, then processed; one
    whose processing failed waits here for the worker. `body` may be cleared by retention."""

    __tablename__ = "webhook_batches"
    __table_args__ = (Index("ix_webhook_batches_status_available", "status", "available_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # None: verification off
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|processed|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # outcome -> events
    # The events counted `invalid`, kept for operators: [{"index": n, "reason": one line}]; None when
    # there were none (SQL NULL, so a query can find the batches that have some).
    rejected: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))


class SendGridEventReceipt(db.Model):
    """A SendGrid event that acted on the ledger (or tried to): a later delivery of the same event,
    under its `sg_event_id` or under a new one with the same content, adds nothing."""

    __tablename__ = "sendgrid_event_receipts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    sg_event_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    batch_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("webhook_batches.id", ondelete="SET NULL"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    asm_group_id: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(16))  # applied | unknown_group | invalid



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


class RateLimitCounter(db.Model):
    """The hits of one rate limit (a key such as a client or an address's keyed hash, never an
    address) in its current fixed window, shared by every process that serves the pages. A row whose
    window has passed counts nothing and is deleted when another window opens
    (consent_service/ratelimit.py)."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

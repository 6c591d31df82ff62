"""The outbox (mail, SendGrid suppression jobs), SendGrid webhook batches and their receipts, and
the public pages' rate-limit counters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.extensions import db
from consent_service.models.columns import (
    BigId,
    UTCDateTime,
)


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


class RateLimitCounter(db.Model):
    """The hits of one rate limit (a key such as a client or an address's keyed hash, never an
    address) in its current fixed window, shared by every process that serves the pages. A row whose
    window has passed counts nothing and is deleted when another window opens
    (consent_service/ratelimit.py)."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

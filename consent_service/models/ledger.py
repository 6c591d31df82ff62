"""The append-only ledger of consent events, its projections (what is in force per patron and per
address), address suppressions and undeliverable addresses, and unsubscribe feedback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.extensions import db
from consent_service.models.columns import (
    BigId,
    UTCDateTime,
)


class ConsentEvent(db.Model):
    """One decision, as it was made. Rows are only ever inserted."""

    __tablename__ = "consent_events"
    __table_args__ = (
        Index("ix_consent_events_patron_purpose", "patron_id", "purpose", "topic"),
        Index("ix_consent_events_address_purpose", "address_key", "purpose", "topic"),
        Index("ix_consent_events_txid_id", "txid", "id"),
        CheckConstraint("decision in ('opt_in', 'opt_out')", name="decision"),
        CheckConstraint("patron_id is not null or address_key is not null", name="subject"),
        # one event per place: a chain never forks (and verify walks it by this index)
        Index("ix_consent_events_chain_key_chain_seq", "chain_key", "chain_seq", unique=True),
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
    # The inserting transaction's id, which orders the API's ledger feed (services/api_ledger.py).
    # The database fills it: on PostgreSQL the migration's default is pg_current_xact_id(); "0" is
    # SQLite's, where one writer at a time keeps ids in commit order.
    txid: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The tamper-evident chain (domain/ledger_chain.py): the subject's chain, the event's place in
    # it, the previous event's hash and this one's. `evidence_salts` holds a salt per personal
    # evidence value still present, `evidence_digests` a digest per personal value ever given;
    # erasure and retention remove a value and its salt, never the digest.
    chain_key: Mapped[str] = mapped_column(String(80))
    chain_seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    evidence_salts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    evidence_digests: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class LedgerChainHead(db.Model):
    """The end of one ledger chain: how many events it has and the last one's hash, updated under a
    row lock in the transaction that appends, so that removing a chain's last events is detected."""

    __tablename__ = "ledger_chain_heads"

    chain_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    length: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


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

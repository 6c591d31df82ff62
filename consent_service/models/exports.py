"""Eligible-contact exports: each one's manifest and the patrons its file contained."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.extensions import db
from consent_service.models.columns import (
    BigId,
    UTCDateTime,
)


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
    # whose columns the file has: generic, or a mailing tool's (domain/export_formats.py)
    format: Mapped[str] = mapped_column(String(32), server_default="generic")


class ExportedPatron(db.Model):
    """The disclosure record: one patron whose row was in an export's file, written with the
    manifest and never changed. `address_key` is the address an email export's row went to;
    `decision_event_id` is the decision in force that the patron's verdict read (the address's for
    email; None when nobody had decided and the purpose's basis allowed it), so that a withdrawal
    since the export is exactly an opt-out that overrides it."""

    __tablename__ = "exported_patrons"
    __table_args__ = (
        # which exports contained a patron: for the patron's own questions and for erasure
        Index("ix_exported_patrons_patron_id", "patron_id"),
    )

    export_id: Mapped[int] = mapped_column(ForeignKey("export_manifests.id"), primary_key=True)
    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id"), primary_key=True)
    address_key: Mapped[str | None] = mapped_column(String(64))
    decision_event_id: Mapped[int | None] = mapped_column(BigId)

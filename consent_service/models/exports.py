"""Eligible-contact exports: each one's manifest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.extensions import db
from consent_service.models.columns import (
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

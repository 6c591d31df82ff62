"""Column types and id makers every table uses (UTC-aware datetimes on SQLite too)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

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

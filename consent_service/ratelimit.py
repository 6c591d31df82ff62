"""Rate-limit counters in the service's own database (`database://`), shared by every process."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from limits.storage import Storage
from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from consent_service import runtime
from consent_service.extensions import db
from consent_service.models import RateLimitCounter

_counters = RateLimitCounter.__table__
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class DatabaseStorage(Storage):
    """Fixed-window counters in `rate_limit_counters`, for Flask-Limiter's default strategy.

    Each call runs in its own short transaction on its own pooled connection of the current app's
    engine, so it never commits or rolls back the request's session. A hit is one statement
    (INSERT … ON CONFLICT DO UPDATE … RETURNING), atomic on SQLite and PostgreSQL alike. Time is the
    app's clock (`runtime.now`). When a hit opens a new window, counters whose window has passed are
    deleted, so the table holds about one row per client and address seen in the last window."""

    STORAGE_SCHEME: ClassVar[list[str]] = ["database"]  # limits registers the class under it

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: float | str | bool) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Count `amount` hits on `key`, opening a window of `expiry` seconds if none is open."""
        now = runtime.now()
        engine = _engine()
        insert = _INSERTS[engine.dialect.name](_counters).values(
            key=key, hits=amount, expires_at=now + timedelta(seconds=expiry))
        window_passed = _counters.c.expires_at <= now
        statement = insert.on_conflict_do_update(
            index_elements=[_counters.c.key],
            set_={
                "hits": case((window_passed, insert.excluded.hits),
                             else_=_counters.c.hits + insert.excluded.hits),
                "expires_at": case((window_passed, insert.excluded.expires_at),
                                   else_=_counters.c.expires_at),
            },
        ).returning(_counters.c.hits)
        with engine.begin() as connection:
            hits = int(connection.execute(statement).scalar_one())
        if hits == amount:  # a new window opened
            with engine.begin() as connection:
                _delete_passed(connection, now)
        return hits

    def get(self, key: str) -> int:
        """The hits on `key` in its open window (0 when none is open)."""
        with _engine().connect() as connection:
            hits = connection.scalar(select(_counters.c.hits).where(
                _counters.c.key == key, _counters.c.expires_at > runtime.now()))
        return int(hits or 0)

    def get_expiry(self, key: str) -> float:
        """When the open window of `key` closes, as a Unix time (now when none is open)."""
        now = runtime.now()
        with _engine().connect() as connection:
            expires_at: datetime | None = connection.scalar(select(_counters.c.expires_at).where(
                _counters.c.key == key, _counters.c.expires_at > now))
        return (expires_at or now).timestamp()

    def check(self) -> bool:
        """Whether the database answers."""
        try:
            with _engine().connect() as connection:
                connection.scalar(select(1))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        """Forget every counter; the number forgotten."""
        with _engine().begin() as connection:
            return connection.execute(delete(_counters)).rowcount

    def clear(self, key: str) -> None:
        """Forget the counter of `key`."""
        with _engine().begin() as connection:
            connection.execute(delete(_counters).where(_counters.c.key == key))


def _engine() -> Engine:
    """The current app's engine: one limiter serves every app of the process, each with its database."""
    return db.engine


def _delete_passed(connection: Connection, now: datetime) -> None:
    connection.execute(delete(_counters).where(_counters.c.expires_at <= now))

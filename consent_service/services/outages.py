"""Telling a database that cannot be used just now from one that refused what it was given."""

from __future__ import annotations

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


def is_database_outage(error: BaseException) -> bool:
    """Whether a database error says the database cannot be used now (unreachable, connection lost,
    locked, a deadlock or serialization failure) rather than that it refused the data: the work
    must then be tried again later, as a whole."""
    if not isinstance(error, SQLAlchemyError):
        return False
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError | InterfaceError | DisconnectionError
                      | PoolTimeoutError)

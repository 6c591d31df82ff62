"""A use case that reads what it will decide on and then writes takes the database's write turn
before it reads."""

from __future__ import annotations

from sqlalchemy.orm import Session


def begin_writing(session: Session) -> None:
    """On SQLite, start the session's transaction as the database's one writer (`BEGIN
    IMMEDIATE`), unless it has begun one already. Python's `sqlite3` otherwise reads outside any
    transaction until the first write, so two processes could both read "no opt-out yet" and
    both write one; after this, the reads see the last committed state and no other writer can
    change it before this transaction ends. The wait for the turn is `sqlite_writer`'s, then
    SQLite's busy timeout ("database is locked" after it). PostgreSQL needs nothing here: its
    writers take turns by key (`services.decisions`) and read the committed state anyway."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

"""How a request's transaction is run: reads without one on PostgreSQL, and a use case that reads
what it will decide on and then writes takes the database's write turn before it reads."""

from __future__ import annotations

from sqlalchemy.orm import Session

AUTOCOMMIT = "AUTOCOMMIT"


def read_without_transaction(session: Session) -> None:
    """PostgreSQL: the session's statements run in autocommit, without the `BEGIN` before the
    first and the `ROLLBACK` when the connection goes back to the pool: two round trips of three
    for a repeated one-click, of five for an eligibility answer. Under READ COMMITTED each
    statement sees the committed state of its own start either way. Call it before the session's
    first statement; a use case that then writes calls `begin_writing`, which ends it. A
    statement that writes before that is committed by itself. SQLite: nothing changes (its
    transactions cost no round trip)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": AUTOCOMMIT})


def begin_writing(session: Session) -> None:
    """Start the transaction a use case writes in, before it reads what it decides on.

    SQLite: start it as the database's one writer (`BEGIN IMMEDIATE`), unless the session has
    begun one already. Python's `sqlite3` otherwise reads outside any transaction until the
    first write, so two processes could both read "no opt-out yet" and both write one; after
    this, the reads see the last committed state and no other writer can change it before this
    transaction ends. The wait for the turn is `sqlite_writer`'s, then SQLite's busy timeout
    ("database is locked" after it).

    PostgreSQL: end the reads of `read_without_transaction`, if the request began with it, so
    that what follows runs in a transaction of its own; writers take turns by key there
    (`services.decisions`)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        if connection.get_execution_options().get("isolation_level") == AUTOCOMMIT:
            session.commit()
        return
    if connection.dialect.name != "sqlite":
        return
    if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

"""Pooled PostgreSQL connections are checked before use without a round trip, unless they sat idle.

SQLAlchemy's `pool_pre_ping` sends `SELECT 1` each time a request takes a connection from the pool:
on PostgreSQL one more round trip per request (with psycopg, a `BEGIN` then the `SELECT 1`), while
the backends share the CPUs with the workers. What it guards against is a connection the server
has ended (a restart, a failover, `pg_terminate_backend`): the server then says so on the socket
(an error message and its end), so the socket of an idle connection has something to read. Here a
connection is given out only when the pool's copy of it is healthy (`pgconn.status` OK, no
transaction open) and its socket has nothing to read (`poll` with no wait); else the pool drops
it and opens another, as pre-ping does. A connection that has sat idle for longer than
`PING_AFTER_IDLE` seconds, where a firewall or a proxy may have dropped it without a word, still
gets a real round trip (an empty query) before use.

SQLite's connections are files, never ended by a server: they are not checked.
"""

from __future__ import annotations

import select
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

PING_AFTER_IDLE = 30.0  # seconds
_RETURNED = "consent_returned_at"  # the pool record's info key: when the connection came back


def check_postgresql_connections(engine: Engine) -> None:
    """Check every connection `engine`'s pool gives out (see the module's docstring)."""
    event.listen(engine, "checkin", _returned)
    event.listen(engine, "checkout", _check)


def _returned(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info[_RETURNED] = time.monotonic()


def _check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """:raise DisconnectionError: the connection cannot be used; the pool replaces it."""
    if not usable(dbapi_connection):
        raise DisconnectionError("the database ended this connection")
    returned = record.info.get(_RETURNED)
    if returned is not None and time.monotonic() - returned > PING_AFTER_IDLE \
            and not answers(dbapi_connection):
        raise DisconnectionError("the database did not answer on this connection")


def usable(dbapi_connection: Any) -> bool:
    """Whether an idle psycopg connection looks alive, without asking the server: open, healthy,
    no transaction left open, and nothing from the server waiting on its socket."""
    from psycopg import pq

    try:
        pgconn = dbapi_connection.pgconn
        if dbapi_connection.closed or pgconn.status != pq.ConnStatus.OK \
                or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return False
        poller = select.poll()  # not select(): it refuses descriptors past 1023
        poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
        ready = poller.poll(0)
    except Exception:  # any failure to look means the connection is not usable
        return False
    return not ready


def answers(dbapi_connection: Any) -> bool:
    """Whether the server answers an empty query on this connection (one round trip, no
    transaction begun)."""
    from psycopg import pq

    try:
        result = dbapi_connection.pgconn.exec_(b"")
    except Exception:  # psycopg.Error, or a connection closed under us
        return False
    return bool(result.status == pq.ExecStatus.EMPTY_QUERY
                and dbapi_connection.pgconn.status == pq.ConnStatus.OK)

"""PostgreSQL's pooled connections checked before use without a round trip
(consent_service/connection_check.py): a connection the server ended is seen as such, and the pool
replaces it; a healthy one is given out as it is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from consent_service import connection_check
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgresql_only


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine(POSTGRES_URL)
    connection_check.check_postgresql_connections(engine)
    yield engine
    engine.dispose()


def _terminate(pid: int) -> None:
    admin = create_engine(make_url(POSTGRES_URL).set(database="postgres"), poolclass=NullPool)
    with admin.connect() as connection:
        assert connection.execute(text("select pg_terminate_backend(:pid, 5000)"),
                                  {"pid": pid}).scalar()
    admin.dispose()


def test_a_healthy_idle_connection_is_usable_and_one_with_a_transaction_open_is_not(engine):
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        connection.execute(text("select 1"))
        assert not connection_check.usable(raw), "a transaction is open"
        connection.rollback()
        assert connection_check.usable(raw)
        assert connection_check.answers(raw)


def test_a_connection_the_server_ended_is_replaced_before_a_request_uses_it(engine):
    with engine.connect() as connection:
        first = connection.execute(text("select pg_backend_pid()")).scalar_one()
        raw = connection.connection.dbapi_connection
    _terminate(first)

    assert not connection_check.usable(raw), "the server's end is waiting on the socket"
    with engine.connect() as connection:
        second = connection.execute(text("select pg_backend_pid()")).scalar_one()
    assert second != first


def test_a_connection_idle_for_longer_than_the_limit_is_pinged(engine, monkeypatch):
    pinged = []
    answers = connection_check.answers
    monkeypatch.setattr(connection_check, "answers",
                        lambda raw: pinged.append(raw) or answers(raw))
    with engine.connect() as connection:
        connection.execute(text("select 1"))
    with engine.connect() as connection:
        connection.execute(text("select 1"))
    assert pinged == [], "used again at once: no round trip"

    monkeypatch.setattr(connection_check, "PING_AFTER_IDLE", -1.0)
    with engine.connect() as connection:
        connection.execute(text("select 1"))
    assert len(pinged) == 1

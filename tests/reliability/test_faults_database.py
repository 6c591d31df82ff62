"""Fault injection, database side (issue 15, suite 4): the database cannot be used for a moment.
On SQLite another connection holds the write lock (`BEGIN EXCLUSIVE`); on PostgreSQL the database
stops taking connections and every backend of the service is terminated. The webhook must answer
5xx so SendGrid sends the batch again (and the retry is applied exactly once), the pages must say
"try again" (503, one line, no traceback), the worker must back off, and the final state must
equal the run without an outage."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from consent_service import runtime
from consent_service.delivery.mailers import mailer_for
from consent_service.delivery.sender import send_mail_task, send_pending_mail
from consent_service.delivery.worker import run_worker, worker_tasks
from consent_service.extensions import db
from consent_service.models import OutboxMessage
from consent_service.services.api_keys import create_api_key
from consent_service.services.outgoing_mail import queue_email
from tests.conftest import NOW, POSTGRES_URL, Clock
from tests.fakes.sendgrid_api import FakeSendGrid, WebhookSigner
from tests.reliability.fault_scenario import (
    FIGURES,
    baseline,
    count_sendgrid,
    run_scenario,
    scenario_config,
    sent_mail,
)

BUSY_TIMEOUT = 0.2  # SQLite waits this long for a lock before it says "database is locked"


class Outage:
    """Makes the test database unusable and usable again, as often as asked; counts the outages."""

    def __init__(self, sqlite_path: Path | None) -> None:
        self.sqlite_path = sqlite_path
        self.count = 0
        self._holder: sqlite3.Connection | None = None
        # PostgreSQL: the switch is thrown from the cluster's maintenance database (a database
        # cannot refuse connections while the session asking for it is connected to it)
        self._database = make_url(POSTGRES_URL).database if POSTGRES_URL else None
        self._admin = None if sqlite_path else create_engine(
            make_url(POSTGRES_URL).set(database="postgres"), poolclass=NullPool)

    def terminate_connections(self) -> None:
        """PostgreSQL: end every session of the test database (as a restart or a failover does),
        waiting (up to 5 s each) until they have ended."""
        assert self._admin is not None
        with self._admin.connect() as connection:
            connection.execute(text("select pg_terminate_backend(pid, 5000) from pg_stat_activity "
                                    "where datname = :name"), {"name": self._database})

    def begin(self) -> None:
        self.count += 1
        if self.sqlite_path is not None:
            self._holder = sqlite3.connect(self.sqlite_path, isolation_level=None,
                                           check_same_thread=False)
            self._holder.execute("BEGIN EXCLUSIVE")
            return
        assert self._admin is not None
        with self._admin.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text(
                f'alter database "{self._database}" with allow_connections false'))
            connection.execute(text("select pg_terminate_backend(pid) from pg_stat_activity "
                                    "where datname = :name"), {"name": self._database})

    def end(self) -> None:
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None
            return
        assert self._admin is not None
        with self._admin.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text(
                f'alter database "{self._database}" with allow_connections true'))

    @contextmanager
    def during(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        finally:
            self.end()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[dict[str, Any], Outage]]:
    """Settings for an app on a database an outage can hit: a SQLite file (each app of the test
    gets a new one) with a short busy timeout, or the PostgreSQL test database."""
    if POSTGRES_URL:
        config: dict[str, Any] = {}
        outage = Outage(None)
    else:
        path = tmp_path / "consent.sqlite3"
        config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
                  "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": BUSY_TIMEOUT}}}
        outage = Outage(path)
    yield config, outage
    FIGURES["database outages"] += outage.count


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()


def test_requests_during_an_outage_get_503_and_their_retries_end_equal_to_the_run_without(
        app_factory, signer, database):
    """Every request of the workload is first sent while the database is unavailable, then sent
    again once it is back, as SendGrid (for 24 hours) and a person told to try again do."""
    config, outage = database
    expected = baseline(app_factory, signer)
    refused: Counter[tuple[int, str]] = Counter()

    def first_during_an_outage(request: Callable[[], Any]) -> int:
        with outage.during():
            answer = request()
        refused[answer.status_code, answer.headers.get("Retry-After", "-")] += 1
        if answer.status_code != 200:
            assert answer.status_code == 503, answer.text[:300]
            # not Flask-Limiter's window (an hour on "email me a link"): come back in half a minute
            assert answer.headers.get("Retry-After") == "30", (request, answer.headers)
            if answer.is_json:
                assert answer.json["message"] in (
                    "the batch could not be stored; send it again later",
                    "the database is unavailable for a moment; try again later")
            else:
                assert "Please try again in a minute." in answer.text
                assert "Traceback" not in answer.text
        return request().status_code

    run = run_scenario(app_factory, signer, send=first_during_an_outage, config=config)

    assert run.answers.not_ok() == [], run.answers.statuses
    assert refused[200, "-"] < sum(refused.values()), "the outage refused requests"
    assert run.state == expected.state
    assert sent_mail(run.fake) == sent_mail(expected.fake)
    print(f"outages: {outage.count}; first answers: {dict(refused)}")


def test_a_webhook_batch_refused_during_an_outage_and_sent_twice_after_is_applied_once(
        app_factory, signer, database):
    config, outage = database
    expected = baseline(app_factory, signer)
    sendgrid_retries: Counter[int] = Counter()

    def sendgrid_style(request: Callable[[], Any]) -> int:
        """A batch is refused during the outage; SendGrid then delivers it twice (its retry, and
        a copy it sends again though the first was taken)."""
        with outage.during():
            first = request()
        if not first.request.path.startswith("/webhooks/"):
            return request().status_code
        sendgrid_retries[first.status_code] += 1
        assert request().status_code == 200
        return request().status_code

    run = run_scenario(app_factory, signer, send=sendgrid_style, config=config)

    assert run.state["ledger"] == expected.state["ledger"], "each event applied exactly once"
    assert run.state["webhook receipts"] == expected.state["webhook receipts"]
    for key in ("patron projection", "address projection", "sendgrid global", "sendgrid groups"):
        assert run.state[key] == expected.state[key], key
    assert sendgrid_retries[503] > 0


def test_the_worker_backs_off_while_the_database_is_unavailable_and_catches_up_after(
        app_factory, signer, database):
    config, outage = database
    with FakeSendGrid(api_key="test-key") as fake:
        clock = Clock(NOW)
        app = app_factory(**scenario_config(fake, signer, clock, **config))
        queue_preference_links(app, 3)
        waits: list[float] = []
        tasks, _ = worker_tasks(app)

        with outage.during():
            run_worker(app, tasks=tasks, idle_seconds=0.5, stop=lambda: False, max_rounds=6,
                       wait=waits.append)
        run_worker(app, tasks=tasks, idle_seconds=0.5, stop=lambda: False, max_rounds=3,
                   wait=waits.append)

        assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 0.5], "doubling while it fails, idle after"
        assert sorted(to for to, _, _ in sent_mail(fake)) == [
            "reader0@example.org", "reader1@example.org", "reader2@example.org"]
        count_sendgrid(fake)
        assert fake.violations == []


def test_mail_taken_by_sendgrid_just_before_an_outage_is_recorded_as_sent_not_sent_again(
        app_factory, signer, database):
    config, outage = database
    with FakeSendGrid(api_key="test-key") as fake:
        clock = Clock(NOW)
        app = app_factory(**scenario_config(fake, signer, clock, **config))
        queue_preference_links(app, 2)
        ended = threading.Event()

        def outage_while_sendgrid_works(request):
            if request.path == "/v3/mail/send" and outage.count == 0:
                outage.begin()  # the worker's "sent" commit now meets it
                threading.Timer(1.5, lambda: (outage.end(), ended.set())).start()

        fake.before_handling = outage_while_sendgrid_works
        waited: list[float] = []
        with app.app_context():
            sent = send_pending_mail(db.session, mailer_for(app), now=clock.at,
                                     sleep=lambda s: (waited.append(s), ended.wait(s)))
        assert ended.wait(5)
        clock.at += timedelta(hours=1)  # past any claim: a message not recorded would go again
        with app.app_context():
            send_mail_task(app)(clock.at)
            statuses = [m.status for m in db.session.scalars(select(OutboxMessage))]

        assert sent == 2 and statuses == ["sent", "sent"]
        assert waited, "the outage was met and waited out"
        assert sorted(sent_mail(fake).values()) == [1, 1], "each message sent once"
        count_sendgrid(fake)
        assert fake.violations == []


def test_the_api_answers_a_json_503_during_an_outage_and_works_after(app_factory, database):
    config, outage = database
    app = app_factory(**config)
    with app.app_context():
        _, key = create_api_key(db.session, "ils", ["patrons:write"], now=NOW)
    client = app.test_client()
    patron = {"first_name": "Ana", "last_name": "Reyes", "email": "ana@example.org"}
    headers = {"Authorization": f"Bearer {key}"}

    with outage.during():
        answer = client.put("/api/v1/patrons/1001", json=patron, headers=headers)

    assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
    assert answer.json == {"code": 503, "status": "Service Unavailable",
                           "message": "the database is unavailable for a moment; try again later"}
    assert client.put("/api/v1/patrons/1001", json=patron, headers=headers).status_code in (200, 201)


@pytest.mark.postgresql_only
def test_after_postgresql_ends_the_services_connections_the_next_request_reconnects(
        app_factory, database):
    _config, outage = database
    client = app_factory().test_client()
    assert client.get("/readyz").status_code == 200  # a pooled connection now exists

    outage.terminate_connections()

    answer = client.get("/readyz")
    assert answer.status_code == 200, "the pool replaced the dead connection"


def queue_preference_links(app: Flask, n: int) -> None:
    with app.app_context():
        ctx = runtime.context(app)
        for number in range(n):
            queue_email(db.session, ctx, template="preferences_link",
                        to=f"reader{number}@example.org", language="en",
                        context={"links": [{"first_name": "Reader", "url": "https://x/y"}]},
                        category="transactional", now=NOW)
        db.session.commit()

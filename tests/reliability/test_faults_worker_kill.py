"""Fault injection, the worker killed (issue 15, suite 4): `flask worker` runs as a real process and
is killed with SIGKILL in the middle of a batch (while SendGrid holds a request of it), then started
again. Nothing may be lost: every message is sent and every suppression change pushed. A message or
change in flight at the kill is taken up again once its claim lapses: a suppression job then reads
SendGrid's lists first and is not made twice; a message SendGrid had taken (its answer never
arrived) is sent a second time, that one only, with the same Message-ID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from consent_service import runtime
from consent_service.delivery.sender import CLAIM_SECONDS
from consent_service.delivery.worker import run_worker, worker_tasks
from consent_service.extensions import db
from consent_service.models import OutboxMessage, SuppressionSyncJob, Topic
from consent_service.services.outgoing_mail import queue_email
from consent_service.services.sendgrid_sync import LEASE
from tests.conftest import POSTGRES_URL
from tests.fakes.sendgrid_api import FakeSendGrid, RecordedRequest
from tests.integration.sendgrid_fixtures import API_KEY, EVENTS_GROUP, decide
from tests.reliability.fault_scenario import (
    FIGURES,
    count_sendgrid,
    sent_mail,
    settled,
    suppression_writes,
)

MESSAGES = 12
ADDRESSES = 6  # opt out of the events topic: one suppression push for all of them
FLASK = str(Path(sys.executable).with_name("flask"))
# Where the kill falls: the request SendGrid is handling when the worker dies, and whether SendGrid
# goes on to carry it out (its answer then never reaches anyone).
KILLS = {
    "mail send, before SendGrid took it": ("/v3/mail/send", 5, False),
    "mail send, after SendGrid took it": ("/v3/mail/send", 5, True),
    "suppression push, after SendGrid took it": (f"/v3/asm/groups/{EVENTS_GROUP}/suppressions",
                                                 1, True),
}


def worker_process(database_url: str, fake: FakeSendGrid, log: Path) -> subprocess.Popen[bytes]:
    """`flask --app consent_service worker`, configured only by its environment, as in production."""
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("CONSENT_")}
    environment.update(
        CONSENT_DATABASE_URL=database_url, CONSENT_SECRET_KEY="test-secret-key",
        CONSENT_ADDRESS_HASH_KEY="test-address-hash-key",
        CONSENT_PUBLIC_BASE_URL="https://consent.example.org", CONSENT_MAIL_BACKEND="sendgrid",
        CONSENT_MAIL_DISPATCH="worker", CONSENT_SENDGRID_API_KEY=API_KEY,
        CONSENT_SENDGRID_API_HOST=fake.url, CONSENT_SENDGRID_API_TIMEOUT="5")
    with log.open("ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [FLASK, "--app", "consent_service", "worker", "--idle-seconds", "0.2"],
            env=environment, stdout=output, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.05)


def count(app: Flask, statement: Any) -> int:
    with app.app_context():
        value = db.session.scalar(statement) or 0
        db.session.rollback()
    return int(value)


@pytest.mark.parametrize("kill", sorted(KILLS))
def test_a_worker_killed_mid_batch_and_restarted_loses_nothing_and_repeats_at_most_its_one_call(
        app_factory, tmp_path, kill):
    path, nth, carried_out = KILLS[kill]
    database_url = POSTGRES_URL or f"sqlite:///{tmp_path / 'consent.sqlite3'}"
    started = datetime.now(UTC)
    with FakeSendGrid(api_key=API_KEY) as fake:
        fake.add_group(EVENTS_GROUP, "Events")
        fake.slow(0.1)  # a batch takes about a second: the kill falls inside it
        app = app_factory(SQLALCHEMY_DATABASE_URI=database_url, CLOCK=lambda: started,
                          MAIL_BACKEND="sendgrid", MAIL_DISPATCH="worker",
                          SENDGRID_API_KEY=API_KEY, SENDGRID_API_HOST=fake.url)
        queue_work(app, started)
        log = tmp_path / "worker.log"
        first = worker_process(database_url, fake, log)
        seen: list[RecordedRequest] = []

        def kill_the_worker(request: RecordedRequest) -> None:
            if request.path != path:
                return
            seen.append(request)
            if len(seen) == nth:
                os.kill(first.pid, signal.SIGKILL)
                first.wait(10)
                if not carried_out:
                    fake.drop_next(1)  # SendGrid never took it

        fake.before_handling = kill_the_worker
        try:
            assert first.wait(30) == -signal.SIGKILL, log.read_text()[-2000:]
            FIGURES["worker SIGKILLs"] += 1
        finally:
            if first.poll() is None:
                first.kill()
        fake.before_handling = None
        queue_mail(app, started, ["marker@example.org"])  # proves the restarted worker runs

        second = worker_process(database_url, fake, log)
        try:
            pending = OutboxMessage.status == "pending"
            wait_for(lambda: any(to == "marker@example.org" for to, _, _ in sent_mail(fake))
                     and count(app, select(func.count()).where(pending)) <= 1
                     and count(app, select(func.count()).where(
                         SuppressionSyncJob.status == "pending")) == 0,
                     30, "the restarted worker to send what was not in flight")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        output = log.read_text()
        assert second.returncode == 0, output[-2000:]
        assert "Traceback" not in output

        # later: the claim of what was in flight has lapsed, and any worker takes it up
        later = started + timedelta(seconds=max(CLAIM_SECONDS, LEASE.total_seconds()) + 60)
        app.config["CLOCK"] = lambda: later
        tasks, _ = worker_tasks(app)
        for _ in range(3):
            run_worker(app, tasks=tasks, idle_seconds=0, stop=lambda: False, max_rounds=1)
            if settled(app):
                break
        assert settled(app)
        fake.slow(0)

        with app.app_context():
            assert {m.status for m in db.session.scalars(select(OutboxMessage))} == {"sent"}
            assert {j.status for j in db.session.scalars(select(SuppressionSyncJob))} == {"done"}
            db.session.rollback()
        mail = sent_mail(fake)
        assert len(mail) == MESSAGES + 1, "no message lost"
        assert fake.group_suppressions[EVENTS_GROUP] == {
            f"reader{n}@example.org" for n in range(ADDRESSES)}, "no suppression lost"
        repeated_mail = sum(mail.values()) - len(mail)
        repeated_pushes = sum(suppression_writes(fake).values()) - ADDRESSES
        assert repeated_pushes == 0, "a push tried again reads SendGrid's lists first"
        if carried_out and path == "/v3/mail/send":
            assert repeated_mail == 1, "only the message in flight, with its Message-ID"
        else:
            assert repeated_mail == 0
        count_sendgrid(fake)
        assert fake.violations == []


def queue_work(app: Flask, now: datetime) -> None:
    """Twelve messages, and six addresses' opt-outs of the events topic to push."""
    with app.app_context():
        ctx = runtime.context(app)
        db.session.add(Topic(key="events", name="Events", sendgrid_group_id=EVENTS_GROUP,
                             created_at=now - timedelta(days=1)))
        db.session.commit()
    queue_mail(app, now, [f"reader{n}@example.org" for n in range(MESSAGES)])
    with app.app_context():
        ctx = runtime.context(app)
        for n in range(ADDRESSES):
            decide(db.session, ctx, email=f"reader{n}@example.org", decision="opt_out",
                   topic="events", at=now - timedelta(minutes=5), recorded_at=now)


def queue_mail(app: Flask, now: datetime, addresses: list[str]) -> None:
    with app.app_context():
        ctx = runtime.context(app)
        for address in addresses:
            queue_email(db.session, ctx, template="preferences_link", to=address, language="en",
                        context={"links": [{"first_name": "Reader", "url": "https://x/y"}]},
                        category="transactional", now=now - timedelta(seconds=1))
        db.session.commit()

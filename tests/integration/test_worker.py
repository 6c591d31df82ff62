"""The worker loop: runs its tasks round after round, rests when idle, stops cleanly on request or
SIGTERM, and survives a failing task."""

from __future__ import annotations

import logging
import os
import signal
from datetime import UTC

from flask import current_app

from consent_service.delivery.mailers import mailer_for
from consent_service.delivery.sender import send_mail_task
from consent_service.delivery.worker import run_worker
from consent_service.services.outgoing_mail import queue_email
from tests.conftest import NOW


def stop_after(rounds_of: list[object], n: int):
    return lambda: len(rounds_of) >= n


def test_each_task_runs_every_round_with_the_current_utc_time_in_an_app_context(app):
    seen: list[tuple[str, object]] = []

    def mail(now):
        seen.append(("mail", now))
        assert current_app._get_current_object() is app
        return 1

    def sync(now):
        seen.append(("sync", now))
        return 0

    run_worker(app, tasks=[mail, sync], idle_seconds=0, stop=stop_after(seen, 4))

    assert [name for name, _ in seen] == ["mail", "sync", "mail", "sync"]
    assert all(now.tzinfo is UTC for _, now in seen)


def test_the_worker_sends_queued_mail(app, session, ctx, make_patron):
    message = queue_email(session, ctx, template="preferences_saved", to="reader@example.org",
                          language="en", context={"changes": []}, category="transactional",
                          now=NOW, patron=make_patron())
    session.commit()
    handled: list[int] = []
    send_mail = send_mail_task(app)

    def counted(now):
        handled.append(send_mail(now))
        return handled[-1]

    run_worker(app, tasks=[counted], idle_seconds=0, stop=stop_after(handled, 2))

    assert handled == [1, 0]
    session.expire_all()
    assert message.status == "sent"
    assert [m["To"] for m in mailer_for(app).sent] == ["reader@example.org"]


def test_sigterm_lets_the_running_task_finish_then_stops(app):
    ran: list[str] = []

    def first(now):
        os.kill(os.getpid(), signal.SIGTERM)
        ran.append("first finished")
        return 1

    def second(now):
        ran.append("second")
        return 1

    def outside_handler(signum, frame):  # catches the signal if the worker installed none
        ran.append("SIGTERM reached the outside handler")

    before = signal.signal(signal.SIGTERM, outside_handler)
    try:
        run_worker(app, tasks=[first, second], idle_seconds=0, stop=lambda: len(ran) > 3)
        assert ran == ["first finished"]
        assert signal.getsignal(signal.SIGTERM) is outside_handler
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_failing_task_is_logged_without_addresses_and_the_loop_goes_on(app, caplog):
    calls: list[int] = []

    def flaky(now):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database went away while reading reader@example.org")
        return 0

    run_worker(app, tasks=[flaky], idle_seconds=0, stop=stop_after(calls, 3))

    assert len(calls) == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["worker: flaky failed: ConnectionError: database went away while reading "
                      "[address]"]


def test_an_idle_round_rests_before_the_next(app, monkeypatch):
    rests: list[float | None] = []
    rounds: list[int] = []
    monkeypatch.setattr("threading.Event.wait", lambda self, timeout=None: rests.append(timeout))

    def busy_then_idle(now):
        rounds.append(1)
        return 1 if len(rounds) == 1 else 0

    run_worker(app, tasks=[busy_then_idle], idle_seconds=5, stop=stop_after(rounds, 3))

    assert rests == [5]  # after the idle second round; not after the busy first, nor on stopping

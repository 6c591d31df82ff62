"""The background loop: runs the outbox tasks (mail, SendGrid sync) until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from types import FrameType

from flask import Flask

from consent_service import runtime
from consent_service.extensions import db
from consent_service.mail.compose import describe_error

logger = logging.getLogger(__name__)

Task = Callable[[datetime], int]


def run_worker(app: Flask, *, tasks: Sequence[Task], idle_seconds: float,
               stop: Callable[[], bool], max_rounds: int | None = None) -> None:
    """Call each task with the current UTC time, round after round, each in its own application
    context; a task returns how many items it handled. After a round in which no task handled
    anything, wait `idle_seconds`. Return when `stop()` is true, on SIGTERM, or after `max_rounds`.

    SIGTERM is graceful: the task running when it arrives finishes its call (its items are
    committed one by one), no further task starts, and the loop returns. A task that raises is
    logged as one line and counted as idle, so a database outage is waited out, not spun on."""
    terminated = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        logger.info("worker: SIGTERM received, finishing the current task")
        terminated.set()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)

    def stopping() -> bool:
        return terminated.is_set() or stop()

    logger.info("worker: started with %d task(s)", len(tasks))
    rounds = 0
    try:
        while not stopping() and (max_rounds is None or rounds < max_rounds):
            rounds += 1
            handled = 0
            for task in tasks:
                if stopping():
                    break
                handled += _run_task(app, task)
            if handled == 0 and not stopping() and (max_rounds is None or rounds < max_rounds):
                terminated.wait(idle_seconds)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        logger.info("worker: stopped")


def _run_task(app: Flask, task: Task) -> int:
    name = getattr(task, "__name__", type(task).__name__)
    with app.app_context():
        try:
            count = task(runtime.now(app))
        except Exception as exc:  # logged and waited out; the items stay pending for the next round
            db.session.rollback()
            logger.error("worker: %s failed: %s", name, describe_error(exc, limit=300))
            return 0
    if count:
        logger.info("worker: %s handled %d", name, count)
    return count



def worker_tasks(app: Flask) -> tuple[list[Task], list[str]]:
    """The worker's tasks for `app`: send queued mail, retry webhook batches whose processing
    failed, and push suppression changes to SendGrid (only with an API key: without one they wait
    in the outbox). Returns the tasks and warnings to show the person who started the worker."""
    from consent_service.delivery.sender import send_mail_task
    from consent_service.services.sendgrid_sync import push_pending_suppressions
    from consent_service.services.sendgrid_webhook import process_stored_batches

    def retry_webhook_batches(now: datetime) -> int:
        return process_stored_batches(db.session, runtime.context(app), now=now)

    tasks: list[Task] = [send_mail_task(app), retry_webhook_batches]
    if not app.config["SENDGRID_API_KEY"]:
        return tasks, ["CONSENT_SENDGRID_API_KEY is not set: suppression changes stay queued"]
    client = runtime.suppression_client(app)

    def push_suppressions(now: datetime) -> int:
        return push_pending_suppressions(db.session, client, now=now)

    return [*tasks, push_suppressions], []

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
BACKOFF_MAX_SECONDS = 300.0  # the longest wait after rounds in which a task failed


def run_worker(app: Flask, *, tasks: Sequence[Task], idle_seconds: float,
               stop: Callable[[], bool], max_rounds: int | None = None,
               wait: Callable[[float], object] | None = None) -> None:
    """Call each task with the current UTC time, round after round, each in its own application
    context; a task returns how many items it handled. After a round in which no task handled
    anything, wait `idle_seconds`. Return when `stop()` is true, on SIGTERM, or after `max_rounds`.

    SIGTERM is graceful: the task running when it arrives finishes its call (its items are
    committed one by one), no further task starts, and the loop returns. A task that raises (the
    database is unavailable, say) is logged as one line, and the worker backs off: after the n-th
    round in a row in which a task failed it waits `idle_seconds` (at least 1 s) times 2^(n-1), at
    most BACKOFF_MAX_SECONDS, so an outage is waited out, not hammered; the first round that runs
    clean ends the backoff. `wait` (tests) replaces the interruptible sleep."""
    terminated = threading.Event()
    pause = wait or terminated.wait

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        logger.info("worker: SIGTERM received, finishing the current task")
        terminated.set()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)

    def stopping() -> bool:
        return terminated.is_set() or stop()

    logger.info("worker: started with %d task(s)", len(tasks))
    rounds = failing_rounds = 0
    try:
        while not stopping() and (max_rounds is None or rounds < max_rounds):
            rounds += 1
            handled = 0
            failed = False
            for task in tasks:
                if stopping():
                    break
                count = _run_task(app, task)
                failed = failed or count is None
                handled += count or 0
            failing_rounds = failing_rounds + 1 if failed else 0
            if stopping() or (max_rounds is not None and rounds >= max_rounds):
                continue
            if failed:
                seconds = min(max(idle_seconds, 1.0) * 2 ** (failing_rounds - 1),
                              BACKOFF_MAX_SECONDS)
                logger.warning("worker: a task failed %d round(s) in a row; waiting %g s",
                               failing_rounds, seconds)
                pause(seconds)
            elif handled == 0:
                pause(idle_seconds)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        logger.info("worker: stopped")


def _run_task(app: Flask, task: Task) -> int | None:
    """Run one task; how many items it handled, or None when it failed."""
    name = getattr(task, "__name__", type(task).__name__)
    with app.app_context():
        try:
            count = task(runtime.now(app))
        except Exception as exc:  # logged and waited out; the items stay pending for the next round
            db.session.rollback()
            logger.error("worker: %s failed: %s", name, describe_error(exc, limit=300))
            return None
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

"""The outbox sender: claims due messages one at a time, hands each to the mailer, retries with
backoff, parks what keeps failing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from consent_service.delivery.mailers import mailer_for
from consent_service.extensions import db
from consent_service.mail.backends import Mailer
from consent_service.mail.compose import MailUnavailableError, describe_error
from consent_service.models import OutboxMessage
from consent_service.services.outages import is_database_outage

logger = logging.getLogger(__name__)

CLAIM_SECONDS = 600  # a claimed message is left alone this long; a crashed sender's claim lapses
RETRY_BASE_SECONDS = 120
RETRY_MAX_SECONDS = 6 * 3600
PAUSE_AFTER_FAILURES = 3  # the provider failed this many messages in a row: the round stops
# Waits (seconds) before trying again to record that the provider took a message, while the
# database cannot be used: about 15 s in all.
RECORD_SENT_RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0)


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed try: 2, 4, 8... minutes, at most 6 hours."""
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS))


def _retry_at(attempts: int, now: datetime, error: Exception) -> datetime:
    """The backoff, and never before the provider's rate-limit reset (unless absurdly far)."""
    at = now + retry_delay(attempts)
    reset_at = error.reset_at if isinstance(error, MailUnavailableError) else None
    if reset_at is not None and at < reset_at <= now + timedelta(seconds=RETRY_MAX_SECONDS):
        at = reset_at
    return at


def _claim_next(session: Session, now: datetime) -> OutboxMessage | None:
    """Claim the oldest due message for this sender and commit the claim, or return None.

    The claim moves `available_at` past `now` (and counts the attempt) in a conditional UPDATE, so
    two senders never both send one message: on PostgreSQL the candidate row is taken with
    `FOR UPDATE SKIP LOCKED` (other senders pass over it); on SQLite, which has no row locks, the
    second claimer's UPDATE finds the row no longer due and matches nothing."""
    while True:
        candidate = session.scalar(
            select(OutboxMessage.id)
            .where(OutboxMessage.status == "pending", OutboxMessage.available_at <= now)
            .order_by(OutboxMessage.available_at, OutboxMessage.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if candidate is None:
            session.rollback()
            return None
        claimed = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == candidate, OutboxMessage.status == "pending",
                   OutboxMessage.available_at <= now)
            .values(attempts=OutboxMessage.attempts + 1,
                    available_at=now + timedelta(seconds=CLAIM_SECONDS))
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
        if claimed:
            return session.get(OutboxMessage, candidate)


def send_pending_mail(session: Session, mailer: Mailer, *, now: datetime, limit: int = 100,
                      max_attempts: int = 8,
                      sleep: Callable[[float], None] = time.sleep) -> int:
    """Send up to `limit` due outbox messages, oldest first, one transaction each; return how many
    were sent.

    A sent message is marked `sent` with `sent_at`, and its recipient address is cleared (we no
    longer need it; the row stays for audit). A failed try is retried with exponential backoff;
    after `max_attempts` tries the message is parked as `failed` with its last error, never dropped.

    Delivery is at least once: each message is claimed and committed before it is handed to the
    mailer, and marked sent in a second commit after the mailer returns. A crash before the
    mailer accepts leaves the claim to lapse and the message is sent later; a crash in the window
    between the provider accepting the message and our second commit sends that one message again
    once its claim lapses (CLAIM_SECONDS). Nothing is lost, and only that window can double. A
    database that cannot be used for a moment when the second commit is due is waited out
    (RECORD_SENT_RETRY_SECONDS, with `sleep`), so a short outage does not open that window.
    """
    sent = 0
    failures_in_a_row = 0
    for _ in range(limit):
        message = _claim_next(session, now)
        if message is None:
            break
        try:
            provider_id = mailer.send(message)
        except Exception as exc:  # any failure of the provider: recorded on the row, retried
            message.last_error = describe_error(exc)
            if message.attempts >= max_attempts:
                message.status = "failed"
                logger.error("mail %s (%s) failed after %d attempts, parked: %s", message.id,
                             message.template, message.attempts, message.last_error)
            else:
                message.available_at = _retry_at(message.attempts, now, exc)
                logger.warning("mail %s (%s) attempt %d failed, retrying at %s: %s", message.id,
                               message.template, message.attempts,
                               message.available_at.isoformat(), message.last_error)
            session.commit()
            if isinstance(exc, MailUnavailableError):
                failures_in_a_row += 1
                if exc.status == 429 or failures_in_a_row >= PAUSE_AFTER_FAILURES:
                    logger.warning("mail: the provider is %s; the rest wait for the next round",
                                   "rate-limiting" if exc.status == 429 else "failing")
                    break
            continue
        failures_in_a_row = 0
        message_id, template = message.id, message.template
        _record_sent(session, message_id, now, sleep)
        sent += 1
        logger.info("mail %s (%s) sent, provider id %s", message_id, template,
                    provider_id or "none")
    return sent


def _record_sent(session: Session, message_id: int, now: datetime,
                 sleep: Callable[[float], None]) -> None:
    """Mark a message the provider took as sent (its address cleared), retrying while the database
    is unavailable: the provider has the message, so giving up here would send it twice."""
    for delay in (*RECORD_SENT_RETRY_SECONDS, None):
        try:
            session.execute(
                update(OutboxMessage).where(OutboxMessage.id == message_id)
                .values(status="sent", sent_at=now, to_address=None, last_error=None)
                .execution_options(synchronize_session=False))
            session.commit()
            return
        except SQLAlchemyError as error:
            session.rollback()
            if delay is None or not is_database_outage(error):
                logger.error("mail %s was sent but could not be recorded as sent; it may be "
                             "sent again: %s", message_id, type(error).__name__)
                raise
            logger.warning("mail %s was sent; the database is unavailable, recording it again "
                           "in %g s", message_id, delay)
            sleep(delay)


def send_mail_task(app: Flask) -> Callable[[datetime], int]:
    """The worker's mail task for `app`: one batch of due messages per call (see run_worker)."""

    def send_mail(now: datetime) -> int:
        return send_pending_mail(db.session, mailer_for(app), now=now,
                                 max_attempts=app.config["MAIL_MAX_ATTEMPTS"])

    return send_mail

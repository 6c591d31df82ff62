"""Sending queued mail right after the request or command that queued it committed
(CONSENT_MAIL_DISPATCH=inline); with `worker`, the worker sends it."""

from __future__ import annotations

import logging
from typing import Any

import click
from flask import Flask, after_this_request, current_app, g, has_app_context, has_request_context
from flask.wrappers import Response
from sqlalchemy import event
from sqlalchemy.orm import Session

from consent_service import runtime
from consent_service.delivery.mailers import MailConfigError, mailer_for
from consent_service.delivery.sender import send_pending_mail
from consent_service.extensions import db
from consent_service.mail.compose import describe_error
from consent_service.models import OutboxMessage
from consent_service.services.outgoing_mail import MAIL_QUEUED

logger = logging.getLogger(__name__)

DISPATCH_MODES = ("inline", "worker")
INLINE_LIMIT = 20


def init_app(app: Flask) -> None:
    """Check the mail settings and, in `inline` mode, send queued mail after the request or command
    whose transaction queued it committed.

    A request's mail goes out from `response.call_on_close`: after the response has been sent (so
    the patron never waits for the provider and response times do not reveal whether mail was
    sent), in a fresh application context and session. A command's mail goes out when its click
    context closes. Only a commit that inserted outbox rows triggers sending (a rollback discards
    the trigger with the rows); sending then takes every due message, so earlier failures are
    retried too. A failure while sending is logged and leaves the message pending.

    (Flask's test client closes a response only when asked, `buffered=True`; the tests' client
    does so for every call, as a WSGI server does.)"""
    if app.config["MAIL_DISPATCH"] not in DISPATCH_MODES:
        raise MailConfigError(f"CONSENT_MAIL_DISPATCH must be inline or worker, "
                              f"not {app.config['MAIL_DISPATCH']!r}")
    mailer_for(app)
    if not event.contains(db.session, "before_flush", _note_queued_mail):
        event.listen(db.session, "before_flush", _note_queued_mail)
        event.listen(db.session, "after_commit", _after_commit)
        event.listen(db.session, "after_rollback", _after_rollback)


def _note_queued_mail(session: Session, flush_context: Any, instances: Any) -> None:
    if any(isinstance(obj, OutboxMessage) for obj in session.new):
        session.info[MAIL_QUEUED] = True


def _after_rollback(session: Session) -> None:
    session.info.pop(MAIL_QUEUED, None)


def _after_commit(session: Session) -> None:
    if not session.info.pop(MAIL_QUEUED, False) or not has_app_context():
        return
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config["MAIL_DISPATCH"] != "inline":
        return
    if has_request_context():
        _send_after_this_request(app)
        return
    command = click.get_current_context(silent=True)
    if command is not None and not command.meta.get(MAIL_QUEUED):
        command.meta[MAIL_QUEUED] = True
        command.call_on_close(lambda: dispatch_inline(app))


def _send_after_this_request(app: Flask) -> None:
    if g.get("mail_dispatch_registered"):
        return
    g.mail_dispatch_registered = True

    @after_this_request
    def send_when_closed(response: Response) -> Response:
        response.call_on_close(lambda: dispatch_inline(app))
        return response


def dispatch_inline(app: Flask) -> int:
    """Send due mail now, in its own application context; never raises (logs, leaves it pending)."""
    with app.app_context():
        try:
            return send_pending_mail(db.session, mailer_for(app), now=runtime.now(app),
                                     limit=INLINE_LIMIT,
                                     max_attempts=app.config["MAIL_MAX_ATTEMPTS"])
        except Exception as exc:  # the request or command already succeeded; the worker retries
            db.session.rollback()
            logger.error("sending queued mail failed, left pending: %s",
                         describe_error(exc))
            return 0

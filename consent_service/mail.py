"""Outbound mail: messages rendered into the outbox in the sender's transaction, and the mailers."""

from __future__ import annotations

import email.policy
import functools
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import click
from flask import Flask, after_this_request, current_app, g, has_app_context, has_request_context
from flask.wrappers import Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Asm, Category, CustomArg, GroupId, Header, Mail
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import OutboxMessage, Patron, Topic
from consent_service.services import ServiceContext

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent.parent / "email_templates"
LANGUAGES = ("en", "es")
DEFAULT_LANGUAGE = "en"


class MessageCategory(StrEnum):
    TRANSACTIONAL = "transactional"  # what the patron just asked for: a link, a confirmation
    MARKETING = "marketing"  # programs and services; carries the one-click unsubscribe
    NOTICE = "notice"  # what the library must tell everyone, e.g. a material policy change


class MailError(ConsentServiceError):
    """A message that cannot be written as asked: no address, or marketing without a patron."""


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False,
                                     default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def template_language(language: str | None) -> str:
    """The language of a message: the patron's when we have templates in it, else English."""
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def render(template: str, language: str, variables: Mapping[str, Any]) -> tuple[str, str, str]:
    """Render (subject, text, html) of `template` in `language`; a variable the template uses but
    `variables` lacks raises jinja2.UndefinedError."""
    env = _environment()
    folder = template_language(language)
    subject = env.get_template(f"{folder}/{template}.subject.txt").render(variables)
    text = env.get_template(f"{folder}/{template}.txt").render(variables)
    html = env.get_template(f"{folder}/{template}.html").render(variables)
    return " ".join(subject.split()), text, html


def queue_email(session: Session, ctx: ServiceContext, *, template: str, to: str, language: str,
                context: Mapping[str, Any], category: str, now: datetime,
                patron: Patron | None = None, topic: str | None = None) -> OutboxMessage:
    """Render a message now and add it to the outbox in the caller's transaction (the caller
    commits; a template error fails the caller, not the sender later).

    Every message carries the library's name and postal address and a preference link: the
    patron's signed link, or without a patron the page that emails one. A marketing message needs a
    patron and also carries a visible unsubscribe link and the RFC 8058 one-click headers for
    `topic` (None: all library email), and the topic's SendGrid unsubscribe group. SendGrid learns
    the patron only as the custom arg `patron_id`, the opaque public id.

    Templates see `context` plus: library_name, library_postal_address, preferences_url,
    preferences_request_url, unsubscribe_url (None unless marketing), category, first_name (the
    patron's, "" without one, unless `context` gives it).
    """
    kind = MessageCategory(category)
    to = to.strip()
    if not to:
        raise MailError("a message needs a recipient address")
    if kind is MessageCategory.MARKETING and patron is None:
        raise MailError("a marketing message needs a patron, for its unsubscribe link")

    preferences_request_url = f"{ctx.public_base_url}/preferences"
    unsubscribe_url: str | None = None
    headers: dict[str, str] = {}
    custom_args: dict[str, str] = {}
    if patron is not None:
        preferences_url = ctx.link(LinkKind.PREFERENCES, patron.public_id)
        custom_args["patron_id"] = patron.public_id
    else:
        preferences_url = preferences_request_url
    if kind is MessageCategory.MARKETING and patron is not None:
        unsubscribe_url = ctx.link(LinkKind.UNSUBSCRIBE, patron.public_id, topic)
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"

    asm_group_id: int | None = None
    if topic is not None:
        found = session.scalar(select(Topic).where(Topic.key == topic))
        if found is None:
            raise MailError(f"unknown topic {topic!r}")
        asm_group_id = found.sendgrid_group_id

    variables: dict[str, Any] = {
        "first_name": patron.first_name if patron is not None else "",
        **context,
        "library_name": ctx.library_name,
        "library_postal_address": ctx.library_postal_address,
        "preferences_url": preferences_url,
        "preferences_request_url": preferences_request_url,
        "unsubscribe_url": unsubscribe_url,
        "category": kind.value,
    }
    subject, text, html = render(template, language, variables)
    message = OutboxMessage(
        created_at=now,
        template=template,
        category=kind.value,
        patron_id=patron.id if patron is not None else None,
        to_address=to,
        from_address=ctx.mail_from,
        subject=subject,
        text_body=text,
        html_body=html,
        headers=headers,
        custom_args=custom_args,
        asm_group_id=asm_group_id,
        status="pending",
        attempts=0,
        available_at=now,
    )
    session.add(message)
    return message


# -- backends ------------------------------------------------------------------------------------


class MailDeliveryError(ConsentServiceError):
    """The provider refused or could not take a message; the outbox retries it later."""


class Mailer(Protocol):
    def send(self, message: OutboxMessage) -> str | None:
        """Hand one message to the provider; return the provider's message id, if it gives one."""
        ...


def message_id(message: OutboxMessage) -> str:
    """The same Message-ID every time one outbox row is sent, so a resend can be recognised."""
    domain = parseaddr(message.from_address)[1].rpartition("@")[2] or "localhost"
    return f"<outbox-{message.id}.{int(message.created_at.timestamp())}@{domain}>"


def build_email(message: OutboxMessage) -> EmailMessage:
    """The RFC 5322 form of an outbox row: multipart/alternative text and HTML, with its headers."""
    if not message.to_address:
        raise MailDeliveryError(f"mail {message.id} has no recipient address")
    email_message = EmailMessage(policy=email.policy.SMTP)
    email_message["From"] = message.from_address
    email_message["To"] = message.to_address
    email_message["Subject"] = message.subject
    email_message["Date"] = format_datetime(message.created_at)
    email_message["Message-ID"] = message_id(message)
    for name, value in message.headers.items():
        email_message[name] = value
    email_message.set_content(message.text_body)
    email_message.add_alternative(message.html_body, subtype="html")
    return email_message


class FileMailer:
    """Writes each message as `<outbox id>-<template>.eml` in `directory`; a resend overwrites."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def send(self, message: OutboxMessage) -> str | None:
        email_message = build_email(message)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{message.id}-{message.template}.eml"
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".eml.tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(email_message.as_bytes())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return str(email_message["Message-ID"])


class MemoryMailer:
    """Keeps every message it is given in `.sent`, for tests."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: OutboxMessage) -> str | None:
        email_message = build_email(message)
        self.sent.append(email_message)
        return str(email_message["Message-ID"])


class SendGridMailer:
    """Sends through SendGrid's v3 Mail Send API with the official client."""

    def __init__(self, api_key: str, host: str, timeout_seconds: float = 30) -> None:
        self._client = SendGridAPIClient(api_key=api_key, host=host)
        self._client.client.timeout = timeout_seconds

    @staticmethod
    def payload(message: OutboxMessage) -> Mail:
        """The Mail Send request for an outbox row: custom args (the patron's opaque id), the
        topic's unsubscribe group, our headers and the category and template as categories.
        Headers and custom args belong to the one recipient, so they go in its personalization
        (where SendGrid's spec also types custom args as an object)."""
        if not message.to_address:
            raise MailDeliveryError(f"mail {message.id} has no recipient address")
        mail = Mail(from_email=message.from_address, to_emails=message.to_address,
                    subject=message.subject, plain_text_content=message.text_body,
                    html_content=message.html_body)
        for name, value in message.headers.items():
            mail.header = Header(name, value, p=0)
        for key, value in message.custom_args.items():
            mail.custom_arg = CustomArg(key, value, p=0)
        mail.category = [Category(message.category), Category(message.template)]
        if message.asm_group_id is not None:
            mail.asm = Asm(GroupId(message.asm_group_id))
        return mail

    def send(self, message: OutboxMessage) -> str | None:
        try:
            response = self._client.send(self.payload(message))
        except HTTPError as exc:
            raise MailDeliveryError(
                f"SendGrid answered {exc.status_code}: {_one_line(_decode(exc.body))}") from None
        return response.headers.get("X-Message-Id")


def _decode(body: Any) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)


_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


def describe_error(exc: BaseException, limit: int = 500) -> str:
    """An error as one line for logs and `last_error`, with email addresses masked."""
    return _one_line(f"{type(exc).__name__}: {exc}", limit)


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(_ADDRESS.sub("[address]", text).split())
    return line[:limit] or "no detail"


BACKENDS = ("file", "memory", "sendgrid")
_MAILER_KEY = "consent_service.mailer"


class MailConfigError(ConsentServiceError):
    """A mail setting the service cannot start with."""


def _build_mailer(app: Flask) -> Mailer:
    config = app.config
    backend = config["MAIL_BACKEND"]
    if backend == "file":
        return FileMailer(config["MAIL_FILE_DIR"])
    if backend == "memory":
        return MemoryMailer()
    if backend == "sendgrid":
        if not config.get("SENDGRID_API_KEY"):
            raise MailConfigError("CONSENT_MAIL_BACKEND=sendgrid needs CONSENT_SENDGRID_API_KEY")
        return SendGridMailer(config["SENDGRID_API_KEY"], config["SENDGRID_API_HOST"])
    raise MailConfigError(
        f"CONSENT_MAIL_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")


def mailer_for(app: Flask) -> Mailer:
    """The application's mailer, chosen by MAIL_BACKEND; one instance per application (so a test
    can read the memory mailer's `.sent`)."""
    mailer = app.extensions.get(_MAILER_KEY)
    if mailer is None:
        mailer = app.extensions[_MAILER_KEY] = _build_mailer(app)
    return mailer


# -- sending -------------------------------------------------------------------------------------

CLAIM_SECONDS = 600  # a claimed message is left alone this long; a crashed sender's claim lapses
RETRY_BASE_SECONDS = 120
RETRY_MAX_SECONDS = 6 * 3600


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed try: 2, 4, 8... minutes, at most 6 hours."""
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS))


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
                      max_attempts: int = 8) -> int:
    """Send up to `limit` due outbox messages, oldest first, one transaction each; return how many
    were sent.

    A sent message is marked `sent` with `sent_at`, and its recipient address is cleared (we no
    longer need it; the row stays for audit). A failed try is retried with exponential backoff;
    after `max_attempts` tries the message is parked as `failed` with its last error, never dropped.

    Delivery is at least once: each message is claimed and committed before it is handed to the
    mailer, and marked sent in a second commit after the mailer returns. A crash before the
    mailer accepts leaves the claim to lapse and the message is sent later; a crash in the window
    between the provider accepting the message and our second commit sends that one message again
    once its claim lapses (CLAIM_SECONDS). Nothing is lost, and only that window can double.
    """
    sent = 0
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
                message.available_at = now + retry_delay(message.attempts)
                logger.warning("mail %s (%s) attempt %d failed, retrying at %s: %s", message.id,
                               message.template, message.attempts,
                               message.available_at.isoformat(), message.last_error)
            session.commit()
            continue
        message.status = "sent"
        message.sent_at = now
        message.to_address = None
        message.last_error = None
        session.commit()
        sent += 1
        logger.info("mail %s (%s) sent, provider id %s", message.id, message.template,
                    provider_id or "none")
    return sent


def send_mail_task(app: Flask) -> Callable[[datetime], int]:
    """The worker's mail task for `app`: one batch of due messages per call (see run_worker)."""

    def send_mail(now: datetime) -> int:
        return send_pending_mail(db.session, mailer_for(app), now=now,
                                 max_attempts=app.config["MAIL_MAX_ATTEMPTS"])

    return send_mail


# -- sending right after the request or command that queued the mail (MAIL_DISPATCH=inline) -------

DISPATCH_MODES = ("inline", "worker")
INLINE_LIMIT = 20
_QUEUED = "consent_service.mail_queued"


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
        session.info[_QUEUED] = True


def _after_rollback(session: Session) -> None:
    session.info.pop(_QUEUED, None)


def _after_commit(session: Session) -> None:
    if not session.info.pop(_QUEUED, False) or not has_app_context():
        return
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config["MAIL_DISPATCH"] != "inline":
        return
    if has_request_context():
        _send_after_this_request(app)
        return
    command = click.get_current_context(silent=True)
    if command is not None and not command.meta.get(_QUEUED):
        command.meta[_QUEUED] = True
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
            return send_pending_mail(db.session, mailer_for(app), now=datetime.now(UTC),
                                     limit=INLINE_LIMIT,
                                     max_attempts=app.config["MAIL_MAX_ATTEMPTS"])
        except Exception as exc:  # the request or command already succeeded; the worker retries
            db.session.rollback()
            logger.error("sending queued mail failed, left pending: %s",
                         describe_error(exc))
            return 0

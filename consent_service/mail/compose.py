"""Composing email: templates in email_templates/ (English and Spanish) rendered to a message, and an
outbox row turned into RFC 5322 form."""

from __future__ import annotations

import email.policy
import functools
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from consent_service.domain import ConsentServiceError
from consent_service.domain.text import one_line
from consent_service.models import OutboxMessage

TEMPLATE_DIR = Path(__file__).parent.parent.parent / "email_templates"
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
    return header_text(subject), text, html


def header_text(value: str) -> str:
    """Text for a header line: on one line, and with no RFC 2047 encoded word in it. Python's email
    package decodes `=?charset?q?...?=` in a header value it is given, and writes out what that
    decodes to, line breaks included: a child's name `=?utf-8?q?=0D=0ABcc:_x@example.org?=` in a
    subject would become a Bcc header. `=?` becomes `= ?`, which starts no encoded word."""
    return " ".join(value.split()).replace("=?", "= ?")


class MailDeliveryError(ConsentServiceError):
    """The provider refused or could not take a message; the outbox retries it later."""


class MailUnavailableError(MailDeliveryError):
    """The provider is failing, slower than the timeout, unreachable or rate-limiting (`status`
    429): the outbox stops its round and tries again later, not before `reset_at` when the provider
    gave one. After a timeout or a connection lost mid-answer the provider may have taken the
    message; it is sent again with the same Message-ID, so a copy can be recognised."""

    def __init__(self, message: str, *, status: int | None = None,
                 reset_at: datetime | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reset_at = reset_at


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
    email_message["Subject"] = header_text(message.subject)
    email_message["Date"] = format_datetime(message.created_at)
    email_message["Message-ID"] = message_id(message)
    for name, value in message.headers.items():
        email_message[name] = header_text(value)
    email_message.set_content(message.text_body)
    email_message.add_alternative(message.html_body, subtype="html")
    return email_message


def describe_error(exc: BaseException, limit: int = 500) -> str:
    """An error as one line for logs and `last_error`, with email addresses masked."""
    return one_line(f"{type(exc).__name__}: {exc}", limit)


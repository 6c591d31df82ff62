"""Composing email: templates in email_templates/ (English and Spanish) rendered to a message, and an
outbox row turned into RFC 5322 form."""

from __future__ import annotations

import email.policy
import functools
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import escape

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


Renderer = Callable[[str, str, Mapping[str, Any]], tuple[str, str, str]]  # as `render`


def render(template: str, language: str, variables: Mapping[str, Any]) -> tuple[str, str, str]:
    """Render (subject, text, html) of `template` in `language`; a variable the template uses but
    `variables` lacks raises jinja2.UndefinedError."""
    subject, text, html = _render_parts(template, language, variables)
    return header_text(subject), text, html


def _render_parts(template: str, language: str, variables: Mapping[str, Any]
                  ) -> tuple[str, str, str]:
    env = _environment()
    folder = template_language(language)
    return (env.get_template(f"{folder}/{template}.subject.txt").render(variables),
            env.get_template(f"{folder}/{template}.txt").render(variables),
            env.get_template(f"{folder}/{template}.html").render(variables))


class StencilRenderer:
    """`render` for many messages that differ in a few printed values (a renderer for a bulk
    job: the 7,000 guardian notices of an import of 100,000 patrons, rendered one by one, were
    47% of its time).

    The `slots` are variables each message fills in: a name, a signed link. Every other variable
    (and whether each slot is empty) makes the message's shape; each shape is rendered by Jinja
    once, with a marker in each slot, and cut at the markers; a message is then its shape's parts
    joined with its own values, escaped as Jinja escapes them (HTML autoescaping), upper-cased
    where the template prints `| upper`. So a template may only print a slot (as is or
    `| upper`) or test it for being empty. A shape whose markers come out otherwise (another
    filter), or whose first message does not come out as Jinja renders it, is rendered by Jinja
    for every message. The result is `render`'s, character for character
    (tests/integration/guardians/test_bulk_notices.py)."""

    def __init__(self, slots: Collection[str]) -> None:
        self.slots = tuple(slots)
        # Mixed case, so that `upper` gives a marker of its own and `lower`, `title`,
        # `capitalize`... give none; random, so no other value holds one by chance.
        letters = [secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12)]
        self._marker = "".join(c.upper() if at % 2 else c for at, c in enumerate(letters))
        self._markers = re.compile(
            f"\ue000(?:({self._marker})|({self._marker.upper()}))([0-9]+)\ue001")
        self._stencils: dict[Any, _Stencil | None] = {}

    def __call__(self, template: str, language: str, variables: Mapping[str, Any]
                 ) -> tuple[str, str, str]:
        filled = [slot for slot in self.slots if variables.get(slot)]
        # The other variables' repr: as exact as `render` (`True`, `1` and `'1'` differ), and
        # fast (a dict's repr keeps its order: the same variables built in another order only
        # make a shape of their own).
        key = (template, template_language(language), tuple(filled),
               repr({name: value for name, value in variables.items() if name not in filled}))
        values = [str(variables[slot]) for slot in filled]
        if key in self._stencils:
            stencil = self._stencils[key]
            return render(template, language, variables) if stencil is None else stencil.fill(values)
        if len(self._stencils) >= _STENCILS_KEPT:
            self._stencils.clear()
        stencil = self._stencil(template, language, filled, variables)
        rendered = render(template, language, variables)
        self._stencils[key] = stencil if stencil is not None and stencil.fill(values) == rendered \
            else None
        return rendered

    def _stencil(self, template: str, language: str, filled: list[str],
                 variables: Mapping[str, Any]) -> _Stencil | None:
        marked = {**variables, **{slot: f"\ue000{self._marker}{number}\ue001"
                                  for number, slot in enumerate(filled)}}
        parts = []
        for rendered, html in zip(_render_parts(template, language, marked),
                                  (False, False, True), strict=True):
            pieces = self._markers.split(rendered)
            literals = pieces[::4]
            if any("\ue000" in literal for literal in literals):
                return None  # a slot printed through something other than `upper`
            holes = [(int(pieces[at + 2]), pieces[at] is None, html)
                     for at in range(1, len(pieces), 4)]
            parts.append((literals, holes))
        return _Stencil(parts)


_STENCILS_KEPT = 1000  # shapes one renderer keeps (a guardian notice has a few dozen)


class _Stencil:
    """One shape of a message: for subject, text and HTML, the literal text between the slots and
    each slot's (number, upper-cased, HTML-escaped)."""

    def __init__(self, parts: list[tuple[list[str], list[tuple[int, bool, bool]]]]) -> None:
        self.parts = parts

    def fill(self, values: list[str]) -> tuple[str, str, str]:
        subject, text, html = (self._join(literals, holes, values)
                               for literals, holes in self.parts)
        return header_text(subject), text, html

    @staticmethod
    def _join(literals: list[str], holes: list[tuple[int, bool, bool]], values: list[str]) -> str:
        out = [literals[0]]
        for (number, upper, html), literal in zip(holes, literals[1:], strict=True):
            value = values[number]
            if upper:
                value = value.upper()
            out.append(str(escape(value)) if html else value)
            out.append(literal)
        return "".join(out)


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


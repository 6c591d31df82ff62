"""Queueing email as a use case: a message rendered now, with the links and headers its category
needs, added to the outbox in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.tokens import LinkKind
from consent_service.mail.compose import MailError, MessageCategory, Renderer, render
from consent_service.models import OutboxMessage, Topic
from consent_service.services.bulk import insert_rows
from consent_service.services.context import ServiceContext

# Set in `session.info` when outbox rows are inserted without ORM objects: inline dispatch
# (delivery/dispatch.py) sends after a commit that queued mail, which it otherwise learns from
# the OutboxMessage objects a flush inserts.
MAIL_QUEUED = "consent_service.mail_queued"


class Recipient(Protocol):
    """The patron a message is about (an ORM Patron or a result row)."""

    id: int
    public_id: str
    first_name: str


def queue_email(session: Session, ctx: ServiceContext, *, template: str, to: str, language: str,
                context: Mapping[str, Any], category: str, now: datetime,
                patron: Recipient | None = None, topic: str | None = None) -> OutboxMessage:
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
    asm_group_id: int | None = None
    if topic is not None:
        found = session.scalar(select(Topic).where(Topic.key == topic))
        if found is None:
            raise MailError(f"unknown topic {topic!r}")
        asm_group_id = found.sendgrid_group_id
    message = OutboxMessage(**outbox_row(
        ctx, template=template, to=to, language=language, context=context, category=category,
        now=now, patron=patron, topic=topic, asm_group_id=asm_group_id))
    session.add(message)
    return message


def outbox_row(ctx: ServiceContext, *, template: str, to: str, language: str,
               context: Mapping[str, Any], category: str, now: datetime,
               patron: Recipient | None = None, topic: str | None = None,
               asm_group_id: int | None = None, renderer: Renderer = render) -> dict[str, Any]:
    """The outbox row `queue_email` adds, as column values (`topic`'s SendGrid group given as
    `asm_group_id`), rendered by `renderer` (a bulk job's `StencilRenderer`, which renders what
    `render` does)."""
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
    subject, text, html = renderer(template, language, variables)
    return {
        "created_at": now,
        "template": template,
        "category": kind.value,
        "patron_id": patron.id if patron is not None else None,
        "to_address": to,
        "from_address": ctx.mail_from,
        "subject": subject,
        "text_body": text,
        "html_body": html,
        "headers": headers,
        "custom_args": custom_args,
        "asm_group_id": asm_group_id,
        "status": "pending",
        "attempts": 0,
        "available_at": now,
    }


def queue_emails(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Add these `outbox_row`s to the outbox in the caller's transaction, as table rows
    (`insert_rows`: no ORM object per message)."""
    if rows:
        insert_rows(session, _OUTBOX, rows)
        session.info[MAIL_QUEUED] = True


_OUTBOX = OutboxMessage.__table__

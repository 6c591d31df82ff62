"""Helpers for the patron pages' tests: links, the ledger, and reading forms as a browser does."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape
from html.parser import HTMLParser

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent_service.delivery.mailers import mailer_for
from consent_service.domain.tokens import LinkKind
from consent_service.models import ConsentEvent, Patron
from consent_service.services.context import ServiceContext

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)  # every link signed today has expired by then


def link_token(ctx: ServiceContext, kind: LinkKind, patron: Patron | str,
               topic: str | None = None) -> str:
    public_id = patron if isinstance(patron, str) else patron.public_id
    return ctx.signer.sign(kind, public_id, topic)


def tampered(token: str) -> str:
    return token[:-2] + ("AA" if not token.endswith("AA") else "BB")


def ledger_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ConsentEvent)) or 0


def events(session: Session) -> list[ConsentEvent]:
    session.expire_all()
    return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


def sent_mail(app: Flask) -> list:  # type: ignore[type-arg]
    """What the memory mailer has sent (a request's mail goes out when its response is closed)."""
    return mailer_for(app).sent  # type: ignore[attr-defined, no-any-return]


def main_text(html: str) -> str:
    """The visible words of the page's <main>, whitespace collapsed (no tags, no hidden inputs)."""
    main = html.split('<main', 1)[1].split("</main>", 1)[0]
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", main.split(">", 1)[1])).split())


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag != "input" or not found.get("name"):
            return
        name, value = found["name"] or "", found.get("value") or ""
        if found.get("type") == "radio":
            if "checked" in found:
                self.values[name] = value
        else:
            self.values[name] = value


def form_values(html: str) -> dict[str, str]:
    """What a browser would post for the page's forms as shown: hidden fields and checked radios."""
    parser = _Inputs()
    parser.feed(html)
    return parser.values


def csrf_token(html: str) -> str:
    return form_values(html)["csrf_token"]

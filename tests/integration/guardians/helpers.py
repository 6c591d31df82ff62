"""Helpers for the guardian tests: a movable clock, linking guardians, the mail they get, and
answering the pages as a browser does."""

from __future__ import annotations

import re
from datetime import date
from email.message import EmailMessage

from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.models import GuardianLink, GuardianRequest, Patron
from tests.integration.public_pages import csrf_token, sent_mail

BASE = "https://consent.example.org"
CHILD_BORN = date(2018, 3, 3)  # 8 on NOW (2026-06-01)


def invoke(runner: FlaskCliRunner, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(args=list(args), catch_exceptions=False)


def link(runner: FlaskCliRunner, child: Patron, *, card: str | None = None,
         email: str | None = None):  # type: ignore[no-untyped-def]
    """Link a guardian to the child with the CLI (staff linking); asserts it worked."""
    args = ["guardians", "link", child.card_number]
    args += ["--guardian-card", card] if card else ["--guardian-email", email or ""]
    result = invoke(runner, *args)
    assert result.exit_code == 0, result.output
    return result


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def html_of(message: EmailMessage) -> str:
    return message.get_body(("html",)).get_content()  # type: ignore[union-attr]


def tokens_in(body: str, kind: str) -> list[str]:
    return re.findall(rf"{re.escape(BASE)}/{kind}/([\w.-]+)", body)


def mail_to(app: Flask, address: str, subject_part: str = "") -> list[EmailMessage]:
    return [m for m in sent_mail(app) if m["To"] == address and subject_part in m["Subject"]]


def last_token(app: Flask, address: str, kind: str) -> str:
    """The link of `kind` in the latest message to `address`."""
    for message in reversed(sent_mail(app)):
        if message["To"] == address:
            found = tokens_in(text_of(message), kind)
            if found:
                return found[-1]
    raise AssertionError(f"no {kind} link mailed to {address}")


def shown_field(html: str, child: str | None = None) -> str:
    """The `shown` field a page posts back: what it showed ticked (on the family page, in the form
    for `child`, a public id)."""
    if child is not None:
        html = html[html.index(f'name="child" value="{child}"'):]
    found = re.search(r'<input type="hidden" name="shown" value="([^"]*)">', html)
    assert found, "the page has no `shown` field"
    return found.group(1)


def answer(client: FlaskClient, token: str, allow: list[str], *, confirm: bool = True,
           name: str = "Pat Parent", page_html: str | None = None):  # type: ignore[no-untyped-def]
    """Open the guardian's page (or use `page_html`, a page opened earlier), set the ticks to
    exactly `allow`, confirm, type the name and save, as a browser does."""
    if page_html is None:
        page = client.get(f"/guardian/{token}")
        assert page.status_code == 200, page.text
        page_html = page.text
    data: dict[str, object] = {"csrf_token": csrf_token(page_html), "allow": allow, "name": name,
                               "shown": shown_field(page_html)}
    if confirm:
        data["confirm"] = "y"
    return client.post(f"/guardian/{token}", data=data, buffered=True)


def family_post(client: FlaskClient, token: str, child: Patron | str, action: str,
                allow: list[str] | None = None, *,
                page_html: str | None = None):  # type: ignore[no-untyped-def]
    """Post one of the family page's forms for `child` (a patron, or any public id), from the page
    as opened now or as opened earlier (`page_html`), as a browser does."""
    if page_html is None:
        page = client.get(f"/family/{token}")
        assert page.status_code == 200, page.text
        page_html = page.text
    child_id = child if isinstance(child, str) else child.public_id
    data: dict[str, object] = {"csrf_token": csrf_token(page_html), "child": child_id,
                               "action": action, "allow": allow or []}
    if action == "decide" and f'name="child" value="{child_id}"' in page_html:
        data["shown"] = shown_field(page_html, child_id)
    return client.post(f"/family/{token}", data=data, buffered=True)


def requests_of(session: Session, child: Patron) -> list[GuardianRequest]:
    session.expire_all()
    return list(session.scalars(select(GuardianRequest).where(GuardianRequest.child_id == child.id)
                                .order_by(GuardianRequest.id)))


def links_of(session: Session, child: Patron) -> list[GuardianLink]:
    session.expire_all()
    return list(session.scalars(select(GuardianLink).where(GuardianLink.child_id == child.id)
                                .order_by(GuardianLink.id)))

"""Helpers for the staff desk, roster and admin tests: a signed-in member of a role, the world the
staff routes refer to (patrons, a child with a guardian, a family request, topics)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from html import unescape

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.models import (
    ConsentEvent,
    ErasureRequest,
    FamilyRequest,
    GuardianLink,
    Patron,
    PatronAccess,
    StaffUser,
    Topic,
)
from consent_service.services.api_keys import create_api_key
from consent_service.services.staff_accounts import StaffMember
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token
from tests.integration.staff.helpers import make_staff, sign_in

CHILD_BORN = date(2018, 3, 3)  # 8 on NOW


def signed_in(client: FlaskClient, session: Session, role: str,
              email: str | None = None) -> tuple[StaffMember, str]:
    """A staff member of `role`, signed in on `client`; returns them and the session's CSRF token."""
    member = make_staff(session, role, email)
    response = sign_in(client, member.email)
    assert response.status_code == 302, response.text
    return member, csrf_token(client.get("/staff/").text)


def anonymous_token(client: FlaskClient) -> str:
    """A CSRF token for a client that is not signed in (the sign-in page gives one)."""
    return csrf_token(client.get("/staff/login").text)


@dataclass
class World:
    """What the staff routes refer to: an adult patron, a child under 13 with a guardian patron,
    an open family request, topics, and a second staff account."""

    patron: Patron
    child: Patron
    guardian: Patron
    task_id: int
    account_id: int
    key_prefix: str
    erasure_id: int = 0
    export_id: int = 999_999  # an export nobody made

    def fill(self, path: str) -> str:
        return path.format(patron=self.patron.public_id, child=self.child.public_id,
                           task=self.task_id, account=self.account_id, key=self.key_prefix,
                           erasure=self.erasure_id, export=self.export_id)


def arrange_world(session: Session, make_patron) -> World:  # type: ignore[no-untyped-def]
    for key, name in (("events", "Library events"), ("kids_teens", "Kids & teens")):
        session.add(Topic(key=key, name=name, created_at=NOW))
    session.commit()
    patron = make_patron(card="21000001", first_name="Ana", last_name="Reyes",
                         email="ana.reyes@example.org", street="12 Aspen Way",
                         city="Castle Rock", postal_code="80104")
    guardian = make_patron(card="21000002", first_name="Pat", last_name="Lopez",
                           email="pat.lopez@example.org", birth_date=date(1985, 1, 1))
    child = make_patron(card="21000003", first_name="Maya", last_name="Lopez",
                        email=None, birth_date=CHILD_BORN)
    link = GuardianLink(child_id=child.id, guardian_id=guardian.id, created_at=NOW)
    session.add(link)
    session.flush()
    task = FamilyRequest(child_id=child.id, guardian_link_id=link.id, kind="download",
                         status="open", created_at=NOW)
    session.add(task)
    erasure = ErasureRequest(patron_id=patron.id, requested_by="patron", status="open",
                             created_at=NOW)
    session.add(erasure)
    session.commit()
    other = make_staff(session, "staff", "other.staff@library.example.org")
    key, _secret = create_api_key(session, "the ILS", ["consents:read"], now=NOW)
    return World(patron, child, guardian, task.id, other.id, key.prefix, erasure.id)


def access_log(session: Session) -> list[tuple[str, str, str]]:
    """The access log as (staff email, patron card, what), oldest first."""
    session.expire_all()
    rows = session.execute(
        select(StaffUser.email, Patron.card_number, PatronAccess.what)
        .join(StaffUser, StaffUser.id == PatronAccess.staff_user_id)
        .join(Patron, Patron.id == PatronAccess.patron_id).order_by(PatronAccess.id))
    return [tuple(row) for row in rows]  # type: ignore[misc]


def ledger(session: Session) -> list[ConsentEvent]:
    session.expire_all()
    return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


def alert(html: str) -> str:
    """The one-line error a page shows (its role="alert" notice), as a person reads it."""
    found = re.findall(r'<p class="notice notice--error" role="alert">([^<]*)</p>', html)
    assert len(found) == 1, found
    return unescape(found[0])
